//! The origin side of a request: a slot on a server (or a bounded wait for
//! one when the overflow valve is shut), Pingora's peer for it, and what a
//! failure means for retries and for the server's health.

use super::ctx::RequestCtx;
use crate::lb::{InflightGuard, Pick, Pool};
use crate::metrics::METRICS;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_proxy::Session;
use std::time::Duration;
use tracing::warn;

/// Every server of the pool is at its hard limit and no peer can take
/// the request: wait for a slot, at most `overflow_wait`, then 503.
pub async fn wait_for_slot(pool: &Pool, ctx: &RequestCtx) -> Result<InflightGuard> {
    let deadline = std::time::Instant::now() + pool.overflow_wait;
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
        match pool.acquire(&ctx.tried) {
            Pick::Server(guard) => {
                METRICS.overflow.with_label_values(&["waited"]).inc();
                return Ok(guard);
            }
            Pick::Full => continue,
            Pick::NoneAvailable => break,
        }
    }
    METRICS.overflow.with_label_values(&["refused"]).inc();
    let why = "every origin server is at its limit";
    Error::e_explain(ErrorType::HTTPStatus(503), why)
}

/// The origin server holding `guard`'s slot, as Pingora's peer.
pub fn origin(ctx: &mut RequestCtx, guard: InflightGuard) -> Box<HttpPeer> {
    let addr = guard.backend().addr;
    ctx.tried.push(addr);
    ctx.inflight = Some(guard);
    ctx.origin_started = Some(std::time::Instant::now());
    let proxy = &ctx.state.config.proxy;
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(proxy.connect_timeout);
    peer.options.read_timeout = Some(proxy.read_timeout);
    peer.options.write_timeout = Some(proxy.write_timeout);
    peer.group_key = worker();
    Box::new(peer)
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

pub fn retry_allowed(session: &Session, ctx: &RequestCtx) -> bool {
    let pool_size = ctx.pool.as_ref().map_or(0, |p| p.members.len());
    session.req_header().method.is_idempotent()
        && ctx.tried.len() < ctx.state.config.proxy.max_tries
        && ctx.tried.len() < pool_size
}

/// A read timed out because the client's body is late: its own read
/// (downstream), or the origin's while the body is still unfinished.
pub fn body_late(session: &mut Session, e: &Error) -> bool {
    use pingora_core::ErrorSource;
    matches!(e.etype(), ErrorType::ReadTimedout)
        && match e.esource() {
            ErrorSource::Downstream => true,
            ErrorSource::Upstream => !session.is_body_done(),
            _ => false,
        }
}

pub fn record_origin_failure(ctx: &mut RequestCtx) {
    let (Some(guard), Some(pool)) = (ctx.inflight.take(), ctx.pool.as_ref()) else {
        return;
    };
    let backend = guard.backend();
    if backend.record_failure(pool.passive.max_fails, pool.passive.eject_for) {
        warn!(pool = pool.tier.as_str(), backend = %backend.addr, "backend ejected after consecutive failures");
    }
}
