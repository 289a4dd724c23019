//! `EdgeProxy`'s Pingora phases, in the order Pingora runs them. Each one
//! reads the session, calls the rules (`crate::request`) and writes back
//! what they decided.
//!
//! - `new_ctx`: per request, before anything is read: the config
//!   generation, the route `[this PoP]`, the active-request count.
//! - `request_filter`: once the head is parsed. The connection's limits,
//!   then admission and routing; the edge's own answer (a refusal, a
//!   redirect, an ACME answer, a page) ends the request here.
//! - `upstream_peer`: before each attempt (retries included): origin
//!   server or peer PoP.
//! - `fail_to_connect` / `error_while_proxy`: an attempt failed before or
//!   after the connection: retry, or the refusal the client gets.
//! - `request_body_filter`: per body chunk from the client (minimum rate).
//! - `upstream_request_filter`: the upstream request head.
//! - `upstream_response_filter` / `response_filter`: the upstream's head,
//!   then the client's.
//! - `fail_to_proxy`: the request ended in an error: its error page.
//! - `logging`: last, whatever happened: metrics and the access log.

use super::respond::answer;
use super::steps::{
    client, decide, encode_body, new_ctx, prepare, record, upstream_request, upstream_response,
};
use super::upstream::{self, body_late, origin_failed, refusal_for, refuse, timed_out};
use super::{cancel, EdgeProxy};
use crate::conn::handed_over;
use crate::metrics::METRICS;
use crate::request::{choose_upstream, headers, relay, routing, Answer, Refusal, RequestCtx};
use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::time::Duration;
use tracing::warn;

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    /// A request the fast path read and decided goes on with what it
    /// decided (`crate::conn::fast`).
    fn new_ctx(&self) -> RequestCtx {
        match handed_over().map(|d| d.downcast::<RequestCtx>()) {
            Some(Ok(decided)) => *decided,
            _ => new_ctx(&self.edge, &self.listener),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let downstream = session.as_downstream_mut();
        prepare(downstream, ctx, &self.listener);
        if !ctx.decided {
            let decided = decide(&self.edge, &self.listener, downstream, ctx).await;
            if let Err(answered) = decided {
                answer(downstream, ctx, answered).await?;
                return Ok(true);
            }
        }
        // A stream the client reset already (a rapid-reset burst) costs the
        // origin nothing: no answer, no connection, no slot.
        if let Some(why) = cancel::stream_gone(session.as_downstream_mut()) {
            METRICS
                .client_cancelled
                .with_label_values(&["before_origin"])
                .inc();
            ctx.error_reason = Some(why);
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let chosen = match ctx.ahead.take() {
            Some(chosen) => chosen,
            None => choose_upstream(ctx, &session.req_header().method).await,
        };
        match chosen {
            Ok(chosen) => upstream::http_peer(ctx, &chosen),
            Err(refusal) => Err(refuse(ctx, refusal, None)),
        }
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let method = &session.req_header().method;
        if let Some(pop) = ctx.peer().cloned() {
            // Nothing reached the peer: another one may take the request.
            ctx.inflight = None;
            ctx.state.peers.failed(&pop);
            if relay::possible(ctx, method) {
                e.set_retry(true);
                return e;
            }
            let refusal = Refusal::unavailable("no peer PoP reachable", ctx.retry_after());
            return refuse(ctx, refusal, Some(e));
        }
        // Nothing reached the origin: another server, else a peer PoP.
        match routing::connect_failed(ctx, method) {
            Ok(()) => {
                e.set_retry(true);
                e
            }
            Err(refusal) => refuse(ctx, refusal, Some(e)),
        }
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if body_late(session, &e) {
            // The origin waits for a body the client is slow to send: 408,
            // the origin's slot given back now, no failure held against it.
            ctx.inflight = None;
            METRICS
                .client_limits
                .with_label_values(&["body_timeout"])
                .inc();
            let why = "the request body was not received in time";
            return refuse(ctx, Refusal::new(StatusCode::REQUEST_TIMEOUT, why), Some(e));
        }
        let replayable = !ctx.upstream_responded() && !session.as_ref().retry_buffer_truncated();
        let method = &session.req_header().method;
        if ctx.peer().is_some() {
            // A peer's failure is not held against an origin. Retried only
            // where Pingora's default would: a stale pooled connection.
            if replayable && !timed_out(&e) && method.is_idempotent() {
                e.retry.decide_reuse(client_reused);
            } else {
                e.set_retry(false);
            }
            return e;
        }
        let retry = origin_failed(ctx, method, &e, replayable);
        e.set_retry(retry);
        e
    }

    /// A body trickled in small pieces (each within `body_timeout` of the
    /// last) still has a due time: `body_timeout` after the head, plus a
    /// second per `body_min_rate` bytes received.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.body_received += body.as_ref().map_or(0, |b| b.len() as u64);
        let proxy = &ctx.state.config.proxy;
        if end_of_stream || proxy.body_min_rate == 0 {
            return Ok(());
        }
        let earned = Duration::from_secs_f64(ctx.body_received as f64 / proxy.body_min_rate as f64);
        if ctx.started.elapsed() > proxy.body_timeout + earned {
            let why = format!(
                "request body slower than {} bytes/s ({} bytes in {:?})",
                proxy.body_min_rate,
                ctx.body_received,
                ctx.started.elapsed()
            );
            let mut e = Error::explain(ErrorType::ReadTimedout, why);
            e.as_down();
            return Err(e);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_request(session, upstream, ctx);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response(session.req_header(), upstream, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        encode_body(body, end_of_stream, ctx);
        Ok(None)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        headers::decorate(resp, ctx);
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let refusal = refusal_for(e, ctx);
        let code = refusal.as_ref().map_or(0, |r| r.status.as_u16());
        // Nothing can be said once the response has started or the client is gone.
        if let Some(refusal) = refusal.filter(|_| session.response_written().is_none()) {
            // The connection ends after this page (can_reuse_downstream is
            // false): say so, or a client may send its next request on it.
            session.set_keepalive(None);
            let refused = Answer::Refuse(refusal);
            if let Err(write_err) = answer(session.as_downstream_mut(), ctx, refused).await {
                warn!("failed to send error response: {write_err}");
            }
        }
        ctx.error_reason = Some(e.to_string());
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A client's cancellations are counted, and logged once per connection.
    fn suppress_error_log(&self, session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        if !cancel::by_client(e) {
            return false;
        }
        if let Some(connection) = client(session).filter(|c| self.cancellations.first_on(*c)) {
            warn!(client = %connection, "client cancelled a request (later ones on this connection are counted, not logged): {e}");
        }
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        record(session, e, ctx);
    }
}
