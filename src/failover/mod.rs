//! Whether this node should receive traffic, and where it sends what it
//! cannot serve. `/readyz` reports readiness; the PoP's BGP daemon
//! announces the anycast prefix only while it is true. Readiness is judged
//! from plain facts handed in (`Vitals`), so this module knows nothing of
//! how the node is assembled. `peers`: the PoPs a request is relayed to.

pub mod anycast;
pub mod peers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Why a request was relayed to a peer PoP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayReason {
    /// The tier's pool has no healthy origin server left to try.
    NoOrigin,
    /// A storefront page with the replica down and no cached copy.
    ReplicaDown,
    /// Every origin server of the pool is at its hard limit.
    Overflow,
}

impl RelayReason {
    pub const ALL: [RelayReason; 3] = [
        RelayReason::NoOrigin,
        RelayReason::ReplicaDown,
        RelayReason::Overflow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RelayReason::NoOrigin => "no_origin",
            RelayReason::ReplicaDown => "replica_down",
            RelayReason::Overflow => "overflow",
        }
    }
}

/// What readiness is judged from, read fresh on each question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Some server in some origin pool can take a request.
    pub origins_available: bool,
    /// Some peer PoP is ready to take relayed requests.
    pub peers_ready: bool,
    pub replica_up: bool,
    /// Set when a change stream feeds the replica.
    pub stream: Option<StreamLag>,
    /// The client listeners hold as many connections as they may.
    pub connections_full: bool,
}

/// How far the replica is behind its change stream, and how far it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLag {
    pub records_behind: i64,
    pub max: i64,
}

/// Where the facts come from (the edge).
pub trait Vitals: Send + Sync {
    fn facts(&self) -> Facts;
}

pub struct Readiness {
    vitals: Arc<dyn Vitals>,
    draining: AtomicBool,
}

impl Readiness {
    pub fn new(vitals: Arc<dyn Vitals>) -> Self {
        Readiness {
            vitals,
            draining: AtomicBool::new(false),
        }
    }

    /// Set once on SIGTERM or a graceful upgrade: never ready again.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Reasons this node is not ready; empty when it is.
    pub fn reasons(&self) -> Vec<String> {
        judge(self.is_draining(), &self.vitals.facts())
    }

    /// Reasons this node cannot serve a relayed request itself (which it
    /// may not relay again): readiness without counting on peers.
    pub fn reasons_without_peers(&self) -> Vec<String> {
        let facts = Facts {
            peers_ready: false,
            ..self.vitals.facts()
        };
        judge(self.is_draining(), &facts)
    }
}

fn judge(draining: bool, facts: &Facts) -> Vec<String> {
    let mut reasons = Vec::new();
    if draining {
        reasons.push("draining".to_string());
    }
    if !facts.origins_available && !facts.peers_ready {
        reasons.push("no healthy origin server in any pool and no ready peer PoP".to_string());
    }
    if !facts.replica_up {
        reasons.push("replica unreachable".to_string());
    }
    if facts.connections_full {
        reasons.push("client connection limit reached".to_string());
    }
    if let Some(lag) = facts.stream.filter(|l| l.records_behind > l.max) {
        reasons.push(format!(
            "replica {} records behind the stream (max {})",
            lag.records_behind, lag.max
        ));
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Facts {
        Facts {
            origins_available: true,
            peers_ready: false,
            replica_up: true,
            stream: Some(StreamLag {
                records_behind: 10,
                max: 10,
            }),
            connections_full: false,
        }
    }

    #[test]
    fn ready_only_when_nothing_is_wrong() {
        assert!(judge(false, &healthy()).is_empty());
        let lagging = Facts {
            stream: Some(StreamLag {
                records_behind: 11,
                max: 10,
            }),
            ..healthy()
        };
        assert_eq!(
            judge(false, &lagging),
            ["replica 11 records behind the stream (max 10)"]
        );
        let relaying = Facts {
            origins_available: false,
            peers_ready: true,
            ..healthy()
        };
        assert!(judge(false, &relaying).is_empty(), "a peer takes over");
        let broken = Facts {
            origins_available: false,
            peers_ready: false,
            replica_up: false,
            stream: None,
            connections_full: true,
        };
        assert_eq!(
            judge(true, &broken),
            [
                "draining",
                "no healthy origin server in any pool and no ready peer PoP",
                "replica unreachable",
                "client connection limit reached"
            ]
        );
    }
}
