//! The operator's monitoring kit (`conf/monitoring/`): the alert rules
//! through promtool (syntax and their unit tests), the Grafana dashboard's
//! shape, and both against a live Prometheus (Debian's `prometheus`)
//! scraping real processes under a little traffic: two PoPs (one issuing
//! from the local CA, one from pebble over ACME), a tansu broker carrying a
//! change, and `edgepop anycast` driving a real BIRD 2. Every dashboard
//! query must parse and return data, every alert expression must parse and
//! be loaded healthy: a metric renamed in the code fails here instead of
//! blanking a panel.

mod common;

use common::pebble::Pebble;
use common::peering::{peer_client, PopCa};
use common::stream::{self, Broker};
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SEC: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

const ALERTS: &str = "conf/monitoring/alerts.yml";
const ALERT_TESTS: &str = "conf/monitoring/alerts.test.yml";
const DASHBOARD: &str = "conf/monitoring/dashboard.json";
const OPERATIONS: &str = "docs/OPERATIONS.md";

/// The concerns the dashboard has a row for (issue 27), as words its row
/// titles must contain.
const CONCERNS: [&str; 8] = [
    "Traffic and errors",
    "Cache",
    "Origin pools",
    "Relays and peers",
    "Change stream",
    "Certificates",
    "Connections and limits",
    "Anycast",
];

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (apt-get install prometheus; tests/run.sh does)");
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One `- alert:` block of alerts.yml, as lines of text.
struct AlertRule {
    name: String,
    text: String,
}

/// The alert rules, read line by line (no YAML parser in the tree; the
/// file's layout is the one promtool accepts, checked below).
fn alert_rules() -> Vec<AlertRule> {
    let text = std::fs::read_to_string(ALERTS).unwrap();
    let mut rules: Vec<AlertRule> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert:") {
            rules.push(AlertRule {
                name: name.trim().to_string(),
                text: String::new(),
            });
        } else if let Some(rule) = rules.last_mut() {
            rule.text.push_str(line);
            rule.text.push('\n');
        }
    }
    rules
}

#[test]
fn the_alert_rules_pass_promtool_and_each_has_a_runbook_and_both_test_cases() {
    promtool(&["check", "rules", ALERTS]);
    promtool(&["test", "rules", ALERT_TESTS]);

    let rules = alert_rules();
    assert!(rules.len() >= 10, "only {} alerts in {ALERTS}", rules.len());
    let docs = std::fs::read_to_string(OPERATIONS).unwrap();
    let headings: BTreeSet<String> = docs
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().to_lowercase())
        .collect();
    let tests = std::fs::read_to_string(ALERT_TESTS).unwrap();
    let test_lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for rule in &rules {
        let name = &rule.name;
        for key in [
            "expr:",
            "for:",
            "severity:",
            "summary:",
            "description:",
            "runbook_url:",
        ] {
            assert!(rule.text.contains(key), "alert {name} has no `{key}`");
        }
        let anchor = name.to_lowercase();
        let url = format!("runbook_url: \"docs/OPERATIONS.md#{anchor}\"");
        assert!(rule.text.contains(&url), "alert {name}: expected `{url}`");
        assert!(
            headings.contains(&anchor),
            "alert {name}: no runbook heading `#### {name}` in {OPERATIONS}"
        );
        // Each alert is tested firing (exp_alerts with an entry) and not
        // firing (exp_alerts: []).
        let cases: Vec<&str> = test_lines
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == format!("alertname: {name}"))
            .filter_map(|(i, _)| test_lines.get(i + 1).copied())
            .collect();
        assert!(
            cases.contains(&"exp_alerts: []"),
            "alert {name} has no case in {ALERT_TESTS} where it does not fire"
        );
        assert!(
            cases.contains(&"exp_alerts:"),
            "alert {name} has no case in {ALERT_TESTS} where it fires"
        );
    }
}

/// Every panel of the dashboard that has queries (rows have none).
fn query_panels(dashboard: &Value) -> Vec<&Value> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .collect()
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

#[test]
fn the_dashboard_has_a_row_per_concern_and_well_formed_panels() {
    let d = dashboard();
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS", "__inputs");
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    let variables: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for v in ["datasource", "instance"] {
        assert!(variables.contains(&v), "no `{v}` variable: {variables:?}");
    }

    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title:?} has no id"));
        assert!(ids.insert(id), "panel {title:?}: id {id} used twice");
        let pos = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(pos[k].is_u64(), "panel {title:?}: gridPos.{k} missing");
        }
        assert!(
            pos["x"].as_u64().unwrap() + pos["w"].as_u64().unwrap() <= 24,
            "panel {title:?} is wider than the dashboard"
        );
    }
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for concern in CONCERNS {
        assert!(
            rows.iter().any(|r| r.contains(concern)),
            "no row for {concern:?}: rows are {rows:?}"
        );
    }
    let queried = query_panels(&d);
    assert!(
        queried.len() >= CONCERNS.len() * 2,
        "{} panels",
        queried.len()
    );
    for p in queried {
        let title = p["title"].as_str().unwrap();
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {title:?}: datasource"
        );
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title:?}: no targets"));
        assert!(!targets.is_empty(), "panel {title:?}: no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "panel {title:?}: a target without expr"
            );
            if expr.contains("rate(") || expr.contains("increase(") {
                assert!(
                    expr.contains("[$__rate_interval]"),
                    "panel {title:?}: rates over $__rate_interval, not {expr}"
                );
            }
        }
    }
}

/// A process of the test's, killed when the test ends however it ends.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).unwrap();
        let err = file.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + SEC(5);
        while Instant::now() < deadline && !self.exited() {
            std::thread::sleep(MS(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Prometheus of the test's own: its own storage and port.
struct Prometheus {
    proc: Proc,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `nodes` (job edgepop) and `companions` (job
    /// edgepop-anycast) every second, with the shipped alert rules.
    async fn start(nodes: &[SocketAddr], companions: &[SocketAddr]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = std::fs::canonicalize(ALERTS).unwrap();
        let list = |addrs: &[SocketAddr]| {
            addrs
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - \"{}\"\n\
             scrape_configs:\n\
             \x20 - job_name: edgepop\n    static_configs:\n      - targets: [{}]\n\
             \x20 - job_name: edgepop-anycast\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            list(nodes),
            list(companions)
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        // Its port is picked free, then bound by prometheus: another test
        // may take it in between (prometheus then exits). Try again.
        for attempt in 1..=3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut cmd = Command::new("/usr/bin/prometheus");
            cmd.arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join(format!("data{attempt}")).display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn");
            let mut proc = Proc::spawn(
                &mut cmd,
                dir.path().join(format!("prometheus{attempt}.log")),
            );
            let deadline = Instant::now() + SEC(60);
            while Instant::now() < deadline && !proc.exited() {
                let ready = client()
                    .get(format!("http://{addr}/-/ready"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if ready {
                    return Prometheus {
                        proc,
                        addr,
                        _dir: dir,
                    };
                }
                tokio::time::sleep(MS(100)).await;
            }
            eprintln!("prometheus did not start on {addr}:\n{}", proc.log());
        }
        panic!("prometheus did not start (/usr/bin/prometheus: apt-get install prometheus)");
    }

    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let r = client()
            .get(format!("http://{}{path}", self.addr))
            .query(params)
            .send()
            .await
            .unwrap_or_else(|e| panic!("prometheus {path}: {e}\n{}", self.proc.log()));
        r.json().await.unwrap()
    }

    /// An instant query: Ok(series), or Err(Prometheus's error).
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self.api("/api/v1/query", &[("query", expr)]).await;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(match v["data"]["result"].as_array() {
            Some(series) => series.clone(),
            // A scalar or a string is one value.
            None => vec![v["data"]["result"].clone()],
        })
    }

    /// The values of `label` over the series of `metric`.
    async fn label_values(&self, metric: &str, label: &str) -> Vec<String> {
        let v = self
            .api(
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", metric)],
            )
            .await;
        v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    }

    /// Why each target is down, if one is.
    async fn targets(&self) -> String {
        let v = self.api("/api/v1/targets", &[]).await;
        v["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{} {}: {} {}",
                    t["labels"]["job"], t["scrapeUrl"], t["health"], t["lastError"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A multi-value template variable as Grafana writes it into a Prometheus
/// query: each value regex-escaped (a backslash doubled for PromQL's
/// string), joined in a group.
fn grafana_regex(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| {
            let mut out = String::new();
            for c in v.chars() {
                if "$^*{}[]'+?.()|\\".contains(c) {
                    out.push_str("\\\\");
                }
                out.push(c);
            }
            out
        })
        .collect();
    format!("({})", escaped.join("|"))
}

/// `expr` with Grafana's variables replaced as Grafana would at a 1 s
/// scrape interval (`$__rate_interval` at least 4 scrapes: taken as 1m).
fn interpolate(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h");
    // Longest names first, so `$instance` does not eat `$instances`.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &vars[name])
            .replace(&format!("${name}"), &vars[name]);
    }
    out
}

/// A `$name` or `${name}` left in a query (label_replace's `${1}` is not one).
fn unknown_variable(expr: &str) -> Option<String> {
    let bytes = expr.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b != b'$' {
            continue;
        }
        let rest = &expr[i + 1..];
        let name = rest.trim_start_matches('{');
        if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return Some(rest.chars().take(20).collect());
        }
    }
    None
}

/// The `[anycast]` companion's BIRD: a `static` protocol holding the
/// prefix, no kernel protocol (nothing touches the machine's routes), its
/// control socket in the test's folder.
fn start_bird(dir: &Path) -> (Proc, PathBuf) {
    let conf = dir.join("bird.conf");
    std::fs::write(
        &conf,
        "router id 192.0.2.254;\nlog stderr all;\n\
         # Held disabled until edgepop anycast finds the node ready.\n\
         protocol static edgepop_anycast {\n  disabled;\n  ipv4;\n  route 192.0.2.1/32 blackhole;\n}\n",
    )
    .unwrap();
    let socket = dir.join("bird.ctl");
    let bird = Proc::spawn(
        Command::new("bird")
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.join("bird.pid")),
        dir.join("bird.log"),
    );
    (bird, socket)
}

fn birdc(socket: &Path, args: &[&str]) -> String {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(socket)
        .args(args)
        .output()
        .expect("birdc (apt-get install bird2)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A request head over the 32 KiB limit (431), over a raw connection: the
/// edge may close it before the whole head is written.
async fn oversized_head(addr: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let big = "x".repeat(40 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: shop.test\r\nX-Big: {big}\r\n\r\n");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(req.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(SEC(10), tcp.read_to_end(&mut answer)).await;
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// `sample` on `edge` reaching `want`, waited for (requests are counted
/// after their response is sent).
async fn reaches(edge: &Edge, sample: &str, want: f64) {
    let ok = eventually(SEC(20), || async { edge.metric(sample).await >= want }).await;
    assert!(
        ok,
        "{sample} is {} on {} (wanted {want})\n{}",
        edge.metric(sample).await,
        edge.pop,
        edge.stderr()
    );
}

/// One pass of the background traffic on the node at `base`
/// (`http://addr`): a storefront page (HIT), a proxied request, a site whose
/// pool has no server left (relayed, then 503), a refused host. (Sites of
/// store 1 have the demo store's pages: `/` is a page, `/cart` is not.)
async fn a_little_traffic(base: &str) {
    let c = client();
    for (host, path) in [
        ("shop.localhost", "/"),
        ("shop.test", "/cart"),
        ("slow.test", "/slow"),
        ("unknown.example", "/"),
    ] {
        let r = c.get(format!("{base}{path}")).header("host", host).send();
        if let Ok(r) = r.await {
            let _ = r.bytes().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_prometheus_evaluates_every_panel_and_alert_against_real_processes() {
    let broker = Broker::start().await;
    let ca = PopCa::new(&["tst1", "ams1"]);
    let origin = Origin::start(MS(1)).await;
    let mut slow = Origin::start(SEC(3)).await;
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (tst1_peer, ams1_peer) = (common::peering::peer_addr(), common::peering::peer_addr());
    let (tst1_https, ams1_https) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let companion = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // The two tiers: public (a healthy origin everywhere) and enterprise
    // (a slow origin at tst1, none alive at ams1).
    let sites = format!(
        "{}{}",
        site("shop.test", "public", "active"),
        site("slow.test", "enterprise", "active"),
    );

    // ams1: the peer PoP. Certificates from pebble over ACME (HTTP-01 on
    // its HTTP listener); its enterprise pool is dead, so a request relayed
    // to it for slow.test ends in a 503.
    let mut ams1 = Edge::prepare("");
    ams1.pop = "ams1".into();
    let pebble = Pebble::start(ams1.http.port(), ams1_https.port()).await;
    ams1.write_config(&format!(
        "[tls]\nlisten = [\"{ams1_https}\"]\nissue_timeout = \"30s\"\n{}\n{}{}{sites}{}{}",
        pebble.acme_table("http-01"),
        pool("public", &[(origin.addr, 1)]),
        pool("enterprise", &[(dead, 1)]),
        site("bad.test", "public", "active"),
        ca.peering("ams1", ams1_peer, &[]),
    ));
    let ams1 = ams1.launch(false).await;

    // tst1: the node under watch. Storefront pages from the demo replica
    // kept by the change stream, two pools (public healthy, enterprise slow
    // with a hard limit of 1), HTTPS from the local CA, ams1 as its peer,
    // and [anycast] for the companion.
    let tst1 = Edge::prepare("");
    let d = tst1.dir.path().to_path_buf();
    tst1.write_config(&format!(
        "[tls]\nlisten = [\"{tst1_https}\"]\nissue_timeout = \"10s\"\n\n{}{}limits = {{ soft = 1, hard = 1 }}\noverflow_wait = \"100ms\"\n{sites}{}{}{}\
         [anycast]\nprefix = \"192.0.2.1/32\"\nsocket = \"{}\"\ncheck_interval = \"200ms\"\nfall = 2\nrise = 2\nmetrics_listen = \"{companion}\"\n",
        pool("public", &[(origin.addr, 1)]),
        pool("enterprise", &[(slow.addr, 1)]),
        broker.sync_section(),
        stream::EMBEDDED,
        ca.peering("tst1", tst1_peer, &[("ams1", ams1_peer)]),
        d.join("bird.ctl").display(),
    ));
    // Few connections per client address: the test reaches the limit.
    let config = std::fs::read_to_string(tst1.config_path())
        .unwrap()
        .replacen(
            "[server]\n",
            "[server]\nmax_connections_per_client = 40\n",
            1,
        );
    std::fs::write(tst1.config_path(), config).unwrap();
    tst1.load_demo();
    let tst1 = tst1.launch(false).await;

    // BIRD 2 and the companion switching its static protocol.
    let (_bird, bird_socket) = start_bird(&d);
    assert!(
        eventually(SEC(10), || async { bird_socket.exists() }).await,
        "BIRD did not start"
    );
    let anycast = Proc::spawn(
        Command::new(bin())
            .arg("anycast")
            .arg("--config")
            .arg(tst1.config_path()),
        d.join("anycast.log"),
    );

    let prometheus = Prometheus::start(&[tst1.admin, ams1.admin], &[companion]).await;

    // --- the traffic ---------------------------------------------------
    let peer_ready = || async {
        tst1.status().await["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["pop"] == "ams1" && p["ready"] == true)
    };
    assert!(
        eventually(SEC(15), peer_ready).await,
        "tst1 never saw ams1 ready: {}\n{}",
        tst1.status().await,
        ams1.stderr()
    );
    // A storefront page: a miss, then a hit.
    let caches: Vec<String> = {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let r = tst1.get("shop.localhost", "/").send().await.unwrap();
            assert_eq!(r.status(), 200);
            seen.push(header(&r, "x-edge-cache"));
        }
        seen
    };
    assert_eq!(caches, ["MISS", "HIT"]);
    // Proxied to the origin; a host nobody serves; a head too large.
    let r = tst1.get("shop.test", "/cart").send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), header(&r, "x-edge-cache")),
        (200, "BYPASS".into())
    );
    assert_eq!(
        tst1.get("unknown.example", "/")
            .send()
            .await
            .unwrap()
            .status(),
        421
    );
    oversized_head(tst1.http).await;
    reaches(
        &tst1,
        "edgepop_client_limits_total{limit=\"head_too_large\"}",
        1.0,
    )
    .await;
    // Two at once for the enterprise pool (hard limit 1): one overflows to
    // ams1, where the enterprise pool is dead: 503.
    let (a, b) = tokio::join!(
        tst1.get("slow.test", "/slow").send(),
        tst1.get("slow.test", "/slow").send()
    );
    let mut answers = [a.unwrap(), b.unwrap()]
        .iter()
        .map(|r| (r.status().as_u16(), header(r, "x-edge-route")))
        .collect::<Vec<_>>();
    answers.sort();
    assert_eq!(
        answers,
        [(200, "tst1".into()), (503, "tst1, ams1".into())],
        "{}",
        tst1.access_log()
    );
    reaches(&tst1, "edgepop_overflow_total{outcome=\"relayed\"}", 1.0).await;
    // The slow origin goes away: no healthy server left in the pool, so
    // slow.test is relayed to ams1 (503 there too).
    slow.kill();
    let pool_down = eventually(SEC(10), || async {
        tst1.status().await["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["tier"] == "enterprise" && p["available"] == 0)
    })
    .await;
    assert!(
        pool_down,
        "the enterprise pool still has a server: {}",
        tst1.status().await
    );
    let r = tst1.get("slow.test", "/slow").send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), header(&r, "x-edge-route")),
        (503, "tst1, ams1".into())
    );
    reaches(
        &tst1,
        "edgepop_relays_total{peer=\"ams1\",reason=\"no_origin\"}",
        1.0,
    )
    .await;
    // A relayed request that claims to have passed ams1 already: a loop.
    let as_tst1 = peer_client(Some((&ca, "tst1")), &ca, "ams1", ams1_peer);
    let r = as_tst1
        .get(format!("https://ams1:{}/", ams1_peer.port()))
        .header("host", "shop.test")
        .header("x-edge-route", "ams1, tst1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 508);

    // A change through the stream: the page's version 2, then a tombstone.
    let producer = broker.producer();
    let key = stream::page_key(1, "/");
    producer
        .send(
            stream::PAGES,
            &key,
            Some(&stream::page(1, "/", "<h1>v2</h1>", 2, false)),
        )
        .await;
    let served_v2 = eventually(SEC(20), || async {
        let r = tst1.get("shop.localhost", "/").send().await.unwrap();
        header(&r, "etag") == "\"v2\""
    })
    .await;
    assert!(served_v2, "the change was never served\n{}", tst1.stderr());
    producer.send(stream::PAGES, &key, None).await;
    reaches(&tst1, "edgepop_sync_skipped_total{kind=\"tombstone\"}", 1.0).await;

    // HTTPS: the local CA issues during the first handshake; a name
    // nobody serves is refused.
    let root = d.join("edgepop-data/tls/ca/ca.pem");
    let https = https_client(&root, "shop.test", tst1_https, false);
    let r = https
        .get(format!("https://shop.test:{}/", tst1_https.port()))
        .send()
        .await
        .expect("HTTPS to tst1");
    assert_eq!(r.status(), 200);
    assert!(peer_cert(tst1_https, "nope.test", &root).await.is_err());
    reaches(&tst1, "edgepop_tls_issuance_total{result=\"issued\"}", 1.0).await;
    // ams1 orders from pebble (a challenge answered); a name whose DNS
    // points elsewhere fails validation.
    peer_cert(ams1_https, "shop.test", &pebble.root)
        .await
        .unwrap_or_else(|e| panic!("ams1's ACME certificate: {e}\n{}", pebble.log()));
    pebble.set_a("bad.test", "127.0.0.2").await;
    assert!(peer_cert(ams1_https, "bad.test", &pebble.root)
        .await
        .is_err());
    // (Counted by cause too: `challenge` when pebble reports the failed
    // validation while polling, `ca_refused` when it answers the "ready"
    // request with it, as it may under load.)
    reaches(&ams1, "edgepop_tls_issuance_total{result=\"failed\"}", 1.0).await;

    // HTTP/2 streams the client resets at once: cancelled before any origin.
    let mut send = h2_connect(tst1_https, "shop.test", &root).await;
    for i in 0..4 {
        send = send.ready().await.unwrap();
        let req = http::Request::get(format!("https://shop.test:{}/r{i}", tst1_https.port()))
            .body(())
            .unwrap();
        let (_response, mut stream) = send.send_request(req, true).unwrap();
        stream.send_reset(h2::Reason::CANCEL);
    }
    let cancelled = eventually(SEC(15), || async {
        tst1.metric("edgepop_client_cancelled_total{when=\"before_origin\"}")
            .await
            + tst1
                .metric("edgepop_client_cancelled_total{when=\"in_flight\"}")
                .await
            >= 1.0
    })
    .await;
    assert!(cancelled, "no cancelled request counted");
    drop(send);

    // More connections from one address than it may hold.
    let mut held = Vec::new();
    for _ in 0..50 {
        if let Ok(c) = tokio::net::TcpStream::connect(tst1.http).await {
            held.push(c);
        }
    }
    reaches(
        &tst1,
        "edgepop_connections_refused_total{limit=\"per_client\"}",
        1.0,
    )
    .await;
    drop(held);

    // A reload (same file): counted.
    tst1.signal(libc::SIGHUP);
    reaches(&tst1, "edgepop_config_reloads_total{result=\"ok\"}", 1.0).await;

    // The companion announced the prefix in BIRD once the node was ready.
    let announced = eventually(SEC(20), || async {
        birdc(&bird_socket, &["show", "route", "192.0.2.1/32"]).contains("edgepop_anycast")
    })
    .await;
    assert!(
        announced,
        "BIRD has no route from edgepop_anycast: {}\n--- anycast.log\n{}",
        birdc(&bird_socket, &["show", "protocols"]),
        anycast.log()
    );

    // From here on, a request of each kind every 200 ms, as a live PoP
    // has: rates over the last minute are not all zero.
    let url = format!("http://{}", tst1.http);
    let background = tokio::spawn(async move {
        loop {
            a_little_traffic(&url).await;
            tokio::time::sleep(MS(200)).await;
        }
    });
    let _stop = AbortOnDrop(background);

    // --- the dashboard through Prometheus ------------------------------
    let d = dashboard();
    // Each query variable's values, as Grafana finds them (the label values
    // API), must name every process of its kind.
    let expected: BTreeMap<&str, Vec<String>> = [
        (
            "instance",
            vec![tst1.admin.to_string(), ams1.admin.to_string()],
        ),
        ("anycast", vec![companion.to_string()]),
    ]
    .into_iter()
    .collect();
    let mut vars = BTreeMap::new();
    let wait_vars = Instant::now() + SEC(60);
    for v in d["templating"]["list"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap().to_string();
        if v["type"] != "query" {
            continue;
        }
        let definition = v["definition"].as_str().unwrap();
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {name}: {definition}"));
        let (metric, label) = inner.split_once(',').unwrap();
        let want = expected
            .get(name.as_str())
            .unwrap_or_else(|| panic!("variable {name}: which processes should it list?"));
        let values = loop {
            let values = prometheus.label_values(metric.trim(), label.trim()).await;
            if want.iter().all(|w| values.contains(w)) || Instant::now() > wait_vars {
                break values;
            }
            tokio::time::sleep(SEC(1)).await;
        };
        assert!(
            want.iter().all(|w| values.contains(w)),
            "variable ${name} ({definition}) is {values:?}, not all of {want:?}\n{}",
            prometheus.targets().await
        );
        println!("${name} = {values:?}");
        vars.insert(name, grafana_regex(&values));
    }
    let mut queries = Vec::new();
    for p in query_panels(&d) {
        for t in p["targets"].as_array().unwrap() {
            let expr = interpolate(t["expr"].as_str().unwrap(), &vars);
            let what = format!(
                "panel {:?} (id {}, {})",
                p["title"].as_str().unwrap(),
                p["id"],
                t["refId"]
            );
            if let Some(var) = unknown_variable(&expr) {
                panic!("{what}: unknown variable ${var} in {expr}");
            }
            queries.push((what, expr));
        }
    }

    // Every query parses at once; each returns data once the scrapes have
    // caught up with the traffic (a generous deadline, not a fixed sleep).
    let started = Instant::now();
    let deadline = started + SEC(120);
    let empty = loop {
        let mut empty = Vec::new();
        for (what, expr) in &queries {
            match prometheus.query(expr).await {
                Err(e) => panic!("{what}: Prometheus refused the query: {e}\n  {expr}"),
                Ok(series) if series.is_empty() => empty.push(format!("{what}: no data\n  {expr}")),
                Ok(_) => {}
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break empty;
        }
        tokio::time::sleep(SEC(1)).await;
    };
    assert!(
        empty.is_empty(),
        "{} of {} dashboard queries returned nothing:\n{}\n--- targets\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n"),
        prometheus.targets().await
    );
    println!(
        "{} dashboard queries returned data ({} s after the traffic)",
        queries.len(),
        started.elapsed().as_secs()
    );

    // What the alerts count on, as the processes report it: the node ready,
    // the prefix announced, a certificate held with a unix time (seconds) as
    // its end (the local CA's 90 days), the tier label on requests.
    let tst1_instance = tst1.admin.to_string();
    let facts = [
        format!("edgepop_ready{{instance=\"{tst1_instance}\"}} == 1"),
        "edgepop_anycast_announced{prefix=\"192.0.2.1/32\"} == 1".to_string(),
        "edgepop_anycast_node_ready == 1".to_string(),
        format!("edgepop_tls_certificates_held{{instance=\"{tst1_instance}\"}} >= 1"),
        format!(
            "(edgepop_tls_certificate_soonest_expiry_timestamp_seconds{{instance=\"{tst1_instance}\"}} - time()) / 86400 > 80 < 91"
        ),
        "edgepop_build_info{version!=\"\"} == 1".to_string(),
        "edgepop_requests_total{tier=\"none\", status=\"421\"} > 0".to_string(),
        "edgepop_requests_total{tier=\"enterprise\", status=\"503\"} > 0".to_string(),
        "edgepop_requests_total{tier=\"public\", cache=\"HIT\"} > 0".to_string(),
    ];
    for fact in &facts {
        let holds = eventually(SEC(30), || async {
            prometheus.query(fact).await.is_ok_and(|s| !s.is_empty())
        })
        .await;
        assert!(
            holds,
            "never true through Prometheus: {fact}\n{:?}",
            prometheus.query(fact).await
        );
    }

    // --- the alerts ------------------------------------------------------
    let names: BTreeSet<String> = alert_rules().into_iter().map(|r| r.name).collect();
    let loaded = loop {
        let v = prometheus.api("/api/v1/rules", &[("type", "alert")]).await;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let settled = rules.len() == names.len() && rules.iter().all(|r| r["health"] != "unknown");
        if settled || Instant::now() > deadline + SEC(30) {
            break rules;
        }
        tokio::time::sleep(SEC(1)).await;
    };
    let loaded_names: BTreeSet<String> = loaded
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        loaded_names, names,
        "alerts loaded by Prometheus vs {ALERTS}"
    );
    for rule in &loaded {
        let name = rule["name"].as_str().unwrap();
        assert_eq!(
            rule["health"], "ok",
            "alert {name}: health {} ({})",
            rule["health"], rule["lastError"]
        );
        let expr = rule["query"].as_str().unwrap();
        if let Err(e) = prometheus.query(expr).await {
            panic!("alert {name}: Prometheus refused its expression: {e}\n  {expr}");
        }
        println!("alert {name}: {} ({})", rule["health"], rule["state"]);
    }
    // An alert on real label sets: tst1's enterprise pool has no server
    // left, so EdgepopOriginPoolDown is pending (for: 1m) or firing.
    let pool_down = || async {
        let v = prometheus.api("/api/v1/alerts", &[]).await;
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| {
                a["labels"]["alertname"] == "EdgepopOriginPoolDown"
                    && a["labels"]["pool"] == "enterprise"
                    && a["labels"]["instance"] == tst1.admin.to_string()
            })
    };
    assert!(
        eventually(SEC(60), pool_down).await,
        "EdgepopOriginPoolDown never went pending for tst1's enterprise pool: {}",
        prometheus.api("/api/v1/alerts", &[]).await
    );
}

/// Ends the background traffic when the test ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
