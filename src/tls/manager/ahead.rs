//! Certificates ordered ahead: a domain the change stream makes active has
//! its certificate ordered at once, so its first visitor's handshake finds
//! it held. The order is the handshake's own (`order_for`): the same
//! policy, store, network-wide lock, rate limit and backoff; every PoP
//! hears of the domain, one orders, the others take it from the store.

use super::{CertManager, Refusal, Urgency};
use crate::domain::Hostname;
use crate::metrics::METRICS;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, warn};

/// Orders waited on at once; the rest of the queue waits its turn.
const AT_ONCE: usize = 4;
/// Active domains read from the directory at a time (`catch_up`).
const CATCH_UP_PAGE: usize = 1000;
/// How long an order ahead refused by the issuance rate limit waits.
const RATE_LIMITED_WAIT: Duration = Duration::from_secs(1);

impl CertManager {
    /// Orders a certificate for each name `activated` sends, a few at a
    /// time, until the sender is gone.
    pub async fn issue_ahead(self: Arc<Self>, mut activated: mpsc::Receiver<Hostname>) {
        let slots = Arc::new(Semaphore::new(AT_ONCE));
        while let Some(host) = activated.recv().await {
            METRICS.tls_ahead_queued.set(activated.len() as i64);
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let result = this.order_ahead(&host).await;
                METRICS.tls_ahead.with_label_values(&[result]).inc();
                drop(slot);
            });
        }
    }

    /// Walks the names the policy allows (the active domains) once, a page
    /// at a time, and orders ahead those with no usable certificate in the
    /// store: domains loaded from a snapshot, or made active while the
    /// node was down. Names with one stay in the store until a handshake
    /// wants them (nothing is parsed).
    pub async fn catch_up(self: Arc<Self>) {
        let (mut after, mut missing_total) = (None, 0usize);
        loop {
            let page = self
                .policy
                .allowed_names(after.as_ref(), CATCH_UP_PAGE)
                .await;
            let Some(last) = page.last().cloned() else {
                break;
            };
            let missing = match self.store.missing(&page).await {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "certificate store: active domains not checked for certificates");
                    return;
                }
            };
            missing_total += missing.len();
            futures::stream::iter(missing)
                .for_each_concurrent(AT_ONCE, |host| {
                    let this = self.clone();
                    async move {
                        let result = this.order_ahead(&host).await;
                        METRICS.tls_ahead.with_label_values(&[result]).inc();
                    }
                })
                .await;
            after = Some(last);
        }
        info!(
            missing = missing_total,
            "active domains checked: certificates ordered ahead where none was stored"
        );
    }

    async fn order_ahead(self: &Arc<Self>, host: &Hostname) -> &'static str {
        if self.statics.contains_key(host) || self.served.contains_key(host) {
            return "held";
        }
        loop {
            // Suspended or deleted since it was queued: no order.
            if !self.policy.may_issue(host).await || self.backoff.active(host) {
                return "refused";
            }
            match self.order_for(host, Urgency::Background).await {
                Ok(_) => {
                    info!(%host, "certificate ready ahead of the first visitor");
                    return "issued_ahead";
                }
                // The issuance rate limit holds for orders ahead too: this
                // one waits its turn instead of failing (a bulk import).
                Err(Refusal::RateLimited) => tokio::time::sleep(RATE_LIMITED_WAIT).await,
                Err(e) => {
                    warn!(%host, error = %e, "certificate not ordered ahead; the first handshake will try");
                    return "failed";
                }
            }
        }
    }
}
