//! Relaying to peer PoPs, both ends. Out: when this PoP cannot produce a
//! response (no origin, replica down with no copy, every origin at its
//! hard limit), the request goes to the most preferred ready peer over
//! mutual TLS, carrying its route. In: the peer listener admits requests
//! from authenticated peers only, extends their route (refusing loops and
//! forged chains) and never relays them again.

use super::answer::Answer;
use super::ctx::{CacheStatus, Relay, RequestCtx, RequestId, Scheme, Upstream};
use super::headers;
use super::refusal::Refusal;
use super::route::{self, EdgeRoute, RouteRefusal};
use crate::domain::PopId;
use crate::failover::peers::{Peer, READY_PATH};
use crate::failover::{Readiness, RelayReason};
use crate::metrics::METRICS;
use crate::tls::book::PeerBook;
use http::request::Parts;
use http::StatusCode;
use pingora_http::ResponseHeader;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What the peer listener's proxy knows besides the edge.
pub struct PeerListener {
    /// Each connection's PoP, from its client certificate.
    pub book: Arc<PeerBook>,
    /// Answers peers' readiness checks.
    pub readiness: Arc<Readiness>,
}

/// Admits a request that arrived on the peer listener over the connection
/// from `client`; else the answer: a readiness check, or a refusal.
pub fn inbound(
    req: &Parts,
    client: Option<SocketAddr>,
    ctx: &mut RequestCtx,
    listener: &PeerListener,
) -> Result<(), Answer> {
    let Some(sender) = client.and_then(|c| listener.book.get(&c)) else {
        let why = "not a peer connection";
        return Err(Refusal::new(StatusCode::FORBIDDEN, why).into());
    };
    if req.uri.path() == READY_PATH {
        return Err(Answer::Ready(listener.readiness.reasons_without_peers()));
    }
    let chain = req.headers.get(route::HEADER).and_then(|v| v.to_str().ok());
    let Some(chain) = chain else {
        let why = format!("a relayed request carries {}", route::HEADER);
        return Err(Refusal::new(StatusCode::BAD_REQUEST, why).into());
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
            return Err(Refusal::new(code, refusal.to_string()).into());
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
    Ok(())
}

/// Whether this request (`method`) may be relayed now: not relayed in,
/// nothing of it sent to a local origin unless it is idempotent, and a
/// ready peer not on its route and not failed yet.
pub fn possible(ctx: &RequestCtx, method: &http::Method) -> bool {
    next_peer(ctx, method).is_some()
}

fn next_peer<'a>(ctx: &'a RequestCtx, method: &http::Method) -> Option<&'a Peer> {
    if ctx.relayed_from.is_some() || (ctx.sent_to_origin && !method.is_idempotent()) {
        return None;
    }
    let (route, tried) = (&ctx.route, &ctx.peers_tried);
    ctx.state
        .peers
        .first_ready(|p| route.contains(p) || tried.contains(p))
}

/// The peer for the next relay attempt of this request, if `possible`:
/// it becomes the request's upstream and holds a relay slot.
pub fn choose(ctx: &mut RequestCtx, method: &http::Method, reason: RelayReason) -> Option<PopId> {
    let peer = next_peer(ctx, method)?;
    let (pop, slot) = (peer.pop.clone(), peer.state.begin());
    ctx.peers_tried.push(pop.clone());
    let relay = ctx.relay.get_or_insert_with(|| Relay::new(reason));
    relay.started = Some(Instant::now());
    ctx.inflight = Some(slot);
    ctx.upstream = Some(Upstream::Peer(pop.clone()));
    Some(pop)
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
    if let (Some(relay), Some(peer)) = (&ctx.relay, ctx.peer()) {
        METRICS
            .relays
            .with_label_values(&[peer.as_str(), relay.reason.as_str()])
            .inc();
    }
}
