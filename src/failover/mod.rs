//! Whether this node should receive traffic. `/readyz` reports it; the
//! PoP's BGP daemon announces the anycast prefix only while it is true.

use crate::edge::EdgeState;
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
    pub fn reasons(&self, state: &EdgeState) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.is_draining() {
            reasons.push("draining".to_string());
        }
        if !state.pools.any_available() {
            reasons.push("no healthy origin server in any pool".to_string());
        }
        reasons
    }
}
