//! The node's own sections: `[server]`, `[listen]`, `[admin]`, `[proxy]`, `[log]`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Client connections held at once, HTTP and HTTPS together; never more
    /// than half the descriptors left after a reserve for the admin
    /// listener, health checks, origins and stores (the soft `nofile`
    /// limit is raised to the hard one at start).
    pub max_connections: usize,
    /// Client connections from one address (0: no limit).
    pub max_connections_per_client: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads: 2,
            work_stealing: false,
            drain_timeout: Duration::from_secs(30),
            upgrade_sock: PathBuf::from("/tmp/edgepop_upgrade.sock"),
            pid_file: PathBuf::from("/tmp/edgepop.pid"),
            max_connections: 100_000,
            max_connections_per_client: 1024,
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
    /// Names the admin listener answers to besides IP literals and
    /// `localhost`: any other Host is refused, so a web page on a rebound
    /// DNS name cannot read `/status` through a browser.
    pub hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9180)),
            hosts: Vec::new(),
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
    /// How long a client connection may sit idle between requests
    /// (HTTP/1.1 keep-alive, HTTP/2) before it is closed (nginx: 75 s).
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Requests served on one HTTP/1.1 connection before it is closed, so
    /// per-connection memory is given back (nginx: 1000).
    pub keepalive_requests: u32,
    /// Largest HTTP/1 request head (request line and headers); larger is
    /// answered 431 (nginx: 1 KiB buffer + 4 × 8 KiB large buffers).
    pub max_head_bytes: usize,
    /// Time from a request head's first byte (a new connection's accept) to
    /// its end; slower is answered 408 (nginx `client_header_timeout`: 60 s).
    #[serde(with = "humantime_serde")]
    pub head_timeout: Duration,
    /// Longest wait for the next piece of a request body (HTTP/1; nginx
    /// `client_body_timeout`: 60 s). A body still unfinished when the
    /// origin's `read_timeout` runs out is late too: either way 408, the
    /// client's fault, never counted against the origin.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// A body trickled in small pieces must keep this average: it is due
    /// `body_timeout` after the head plus one second per this many bytes
    /// received (Apache `mod_reqtimeout`: body=20, MinRate=500). 0: no
    /// rate, only the pause limit.
    pub body_min_rate: u64,
    /// Answer what the edge answers itself (a page from the cache, a
    /// refusal), over HTTP/1 and HTTP/2, and small GETs for an origin over
    /// HTTP/1, on edgepop's own path before pingora-proxy builds its
    /// request future; the same rules and bytes
    /// either way (docs/OPERATIONS.md "The fast path"). false: every
    /// request goes through Pingora's proxy phases.
    pub fast_path: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_tries: 3,
            retry_after: 5,
            keepalive_timeout: Duration::from_secs(60),
            keepalive_requests: 1000,
            max_head_bytes: 32 * 1024,
            head_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(20),
            body_min_rate: 500,
            fast_path: true,
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
