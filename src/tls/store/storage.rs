//! The storage half of a certificate store: certificates and the ACME
//! account, which every node reads and any node may write.

use crate::domain::Hostname;
use crate::tls::cert::IssuedCert;
use crate::tls::error::StoreError;
use async_trait::async_trait;
use std::time::Duration;

#[async_trait]
pub trait CertStore: Send + Sync {
    fn kind(&self) -> &'static str;
    async fn load(&self, host: &Hostname) -> Result<Option<IssuedCert>, StoreError>;
    /// Keeps the certificate issued last (two nodes racing, or a fallback
    /// CA's shorter-lived one replacing a revoked or renewed one); a
    /// revoked one is always replaced.
    async fn save(&self, host: &Hostname, cert: &IssuedCert) -> Result<(), StoreError>;
    /// Those of `hosts` whose stored certificate wants attention: none,
    /// revoked or expired, or less than `left` of its lifetime left (its
    /// renewal share has begun). Nothing is parsed for the others.
    async fn wanting(&self, hosts: &[Hostname], left: f64) -> Result<Vec<Hostname>, StoreError> {
        let mut out = Vec::new();
        for host in hosts {
            // A name whose record cannot be read counts as none stored.
            let fine = self.load(host).await.ok().flatten().is_some_and(|c| {
                let (window, _) = c.planned_renewal(left);
                c.valid() && crate::tls::cert::now_unix() < window.start
            });
            if !fine {
                out.push(host.clone());
            }
        }
        Ok(out)
    }
    /// How many certificates are held (for /status).
    async fn count(&self) -> Result<usize, StoreError>;
    /// Names whose certificate was saved (issued, renewed, revoked) within
    /// `window`: how nodes learn of each other's changes.
    async fn changed_within(&self, window: Duration) -> Result<Vec<Hostname>, StoreError>;

    /// Keeps why the last order for `host` failed, and when (unix seconds),
    /// replacing the one before: what `edgepop tls status` shows.
    async fn note_failure(&self, host: &Hostname, at: i64, error: &str) -> Result<(), StoreError>;
    async fn last_failure(&self, host: &Hostname) -> Result<Option<(i64, String)>, StoreError>;

    /// ACME account credentials (JSON) for a directory URL.
    async fn load_account(&self, directory: &str) -> Result<Option<String>, StoreError>;
    /// Keeps the first account saved for a directory (two nodes may create
    /// one at the same moment) and returns the one kept.
    async fn save_account(&self, directory: &str, credentials: &str) -> Result<String, StoreError>;
}
