//! The upstream side in Pingora's terms: its `HttpPeer` for the upstream
//! the rules chose, and what an error from Pingora means (a refusal for
//! the client, a body the client is late with).

use crate::request::{routing, Refusal, RequestCtx, Upstream};
use http::StatusCode;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_proxy::Session;

/// Pingora's peer for `upstream`, with the proxy's timeouts.
pub fn http_peer(ctx: &RequestCtx, upstream: &Upstream) -> Result<Box<HttpPeer>> {
    let mut peer = match upstream {
        Upstream::Origin(addr) => {
            let mut peer = HttpPeer::new(*addr, false, String::new());
            peer.group_key = worker();
            peer
        }
        Upstream::Peer(pop) => match ctx.state.peers.iter().find(|p| &p.pop == pop) {
            Some(peer) => peer.http_peer(),
            None => return Error::e_explain(ErrorType::InternalError, "the chosen peer is gone"),
        },
    };
    let proxy = &ctx.state.config.proxy;
    peer.options.connection_timeout = Some(proxy.connect_timeout);
    peer.options.read_timeout = Some(proxy.read_timeout);
    peer.options.write_timeout = Some(proxy.write_timeout);
    Ok(Box::new(peer))
}

/// This worker thread's number, which keys its own pool of idle origin
/// connections (Pingora's `group_key`). A pooled connection's idle watch
/// runs on the thread that released it; reused from another thread it would
/// cost a cross-thread wake-up (an eventfd write) on every request. With a
/// pool per worker, as nginx's workers have, a connection stays on its
/// thread.
fn worker() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static WORKER: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    WORKER.with(|w| *w)
}

/// The request ends with `refusal` (written by `fail_to_proxy`); `cause`
/// is what went wrong, for the log only.
pub fn refuse(ctx: &mut RequestCtx, refusal: Refusal, cause: Option<Box<Error>>) -> Box<Error> {
    let etype = ErrorType::HTTPStatus(refusal.status.as_u16());
    let why = refusal.reason.clone();
    ctx.refusal = Some(refusal);
    match cause {
        Some(cause) => Error::because(etype, why, cause),
        None => Error::explain(etype, why),
    }
}

/// What the client is told of an error that ended its request: the
/// refusal the rules made, else one for the error (a slow upstream 504, a
/// failed one 502, a malformed request 400). None: the client is gone.
pub fn refusal_for(e: &Error, ctx: &mut RequestCtx) -> Option<Refusal> {
    if let Some(refusal) = ctx.refusal.take() {
        return Some(refusal);
    }
    let code = match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream if super::cancel::by_client(e) => return None,
            ErrorSource::Downstream => 400,
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    };
    let upstream = match ctx.peer() {
        Some(_) => "the peer PoP",
        None => "the origin server",
    };
    // Our own statuses say why in words fit for a client; anything else
    // gets its status's short reason. The full error is logged.
    let reason = match (e.etype(), &e.context) {
        (ErrorType::HTTPStatus(_), Some(why)) => why.as_str().to_string(),
        _ => match code {
            502 => format!("{upstream} failed to answer"),
            504 => format!("{upstream} did not answer in time"),
            400 => "malformed request".to_string(),
            _ => "internal error".to_string(),
        },
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(match status {
        StatusCode::SERVICE_UNAVAILABLE => Refusal::unavailable(reason, ctx.retry_after()),
        _ => Refusal::new(status, reason),
    })
}

/// A read or write of the upstream's that took too long: a slow upstream
/// is answered 504 at once, since retrying would double the wait.
pub fn timed_out(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// An attempt at the origin failed after its connection was made: the
/// failure counted against the server when it was the server's (not a
/// slow one's, not the client's); true: another server may be tried
/// (`replayable`: nothing of the response arrived, the request can be
/// sent again).
pub fn origin_failed(
    ctx: &mut RequestCtx,
    method: &http::Method,
    e: &Error,
    replayable: bool,
) -> bool {
    let timed_out = timed_out(e);
    if e.esource() == &ErrorSource::Upstream && !timed_out {
        routing::record_origin_failure(ctx);
    }
    replayable && !timed_out && routing::retry_allowed(ctx, method)
}

/// A read timed out because the client's body is late: its own read
/// (downstream), or the origin's while the body is still unfinished.
pub fn body_late(session: &mut Session, e: &Error) -> bool {
    matches!(e.etype(), ErrorType::ReadTimedout)
        && match e.esource() {
            ErrorSource::Downstream => true,
            ErrorSource::Upstream => !session.is_body_done(),
            _ => false,
        }
}
