//! The steps both request paths take (the phases and the fast path), in
//! Pingora's terms: the context, the session's settings, the rules, the
//! end of the request.

use super::cancel;
use crate::edge::Edge;
use crate::metrics::METRICS;
use crate::request::log::{self, Exchange};
use crate::request::route;
use crate::request::{admit, headers, relay, routing, Answer, Listener, RequestCtx};
use bytes::Bytes;
use pingora_core::protocols::http::ServerSession;
use pingora_core::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use std::net::SocketAddr;

/// A new request's context: the config generation in force, counted as
/// active until dropped.
pub(super) fn new_ctx(edge: &Edge, listener: &Listener) -> RequestCtx {
    let mut ctx = RequestCtx::new(edge.state(), edge.begin_request());
    ctx.scheme = listener.scheme;
    ctx
}

/// The client connection's address.
pub(super) fn client(session: &ServerSession) -> Option<SocketAddr> {
    session.client_addr().and_then(|a| a.as_inet()).copied()
}

/// The connection's settings for this request, and the request as the
/// rules may see it: on both paths, before anything else.
pub(super) fn prepare(session: &mut ServerSession, ctx: &RequestCtx, listener: &Listener) {
    let proxy = &ctx.state.config.proxy;
    // Idle keep-alive connections close after the timeout; the count
    // limit gives per-connection memory back now and then.
    if session.get_keepalive().is_some() {
        session.set_keepalive(Some(proxy.keepalive_timeout.as_secs().max(1)));
    }
    // Pipelined requests are read from what the client already sent
    // and answered in order instead of being dropped with the buffer.
    session.set_pipelining_enabled(true);
    // Each read of the request body (HTTP/1) waits this long at most.
    session.set_read_timeout(Some(proxy.body_timeout));
    if listener.peering.is_none() {
        // A client's x-edge-route never travels on.
        session.req_header_mut().remove_header(route::HEADER);
    }
}

/// Admission, then routing (`crate::request`): Ok, on to an upstream; Err,
/// the edge's own answer.
pub(super) async fn decide(
    edge: &Edge,
    listener: &Listener,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
) -> std::result::Result<(), Answer> {
    let client = client(session);
    let req = session.req_header();
    let domain = admit(edge, listener, req, client, ctx).await?;
    routing::route(edge, req, &domain, ctx).await
}

/// The upstream request head (a copy of the client's): hop-by-hop fields
/// out, the forwarding headers in; a relay's id.
pub(super) fn upstream_request(
    session: &ServerSession,
    upstream: &mut RequestHeader,
    ctx: &mut RequestCtx,
) {
    headers::strip_hop_by_hop_request(upstream);
    // A relayed request keeps the forwarding headers of the PoP the
    // client landed on: the peer's address is not the client's.
    let client_ip = client(session)
        .filter(|_| ctx.relayed_from.is_none())
        .map(|a| a.ip().to_string());
    headers::add_forwarded(upstream, ctx, client_ip);
    if ctx.peer().is_some() {
        relay::upstream_request(upstream, ctx);
    } else {
        ctx.sent_to_origin = true;
    }
}

/// The upstream's response head as it arrived: what a peer said of its
/// work noted, the origin's success counted, hop-by-hop fields out. A 101
/// to a request that asked for no upgrade is an error (a 502, as nginx
/// answers it): forwarded, it would turn the client's connection into a
/// tunnel the client never asked for.
pub(super) fn upstream_response(
    req: &RequestHeader,
    upstream: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<(), Box<Error>> {
    let asked = req.headers.contains_key(http::header::UPGRADE);
    if upstream.status == http::StatusCode::SWITCHING_PROTOCOLS && !asked {
        let why = "101 response to a request that asked for no upgrade";
        return Err(Error::explain(ErrorType::InvalidHTTPHeader, why).into_up());
    }
    if ctx.peer().is_some() {
        relay::response(upstream, ctx);
    } else {
        ctx.origin_elapsed = ctx.origin_started.map(|s| s.elapsed());
        if let Some(guard) = &ctx.inflight {
            guard.backend().record_success();
        }
    }
    headers::strip_hop_by_hop_response(upstream);
    // Speak HTTP/1.1 to clients even when an origin answers in 1.0.
    upstream.set_version(http::Version::HTTP_11);
    encode_response(req, upstream, ctx);
    Ok(())
}

/// Whether the answer is encoded on its way (the client accepts a coding,
/// the origin sent identity of a compressible type, no `no-transform`):
/// decided once, on the final head; the body goes through `encode_body`.
fn encode_response(req: &RequestHeader, upstream: &mut ResponseHeader, ctx: &mut RequestCtx) {
    if upstream.status.is_informational() || req.method == http::Method::HEAD {
        return;
    }
    let policy = &ctx.state.streaming;
    ctx.streaming = policy.for_request(ctx.host.as_ref(), &req.headers);
    ctx.streaming.response_head(upstream, policy);
    if let Some(e) = ctx.streaming.encoding() {
        METRICS
            .encoded_responses
            .with_label_values(&[e.as_str(), "proxied"])
            .inc();
    }
}

/// A body chunk of a proxied answer, encoded if its head decided so.
/// What the encoder holds back is not sent as an empty chunk: on HTTP/1.1
/// an empty chunk would end the body.
pub(super) fn encode_body(body: &mut Option<Bytes>, end: bool, ctx: &mut RequestCtx) {
    if let Some(encoded) = ctx.streaming.body(body.as_ref(), end) {
        *body = Some(encoded).filter(|b| !b.is_empty());
    }
}

/// The end of every request, whichever path served it: its slot given
/// back, relays and cancellations counted, the access-log line.
pub(super) fn record(session: &ServerSession, e: Option<&Error>, ctx: &mut RequestCtx) {
    ctx.inflight = None;
    relay::count(ctx);
    if e.is_some_and(cancel::by_client) {
        METRICS
            .client_cancelled
            .with_label_values(&["in_flight"])
            .inc();
    }
    let req = session.req_header();
    let exchange = Exchange {
        method: req.method.as_str(),
        path: req.uri.path(),
        proto: proto(req.version),
        status: session.response_written().map_or(0, |r| r.status.as_u16()),
        body_bytes: session.body_bytes_sent(),
        client: client(session),
        error: e.map(|e| e.to_string()),
    };
    log::record(exchange, ctx);
}

/// The access log's name of an HTTP version (as nginx's `$server_protocol`).
fn proto(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}
