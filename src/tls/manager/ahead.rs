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
/// Active domains read from the directory at a time (`sweep_store`).
const SWEEP_PAGE: usize = 1000;
/// How long the sweep leaves a name alone after a failed order.
const SWEEP_AFTER_FAILURE: Duration = Duration::from_secs(24 * 3600);
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

    /// Walks the names the policy allows (the replica's active domains) at
    /// start and then every `sweep_every`, a page at a time, for those the
    /// store does not cover well: no usable certificate (a snapshot load,
    /// a domain made active while the node was down, an expired one) is
    /// ordered ahead; one whose renewal share has begun is taken into
    /// memory, where renewal (ARI, the spread window, `replaces`) takes
    /// it. The rest stay in the store, unparsed, until a handshake asks.
    pub async fn sweep_store(self: Arc<Self>) {
        loop {
            self.sweep_once().await;
            tokio::time::sleep(self.settings.sweep_every).await;
        }
    }

    async fn sweep_once(self: &Arc<Self>) {
        let (mut after, mut tended) = (None, 0usize);
        loop {
            let page = self.policy.allowed_names(after.as_ref(), SWEEP_PAGE).await;
            let Some(last) = page.last().cloned() else {
                break;
            };
            let wanting = match self
                .store
                .wanting(&page, self.settings.renew_when_left)
                .await
            {
                Ok(w) => w,
                Err(e) => {
                    warn!(error = %e, "certificate store: active domains not checked for certificates");
                    return;
                }
            };
            tended += wanting.len();
            futures::stream::iter(wanting)
                .for_each_concurrent(AT_ONCE, |host| {
                    let this = self.clone();
                    async move {
                        let result = this.tend(&host).await;
                        METRICS.tls_ahead.with_label_values(&[result]).inc();
                    }
                })
                .await;
            after = Some(last);
        }
        info!(
            tended,
            "active domains checked: certificates ordered where none was stored, held where renewal is due"
        );
    }

    /// A name the store does not cover well: its stored certificate held
    /// for renewal, or a new one ordered.
    async fn tend(self: &Arc<Self>, host: &Hostname) -> &'static str {
        if self.served.contains_key(host) {
            return "held";
        }
        if !self.policy.may_issue(host).await {
            return "refused";
        }
        match self.stored_cert(host, None).await {
            Ok(Some(s)) => {
                self.served.insert(host.clone(), s).await;
                "held_for_renewal"
            }
            _ if self.failed_lately(host).await => "failed_recently",
            _ => self.order_ahead(host).await,
        }
    }

    /// An order for `host` failed within `SWEEP_AFTER_FAILURE` (the store
    /// keeps the last failure across restarts and for every PoP): a name
    /// whose DNS does not point here is not ordered each sweep, which
    /// would spend the account's limits.
    async fn failed_lately(&self, host: &Hostname) -> bool {
        let since = super::now_unix() - SWEEP_AFTER_FAILURE.as_secs() as i64;
        matches!(self.store.last_failure(host).await, Ok(Some((at, _))) if at > since)
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
            // The issuance rate holds for orders ahead too: wait for its
            // spare half rather than order and be refused.
            if !self.limit.has_spare() {
                tokio::time::sleep(RATE_LIMITED_WAIT).await;
                continue;
            }
            match self.order_for(host, Urgency::Background).0.await {
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
