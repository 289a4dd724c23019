//! Whether this node should receive traffic. `/readyz` reports it; the
//! PoP's BGP daemon announces the anycast prefix only while it is true.

use crate::edge::{DataPlane, EdgeState};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Default)]
pub struct Readiness {
    draining: AtomicBool,
}

impl Readiness {
    /// Set once on SIGTERM or a graceful upgrade: never ready again.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Reasons this node is not ready; empty when it is.
    pub fn reasons(&self, state: &EdgeState, data: &DataPlane) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.is_draining() {
            reasons.push("draining".to_string());
        }
        if !state.pools.any_available() {
            reasons.push("no healthy origin server in any pool".to_string());
        }
        if !data.storefront.replica_up() {
            reasons.push("replica unreachable".to_string());
        }
        let lag = data.sync_stats.total_lag();
        let max_lag = state.config.replica.max_lag;
        if data.sync.is_some() && lag > max_lag {
            reasons.push(format!(
                "replica {lag} records behind the stream (max {})",
                max_lag
            ));
        }
        reasons
    }
}
