//! One origin server's live state: in-flight requests, active health,
//! passive ejection. States are shared by address across config reloads, so
//! a request that started before a reload still decrements the right counter.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct BackendState {
    pub addr: SocketAddr,
    inflight: AtomicUsize,
    /// Verdict of the active health check (starts healthy, as nginx does).
    healthy: AtomicBool,
    consecutive_fails: AtomicU32,
    /// Passive ejection deadline, in ms since `epoch()`; 0 = not ejected.
    ejected_until_ms: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl BackendState {
    fn new(addr: SocketAddr) -> Self {
        BackendState {
            addr,
            inflight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            consecutive_fails: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }

    /// The state for `addr`, shared with every pool generation that names it.
    pub fn for_addr(addr: SocketAddr) -> Arc<BackendState> {
        static REGISTRY: OnceLock<Mutex<HashMap<SocketAddr, Weak<BackendState>>>> = OnceLock::new();
        let mut map = crate::locked(REGISTRY.get_or_init(Default::default));
        if let Some(state) = map.get(&addr).and_then(Weak::upgrade) {
            return state;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let state = Arc::new(BackendState::new(addr));
        map.insert(addr, Arc::downgrade(&state));
        state
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        if healthy {
            self.consecutive_fails.store(0, Ordering::Relaxed);
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    pub fn is_ejected(&self) -> bool {
        now_ms() < self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Usable for new requests: healthy and not passively ejected.
    pub fn is_available(&self) -> bool {
        self.is_healthy() && !self.is_ejected()
    }

    /// A request to this server failed (connect error, broken response).
    /// Returns true when this failure ejected it.
    pub fn record_failure(&self, max_fails: u32, eject_for: Duration) -> bool {
        let fails = self.consecutive_fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= max_fails && !self.is_ejected() {
            let until = now_ms() + eject_for.as_millis() as u64;
            self.ejected_until_ms.store(until, Ordering::Relaxed);
            self.consecutive_fails.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    pub fn record_success(&self) {
        self.consecutive_fails.store(0, Ordering::Relaxed);
    }

    /// Counts one in-flight request until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }

    /// As `begin`, unless `hard` requests are in flight already (0: no
    /// limit). Checked and counted in one step, so concurrent requests
    /// cannot push a server past its limit.
    pub fn try_begin(self: &Arc<Self>, hard: u32) -> Option<InflightGuard> {
        self.inflight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (hard == 0 || n < hard as usize).then_some(n + 1)
            })
            .ok()
            .map(|_| InflightGuard(self.clone()))
    }
}

/// Held in the request context while a request occupies a server. Dropping
/// it (request done, retried elsewhere, or aborted) releases the slot, so the
/// count cannot leak whatever path the request takes.
#[derive(Debug)]
pub struct InflightGuard(Arc<BackendState>);

impl InflightGuard {
    pub fn backend(&self) -> &Arc<BackendState> {
        &self.0
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_shared_by_address_and_guard_releases() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a = BackendState::for_addr(addr);
        let b = BackendState::for_addr(addr);
        let g = a.begin();
        assert_eq!(b.inflight(), 1);
        drop(g);
        assert_eq!(b.inflight(), 0);
    }

    #[test]
    fn ejection_after_consecutive_failures() {
        let s = BackendState::new("127.0.0.1:2".parse().unwrap());
        assert!(!s.record_failure(2, Duration::from_secs(60)));
        s.record_success();
        assert!(!s.record_failure(2, Duration::from_secs(60)));
        assert!(s.record_failure(2, Duration::from_secs(60)));
        assert!(!s.is_available());
        s.set_healthy(true);
        assert!(s.is_available());
    }
}
