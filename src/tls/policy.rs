//! Per-site HTTPS policy: redirect plain HTTP to HTTPS, HSTS, and whether a
//! request may name another site than its connection's SNI (domain
//! fronting). Defaults come from `[tls]`, config sites may override them.

use crate::config::Config;
use crate::domain::Hostname;
use std::collections::HashMap;

pub struct HttpsPolicy {
    redirect: bool,
    hsts: Option<String>,
    /// Port in redirect targets (omitted when 443).
    port: u16,
    fronting: bool,
    sites: HashMap<Hostname, SiteHttps>,
}

/// A config site's overrides.
struct SiteHttps {
    redirect: Option<bool>,
    hsts: Option<String>,
    fronting: Option<bool>,
}

impl HttpsPolicy {
    /// `None` when HTTPS is not configured.
    pub fn from_config(config: &Config) -> Option<Self> {
        let tls = config.tls.as_ref()?;
        Some(HttpsPolicy {
            redirect: tls.redirect_http,
            hsts: tls.hsts.clone(),
            port: tls.listen.first().map_or(443, |a| a.port()),
            fronting: tls.allow_fronting,
            sites: config
                .sites
                .iter()
                .map(|s| {
                    let site = SiteHttps {
                        redirect: s.https_redirect,
                        hsts: s.hsts.clone(),
                        fronting: s.allow_fronting,
                    };
                    (s.hostname.clone(), site)
                })
                .collect(),
        })
    }

    /// Where a plain-HTTP request for `host` should go instead, if anywhere.
    pub fn redirect(&self, host: &Hostname, path_and_query: &str) -> Option<String> {
        let on = self
            .sites
            .get(host)
            .and_then(|s| s.redirect)
            .unwrap_or(self.redirect);
        on.then(|| match self.port {
            443 => format!("https://{host}{path_and_query}"),
            port => format!("https://{host}:{port}{path_and_query}"),
        })
    }

    pub fn hsts(&self, host: &Hostname) -> Option<&str> {
        let value = match self.sites.get(host).and_then(|s| s.hsts.as_deref()) {
            Some(site) => Some(site),
            None => self.hsts.as_deref(),
        };
        value.filter(|v| !v.is_empty())
    }

    /// Whether `host` may be asked for on a connection opened (SNI) for
    /// another name.
    pub fn fronting_allowed(&self, host: &Hostname) -> bool {
        self.sites
            .get(host)
            .and_then(|s| s.fronting)
            .unwrap_or(self.fronting)
    }
}
