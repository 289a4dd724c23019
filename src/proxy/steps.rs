//! The steps both request paths take (the phases and the fast path), in
//! Pingora's terms: the context, the session's settings, the rules, the
//! end of the request.

use super::cancel;
use crate::edge::Edge;
use crate::metrics::METRICS;
use crate::request::log::{self, Exchange};
use crate::request::route;
use crate::request::{admit, relay, routing, Answer, Listener, RequestCtx};
use pingora_core::protocols::http::ServerSession;
use pingora_core::Error;
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
        status: session.response_written().map_or(0, |r| r.status.as_u16()),
        body_bytes: session.body_bytes_sent(),
        client: client(session),
        error: e.map(|e| e.to_string()),
    };
    log::record(exchange, ctx);
}
