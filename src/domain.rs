//! The words of the domain, as types: a request's `Hostname`, the `PopId`
//! that answers it, the `Tier` that picks its origin pool.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A normalised hostname: lower case ASCII (IDN as punycode), no port, no
/// trailing dot. Only `Hostname::parse` makes one, so holding one means the
/// name is valid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Hostname(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("missing Host header")]
    Missing,
    #[error("invalid Host header: {0}")]
    Invalid(&'static str),
}

impl Hostname {
    /// Normalises an HTTP Host / :authority value (which may carry a port).
    pub fn from_authority(value: &[u8]) -> Result<Self, HostError> {
        Authority::parse(value).map(|a| a.host)
    }

    /// Normalises a bare hostname (no port).
    pub fn parse(name: &str) -> Result<Self, HostError> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(HostError::Missing);
        }
        let ascii = if name.is_ascii() {
            name.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(name).map_err(|_| HostError::Invalid("bad IDN"))?
        };
        if ascii.len() > 253 {
            return Err(HostError::Invalid("too long"));
        }
        for label in ascii.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(HostError::Invalid("bad label length"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(HostError::Invalid("label starts or ends with '-'"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(HostError::Invalid("bad character"));
            }
        }
        Ok(Hostname(ascii))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request's Host as the edge understood it: the normalised name and the
/// port the client named, if any. What the origin is told (`Host`,
/// `x-forwarded-host`), never the client's spelling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    pub host: Hostname,
    pub port: Option<u16>,
}

impl Authority {
    /// An HTTP Host / :authority value. A Unicode name is mapped as
    /// browsers map it (UTS 46: case, fullwidth forms, ignored characters)
    /// to its punycode form, which is what the origin is then told; the port
    /// must be 1-65535.
    pub fn parse(value: &[u8]) -> Result<Self, HostError> {
        let value = std::str::from_utf8(value).map_err(|_| HostError::Invalid("not UTF-8"))?;
        let value = value.trim();
        if value.is_empty() {
            return Err(HostError::Missing);
        }
        if value.starts_with('[') {
            // An IPv6 literal is a valid authority, but never a seller's domain.
            return Err(HostError::Invalid("IP literal"));
        }
        let (host, port) = match value.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => (host, Some(p)),
                _ => return Err(HostError::Invalid("bad port")),
            },
            None => (value, None),
        };
        Ok(Authority {
            host: Hostname::parse(host)?,
            port,
        })
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => self.host.fmt(f),
        }
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Hostname {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hostname::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The id of a point of presence, e.g. `fra1`. It travels in `x-edge-route`,
/// so it is kept to a header-safe alphabet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PopId(String);

impl PopId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(PopId(s.to_string()))
        } else {
            Err(format!(
                "invalid PoP id {s:?}: use 1-32 of a-z, 0-9, '-', '_'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PopId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PopId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PopId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Which origin pool serves a store. One pool per tier keeps an enterprise
/// flash sale from starving the public pool and vice versa.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Public,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Public => "public",
            Tier::Enterprise => "enterprise",
        }
    }

    /// The tier a `domains.tier` value names (the words `as_str` writes).
    pub fn parse(s: &str) -> Option<Self> {
        [Tier::Public, Tier::Enterprise]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DomainStatus {
    #[default]
    Active,
    Suspended,
}

impl DomainStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainStatus::Active => "active",
            DomainStatus::Suspended => "suspended",
        }
    }

    /// The status a `domains.status` value names (the words `as_str` writes).
    pub fn parse(s: &str) -> Option<Self> {
        [DomainStatus::Active, DomainStatus::Suspended]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// A seller's store: what `domains` rows point at and `pages` rows belong to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct StoreId(pub i64);

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the node knows about one hostname: the row of `domains`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub hostname: Hostname,
    pub store_id: StoreId,
    pub status: DomainStatus,
    pub tier: Tier,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_read_back_as_serde_writes_them() {
        for status in [DomainStatus::Active, DomainStatus::Suspended] {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json.as_str(), Some(status.as_str()));
            assert_eq!(DomainStatus::parse(status.as_str()), Some(status));
        }
        for tier in [Tier::Public, Tier::Enterprise] {
            let json = serde_json::to_value(tier).unwrap();
            assert_eq!(json.as_str(), Some(tier.as_str()));
            assert_eq!(Tier::parse(tier.as_str()), Some(tier));
        }
        assert_eq!(DomainStatus::parse("gone"), None);
        assert_eq!(Tier::parse("Public"), None);
    }

    fn host(v: &str) -> Result<String, HostError> {
        Hostname::from_authority(v.as_bytes()).map(|h| h.0)
    }

    #[test]
    fn normalises_case_port_and_trailing_dot() {
        assert_eq!(host("Shop.Example.COM:8443").unwrap(), "shop.example.com");
        assert_eq!(host("shop.example.com.").unwrap(), "shop.example.com");
        assert_eq!(host("shop.example.com.:80").unwrap(), "shop.example.com");
    }

    #[test]
    fn idn_becomes_punycode() {
        assert_eq!(host("Bücher.example").unwrap(), "xn--bcher-kva.example");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(host(""), Err(HostError::Missing));
        assert!(host("a b.com").is_err());
        assert!(host("shop.com:http").is_err());
        assert!(host("[::1]:80").is_err());
        assert!(host("-bad.com").is_err());
        assert!(host("a..b").is_err());
        assert!(Hostname::from_authority(&[0xff, 0xfe]).is_err());
        assert_eq!(host("shop.com:0"), Err(HostError::Invalid("bad port")));
        assert_eq!(host("shop.com:99999"), Err(HostError::Invalid("bad port")));
        assert_eq!(host("shop.com:+80"), Err(HostError::Invalid("bad port")));
    }

    #[test]
    fn authority_keeps_the_port_and_shows_the_normalised_name() {
        let a = Authority::parse("DEMO.localhost.:8080".as_bytes()).unwrap();
        assert_eq!(a.to_string(), "demo.localhost:8080");
        let fullwidth = Authority::parse("ｓｈｏｐ.example".as_bytes()).unwrap();
        assert_eq!(fullwidth.to_string(), "shop.example");
    }

    #[test]
    fn pop_id_alphabet() {
        assert!(PopId::parse("fra1").is_ok());
        assert!(PopId::parse("FRA 1").is_err());
        assert!(PopId::parse("").is_err());
    }
}

/// A page's identity: the store it belongs to and its path (no query).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PageKey {
    pub store_id: StoreId,
    pub path: String,
}

/// A row of `pages`, as the edge serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub store_id: StoreId,
    pub path: String,
    pub content_type: String,
    pub body: String,
    pub status: u16,
    pub cache_control: Option<String>,
    pub version: i64,
    pub updated_at: String,
}

impl Page {
    pub fn key(&self) -> PageKey {
        PageKey {
            store_id: self.store_id,
            path: self.path.clone(),
        }
    }
}
