//! Background renewal: what the manager holds is renewed before it
//! expires, never in a handshake, and changes other nodes made in the
//! store (renewals, revocations) are taken in.

use super::{now_unix, CertManager, Issuer, Refusal, Served, Urgency};
use crate::domain::Hostname;
use crate::metrics::METRICS;
use crate::tls::renewal::{renew_at, Window};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long before a CA that gave no renewal window is asked again.
const ASK_WITHOUT_ARI: Duration = Duration::from_secs(24 * 3600);
/// Renewal windows asked of the CAs per `renew_check`, and at once.
const ARI_ASKS_PER_CHECK: usize = 500;
const ARI_AT_ONCE: usize = 8;

impl CertManager {
    /// Renews held certificates in the background when their renewal time
    /// comes (`renewal::renew_at`: the CA's ARI window where it offers one,
    /// else a spread point of the last `renew_when_left` of the lifetime);
    /// handshakes never wait for a renewal. A failed renewal keeps the old
    /// certificate until it expires and is retried on the next check.
    pub async fn renew_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.renew_check);
        loop {
            tick.tick().await;
            self.follow_store().await;
            // Bounded by the check's period: a CA whose ARI hangs (an
            // outage) must not hold up the renewals that are due.
            let asks = self.ask_renewal_windows();
            let _ = tokio::time::timeout(self.settings.renew_check, asks).await;
            let now = now_unix();
            let due: Vec<(Hostname, Served)> = self
                .served
                .iter()
                .filter(|(_, s)| s.due(now))
                .map(|(h, s)| ((*h).clone(), s))
                .collect();
            for (host, old) in due {
                // A domain suspended or deleted since: not renewed again.
                if !self.policy.may_issue(&host).await {
                    info!(%host, "certificate not renewed: the name is no longer served");
                    self.served.invalidate(&host).await;
                    continue;
                }
                match self.obtain(&host, Some(&old), Urgency::Background).await {
                    Ok(new) => self.served.insert(host, new).await,
                    // Its turn comes at a later check (the rate's other half
                    // is the handshakes'); counted as rate_limited, not failed.
                    Err(Refusal::RateLimited) => {
                        debug!(%host, "renewal waits: issuance rate limit");
                    }
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

    /// Asks the CA's renewal information (ARI) for each held certificate
    /// whose last answer has aged out, and moves its renewal time into the
    /// suggested window. A CA without ARI answers None at once; it is asked
    /// again a day later.
    async fn ask_renewal_windows(&self) {
        let now = now_unix();
        // A bounded share per check, a few at once: 100,000 certificates
        // held must not hold up the renewals that are due.
        let asking: Vec<(Hostname, Served)> = self
            .served
            .iter()
            .filter(|(_, s)| s.ask_ari_at <= now)
            .take(ARI_ASKS_PER_CHECK)
            .map(|(h, s)| ((*h).clone(), s))
            .collect();
        futures::stream::iter(asking)
            .for_each_concurrent(ARI_AT_ONCE, |(host, held)| {
                self.ask_renewal_window(host, held)
            })
            .await;
    }

    async fn ask_renewal_window(&self, host: Hostname, held: Served) {
        let suggested = self.issuer.renewal_window(&held.id).await;
        let fixed = Window::fixed(
            held.not_before,
            held.not_after,
            self.settings.renew_when_left,
        );
        let now = now_unix();
        let renew_at = renew_at(fixed, suggested.as_ref(), rand::random(), now);
        let ask_again = suggested.map_or(ASK_WITHOUT_ARI, |s| s.ask_again);
        if let Some(s) = &suggested {
            info!(%host, start = s.window.start, end = s.window.end, renew_at, "CA's renewal window");
        }
        use moka::ops::compute::Op;
        self.served
            .entry(host)
            .and_compute_with(|entry| {
                // Only the certificate that was asked about.
                let op = match entry.map(|e| e.into_value()) {
                    Some(mut s) if s.fingerprint == held.fingerprint => {
                        if suggested.is_some() {
                            s.renew_at = renew_at;
                        }
                        s.ask_ari_at = now + ask_again.as_secs() as i64;
                        Op::Put(s)
                    }
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Takes in what changed in the store since the last check: a newer
    /// certificate (another node renewed) replaces the held one; a revoked
    /// one is dropped, so the next handshake obtains a fresh certificate.
    async fn follow_store(&self) {
        // Nothing held (a node just started): nothing to follow, and no
        // walk of a store of 100,000 names.
        if self.served.iter().next().is_none() {
            return;
        }
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
                    if c.fingerprint() != held.fingerprint && c.not_before >= held.not_before {
                        match Served::new(&c, self.settings.renew_when_left) {
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
