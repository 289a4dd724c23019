//! Per-site HTTPS policy: redirect plain HTTP to HTTPS, HSTS, whether a
//! request may name another site than its connection's SNI (domain
//! fronting), and HTTP/3 advertised (`Alt-Svc`). Defaults come from `[tls]`, config sites may override them.

use crate::config::Config;
use crate::domain::Hostname;
use std::collections::HashMap;

pub struct HttpsPolicy {
    redirect: bool,
    hsts: Option<String>,
    /// Port in redirect targets (omitted when 443).
    port: u16,
    fronting: bool,
    /// `h3=":<port>"; ma=<secs>` when there is a QUIC listener.
    alt_svc: Option<String>,
    sites: HashMap<Hostname, SiteHttps>,
}

/// A config site's overrides.
struct SiteHttps {
    redirect: Option<bool>,
    hsts: Option<String>,
    fronting: Option<bool>,
    http3: Option<bool>,
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
            alt_svc: tls.quic_listen().first().map(|a| {
                let max_age = tls.alt_svc_max_age.as_secs();
                format!("h3=\":{}\"; ma={max_age}", a.port())
            }),
            sites: config
                .sites
                .iter()
                .map(|s| {
                    let site = SiteHttps {
                        redirect: s.https_redirect,
                        hsts: s.hsts.clone(),
                        fronting: s.allow_fronting,
                        http3: s.http3,
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

    /// The `Alt-Svc` value advertising HTTP/3 for `host`, if it has it.
    pub fn alt_svc(&self, host: &Hostname) -> Option<&str> {
        let on = self.sites.get(host).and_then(|s| s.http3).unwrap_or(true);
        self.alt_svc.as_deref().filter(|_| on)
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
