//! HTTP/3 through the binary, driven by an independent client (Python's
//! aioquic, `tests/h3/client.py`): the same rules, cache, relay, headers
//! and log as HTTP/1 and HTTP/2, certificates obtained during the QUIC
//! handshake, Alt-Svc on the TCP listeners' answers, 0-RTT refused.

mod common;

use common::h3::{body_pattern, run_async, sha256_hex, H3Outcome, H3Request};
use common::peering::{peer_addr, Pop, PopCa};
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

const SEC: fn(u64) -> Duration = Duration::from_secs;

/// An origin that answers each request with its own body (sha256 and
/// length in headers): a body that went both ways whole is checkable.
async fn echo_origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let proto = req
                        .headers()
                        .get("x-forwarded-proto")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let sha = sha256_hex(&body);
                    let resp = hyper::Response::builder()
                        .header("x-got-bytes", body.len())
                        .header("x-got-sha256", sha)
                        .header("x-got-proto", proto)
                        .body(Full::new(body))
                        .unwrap();
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct Node {
    edge: Edge,
    https: SocketAddr,
}

impl Node {
    /// An HTTPS node (local CA) with its QUIC listener on the same port
    /// (the default), the demo pages, `origin` behind shop.test.
    async fn start(origin: SocketAddr, tls_extra: &str, sites: &str) -> Node {
        Node::start_with(origin, tls_extra, sites, "").await
    }

    /// `server` goes into `[server]`.
    async fn start_with(origin: SocketAddr, tls_extra: &str, sites: &str, server: &str) -> Node {
        let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Node::start_on(https, origin, tls_extra, sites, server).await
    }

    /// A node whose HTTPS and QUIC listeners are on `https`.
    async fn start_on(
        https: SocketAddr,
        origin: SocketAddr,
        tls_extra: &str,
        sites: &str,
        server: &str,
    ) -> Node {
        let body = format!(
            "[tls]\nlisten = [\"{https}\"]\nissue_timeout = \"10s\"\n{tls_extra}\n\
             [proxy]\nmax_head_bytes = 8192\n{}{}{}{sites}",
            pool("public", &[(origin, 1)]),
            site("shop.test", "public", "active"),
            site("gone.test", "public", "suspended"),
        );
        let edge = Edge::prepare(&body);
        let conf = std::fs::read_to_string(edge.config_path()).unwrap();
        let conf = conf.replace("[server]\n", &format!("[server]\n{server}"));
        std::fs::write(edge.config_path(), conf).unwrap();
        edge.load_demo();
        let edge = edge.launch(false).await;
        let root = edge.dir.path().join("edgepop-data/tls/ca/ca.pem");
        assert!(
            eventually(SEC(10), || async { root.exists() }).await,
            "the local CA's root is written"
        );
        Node { edge, https }
    }

    fn root(&self) -> std::path::PathBuf {
        self.edge.dir.path().join("edgepop-data/tls/ca/ca.pem")
    }

    fn h3(&self, name: &str, path: &str) -> H3Request {
        let mut req = H3Request::get(self.https, name, path);
        req.ca = Some(self.root());
        req.timeout = SEC(20);
        req
    }

    async fn one(&self, req: H3Request) -> H3Outcome {
        let out = run_async(&req).await;
        assert!(out.error.is_none(), "{out:?}\n{}", self.edge.stderr());
        assert_eq!(out.alpn.as_deref(), Some("h3"));
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http3_requests_take_the_same_path_as_http2_ones() {
    let origin = echo_origin().await;
    let off = "[[sites]]\nhostname = \"quiet.test\"\nstore_id = 1\ntier = \"public\"\n\
               status = \"active\"\nhttp3 = false\n";
    // Nothing ordered ahead: each certificate is a handshake's.
    let n = Node::start(origin, "issue_ahead = false", off).await;

    // A name with no certificate yet: obtained during the QUIC handshake.
    let mut page = n.h3("shop.test", "/");
    page.repeat = 2;
    let out = n.one(page).await;
    assert!(out.cert_names.contains(&"shop.test".to_string()), "{out:?}");
    let issued = "edgepop_tls_issuance_total{result=\"issued\"}";
    assert_eq!(n.edge.metric(issued).await, 1.0);
    let (first, second) = (&out.responses[0], &out.responses[1]);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-edge-cache"), Some("MISS"));
    assert_eq!(second.header("x-edge-cache"), Some("HIT"));
    assert_eq!(first.header("x-edge-route"), Some("tst1"));
    let alt_svc = format!("h3=\":{}\"; ma=86400", n.https.port());
    assert_eq!(second.header("alt-svc"), Some(alt_svc.as_str()));
    assert!(second.body.as_deref().unwrap().contains("Demo shop"));
    // Both answered by the hot path, as an HTTP/2 stream's would be.
    let answered = "edgepop_fast_path_total{outcome=\"answered\"}";
    assert_eq!(n.edge.metric(answered).await, 2.0);

    // The same page over HTTP/2 (same certificate, no new order): the
    // same body and headers but the per-request ones.
    let h2 = https_client(&n.root(), "shop.test", n.https, false);
    let r = h2
        .get(format!("https://shop.test:{}/", n.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["alt-svc"], alt_svc.as_str(), "Alt-Svc on h2");
    assert_eq!(r.headers()["x-edge-cache"], "HIT");
    for name in ["content-type", "etag", "cache-control", "x-edge-route"] {
        assert_eq!(
            r.headers().get(name).map(|v| v.to_str().unwrap()),
            second.header(name),
            "{name} on h2 and h3"
        );
    }
    let h2_body = r.bytes().await.unwrap();
    assert_eq!(sha256_hex(&h2_body), second.body_sha256);
    assert_eq!(n.edge.metric(issued).await, 1.0, "one certificate for both");
    let h1 = https_client(&n.root(), "shop.test", n.https, true);
    let r = h1
        .get(format!("https://shop.test:{}/", n.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["alt-svc"], alt_svc.as_str(), "Alt-Svc on h1");

    // Proxied: a GET, and a 1 MB POST whose body goes both ways whole.
    let out = n.one(n.h3("shop.test", "/cart")).await;
    let r = &out.responses[0];
    assert_eq!((r.status, r.header("x-edge-cache")), (200, Some("BYPASS")));
    assert_eq!(r.header("x-got-proto"), Some("https"));
    let mut post = n.h3("shop.test", "/upload");
    post.method = "POST".into();
    post.body_size = 1 << 20;
    let out = n.one(post).await;
    let r = &out.responses[0];
    assert_eq!(r.status, 200, "{out:?}");
    assert_eq!(r.header("x-got-bytes"), Some("1048576"));
    assert_eq!(
        r.header("x-got-sha256"),
        Some(sha256_hex(&body_pattern(1 << 20)).as_str())
    );
    assert_eq!(r.body_len, 1 << 20, "the echo came back whole");
    assert_eq!(r.body_sha256, sha256_hex(&body_pattern(1 << 20)));

    // Refusals: another site than the connection's name (421), a head
    // past proxy.max_head_bytes (431), names with no certificate.
    let mut other = n.h3("shop.test", "/");
    other.authority = Some("nowhere.test".into());
    let out = n.one(other).await;
    assert_eq!(out.responses[0].status, 421, "{out:?}");
    let mut big = n.h3("shop.test", "/");
    big.headers.push(("x-big".into(), "b".repeat(9000)));
    let out = n.one(big).await;
    assert_eq!(out.responses[0].status, 431, "{out:?}");
    for name in ["nowhere.test", "gone.test"] {
        let out = run_async(&n.h3(name, "/")).await;
        assert!(
            out.error.is_some(),
            "{name}: refused in the handshake: {out:?}"
        );
    }
    assert_eq!(
        n.edge.metric(issued).await,
        1.0,
        "nothing issued for refused names"
    );

    // A site with HTTP/3 off is not advertised (and still served).
    let out = n.one(n.h3("quiet.test", "/")).await;
    assert_eq!(out.responses[0].status, 200);
    assert_eq!(out.responses[0].header("alt-svc"), None);

    // 0-RTT is refused: the request is answered after the handshake.
    let mut early = n.h3("shop.test", "/");
    early.zero_rtt = true;
    let out = n.one(early).await;
    // The session resumes, but its ticket allows no early data: the
    // client does not even try, and would be refused if it did.
    assert!(out.session_resumed, "{out:?}");
    assert!(!out.early_data_attempted, "{out:?}");
    assert!(!out.early_data_accepted, "{out:?}");
    assert_eq!(out.responses[0].status, 200);

    // Counted and logged like any request.
    let h3_ok = "edgepop_quic_handshakes_total{result=\"ok\"}";
    assert!(n.edge.metric(h3_ok).await >= 7.0);
    assert!(
        n.edge
            .metric("edgepop_quic_handshakes_total{result=\"refused\"}")
            .await
            >= 2.0
    );
    assert!(
        n.edge
            .metric("edgepop_quic_streams_total{result=\"request\"}")
            .await
            >= 7.0
    );
    let log = n.edge.access_log();
    let upload = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["path"] == "/upload")
        .unwrap_or_else(|| panic!("no access line for the upload:\n{log}"));
    assert_eq!(upload["status"], 200);
    assert_eq!(upload["proto"], "HTTP/3.0");
    assert_eq!(upload["bytes"], 1 << 20, "{upload}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relayed_http3_request_carries_the_whole_route_after_a_retry() {
    let ca = PopCa::new(&["fra1", "ams1"]);
    let (fra_peer, ams_peer) = (peer_addr(), peer_addr());
    let origin = echo_origin().await;
    let site = site("shop.test", "public", "active");
    let ams = Pop::start(
        "ams1",
        ams_peer,
        &format!(
            "{}{site}{}",
            pool("public", &[(origin, 1)]),
            ca.peering("ams1", ams_peer, &[("fra1", fra_peer)])
        ),
        |_| {},
    )
    .await;
    // fra1: no origin it can reach, HTTPS and QUIC, every client asked to
    // prove its address first (Retry).
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let fra = Pop::start(
        "fra1",
        fra_peer,
        &format!(
            "[tls]\nlisten = [\"{https}\"]\nquic_retry_above = 0\n{}{site}{}",
            pool("public", &[(dead, 1)]),
            ca.peering("fra1", fra_peer, &[("ams1", ams_peer)])
        ),
        |_| {},
    )
    .await;
    assert!(
        eventually(SEC(10), || fra.sees_ready("ams1")).await,
        "fra1 never saw ams1 ready: {}",
        fra.edge.stderr()
    );
    let root = fra.edge.dir.path().join("edgepop-data/tls/ca/ca.pem");
    let mut req = H3Request::get(https, "shop.test", "/cart");
    req.ca = Some(root);
    req.timeout = SEC(20);
    let out = run_async(&req).await;
    assert!(out.error.is_none(), "{out:?}\n{}", fra.edge.stderr());
    let r = &out.responses[0];
    assert_eq!(r.status, 200, "{out:?}");
    assert_eq!(r.header("x-edge-route"), Some("fra1, ams1"));
    assert_eq!(r.header("x-edge-cache"), Some("BYPASS"));
    assert!(r.header("server-timing").unwrap().contains("relay;dur="));
    assert_eq!(
        r.header("x-got-proto"),
        Some("https"),
        "the client's scheme"
    );
    assert!(fra.edge.metric("edgepop_quic_retries_total").await >= 1.0);
    drop(ams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quic_connections_are_held_to_the_per_client_limit() {
    let origin = Origin::start(SEC(2)).await;
    let limit = "max_connections_per_client = 1\n";
    let n = Node::start_with(origin.addr, "", "", limit).await;
    // One connection, busy for 2 s (the origin's delay)...
    let first = n.h3("shop.test", "/slow");
    let first = tokio::spawn(async move { run_async(&first).await });
    let refused = "edgepop_quic_connections_refused_total{reason=\"per_client\"}";
    let mut second = n.h3("shop.test", "/");
    second.timeout = SEC(3);
    // ...so a second one from the same address is refused before its
    // handshake (tried until the first is surely open).
    let mut out = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let o = run_async(&second).await;
        if o.error.is_some() {
            out = Some(o);
            break;
        }
    }
    let out = out.expect("a second connection from the same address was refused");
    assert!(out.responses.iter().all(|r| r.status == 0), "{out:?}");
    assert!(n.edge.metric(refused).await >= 1.0);
    let first = first.await.unwrap();
    assert!(first.error.is_none(), "{first:?}");
    assert_eq!(first.responses[0].status, 200, "the first is served");
    // Its place is given back with the connection.
    assert!(
        eventually(SEC(10), || async {
            n.edge.metric("edgepop_quic_connections_open").await == 0.0
        })
        .await
    );
    let again = n.one(n.h3("shop.test", "/")).await;
    assert_eq!(again.responses[0].status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttfb_compares_http3_and_http2_on_the_same_node() {
    let origin = echo_origin().await;
    let n = Node::start(origin, "", "").await;
    let dir = tempfile::tempdir().unwrap();
    let resolve = format!("shop.test:{}:127.0.0.1", n.https.port());
    let url = format!("https://shop.test:{}/", n.https.port());
    let mut reports = Vec::new();
    for proto in ["--http3", "--http2"] {
        let json = dir.path().join(format!("{proto}.json"));
        let out = std::process::Command::new(bin())
            .args(["ttfb", &url, "--resolve", &resolve, "--cacert"])
            .arg(n.root())
            .args([proto, "-c", "2", "-n", "40", "-q", "--json"])
            .arg(&json)
            .output()
            .unwrap();
        succeeded(out, format!("edgepop ttfb {proto}"));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        reports.push(report);
    }
    let (h3, h2) = (&reports[0], &reports[1]);
    assert_eq!(h3["model"]["protocol"], "http3");
    assert_eq!(h2["model"]["protocol"], "http2");
    for r in [h3, h2] {
        let t = &r["targets"][0];
        assert_eq!(t["responses"], 40, "{r:#}");
        assert_eq!(t["errors"], serde_json::json!({}), "{r:#}");
        // Every answer from this PoP's cache (the first h3 one a miss).
        let groups = r["groups"].as_array().unwrap();
        assert!(groups
            .iter()
            .all(|g| g["pop"] == "tst1" && g["status"] == 200));
        let hits: u64 = groups
            .iter()
            .filter(|g| g["cache"] == "HIT")
            .map(|g| g["requests"].as_u64().unwrap())
            .sum();
        assert!(hits >= 39, "{r:#}");
    }
    // Two QUIC connections, each one handshake; nothing on TCP's connect.
    let g = &h3["groups"].as_array().unwrap()[0];
    assert_eq!(g["phases"]["connect"]["max_ms"], 0.0, "{g:#}");
    let served = "edgepop_quic_streams_total{result=\"request\"}";
    assert_eq!(n.edge.metric(served).await, 40.0);
}

/// A QUIC connection to `addr` for shop.test (ALPN h3), verified against
/// `root`, with a long idle timeout of its own.
async fn quic_connect(addr: SocketAddr, root: &std::path::Path) -> quinn::Connection {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(root).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut config = quinn::ClientConfig::new(std::sync::Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(SEC(60).try_into().unwrap()));
    config.transport_config(std::sync::Arc::new(transport));
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client
        .connect_with(config, addr, "shop.test")
        .unwrap()
        .await
        .expect("QUIC handshake with the first node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_pop_resets_a_moved_connection_at_once_when_they_share_the_key() {
    let origin = echo_origin().await;
    let key = "quic_reset_key = \"one-secret-every-pop-of-the-network-shares\"\n";
    for (second_key, reset) in [(key, true), ("", false)] {
        // The first PoP takes the handshake...
        let mut first = Node::start(origin, key, "").await;
        let connection = quic_connect(first.https, &first.root()).await;
        // ...then the route moves: the first is gone, another PoP holds
        // the address (here: the same port on this machine).
        first.edge.kill9();
        let _second = Node::start_on(first.https, origin, second_key, "", "").await;
        // The client's next packets reach the second PoP.
        let (mut send, _recv) = connection.open_bi().await.unwrap();
        let _ = send.write_all(b"hello?").await;
        let closed = tokio::time::timeout(SEC(5), connection.closed()).await;
        match (reset, closed) {
            (true, Ok(quinn::ConnectionError::Reset)) => {}
            (false, Err(_)) => {} // nothing the client can trust: its idle timeout
            (want, got) => panic!("shared key {want}: {got:?}"),
        }
    }
}
