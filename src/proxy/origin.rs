//! The hot path's proxied GET: a GET or HEAD over HTTP/1 (no body) sent to
//! a server of its origin pool and answered from there, without
//! pingora-proxy's request future (its two halves joined by channels, its
//! cache and module machinery). Pingora's own sessions do the HTTP: its
//! connector and pool, its HTTP/1 client session (the response's framing,
//! chunked decoding) and the client's server session (the framing of what
//! goes back). Every decision is the one the phases make, by the same
//! functions: the upstream (`choose_upstream`), the upstream request and
//! response heads (`steps`), what a failure means (`connect_failed`,
//! `origin_failed`, `refusal_for`), the record (`steps::record`).
//!
//! One attempt is made here. Anything else goes to Pingora's phases with
//! what was decided, before a byte is written to the client: a relay to a
//! peer, a retry after a failed attempt (its failure already counted), a
//! refusal (written where every refusal is, in `fail_to_proxy`).

use super::steps::{encode_body, record, upstream_request, upstream_response};
use super::upstream::{http_peer, origin_failed, refusal_for};
use crate::conn::Served;
use crate::request::{choose_upstream, headers, routing, Refusal, RequestCtx, Upstream};
use futures::FutureExt;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Method, Version};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::protocols::http::{HttpTask, ServerSession};
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_core::Error;
use tracing::warn;

/// Connections to origin servers for the hot path: Pingora's HTTP/1
/// connector with its pool of idle connections (apart from the phases' own
/// pool, and configured as it is).
pub struct Origins {
    connector: Connector,
}

impl Origins {
    pub fn new(conf: &ServerConf) -> Self {
        Origins {
            connector: Connector::new(Some(ConnectorOptions::from_server_conf(conf))),
        }
    }

    /// Serves the request on `session` from an origin server, or hands it
    /// on (`Served::Declined`) with what was decided.
    pub async fn serve(&self, session: &mut ServerSession, mut ctx: RequestCtx) -> Served {
        let method = session.req_header().method.clone();
        let addr = match choose_upstream(&mut ctx, &method).await {
            Ok(Upstream::Origin(addr)) => addr,
            other => return hand_on(ctx, Some(other)),
        };
        let peer = match http_peer(&ctx, &Upstream::Origin(addr)) {
            Ok(peer) => peer,
            Err(_) => return hand_on(ctx, None), // only a peer PoP can be gone
        };
        let mut origin = match self.connect(&peer).await {
            Ok(origin) => origin,
            Err(e) => {
                // Nothing reached the origin: the phases retry or refuse as
                // they would have. The cause goes to the log only, as
                // pingora-proxy logs each failed try.
                warn!(origin = %addr, "fast path: {e}; on to the proxy phases");
                return match routing::connect_failed(&mut ctx, &method) {
                    Ok(()) => hand_on(ctx, None),
                    Err(refusal) => hand_on(ctx, Some(Err(refusal))),
                };
            }
        };
        origin.read_timeout = peer.options.read_timeout;
        origin.write_timeout = peer.options.write_timeout;
        let sent = send(session, &mut origin, &mut ctx).await;
        let exchanged = match sent {
            Ok(()) => relay(session, &mut origin, &mut ctx).await,
            Err(e) => Err(Failure::Unanswered(e)),
        };
        match exchanged {
            Ok(()) => {
                self.connector
                    .release_http_session(origin, &*peer, peer.idle_timeout())
                    .await;
                record(session, None, &mut ctx);
                Served::Answered
            }
            Err(Failure::Unanswered(e)) => {
                warn!(origin = %addr, "fast path: {e}; on to the proxy phases");
                let replayable = !ctx.upstream_responded();
                if origin_failed(&mut ctx, &method, &e, replayable) {
                    return hand_on(ctx, None);
                }
                ctx.error_reason = Some(e.to_string());
                match refusal_for(&e, &mut ctx) {
                    Some(refusal) => hand_on(ctx, Some(Err(refusal))),
                    None => {
                        // The client is gone: nothing to answer.
                        record(session, Some(&e), &mut ctx);
                        Served::Broken
                    }
                }
            }
            Err(Failure::CutShort(e)) => {
                origin_failed(&mut ctx, &method, &e, false);
                ctx.error_reason = Some(e.to_string());
                record(session, Some(&e), &mut ctx);
                Served::Broken
            }
        }
    }

    /// A pooled connection to `peer`, else a new one. A new connection's
    /// future (Pingora's connector, TLS included: 8.4 KB) is boxed on its
    /// own, so the request's future, moved whole into a box on every
    /// request, stays small (it was 10 KB: 10k instructions of copying).
    async fn connect(&self, peer: &HttpPeer) -> pingora_core::Result<HttpSession> {
        if let Some(pooled) = self.connector.reused_http_session(peer).await {
            return Ok(pooled);
        }
        let (new, _) = Box::pin(self.connector.get_http_session(peer)).await?;
        Ok(new)
    }
}

/// The request goes on to the phases; `ahead`, the next attempt's choice.
fn hand_on(mut ctx: RequestCtx, ahead: Option<Result<Upstream, Refusal>>) -> Served {
    ctx.ahead = ahead;
    Served::Declined(Some(Box::new(ctx)))
}

/// How an attempt at the origin failed.
enum Failure {
    /// Before anything was written to the client.
    Unanswered(Box<Error>),
    /// After the response began.
    CutShort(Box<Error>),
}

/// The upstream request: the client's head as the phases would send it
/// (HTTP/1.1, the upstream rules of `steps`), no body.
async fn send(
    session: &ServerSession,
    origin: &mut HttpSession,
    ctx: &mut RequestCtx,
) -> Result<(), Box<Error>> {
    let mut req = session.req_header().clone();
    req.set_version(Version::HTTP_11);
    upstream_request(session, &mut req, ctx);
    origin
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| e.into_up())?;
    origin.finish_body().await.map_err(|e| e.into_up())?;
    Ok(())
}

/// The origin's response, task by task, to the client: each head (an
/// interim one included) through the same rules as the phases', then the
/// body as it arrives.
///
/// What the origin sent at once is written at once, up to four tasks: the
/// batches pingora-proxy's pipe between its two halves makes (its
/// `TASK_BUFFER_SIZE`), so both paths frame a chunked body alike.
async fn relay(
    session: &mut ServerSession,
    origin: &mut HttpSession,
    ctx: &mut RequestCtx,
) -> Result<(), Failure> {
    loop {
        let mut tasks = Vec::with_capacity(BATCH);
        tasks.push(read_task(origin).await);
        while tasks.len() < BATCH && !tasks.last().is_some_and(ends) {
            // Pingora's read of a task is cancel-safe (its proxy selects on it).
            match read_task(origin).now_or_never() {
                Some(task) => tasks.push(task),
                None => break,
            }
        }
        for task in tasks.iter_mut() {
            let (head, end) = match task {
                HttpTask::Header(head, end) => (head, *end),
                HttpTask::Body(body, end) => {
                    encode_body(body, *end, ctx);
                    continue;
                }
                _ => continue,
            };
            if let Err(e) = upstream_response(session.req_header(), head, ctx) {
                *task = HttpTask::Failed(e);
                break;
            }
            chunk_if_unframed(&session.req_header().method, head, end);
            headers::decorate(head, ctx);
        }
        match session.response_duplex_vec(tasks).await {
            Ok(true) => return Ok(()),
            Ok(false) => continue,
            Err(e) if session.response_written().is_none() => return Err(Failure::Unanswered(e)),
            Err(e) => return Err(Failure::CutShort(e)),
        }
    }
}

/// Tasks written together at most (pingora-proxy's `TASK_BUFFER_SIZE`).
const BATCH: usize = 4;

/// The origin's next task; a failure as a task (written after what came
/// before it, then returned).
async fn read_task(origin: &mut HttpSession) -> HttpTask {
    match origin.read_response_task().await {
        Ok(task) => task,
        Err(e) => HttpTask::Failed(e.into_up()),
    }
}

/// The last task of a response (or of what can be read of it).
fn ends(task: &HttpTask) -> bool {
    match task {
        HttpTask::Header(_, end) | HttpTask::Body(_, end) | HttpTask::UpgradedBody(_, end) => *end,
        HttpTask::Trailer(_) | HttpTask::Done | HttpTask::Failed(_) => true,
    }
}

/// What pingora-proxy does to a response without framing (an HTTP/1.0
/// style one, delimited by the close of its connection): chunked to the
/// client, so the client's connection survives it. Kept as Pingora's
/// `h1_response_filter` does it, so both paths send the same bytes.
fn chunk_if_unframed(method: &Method, head: &mut pingora_http::ResponseHeader, end: bool) {
    let no_body = *method == Method::HEAD || matches!(head.status.as_u16(), 204 | 304);
    let framed =
        head.headers.contains_key(TRANSFER_ENCODING) || head.headers.contains_key(CONTENT_LENGTH);
    if !no_body && !head.status.is_informational() && !framed && !end {
        head.set_version(Version::HTTP_11);
        let _ = head.insert_header(TRANSFER_ENCODING, "chunked");
    }
}

/// A request the hot path may proxy: HTTP/1 (not 2 or 3), its target in origin form, no
/// field that Pingora's upstream request policy would rework
/// (`Connection` naming more than the connection's persistence,
/// `HTTP2-Settings`): for those the phases' path is the reference.
pub fn proxiable(session: &ServerSession, ctx: &RequestCtx) -> bool {
    let req = session.req_header();
    !session.is_http2()
        && !session.is_custom()
        && ctx.relay.is_none()
        && ctx.pool.is_some()
        && req.raw_path().first() == Some(&b'/')
        && !req.headers.contains_key("http2-settings")
        && req.headers.get_all(CONNECTION).iter().all(|v| {
            v.as_bytes().split(|b| *b == b',').all(|t| {
                let t = t.trim_ascii();
                t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close")
            })
        })
}
