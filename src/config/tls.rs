//! `[tls]`: HTTPS listeners, on-demand certificates, ACME and the store.

use crate::domain::Hostname;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
    /// QUIC (HTTP/3) listeners, UDP; default: one beside each HTTPS
    /// listener, on the same address and port. `[]`: no HTTP/3.
    pub listen_quic: Option<Vec<SocketAddr>>,
    /// QUIC handshakes under way above which a client must first prove
    /// its address (a Retry round trip); 0: always.
    #[serde(default = "default_quic_retry_above")]
    pub quic_retry_above: usize,
    /// A secret every PoP shares (32 characters or more), keying QUIC's
    /// stateless resets: when a route moves a client to another PoP, that
    /// PoP's reset ends the connection at once (the client reconnects)
    /// instead of after its idle timeout. Unset: a key of the process.
    pub quic_reset_key: Option<String>,
    /// `ma` of the `Alt-Svc` header that advertises HTTP/3: how long a
    /// client may remember it.
    #[serde(default = "default_alt_svc_max_age", with = "humantime_serde")]
    pub alt_svc_max_age: Duration,
    /// Certificate store and local CA; relative paths are from the config
    /// file's folder. The local CA's root is `<dir>/ca/ca.pem`.
    #[serde(default = "default_tls_dir")]
    pub dir: PathBuf,
    /// Longest a handshake waits for a new certificate.
    #[serde(default = "default_issue_timeout", with = "humantime_serde")]
    pub issue_timeout: Duration,
    /// Longest an order may take; it goes on after a handshake stopped
    /// waiting, and the next handshake gets the certificate.
    #[serde(default = "default_order_timeout", with = "humantime_serde")]
    pub order_timeout: Duration,
    /// First wait after a failed issuance for a name (doubles, max 1 h).
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Issuances per minute, all names together.
    #[serde(default = "default_issue_rate")]
    pub issue_per_minute: u32,
    /// Lifetime of certificates from the local CA.
    #[serde(default = "default_validity", with = "humantime_serde")]
    pub local_ca_validity: Duration,
    /// Renew when less than this fraction of a certificate's lifetime is left.
    #[serde(default = "default_renew_fraction")]
    pub renew_when_left: f64,
    /// How often held certificates are checked for renewal.
    #[serde(default = "default_renew_check", with = "humantime_serde")]
    pub renew_check: Duration,
    /// Parsed certificates kept in memory at most (a bounded cache); the
    /// others stay in the store and are loaded on their next handshake.
    #[serde(default = "default_hold_at_most")]
    pub hold_at_most: u64,
    /// How often the replica's active domains are checked against the
    /// store (with `issue_ahead`): none stored or expired → ordered; the
    /// renewal share begun → held, so it is renewed before anyone asks.
    #[serde(default = "default_sweep_every", with = "humantime_serde")]
    pub sweep_every: Duration,
    /// A domain the change stream makes active gets its certificate ordered
    /// at once, before its first visitor (one PoP orders: the store's lock).
    #[serde(default = "default_true")]
    pub issue_ahead: bool,
    /// Names waiting to be ordered ahead; more are dropped (counted) and
    /// left to their first handshake.
    #[serde(default = "default_ahead_queue")]
    pub issue_ahead_queue: usize,
    /// Certificates from files, for the operator's own names.
    #[serde(default)]
    pub certificates: Vec<StaticCert>,
    /// Answer plain-HTTP requests with a 308 to HTTPS (per site: `https_redirect`).
    #[serde(default)]
    pub redirect_http: bool,
    /// `strict-transport-security` value on HTTPS responses, e.g. "max-age=31536000".
    pub hsts: Option<String>,
    /// Serve an HTTPS request whose Host is another name than the one its
    /// connection was opened for (SNI). Off: 421, so one seller's name
    /// cannot front for another's site (per site: `allow_fronting`).
    #[serde(default)]
    pub allow_fronting: bool,
    /// Certificates from an ACME CA; without this table (and without
    /// `[[tls.issuers]]`) the local CA issues.
    pub acme: Option<AcmeConfig>,
    /// ACME CAs in order of preference: when one fails an order (refused,
    /// rate-limited, unreachable, timed out), the next is tried for that
    /// order. Instead of `[tls.acme]`, not beside it.
    #[serde(default)]
    pub issuers: Vec<AcmeConfig>,
    /// Where certificates, the ACME account, challenges and locks are kept.
    #[serde(default)]
    pub store: CertStoreConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory
    pub directory: String,
    /// The CA's name in logs, metrics, `/status` and the store; default:
    /// the directory's host.
    pub name: Option<String>,
    /// Longest one order may take at this CA before the next one is tried;
    /// default: `tls.order_timeout` shared evenly among the CAs.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// External account binding (RFC 8555 §7.3.4), for CAs that require
    /// one (ZeroSSL, Google Trust Services): the key id and the base64url
    /// HMAC key the CA gave.
    pub eab_kid: Option<String>,
    pub eab_hmac_key: Option<String>,
    /// e.g. ["mailto:ops@example.com"]
    #[serde(default)]
    pub contact: Vec<String>,
    /// PEM root trusted for the directory's own HTTPS (test CAs); default:
    /// the public web roots.
    pub ca_root: Option<PathBuf>,
    /// "http-01" (needs an HTTP listener on port 80) or "tls-alpn-01"
    /// (needs an HTTPS listener on port 443).
    #[serde(default = "default_challenge")]
    pub challenge: ChallengeKind,
}

impl TlsConfig {
    /// The QUIC listeners in force (see `listen_quic`).
    pub fn quic_listen(&self) -> &[SocketAddr] {
        self.listen_quic.as_deref().unwrap_or(&self.listen)
    }
}

impl AcmeConfig {
    /// The external account binding: key id and raw HMAC key; Err names
    /// what is wrong with the settings.
    pub fn eab(&self) -> Result<Option<(String, Vec<u8>)>, String> {
        use base64::Engine;
        match (&self.eab_kid, &self.eab_hmac_key) {
            (None, None) => Ok(None),
            (Some(kid), Some(key)) => {
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key.trim_end_matches('='))
                    .map_err(|e| format!("not base64url: {e}"))?;
                Ok(Some((kid.clone(), raw)))
            }
            _ => Err("eab_kid and eab_hmac_key go together".into()),
        }
    }

    /// What the CA is called in logs, metrics and the store.
    pub fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let rest = self
            .directory
            .split_once("://")
            .map_or(self.directory.as_str(), |(_, r)| r);
        rest.split(['/', '?']).next().unwrap_or(rest).to_string()
    }
}

impl TlsConfig {
    /// The ACME CAs in the order they are tried (`[tls.acme]` or
    /// `[[tls.issuers]]`); empty: the local CA issues.
    pub fn acme_issuers(&self) -> impl Iterator<Item = &AcmeConfig> {
        self.acme.iter().chain(&self.issuers)
    }

    /// How long `acme` may take with one order: its own `timeout`, or an
    /// even share of `order_timeout`.
    pub fn ca_timeout(&self, acme: &AcmeConfig) -> Duration {
        let cas = self.acme_issuers().count().max(1) as u32;
        acme.timeout.unwrap_or(self.order_timeout / cas)
    }
}

/// Which challenge a node answers when it orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum ChallengeKind {
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

fn default_challenge() -> ChallengeKind {
    ChallengeKind::Http01
}

/// `postgres` set: the database all PoPs share (one order per name for the
/// network, any PoP answers any challenge). Unset: files under `tls.dir`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertStoreConfig {
    pub postgres: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticCert {
    pub hostnames: Vec<Hostname>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_quic_retry_above() -> usize {
    64
}

fn default_alt_svc_max_age() -> Duration {
    Duration::from_secs(86400)
}

fn default_tls_dir() -> PathBuf {
    PathBuf::from("edgepop-data/tls")
}
fn default_issue_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_sweep_every() -> Duration {
    Duration::from_secs(3600)
}
fn default_hold_at_most() -> u64 {
    100_000
}
fn default_order_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_issue_rate() -> u32 {
    60
}
fn default_validity() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}
fn default_renew_fraction() -> f64 {
    1.0 / 3.0
}
fn default_true() -> bool {
    true
}
fn default_ahead_queue() -> usize {
    10_000
}
fn default_renew_check() -> Duration {
    Duration::from_secs(60)
}
