//! What one request carries from phase to phase.

use super::route::EdgeRoute;
use crate::domain::{Authority, Hostname};
use crate::edge::{ActiveRequest, EdgeState};
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

/// A random request id, shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(u64);

impl RequestId {
    pub fn new() -> Self {
        RequestId(rand::random())
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
    /// Counts this request as in flight for draining until dropped.
    _active: ActiveRequest,
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
            _active: active,
        }
    }

    /// The origin's response header arrived (nothing can be retried then).
    pub fn upstream_responded(&self) -> bool {
        self.origin_elapsed.is_some()
    }

    /// Time spent waiting on the origin (to its response header, or so far).
    pub fn origin_time(&self) -> Option<Duration> {
        self.origin_elapsed
            .or_else(|| self.origin_started.map(|s| s.elapsed()))
    }
}
