//! Routing: a storefront page the edge answers itself, else the origin
//! pool of the domain's tier; per attempt, a server of that pool by least
//! connections, or a peer PoP when this PoP cannot produce the response
//! (no origin, replica down with no copy, every server at its hard limit);
//! and what a failed attempt means for retries and for the server's health.

use super::answer::Answer;
use super::ctx::{CacheStatus, Relay, RequestCtx, Upstream};
use super::refusal::Refusal;
use super::relay;
use crate::cache::{CachedPage, Lookup};
use crate::domain::DomainRecord;
use crate::edge::Edge;
use crate::failover::RelayReason;
use crate::lb::{InflightGuard, Pick, Pool};
use crate::metrics::METRICS;
use http::request::Parts;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;

/// After admission: Ok, on to an upstream (the pool is chosen, or a relay
/// when the replica is down); Err, the edge's own answer (a page, or 503
/// when the tier has no pool).
pub async fn route(
    edge: &Edge,
    req: &Parts,
    domain: &DomainRecord,
    ctx: &mut RequestCtx,
) -> Result<(), Answer> {
    if let Some(page) = page(edge, req, domain, ctx).await {
        return Err(Answer::Page(page));
    }
    ctx.pool = ctx.state.pools.get(domain.tier).cloned();
    if ctx.pool.is_none() {
        let reason = format!("no origin pool for tier {}", domain.tier.as_str());
        return Err(Refusal::unavailable(reason, ctx.retry_after()).into());
    }
    Ok(())
}

/// A GET/HEAD for a page of the store: from the cache or else the replica.
/// None: the origin serves it (no such page, or no copy here: then a ready
/// peer PoP is asked first).
async fn page(
    edge: &Edge,
    req: &Parts,
    domain: &DomainRecord,
    ctx: &mut RequestCtx,
) -> Option<Arc<CachedPage>> {
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        return None;
    }
    let storefront = &edge.data.storefront;
    let key = storefront.page_key(domain.store_id, req.uri.path(), req.uri.query())?;
    let (page, cache) = match storefront.page(key).await {
        Lookup::Hit(p) => (p, CacheStatus::Hit),
        Lookup::Miss(p, took) => {
            ctx.replica_elapsed = Some(took);
            (p, CacheStatus::Miss)
        }
        Lookup::Stale(p) => (p, CacheStatus::Stale),
        Lookup::NotFound => return None,
        Lookup::Unavailable(why) => {
            // No copy anywhere here: a peer PoP with its replica up
            // serves it, else the origin may have it.
            ctx.error_reason = Some(why);
            ctx.relay = Some(Relay::new(RelayReason::ReplicaDown));
            return None;
        }
    };
    ctx.cache = cache;
    Some(page)
}

/// The upstream of this attempt, which then holds its slot: a relay
/// decided earlier goes to a ready peer; else a server of the pool (below
/// its soft limit first, never past its hard limit), else a peer, else a
/// wait for a slot (all at the hard limit), else 503.
pub async fn choose_upstream(
    ctx: &mut RequestCtx,
    method: &http::Method,
) -> Result<Upstream, Refusal> {
    // A retry releases the previous server (or peer) before the next.
    ctx.inflight = None;
    if let Some(reason) = ctx.relay.as_ref().map(|r| r.reason) {
        if let Some(pop) = relay::choose(ctx, method, reason) {
            return Ok(Upstream::Peer(pop));
        }
        if reason != RelayReason::ReplicaDown {
            let why = "no peer PoP could take the request";
            return Err(Refusal::unavailable(why, ctx.retry_after()));
        }
        // The replica is down and no peer can take it: the origin may
        // have the page.
        ctx.relay = None;
    }
    let pool = ctx.pool.clone().expect("routing chose the pool");
    let guard = match pool.acquire(&ctx.tried) {
        Pick::Server(guard) => guard,
        Pick::NoneAvailable => {
            if let Some(pop) = relay::choose(ctx, method, RelayReason::NoOrigin) {
                return Ok(Upstream::Peer(pop));
            }
            // Either way the client sees "no healthy server": 503, retry later.
            let why = if ctx.tried.is_empty() {
                "no healthy origin server"
            } else {
                "no origin server reachable"
            };
            return Err(Refusal::unavailable(why, ctx.retry_after()));
        }
        Pick::Full => {
            if let Some(pop) = relay::choose(ctx, method, RelayReason::Overflow) {
                METRICS.overflow.with_label_values(&["relayed"]).inc();
                return Ok(Upstream::Peer(pop));
            }
            wait_for_slot(&pool, ctx).await?
        }
    };
    let addr = guard.backend().addr;
    ctx.tried.push(addr);
    ctx.inflight = Some(guard);
    ctx.origin_started = Some(Instant::now());
    ctx.upstream = Some(Upstream::Origin(addr));
    Ok(Upstream::Origin(addr))
}

/// Every server of the pool is at its hard limit and no peer can take
/// the request: wait for a slot, at most `overflow_wait`, then 503.
async fn wait_for_slot(pool: &Pool, ctx: &RequestCtx) -> Result<InflightGuard, Refusal> {
    let deadline = Instant::now() + pool.overflow_wait;
    while Instant::now() < deadline {
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
    Err(Refusal::unavailable(why, ctx.retry_after()))
}

/// Another server may be tried: an idempotent method, within
/// `proxy.max_tries` and the pool's size.
pub fn retry_allowed(ctx: &RequestCtx, method: &http::Method) -> bool {
    let pool_size = ctx.pool.as_ref().map_or(0, |p| p.members.len());
    method.is_idempotent()
        && ctx.tried.len() < ctx.state.config.proxy.max_tries
        && ctx.tried.len() < pool_size
}

/// The connection to this attempt's origin failed (nothing reached it):
/// the failure counted; Ok, another server may be tried, else a peer PoP;
/// Err, the refusal the client gets.
pub fn connect_failed(ctx: &mut RequestCtx, method: &http::Method) -> Result<(), Refusal> {
    record_origin_failure(ctx);
    if retry_allowed(ctx, method) || relay::possible(ctx, method) {
        return Ok(());
    }
    // To the client no origin is available; the cause (addresses, OS
    // errors) goes to the log only.
    let why = format!("no origin server reachable after {} tries", ctx.tried.len());
    Err(Refusal::unavailable(why, ctx.retry_after()))
}

/// The origin of this attempt failed: its slot given back, the failure
/// counted against it (ejected after `max_fails` in a row).
pub fn record_origin_failure(ctx: &mut RequestCtx) {
    let (Some(guard), Some(pool)) = (ctx.inflight.take(), ctx.pool.as_ref()) else {
        return;
    };
    let backend = guard.backend();
    if backend.record_failure(pool.passive.max_fails, pool.passive.eject_for) {
        warn!(pool = pool.tier.as_str(), backend = %backend.addr, "backend ejected after consecutive failures");
    }
}
