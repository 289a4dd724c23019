//! The TOML configuration: its schema, defaults and validation. Parsing is
//! kept apart from the proxy (as River does): the rest of the node receives
//! a validated `Config` and never sees TOML.

mod locate;

pub use locate::Seg;
use locate::{render, Locator};

use crate::domain::{DomainStatus, Hostname, PopId, Tier};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub pop: PopConfig,
    #[serde(default)]
    pub server: ServerConfig,
    pub listen: ListenConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub log: LogConfig,
    pub pools: BTreeMap<Tier, PoolConfig>,
    #[serde(default)]
    pub replica: ReplicaConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    /// The Kafka change stream; without it the replica changes only by
    /// `edgepop replica load`.
    pub sync: Option<SyncConfig>,
    /// HTTPS listeners with on-demand certificates.
    pub tls: Option<TlsConfig>,
    /// Hostnames served from the config itself (the `Directory` until a
    /// replica is configured; static sites stay legitimate afterwards).
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopConfig {
    pub id: PopId,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// One shared work-stealing runtime (true) or one single-threaded
    /// runtime per worker, nginx style (false: fewer cross-thread wakeups).
    pub work_stealing: bool,
    /// Longest a drain (SIGTERM, upgrade) waits for in-flight requests.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Unix socket over which a new binary takes the listening sockets.
    pub upgrade_sock: PathBuf,
    pub pid_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads: 2,
            work_stealing: false,
            drain_timeout: Duration::from_secs(30),
            upgrade_sock: PathBuf::from("/tmp/edgepop_upgrade.sock"),
            pid_file: PathBuf::from("/tmp/edgepop.pid"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Plain HTTP listeners.
    pub http: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9180)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time to wait for origin bytes before answering 504.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Origins tried for one idempotent request (first try included).
    pub max_tries: usize,
    /// `retry-after` seconds sent with a 503.
    pub retry_after: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_tries: 3,
            retry_after: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// JSON access log: "stdout", "off", or a file path.
    pub access: String,
    /// Filter for the server log (tracing syntax), JSON lines on stderr.
    pub level: String,
    /// With `run --daemon`, stderr is redirected to this file.
    pub error_log: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            access: "stdout".into(),
            level: "info".into(),
            error_log: None,
        }
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaKind {
    Embedded,
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaConfig {
    pub kind: ReplicaKind,
    /// Embedded replica file; relative paths are from the config file's folder.
    pub path: PathBuf,
    /// Postgres replica, e.g. `postgres://edgepop@127.0.0.1:5432/replica`.
    pub url: Option<String>,
    pub pool_size: usize,
    /// Records behind the broker beyond which the node is not ready.
    pub max_lag: i64,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            kind: ReplicaKind::Embedded,
            path: PathBuf::from("edgepop-data/replica.redb"),
            url: None,
            pool_size: 8,
            max_lag: 10_000,
            ping_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bound of the page cache, in bytes of pages held.
    pub max_bytes: u64,
    pub max_domains: u64,
    /// How long "no such page / domain" is remembered.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Query parameters that still hit the page (`name*` matches a prefix).
    pub ignorable_query_params: Vec<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 256 * 1024 * 1024,
            max_domains: 1_000_000,
            negative_ttl: Duration::from_secs(2),
            ignorable_query_params: vec!["utm_*".into(), "gclid".into(), "fbclid".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// `host:port[,host:port...]`
    pub brokers: String,
    /// Debezium topics, e.g. `cdc.public.domains`, `cdc.public.pages`.
    pub topics: Vec<String>,
    /// Name under which this process stores its stream positions; must be
    /// unique per process sharing a replica. Default: `<pop>-<first listener>`.
    pub consumer_name: Option<String>,
    pub group_id: Option<String>,
    /// Malformed records are copied here (with their source and error).
    pub dead_letter_topic: Option<String>,
    #[serde(default = "default_batch")]
    pub batch_max: usize,
    /// Extra librdkafka settings (security.protocol, sasl.*, ssl.*...).
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
}

fn default_batch() -> usize {
    500
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
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
    /// Certificates from files, for the operator's own names.
    #[serde(default)]
    pub certificates: Vec<StaticCert>,
    /// Answer plain-HTTP requests with a 308 to HTTPS (per site: `https_redirect`).
    #[serde(default)]
    pub redirect_http: bool,
    /// `strict-transport-security` value on HTTPS responses, e.g. "max-age=31536000".
    pub hsts: Option<String>,
    /// Certificates from an ACME CA; without this table the local CA issues.
    pub acme: Option<AcmeConfig>,
    /// Where certificates, the ACME account, challenges and locks are kept.
    #[serde(default)]
    pub store: CertStoreConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory
    pub directory: String,
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

fn default_tls_dir() -> PathBuf {
    PathBuf::from("edgepop-data/tls")
}
fn default_issue_timeout() -> Duration {
    Duration::from_secs(10)
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
fn default_renew_check() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub hostname: Hostname,
    pub store_id: i64,
    pub tier: Tier,
    #[serde(default)]
    pub status: DomainStatus,
    /// Overrides `tls.redirect_http` for this site.
    pub https_redirect: Option<bool>,
    /// Overrides `tls.hsts` for this site ("" turns it off).
    pub hsts: Option<String>,
}

/// A configuration error that names the file, the key and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&src, path)
    }

    pub fn parse(src: &str, file: &Path) -> Result<Config, ConfigError> {
        let locator = Locator::new(src);
        let config: Config = toml::from_str(src).map_err(|e| {
            let offset = e.span().map(|s| s.start);
            let path = offset.map(|o| locator.path_at(o)).unwrap_or_default();
            ConfigError {
                file: file.to_path_buf(),
                key: render(&path),
                line: offset.map(|o| locator.line(o)),
                message: e.message().trim().to_string(),
            }
        })?;
        let mut config = config;
        config.validate().map_err(|(path, message)| ConfigError {
            file: file.to_path_buf(),
            key: render(&path),
            line: locator.line_of(&path),
            message,
        })?;
        let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        if config.replica.path.is_relative() {
            config.replica.path = base.join(&config.replica.path);
        }
        if let Some(tls) = &mut config.tls {
            for p in std::iter::once(&mut tls.dir)
                .chain(
                    tls.certificates
                        .iter_mut()
                        .flat_map(|c| [&mut c.cert, &mut c.key]),
                )
                .chain(tls.acme.iter_mut().filter_map(|a| a.ca_root.as_mut()))
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(config)
    }

    /// The name this process stores its stream positions under.
    pub fn consumer_name(&self) -> String {
        let sync = self.sync.as_ref().and_then(|s| s.consumer_name.clone());
        sync.unwrap_or_else(|| format!("{}-{}", self.pop.id, self.listen.http[0]))
    }

    /// Rules serde cannot express. Returns the offending key path.
    fn validate(&self) -> Result<(), (Vec<Seg>, String)> {
        let at = |segs: &[Seg], msg: String| Err((segs.to_vec(), msg));
        if self.listen.http.is_empty() {
            return at(
                &["listen".into(), "http".into()],
                "needs at least one address".into(),
            );
        }
        if self.server.threads == 0 {
            return at(
                &["server".into(), "threads".into()],
                "must be at least 1".into(),
            );
        }
        if self.proxy.max_tries == 0 {
            return at(
                &["proxy".into(), "max_tries".into()],
                "must be at least 1".into(),
            );
        }
        for (tier, pool) in &self.pools {
            let base: Vec<Seg> = vec!["pools".into(), tier.as_str().into()];
            let key = |k: &[Seg]| [base.as_slice(), k].concat();
            if pool.servers.is_empty() {
                return at(
                    &key(&["servers".into()]),
                    "a pool needs at least one server".into(),
                );
            }
            let mut seen = HashSet::new();
            for (i, s) in pool.servers.iter().enumerate() {
                if s.weight == 0 {
                    return at(
                        &key(&["servers".into(), i.into(), "weight".into()]),
                        "must be at least 1".into(),
                    );
                }
                if !seen.insert(s.addr) {
                    return at(
                        &key(&["servers".into(), i.into(), "addr".into()]),
                        format!("{} is listed twice in this pool", s.addr),
                    );
                }
            }
            let h = &pool.health;
            if h.rise == 0 || h.fall == 0 {
                let k = if h.rise == 0 { "rise" } else { "fall" };
                return at(
                    &key(&["health".into(), k.into()]),
                    "must be at least 1".into(),
                );
            }
            if h.interval.is_zero() {
                return at(
                    &key(&["health".into(), "interval".into()]),
                    "must be more than 0".into(),
                );
            }
            if !h.path.starts_with('/') {
                return at(
                    &key(&["health".into(), "path".into()]),
                    "must start with '/'".into(),
                );
            }
            if pool.passive.max_fails == 0 {
                return at(
                    &key(&["passive".into(), "max_fails".into()]),
                    "must be at least 1".into(),
                );
            }
        }
        let mut hosts = HashSet::new();
        for (i, site) in self.sites.iter().enumerate() {
            if !self.pools.contains_key(&site.tier) {
                return at(
                    &["sites".into(), i.into(), "tier".into()],
                    format!("no pool is configured for tier `{}`", site.tier.as_str()),
                );
            }
            if !hosts.insert(&site.hostname) {
                return at(
                    &["sites".into(), i.into(), "hostname".into()],
                    format!("{} is listed twice", site.hostname),
                );
            }
        }
        if self.replica.kind == ReplicaKind::Postgres && self.replica.url.is_none() {
            return at(
                &["replica".into(), "kind".into()],
                "a postgres replica needs `url`".into(),
            );
        }
        if self.replica.pool_size == 0 {
            return at(
                &["replica".into(), "pool_size".into()],
                "must be at least 1".into(),
            );
        }
        if let Some(sync) = &self.sync {
            if sync.topics.is_empty() {
                return at(
                    &["sync".into(), "topics".into()],
                    "needs at least one topic".into(),
                );
            }
            if sync.batch_max == 0 {
                return at(
                    &["sync".into(), "batch_max".into()],
                    "must be at least 1".into(),
                );
            }
        }
        if let Some(tls) = &self.tls {
            if tls.listen.is_empty() {
                return at(
                    &["tls".into(), "listen".into()],
                    "needs at least one address".into(),
                );
            }
            if !(tls.renew_when_left > 0.0 && tls.renew_when_left < 1.0) {
                return at(
                    &["tls".into(), "renew_when_left".into()],
                    "must be between 0 and 1".into(),
                );
            }
            if tls.order_timeout < tls.issue_timeout {
                return at(
                    &["tls".into(), "order_timeout".into()],
                    "must be at least tls.issue_timeout".into(),
                );
            }
            if tls.issue_per_minute == 0 {
                return at(
                    &["tls".into(), "issue_per_minute".into()],
                    "must be at least 1".into(),
                );
            }
            if let Some(acme) = &tls.acme {
                let key = |k: &str| -> [Seg; 3] { ["tls".into(), "acme".into(), k.into()] };
                if !acme.directory.starts_with("https://") {
                    return at(&key("directory"), "must be an https:// URL".into());
                }
                if let Some(c) = acme.contact.iter().find(|c| !c.starts_with("mailto:")) {
                    return at(&key("contact"), format!("{c:?} must be a mailto: URI"));
                }
            }
        }
        let level = &self.log.level;
        if tracing_subscriber::EnvFilter::try_new(level).is_err() {
            return at(
                &["log".into(), "level".into()],
                format!("invalid filter {level:?}"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[pop]
id = "fra1"

[listen]
http = ["127.0.0.1:8080"]

[pools.public]
servers = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002", weight = 3 }]

[[sites]]
hostname = "Shop.Example.com"
store_id = 7
tier = "public"
"#;

    fn err(src: &str) -> ConfigError {
        Config::parse(src, Path::new("t.toml")).unwrap_err()
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        assert_eq!(c.pop.id.as_str(), "fra1");
        assert_eq!(c.pools[&Tier::Public].servers[1].weight, 3);
        assert_eq!(c.sites[0].hostname.as_str(), "shop.example.com");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9180");
        assert_eq!(c.pools[&Tier::Public].health.rise, 2);
    }

    #[test]
    fn type_error_names_key_and_line() {
        let e = err(&GOOD.replace("weight = 3", "weight = \"heavy\""));
        assert_eq!(e.key, "pools.public.servers[1].weight");
        assert_eq!(e.line, Some(9));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err(&GOOD.replace("store_id = 7", "store_id = 7\nteir = \"public\""));
        assert!(e.message.contains("teir"), "{e}");
        assert_eq!(e.line, Some(14));
    }

    #[test]
    fn semantic_errors_name_key_and_line() {
        let e = err(&GOOD.replace("weight = 3", "weight = 0"));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("pools.public.servers[1].weight", Some(9))
        );
        let e = err(&GOOD.replace("tier = \"public\"", "tier = \"enterprise\""));
        assert_eq!((e.key.as_str(), e.line), ("sites[0].tier", Some(14)));
        assert!(
            e.to_string().starts_with("t.toml:14: key `sites[0].tier`"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_key() {
        let e = err(&GOOD.replace("127.0.0.1:9002", "not-an-addr"));
        assert_eq!(e.key, "pools.public.servers[1].addr");
        let e = err(&GOOD.replace("\"fra1\"", "\"FRA 1\""));
        assert_eq!((e.key.as_str(), e.line), ("pop.id", Some(3)));
        let e = err(&GOOD.replace("Shop.Example.com", "bad host!"));
        assert_eq!(e.key, "sites[0].hostname");
    }

    #[test]
    fn acme_and_store_settings_are_checked() {
        let tls = "\n[tls]\nlisten = [\"127.0.0.1:8443\"]\n[tls.acme]\ndirectory = \"https://ca.example/dir\"\ncontact = [\"mailto:ops@example.com\"]\nca_root = \"ca.pem\"\n[tls.store]\npostgres = \"host=db\"\n";
        let c = Config::parse(&format!("{GOOD}{tls}"), Path::new("/etc/edgepop/t.toml")).unwrap();
        let t = c.tls.unwrap();
        let acme = t.acme.unwrap();
        assert_eq!(acme.challenge, ChallengeKind::Http01, "default challenge");
        assert_eq!(acme.ca_root.unwrap(), Path::new("/etc/edgepop/ca.pem"));
        assert_eq!(t.store.postgres.as_deref(), Some("host=db"));

        let e = err(&format!("{GOOD}{}", tls.replace("https://ca", "http://ca")));
        assert_eq!(e.key, "tls.acme.directory");
        assert!(e.line.is_some());
        let e = err(&format!("{GOOD}{}", tls.replace("mailto:ops", "ops")));
        assert_eq!(e.key, "tls.acme.contact");
        let e = err(&format!(
            "{GOOD}{}",
            tls.replace("ca_root", "challenge = \"dns-01\"\nca_root")
        ));
        assert_eq!(e.key, "tls.acme.challenge");
    }
}
