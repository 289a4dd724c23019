//! Origin pools: least-connections selection over weighted servers, active
//! health checks and passive ejection. Pingora 0.9 has no least-connections
//! selector (its `BackendSelection` cannot see when a request ends), so the
//! pool counts in-flight requests itself through RAII guards.

mod backend;
pub mod health;

pub use backend::{BackendState, InflightGuard};

use crate::config::{HealthConfig, InflightLimits, PassiveConfig, PoolConfig};
use crate::domain::Tier;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Member {
    pub state: Arc<BackendState>,
    pub weight: u32,
    pub limits: InflightLimits,
}

impl Member {
    fn below(&self, limit: u32) -> bool {
        limit == 0 || self.state.inflight() < limit as usize
    }
}

#[derive(Debug)]
pub struct Pool {
    pub tier: Tier,
    pub members: Vec<Member>,
    pub health: HealthConfig,
    pub passive: PassiveConfig,
    pub overflow_wait: Duration,
}

/// What a pool can do for one request.
#[derive(Debug)]
pub enum Pick {
    /// A server, its slot held until the guard drops.
    Server(InflightGuard),
    /// Servers are available, but every one not yet tried is at its hard
    /// limit (the overflow valve).
    Full,
    /// No available server is left to try.
    NoneAvailable,
}

impl Pool {
    pub fn new(tier: Tier, config: &PoolConfig) -> Self {
        Pool {
            tier,
            members: config
                .servers
                .iter()
                .enumerate()
                .map(|(i, s)| Member {
                    state: BackendState::for_addr(s.addr),
                    weight: s.weight,
                    limits: config.limits_of(i),
                })
                .collect(),
            health: config.health.clone(),
            passive: config.passive.clone(),
            overflow_wait: config.overflow_wait,
        }
    }

    /// A server for a request that already tried `tried`: least in-flight
    /// per unit of weight among available servers below their soft limit,
    /// else among those below their hard limit (the overflow valve). The
    /// slot is taken atomically against the hard limit; a server that
    /// filled up meanwhile is passed over.
    pub fn acquire(&self, tried: &[SocketAddr]) -> Pick {
        let untried = |m: &&Member| m.state.is_available() && !tried.contains(&m.state.addr);
        for _ in 0..=self.members.len() {
            let open = || {
                self.members
                    .iter()
                    .filter(untried)
                    .filter(|m| m.below(m.limits.hard))
            };
            let best = least_loaded(open().filter(|m| m.below(m.limits.soft)))
                .or_else(|| least_loaded(open()));
            let Some(m) = best else { break };
            if let Some(guard) = m.state.try_begin(m.limits.hard) {
                return Pick::Server(guard);
            }
        }
        if self.members.iter().any(|m| untried(&m)) {
            Pick::Full
        } else {
            Pick::NoneAvailable
        }
    }

    pub fn available(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.state.is_available())
            .count()
    }
}

/// Least in-flight requests per unit of weight; ties are broken at random
/// in proportion to weight, so idle pools still honour weights.
fn least_loaded<'a>(members: impl Iterator<Item = &'a Member>) -> Option<&'a Member> {
    let mut rng = rand::rng();
    let mut best: Option<(&Member, usize)> = None;
    let mut tie_weight = 0u64;
    for m in members {
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
    best.map(|(m, _)| m)
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
                    soft_limit: None,
                    hard_limit: None,
                })
                .collect(),
            health: Default::default(),
            passive: Default::default(),
            limits: Default::default(),
            overflow_wait: Duration::ZERO,
        };
        Pool::new(Tier::Public, &cfg)
    }

    fn port(pick: Pick) -> u16 {
        match pick {
            Pick::Server(g) => g.backend().addr.port(),
            other => panic!("no server: {other:?}"),
        }
    }

    #[test]
    fn picks_least_loaded_and_skips_tried() {
        let p = pool(&[("127.0.0.1:101", 1), ("127.0.0.1:102", 1)]);
        let _busy = p.members[0].state.begin();
        for _ in 0..20 {
            assert_eq!(port(p.acquire(&[])), 102);
        }
        assert_eq!(port(p.acquire(&["127.0.0.1:102".parse().unwrap()])), 101);
        let all: Vec<SocketAddr> = p.members.iter().map(|m| m.state.addr).collect();
        assert!(matches!(p.acquire(&all), Pick::NoneAvailable));
    }

    #[test]
    fn idle_ties_follow_weights() {
        let p = pool(&[("127.0.0.1:111", 3), ("127.0.0.1:112", 1)]);
        let heavy = (0..4000).filter(|_| port(p.acquire(&[])) == 111).count();
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
            assert_eq!(port(p.acquire(&[])), 121);
        }
    }

    #[test]
    fn soft_limit_spreads_before_hard_limit_stops() {
        // By load per weight 131 (weight 10) would take the next requests;
        // at its soft limit it yields to 132 until 132 reaches its own soft
        // limit too; then least-connections decides again, up to the hard
        // limits, and then nothing more is handed out.
        let mut p = pool(&[("127.0.0.1:131", 10), ("127.0.0.1:132", 1)]);
        p.members[0].limits = InflightLimits { soft: 2, hard: 4 };
        p.members[1].limits = InflightLimits { soft: 4, hard: 4 };
        let mut held = vec![
            p.members[0].state.begin(),
            p.members[0].state.begin(),
            p.members[1].state.begin(),
        ];
        let mut got = Vec::new();
        loop {
            match p.acquire(&[]) {
                Pick::Server(g) => {
                    got.push(g.backend().addr.port());
                    held.push(g);
                }
                Pick::Full => break,
                Pick::NoneAvailable => panic!("servers are available"),
            }
        }
        assert_eq!(got, [132, 132, 132, 131, 131]);
        held.pop();
        assert_eq!(port(p.acquire(&[])), 131);
    }

    #[test]
    fn hard_limit_holds_under_concurrent_acquires() {
        let mut p = pool(&[("127.0.0.1:141", 1)]);
        p.members[0].limits = InflightLimits { soft: 0, hard: 5 };
        let p = Arc::new(p);
        let held: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..4)
                            .filter_map(|_| match p.acquire(&[]) {
                                Pick::Server(g) => Some(g),
                                _ => None,
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(held.len(), 5);
        assert_eq!(p.members[0].state.inflight(), 5);
    }
}
