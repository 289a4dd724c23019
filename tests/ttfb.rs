//! `edgepop ttfb` through the binary: against two PoPs and a relay (groups
//! exact per PoP and cache status, JSON valid against its schema, the SVG
//! and HTML report), coordinated omission against an origin that stalls
//! once, phases on new and reused HTTPS connections, first handshakes,
//! HTTP/3 against a small quinn + h3 server.

mod common;

use common::peering::{peer_addr, Pop, PopCa};
use common::*;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SEC: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

/// Runs `edgepop ttfb ARGS`; (stdout, stderr), the run asserted a success.
async fn ttfb(args: &[&str]) -> (String, String) {
    let out = tokio::process::Command::new(bin())
        .arg("ttfb")
        .args(args)
        .output()
        .await
        .unwrap();
    let out = succeeded(out, format!("edgepop ttfb {}", args.join(" ")));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The report checked against docs/ttfb.schema.json.
fn assert_valid(report: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/ttfb.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "not valid against its schema: {errors:#?}"
    );
}

/// (pop, cache, status) → requests, for target `t`.
fn groups(report: &Value, t: u64) -> Vec<(String, String, u64, u64)> {
    let mut out: Vec<_> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["target"] == t)
        .map(|g| {
            (
                g["pop"].as_str().unwrap().to_string(),
                g["cache"].as_str().unwrap().to_string(),
                g["status"].as_u64().unwrap(),
                g["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn group<'a>(report: &'a Value, t: u64, pop: &str, cache: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["target"] == t && g["pop"] == pop && g["cache"] == cache)
        .unwrap_or_else(|| panic!("no group {t} {pop} {cache}: {report:#}"))
}

fn owned(v: &[(&str, &str, u64, u64)]) -> Vec<(String, String, u64, u64)> {
    v.iter()
        .map(|(p, c, s, n)| (p.to_string(), c.to_string(), *s, *n))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pops_and_a_relay_are_grouped_exactly() {
    let ca = PopCa::new(&["fra1", "ams1"]);
    let (fra_peer, ams_peer) = (peer_addr(), peer_addr());
    let origin = Origin::start(MS(1)).await;
    let site = site("shop.test", "public", "active");
    let ams = Pop::start(
        "ams1",
        ams_peer,
        &format!(
            "{}{site}{}",
            pool("public", &[(origin.addr, 1)]),
            ca.peering("ams1", ams_peer, &[("fra1", fra_peer)])
        ),
        Edge::load_demo,
    )
    .await;
    // fra1's only origin is dead: what is not a page is relayed to ams1.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let fra = Pop::start(
        "fra1",
        fra_peer,
        &format!(
            "{}{site}{}",
            pool("public", &[(dead, 1)]),
            ca.peering("fra1", fra_peer, &[("ams1", ams_peer)])
        ),
        Edge::load_demo,
    )
    .await;
    assert!(eventually(SEC(10), || fra.sees_ready("ams1")).await);

    let dir = tempfile::tempdir().unwrap();
    let (out_json, out_svg, out_html) = (
        dir.path().join("r.json"),
        dir.path().join("r.svg"),
        dir.path().join("r.html"),
    );
    let (fra_http, ams_http) = (fra.edge.http.to_string(), ams.edge.http.to_string());
    // One connection per target: the first page request of each PoP is
    // its MISS, every later one a HIT.
    let (table, stderr) = ttfb(&[
        "http://shop.test/",
        "http://shop.test/cart",
        "--connect",
        &fra_http,
        "--connect",
        &ams_http,
        "-c",
        "1",
        "-n",
        "30",
        "--json",
        out_json.to_str().unwrap(),
        "--svg",
        out_svg.to_str().unwrap(),
        "--html",
        out_html.to_str().unwrap(),
    ])
    .await;
    assert_eq!(stderr, "", "no progress bar when stderr is not a terminal");
    let r = json(&out_json);
    assert_valid(&r);

    // Targets: URLs x addresses, in that order.
    let names: Vec<&str> = r["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            format!("http://shop.test/ @ {fra_http}"),
            format!("http://shop.test/ @ {ams_http}"),
            format!("http://shop.test/cart @ {fra_http}"),
            format!("http://shop.test/cart @ {ams_http}"),
        ]
    );
    for t in r["targets"].as_array().unwrap() {
        assert_eq!(
            (t["requests"].as_u64(), t["responses"].as_u64()),
            (Some(30), Some(30))
        );
        assert_eq!(t["errors"], serde_json::json!({}));
    }
    assert_eq!(
        groups(&r, 0),
        owned(&[("fra1", "HIT", 200, 29), ("fra1", "MISS", 200, 1)])
    );
    assert_eq!(
        groups(&r, 1),
        owned(&[("ams1", "HIT", 200, 29), ("ams1", "MISS", 200, 1)])
    );
    assert_eq!(groups(&r, 2), owned(&[("fra1 > ams1", "BYPASS", 200, 30)]));
    assert_eq!(groups(&r, 3), owned(&[("ams1", "BYPASS", 200, 30)]));
    // Every /cart reached ams1's origin: 30 direct, 30 relayed.
    assert_eq!(origin.hits(), 60);

    // server-timing parts beside the client's phases.
    let relayed = group(&r, 2, "fra1 > ams1", "BYPASS");
    assert_eq!(relayed["route"], serde_json::json!(["fra1", "ams1"]));
    for part in ["edge", "relay", "origin"] {
        assert_eq!(
            relayed["server_timing"][part]["count"], 30,
            "{part}: {relayed:#}"
        );
    }
    assert!(
        relayed["server_timing"]["relay"]["p50_ms"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let hit = group(&r, 1, "ams1", "HIT");
    assert_eq!(hit["server_timing"]["edge"]["count"], 29);
    assert!(hit["server_timing"].get("origin").is_none(), "{hit:#}");
    let miss = group(&r, 1, "ams1", "MISS");
    assert_eq!(miss["server_timing"]["replica"]["count"], 1, "{miss:#}");
    assert_eq!(miss["new_connections"], 1);
    assert_eq!(hit["new_connections"], 0);
    assert_eq!(r["server_timing_malformed"], 0);
    // The edge's own time is inside what the client waited.
    let edge_p50 = hit["server_timing"]["edge"]["p50_ms"].as_f64().unwrap();
    assert!(edge_p50 <= hit["phases"]["ttfb"]["p50_ms"].as_f64().unwrap());

    // The table names every group.
    assert!(table.contains("fra1 > ams1"), "{table}");
    for line in ["fra1 ", "ams1 ", "BYPASS", "HIT", "MISS", "relay "] {
        assert!(table.contains(line), "{line}: {table}");
    }

    // The SVG parses: one curve per target x route, each in the legend.
    let svg = std::fs::read_to_string(&out_svg).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| {
            n.attribute("points")
                .is_some_and(|p| p.split(' ').count() >= 10)
        })
        .count();
    assert_eq!(lines, 4, "one curve per target x route");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_string())
        .collect();
    for (i, name) in names.iter().enumerate() {
        let pop = ["fra1", "ams1", "fra1 > ams1", "ams1"][i];
        let curve = format!("[{i}] {pop}  {name}");
        assert!(texts.contains(&curve), "{curve} in {texts:?}");
    }
    for label in [
        "ttfb",
        "tls",
        "[2] fra1 > ams1 BYPASS 200",
        "[1] ams1 MISS 200",
    ] {
        assert!(texts.iter().any(|t| t == label), "{label} in {texts:?}");
    }
    let bars = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter(|n| n.attribute("fill") == Some("#1F77B4"))
        .count();
    assert!(bars >= 6, "a ttfb bar per group (and its legend): {bars}");
    let html = std::fs::read_to_string(&out_html).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("<svg") && html.contains("fra1 &gt; ams1"));
}

/// An HTTP/1.1 server on port 0 answering `ok` with `headers`. When the
/// `stall_at`th request (1-based) comes, the whole server stalls for
/// `stall` (an origin's pause): it and every request that comes meanwhile
/// are answered when the stall ends.
async fn stub(
    headers: &'static [(&'static str, &'static str)],
    stall_at: usize,
    stall: Duration,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let until = Arc::new(std::sync::Mutex::new(None::<tokio::time::Instant>));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (count, until) = (count.clone(), until.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    let wait = {
                        let mut until = until.lock().unwrap();
                        if n == stall_at {
                            *until = Some(tokio::time::Instant::now() + stall);
                        }
                        *until
                    };
                    async move {
                        if let Some(t) = wait {
                            tokio::time::sleep_until(t).await;
                        }
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                        for (k, v) in headers {
                            resp.headers_mut().append(*k, v.parse().unwrap());
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_corrected_p99_of_the_open_model() {
    // At request 100 of 800 the server stalls for a second. Both
    // connections wait; the slots (one every 5 ms) pile up meanwhile: about
    // two hundred requests were held up, which the open model counts from
    // their slots.
    let addr = stub(&[], 100, SEC(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let url = format!("http://{addr}/");
    ttfb(&[
        &url,
        "--rate",
        "200",
        "-c",
        "2",
        "-n",
        "800",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ])
    .await;
    let r = json(&out);
    assert_valid(&r);
    assert_eq!(r["model"]["kind"], "open");
    let t = &r["targets"][0];
    assert_eq!(t["responses"], 800, "{t:#}");
    assert_eq!(
        t["schedule_lag"]["count"], 800,
        "the pacer's own lag, apart"
    );
    let (corrected, uncorrected) = (&t["latency"], &t["uncorrected_latency"]);
    let p99 = corrected["p99_ms"].as_f64().unwrap();
    assert!(
        p99 >= 500.0,
        "the stall held ~200 of 800 requests up: {corrected:#}"
    );
    assert!(corrected["max_ms"].as_f64().unwrap() >= 1000.0);
    // Without the correction the stall is the two requests it caught in
    // flight, of 800: past p99.
    assert!(uncorrected["max_ms"].as_f64().unwrap() >= 1000.0);
    assert!(
        uncorrected["p99_ms"].as_f64().unwrap() < 100.0,
        "{uncorrected:#}"
    );
    // The rate was held: 800 requests at 200/s take about 4 s.
    assert!(r["elapsed_s"].as_f64().unwrap() >= 3.9, "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_server_timing_is_counted_not_fatal() {
    let addr = stub(
        &[
            ("server-timing", "edge;dur=abc, origin;dur=2.5"),
            ("x-edge-route", "fra1"),
        ],
        0,
        Duration::ZERO,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    // Named as a load tester would, pointed at the stub as with curl.
    ttfb(&[
        &format!("http://stub.test:{}/", addr.port()),
        "--resolve",
        &format!("stub.test:{}:127.0.0.1", addr.port()),
        "-n",
        "10",
        "-c",
        "1",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ])
    .await;
    let r = json(&out);
    assert_valid(&r);
    assert_eq!(r["server_timing_malformed"], 10);
    let g = group(&r, 0, "fra1", "-");
    assert_eq!(g["requests"], 10);
    assert_eq!(g["server_timing"]["origin"]["count"], 10);
    // HDR histograms keep 3 significant digits.
    let p50 = g["server_timing"]["origin"]["p50_ms"].as_f64().unwrap();
    assert!((p50 - 2.5).abs() < 0.005, "{p50}");
    assert!(g["server_timing"].get("edge").is_none(), "{g:#}");
}

/// An edge with HTTPS from its local CA; sites `names` besides shop.test;
/// its origin answers after `origin_delay`.
async fn tls_edge(names: &[&str], origin_delay: Duration) -> (Edge, SocketAddr, Origin) {
    let origin = Origin::start(origin_delay).await;
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut body = format!(
        "[tls]\nlisten = [\"{https}\"]\nissue_timeout = \"5s\"\n{}{}",
        pool("public", &[(origin.addr, 1)]),
        site("shop.test", "public", "active"),
    );
    for name in names {
        body.push_str(&site(name, "public", "active"));
    }
    (Edge::start(&body).await, https, origin)
}

fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            header
                .iter()
                .zip(r.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn num(row: &std::collections::HashMap<String, String>, key: &str) -> f64 {
    row[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {row:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn phases_add_up_and_reused_connections_skip_connect_and_tls() {
    // The origin takes 20 ms: a phase left out would leave a gap that big.
    let (edge, https, _origin) = tls_edge(&[], MS(20)).await;
    let root = edge.dir.path().join("edgepop-data/tls/ca/ca.pem");
    let url = format!("https://shop.test:{}/api", https.port());
    let dir = tempfile::tempdir().unwrap();
    for (flag, protocol) in [("--http1", "http/1.1"), ("--http2", "h2")] {
        let out = dir.path().join(format!("{protocol}.csv").replace('/', "_"));
        ttfb(&[
            &url,
            "--connect",
            &https.to_string(),
            "--cacert",
            root.to_str().unwrap(),
            flag,
            "-c",
            "2",
            "-n",
            "20",
            "-q",
            "--csv",
            out.to_str().unwrap(),
        ])
        .await;
        let rows = csv_rows(&out);
        assert_eq!(rows.len(), 20);
        let new: Vec<_> = rows.iter().filter(|r| r["reused"] == "false").collect();
        assert_eq!(new.len(), 2, "one new connection per worker: {rows:?}");
        for row in &rows {
            assert_eq!(row["protocol"], protocol, "{row:?}");
            assert_eq!(row["status"], "200", "{row:?}");
            assert_eq!(row["error"], "");
            let phases: f64 = ["queue", "dns", "connect", "tls", "ttfb", "transfer"]
                .iter()
                .map(|p| num(row, &format!("{p}_ms")))
                .sum();
            let total = num(row, "total_ms");
            // The total is timed on its own clock; the phases are laps
            // that tile it (each rounded to the microsecond).
            assert!(
                (total - phases).abs() < 1.0,
                "phases {phases} vs total {total}: {row:?}"
            );
            if row["reused"] == "true" {
                for p in ["dns", "connect", "tls"] {
                    assert_eq!(num(row, &format!("{p}_ms")), 0.0, "{p}: {row:?}");
                }
            } else {
                assert!(num(row, "connect_ms") > 0.0, "{row:?}");
                assert!(num(row, "tls_ms") > 0.0, "{row:?}");
            }
            // The origin's 20 ms are in the TTFB, not in the transfer.
            assert!(num(row, "ttfb_ms") >= 20.0, "{row:?}");
            assert!(num(row, "transfer_ms") < 20.0, "{row:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_handshake_mode_times_one_handshake_per_fresh_name() {
    let names = [
        "shop-1.test",
        "shop-2.test",
        "shop-3.test",
        "shop-4.test",
        "shop-5.test",
    ];
    let (edge, https, _origin) = tls_edge(&names, MS(1)).await;
    let root = edge.dir.path().join("edgepop-data/tls/ca/ca.pem");
    let dir = tempfile::tempdir().unwrap();
    let (csv_out, json_out) = (dir.path().join("r.csv"), dir.path().join("r.json"));
    ttfb(&[
        &format!("https://shop.test:{}/api", https.port()),
        "--connect",
        &https.to_string(),
        "--cacert",
        root.to_str().unwrap(),
        "--first-handshake",
        "shop-{n}.test",
        "-c",
        "1",
        "-n",
        "5",
        "-q",
        "--csv",
        csv_out.to_str().unwrap(),
        "--json",
        json_out.to_str().unwrap(),
    ])
    .await;
    let rows = csv_rows(&csv_out);
    let hosts: Vec<&str> = rows.iter().map(|r| r["host"].as_str()).collect();
    assert_eq!(hosts, names);
    for row in &rows {
        assert_eq!(row["reused"], "false");
        assert_eq!(row["status"], "200", "{row:?}");
        assert!(num(row, "tls_ms") > 0.0);
    }
    // Each was a first handshake: the edge issued a certificate for each.
    assert_eq!(
        edge.metric("edgepop_tls_issuance_total{result=\"issued\"}")
            .await,
        5.0
    );
    let r = json(&json_out);
    assert_valid(&r);
    assert_eq!(r["model"]["first_handshake"], "shop-{n}.test");
    let g = &r["groups"][0];
    assert_eq!(g["handshakes"]["count"], 5, "{g:#}");
    assert_eq!(g["new_connections"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_refused_with_the_reason() {
    for (args, reason) in [
        (vec!["ftp://x/"], "not an http:// or https:// URL"),
        (
            vec!["http://x/", "--rate", "0"],
            "--rate 0: must be above 0",
        ),
        (
            vec!["http://x/", "--first-handshake", "a{n}.test"],
            "must be https://",
        ),
        (
            vec!["https://x/", "--first-handshake", "a.test"],
            "the pattern needs {n}",
        ),
        (
            vec!["http://x/", "-H", "nocolon"],
            "expected \"Name: value\"",
        ),
        (
            vec!["http://x/", "--resolve", "x:80"],
            "expected HOST:PORT:ADDR",
        ),
        (
            vec!["http://x/", "--http3"],
            "--http3: the URLs must be https://",
        ),
        (
            vec!["https://x/", "--http2", "--http3"],
            "cannot be used with",
        ),
    ] {
        let out = tokio::process::Command::new(bin())
            .arg("ttfb")
            .args(&args)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_bar_is_drawn_on_a_terminal_only() {
    let addr = stub(&[], 0, Duration::ZERO).await;
    // `script` gives the run a pseudo-terminal as its stderr.
    let run = format!("{} ttfb http://{addr}/ -c 1 -d 1s > /dev/null", bin());
    let out = tokio::process::Command::new("script")
        .args(["-qec", &run, "/dev/null"])
        .output()
        .await
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(tty.contains(" requests, 0 errors, p99 "), "{tty}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_kind_and_the_run_goes_on() {
    // Nothing listens on one target; the other answers after 2 s, past
    // the 300 ms timeout.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let slow = stub(&[], 1, SEC(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    ttfb(&[
        &format!("http://{dead}/"),
        &format!("http://{slow}/"),
        "--timeout",
        "300ms",
        "-n",
        "3",
        "-c",
        "1",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ])
    .await;
    let r = json(&out);
    assert_valid(&r);
    let (refused, stalled) = (&r["targets"][0], &r["targets"][1]);
    assert_eq!(
        refused["errors"],
        serde_json::json!({"connect": 3}),
        "{r:#}"
    );
    assert_eq!(refused["responses"], 0);
    assert!(refused["latency"].is_null());
    // The stall holds the first request past its timeout; the next ones
    // wait on the stub's stall too.
    let timeouts = stalled["errors"]["timeout"].as_u64().unwrap_or(0);
    assert!(timeouts >= 1, "{r:#}");
    assert_eq!(
        timeouts + stalled["responses"].as_u64().unwrap(),
        3,
        "{stalled:#}"
    );
}

/// A small HTTP/3 server (quinn + h3) on 127.0.0.1 with a certificate
/// self-signed (rcgen) for its `names`. It answers 200 with edgepop's
/// headers (`x-edge-route: fra1`, `x-edge-cache: HIT`, `server-timing:
/// edge;dur=0.25`) and `hello h3`; `/reset` resets the request's stream
/// before any response, `/reset-body` after the head and part of the
/// body. It keeps each connection's SNI and each request's `:authority`.
struct H3Server {
    addr: SocketAddr,
    /// Its certificate (PEM): the root a client trusts for it.
    cert: std::path::PathBuf,
    seen: Arc<Seen>,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
struct Seen {
    snis: std::sync::Mutex<Vec<String>>,
    authorities: std::sync::Mutex<Vec<String>>,
}

type Resolver = ::h3::server::RequestResolver<h3_quinn::Connection, Bytes>;

impl H3Server {
    /// `goaway`: each connection answers one request, after a GOAWAY, and
    /// is then held open (not closed) for a while.
    async fn start(names: &[&str], goaway: bool) -> H3Server {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = dir.path().join("h3.pem");
        std::fs::write(&cert, key.cert.pem()).unwrap();
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(key.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![key.cert.der().clone()], der.into())
            .unwrap();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let endpoint = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(Arc::new(quic)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let addr = endpoint.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let shared = seen.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                tokio::spawn(Self::connection(incoming, shared.clone(), goaway));
            }
        });
        H3Server {
            addr,
            cert,
            seen,
            _dir: dir,
        }
    }

    async fn connection(incoming: quinn::Incoming, seen: Arc<Seen>, goaway: bool) {
        // A client that refused the certificate ends here.
        let Ok(quic) = incoming.await else { return };
        let sni = quic
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.server_name)
            .unwrap_or_default();
        seen.snis.lock().unwrap().push(sni);
        let Ok(mut h3) = ::h3::server::builder()
            .build::<_, Bytes>(h3_quinn::Connection::new(quic))
            .await
        else {
            return;
        };
        if goaway {
            let Ok(Some(resolver)) = h3.accept().await else {
                return;
            };
            // The GOAWAY reaches the client well before the answer does.
            let _ = h3.shutdown(1).await;
            tokio::time::sleep(MS(100)).await;
            Self::answer(resolver, &seen).await;
            tokio::time::sleep(SEC(10)).await;
            return;
        }
        while let Ok(Some(resolver)) = h3.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move { Self::answer(resolver, &seen).await });
        }
    }

    async fn answer(resolver: Resolver, seen: &Seen) {
        let Ok((req, mut stream)) = resolver.resolve_request().await else {
            return;
        };
        let authority = req.uri().authority().map(|a| a.to_string());
        seen.authorities
            .lock()
            .unwrap()
            .push(authority.unwrap_or_default());
        if req.uri().path() == "/reset" {
            stream.stop_stream(::h3::error::Code::H3_REQUEST_REJECTED);
            return;
        }
        let resp = http::Response::builder()
            .header("x-edge-route", "fra1")
            .header("x-edge-cache", "HIT")
            .header("server-timing", "edge;dur=0.25")
            .body(())
            .unwrap();
        if stream.send_response(resp).await.is_err() {
            return;
        }
        let _ = stream.send_data(Bytes::from_static(b"hello h3")).await;
        if req.uri().path() == "/reset-body" {
            // The head and the first bytes read before the reset.
            tokio::time::sleep(MS(200)).await;
            stream.stop_stream(::h3::error::Code::H3_INTERNAL_ERROR);
            return;
        }
        let _ = stream.finish().await;
    }

    fn url(&self, path: &str) -> String {
        format!("https://h3.test:{}{path}", self.addr.port())
    }

    fn resolve(&self) -> String {
        format!("h3.test:{}:127.0.0.1", self.addr.port())
    }

    fn snis(&self) -> Vec<String> {
        self.seen.snis.lock().unwrap().clone()
    }

    fn authorities(&self) -> Vec<String> {
        self.seen.authorities.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.seen.snis.lock().unwrap().clear();
        self.seen.authorities.lock().unwrap().clear();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_is_timed_and_grouped_as_tcp_is() {
    let server = H3Server::start(&["h3.test"], false).await;
    let dir = tempfile::tempdir().unwrap();
    let (csv_out, json_out) = (dir.path().join("r.csv"), dir.path().join("r.json"));
    ttfb(&[
        &server.url("/api?x=1"),
        "--resolve",
        &server.resolve(),
        "--cacert",
        server.cert.to_str().unwrap(),
        "--http3",
        "-c",
        "2",
        "-n",
        "20",
        "-q",
        "--csv",
        csv_out.to_str().unwrap(),
        "--json",
        json_out.to_str().unwrap(),
    ])
    .await;
    let r = json(&json_out);
    assert_valid(&r);
    assert_eq!(r["model"]["protocol"], "http3");
    let t = &r["targets"][0];
    assert_eq!(
        (t["requests"].as_u64(), t["responses"].as_u64()),
        (Some(20), Some(20))
    );
    assert_eq!(t["errors"], serde_json::json!({}));
    // Route, cache and server-timing read from the h3 response head.
    assert_eq!(groups(&r, 0), owned(&[("fra1", "HIT", 200, 20)]));
    let g = group(&r, 0, "fra1", "HIT");
    assert_eq!(g["route"], serde_json::json!(["fra1"]));
    assert_eq!(g["server_timing"]["edge"]["count"], 20);
    assert_eq!(g["bytes"], 20 * "hello h3".len() as u64);
    assert_eq!(g["new_connections"], 2);
    assert_eq!(g["handshakes"]["count"], 2, "the QUIC handshakes: {g:#}");

    let rows = csv_rows(&csv_out);
    assert_eq!(rows.len(), 20);
    let new = rows.iter().filter(|r| r["reused"] == "false").count();
    assert_eq!(new, 2, "one QUIC connection per worker: {rows:?}");
    for row in &rows {
        assert_eq!(row["protocol"], "h3", "{row:?}");
        assert_eq!(row["status"], "200", "{row:?}");
        assert_eq!(row["pop"], "fra1", "{row:?}");
        let phases: f64 = ["queue", "dns", "connect", "tls", "ttfb", "transfer"]
            .iter()
            .map(|p| num(row, &format!("{p}_ms")))
            .sum();
        let total = num(row, "total_ms");
        assert!(
            (total - phases).abs() < 1.0,
            "phases {phases} vs total {total}: {row:?}"
        );
        // UDP connects nothing: the QUIC handshake is the tls phase.
        assert_eq!(num(row, "connect_ms"), 0.0, "{row:?}");
        if row["reused"] == "true" {
            assert_eq!(num(row, "tls_ms"), 0.0, "{row:?}");
        } else {
            assert!(num(row, "tls_ms") > 0.0, "{row:?}");
        }
    }
    // Two connections for h3.test (SNI), every request for h3.test:PORT.
    assert_eq!(server.snis(), ["h3.test", "h3.test"]);
    let authorities = server.authorities();
    assert_eq!(authorities.len(), 20);
    let want = format!("h3.test:{}", server.addr.port());
    assert!(authorities.iter().all(|a| *a == want), "{authorities:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_new_connections_and_first_handshakes() {
    let server = H3Server::start(&["h3.test", "h3-1.test", "h3-2.test", "h3-3.test"], false).await;
    let dir = tempfile::tempdir().unwrap();
    let csv_out = dir.path().join("r.csv");
    let json_out = dir.path().join("r.json");
    let port = server.addr.port();
    ttfb(&[
        &server.url("/"),
        "--resolve",
        &server.resolve(),
        "--cacert",
        server.cert.to_str().unwrap(),
        "--http3",
        "--new-connections",
        "-c",
        "1",
        "-n",
        "4",
        "-q",
        "--json",
        json_out.to_str().unwrap(),
    ])
    .await;
    let r = json(&json_out);
    assert_valid(&r);
    assert_eq!(r["model"]["new_connections"], true);
    let g = group(&r, 0, "fra1", "HIT");
    assert_eq!(
        (g["requests"].as_u64(), g["new_connections"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(g["handshakes"]["count"], 4);
    assert_eq!(server.snis().len(), 4);

    // First-handshake mode: the SNI and :authority follow the fresh name.
    server.clear();
    ttfb(&[
        &server.url("/"),
        "--resolve",
        &server.resolve(),
        "--cacert",
        server.cert.to_str().unwrap(),
        "--http3",
        "--first-handshake",
        "h3-{n}.test",
        "-c",
        "1",
        "-n",
        "3",
        "-q",
        "--csv",
        csv_out.to_str().unwrap(),
    ])
    .await;
    let rows = csv_rows(&csv_out);
    let hosts: Vec<&str> = rows.iter().map(|r| r["host"].as_str()).collect();
    assert_eq!(hosts, ["h3-1.test", "h3-2.test", "h3-3.test"]);
    assert!(rows
        .iter()
        .all(|r| r["status"] == "200" && r["protocol"] == "h3"));
    assert_eq!(server.snis(), ["h3-1.test", "h3-2.test", "h3-3.test"]);
    let want: Vec<String> = (1..=3).map(|n| format!("h3-{n}.test:{port}")).collect();
    assert_eq!(server.authorities(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_errors_are_counted_by_kind() {
    let server = H3Server::start(&["h3.test"], false).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    // Roots that do not hold the server's certificate: every QUIC
    // handshake is refused by TLS.
    let other = rcgen::generate_simple_self_signed(vec!["h3.test".to_string()]).unwrap();
    let wrong = dir.path().join("other.pem");
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    ttfb(&[
        &server.url("/"),
        "--resolve",
        &server.resolve(),
        "--cacert",
        wrong.to_str().unwrap(),
        "--http3",
        "-c",
        "1",
        "-n",
        "3",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ])
    .await;
    let r = json(&out);
    assert_valid(&r);
    assert_eq!(
        r["targets"][0]["errors"],
        serde_json::json!({"tls": 3}),
        "{r:#}"
    );
    assert_eq!(r["targets"][0]["responses"], 0);
    assert!(server.authorities().is_empty());

    // Streams reset before and after the head; a UDP port nobody answers
    // on (no refusal comes back: the request's timeout).
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    ttfb(&[
        &server.url("/reset"),
        &server.url("/reset-body"),
        &format!("https://h3.test:{}/", dead.port()),
        "--resolve",
        &server.resolve(),
        "--resolve",
        &format!("h3.test:{}:127.0.0.1", dead.port()),
        "--cacert",
        server.cert.to_str().unwrap(),
        "--http3",
        "--timeout",
        "300ms",
        "-c",
        "1",
        "-n",
        "3",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ])
    .await;
    let r = json(&out);
    assert_valid(&r);
    let errors: Vec<&Value> = r["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["errors"])
        .collect();
    assert_eq!(
        errors,
        [
            &serde_json::json!({"http": 3}),
            &serde_json::json!({"body": 3}),
            &serde_json::json!({"timeout": 3}),
        ],
        "{r:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_goaway_opens_a_new_connection_not_an_error() {
    // Each connection answers one request after its GOAWAY and stays
    // open: every later request goes out on a new connection, as after a
    // keep-alive connection the server closed.
    let server = H3Server::start(&["h3.test"], true).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.csv");
    ttfb(&[
        &server.url("/"),
        "--resolve",
        &server.resolve(),
        "--cacert",
        server.cert.to_str().unwrap(),
        "--http3",
        "-c",
        "1",
        "-n",
        "4",
        "-q",
        "--csv",
        out.to_str().unwrap(),
    ])
    .await;
    let rows = csv_rows(&out);
    for row in &rows {
        assert_eq!(
            (row["status"].as_str(), row["error"].as_str()),
            ("200", ""),
            "{row:?}"
        );
        assert_eq!(row["reused"], "false", "{row:?}");
        assert!(num(row, "tls_ms") > 0.0, "{row:?}");
    }
    assert_eq!(rows.len(), 4);
    assert_eq!(server.snis().len(), 4);
    assert_eq!(server.authorities().len(), 4, "nothing sent after a GOAWAY");
}
