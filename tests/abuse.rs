//! An edge on the open internet, tried as a client that does not play by
//! the rules: idle connections, odd framing, odd Hosts, methods no origin
//! should see, and error pages that must not tell internals.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` as is and reads until the edge closes (or `limit`).
async fn raw(addr: SocketAddr, request: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn edge_with(origin: &Origin, extra: &str) -> Edge {
    edge_with_server(origin, extra, "").await
}

/// `edge_with`, plus `server` lines in the harness's `[server]` table.
async fn edge_with_server(origin: &Origin, extra: &str, server: &str) -> Edge {
    let edge = Edge::prepare(&format!(
        "{extra}\n{}{}",
        pool("public", &[(origin.addr, 1)]),
        site("ok.test", "public", "active"),
    ));
    let conf = std::fs::read_to_string(edge.config_path()).unwrap();
    let conf = conf.replace("[server]\n", &format!("[server]\n{server}"));
    std::fs::write(edge.config_path(), conf).unwrap();
    edge.launch(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_are_closed_after_the_timeout() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let edge = edge_with(&origin, "[proxy]\nkeepalive_timeout = \"1s\"").await;
    let mut s = TcpStream::connect(edge.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n")
        .await
        .unwrap();
    // The response, then the edge's close: read_to_end ends only at EOF.
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection was still open 10 s after a 1 s keepalive_timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_and_ambiguous_content_length_never_reach_the_origin() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let edge = edge_with(&origin, "").await;
    let limit = Duration::from_secs(5);

    let r = raw(
        edge.http,
        b"TRACE / HTTP/1.1\r\nHost: ok.test\r\nCookie: secret=1\r\nConnection: close\r\n\r\n",
        limit,
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    assert!(r.to_ascii_lowercase().contains("\r\nallow: get"), "{r}");
    assert!(!r.contains("secret=1"), "TRACE echoed the request: {r}");

    for framing in [
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: +5\r\n",
    ] {
        let req =
            format!("POST / HTTP/1.1\r\nHost: ok.test\r\n{framing}Connection: close\r\n\r\nhello");
        let r = raw(edge.http, req.as_bytes(), limit).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{framing:?}: {r}");
    }
    assert_eq!(origin.hits(), 0, "refused requests reached the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_hears_the_normalised_host_and_bad_ports_are_refused() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let edge = edge_with(&origin, "").await;
    let limit = Duration::from_secs(5);

    // Trailing dot and case; a fullwidth spelling (UTS 46 maps it, as browsers do).
    for host in ["OK.test.", "ｏｋ.test"] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let r = raw(edge.http, req.as_bytes(), limit).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{host}: {r}");
        let seen = origin.last_headers.lock().unwrap().clone().unwrap();
        assert_eq!(seen["host"], "ok.test", "{host}");
        assert_eq!(seen["x-forwarded-host"], "ok.test", "{host}");
    }
    let hits = origin.hits();
    for host in ["ok.test:0", "ok.test:99999", "ok.test:", "ok.test:8o"] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let r = raw(edge.http, req.as_bytes(), limit).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{host}: {r}");
    }
    assert_eq!(origin.hits(), hits, "a bad Host reached the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let edge = edge_with(&origin, "").await;
    let r = raw(
        edge.http,
        b"GET /one HTTP/1.1\r\nHost: ok.test\r\n\r\nGET /two HTTP/1.1\r\nHost: ok.test\r\n\r\nHEAD /three HTTP/1.1\r\nHost: ok.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        r.matches("HTTP/1.1 200").count(),
        3,
        "three pipelined requests, three answers: {r}"
    );
    assert_eq!(origin.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pipelined_after_an_idle_wait_and_behind_a_body_are_answered() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let edge = edge_with(&origin, "").await;
    let mut s = TcpStream::connect(edge.http).await.unwrap();
    // One request, its answer, a pause on the idle connection...
    s.write_all(b"GET /one HTTP/1.1\r\nHost: ok.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...then a POST with its body and a GET behind it in one write.
    s.write_all(b"POST /two HTTP/1.1\r\nHost: ok.test\r\nContent-Length: 2\r\n\r\nabGET /three HTTP/1.1\r\nHost: ok.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_name_a_request_id_not_internals() {
    let mut dead = Origin::start(Duration::from_millis(1)).await;
    dead.kill();
    let slow = Origin::start(Duration::from_secs(3)).await;
    let edge = Edge::start(&format!(
        "[proxy]\nread_timeout = \"300ms\"\nconnect_timeout = \"300ms\"\n\n{}{}{}{}",
        pool("public", &[(dead.addr, 1)]),
        pool("enterprise", &[(slow.addr, 1)]),
        site("dead.test", "public", "active"),
        site("slow.test", "enterprise", "active"),
    ))
    .await;
    for (host, status) in [("dead.test", 503), ("slow.test", 504)] {
        let r = edge.get(host, "/").send().await.unwrap();
        assert_eq!(r.status(), status, "{host}");
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 16, "{id}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains(&format!("request id: {id}")),
            "{host}: {body:?}"
        );
        for internal in [
            "127.0.0.1",
            "Peer",
            "refused",
            "os error",
            &dead.addr.port().to_string(),
            &slow.addr.port().to_string(),
        ] {
            assert!(!body.contains(internal), "{host}: {internal:?} in {body:?}");
        }
        // The full story is in the access log, under the same id.
        let found = eventually(Duration::from_secs(5), || async {
            edge.access_log().lines().any(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                v["request_id"] == id.as_str()
                    && v["error"]
                        .as_str()
                        .is_some_and(|e| e.len() > body.len() / 4)
            })
        })
        .await;
        assert!(
            found,
            "{host}: no access log line with request_id {id} and the error"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_get_from_its_own_address_only() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let edge = Edge::prepare(&format!(
        "{}{}",
        pool("public", &[(origin.addr, 1)]),
        site("ok.test", "public", "active")
    ));
    // A name for the admin listener, in the harness's own [admin] section.
    let own = format!("[admin]\nlisten = \"{}\"\n", edge.admin);
    let conf = std::fs::read_to_string(edge.config_path()).unwrap();
    let named = format!("{own}hosts = [\"edge-admin.internal\"]\n");
    std::fs::write(edge.config_path(), conf.replace(&own, &named)).unwrap();
    let edge = edge.launch(false).await;
    let limit = Duration::from_secs(5);
    let ask = |method: &str, host: &str| {
        format!("{method} /status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    let own = edge.admin.to_string();
    for (method, host, status) in [
        ("GET", own.as_str(), "200"),
        ("HEAD", "localhost", "200"),
        ("GET", "edge-admin.internal:9180", "200"),
        ("POST", own.as_str(), "405"),
        ("DELETE", own.as_str(), "405"),
        ("GET", "rebound.attacker.example", "403"),
        ("GET", "127.0.0.1.attacker.example", "403"),
    ] {
        let r = raw(edge.admin, ask(method, host).as_bytes(), limit).await;
        assert!(
            r.starts_with(&format!("HTTP/1.1 {status}")),
            "{method} Host {host}: {r}"
        );
        if status != "200" {
            assert!(!r.contains("\"pools\""), "{method} {host} got the status");
        }
    }
}

/// A connection from `ip` (another loopback address stands for another client).
/// Whether the edge's `sample` reads `value` within 10 s.
async fn metric_becomes(edge: &Edge, sample: &str, value: f64) -> bool {
    eventually(Duration::from_secs(10), || async {
        edge.metric(sample).await == value
    })
    .await
}

async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the edge answers a request on `s` (false: it closed the connection).
async fn answered(mut s: TcpStream) -> bool {
    let _ = s
        .write_all(b"GET / HTTP/1.1\r\nHost: ok.test\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_limits_new_clients_are_closed_and_admin_still_answers() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let limits = "max_connections = 4\nmax_connections_per_client = 3\n";
    let edge = edge_with_server(&origin, "", limits).await;

    // Three idle connections from one client: its limit.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.1", edge.http).await);
    }
    // Admission happens in each connection's task, not in accept order:
    // wait until the three hold their places before trying a fourth.
    let holding = |n: f64| metric_becomes(&edge, "edgepop_connections_open", n);
    assert!(holding(3.0).await, "three idle connections not admitted");
    let full_for_one = eventually(Duration::from_secs(5), || async {
        !answered(connect_from("127.0.0.1", edge.http).await).await
    })
    .await;
    assert!(
        full_for_one,
        "a 4th connection from the same client was served"
    );
    // Another client still gets in, and takes the last place of four.
    held.push(connect_from("127.0.0.2", edge.http).await);
    assert!(
        holding(4.0).await,
        "the other client's connection not admitted"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            !answered(connect_from("127.0.0.3", edge.http).await).await
        })
        .await,
        "a 5th connection in all was served"
    );
    // The node stays observable, and says why it is not ready.
    assert_eq!(edge.admin_get("/healthz").await.0, 200);
    let (status, body) = edge.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("client connection limit reached"), "{body}");
    assert!(
        edge.metric("edgepop_connections_refused_total{limit=\"per_client\"}")
            .await
            >= 1.0
    );
    assert!(
        edge.metric("edgepop_connections_refused_total{limit=\"total\"}")
            .await
            >= 1.0
    );

    // A place given back is taken again.
    held.clear();
    assert!(
        eventually(Duration::from_secs(5), || async {
            answered(connect_from("127.0.0.1", edge.http).await).await
        })
        .await,
        "connections closed, but no new one is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_is_431_and_never_forwarded() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let edge = edge_with(&origin, "").await;
    let big = "x".repeat(100 * 1024);
    let req =
        format!("GET / HTTP/1.1\r\nHost: ok.test\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let r = raw(edge.http, req.as_bytes(), Duration::from_secs(10)).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(200)]);
    // A head just under the default 32 KiB still goes through.
    let fits = "y".repeat(30 * 1024);
    let req =
        format!("GET / HTTP/1.1\r\nHost: ok.test\r\nX-Fits: {fits}\r\nConnection: close\r\n\r\n");
    let r = raw(edge.http, req.as_bytes(), Duration::from_secs(10)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{}", &r[..r.len().min(200)]);
    assert_eq!(
        origin.hits(),
        1,
        "only the head that fits reached the origin"
    );
    assert!(
        edge.metric("edgepop_client_limits_total{limit=\"head_too_large\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_is_cut_at_the_head_deadline() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let edge = edge_with(&origin, "[proxy]\nhead_timeout = \"1s\"").await;

    // A header line every 300 ms restarts Pingora's per-read timer; the
    // head deadline does not restart.
    let mut s = TcpStream::connect(edge.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: ok.test\r\n")
        .await
        .unwrap();
    let trickle = async {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    };
    let out = tokio::time::timeout(Duration::from_secs(15), trickle)
        .await
        .expect("the trickling connection was still open after 15 s");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");

    // A connection that sends nothing at all is cut too.
    let r = raw(edge.http, b"", Duration::from_secs(15)).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert_eq!(origin.hits(), 0);
    assert!(
        edge.metric("edgepop_client_limits_total{limit=\"head_timeout\"}")
            .await
            >= 2.0
    );
}

/// Sends a POST head promising 100 bytes, then the body in `pieces` of one
/// byte `every` apart, and reads what the edge answers.
async fn slow_body(edge: &Edge, pieces: usize, every: Duration) -> String {
    let mut s = TcpStream::connect(edge.http).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: ok.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let trickle = async move {
        for _ in 0..pieces {
            tokio::time::sleep(every).await;
            if wr.write_all(b"x").await.is_err() {
                break;
            }
        }
        // Held open, silent, until the edge answers.
        tokio::time::sleep(Duration::from_secs(60)).await;
    };
    let mut out = Vec::new();
    tokio::select! {
        _ = trickle => {}
        _ = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut out)) => {}
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_body_is_408_and_not_held_against_the_origin() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let edge = edge_with(
        &origin,
        "[proxy]\nbody_timeout = \"1s\"\nread_timeout = \"2s\"",
    )
    .await;
    let server = |status: &serde_json::Value| status["pools"][0]["servers"][0].clone();

    // A body that stops (10 of 100 bytes, then silence): the pause between
    // two reads passes body_timeout. A body trickled one byte every 300 ms:
    // each pause is short, but it falls behind body_min_rate (due 1 s after
    // the head plus 1 s per 500 bytes).
    for (pieces, every) in [(0, Duration::ZERO), (90, Duration::from_millis(300))] {
        let r = slow_body(&edge, pieces, every).await;
        assert!(r.starts_with("HTTP/1.1 408"), "{pieces} pieces: {r}");
        assert!(r.contains("request body was not received in time"), "{r}");
        let s = server(&edge.status().await);
        assert_eq!(s["inflight"], 0, "{pieces} pieces: {s}");
        assert_eq!(
            s["ejected"], false,
            "the client's slowness ejected the origin: {s}"
        );
    }
    assert_eq!(
        edge.metric("edgepop_client_limits_total{limit=\"body_timeout\"}")
            .await,
        2.0
    );
    // The origin was never blamed: max_fails = 1 would have ejected it.
    let r = edge.get("ok.test", "/").send().await.unwrap();
    assert_eq!(r.status(), 200);
}
/// Raises this process's descriptor limit (the edge inherits it) towards
/// `want`, as far as the machine allows; returns the limit now in force.
fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        let raised = libc::rlimit {
            rlim_cur: want.max(r.rlim_cur),
            rlim_max: want.max(r.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            // Only root may raise the hard limit: take all of it.
            let soft = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur
    }
}

/// A keep-alive connection from `ip` that has had one answer and now idles.
async fn idle_after_one_request(ip: String, to: SocketAddr) -> Option<TcpStream> {
    let mut s = connect_from(&ip, to).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n")
        .await
        .ok()?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf[..n].starts_with(b"HTTP/1.1 200").then_some(s)
}

/// Reads one response whose body is `content-length` long.
async fn one_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(n > 0, "closed before the whole response: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_idle_connections_keep_their_place_answer_again_and_close_on_time() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    // Long enough that the second stays parked while the first re-parks.
    let proxy = "[proxy]\nkeepalive_timeout = \"8s\"";
    let edge = edge_with_server(&origin, proxy, "max_connections_per_client = 2\n").await;

    // Two keep-alive connections, each after one answer, idle past the
    // park delay: parked, still holding their places.
    let ip = "127.0.0.1".to_string();
    let mut first = idle_after_one_request(ip.clone(), edge.http).await.unwrap();
    let second = idle_after_one_request(ip.clone(), edge.http).await.unwrap();
    // Parked after 1-2 s idle (PARK_AFTER, on the lot's ticks).
    let parked = |n: f64| metric_becomes(&edge, "edgepop_connections_parked", n);
    assert!(parked(2.0).await, "two idle connections were not parked");
    assert_eq!(edge.metric("edgepop_connections_open").await, 2.0);
    assert!(
        !answered(connect_from("127.0.0.1", edge.http).await).await,
        "a third connection from the client was served: parked ones lost their places"
    );

    // A request on a parked connection is answered in full, from where it
    // left off, and the connection parks again after it.
    first
        .write_all(b"GET /again HTTP/1.1\r\nHost: ok.test\r\n\r\n")
        .await
        .unwrap();
    let text = one_response(&mut first).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("x-edge-route:"), "{text}");
    assert_eq!(origin.hits(), 3);
    assert!(parked(2.0).await, "the connection did not park again");

    // A client closing a parked connection gives its place back.
    drop(second);
    assert!(
        metric_becomes(&edge, "edgepop_connections_open", 1.0).await,
        "a parked connection the client closed still holds its place"
    );

    // The keep-alive timeout still closes a parked connection.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), first.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a parked connection was still open 40 s after an 8 s keepalive_timeout"
    );
    assert!(rest.is_empty(), "bytes after the answer: {rest:?}");
    assert!(parked(0.0).await);
    assert_eq!(edge.metric("edgepop_connections_open").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_idle_connections_leave_room_for_clients_and_health_checks() {
    // Each idle connection costs a descriptor here and one in the edge,
    // which holds at most half of its own limit (after a reserve). Root
    // may raise the limits; where the machine's hard limit is lower (20,000
    // here, not raisable in this sandbox), as many as the edge may hold.
    let nofile = raise_nofile(65_536) as usize;
    let origin = Origin::start(Duration::from_millis(1)).await;
    let edge = edge_with(&origin, "").await;
    let budget = edge
        .stderr()
        .lines()
        .filter(|l| l.contains("client connection limit"))
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["fields"]["max_connections"].as_u64()
        })
        .expect("the edge logs its connection limit") as usize;
    let wanted = 20_000.min(budget - 100).min(nofile - 1_000);
    let pid = edge.child.id();
    let before = rss_kib(pid);

    // From 25 client addresses, under the per-client limit of 1024.
    let mut held = Vec::with_capacity(wanted);
    let mut batch = tokio::task::JoinSet::new();
    for i in 0..wanted {
        let ip = format!("127.0.1.{}", 1 + i % 25);
        batch.spawn(idle_after_one_request(ip, edge.http));
        if batch.len() == 250 || i + 1 == wanted {
            while let Some(r) = batch.join_next().await {
                held.extend(r.unwrap());
            }
        }
    }
    assert_eq!(held.len(), wanted, "not every connection was answered");
    assert!(
        eventually(Duration::from_secs(10), || async {
            edge.metric("edgepop_connections_open").await == wanted as f64
        })
        .await,
        "the edge does not hold {wanted} connections"
    );

    // A new client and the health checks are still served.
    assert!(answered(connect_from("127.0.2.1", edge.http).await).await);
    assert_eq!(edge.admin_get("/healthz").await.0, 200);
    assert_eq!(edge.admin_get("/readyz").await.0, 200);

    let after = rss_kib(pid);
    let per_connection = (after.saturating_sub(before)) as f64 * 1024.0 / wanted as f64;
    eprintln!(
        "{wanted} idle connections: RSS {before} KiB -> {after} KiB, {per_connection:.0} bytes each"
    );
    // Measured about 8 KiB each (docs/BENCHMARKS.md, benches/abuse.sh);
    // waiting inside Pingora's request future cost about 30 KiB.
    assert!(
        per_connection < 16.0 * 1024.0,
        "{per_connection:.0} bytes per idle connection"
    );
    drop(held);
}
