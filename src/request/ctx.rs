//! What one request carries from step to step.

use super::refusal::Refusal;
use super::route::EdgeRoute;
use crate::compress::Streaming;
use crate::domain::{Authority, Hostname, PopId, Tier};
use crate::edge::{ActiveRequest, EdgeState};
use crate::failover::RelayReason;
use crate::lb::{InflightGuard, Pool};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the edge produced the response (`x-edge-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Stale,
    Bypass,
}

impl CacheStatus {
    /// A peer's `x-edge-cache` value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "HIT" => CacheStatus::Hit,
            "MISS" => CacheStatus::Miss,
            "STALE" => CacheStatus::Stale,
            "BYPASS" => CacheStatus::Bypass,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// The listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Where a request goes when the edge does not answer it itself: one
/// value, set when the upstream is chosen (each attempt), read by every
/// step after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A server of the domain's origin pool.
    Origin(SocketAddr),
    /// A peer PoP, over mutual TLS (a relay).
    Peer(PopId),
}

/// A random request id, shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(u64);

impl RequestId {
    pub fn new() -> Self {
        RequestId(rand::random())
    }

    /// The id a peer PoP gave a request it relayed (16 hex digits), kept
    /// so both PoPs' log lines share it.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 16)
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
            .map(RequestId)
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

pub struct RequestCtx {
    pub started: Instant,
    /// The config generation this request runs under, start to end.
    pub state: Arc<EdgeState>,
    pub route: EdgeRoute,
    pub scheme: Scheme,
    /// The Host as the edge understood it (forwarded as Host and
    /// x-forwarded-host).
    pub authority: Option<Authority>,
    /// Names this request in the response (`x-request-id`, error pages)
    /// and in the access log, so a client's report finds the log line.
    pub id: RequestId,
    pub host: Option<Hostname>,
    /// The site's tier, once its domain is known (metrics by tier).
    pub tier: Option<Tier>,
    pub pool: Option<Arc<Pool>>,
    pub cache: CacheStatus,
    /// Origins tried so far, in order.
    pub tried: Vec<SocketAddr>,
    /// The origin now holding this request (released on drop).
    pub inflight: Option<InflightGuard>,
    /// Time to load the page from the replica (a MISS).
    pub replica_elapsed: Option<Duration>,
    pub origin_started: Option<Instant>,
    pub origin_elapsed: Option<Duration>,
    /// `strict-transport-security` for this response (HTTPS only).
    pub hsts: Option<String>,
    /// What went wrong, in full (logged; clients get a short reason).
    pub error_reason: Option<String>,
    /// Request body bytes read from the client so far.
    pub body_received: u64,
    /// Something of this request may have reached a local origin.
    pub sent_to_origin: bool,
    /// The peer PoP that relayed this request here (never relayed again).
    pub relayed_from: Option<PopId>,
    /// The upstream of the current attempt (None: none chosen yet).
    pub upstream: Option<Upstream>,
    /// The first attempt's choice, made by the fast path before it handed
    /// the request on: the next attempt takes it instead of choosing again.
    pub ahead: Option<Result<Upstream, Refusal>>,
    /// The proxied answer's encoder (decided on its head).
    pub streaming: Streaming,
    /// Relaying to a peer: why, and what the peer said of its work.
    pub relay: Option<Relay>,
    /// The edge's own answer for a request that ended in an error (kept
    /// until the error page is written).
    pub refusal: Option<Refusal>,
    /// Admission and routing are done (by the fast path, which handed the
    /// request on to Pingora's phases): they do not run again.
    pub decided: bool,
    /// Peers that failed this request (not asked again).
    pub peers_tried: Vec<PopId>,
    /// Counts this request as in flight for draining until dropped.
    _active: ActiveRequest,
}

/// A request on its way to a peer PoP.
#[derive(Debug)]
pub struct Relay {
    pub reason: RelayReason,
    pub started: Option<Instant>,
    /// Until the peer's response header.
    pub elapsed: Option<Duration>,
    /// The peer's `x-edge-route` (the whole chain), `x-edge-cache`, and
    /// its `server-timing` parts other than its own `edge`.
    pub route: Option<String>,
    pub timing: Option<String>,
}

impl Relay {
    pub fn new(reason: RelayReason) -> Self {
        Relay {
            reason,
            started: None,
            elapsed: None,
            route: None,
            timing: None,
        }
    }
}

impl RequestCtx {
    pub fn new(state: Arc<EdgeState>, active: ActiveRequest) -> Self {
        RequestCtx {
            started: Instant::now(),
            route: EdgeRoute::landed(&state.pop),
            state,
            scheme: Scheme::Http,
            authority: None,
            id: RequestId::new(),
            host: None,
            tier: None,
            pool: None,
            cache: CacheStatus::Bypass,
            tried: Vec::new(),
            inflight: None,
            replica_elapsed: None,
            origin_started: None,
            origin_elapsed: None,
            error_reason: None,
            hsts: None,
            body_received: 0,
            sent_to_origin: false,
            relayed_from: None,
            upstream: None,
            ahead: None,
            streaming: Streaming::default(),
            relay: None,
            refusal: None,
            decided: false,
            peers_tried: Vec::new(),
            _active: active,
        }
    }

    /// The upstream's (origin's or peer's) response header arrived
    /// (nothing can be retried then).
    pub fn upstream_responded(&self) -> bool {
        self.origin_elapsed.is_some() || self.relay.as_ref().is_some_and(|r| r.elapsed.is_some())
    }

    /// Seconds a client is told to wait after a 503 (`proxy.retry_after`).
    pub fn retry_after(&self) -> u32 {
        self.state.config.proxy.retry_after
    }

    /// The peer PoP this attempt went to, if it is a relay.
    pub fn peer(&self) -> Option<&PopId> {
        match &self.upstream {
            Some(Upstream::Peer(pop)) => Some(pop),
            _ => None,
        }
    }

    /// Time spent waiting on the origin (to its response header, or so far).
    pub fn origin_time(&self) -> Option<Duration> {
        self.origin_elapsed
            .or_else(|| self.origin_started.map(|s| s.elapsed()))
    }
}
