//! Certificates ordered ahead: a domain the change stream makes active has
//! its certificate ordered at once, so its first visitor's handshake finds
//! it held. The order is the handshake's own (`order_for`): the same
//! policy, store, network-wide lock, rate limit and backoff; every PoP
//! hears of the domain, one orders, the others take it from the store.

use super::CertManager;
use crate::domain::Hostname;
use crate::metrics::METRICS;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, warn};

/// Orders waited on at once; the rest of the queue waits its turn.
const AT_ONCE: usize = 4;

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

    async fn order_ahead(self: &Arc<Self>, host: &Hostname) -> &'static str {
        if self.statics.contains_key(host) || self.served.contains_key(host) {
            return "held";
        }
        // Suspended or deleted since it was queued: no order.
        if !self.policy.may_issue(host).await || self.backoff.active(host) {
            return "refused";
        }
        match self.order_for(host).await {
            Ok(_) => {
                info!(%host, "certificate ready ahead of the first visitor");
                "issued_ahead"
            }
            Err(e) => {
                warn!(%host, error = %e, "certificate not ordered ahead; the first handshake will try");
                "failed"
            }
        }
    }
}
