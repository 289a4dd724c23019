//! Where certificates, the ACME account, pending challenges and issuance
//! locks are kept. `file`: one box. `postgres`: the central database every
//! PoP shares, so a name is ordered once for the whole network and any PoP
//! can answer the CA's validation.

mod file;
mod postgres;

pub use file::FileStore;
pub use postgres::PostgresStore;

use super::challenge::ChallengeKey;
use super::IssuedCert;
use crate::domain::Hostname;
use async_trait::async_trait;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

#[async_trait]
pub trait CertStore: Send + Sync {
    fn kind(&self) -> &'static str;
    async fn load(&self, host: &Hostname) -> Result<Option<IssuedCert>, String>;
    /// Keeps the certificate that expires last when two nodes race.
    async fn save(&self, host: &Hostname, cert: &IssuedCert) -> Result<(), String>;
    /// How many certificates are held (for /status).
    async fn count(&self) -> Result<usize, String>;
    /// Names whose certificate was saved (issued, renewed, revoked) within
    /// `window`: how nodes learn of each other's changes.
    async fn changed_within(&self, window: Duration) -> Result<Vec<Hostname>, String>;

    /// ACME account credentials (JSON) for a directory URL.
    async fn load_account(&self, directory: &str) -> Result<Option<String>, String>;
    /// Keeps the first account saved for a directory (two nodes may create
    /// one at the same moment) and returns the one kept.
    async fn save_account(&self, directory: &str, credentials: &str) -> Result<String, String>;

    /// Publishes a challenge answer for `ttl` (any node may be asked for it).
    async fn put_challenge(
        &self,
        key: &ChallengeKey,
        key_authorization: &str,
        ttl: Duration,
    ) -> Result<(), String>;
    async fn challenge(&self, key: &ChallengeKey) -> Result<Option<String>, String>;
    async fn remove_challenge(&self, key: &ChallengeKey) -> Result<(), String>;

    /// Takes the issuance lock for `host` for `lease`, or says why not.
    /// A holder that dies loses the lock when the lease ends.
    async fn try_lock(
        &self,
        host: &Hostname,
        holder: &str,
        lease: Duration,
    ) -> Result<Lock, String>;
    /// Releases the lock; after a failed order `backoff` keeps every node
    /// from ordering the name for that long (the CA's failed-validation
    /// limits count per account, not per PoP).
    async fn unlock(
        &self,
        host: &Hostname,
        holder: &str,
        backoff: Option<Duration>,
    ) -> Result<(), String>;
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

/// Writes `bytes` to `path` readable by the owner only, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
