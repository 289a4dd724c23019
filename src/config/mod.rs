//! The TOML configuration: its schema, defaults and validation. Parsing is
//! kept apart from the proxy (as River does): the rest of the node receives
//! a validated `Config` and never sees TOML.

mod compression;
mod data;
mod failover;
mod locate;
mod node;
mod pools;
mod tls;
mod validate;

pub use compression::*;
pub use data::*;
pub use failover::*;
pub use locate::Seg;
use locate::{render, Locator};
pub use node::*;
pub use pools::*;
pub use tls::*;

use crate::domain::{DomainStatus, Hostname, PopId, StoreId, Tier};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

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
    #[serde(default)]
    pub compression: CompressionConfig,
    /// The Kafka change stream; without it the replica changes only by
    /// `edgepop replica load`.
    pub sync: Option<SyncConfig>,
    /// HTTPS listeners with on-demand certificates.
    pub tls: Option<TlsConfig>,
    /// Hostnames served from the config itself (the `Directory` until a
    /// replica is configured; static sites stay legitimate afterwards).
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
    /// This PoP's end of the peer channel (mutual TLS).
    pub peering: Option<PeeringConfig>,
    /// Peer PoPs to relay to, in order of preference.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// The anycast prefix's announcement (`edgepop anycast`).
    pub anycast: Option<AnycastConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopConfig {
    pub id: PopId,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub hostname: Hostname,
    pub store_id: StoreId,
    pub tier: Tier,
    #[serde(default)]
    pub status: DomainStatus,
    /// Overrides `tls.redirect_http` for this site.
    pub https_redirect: Option<bool>,
    /// Overrides `tls.hsts` for this site ("" turns it off).
    pub hsts: Option<String>,
    /// Overrides `tls.allow_fronting` for this site.
    pub allow_fronting: Option<bool>,
    /// Advertise HTTP/3 for this site (`Alt-Svc`); default: on when there
    /// is a QUIC listener (`tls.listen_quic`).
    pub http3: Option<bool>,
    /// Overrides `compression.proxied` for this site.
    pub compress_proxied: Option<bool>,
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
                .chain(
                    tls.acme
                        .iter_mut()
                        .chain(tls.issuers.iter_mut())
                        .filter_map(|a| a.ca_root.as_mut()),
                )
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        if let Some(peering) = &mut config.peering {
            for p in [&mut peering.ca, &mut peering.cert, &mut peering.key] {
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
    fn http3_sits_beside_https_unless_told_otherwise() {
        let parse = |extra: &str| {
            let src = format!("{GOOD}[tls]\nlisten = [\"0.0.0.0:443\"]\n{extra}");
            Config::parse(&src, Path::new("t.toml"))
        };
        let c = parse("").unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.quic_listen(), tls.listen.as_slice(), "beside HTTPS");
        assert_eq!(tls.alt_svc_max_age.as_secs(), 86400);
        let c = parse("listen_quic = []\n").unwrap();
        assert!(c.tls.unwrap().quic_listen().is_empty(), "off");
        let e = parse("quic_reset_key = \"short\"\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("tls.quic_reset_key", Some(17)));
        let e = parse("listen_quic = [\"nowhere\"]\n").unwrap_err();
        assert_eq!(e.key, "tls.listen_quic[0]");
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

    #[test]
    fn an_issuer_list_is_checked_per_entry() {
        let entry = |name: &str, dir: &str| {
            format!(
                "[[tls.issuers]]\nname = \"{name}\"\ndirectory = \"{dir}\"\nca_root = \"ca.pem\"\n"
            )
        };
        let tls = format!(
            "\n[tls]\nlisten = [\"127.0.0.1:8443\"]\n{}{}[[tls.issuers]]\ndirectory = \"https://acme.zerossl.com/v2/DV90\"\ntimeout = \"5s\"\n",
            entry("le", "https://le.example/dir"),
            entry("backup", "https://backup.example/dir"),
        );
        let c = Config::parse(&format!("{GOOD}{tls}"), Path::new("/etc/edgepop/t.toml")).unwrap();
        let t = c.tls.unwrap();
        let labels: Vec<String> = t.acme_issuers().map(|a| a.label()).collect();
        assert_eq!(
            labels,
            ["le", "backup", "acme.zerossl.com"],
            "in order; default name: the host"
        );
        assert_eq!(
            t.issuers[0].ca_root.as_deref(),
            Some(Path::new("/etc/edgepop/ca.pem"))
        );
        let (first, last) = (t.ca_timeout(&t.issuers[0]), t.ca_timeout(&t.issuers[2]));
        assert_eq!(
            first,
            std::time::Duration::from_secs(30),
            "90 s shared by three"
        );
        assert_eq!(last, std::time::Duration::from_secs(5));
        let slow = tls.replace("timeout = \"5s\"", "timeout = \"80s\"");
        assert_eq!(err(&format!("{GOOD}{slow}")).key, "tls.order_timeout");

        let e = err(&format!(
            "{GOOD}{}",
            tls.replace("https://backup", "http://backup")
        ));
        assert_eq!(e.key, "tls.issuers[1].directory");
        assert!(e.line.is_some());
        let e = err(&format!("{GOOD}{}", tls.replace("\"backup\"", "\"le\"")));
        assert_eq!(e.key, "tls.issuers[1].name");
        assert!(e.message.contains("two issuers"), "{}", e.message);
        let both = format!("{GOOD}{tls}[tls.acme]\ndirectory = \"https://x.example/dir\"\n");
        assert_eq!(err(&both).key, "tls.acme");
    }

    #[test]
    fn peers_and_overflow_limits_are_checked() {
        let peering = "\n[peering]\nlisten = [\"127.0.0.1:8444\"]\nca = \"pki/ca.pem\"\ncert = \"pki/fra1.pem\"\nkey = \"pki/fra1.key\"\n[[peers]]\npop = \"ams1\"\naddr = \"10.0.0.2:8444\"\n";
        let c = Config::parse(
            &format!("{GOOD}{peering}"),
            Path::new("/etc/edgepop/t.toml"),
        )
        .unwrap();
        let p = c.peering.unwrap();
        assert_eq!(p.ca, Path::new("/etc/edgepop/pki/ca.pem"));
        assert_eq!(p.check.fall, 1);
        assert_eq!(c.peers[0].pop.as_str(), "ams1");

        let e = err(&format!(
            "{GOOD}{}",
            peering.replace("\"ams1\"", "\"fra1\"")
        ));
        assert_eq!(e.key, "peers[0].pop");
        assert!(e.message.contains("own id"), "{e}");
        let e = err(&format!(
            "{GOOD}[[peers]]\npop = \"ams1\"\naddr = \"10.0.0.2:8444\"\n"
        ));
        assert_eq!(e.key, "peers");
        assert!(e.message.contains("[peering]"), "{e}");

        let limits = GOOD.replace(
            "weight = 3 }]",
            "weight = 3, soft_limit = 9 }]\nlimits = { soft = 2, hard = 4 }",
        );
        let e = err(&limits);
        assert_eq!(e.key, "pools.public.servers[1].soft_limit");
        let c = Config::parse(
            &limits.replace("soft_limit = 9", "hard_limit = 8"),
            Path::new("t.toml"),
        )
        .unwrap();
        let pool = &c.pools[&Tier::Public];
        assert_eq!(pool.limits_of(0), InflightLimits { soft: 2, hard: 4 });
        assert_eq!(pool.limits_of(1), InflightLimits { soft: 2, hard: 8 });
    }
}
