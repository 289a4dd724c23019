//! Test harness: real origin servers (hyper) and the real `edgepop` binary.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
pub mod cdc;
pub mod certs;
pub mod h3;
pub mod pebble;
pub mod peering;
pub mod scenario;
pub mod stream;

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A port free now, for a server a test starts later. Not an ephemeral
/// one (Linux gives those out from 32768 to outgoing connections and to
/// `bind(0)`, and one test's CA or client could get another test's port
/// between the pick and the bind): a counter over 20000..32000, its start
/// drawn from the process id, so no two calls in this process (tests of one
/// binary run in parallel) get the same port.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let start = std::process::id() as usize * 997;
    for _ in 0..12_000 {
        let port = 20_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if StdListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port in 20000..32000");
}

/// An origin server that answers `origin <port>` after `delay`, counts the
/// requests it received and keeps the headers of the last one.
pub struct Origin {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Requests being answered now, and the most there ever were at once.
    pub busy: Arc<(AtomicUsize, AtomicUsize)>,
    pub last_headers: Arc<Mutex<Option<HeaderMap>>>,
    delay: Duration,
    task: Option<JoinHandle<()>>,
}

impl Origin {
    /// Binds port 0 and keeps the listener: no window in which a parallel
    /// test could take the port (as with `free_port`).
    pub async fn start(delay: Duration) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let mut origin = Origin {
            addr: listener.local_addr().unwrap(),
            hits: Arc::new(AtomicUsize::new(0)),
            busy: Arc::default(),
            last_headers: Arc::new(Mutex::new(None)),
            delay,
            task: None,
        };
        origin.serve(listener);
        origin
    }

    /// Serves again on the same address (after `kill`).
    async fn rebind(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind origin");
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let (hits, last, delay, port) = (
            self.hits.clone(),
            self.last_headers.clone(),
            self.delay,
            self.addr.port(),
        );
        let busy = self.busy.clone();
        self.task = Some(tokio::spawn(async move {
            // Connections live in the set: aborting the server closes them all.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (hits, last, busy) = (hits.clone(), last.clone(), busy.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (hits, last, busy) = (hits.clone(), last.clone(), busy.clone());
                        async move {
                            let health = req.uri().path() == "/health";
                            if !health {
                                hits.fetch_add(1, Ordering::Relaxed);
                                let now = busy.0.fetch_add(1, Ordering::SeqCst) + 1;
                                busy.1.fetch_max(now, Ordering::SeqCst);
                                *last.lock().unwrap() = Some(req.headers().clone());
                                // As an application does: the whole body, then the answer.
                                let _ = req.into_body().collect().await;
                                tokio::time::sleep(delay).await;
                                busy.0.fetch_sub(1, Ordering::SeqCst);
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                                "origin {port}"
                            )))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }));
    }

    /// Kills the server: listener and every open connection go away.
    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.rebind().await;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// The most requests this origin was answering at once.
    pub fn max_busy(&self) -> usize {
        self.busy.1.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgepop")
}

/// A running `edgepop run`, with its config, logs and ports.
pub struct Edge {
    pub child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub pop: String,
    /// No access log, warnings only (`start_quiet`, for benches).
    quiet: bool,
}

impl Edge {
    /// `body` is the config past `[pop]`, `[listen]`, `[admin]`, `[server]`
    /// (pools, sites, proxy...), which the harness fills in.
    pub async fn start(body: &str) -> Edge {
        Edge::prepare(body).launch(false).await
    }

    /// `start`, with the replica made first (`edgepop replica init`).
    pub async fn start_initialised(body: &str) -> Edge {
        let edge = Edge::prepare(body);
        edge.command(&["replica", "init"]);
        edge.launch(false).await
    }

    /// `start` with no access log and only warnings logged: what a bench
    /// measures is the edge, not its logging.
    pub async fn start_quiet(body: &str) -> Edge {
        Edge::configure(body, true).launch(false).await
    }

    /// Writes the config without starting the process.
    pub fn prepare(body: &str) -> Edge {
        Edge::configure(body, false)
    }

    fn configure(body: &str, quiet: bool) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let edge = Edge {
            child: spawn_placeholder(),
            http,
            admin,
            dir,
            pop: "tst1".into(),
            quiet,
        };
        edge.write_config(body);
        edge
    }

    /// Runs an `edgepop` subcommand on this edge's config.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .output()
            .unwrap();
        succeeded(out, format_args!("{args:?}"))
    }

    /// Fills this edge's replica with the demo store (conf/demo: pages
    /// for store 1, which `site()` names), before it starts.
    pub fn load_demo(&self) {
        self.command(&["replica", "init"]);
        self.command(&["replica", "load", "conf/demo/snapshot.jsonl"]);
    }

    /// Kills the process at once (SIGKILL) and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of one Prometheus sample, e.g. `edgepop_sync_events_total{result="stale"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("edgepop.toml")
    }

    pub fn write_config(&self, body: &str) {
        let d = self.dir.path().display();
        let (access, level) = if self.quiet {
            ("off".to_string(), "warn")
        } else {
            (format!("{d}/access.log"), "info")
        };
        let conf = format!(
            "[pop]\nid = \"{pop}\"\n\n[listen]\nhttp = [\"{http}\"]\n\n[admin]\nlisten = \"{admin}\"\n\n\
             [server]\nthreads = 2\ndrain_timeout = \"10s\"\nupgrade_sock = \"{d}/upgrade.sock\"\npid_file = \"{d}/edgepop.pid\"\n\n\
             [log]\naccess = \"{access}\"\nlevel = \"{level}\"\n\n{body}\n",
            pop = self.pop,
            http = self.http,
            admin = self.admin,
        );
        std::fs::write(self.config_path(), conf).unwrap();
    }

    /// Starts the binary on this edge's config (`upgrade`: take the sockets
    /// of a running one) and waits for its admin listener.
    pub async fn launch(mut self, upgrade: bool) -> Edge {
        let mut cmd = Command::new(bin());
        cmd.arg("run").arg("--config").arg(self.config_path());
        if upgrade {
            cmd.arg("--upgrade");
        }
        let stderr = std::fs::File::create(self.dir.path().join(if upgrade {
            "stderr.upgrade.log"
        } else {
            "stderr.log"
        }))
        .unwrap();
        self.child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn edgepop");
        if !upgrade {
            self.wait_admin().await;
            self.wait_listeners().await;
        }
        self
    }

    /// Waits until the HTTPS listeners the config names accept: the admin
    /// listener may answer first (Pingora starts its services together;
    /// tests that handshake at once met a refused connect under load).
    pub async fn wait_listeners(&self) {
        let conf = std::fs::read_to_string(self.config_path()).unwrap();
        let conf: toml::Value = toml::from_str(&conf).unwrap();
        let https = conf
            .get("tls")
            .and_then(|t| t.get("listen"))
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default();
        for addr in https.iter().filter_map(|a| a.as_str()) {
            let addr: SocketAddr = addr.parse().unwrap();
            let up = eventually(Duration::from_secs(10), || async move {
                tokio::net::TcpStream::connect(addr).await.is_ok()
            })
            .await;
            assert!(up, "HTTPS never listened on {addr}:\n{}", self.stderr());
        }
    }

    pub async fn wait_admin(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = client()
                .get(format!("http://{}/healthz", self.admin))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("edgepop admin never came up; stderr:\n{}", self.stderr());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn get(&self, host: &str, path: &str) -> reqwest::RequestBuilder {
        client().get(self.url(path)).header("host", host)
    }

    pub async fn status(&self) -> serde_json::Value {
        client()
            .get(format!("http://{}/status", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = client()
            .get(format!("http://{}{}", self.admin, path))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

fn spawn_placeholder() -> Child {
    Command::new("true").spawn().unwrap()
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A pool section for the given origins, with fast health checks.
pub fn pool(tier: &str, servers: &[(SocketAddr, u32)]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|(a, w)| format!("{{ addr = \"{a}\", weight = {w} }}"))
        .collect();
    format!(
        "[pools.{tier}]\nservers = [{}]\nhealth = {{ path = \"/health\", interval = \"200ms\", timeout = \"500ms\", rise = 1, fall = 1 }}\npassive = {{ max_fails = 1, eject_for = \"2s\" }}\n",
        list.join(", ")
    )
}

/// A public pool that no request reaches (the discard port, no health
/// checks): for benches whose pages all come from the replica.
pub fn idle_pool() -> String {
    "[pools.public]\nservers = [{ addr = \"127.0.0.1:9\" }]\nhealth = { enabled = false }\n".into()
}

pub fn site(host: &str, tier: &str, status: &str) -> String {
    format!("[[sites]]\nhostname = \"{host}\"\nstore_id = 1\ntier = \"{tier}\"\nstatus = \"{status}\"\n")
}

/// psql as `postgres` on database `db` of the PostgreSQL on
/// 127.0.0.1:`port`, stopping at the first error; the caller adds the SQL.
pub fn psql_command(port: u16, db: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", db, "-v", "ON_ERROR_STOP=1"]);
    cmd
}

/// Runs SQL (psql, stopping at the first error) in database `db` of the
/// PostgreSQL on 127.0.0.1:`port`; returns what it printed, tuples only.
pub fn psql(port: u16, db: &str, sql: &str) -> String {
    let out = psql_command(port, db)
        .args(["-qtAc", sql])
        .output()
        .expect("psql");
    let out = succeeded(out, sql);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The rows of `query` as JSON objects (`json_agg`), `[]` when none.
pub fn rows(port: u16, db: &str, query: &str) -> Vec<serde_json::Value> {
    let text = psql(
        port,
        db,
        &format!("SELECT coalesce(json_agg(r), '[]') FROM ({query}) r"),
    );
    serde_json::from_str(&text).expect("json_agg output")
}

/// `out`, once asserted to be a success (the message: `what` and stderr).
pub fn succeeded(out: Output, what: impl std::fmt::Display) -> Output {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `cond` until true or the limit passes.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Runs `workers` loops of GETs against `host` for `dur`; returns
/// (ok, failed, statuses of failures).
pub async fn load(
    edge_url: String,
    host: &'static str,
    workers: usize,
    dur: Duration,
) -> (usize, Vec<String>) {
    let client = client();
    let deadline = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, url) = (client.clone(), edge_url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while Instant::now() < deadline {
                match client.get(&url).header("host", host).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok += 1
                    }
                    Ok(r) => failed.push(format!(
                        "status {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => failed.push(format!("error: {e}")),
                }
            }
            (ok, failed)
        }));
    }
    let mut ok = 0;
    let mut failed = Vec::new();
    for t in tasks {
        let (o, f) = t.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    (ok, failed)
}

/// A self-signed ECDSA P-256 leaf certificate (not a CA: webpki refuses a CA
/// as end entity) for `san` (e.g. `DNS:a.test,IP:127.0.0.1`), written to
/// `dir`; returns (certificate, key) paths.
pub fn self_signed(dir: &std::path::Path, cn: &str, san: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            &format!("subjectAltName={san}"),
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    succeeded(out, "openssl");
    (cert, key)
}

/// An HTTPS client trusting only `root` (PEM), with `host` resolving to `addr`.
pub fn https_client(
    root: &std::path::Path,
    host: &str,
    addr: SocketAddr,
    http1: bool,
) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&std::fs::read(root).unwrap()).unwrap();
    let b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .resolve(host, addr)
        .no_proxy()
        .timeout(Duration::from_secs(20));
    if http1 { b.http1_only() } else { b }.build().unwrap()
}

/// A TLS client trusting only `root` (PEM), offering `alpn`.
pub fn tls_connector(root: &std::path::Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(root).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Handshakes with `addr` for `host`, verifying against `root` (PEM), and
/// returns the leaf certificate the server sent.
pub async fn peer_cert(
    addr: SocketAddr,
    host: &str,
    root: &std::path::Path,
) -> Result<Vec<u8>, String> {
    certs::leaf(&tls_connector(root, &[]), addr, host).await
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// An HTTP/2 connection over TLS to `addr` for `host`, trusting `root`.
pub async fn h2_connect(
    addr: SocketAddr,
    host: &str,
    root: &std::path::Path,
) -> h2::client::SendRequest<bytes::Bytes> {
    let connector = tls_connector(root, &[b"h2"]);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    send
}
