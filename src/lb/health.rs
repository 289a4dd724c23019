//! Active HTTP health checks, through Pingora's `HttpHealthCheck` (its HTTP
//! client and status validation), with rise/fall thresholds applied here so
//! that the verdict lands in the shared `BackendState`. Origin pools use it
//! as they are; peer PoPs (failover) with their own checks and `Verdicts`.

use super::{BackendState, Pool};
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
    let mut verdicts = Verdicts::new(cfg.rise, cfg.fall);
    let mut ticker = tokio::time::interval(cfg.interval);
    loop {
        ticker.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let probes = pool
            .members
            .iter()
            .map(|m| probe(check.clone(), m.state.clone()));
        for (state, result) in futures::future::join_all(probes).await {
            verdicts.apply(&state, result, |up, why| {
                if up {
                    info!(pool = tier.as_str(), backend = %state.addr, "backend healthy again");
                } else {
                    warn!(pool = tier.as_str(), backend = %state.addr, reason = why, "backend unhealthy");
                }
            });
        }
    }
}

/// One check of one server.
pub async fn probe(
    check: Arc<HttpHealthCheck>,
    state: Arc<BackendState>,
) -> (Arc<BackendState>, pingora_core::Result<()>) {
    let backend = Backend::new(&state.addr.to_string()).expect("socket address");
    let result = check.check(&backend).await;
    (state, result)
}

/// Rise/fall: a server changes state after `rise` passes or `fall`
/// failures in a row.
pub struct Verdicts {
    rise: u32,
    fall: u32,
    /// (consecutive successes, consecutive failures) per server.
    streaks: HashMap<SocketAddr, (u32, u32)>,
}

impl Verdicts {
    pub fn new(rise: u32, fall: u32) -> Self {
        Verdicts {
            rise,
            fall,
            streaks: HashMap::new(),
        }
    }

    /// Applies one check's result; `changed(up, reason)` is told when the
    /// server's state flips.
    pub fn apply(
        &mut self,
        state: &BackendState,
        result: pingora_core::Result<()>,
        changed: impl FnOnce(bool, &str),
    ) {
        let streak = self.streaks.entry(state.addr).or_default();
        match result {
            Ok(()) => *streak = (streak.0 + 1, 0),
            Err(_) => *streak = (0, streak.1 + 1),
        }
        let healthy = state.is_healthy();
        if !healthy && streak.0 >= self.rise {
            state.set_healthy(true);
            changed(true, "");
        } else if healthy && streak.1 >= self.fall {
            let reason = result.err().map(|e| e.to_string()).unwrap_or_default();
            state.set_healthy(false);
            changed(false, &reason);
        } else if result.is_ok() && healthy {
            state.record_success();
        }
    }
}
