//! Origin pools: least-connections selection over weighted servers, active
//! health checks and passive ejection. Pingora 0.9 has no least-connections
//! selector (its `BackendSelection` cannot see when a request ends), so the
//! pool counts in-flight requests itself through RAII guards.

mod backend;
pub mod health;

pub use backend::{BackendState, InflightGuard};

use crate::config::{HealthConfig, PassiveConfig, PoolConfig};
use crate::domain::Tier;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug)]
pub struct Member {
    pub state: Arc<BackendState>,
    pub weight: u32,
}

#[derive(Debug)]
pub struct Pool {
    pub tier: Tier,
    pub members: Vec<Member>,
    pub health: HealthConfig,
    pub passive: PassiveConfig,
}

impl Pool {
    pub fn new(tier: Tier, config: &PoolConfig) -> Self {
        Pool {
            tier,
            members: config
                .servers
                .iter()
                .map(|s| Member {
                    state: BackendState::for_addr(s.addr),
                    weight: s.weight,
                })
                .collect(),
            health: config.health.clone(),
            passive: config.passive.clone(),
        }
    }

    /// Least in-flight requests per unit of weight among available servers
    /// not yet tried by this request; ties are broken at random in
    /// proportion to weight, so idle pools still honour weights.
    pub fn select(&self, tried: &[SocketAddr]) -> Option<Arc<BackendState>> {
        let mut rng = rand::rng();
        let mut best: Option<(&Member, usize)> = None;
        let mut tie_weight = 0u64;
        for m in &self.members {
            if !m.state.is_available() || tried.contains(&m.state.addr) {
                continue;
            }
            let load = m.state.inflight();
            match best {
                None => {
                    best = Some((m, load));
                    tie_weight = m.weight as u64;
                }
                Some((b, b_load)) => {
                    // load/weight compared without division.
                    let lhs = load as u64 * b.weight as u64;
                    let rhs = b_load as u64 * m.weight as u64;
                    if lhs < rhs {
                        best = Some((m, load));
                        tie_weight = m.weight as u64;
                    } else if lhs == rhs {
                        tie_weight += m.weight as u64;
                        if rng.random_range(0..tie_weight) < m.weight as u64 {
                            best = Some((m, load));
                        }
                    }
                }
            }
        }
        best.map(|(m, _)| m.state.clone())
    }

    pub fn available(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.state.is_available())
            .count()
    }
}

/// One pool per tier.
#[derive(Debug, Default)]
pub struct Pools(HashMap<Tier, Arc<Pool>>);

impl Pools {
    pub fn new<'a>(config: impl IntoIterator<Item = (&'a Tier, &'a PoolConfig)>) -> Self {
        Pools(
            config
                .into_iter()
                .map(|(t, c)| (*t, Arc::new(Pool::new(*t, c))))
                .collect(),
        )
    }

    pub fn get(&self, tier: Tier) -> Option<&Arc<Pool>> {
        self.0.get(&tier)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.0.values()
    }

    /// Any server anywhere able to take a request (a readiness input).
    pub fn any_available(&self) -> bool {
        self.0.values().any(|p| p.available() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerEntry;

    fn pool(servers: &[(&str, u32)]) -> Pool {
        let cfg = PoolConfig {
            servers: servers
                .iter()
                .map(|(a, w)| ServerEntry {
                    addr: a.parse().unwrap(),
                    weight: *w,
                })
                .collect(),
            health: Default::default(),
            passive: Default::default(),
        };
        Pool::new(Tier::Public, &cfg)
    }

    #[test]
    fn picks_least_loaded_and_skips_tried() {
        let p = pool(&[("127.0.0.1:101", 1), ("127.0.0.1:102", 1)]);
        let _busy = p.members[0].state.begin();
        for _ in 0..20 {
            assert_eq!(p.select(&[]).unwrap().addr.port(), 102);
        }
        assert_eq!(
            p.select(&["127.0.0.1:102".parse().unwrap()])
                .unwrap()
                .addr
                .port(),
            101
        );
        let all: Vec<SocketAddr> = p.members.iter().map(|m| m.state.addr).collect();
        assert!(p.select(&all).is_none());
    }

    #[test]
    fn idle_ties_follow_weights() {
        let p = pool(&[("127.0.0.1:111", 3), ("127.0.0.1:112", 1)]);
        let heavy = (0..4000)
            .filter(|_| p.select(&[]).unwrap().addr.port() == 111)
            .count();
        assert!(
            (2700..3300).contains(&heavy),
            "weight 3 of 4 got {heavy}/4000"
        );
    }

    #[test]
    fn load_is_divided_by_weight() {
        let p = pool(&[("127.0.0.1:121", 2), ("127.0.0.1:122", 1)]);
        // 121 has 1 in flight at weight 2 (0.5), 122 has 1 at weight 1 (1.0).
        let _a = p.members[0].state.begin();
        let _b = p.members[1].state.begin();
        for _ in 0..20 {
            assert_eq!(p.select(&[]).unwrap().addr.port(), 121);
        }
    }
}
