//! The certificate manager: answers each handshake with a certificate,
//! obtaining one on demand, and renews what it holds in the background.

use super::cert::{now_unix, Served, StaticCerts};
use super::challenge::{self, ChallengeKey, Challenges};
use super::error::{IssueError, StoreError};
use super::issuer::Issuer;
use super::issuers::{IssuerStatus, Issuers};
use super::limits::{Backoffs, Pending, RateLimit};
use super::store::{CertStore, IssuanceLock, Lock};
use crate::domain::Hostname;
use crate::locked;
use crate::metrics::METRICS;
use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt, Shared};
use moka::future::Cache;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

mod ahead;
mod quic;
mod renew;

/// Whether a name may get a certificate on demand (certmagic's
/// `DecisionFunc`). Asked for every name not already held, before the
/// store or the CA is, so a refused name costs neither.
#[async_trait]
pub trait IssuePolicy: Send + Sync {
    async fn may_issue(&self, host: &Hostname) -> bool;
    /// Up to `limit` names that may issue, in name order after `after`:
    /// walked once at start, so names allowed before the node started get
    /// their certificates ahead too. Default: none.
    async fn allowed_names(&self, _after: Option<&Hostname>, _limit: usize) -> Vec<Hostname> {
        Vec::new()
    }
}

/// Who an order is for: a handshake waiting now, or the background (an
/// order ahead, a renewal), which leaves half the issuance rate to
/// handshakes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Urgency {
    Handshake,
    Background,
}

/// An order in progress, awaited by every handshake that wants its name.
type Order = Shared<BoxFuture<'static, Result<Served, Refusal>>>;

/// Why a handshake was refused (logged at debug, counted).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("no SNI")]
    NoSni,
    #[error("invalid SNI: {0}")]
    BadName(String),
    #[error("{0} is not an active domain of this network")]
    NotServed(Hostname),
    #[error("{0} is backing off after a failed issuance")]
    BackingOff(Hostname),
    #[error("issuance rate limit reached")]
    RateLimited,
    /// Shared by every handshake waiting on the order, hence the `Arc`.
    #[error("issuance for {0} failed: {1}")]
    Failed(Hostname, Arc<IssueError>),
    #[error("the certificate for {0} is still being issued")]
    StillIssuing(Hostname),
    /// The certificate's config cannot serve QUIC (no TLS 1.3 suite).
    #[error("no QUIC config: {0}")]
    NoQuic(String),
}

impl Refusal {
    fn failed(host: Hostname, why: impl Into<IssueError>) -> Self {
        Refusal::Failed(host, Arc::new(why.into()))
    }
}

pub struct TlsSettings {
    /// How long a handshake waits for a new certificate.
    pub issue_timeout: Duration,
    /// How long an order may take (it goes on after the handshake gave up).
    pub order_timeout: Duration,
    pub backoff: Duration,
    pub issue_per_minute: u32,
    pub renew_when_left: f64,
    pub renew_check: Duration,
    /// Parsed certificates kept in memory at most; the rest are loaded
    /// from the store on their next handshake.
    pub hold_at_most: u64,
    /// How often the active domains are checked against the store.
    pub sweep_every: Duration,
    /// This node's name as an issuance lock holder.
    pub node: String,
}

/// How often a node waiting on another's issuance lock looks again.
const LOCK_POLL: Duration = Duration::from_millis(200);

pub struct CertManager {
    policy: Arc<dyn IssuePolicy>,
    statics: HashMap<Hostname, Arc<ServerConfig>>,
    statics_not_after: Option<i64>,
    served: Cache<Hostname, Served>,
    store: Arc<dyn CertStore>,
    lock: Arc<dyn IssuanceLock>,
    challenges: Arc<Challenges>,
    issuer: Arc<Issuers>,
    /// Orders running, with whom each was placed for.
    inflight: std::sync::Mutex<HashMap<Hostname, (Order, Urgency)>>,
    backoff: Backoffs,
    limit: RateLimit,
    settings: TlsSettings,
}

impl CertManager {
    pub fn new(
        policy: Arc<dyn IssuePolicy>,
        statics: StaticCerts,
        store: Arc<dyn CertStore>,
        lock: Arc<dyn IssuanceLock>,
        challenges: Arc<Challenges>,
        issuer: Arc<Issuers>,
        settings: TlsSettings,
    ) -> Self {
        CertManager {
            policy,
            statics: statics.by_name,
            statics_not_after: statics.soonest_not_after,
            served: Cache::builder().max_capacity(settings.hold_at_most).build(),
            store,
            lock,
            challenges,
            issuer,
            inflight: Default::default(),
            backoff: Backoffs::new(settings.backoff),
            limit: RateLimit::new(settings.issue_per_minute),
            settings,
        }
    }

    pub async fn held(&self) -> u64 {
        // moka counts lazily: settle pending inserts first.
        self.served.run_pending_tasks().await;
        self.served.entry_count() + self.statics.len() as u64
    }

    /// The not-after of the soonest-expiring certificate held (static or
    /// obtained), None when none is held. Walks what is held: for a scrape,
    /// not for a handshake.
    pub fn soonest_not_after(&self) -> Option<i64> {
        let obtained = self.served.iter().map(|(_, s)| s.not_after).min();
        match (obtained, self.statics_not_after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `a` and `b` are served by one static certificate (a client may send
    /// requests for both on one connection: HTTP/2 coalescing).
    pub fn one_certificate(&self, a: &Hostname, b: &Hostname) -> bool {
        match (self.statics.get(a), self.statics.get(b)) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        }
    }

    pub async fn stored(&self) -> Result<usize, StoreError> {
        self.store.count().await
    }

    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Each CA of `tls.issuers`, in order, with its counts and last failure.
    pub fn issuers(&self) -> Vec<IssuerStatus> {
        self.issuer.status()
    }

    pub async fn config_for(
        self: &Arc<Self>,
        sni: Option<&str>,
    ) -> Result<Arc<ServerConfig>, Refusal> {
        let name = sni.ok_or(Refusal::NoSni)?;
        let host = Hostname::parse(name).map_err(|e| Refusal::BadName(format!("{name}: {e}")))?;
        if let Some(c) = self.statics.get(&host) {
            return Ok(c.clone());
        }
        if let Some(s) = self.served.get(&host).await {
            if s.live() {
                return Ok(s.config);
            }
            // Expired (renewal failed all along): never served.
            self.served.invalidate(&host).await;
        }
        // Only names the policy allows get a certificate (no store, no CA).
        if !self.policy.may_issue(&host).await {
            return Err(Refusal::NotServed(host));
        }
        if self.backoff.active(&host) {
            return Err(Refusal::BackingOff(host));
        }
        // One load-or-issue per name, however many handshakes wait for it;
        // it runs as its own task, so an order outlives a handshake that
        // stops waiting (the next handshake finds the certificate).
        let deadline = tokio::time::Instant::now() + self.settings.issue_timeout;
        let (order, joined) = self.order_for(&host, Urgency::Handshake);
        let mut result = tokio::time::timeout_at(deadline, order).await;
        if joined == Urgency::Background && matches!(result, Ok(Err(Refusal::RateLimited))) {
            // It joined a background order, which only has the rate's
            // spare half: the handshake orders with its own.
            let (order, _) = self.order_for(&host, Urgency::Handshake);
            result = tokio::time::timeout_at(deadline, order).await;
        }
        match result {
            Ok(Ok(s)) => {
                self.backoff.clear(&host);
                Ok(s.config)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Refusal::StillIssuing(host)),
        }
    }

    /// The running order for `host`, or a new one, and whom it was
    /// placed for (a joined background order has only the spare rate).
    fn order_for(self: &Arc<Self>, host: &Hostname, urgency: Urgency) -> (Order, Urgency) {
        let mut inflight = locked(&self.inflight);
        if let Some((order, placed_for)) = inflight.get(host) {
            return (order.clone(), *placed_for);
        }
        let (this, name) = (Arc::clone(self), host.clone());
        let task = tokio::spawn(async move {
            let result = this.obtain(&name, None, urgency).await;
            if let Ok(s) = &result {
                this.served.insert(name.clone(), s.clone()).await;
            }
            // Taken after `order_for` released it: the entry is in by then.
            locked(&this.inflight).remove(&name);
            result
        });
        let name = host.clone();
        let order = async move {
            task.await
                .unwrap_or_else(|e| Err(Refusal::failed(name, IssueError::Aborted(e.to_string()))))
        }
        .boxed()
        .shared();
        inflight.insert(host.clone(), (order.clone(), urgency));
        (order, urgency)
    }

    /// A stored certificate if it is valid (and newer than the one it is
    /// `renewing`), else a new one from the issuer. With a shared store only
    /// the holder of the name's lock orders; the others wait for its
    /// certificate.
    async fn obtain(
        &self,
        host: &Hostname,
        renewing: Option<&Served>,
        urgency: Urgency,
    ) -> Result<Served, Refusal> {
        // Issued after the one being renewed (a fallback CA's may end sooner).
        let newer_than = renewing.map(|s| s.not_before);
        let _pending = Pending::start();
        let deadline = Instant::now() + self.settings.order_timeout;
        // Outlives the holder's own timeout; a crashed holder's lock lapses.
        let lease = self.settings.order_timeout + Duration::from_secs(10);
        loop {
            if let Some(s) = self.stored_cert(host, newer_than).await? {
                return Ok(s);
            }
            match self.lock.try_lock(host, &self.settings.node, lease).await {
                Ok(Lock::Acquired) => break,
                Ok(Lock::BackingOff(left)) => {
                    // Another node's order failed: this one holds off too.
                    self.backoff.hold_off(host, left);
                    return Err(Refusal::BackingOff(host.clone()));
                }
                Ok(Lock::Held) if Instant::now() < deadline => tokio::time::sleep(LOCK_POLL).await,
                Ok(Lock::Held) => return Err(Refusal::failed(host.clone(), IssueError::LockHeld)),
                Err(e) => {
                    // Serving the name matters more than one order per network.
                    warn!(%host, error = %e, "issuance lock unavailable; ordering without it");
                    break;
                }
            }
        }
        // The previous holder may have saved its certificate just now.
        let result = match self.stored_cert(host, newer_than).await? {
            Some(s) => Ok(s),
            None => self.issue(host, renewing, deadline, urgency).await,
        };
        let backoff = match &result {
            Err(Refusal::Failed(..)) => self.backoff.left(host),
            _ => None,
        };
        if let Err(e) = self.lock.unlock(host, &self.settings.node, backoff).await {
            warn!(%host, error = %e, "issuance lock not released; it lapses with its lease");
        }
        result
    }

    async fn stored_cert(
        &self,
        host: &Hostname,
        newer_than: Option<i64>,
    ) -> Result<Option<Served>, Refusal> {
        match self.store.load(host).await {
            Ok(Some(cert)) if cert.valid() && newer_than.is_none_or(|t| cert.not_before > t) => {
                // Kept across a restart, or ordered by another node.
                METRICS
                    .tls_issuance
                    .with_label_values(&["from_store"])
                    .inc();
                Served::new(&cert, self.settings.renew_when_left)
                    .map(Some)
                    .map_err(|e| Refusal::failed(host.clone(), e))
            }
            Ok(_) => Ok(None),
            Err(e) => {
                warn!(%host, error = %e, "certificate store read failed");
                Ok(None)
            }
        }
    }

    async fn issue(
        &self,
        host: &Hostname,
        renewing: Option<&Served>,
        deadline: Instant,
        urgency: Urgency,
    ) -> Result<Served, Refusal> {
        let allowed = match urgency {
            Urgency::Handshake => self.limit.take(),
            Urgency::Background => self.limit.take_spare(),
        };
        if !allowed {
            METRICS
                .tls_issuance
                .with_label_values(&["rate_limited"])
                .inc();
            return Err(Refusal::RateLimited);
        }
        let started = Instant::now();
        let left = deadline.saturating_duration_since(started);
        let replacing = renewing.map(|s| &*s.id);
        let issued = match tokio::time::timeout(left, self.issuer.issue(host, replacing)).await {
            Ok(Ok(cert)) => cert,
            Ok(Err(e)) => return Err(self.failed(host, e).await),
            Err(_) => return Err(self.failed(host, IssueError::TimedOut).await),
        };
        METRICS
            .tls_issue_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = if renewing.is_some() {
            "renewed"
        } else {
            "issued"
        };
        METRICS.tls_issuance.with_label_values(&[outcome]).inc();
        info!(%host, issuer = %issued.issuer, took_ms = started.elapsed().as_millis() as u64, outcome, "certificate obtained");
        if let Err(e) = self.store.save(host, &issued).await {
            warn!(%host, error = %e, "certificate store write failed");
        }
        Served::new(&issued, self.settings.renew_when_left)
            .map_err(|e| Refusal::failed(host.clone(), e))
    }

    /// The published answer to a pending ACME challenge, from any node.
    pub async fn challenge_answer(&self, key: &ChallengeKey) -> Option<String> {
        let answer = self.challenges.answer(key).await?;
        METRICS
            .tls_challenges
            .with_label_values(&[key.parts().0])
            .inc();
        Some(answer)
    }

    /// The TLS-ALPN-01 answer for a hello offering `acme-tls/1`.
    pub async fn alpn_answer(&self, sni: Option<&str>) -> Option<Arc<ServerConfig>> {
        let host = Hostname::parse(sni?).ok()?;
        let auth = self
            .challenge_answer(&ChallengeKey::TlsAlpn01(host.clone()))
            .await?;
        challenge::alpn_config(&host, &auth)
            .inspect_err(|e| warn!(%host, error = %e, "TLS-ALPN-01 answer"))
            .ok()
    }

    /// Records a failed issuance: the name backs off, doubling each time,
    /// and the store keeps the reason for `edgepop tls status`.
    async fn failed(&self, host: &Hostname, why: IssueError) -> Refusal {
        if let Err(e) = self
            .store
            .note_failure(host, now_unix(), &why.to_string())
            .await
        {
            warn!(%host, error = %e, "certificate store: failure not noted");
        }
        METRICS.tls_issuance.with_label_values(&["failed"]).inc();
        METRICS
            .tls_issuance_failures
            .with_label_values(&[why.cause()])
            .inc();
        let backoff = self.backoff.failed(host);
        warn!(%host, error = %why, ?backoff, "certificate issuance failed");
        Refusal::failed(host.clone(), why)
    }
}
