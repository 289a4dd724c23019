//! Background renewal: what the manager holds is renewed before it
//! expires, never in a handshake, and changes other nodes made in the
//! store (renewals, revocations) are taken in.

use super::{CertManager, Served};
use crate::domain::Hostname;
use crate::metrics::METRICS;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

impl CertManager {
    /// Renews held certificates in the background when less than
    /// `renew_when_left` of their lifetime is left; handshakes never wait
    /// for a renewal. A failed renewal keeps the old certificate until it
    /// expires and is retried on the next check.
    pub async fn renew_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.renew_check);
        loop {
            tick.tick().await;
            self.follow_store().await;
            let due: Vec<(Hostname, Served)> = self
                .served
                .iter()
                .filter(|(_, s)| s.due(self.settings.renew_when_left))
                .map(|(h, s)| ((*h).clone(), s))
                .collect();
            for (host, old) in due {
                // A domain suspended or deleted since: not renewed again.
                if !self.policy.may_issue(&host).await {
                    info!(%host, "certificate not renewed: the name is no longer served");
                    self.served.invalidate(&host).await;
                    continue;
                }
                match self.obtain(&host, Some(old.not_after)).await {
                    Ok(new) => self.served.insert(host, new).await,
                    Err(e) => {
                        METRICS
                            .tls_issuance
                            .with_label_values(&["renew_failed"])
                            .inc();
                        warn!(%host, error = %e, "certificate renewal failed; the current one stays until it expires");
                    }
                }
            }
        }
    }

    /// Takes in what changed in the store since the last check: a newer
    /// certificate (another node renewed) replaces the held one; a revoked
    /// one is dropped, so the next handshake obtains a fresh certificate.
    async fn follow_store(&self) {
        // Overlapping windows: a change is seen at least once.
        let window = self.settings.renew_check * 2 + Duration::from_secs(5);
        let changed = match self.store.changed_within(window).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "certificate store: changes not read");
                return;
            }
        };
        for host in changed {
            let Some(held) = self.served.get(&host).await else {
                continue;
            };
            match self.store.load(&host).await {
                Ok(Some(c)) if c.valid() => {
                    if c.fingerprint() != held.fingerprint && c.not_after >= held.not_after {
                        match Served::new(&c) {
                            Ok(s) => self.served.insert(host, s).await,
                            Err(e) => warn!(%host, error = %e, "stored certificate unusable"),
                        }
                    }
                }
                Ok(Some(c)) if c.revoked && c.fingerprint() == held.fingerprint => {
                    info!(%host, "held certificate was revoked; dropped");
                    self.served.invalidate(&host).await;
                }
                Ok(_) => {}
                Err(e) => warn!(%host, error = %e, "certificate store read failed"),
            }
        }
    }
}
