//! The rules serde cannot express, each failure naming its key.

use super::locate::Seg;
use super::{Config, ReplicaKind};
use std::collections::HashSet;

impl Config {
    /// Rules serde cannot express. Returns the offending key path.
    pub(super) fn validate(&self) -> Result<(), (Vec<Seg>, String)> {
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
        if self.server.max_connections == 0 {
            return at(
                &["server".into(), "max_connections".into()],
                "must be at least 1".into(),
            );
        }
        if self.proxy.max_head_bytes < 1024 {
            return at(
                &["proxy".into(), "max_head_bytes".into()],
                "must be at least 1024".into(),
            );
        }
        let c = &self.compression;
        if !(0.0..1.0).contains(&c.min_saving) {
            return at(
                &["compression".into(), "min_saving".into()],
                "must be at least 0 and below 1 (a share of the page)".into(),
            );
        }
        for (key, levels) in [
            ("page_levels", c.page_levels),
            ("proxied_levels", c.proxied_levels),
        ] {
            for (name, ok) in [
                ("br", levels.br <= 11),
                ("zstd", (1..=22).contains(&levels.zstd)),
                ("gzip", (1..=9).contains(&levels.gzip)),
            ] {
                if !ok {
                    return at(
                        &["compression".into(), key.into(), name.into()],
                        "out of range (br 0-11, zstd 1-22, gzip 1-9)".into(),
                    );
                }
            }
        }
        if c.workers == 0 {
            return at(
                &["compression".into(), "workers".into()],
                "must be at least 1".into(),
            );
        }
        let second = std::time::Duration::from_secs(1);
        for (key, value) in [
            ("head_timeout", self.proxy.head_timeout),
            ("keepalive_timeout", self.proxy.keepalive_timeout),
            ("body_timeout", self.proxy.body_timeout),
        ] {
            if value < second {
                return at(&["proxy".into(), key.into()], "must be at least 1s".into());
            }
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
                let limits = pool.limits_of(i);
                if limits.soft > 0 && limits.hard > 0 && limits.soft > limits.hard {
                    let field = if s.soft_limit.is_some() {
                        key(&["servers".into(), i.into(), "soft_limit".into()])
                    } else {
                        key(&["limits".into(), "soft".into()])
                    };
                    let why = format!(
                        "soft limit {} is above the hard limit {}",
                        limits.soft, limits.hard
                    );
                    return at(&field, why);
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
            if tls.sweep_every < std::time::Duration::from_secs(1) {
                return at(
                    &["tls".into(), "sweep_every".into()],
                    "must be at least 1s".into(),
                );
            }
            if tls.hold_at_most == 0 {
                return at(
                    &["tls".into(), "hold_at_most".into()],
                    "must be at least 1".into(),
                );
            }
            if tls.issue_per_minute == 0 {
                return at(
                    &["tls".into(), "issue_per_minute".into()],
                    "must be at least 1".into(),
                );
            }
            if tls.quic_reset_key.as_ref().is_some_and(|k| k.len() < 32) {
                return at(
                    &["tls".into(), "quic_reset_key".into()],
                    "must be at least 32 characters (a secret every PoP shares)".into(),
                );
            }
            if tls.acme.is_some() && !tls.issuers.is_empty() {
                return at(
                    &["tls".into(), "acme".into()],
                    "set [tls.acme] or [[tls.issuers]], not both".into(),
                );
            }
            let all: std::time::Duration = tls.acme_issuers().map(|a| tls.ca_timeout(a)).sum();
            if all > tls.order_timeout {
                return at(
                    &["tls".into(), "order_timeout".into()],
                    format!(
                        "is shorter than the issuers' timeouts together ({}): the last CAs would never be tried",
                        humantime::format_duration(all)
                    ),
                );
            }
            let mut labels = std::collections::HashSet::new();
            for (i, acme) in tls.acme_issuers().enumerate() {
                let key = |k: &str| -> Vec<Seg> {
                    match &tls.acme {
                        Some(_) => vec!["tls".into(), "acme".into(), k.into()],
                        None => vec!["tls".into(), "issuers".into(), Seg::Index(i), k.into()],
                    }
                };
                if !acme.directory.starts_with("https://") {
                    return at(&key("directory"), "must be an https:// URL".into());
                }
                if let Some(c) = acme.contact.iter().find(|c| !c.starts_with("mailto:")) {
                    return at(&key("contact"), format!("{c:?} must be a mailto: URI"));
                }
                if let Err(why) = acme.eab() {
                    return at(&key("eab_hmac_key"), why);
                }
                if acme.timeout.is_some_and(|t| t.is_zero()) {
                    return at(&key("timeout"), "must be more than 0s".into());
                }
                let label = acme.label();
                if !labels.insert(label.clone()) {
                    return at(
                        &key("name"),
                        format!("{label:?} names two issuers; give each its own name"),
                    );
                }
            }
        }
        self.validate_peers()?;
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

impl Config {
    fn validate_peers(&self) -> Result<(), (Vec<Seg>, String)> {
        let at = |segs: &[Seg], msg: String| Err((segs.to_vec(), msg));
        if !self.peers.is_empty() && self.peering.is_none() {
            return at(
                &["peers".into()],
                "peers need a [peering] section (this PoP's certificate and the PoP CA)".into(),
            );
        }
        let mut seen = HashSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.pop == self.pop.id {
                return at(
                    &["peers".into(), i.into(), "pop".into()],
                    format!("{} is this PoP's own id", peer.pop),
                );
            }
            if !seen.insert(&peer.pop) {
                return at(
                    &["peers".into(), i.into(), "pop".into()],
                    format!("{} is listed twice", peer.pop),
                );
            }
        }
        if let Some(a) = &self.anycast {
            let key = |k: &str| -> Vec<Seg> { vec!["anycast".into(), k.into()] };
            if a.rise == 0 || a.fall == 0 {
                let k = if a.rise == 0 { "rise" } else { "fall" };
                return at(&key(k), "must be at least 1".into());
            }
            if a.check_interval.is_zero() {
                return at(&key("check_interval"), "must be more than 0".into());
            }
            if a.protocol.is_empty()
                || !a
                    .protocol
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return at(
                    &key("protocol"),
                    "must be a BIRD protocol name (letters, digits, _)".into(),
                );
            }
        }
        if let Some(p) = &self.peering {
            let check = &p.check;
            if check.rise == 0 || check.fall == 0 {
                let k = if check.rise == 0 { "rise" } else { "fall" };
                return at(
                    &["peering".into(), "check".into(), k.into()],
                    "must be at least 1".into(),
                );
            }
            if check.interval.is_zero() {
                return at(
                    &["peering".into(), "check".into(), "interval".into()],
                    "must be more than 0".into(),
                );
            }
        }
        Ok(())
    }
}
