//! Relaying to peer PoPs, both ends. Out: when this PoP cannot produce a
//! response (no origin, replica down with no copy, every origin at its
//! hard limit), the request goes to the most preferred ready peer over
//! mutual TLS, carrying its route. In: the peer listener admits requests
//! from authenticated peers only, extends their route (refusing loops and
//! forged chains) and never relays them again.

use super::ctx::{CacheStatus, Relay, RequestCtx, RequestId, Scheme};
use super::headers;
use super::route::{self, EdgeRoute, RouteRefusal};
use crate::edge::EdgeState;
use crate::failover::peers::{Peer, READY_PATH};
use crate::failover::{Readiness, RelayReason};
use crate::metrics::METRICS;
use crate::tls::book::PeerBook;
use http::StatusCode;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::Instant;

/// What the peer listener's proxy knows besides the edge.
pub struct PeerListener {
    /// Each connection's PoP, from its client certificate.
    pub book: Arc<PeerBook>,
    /// Answers peers' readiness checks.
    pub readiness: Arc<Readiness>,
}

/// What the peer listener answers before the usual request path: a
/// readiness check, or a refusal.
pub enum Inbound {
    /// Relayed in: go on with the usual path.
    Admitted,
    Ready(Vec<String>),
    Refused(StatusCode, String),
}

/// Admits a request that arrived on the peer listener.
pub fn inbound(session: &Session, ctx: &mut RequestCtx, listener: &PeerListener) -> Inbound {
    let connection = session.client_addr().and_then(|a| a.as_inet()).copied();
    let Some(sender) = connection.and_then(|c| listener.book.get(&c)) else {
        let why = "not a peer connection".to_string();
        return Inbound::Refused(StatusCode::FORBIDDEN, why);
    };
    let req = session.req_header();
    if req.uri.path() == READY_PATH {
        return Inbound::Ready(listener.readiness.reasons_without_peers());
    }
    let chain = req.headers.get(route::HEADER).and_then(|v| v.to_str().ok());
    let Some(chain) = chain else {
        let why = format!("a relayed request carries {}", route::HEADER);
        return Inbound::Refused(StatusCode::BAD_REQUEST, why);
    };
    ctx.route = match EdgeRoute::relayed(chain, &sender, &ctx.state.pop) {
        Ok(route) => route,
        Err(refusal) => {
            let (code, label) = match refusal {
                RouteRefusal::Loop(_) => (StatusCode::LOOP_DETECTED, "loop"),
                RouteRefusal::NotFromSender { .. } => (StatusCode::FORBIDDEN, "route"),
                RouteRefusal::Malformed(_) => (StatusCode::BAD_REQUEST, "route"),
            };
            METRICS.relays_refused.with_label_values(&[label]).inc();
            return Inbound::Refused(code, refusal.to_string());
        }
    };
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(id) = header("x-request-id").and_then(RequestId::parse) {
        ctx.id = id;
    }
    // The scheme the client used at the PoP it landed on.
    if header("x-forwarded-proto") == Some("https") {
        ctx.scheme = Scheme::Https;
    }
    ctx.relayed_from = Some(sender);
    Inbound::Admitted
}

/// Whether this request may be relayed now: not relayed in, nothing of
/// it sent to a local origin unless it is idempotent, and a ready peer not
/// on its route and not failed yet.
pub fn possible(session: &Session, ctx: &RequestCtx) -> bool {
    next_peer(&ctx.state, session, ctx).is_some()
}

fn next_peer<'a>(state: &'a EdgeState, session: &Session, ctx: &RequestCtx) -> Option<&'a Peer> {
    if ctx.relayed_from.is_some()
        || (ctx.sent_to_origin && !session.req_header().method.is_idempotent())
    {
        return None;
    }
    let (route, tried) = (&ctx.route, &ctx.peers_tried);
    state
        .peers
        .first_ready(|p| route.contains(p) || tried.contains(p))
}

/// The peer for the next relay attempt of this request, if `possible`.
pub fn target(
    session: &Session,
    ctx: &mut RequestCtx,
    reason: RelayReason,
) -> Option<Box<HttpPeer>> {
    let state = ctx.state.clone();
    let peer = next_peer(&state, session, ctx)?;
    ctx.peers_tried.push(peer.pop.clone());
    let relay = ctx.relay.get_or_insert_with(|| Relay::new(reason));
    relay.peer = Some(peer.pop.clone());
    relay.started = Some(Instant::now());
    ctx.inflight = Some(peer.state.begin());

    let proxy = &state.config.proxy;
    let mut http = peer.http_peer();
    http.options.connection_timeout = Some(proxy.connect_timeout);
    http.options.read_timeout = Some(proxy.read_timeout);
    http.options.write_timeout = Some(proxy.write_timeout);
    Some(Box::new(http))
}

/// The request header a peer receives: the forwarding headers as the
/// client's PoP set them, and this request's id.
pub fn upstream_request(upstream: &mut pingora_http::RequestHeader, ctx: &RequestCtx) {
    let _ = upstream.insert_header("x-request-id", ctx.id.to_string());
}

/// Notes what the peer's response says of the route, cache and timing.
pub fn response(upstream: &ResponseHeader, ctx: &mut RequestCtx) {
    let Some(relay) = ctx.relay.as_mut() else {
        return;
    };
    relay.elapsed = relay.started.map(|s| s.elapsed());
    let header = |name: &str| upstream.headers.get(name).and_then(|v| v.to_str().ok());
    // The peer extends our route with itself; anything else is not shown.
    relay.route = header(route::HEADER)
        .filter(|r| r.starts_with(ctx.route.render()))
        .map(str::to_string);
    relay.timing = headers::peer_timing(upstream);
    if let Some(cache) = header("x-edge-cache").and_then(CacheStatus::parse) {
        ctx.cache = cache;
    }
}

/// Counted once per relayed request, whatever its outcome.
pub fn count(ctx: &RequestCtx) {
    if let Some(Relay {
        reason,
        peer: Some(peer),
        ..
    }) = &ctx.relay
    {
        METRICS
            .relays
            .with_label_values(&[peer.as_str(), reason.as_str()])
            .inc();
    }
}
