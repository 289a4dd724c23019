//! Active HTTP health checks, through Pingora's `HttpHealthCheck` (its HTTP
//! client and status validation), with rise/fall thresholds applied here so
//! that the verdict lands in the shared `BackendState`.

use super::Pool;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
use pingora_load_balancing::Backend;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use tracing::{info, warn};

/// Checks every server of `pool` until the pool is dropped (a reload
/// replaces it and its checker with it).
pub async fn run(pool: Weak<Pool>) {
    let Some(first) = pool.upgrade() else { return };
    if !first.health.enabled {
        return;
    }
    let cfg = first.health.clone();
    let tier = first.tier;
    drop(first);

    let mut check = HttpHealthCheck::new(&cfg.host, false);
    check.req.set_uri(cfg.path.parse().expect("validated path"));
    check.peer_template.options.connection_timeout = Some(cfg.timeout);
    check.peer_template.options.read_timeout = Some(cfg.timeout);
    let check = Arc::new(check);
    // (consecutive successes, consecutive failures) per server.
    let mut streaks: HashMap<SocketAddr, (u32, u32)> = HashMap::new();
    let mut ticker = tokio::time::interval(cfg.interval);
    loop {
        ticker.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let probes = pool.members.iter().map(|m| {
            let check = check.clone();
            let state = m.state.clone();
            async move {
                let backend = Backend::new(&state.addr.to_string()).expect("socket address");
                let result = check.check(&backend).await;
                (state, result)
            }
        });
        for (state, result) in futures::future::join_all(probes).await {
            let streak = streaks.entry(state.addr).or_default();
            match result {
                Ok(()) => *streak = (streak.0 + 1, 0),
                Err(_) => *streak = (0, streak.1 + 1),
            }
            let healthy = state.is_healthy();
            if !healthy && streak.0 >= cfg.rise {
                info!(pool = tier.as_str(), backend = %state.addr, "backend healthy again");
                state.set_healthy(true);
            } else if healthy && streak.1 >= cfg.fall {
                let reason = result.err().map(|e| e.to_string()).unwrap_or_default();
                warn!(pool = tier.as_str(), backend = %state.addr, %reason, "backend unhealthy");
                state.set_healthy(false);
            } else if result.is_ok() && healthy {
                state.record_success();
            }
        }
    }
}
