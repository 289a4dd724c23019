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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    pub addr: SocketAddr,
    #[serde(default = "one")]
    pub weight: u32,
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
