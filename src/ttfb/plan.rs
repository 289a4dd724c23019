//! What a run is to do: targets, model, limits, outputs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How often at most the open model's pacer wakes (it then releases
/// every slot due): oha's pace, set by tokio's timer; here a thread's
/// sleep, so a tick is as long as asked and no longer.
pub const TICK: Duration = Duration::from_millis(1);

/// One thing to load: a URL, sent to `addr` when given (a PoP's unicast
/// address) instead of where its host resolves.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: http::Uri,
    pub addr: Option<SocketAddr>,
}

impl Target {
    /// How the target is shown: `URL` or `URL @ ADDR`.
    pub fn name(&self) -> String {
        match self.addr {
            Some(a) => format!("{} @ {a}", self.url),
            None => self.url.to_string(),
        }
    }

    pub fn https(&self) -> bool {
        self.url.scheme_str() == Some("https")
    }

    pub fn host(&self) -> &str {
        self.url.host().unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.url
            .port_u16()
            .unwrap_or(if self.https() { 443 } else { 80 })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Model {
    /// Each connection sends its next request when the last one is done.
    Closed,
    /// Requests per second per target, spread over the connections; a
    /// request's latency counts from when it should have been sent.
    Open { rate: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 on `http://`; over TLS whatever ALPN picks (h2 first).
    Auto,
    Http1,
    /// h2 over TLS; h2c with prior knowledge on `http://`.
    Http2,
    /// h3 over QUIC (`https://` only; UDP to the URL's port). The QUIC
    /// handshake is the `tls` phase; `connect` is 0 (UDP connects nothing).
    Http3,
}

/// When a run stops: after a time, or after so many requests per target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    After(Duration),
    Requests(u64),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub targets: Vec<Target>,
    pub model: Model,
    /// Connections per target.
    pub connections: usize,
    /// Worker threads (each with its own runtime and connections).
    pub threads: usize,
    pub stop: Stop,
    pub protocol: Protocol,
    pub method: http::Method,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Per request, from its start (connecting included).
    pub timeout: Duration,
    /// Open a new connection for every request.
    pub new_connections: bool,
    /// First-handshake mode: each request for a fresh name from this
    /// pattern (`{n}` → 1, 2, …), on a new connection (SNI and Host).
    pub names: Option<String>,
    /// PEM roots to trust for HTTPS (else the system's).
    pub ca: Option<PathBuf>,
    pub insecure: bool,
    /// One line per request, to this file.
    pub csv: Option<PathBuf>,
    pub progress: bool,
}

impl Plan {
    /// The name of the `n`th request in first-handshake mode.
    pub fn fresh_name(pattern: &str, n: u64) -> String {
        pattern.replace("{n}", &n.to_string())
    }
}
