//! The per-name issuance lock: one order for a name at a time, and after a
//! failed order a backoff every holder respects. `MemoryLock` serves one
//! process (one box); a shared store locks for the whole network.

use crate::domain::Hostname;
use crate::locked;
use crate::tls::error::StoreError;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[async_trait]
pub trait IssuanceLock: Send + Sync {
    /// Takes the issuance lock for `host` for `lease`, or says why not.
    /// A holder that dies loses the lock when the lease ends.
    async fn try_lock(
        &self,
        host: &Hostname,
        holder: &str,
        lease: Duration,
    ) -> Result<Lock, StoreError>;
    /// Releases the lock; after a failed order `backoff` keeps every node
    /// from ordering the name for that long (the CA's failed-validation
    /// limits count per account, not per PoP).
    async fn unlock(
        &self,
        host: &Hostname,
        holder: &str,
        backoff: Option<Duration>,
    ) -> Result<(), StoreError>;
}

/// The answer to `try_lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    Acquired,
    /// Another node is ordering the name now.
    Held,
    /// The last order for the name failed; nobody orders it for this long.
    BackingOff(Duration),
}

/// Issuance locks of one process.
#[derive(Default)]
pub struct MemoryLock {
    /// holder, lease end, backing off after a failure
    locks: Mutex<HashMap<Hostname, (String, Instant, bool)>>,
}

#[async_trait]
impl IssuanceLock for MemoryLock {
    async fn try_lock(
        &self,
        host: &Hostname,
        holder: &str,
        lease: Duration,
    ) -> Result<Lock, StoreError> {
        let mut locks = locked(&self.locks);
        let now = Instant::now();
        match locks.get(host) {
            Some((h, until, failed)) if h != holder && now < *until => Ok(if *failed {
                Lock::BackingOff(*until - now)
            } else {
                Lock::Held
            }),
            _ => {
                locks.insert(host.clone(), (holder.to_string(), now + lease, false));
                Ok(Lock::Acquired)
            }
        }
    }

    async fn unlock(
        &self,
        host: &Hostname,
        holder: &str,
        backoff: Option<Duration>,
    ) -> Result<(), StoreError> {
        let mut locks = locked(&self.locks);
        if locks.get(host).is_some_and(|(h, _, _)| h == holder) {
            match backoff {
                Some(d) => {
                    locks.insert(host.clone(), (holder.to_string(), Instant::now() + d, true));
                }
                None => {
                    locks.remove(host);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_failure_backs_everyone_off() {
        let lock = MemoryLock::default();
        let host = Hostname::parse("shop.example").unwrap();
        let lease = Duration::from_secs(60);
        let take = |holder| lock.try_lock(&host, holder, lease);
        assert_eq!(take("a").await.unwrap(), Lock::Acquired);
        assert_eq!(take("b").await.unwrap(), Lock::Held);
        lock.unlock(&host, "b", None).await.unwrap();
        assert_eq!(take("b").await.unwrap(), Lock::Held, "not b's to release");
        lock.unlock(&host, "a", Some(lease)).await.unwrap();
        assert!(matches!(take("b").await.unwrap(), Lock::BackingOff(_)));
        lock.unlock(&host, "a", None).await.unwrap();
        assert_eq!(take("b").await.unwrap(), Lock::Acquired);
    }
}
