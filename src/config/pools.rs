//! `[pools.<tier>]`: origin servers, their health checks and passive ejection.

use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub servers: Vec<ServerEntry>,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub passive: PassiveConfig,
    /// The overflow valve: in-flight limits of each server of the pool
    /// (a server's own `soft_limit` / `hard_limit` override them).
    #[serde(default)]
    pub limits: InflightLimits,
    /// Every server at its hard limit and no peer PoP to take the request:
    /// how long it may wait for a free slot before a 503 with `retry-after`.
    #[serde(default = "default_overflow_wait", with = "humantime_serde")]
    pub overflow_wait: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    pub addr: SocketAddr,
    #[serde(default = "one")]
    pub weight: u32,
    /// Overrides the pool's `limits.soft` for this server.
    pub soft_limit: Option<u32>,
    /// Overrides the pool's `limits.hard` for this server.
    pub hard_limit: Option<u32>,
}

/// In-flight request limits of one server, as Fly.io's proxy has them:
/// above `soft` a server is chosen only when every other one is above its
/// own too; at `hard` it is given nothing more. 0: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InflightLimits {
    pub soft: u32,
    pub hard: u32,
}

impl PoolConfig {
    /// The limits of the pool's `i`th server.
    pub fn limits_of(&self, i: usize) -> InflightLimits {
        let s = &self.servers[i];
        InflightLimits {
            soft: s.soft_limit.unwrap_or(self.limits.soft),
            hard: s.hard_limit.unwrap_or(self.limits.hard),
        }
    }
}

fn default_overflow_wait() -> Duration {
    Duration::from_millis(500)
}

fn one() -> u32 {
    1
}

/// Active HTTP health check of every server of a pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub enabled: bool,
    pub path: String,
    /// Host header of the check.
    pub host: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes that bring a server back.
    pub rise: u32,
    /// Consecutive failures that take it out.
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            path: "/".into(),
            host: "localhost".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
        }
    }
}

/// Passive ejection: consecutive request failures take a server out for a while.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveConfig {
    pub max_fails: u32,
    #[serde(with = "humantime_serde")]
    pub eject_for: Duration,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            max_fails: 3,
            eject_for: Duration::from_secs(10),
        }
    }
}
