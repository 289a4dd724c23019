//! Certificates at scale (issue 26): N certificates stored for N active
//! domains (the embedded replica). For edgepop with its file store, then
//! with its PostgreSQL store, and for Caddy with the same certificates in
//! its file storage, on demand (loaded by name, as edgepop) and managed
//! (every name listed: Caddy loads them all at start, bounded by
//! CADDY_WAIT): the time from exec to the first handshake of a stored name
//! that returns its stored certificate, the RSS then, and the RSS after
//! handshakes for K other stored names (each loaded cold) → memory per
//! held certificate.
//!
//!   cargo bench --bench certs -- [N=100000] [K=10000]
//!
//! EDGEPOP_BIN=path measures that binary (default: the one cargo built).
//! CADDY=path (default `caddy`, Debian's 2.6: `apt-get install caddy`;
//! absent: edgepop only). CADDY_WAIT=seconds (default 600). KEEP=1 keeps
//! the scratch folder. Each leaf has its own P-256 key; its chain is leaf +
//! intermediate (tests/common/certs.rs). The files were just written: the
//! page cache is warm for every server alike.

#[path = "../tests/common/mod.rs"]
mod common;

use common::certs::{self, Batch};
use common::stream::Pg;
use common::{free_port, rss_kib};
use futures::StreamExt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Handshakes in flight while K names are loaded.
const AT_ONCE: usize = 8;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .nth(i)
        .unwrap_or(default)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// utime + stime of `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

struct Server {
    child: Child,
    started: Instant,
    https: SocketAddr,
    err: PathBuf,
}

impl Server {
    fn spawn(mut cmd: Command, https: SocketAddr, err: PathBuf) -> Server {
        let stderr = std::fs::File::create(&err).unwrap();
        cmd.stdout(Stdio::null()).stderr(stderr);
        let started = Instant::now();
        let child = cmd.spawn().expect("spawn server");
        Server {
            child,
            started,
            https,
            err,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Handshakes for `cert`'s name until one returns it; the time since
    /// exec, None after `limit`.
    async fn first(
        &mut self,
        tls: &tokio_rustls::TlsConnector,
        cert: &certs::Minted,
        limit: Duration,
    ) -> Option<Duration> {
        while self.started.elapsed() < limit {
            match certs::leaf(tls, self.https, &cert.name).await {
                Ok(der) if der == cert.leaf_der => return Some(self.started.elapsed()),
                Ok(_) => panic!("{}: another certificate than the stored one", cert.name),
                Err(_) => {
                    if let Some(s) = self.child.try_wait().unwrap() {
                        panic!("server exited ({s}): {}", self.stderr());
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await
                }
            }
        }
        None
    }

    fn stderr(&self) -> String {
        let text = std::fs::read_to_string(&self.err).unwrap_or_default();
        text.chars().take(4000).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one server measured.
struct Measured {
    label: String,
    first: Duration,
    cpu_first: f64,
    rss_first: u64,
    /// CPU and RSS `QUIET` after exec, with that one name held: start-up
    /// work done in the background (store walks) included.
    cpu_quiet: f64,
    rss_quiet: u64,
    /// edgepop: RSS `SETTLE` after a plain-HTTP request for each of the K
    /// names (their domains looked up and cached, no certificate): what the
    /// names cost apart from their certificates.
    rss_domains: Option<u64>,
    /// Handshakes for K other names, each loaded cold: how long they took.
    k: usize,
    cold: Duration,
    /// RSS 2 s after the K handshakes, and `SETTLE` after them (freed
    /// memory handed back: jemalloc's decay is 10 s, Go's scavenger).
    rss_after: u64,
    rss_settled: u64,
}

/// When a server's start-up is taken as done (`Measured::cpu_quiet`).
const QUIET: Duration = Duration::from_secs(5);
const SETTLE: Duration = Duration::from_secs(20);

impl Measured {
    /// Past what the names' domains cost (when measured apart).
    fn per_held_bytes(&self) -> f64 {
        let base = self.rss_domains.unwrap_or(self.rss_quiet);
        (self.rss_settled as f64 - base as f64) * 1024.0 / self.k as f64
    }

    fn print(&self) {
        println!(
            "{}: first handshake {:.3} s after exec (CPU {:.2} s), RSS {:.1} MiB; at {QUIET:?}: CPU {:.2} s, RSS {:.1} MiB",
            self.label,
            self.first.as_secs_f64(),
            self.cpu_first,
            mib(self.rss_first),
            self.cpu_quiet,
            mib(self.rss_quiet),
        );
        println!(
            "  {} more names in {:.2} s ({:.0}/s, {AT_ONCE} at once): RSS {:.1} MiB 2 s later, {:.1} MiB {SETTLE:?} later: {:.0} bytes per held certificate",
            self.k,
            self.cold.as_secs_f64(),
            self.k as f64 / self.cold.as_secs_f64(),
            mib(self.rss_after),
            mib(self.rss_settled),
            self.per_held_bytes(),
        );
        if let Some(d) = self.rss_domains {
            println!(
                "  (the {} names' domains alone, by plain HTTP first: RSS {:.1} MiB, {:.0} bytes a name; with their certificates {:.0} bytes a name)",
                self.k,
                mib(d),
                (d as f64 - self.rss_quiet as f64) * 1024.0 / self.k as f64,
                (self.rss_settled as f64 - self.rss_quiet as f64) * 1024.0 / self.k as f64,
            );
        }
    }
}

/// Handshakes for each of `picks` (`AT_ONCE` at a time), each checked
/// against its stored certificate; the time they took.
async fn handshake_all(
    tls: &tokio_rustls::TlsConnector,
    https: SocketAddr,
    batch: &Batch,
    picks: &[usize],
) -> Duration {
    let started = Instant::now();
    let failed: Vec<String> = futures::stream::iter(picks.iter().copied())
        .map(|i| async move {
            let c = &batch.certs[i];
            match certs::leaf(tls, https, &c.name).await {
                Ok(der) if der == c.leaf_der => None,
                Ok(_) => Some(format!("{}: another certificate", c.name)),
                Err(e) => Some(format!("{}: {e}", c.name)),
            }
        })
        .buffer_unordered(AT_ONCE)
        .filter_map(|r| async { r })
        .collect()
        .await;
    let took = started.elapsed();
    assert!(
        failed.is_empty(),
        "{} of {} handshakes failed, e.g. {}",
        failed.len(),
        picks.len(),
        failed[0]
    );
    took
}

/// A plain-HTTP GET for each of `picks` (`AT_ONCE` at a time): the
/// edge looks each domain up; no page is stored, so the answer is an error
/// from the unreachable origin, which does not matter here.
async fn plain_http(http: SocketAddr, batch: &Batch, picks: &[usize]) {
    let client = common::client();
    futures::stream::iter(picks.iter().copied())
        .for_each_concurrent(AT_ONCE, |i| {
            let request = client
                .get(format!("http://{http}/"))
                .header("host", &batch.certs[i].name);
            async move {
                let _ = request.send().await.map(|r| r.status());
            }
        })
        .await;
}

/// What every server is asked: the first name, then the others.
#[derive(Clone, Copy)]
struct Plan<'a> {
    tls: &'a tokio_rustls::TlsConnector,
    batch: &'a Batch,
    first: usize,
    others: &'a [usize],
}

/// First handshake, then K more names: the common part of every run.
async fn measure(
    label: &str,
    mut server: Server,
    plan: &Plan<'_>,
    http: Option<SocketAddr>,
) -> (Measured, Server) {
    let Plan {
        tls,
        batch,
        first,
        others,
    } = *plan;
    let limit = Duration::from_secs(120);
    let t = server
        .first(tls, &batch.certs[first], limit)
        .await
        .unwrap_or_else(|| panic!("{label}: no handshake in {limit:?}: {}", server.stderr()));
    let (cpu_first, rss_first) = (cpu_seconds(server.pid()), rss_kib(server.pid()));
    tokio::time::sleep(QUIET.saturating_sub(server.started.elapsed())).await;
    let (cpu_quiet, rss_quiet) = (cpu_seconds(server.pid()), rss_kib(server.pid()));
    let mut rss_domains = None;
    if let Some(http) = http {
        plain_http(http, batch, others).await;
        tokio::time::sleep(SETTLE).await;
        rss_domains = Some(rss_kib(server.pid()));
    }
    let cold = handshake_all(tls, server.https, batch, others).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(server.pid());
    tokio::time::sleep(SETTLE - Duration::from_secs(2)).await;
    let m = Measured {
        label: label.into(),
        first: t,
        cpu_first,
        rss_first,
        cpu_quiet,
        rss_quiet,
        rss_domains,
        k: others.len(),
        cold,
        rss_after,
        rss_settled: rss_kib(server.pid()),
    };
    m.print();
    (m, server)
}

async fn timed_get(url: &str) -> (Duration, String) {
    let started = Instant::now();
    let body = common::client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (started.elapsed(), body)
}

fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// After the run: what an operator's scrape and /status cost with the
/// whole store, and that nothing was ordered.
async fn edgepop_after(admin: SocketAddr, held_expected: usize) {
    let (took_status, status) = timed_get(&format!("http://{admin}/status")).await;
    let (took_metrics, metrics) = timed_get(&format!("http://{admin}/metrics")).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let held = sample(&metrics, "edgepop_tls_certificates_held");
    let issued = sample(&metrics, "edgepop_tls_issuance_total{result=\"issued\"}");
    let from_store = sample(
        &metrics,
        "edgepop_tls_issuance_total{result=\"from_store\"}",
    );
    println!(
        "  /status {:.1} ms (stored: {}), /metrics {:.1} ms; held {held}, from_store {from_store}, issued {issued}",
        took_status.as_secs_f64() * 1000.0,
        status["certificates"]["stored"],
        took_metrics.as_secs_f64() * 1000.0,
    );
    assert_eq!(held as usize, held_expected, "held certificates");
    assert_eq!(issued, 0.0, "nothing ordered");
}

fn edgepop_config(
    w: &Path,
    label: &str,
    https: SocketAddr,
    admin: SocketAddr,
    http: SocketAddr,
    store: &str,
) -> PathBuf {
    let path = w.join(format!("{label}.toml"));
    std::fs::write(
        &path,
        format!(
            "[pop]\nid = \"bench1\"\n[listen]\nhttp = [\"{http}\"]\n[admin]\nlisten = \"{admin}\"\n\
             [server]\nthreads = 2\nupgrade_sock = \"{w}/{label}.sock\"\npid_file = \"{w}/{label}.pid\"\n\
             [log]\naccess = \"off\"\nlevel = \"warn\"\n[replica]\npath = \"{w}/replica.redb\"\n\
             [pools.public]\nservers = [{{ addr = \"127.0.0.1:9\" }}]\nhealth = {{ enabled = false }}\n\
             [tls]\nlisten = [\"{https}\"]\ndir = \"{w}/tls\"\nissue_timeout = \"60s\"\n{store}\n",
            w = w.display()
        ),
    )
    .unwrap();
    path
}

fn caddy_config(
    w: &Path,
    https: SocketAddr,
    capacity: usize,
    managed: Option<&[String]>,
) -> PathBuf {
    let mut policy = serde_json::json!({ "issuers": [{ "module": "internal" }] });
    let mut tls = serde_json::json!({ "cache": { "capacity": capacity } });
    match managed {
        Some(names) => tls["certificates"] = serde_json::json!({ "automate": names }),
        None => policy["on_demand"] = true.into(),
    }
    tls["automation"] = serde_json::json!({ "policies": [policy] });
    let config = serde_json::json!({
        "admin": { "disabled": true },
        "logging": { "logs": { "default": { "level": "ERROR" } } },
        "storage": { "module": "file_system", "root": w.join("caddy") },
        "apps": {
            "http": { "servers": { "bench": {
                "listen": [https.to_string()],
                "routes": [{ "handle": [{ "handler": "static_response", "body": "ok" }] }],
                "tls_connection_policies": [{}],
                "automatic_https": { "disable": true },
            } } },
            "tls": tls,
            "pki": { "certificate_authorities": { "local": { "install_trust": false } } },
        },
    });
    let path = w.join(if managed.is_some() {
        "caddy-managed.json"
    } else {
        "caddy-on-demand.json"
    });
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn caddy_command(caddy: &str, w: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(caddy);
    cmd.args(["run", "--config"])
        .arg(config)
        .env("HOME", w)
        .env("XDG_DATA_HOME", w.join("xdg-data"))
        .env("XDG_CONFIG_HOME", w.join("xdg-config"));
    cmd
}

/// The same walk as the file store's `count` (/status) and
/// `changed_within` (every renewal check): read_dir, then a stat each.
fn walk_certs(dir: &Path) -> (usize, Duration, Duration) {
    let started = Instant::now();
    let n = std::fs::read_dir(dir).unwrap().count();
    let count = started.elapsed();
    let started = Instant::now();
    let since = std::time::SystemTime::now() - Duration::from_secs(125);
    let changed = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .count();
    let walk = started.elapsed();
    assert!(changed <= n);
    (n, count, walk)
}

/// The PostgreSQL store's `count` and `changed_within` queries, timed.
async fn store_queries(pg: &Pg) {
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let timed = |sql: &'static str| {
        let client = &client;
        async move {
            let started = Instant::now();
            let rows = client.query(sql, &[]).await.unwrap();
            (rows.len(), started.elapsed())
        }
    };
    let (_, count) = timed("SELECT count(*) FROM edgepop_tls_certificates").await;
    let (changed, window) = timed(
        "SELECT name FROM edgepop_tls_certificates WHERE updated_at > now() - make_interval(secs => 125)",
    )
    .await;
    println!(
        "  the store's count(*) {:.1} ms; changed_within(125 s) {:.1} ms ({changed} rows: all were just written)",
        count.as_secs_f64() * 1000.0,
        window.as_secs_f64() * 1000.0,
    );
}

#[tokio::main]
async fn main() {
    let n = arg(0, 100_000);
    let k = arg(1, 10_000).min(n - 1);
    let edgepop = std::env::var("EDGEPOP_BIN").unwrap_or_else(|_| common::bin().to_string());
    let caddy = std::env::var("CADDY").unwrap_or_else(|_| "caddy".into());
    let caddy_wait = Duration::from_secs(
        std::env::var("CADDY_WAIT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let scratch = tempfile::tempdir().unwrap();
    let w = scratch.path().to_path_buf();
    println!(
        "{n} certificates, {k} more names loaded after the first; edgepop {edgepop}; scratch {}",
        w.display()
    );

    let names = certs::names(n);
    let started = Instant::now();
    let batch = certs::mint(&names);
    println!(
        "minted in {:.1} s (each leaf its own P-256 key; chain {} bytes PEM, key {} bytes)",
        started.elapsed().as_secs_f64(),
        batch.certs[0].chain_pem.len(),
        batch.certs[0].key_pem.len()
    );
    // The first name: one in the middle; the K others spread over the rest.
    let first = n / 2 + 7;
    let step = (n / k).max(1);
    let others: Vec<usize> = (0..n)
        .step_by(step)
        .filter(|&i| i != first)
        .take(k)
        .collect();
    let tls = certs::connector(&batch.root_pem);
    let plan = Plan {
        tls: &tls,
        batch: &batch,
        first,
        others: &others,
    };

    let started = Instant::now();
    certs::write_domains(&w.join("domains.jsonl"), &names);
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file_conf = edgepop_config(&w, "file", https, admin, http, "");
    let out = Command::new(&edgepop)
        .args(["replica", "load"])
        .arg(w.join("domains.jsonl"))
        .arg("--config")
        .arg(&file_conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{n} active domains in the embedded replica in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut results = Vec::new();

    // edgepop, file store.
    let started = Instant::now();
    certs::write_file_store(&w.join("tls"), &batch.certs);
    println!(
        "file store written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (n_files, count, walk) = walk_certs(&w.join("tls/certs"));
    println!(
        "  a read_dir of the {n_files} files (count) {:.1} ms; read_dir + stat each (changed_within) {:.1} ms",
        count.as_secs_f64() * 1000.0,
        walk.as_secs_f64() * 1000.0
    );
    let mut cmd = Command::new(&edgepop);
    cmd.args(["run", "--config"]).arg(&file_conf);
    let server = Server::spawn(cmd, https, w.join("file.err"));
    let (m, server) = measure("edgepop, file store", server, &plan, Some(http)).await;
    edgepop_after(admin, k + 1).await;
    drop(server);
    results.push(m);

    // edgepop, PostgreSQL store (the same replica).
    let pg = Pg::create();
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let store = format!("[tls.store]\npostgres = \"{}\"\n", pg.url());
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let pg_conf = edgepop_config(&w, "postgres", https, admin, http, &store);
    certs::touch_store(&edgepop, &pg_conf, "nothing.certs.test");
    let started = Instant::now();
    certs::copy_to_postgres(&pg.name, &w, &batch.certs);
    pg.sql("VACUUM ANALYZE edgepop_tls_certificates");
    println!(
        "PostgreSQL store filled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store_queries(&pg).await;
    let mut cmd = Command::new(&edgepop);
    cmd.args(["run", "--config"]).arg(&pg_conf);
    let server = Server::spawn(cmd, https, w.join("postgres.err"));
    let (m, server) = measure("edgepop, PostgreSQL store", server, &plan, Some(http)).await;
    edgepop_after(admin, k + 1).await;
    drop(server);
    results.push(m);

    if Command::new(&caddy).arg("version").output().is_err() {
        println!("no {caddy}: Caddy not measured");
        return finish(scratch, &results, None);
    }
    let version = Command::new(&caddy).arg("version").output().unwrap();
    println!("Caddy {}", String::from_utf8_lossy(&version.stdout).trim());
    let started = Instant::now();
    certs::write_caddy_storage(&w.join("caddy"), "local", &batch.certs);
    println!(
        "Caddy's storage written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Caddy on demand: loaded from storage by name at the handshake.
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let conf = caddy_config(&w, https, 2 * n, None);
    let server = Server::spawn(
        caddy_command(&caddy, &w, &conf),
        https,
        w.join("caddy-on-demand.err"),
    );
    let (m, server) = measure("Caddy, on demand", server, &plan, None).await;
    drop(server);
    results.push(m);

    // Caddy managed: every name listed, all loaded at start (in list order).
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let conf = caddy_config(&w, https, 2 * n, Some(&names));
    let mut server = Server::spawn(
        caddy_command(&caddy, &w, &conf),
        https,
        w.join("caddy-managed.err"),
    );
    let managed = match server.first(&tls, &batch.certs[first], caddy_wait).await {
        None => {
            println!("Caddy, managed: name #{first} not served within {caddy_wait:?}");
            None
        }
        Some(t_first) => {
            let rss_first = rss_kib(server.pid());
            let last = &batch.certs[n - 1];
            let all = server.first(&tls, last, caddy_wait).await;
            let rss_all = rss_kib(server.pid());
            match all {
                Some(t_all) => println!(
                    "Caddy, managed: name #{first} served {:.2} s after exec (RSS {:.1} MiB); the last, #{} (all {n} loaded), {:.2} s (CPU {:.1} s), RSS {:.1} MiB",
                    t_first.as_secs_f64(),
                    mib(rss_first),
                    n - 1,
                    t_all.as_secs_f64(),
                    cpu_seconds(server.pid()),
                    mib(rss_all)
                ),
                None => {
                    // Loaded in list order: the served names are a prefix.
                    let (mut lo, mut hi) = (first, n - 1);
                    while lo + 1 < hi {
                        let mid = (lo + hi) / 2;
                        let c = &batch.certs[mid];
                        match certs::leaf(&tls, https, &c.name).await {
                            Ok(_) => lo = mid,
                            Err(_) => hi = mid,
                        }
                    }
                    println!(
                        "Caddy, managed: name #{first} served {:.2} s after exec; after {caddy_wait:?} about {} of {n} loaded, RSS {:.1} MiB",
                        t_first.as_secs_f64(),
                        lo + 1,
                        mib(rss_all)
                    );
                }
            }
            Some((t_first, all))
        }
    };
    drop(server);
    finish(scratch, &results, managed.map(|m| m.0));
}

fn finish(scratch: tempfile::TempDir, results: &[Measured], caddy_managed_first: Option<Duration>) {
    let caddy = results.iter().find(|m| m.label.starts_with("Caddy"));
    for e in results.iter().filter(|m| m.label.starts_with("edgepop")) {
        let Some(c) = caddy else { break };
        println!(
            "ratio {} / {}: first handshake {:.2}x, RSS then {:.2}x, CPU in the first {QUIET:?} {:.2}x, memory per held certificate {:.2}x, cold loads/s {:.2}x",
            e.label,
            c.label,
            e.first.as_secs_f64() / c.first.as_secs_f64(),
            e.rss_first as f64 / c.rss_first as f64,
            e.cpu_quiet / c.cpu_quiet,
            e.per_held_bytes() / c.per_held_bytes(),
            c.cold.as_secs_f64() / e.cold.as_secs_f64(),
        );
        if let Some(t) = caddy_managed_first {
            println!(
                "ratio {} / Caddy, managed: first handshake {:.4}x",
                e.label,
                e.first.as_secs_f64() / t.as_secs_f64()
            );
        }
    }
    if std::env::var_os("KEEP").is_some() {
        println!("kept {}", scratch.keep().display());
    }
}
