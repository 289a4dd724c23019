//! Peer PoPs this one relays to when it cannot produce a response itself,
//! in order of preference, and their readiness, checked over the peer
//! channel (mutual TLS) at `READY_PATH`.

use crate::config::{PeerCheckConfig, PeerConfig};
use crate::domain::PopId;
use crate::lb::health::{probe, Verdicts};
use crate::lb::BackendState;
use crate::metrics::METRICS;
use crate::tls::peering::PeerTls;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::health_check::HttpHealthCheck;
use std::sync::{Arc, Weak};
use tracing::{info, warn};

/// Answered on the peer listener only: 200 when this PoP can serve a
/// relayed request itself, else 503 with the reasons.
pub const READY_PATH: &str = "/.edgepop/ready";

pub struct Peer {
    pub pop: PopId,
    /// Readiness (as `healthy`), relays in flight, passive ejection.
    pub state: Arc<BackendState>,
    /// Mutual TLS to its peer listener, named by its PoP id.
    template: HttpPeer,
}

impl Peer {
    /// Where a relay connects; timeouts are the caller's.
    pub fn http_peer(&self) -> HttpPeer {
        self.template.clone()
    }
}

pub struct Peers {
    list: Vec<Peer>,
    check: PeerCheckConfig,
}

impl Peers {
    /// No peers without `tls` (validation requires `[peering]` for them).
    pub fn new(config: &[PeerConfig], check: &PeerCheckConfig, tls: Option<&PeerTls>) -> Self {
        let list = match tls {
            Some(tls) => config
                .iter()
                .map(|p| {
                    let mut template = HttpPeer::new(p.addr, true, p.pop.to_string());
                    template.client_cert_key = Some(tls.client_cert.clone());
                    template.options.ca = Some(tls.ca.clone());
                    Peer {
                        pop: p.pop.clone(),
                        state: BackendState::for_addr(p.addr),
                        template,
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        Peers {
            list,
            check: check.clone(),
        }
    }

    /// The most preferred ready peer that `skip` does not rule out (PoPs
    /// already on the route, peers that failed this request).
    pub fn first_ready(&self, skip: impl Fn(&PopId) -> bool) -> Option<&Peer> {
        self.list
            .iter()
            .find(|p| p.state.is_available() && !skip(&p.pop))
    }

    pub fn any_ready(&self) -> bool {
        self.list.iter().any(|p| p.state.is_available())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.list.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// A relay could not reach `peer`: out of use until its next passing check.
    pub fn failed(&self, peer: &PopId) {
        if let Some(p) = self.list.iter().find(|p| p.pop == *peer) {
            if p.state.record_failure(1, self.check.interval * 2) {
                warn!(%peer, "peer unreachable by a relay: skipped until its check passes");
            }
        }
    }
}

/// Checks every peer's readiness until `peers` is dropped (a reload
/// replaces it and its checker with it).
pub async fn run_checks(peers: Weak<Peers>) {
    let Some(first) = peers.upgrade() else { return };
    let cfg = first.check.clone();
    let checks: Vec<_> = first
        .list
        .iter()
        .map(|p| {
            let mut check = HttpHealthCheck::new(p.pop.as_str(), true);
            check.req.set_uri(http::Uri::from_static(READY_PATH));
            check.peer_template = p.http_peer();
            check.peer_template.options.connection_timeout = Some(cfg.timeout);
            check.peer_template.options.read_timeout = Some(cfg.timeout);
            check.peer_template.options.total_connection_timeout = Some(cfg.timeout);
            (p.pop.clone(), p.state.clone(), Arc::new(check))
        })
        .collect();
    drop(first);
    if checks.is_empty() {
        return;
    }
    let mut verdicts = Verdicts::new(cfg.rise, cfg.fall);
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if peers.strong_count() == 0 {
            return;
        }
        let probes = checks
            .iter()
            .map(|(_, state, check)| probe(check.clone(), state.clone()));
        let results = futures::future::join_all(probes).await;
        for ((pop, _, _), (state, result)) in checks.iter().zip(results) {
            verdicts.apply(&state, result, |up, why| {
                if up {
                    info!(peer = %pop, "peer PoP ready");
                } else {
                    warn!(peer = %pop, reason = why, "peer PoP not ready");
                }
            });
            METRICS
                .peer_up
                .with_label_values(&[pop.as_str()])
                .set(state.is_available() as i64);
        }
    }
}
