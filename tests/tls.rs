//! HTTPS with on-demand certificates from the local CA, through the binary.

mod common;

use common::*;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

struct Tls {
    edge: Edge,
    https: SocketAddr,
    origin: Origin,
}

async fn tls_edge(extra_sites: &str) -> Tls {
    tls_edge_with("", extra_sites).await
}

/// `tls_extra` goes into the `[tls]` table.
async fn tls_edge_with(tls_extra: &str, extra_sites: &str) -> Tls {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let body = format!(
        "[tls]\nlisten = [\"{https}\"]\nissue_timeout = \"5s\"\n{tls_extra}\n{}{}{}{extra_sites}",
        pool("public", &[(origin.addr, 1)]),
        site("shop.test", "public", "active"),
        site("gone.test", "public", "suspended"),
    );
    Tls {
        edge: Edge::start(&body).await,
        https,
        origin,
    }
}

impl Tls {
    fn root(&self) -> std::path::PathBuf {
        self.edge.dir.path().join("edgepop-data/tls/ca/ca.pem")
    }

    /// A client trusting only the local CA, with `host` resolving here.
    fn client(&self, host: &str, http1: bool) -> reqwest::Client {
        https_client(&self.root(), host, self.https, http1)
    }

    /// GET / on `host` over a new HTTPS connection.
    async fn get(&self, host: &str, http1: bool) -> reqwest::Result<reqwest::Response> {
        self.client(host, http1).get(self.url(host)).send().await
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/", self.https.port())
    }

    async fn issued(&self) -> f64 {
        self.edge
            .metric("edgepop_tls_issuance_total{result=\"issued\"}")
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_handshake_gets_a_certificate_and_both_http_versions_work() {
    let t = tls_edge("").await;
    let r = t
        .get("shop.test", false)
        .await
        .expect("verified TLS to shop.test");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "h2 by ALPN");
    assert_eq!(r.headers()["x-edge-route"], "tst1");
    let seen = t.origin.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(t.issued().await, 1.0);

    let r = t.get("shop.test", true).await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_11)
    );
    assert_eq!(
        t.issued().await,
        1.0,
        "a later handshake uses the held certificate"
    );

    let stored = t
        .edge
        .dir
        .path()
        .join("edgepop-data/tls/certs/shop.test.json");
    // Watched for the expiry alert: the one certificate held, its not-after.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stored).unwrap()).unwrap();
    assert_eq!(t.edge.metric("edgepop_tls_certificates_held").await, 1.0);
    assert_eq!(
        t.edge
            .metric("edgepop_tls_certificate_soonest_expiry_timestamp_seconds")
            .await,
        saved["not_after"].as_f64().expect("not_after in the store"),
    );
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600,
        "private key file is 0600"
    );
    // What an operator asks of the store.
    let out = t.edge.command(&["tls", "status", "shop.test"]);
    let said = String::from_utf8(out.stdout).unwrap();
    for line in [
        "store:       file",
        "state:       valid",
        "not after:",
        "renewal:     ",
        "no ARI from the CA; spread over",
        "last error:  none",
    ] {
        assert!(said.contains(line), "{line}: {said}");
    }
    let none = Command::new(bin())
        .args(["tls", "status", "never.test", "--config"])
        .arg(t.edge.config_path())
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1), "nothing stored: exit 1");
    let key = t.edge.dir.path().join("edgepop-data/tls/ca/ca.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !t.edge.stderr().contains("PRIVATE KEY"),
        "keys never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_and_suspended_names_are_refused_without_issuance() {
    let t = tls_edge("").await;
    for host in ["nope.test", "gone.test"] {
        let err = t.client(host, false).get(t.url(host)).send().await;
        assert!(err.is_err(), "{host} must not get a handshake");
        // A refused handshake ends with a TLS alert, not a bare close.
        let said = s_client_stderr(t.https, host);
        assert!(said.contains("alert access denied"), "{host}: {said}");
    }
    assert_eq!(t.issued().await, 0.0);
    assert_eq!(
        t.edge
            .metric("edgepop_tls_handshakes_total{result=\"refused\"}")
            .await,
        4.0
    );
    assert!(!t
        .edge
        .dir
        .path()
        .join("edgepop-data/tls/certs/nope.test.json")
        .exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_first_handshakes_make_one_certificate() {
    let t = tls_edge("").await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            // A client each: 50 separate connections and handshakes.
            let (c, url) = (t.client("shop.test", true), t.url("shop.test"));
            tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().expect("handshake"), 200);
    }
    assert_eq!(
        t.issued().await,
        1.0,
        "one issuance for 50 waiting handshakes"
    );
    assert!(
        t.edge
            .metric("edgepop_tls_handshakes_total{result=\"ok\"}")
            .await
            >= 50.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_keeps_certificates() {
    let mut t = tls_edge("").await;
    let r = t.get("shop.test", true).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(t.issued().await, 1.0);
    t.edge.kill9();
    t.edge = std::mem::replace(&mut t.edge, Edge::prepare(""))
        .launch(false)
        .await;
    let r = t.get("shop.test", true).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        t.issued().await,
        0.0,
        "the stored certificate was reused, not reissued"
    );
}

/// `openssl s_client` to `addr` for `name`, with `extra` flags.
fn s_client_run(addr: SocketAddr, name: &str, extra: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            name,
        ])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// What `openssl s_client` says on stderr about a handshake with `name`.
fn s_client_stderr(addr: SocketAddr, name: &str) -> String {
    String::from_utf8_lossy(&s_client_run(addr, name, &[]).stderr).into_owned()
}

/// Whether a handshake with `name` at TLS `version` gets a certificate.
fn s_client(addr: SocketAddr, name: &str, version: &str) -> bool {
    String::from_utf8_lossy(&s_client_run(addr, name, &[version]).stdout)
        .contains("BEGIN CERTIFICATE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_tls_12_and_13_are_spoken() {
    let t = tls_edge("").await;
    assert!(s_client(t.https, "shop.test", "-tls1_3"));
    assert!(s_client(t.https, "shop.test", "-tls1_2"));
    assert!(
        !s_client(t.https, "shop.test", "-tls1_1"),
        "TLS 1.1 refused"
    );
    assert!(!s_client(t.https, "shop.test", "-tls1"), "TLS 1.0 refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_certificates_serve_the_operators_names() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "status.ops.test", "DNS:status.ops.test");
    let extra = format!(
        "{}[[tls.certificates]]\nhostnames = [\"status.ops.test\"]\ncert = \"{}\"\nkey = \"{}\"\n",
        site("status.ops.test", "public", "active"),
        cert.display(),
        key.display()
    );
    // [[tls.certificates]] must follow the [tls] table: put it last.
    let t = tls_edge(&extra).await;
    let r = https_client(&cert, "status.ops.test", t.https, false)
        .get(t.url("status.ops.test"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))
        .expect("static certificate verifies");
    assert_eq!(r.status(), 200);
    assert_eq!(t.issued().await, 0.0, "no issuance for a static name");
    // A static certificate is nobody's to renew: its expiry is watched too.
    let expiry = t
        .edge
        .metric("edgepop_tls_certificate_soonest_expiry_timestamp_seconds")
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now && expiry < now + 3700.0 * 86400.0, "{expiry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_redirects_to_https_and_hsts_is_sent_per_site() {
    let plain = format!(
        "{}https_redirect = false\nhsts = \"\"\n",
        site("plain.test", "public", "active")
    );
    let t = tls_edge_with("redirect_http = true\nhsts = \"max-age=600\"\n", &plain).await;
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let r = no_follow
        .get(t.edge.url("/a/b?c=1"))
        .header("host", "shop.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://shop.test:{}/a/b?c=1", t.https.port())
    );
    assert_eq!(r.headers()["x-edge-route"], "tst1");
    assert_eq!(t.origin.hits(), 0, "redirected, not proxied");
    // Unknown names are still 421 over HTTP: no redirect for them.
    let r = no_follow
        .get(t.edge.url("/"))
        .header("host", "nope.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);

    let r = t.get("shop.test", false).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=600");

    // A site that opted out: plain HTTP is served, no HSTS over HTTPS.
    let r = no_follow
        .get(t.edge.url("/"))
        .header("host", "plain.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = t.get("plain.test", false).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewal_replaces_a_near_expiry_certificate_without_a_failed_handshake() {
    let t = tls_edge_with("local_ca_validity = \"6s\"\nrenew_check = \"300ms\"\n", "").await;
    let r = t.get("shop.test", true).await.unwrap();
    assert_eq!(r.status(), 200);
    let first = peer_cert(t.https, "shop.test", &t.root()).await.unwrap();

    // New handshakes all along, past the first certificate's expiry.
    for i in 0..40 {
        let r = t.get("shop.test", true).await;
        assert_eq!(
            r.map(|r| r.status().as_u16()).map_err(|e| format!("{e:?}")),
            Ok(200),
            "handshake {i}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        t.edge
            .metric("edgepop_tls_issuance_total{result=\"renewed\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        t.issued().await,
        1.0,
        "renewals happened in the background, not in handshakes"
    );
    assert_ne!(
        peer_cert(t.https, "shop.test", &t.root()).await.unwrap(),
        first,
        "a new certificate is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_certificate_is_dropped_and_replaced() {
    let t = tls_edge_with("renew_check = \"300ms\"\n", "").await;
    let old = peer_cert(t.https, "shop.test", &t.root())
        .await
        .unwrap_or_else(|e| panic!("first handshake: {e}; edge log:\n{}", t.edge.stderr()));
    let out = t.edge.command(&["tls", "revoke", "shop.test"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("shop.test: revoked"));
    let replaced = eventually(Duration::from_secs(10), || async {
        peer_cert(t.https, "shop.test", &t.root())
            .await
            .is_ok_and(|c| c != old)
    })
    .await;
    assert!(replaced, "the revoked certificate is no longer served");
    assert_eq!(t.issued().await, 2.0);

    let out = Command::new(bin())
        .args(["tls", "revoke", "nothing.test", "--config"])
        .arg(t.edge.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no stored certificate for nothing.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_streams_are_cancelled_and_logged_once_per_connection() {
    // An origin that takes its time: a stream it sees is still in flight
    // when the client resets it.
    let slow = Origin::start(Duration::from_secs(3)).await;
    let t = tls_edge(&format!(
        "{}{}",
        pool("enterprise", &[(slow.addr, 1)]),
        site("slow.test", "enterprise", "active")
    ))
    .await;
    // The certificate first, so the h2 connection is not the first handshake.
    assert_eq!(t.get("slow.test", false).await.unwrap().status(), 200);

    let mut send = h2_connect(t.https, "slow.test", &t.root()).await;
    let streams = 10;
    for i in 0..streams {
        send = send.ready().await.unwrap();
        let req = http::Request::get(format!("https://slow.test:{}/r{i}", t.https.port()))
            .body(())
            .unwrap();
        let (_response, mut stream) = send.send_request(req, true).unwrap();
        // Half of them at once (before the edge can act), half a moment later.
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stream.send_reset(h2::Reason::CANCEL);
    }
    // Every reset stream ends cancelled: before the origin, or in flight.
    let metric = |when: &'static str| {
        let edge = &t.edge;
        async move {
            edge.metric(&format!(
                "edgepop_client_cancelled_total{{when=\"{when}\"}}"
            ))
            .await
        }
    };
    let all = eventually(Duration::from_secs(15), || async {
        metric("before_origin").await + metric("in_flight").await == streams as f64
    })
    .await;
    let (before, during) = (metric("before_origin").await, metric("in_flight").await);
    assert!(
        all,
        "cancelled: {before} before the origin, {during} in flight"
    );
    assert!(
        before >= 1.0,
        "no stream reset at once was kept from the origin"
    );
    assert!(
        slow.hits() < streams,
        "all {streams} reset streams reached the origin"
    );
    // The log has one line for the connection, not one per stream.
    let log = t.edge.stderr();
    assert_eq!(
        log.matches("client cancelled a request").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("Fail to proxy"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_for_another_site_than_the_sni_is_421_unless_the_site_allows_it() {
    let t = tls_edge(&format!(
        "{}{}allow_fronting = true\n",
        site("other.test", "public", "active"),
        site("open.test", "public", "active"),
    ))
    .await;
    let client = t.client("shop.test", true);
    let ask = |host: &'static str| client.get(t.url("shop.test")).header("host", host).send();
    // The connection's own name, then another seller's name on it.
    assert_eq!(ask("shop.test").await.unwrap().status(), 200);
    let r = ask("other.test").await.unwrap();
    assert_eq!(r.status(), 421);
    let body = r.text().await.unwrap();
    assert!(body.contains("opened for shop.test"), "{body}");
    // A site that allows it is served on any connection.
    assert_eq!(ask("open.test").await.unwrap().status(), 200);
    assert_eq!(t.origin.hits(), 2, "the fronted request reached the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_domain_the_stream_makes_active_has_its_certificate_before_its_first_visitor() {
    use common::stream::{domain, Broker, DOMAINS};
    let broker = Broker::start().await;
    let origin = Origin::start(Duration::from_millis(1)).await;
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let edge = Edge::start_initialised(&format!(
        "[tls]\nlisten = [\"{https}\"]\nissue_timeout = \"5s\"\n{}{}",
        broker.sync_section(),
        pool("public", &[(origin.addr, 1)]),
    ))
    .await;
    let t = Tls {
        edge,
        https,
        origin,
    };
    let producer = broker.producer();
    let publish = |host: &'static str, status: &'static str, version: i64| {
        let record = domain(host, 9, status, version, false);
        let key = format!("{{\"hostname\":\"{host}\"}}");
        let producer = &producer;
        async move { producer.send(DOMAINS, &key, Some(&record)).await }
    };
    publish("new.test", "active", 1).await;

    // Ordered as the change arrived: issued, stored, held, no handshake yet.
    let ahead = "edgepop_tls_ahead_total{result=\"issued_ahead\"}";
    assert!(
        eventually(Duration::from_secs(30), || async {
            t.edge.metric(ahead).await == 1.0
        })
        .await,
        "no certificate ordered ahead\n{}",
        t.edge.stderr()
    );
    assert_eq!(t.issued().await, 1.0);
    let stored = t
        .edge
        .dir
        .path()
        .join("edgepop-data/tls/certs/new.test.json");
    assert!(stored.exists(), "in the store for the other PoPs");
    assert_eq!(
        t.edge
            .metric("edgepop_tls_handshakes_total{result=\"ok\"}")
            .await,
        0.0
    );

    // The first visitor's handshake issues nothing.
    let r = t.get("new.test", true).await.expect("verified TLS");
    assert_eq!(r.status(), 200);
    assert_eq!(t.issued().await, 1.0, "the first handshake did no issuance");

    // A suspended domain gets no order; one made active again is held.
    publish("paused.test", "suspended", 1).await;
    publish("new.test", "active", 2).await;
    let held = "edgepop_tls_ahead_total{result=\"held\"}";
    assert!(
        eventually(Duration::from_secs(30), || async {
            t.edge.metric(held).await == 1.0
        })
        .await
    );
    assert_eq!(t.issued().await, 1.0, "nothing for the suspended name");
    assert!(!t
        .edge
        .dir
        .path()
        .join("edgepop-data/tls/certs/paused.test.json")
        .exists());
}

/// A Debezium snapshot record (`op: r`) of one domain, as `replica load` reads it.
fn domain_snapshot(host: &str, status: &str) -> String {
    format!(
        "{{\"before\": null, \"after\": {{\"hostname\": \"{host}\", \"store_id\": 1, \"status\": \"{status}\", \"tier\": \"public\", \"version\": 1}}, \"source\": {{\"table\": \"domains\", \"lsn\": 1001, \"ts_ms\": 1795000000000}}, \"op\": \"r\", \"ts_ms\": 1795000000000}}\n"
    )
}

/// A new PoP bootstrapped from a snapshot of `domains` (name, status),
/// loaded before it first starts; `tls_extra`: keys of `[tls]`.
async fn bootstrapped(domains: &[(&str, &str)], tls_extra: &str) -> Tls {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let edge = Edge::prepare(&format!(
        "[tls]\nlisten = [\"{https}\"]\nissue_timeout = \"5s\"\n{tls_extra}\n{}",
        pool("public", &[(origin.addr, 1)]),
    ));
    let snapshot = edge.dir.path().join("domains.jsonl");
    let records: String = domains
        .iter()
        .map(|(host, status)| domain_snapshot(host, status))
        .collect();
    std::fs::write(&snapshot, records).unwrap();
    edge.command(&["replica", "init"]);
    edge.command(&["replica", "load", snapshot.to_str().unwrap()]);
    Tls {
        edge: edge.launch(false).await,
        https,
        origin,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn domains_loaded_from_a_snapshot_have_certificates_before_their_first_visitor() {
    let domains = [
        ("one.test", "active"),
        ("two.test", "active"),
        ("paused.test", "suspended"),
    ];
    let mut t = bootstrapped(&domains, "").await;
    let certs = t.edge.dir.path().join("edgepop-data/tls/certs");
    let ahead = "edgepop_tls_ahead_total{result=\"issued_ahead\"}";
    assert!(
        eventually(Duration::from_secs(30), || async {
            t.edge.metric(ahead).await == 2.0
        })
        .await,
        "both active domains ordered ahead\n{}",
        t.edge.stderr()
    );
    assert!(certs.join("one.test.json").exists() && certs.join("two.test.json").exists());
    assert!(
        !certs.join("paused.test.json").exists(),
        "nothing for a suspended domain"
    );
    assert_eq!(
        t.edge
            .metric("edgepop_tls_handshakes_total{result=\"ok\"}")
            .await,
        0.0,
        "before any handshake"
    );

    // Restarted: what the store holds is neither ordered again nor loaded
    // until a handshake wants it.
    t.edge.kill9();
    t.edge = t.edge.launch(false).await;
    let checked = eventually(Duration::from_secs(30), || async {
        t.edge.stderr().contains("active domains checked")
    })
    .await;
    assert!(checked, "{}", t.edge.stderr());
    assert_eq!(t.edge.metric(ahead).await, 0.0);
    assert_eq!(t.issued().await, 0.0);
    assert_eq!(t.edge.metric("edgepop_tls_certificates_held").await, 0.0);
    let r = t.get("one.test", true).await.expect("verified TLS");
    assert_eq!(r.status(), 200);
    assert_eq!(t.issued().await, 0.0, "the first handshake did no issuance");
    assert_eq!(
        t.edge
            .metric("edgepop_tls_issuance_total{result=\"from_store\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stored_certificate_nobody_asks_for_is_renewed_before_it_expires() {
    // 40 s certificates: renewal may start 13 s before the end.
    let t = bootstrapped(
        &[("quiet.test", "active")],
        "local_ca_validity = \"40s\"\nsweep_every = \"1s\"\nrenew_check = \"1s\"",
    )
    .await;
    let stored = t
        .edge
        .dir
        .path()
        .join("edgepop-data/tls/certs/quiet.test.json");
    let mut edge = t.edge;
    let not_after = |path: &std::path::Path| -> Option<i64> {
        let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        saved["not_after"].as_i64()
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            not_after(&stored).is_some()
        })
        .await,
        "ordered ahead\n{}",
        edge.stderr()
    );
    let first = not_after(&stored).unwrap();
    // A restart: the certificate is in the store only, and no visitor
    // comes. The sweep takes it in when its renewal share begins.
    edge.kill9();
    let edge = edge.launch(false).await;
    let renewed = eventually(Duration::from_secs(60), || async {
        not_after(&stored).is_some_and(|t| t > first)
    })
    .await;
    assert!(renewed, "renewed in the store\n{}", edge.stderr());
    assert!(
        edge.metric("edgepop_tls_ahead_total{result=\"held_for_renewal\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        edge.metric("edgepop_tls_handshakes_total{result=\"ok\"}")
            .await,
        0.0,
        "no visitor was needed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_resumes_its_session_per_name_from_the_one_shared_cache() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = tls_edge(&site("other.test", "public", "active")).await;
    // One client config: rustls keeps its sessions by server name.
    let connector = tls_connector(&t.root(), &[b"http/1.1"]);
    let handshake = |host: &'static str| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(t.https).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from(host).unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            // TLS 1.3 sends its session tickets after the handshake: read
            // an answer so they have arrived.
            let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            tls.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            tls.read_to_end(&mut answer).await.unwrap();
            assert!(
                answer.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
            tls.get_ref().1.handshake_kind()
        }
    };
    use rustls::HandshakeKind::{Full, Resumed};
    assert_eq!(handshake("shop.test").await, Some(Full));
    assert_eq!(handshake("shop.test").await, Some(Resumed));
    // Another name on the same node: its own full handshake first.
    assert_eq!(handshake("other.test").await, Some(Full));
    assert_eq!(handshake("other.test").await, Some(Resumed));
    assert_eq!(handshake("shop.test").await, Some(Resumed));
}
