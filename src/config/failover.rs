//! `[peering]` and `[[peers]]`: the other PoPs this one relays to when it
//! cannot produce a response itself, over mutual TLS.

use crate::domain::PopId;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// This PoP's side of the peer channel. Relative paths are from the config
/// file's folder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeeringConfig {
    /// The peer listener: only clients with a certificate from `ca` get in.
    pub listen: Vec<SocketAddr>,
    /// The operator's PoP CA (PEM): every PoP's certificate chains to it.
    pub ca: PathBuf,
    /// This PoP's certificate chain (PEM); its DNS name is the PoP id.
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8 or SEC1).
    pub key: PathBuf,
    #[serde(default)]
    pub check: PeerCheckConfig,
}

/// How peers' readiness is checked, over the peer channel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerCheckConfig {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive ready answers that bring a peer (back) into use.
    pub rise: u32,
    /// Consecutive failures that take it out.
    pub fall: u32,
}

impl Default for PeerCheckConfig {
    fn default() -> Self {
        PeerCheckConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
        }
    }
}

/// One peer PoP; `[[peers]]` are listed in order of preference.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub pop: PopId,
    /// Its peer listener.
    pub addr: SocketAddr,
}

/// `[anycast]`: how the PoP's anycast prefix is announced. edgepop does
/// not speak BGP: `edgepop anycast`, a companion process with its own
/// service, watches `/readyz` and tells the PoP's BGP daemon to announce
/// or withdraw; a dead edgepop is noticed because `/readyz` stops answering.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnycastConfig {
    /// The prefix, e.g. "192.0.2.1/32" (for the logs: the daemon's own
    /// config holds the route).
    pub prefix: String,
    #[serde(default)]
    pub driver: AnycastDriver,
    /// BIRD 2: the `birdc` binary, the daemon's control socket, and the
    /// protocol (a `static` one holding the prefix, exported over BGP) that
    /// is enabled to announce and disabled to withdraw.
    #[serde(default = "default_birdc")]
    pub birdc: PathBuf,
    #[serde(default = "default_bird_socket")]
    pub socket: PathBuf,
    #[serde(default = "default_bird_protocol")]
    pub protocol: String,
    /// How often `/readyz` is asked, and how long an answer may take.
    #[serde(default = "default_check_interval", with = "humantime_serde")]
    pub check_interval: Duration,
    #[serde(default = "default_check_timeout", with = "humantime_serde")]
    pub check_timeout: Duration,
    /// Failed checks in a row that withdraw the prefix.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Passing checks in a row before it is announced (again): no flapping.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// SIGTERM: edgepop turns not ready (so the prefix is withdrawn), waits
    /// this long for routers to converge, then closes its listeners and drains.
    #[serde(default = "default_withdraw_grace", with = "humantime_serde")]
    pub withdraw_grace: Duration,
    /// The companion's own `/metrics` (whether the prefix is announced):
    /// the node's admin listener cannot say so once the node is dead.
    #[serde(default = "default_anycast_metrics")]
    pub metrics_listen: SocketAddr,
}

/// Which BGP daemon `edgepop anycast` drives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnycastDriver {
    #[default]
    Bird,
}

fn default_birdc() -> PathBuf {
    PathBuf::from("birdc")
}
fn default_bird_socket() -> PathBuf {
    PathBuf::from("/run/bird/bird.ctl")
}
fn default_bird_protocol() -> String {
    "edgepop_anycast".into()
}
fn default_check_interval() -> Duration {
    Duration::from_millis(200)
}
fn default_check_timeout() -> Duration {
    Duration::from_millis(300)
}
fn default_fall() -> u32 {
    2
}
fn default_rise() -> u32 {
    5
}
fn default_anycast_metrics() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9181))
}
fn default_withdraw_grace() -> Duration {
    Duration::from_secs(2)
}
