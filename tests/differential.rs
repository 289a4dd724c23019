//! The fast path and Pingora's phases are one product: two nodes, the
//! fast path on in one (`proxy.fast_path`, the default) and off in the
//! other, the same replica and the same origin; a corpus of requests sent
//! to both as raw bytes. What each client reads must be the same bytes
//! (less `date`, `x-request-id` and `server-timing` durations), and the
//! origin must receive the same requests from both. A difference is a bug
//! in one of the two paths.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fast path did, by outcome (its metric).
const ANSWERED: &str = r#"edgepop_fast_path_total{outcome="answered"}"#;
const PROXIED: &str = r#"edgepop_fast_path_total{outcome="proxied"}"#;
const DECLINED: &str = r#"edgepop_fast_path_total{outcome="declined"}"#;

/// Paths the recording origin answers with each framing a proxy must carry
/// (`serve_origin`), asked over HTTP/1 and HTTP/2 alike.
const ORIGIN_ANSWERS: [&str; 13] = [
    "/cl",
    "/chunked",
    "/big",
    "/204",
    "/early",
    "/http10",
    "/101",
    "/304",
    "/500",
    "/garbage",
    "/reset",
    "/html",
    "/html-chunked",
];

/// Codings clients ask for, each sent for the compressible origin answers.
const ACCEPT_ENCODINGS: [&str; 6] = [
    "br",
    "zstd",
    "gzip",
    "gzip;q=0.5, br;q=0.9",
    "identity",
    "br, gzip, identity;q=0",
];

/// A few KB of HTML: worth encoding, and read by the edge in one piece.
fn html() -> String {
    (0..60)
        .map(|i| format!("<li>item {i}: {}</li>\n", "lorem ipsum ".repeat(i % 7 + 1)))
        .collect()
}

/// What the origin received, by the `x-item` header of each request.
type Received = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

/// An origin written by hand: it records every request with an `x-item`
/// header and answers by path with each framing a proxy must carry.
async fn recording_origin(received: Received) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve_origin(s, received.clone()));
        }
    });
    addr
}

async fn serve_origin(mut s: TcpStream, received: Received) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let lower = head.to_ascii_lowercase();
        let field = |name: &str| {
            lower
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::trim))
                .map(str::to_string)
        };
        // The body: by content-length, or chunked up to its last chunk.
        let body_end = |buf: &[u8]| -> Option<usize> {
            if let Some(n) = field("content-length").and_then(|v| v.parse::<usize>().ok()) {
                return (buf.len() >= n).then_some(n);
            }
            if field("transfer-encoding").is_some() {
                return buf
                    .windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                    .map(|at| at + 5);
            }
            Some(0)
        };
        let body_len = loop {
            if let Some(n) = body_end(&buf) {
                break n;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let body = String::from_utf8_lossy(&buf[..body_len]).into_owned();
        buf.drain(..body_len);
        if let Some(item) = field("x-item") {
            let seen = format!("{head}{body}");
            received.lock().unwrap().entry(item).or_default().push(seen);
        }
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let path = path.split('?').next().unwrap_or("/");
        let reply: Vec<u8> = match path {
            "/chunked" => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
            "/close" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nuntil the end").await;
                return;
            }
            "/big" => {
                let mut r = format!("HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n", 1 << 20).into_bytes();
                r.extend((0..1usize << 20).map(|i| b'a' + (i % 26) as u8));
                r
            }
            "/204" => b"HTTP/1.1 204 No Content\r\nx-origin: yes\r\n\r\n".to_vec(),
            "/101" => b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n".to_vec(),
            "/early" => b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhints".to_vec(),
            "/http10" => b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 7\r\n\r\nold one".to_vec(),
            "/304" => b"HTTP/1.1 304 Not Modified\r\netag: \"o1\"\r\n\r\n".to_vec(),
            "/500" => b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops".to_vec(),
            "/garbage" => {
                let _ = s.write_all(b"this is not http\r\n\r\n").await;
                return;
            }
            "/reset" => return,
            "/html" => {
                let body = html();
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\netag: \"o7\"\r\naccept-ranges: bytes\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
            }
            "/html-chunked" => {
                let body = html();
                let (a, b) = body.split_at(body.len() / 2);
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len()).into_bytes()
            }
            _ => {
                let body = format!("origin says {path}\n");
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nkeep-alive: timeout=5\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
            }
        };
        if s.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// Sends `request` (all at once, or in `pieces` with pauses), reads until
/// the edge closes or is quiet for a while.
async fn exchange(addr: SocketAddr, request: &Item) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    for (i, piece) in request.pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(request.pause).await;
        }
        if s.write_all(piece).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let quiet = Duration::from_millis(700);
        match tokio::time::timeout(quiet, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
    }
    out
}

/// What may differ between two runs of the same request: the time, the
/// request id, the durations.
fn masked(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("date:") {
            out.push_str("date: *\r\n");
        } else if lower.starts_with("x-request-id:") {
            out.push_str("x-request-id: *\r\n");
        } else if lower.starts_with("server-timing:") {
            out.push_str(&mask_durations(line));
        } else if let Some(id) = line.strip_prefix("request id: ") {
            out.push_str(&format!("request id: *{}", &id[id.trim_end().len()..]));
        } else {
            out.push_str(line);
        }
    }
    out
}

fn mask_durations(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("dur=") {
        out.push_str(&rest[..at + 4]);
        rest = &rest[at + 4..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        out.push('*');
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

struct Item {
    name: String,
    pieces: Vec<Vec<u8>>,
    pause: Duration,
}

fn item(name: String, bytes: String) -> Item {
    Item {
        name,
        pieces: vec![bytes.into_bytes()],
        pause: Duration::ZERO,
    }
}

/// At least 200 requests: methods, Host spellings, pages and origin
/// answers of every framing, conditional requests, HEAD, pipelining,
/// `Connection: close`, `Expect`, smuggling and framing cases, oversize
/// and slow heads.
fn corpus() -> Vec<Item> {
    let mut items = Vec::new();
    let hosts = [
        "shop.localhost",
        "SHOP.localhost.",
        "shop.localhost:80",
        "proxied.test",
        "suspended.test",
        "unknown.example",
        "bad host",
        "shop.localhost:99999",
    ];
    let pages = [
        "/",
        "/products/42",
        "/api/stock/42",
        "/?utm_source=mail&gclid=1",
    ];
    let others = ["/?q=1", "/missing", "/close"];
    let paths: Vec<&str> = [&pages[..], &others, &ORIGIN_ANSWERS].concat();
    for host in hosts {
        for &path in &paths {
            for method in ["GET", "HEAD"] {
                let n = items.len();
                let req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nx-item: {n}\r\nConnection: close\r\n\r\n");
                items.push(item(format!("{method} {host}{path}"), req));
            }
        }
    }
    let mut push = |name: &str, bytes: String| {
        let n = items.len();
        let bytes = bytes.replace("{n}", &n.to_string());
        items.push(item(name.to_string(), bytes));
    };
    for path in ["/html", "/html-chunked", "/chunked", "/"] {
        for coding in ACCEPT_ENCODINGS {
            for method in ["GET", "HEAD"] {
                let host = if path == "/" {
                    "shop.localhost"
                } else {
                    "proxied.test"
                };
                push(
                    &format!("{method} {path} accept-encoding {coding}"),
                    format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: {coding}\r\nx-item: {{n}}\r\nConnection: close\r\n\r\n"),
                );
            }
        }
    }
    push("conditional hit", "GET / HTTP/1.1\r\nHost: shop.localhost\r\nIf-None-Match: \"v1\"\r\nConnection: close\r\n\r\n".into());
    push("conditional list", "GET / HTTP/1.1\r\nHost: shop.localhost\r\nIf-None-Match: \"v0\", W/\"v1\"\r\nConnection: close\r\n\r\n".into());
    push("conditional miss", "GET / HTTP/1.1\r\nHost: shop.localhost\r\nIf-None-Match: \"v9\"\r\nConnection: close\r\n\r\n".into());
    push("conditional star", "HEAD /products/42 HTTP/1.1\r\nHost: shop.localhost\r\nIf-None-Match: *\r\nConnection: close\r\n\r\n".into());
    push(
        "keep-alive, no close",
        "GET / HTTP/1.1\r\nHost: shop.localhost\r\n\r\n".into(),
    );
    push(
        "keep-alive proxied",
        "GET /cl HTTP/1.1\r\nHost: proxied.test\r\nx-item: {n}\r\n\r\n".into(),
    );
    push(
        "http/1.0",
        "GET / HTTP/1.0\r\nHost: shop.localhost\r\n\r\n".into(),
    );
    push(
        "http/1.0 keep-alive",
        "GET / HTTP/1.0\r\nHost: shop.localhost\r\nConnection: keep-alive\r\n\r\n".into(),
    );
    push(
        "http/1.0 proxied",
        "GET /cl HTTP/1.0\r\nHost: proxied.test\r\nx-item: {n}\r\n\r\n".into(),
    );
    push(
        "no host",
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".into(),
    );
    push(
        "two hosts",
        "GET / HTTP/1.1\r\nHost: shop.localhost\r\nHost: other.test\r\nConnection: close\r\n\r\n"
            .into(),
    );
    push("absolute form", "GET http://shop.localhost/products/42 HTTP/1.1\r\nHost: shop.localhost\r\nConnection: close\r\n\r\n".into());
    push("absolute form other host", "GET http://proxied.test/cl HTTP/1.1\r\nHost: shop.localhost\r\nx-item: {n}\r\nConnection: close\r\n\r\n".into());
    push("client route dropped", "GET /cl HTTP/1.1\r\nHost: proxied.test\r\nx-edge-route: fra1\r\nx-item: {n}\r\nConnection: close\r\n\r\n".into());
    push(
        "client route on a page",
        "GET / HTTP/1.1\r\nHost: shop.localhost\r\nx-edge-route: fra1\r\nConnection: close\r\n\r\n"
            .into(),
    );
    push("hop-by-hop", "GET /cl HTTP/1.1\r\nHost: proxied.test\r\nConnection: close, x-secret\r\nx-secret: 1\r\nTE: trailers\r\nx-item: {n}\r\n\r\n".into());
    push("forwarded for", "GET /cl HTTP/1.1\r\nHost: proxied.test\r\nX-Forwarded-For: 10.1.1.1\r\nx-item: {n}\r\nConnection: close\r\n\r\n".into());
    push("pipelined pages", "GET / HTTP/1.1\r\nHost: shop.localhost\r\n\r\nGET /products/42 HTTP/1.1\r\nHost: shop.localhost\r\n\r\nHEAD / HTTP/1.1\r\nHost: shop.localhost\r\nConnection: close\r\n\r\n".into());
    push("pipelined mixed", "GET / HTTP/1.1\r\nHost: shop.localhost\r\n\r\nGET /cl HTTP/1.1\r\nHost: proxied.test\r\nx-item: {n}\r\n\r\nGET /missing HTTP/1.1\r\nHost: unknown.example\r\nConnection: close\r\n\r\n".into());
    push("pipelined behind a body", "POST /cl HTTP/1.1\r\nHost: proxied.test\r\nContent-Length: 2\r\nx-item: {n}\r\n\r\nabGET / HTTP/1.1\r\nHost: shop.localhost\r\nConnection: close\r\n\r\n".into());
    push("post", "POST /cl HTTP/1.1\r\nHost: proxied.test\r\nContent-Length: 5\r\nx-item: {n}\r\nConnection: close\r\n\r\nhello".into());
    push("post to a page", "POST / HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: 5\r\nx-item: {n}\r\nConnection: close\r\n\r\nhello".into());
    push("post chunked", "POST /cl HTTP/1.1\r\nHost: proxied.test\r\nTransfer-Encoding: chunked\r\nx-item: {n}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into());
    push("get with a body", "GET /cl HTTP/1.1\r\nHost: proxied.test\r\nContent-Length: 3\r\nx-item: {n}\r\nConnection: close\r\n\r\nabc".into());
    push(
        "get with content-length 0",
        "GET / HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .into(),
    );
    push("expect continue", "POST /cl HTTP/1.1\r\nHost: proxied.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\nx-item: {n}\r\nConnection: close\r\n\r\nhello".into());
    push("expect on a get", "GET / HTTP/1.1\r\nHost: shop.localhost\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n".into());
    push("put", "PUT /cl HTTP/1.1\r\nHost: proxied.test\r\nContent-Length: 1\r\nx-item: {n}\r\nConnection: close\r\n\r\nx".into());
    push(
        "delete",
        "DELETE /cl HTTP/1.1\r\nHost: proxied.test\r\nx-item: {n}\r\nConnection: close\r\n\r\n"
            .into(),
    );
    push(
        "options",
        "OPTIONS * HTTP/1.1\r\nHost: proxied.test\r\nx-item: {n}\r\nConnection: close\r\n\r\n"
            .into(),
    );
    push(
        "trace",
        "TRACE / HTTP/1.1\r\nHost: shop.localhost\r\nCookie: secret=1\r\nConnection: close\r\n\r\n"
            .into(),
    );
    push(
        "track",
        "TRACK / HTTP/1.1\r\nHost: shop.localhost\r\nConnection: close\r\n\r\n".into(),
    );
    push("upgrade", "GET /cl HTTP/1.1\r\nHost: proxied.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nx-item: {n}\r\n\r\n".into());
    push("content-length list", "POST / HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello".into());
    push("content-length twice", "POST / HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".into());
    push("content-length plus", "POST / HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: +5\r\nConnection: close\r\n\r\nhello".into());
    push("cl and te", "POST /cl HTTP/1.1\r\nHost: proxied.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nx-item: {n}\r\nConnection: close\r\n\r\n0\r\n\r\n".into());
    push("te obfuscated", "POST /cl HTTP/1.1\r\nHost: proxied.test\r\nTransfer-Encoding: xchunked\r\nx-item: {n}\r\nConnection: close\r\n\r\n".into());
    push("get cl and te", "GET / HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".into());
    push(
        "bare lf",
        "GET / HTTP/1.1\nHost: shop.localhost\nConnection: close\n\n".into(),
    );
    push(
        "space before colon",
        "GET / HTTP/1.1\r\nHost : shop.localhost\r\nConnection: close\r\n\r\n".into(),
    );
    push("garbage request", "NOT A REQUEST\r\n\r\n".into());
    push(
        "http/2 preface on h1",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(),
    );
    push(
        "lowercase method",
        "get / HTTP/1.1\r\nHost: shop.localhost\r\nConnection: close\r\n\r\n".into(),
    );
    push(
        "long uri",
        format!(
            "GET /{} HTTP/1.1\r\nHost: proxied.test\r\nx-item: {{n}}\r\nConnection: close\r\n\r\n",
            "a".repeat(4000)
        ),
    );
    push(
        "many headers",
        format!(
            "GET / HTTP/1.1\r\nHost: shop.localhost\r\n{}Connection: close\r\n\r\n",
            (0..60)
                .map(|i| format!("x-h{i}: {i}\r\n"))
                .collect::<String>()
        ),
    );
    push(
        "oversize head",
        format!(
            "GET / HTTP/1.1\r\nHost: shop.localhost\r\nx-big: {}\r\nConnection: close\r\n\r\n",
            "b".repeat(40 * 1024)
        ),
    );
    push(
        "unicode host",
        "GET / HTTP/1.1\r\nHost: ｓｈｏｐ.localhost\r\nConnection: close\r\n\r\n".into(),
    );
    push("ignorable query hit", "GET /products/42?utm_campaign=x&fbclid=2 HTTP/1.1\r\nHost: shop.localhost\r\nConnection: close\r\n\r\n".into());
    push("accept-encoding", "GET / HTTP/1.1\r\nHost: shop.localhost\r\nAccept-Encoding: gzip, br\r\nConnection: close\r\n\r\n".into());
    let n = items.len();
    items.push(Item {
        name: "slow head".into(),
        pieces: vec![
            b"GET / HTTP/1.1\r\n".to_vec(),
            b"Host: shop.localhost\r\n".to_vec(),
        ],
        pause: Duration::from_millis(2500),
    });
    items.push(Item {
        name: "head in pieces".into(),
        pieces: vec![
            b"GET /products/42 HTTP/1.1\r\nHo".to_vec(),
            b"st: shop.localhost\r\nConnection: close\r\n\r\n".to_vec(),
        ],
        pause: Duration::from_millis(100),
    });
    items.push(Item {
        name: "body in pieces".into(),
        pieces: vec![
            format!("POST /cl HTTP/1.1\r\nHost: proxied.test\r\nContent-Length: 10\r\nx-item: {}\r\nConnection: close\r\n\r\nhello", n + 2).into_bytes(),
            b"world".to_vec(),
        ],
        pause: Duration::from_millis(100),
    });
    items
}

async fn node(origin: SocketAddr, fast_path: bool) -> Edge {
    node_with(origin, fast_path, "").await
}

async fn node_with(origin: SocketAddr, fast_path: bool, extra: &str) -> Edge {
    node_of(&[origin], fast_path, extra).await
}

/// A node whose public pool is `servers`.
async fn node_of(servers: &[SocketAddr], fast_path: bool, extra: &str) -> Edge {
    let servers: Vec<String> = servers
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    let servers = servers.join(", ");
    let edge = Edge::prepare(&format!(
        "{extra}\n[proxy]\nfast_path = {fast_path}\nhead_timeout = \"2s\"\nmax_head_bytes = 32768\n\n\
         [pools.public]\nservers = [{servers}]\n\
         health = {{ path = \"/health\", interval = \"1s\" }}\n\
         passive = {{ max_fails = 100000, eject_for = \"1s\" }}\n\n{}{}",
        site("proxied.test", "public", "active"),
        site("suspended.test", "public", "suspended"),
    ));
    edge.load_demo();
    edge.launch(false).await
}

/// Every item against one node, a few at a time: the masked answers and
/// what the origin received, by item.
async fn run(edge: &Edge, items: &Arc<Vec<Item>>, received: &Received) -> Vec<(String, String)> {
    received.lock().unwrap().clear();
    let addr = edge.http;
    let mut answers = vec![String::new(); items.len()];
    for batch in (0..items.len()).collect::<Vec<_>>().chunks(24) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|&i| {
                let items = items.clone();
                tokio::spawn(async move { (i, masked(&exchange(addr, &items[i]).await)) })
            })
            .collect();
        for task in tasks {
            let (i, answer) = task.await.unwrap();
            answers[i] = answer;
        }
    }
    let seen = received.lock().unwrap().clone();
    answers
        .into_iter()
        .enumerate()
        .map(|(i, answer)| {
            let origin = seen.get(&i.to_string()).map(|r| r.join("\n---\n"));
            (answer, origin.unwrap_or_default())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_and_the_proxy_phases_give_the_same_bytes() {
    let received = Received::default();
    let origin = recording_origin(received.clone()).await;
    let fast = node(origin, true).await;
    let phases = node(origin, false).await;
    let items = Arc::new(corpus());
    assert!(items.len() >= 200, "{} requests", items.len());

    // Warm both caches alike: the first answers of a page are MISS.
    for edge in [&fast, &phases] {
        for path in ["/", "/products/42", "/api/stock/42"] {
            let r = client()
                .get(edge.url(path))
                .header("host", "shop.localhost");
            assert_eq!(r.send().await.unwrap().status(), 200);
        }
    }
    let with_fast = run(&fast, &items, &received).await;
    let with_phases = run(&phases, &items, &received).await;

    let mut differences = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (a, b) = (&with_fast[i], &with_phases[i]);
        if a.0 != b.0 {
            differences.push(format!(
                "#{i} {}: the client read\n  fast path: {:?}\n  phases:    {:?}",
                item.name,
                &a.0[..a.0.len().min(600)],
                &b.0[..b.0.len().min(600)]
            ));
        }
        if a.1 != b.1 {
            differences.push(format!(
                "#{i} {}: the origin received\n  fast path: {:?}\n  phases:    {:?}",
                item.name, a.1, b.1
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} requests differ:\n{}",
        differences.len(),
        items.len(),
        differences.join("\n")
    );
    // The corpus did exercise both: pages from the edge and the origin's answers.
    let answered = |needle: &str| with_fast.iter().filter(|(a, _)| a.contains(needle)).count();
    assert!(answered("x-edge-cache: HIT") > 20, "few page hits");
    assert!(answered("x-edge-cache: BYPASS") > 20, "few proxied answers");
    assert!(with_fast.iter().filter(|(_, o)| !o.is_empty()).count() > 20);
    assert!(answered("content-encoding: br") >= 4, "few encoded answers");
    // Encoded on each path: the same bytes came from two encoders' runs.
    for node in [&fast, &phases] {
        let encoded = r#"edgepop_encoded_responses_total{encoding="gzip",source="proxied"}"#;
        assert!(node.metric(encoded).await >= 2.0, "no gzip answer encoded");
    }
    // And the two nodes took their two paths.
    assert!(
        fast.metric(ANSWERED).await > 100.0,
        "the fast path answered few"
    );
    assert!(
        fast.metric(PROXIED).await > 50.0,
        "the fast path proxied few"
    );
    assert!(
        fast.metric(DECLINED).await > 20.0,
        "the fast path declined few"
    );
    assert_eq!(
        phases.metric(ANSWERED).await
            + phases.metric(PROXIED).await
            + phases.metric(DECLINED).await,
        0.0
    );

    // A browser's head, cookies and all (3 KiB), comes in one read and
    // takes the fast path too.
    let before = fast.metric(ANSWERED).await;
    let cookie = "c".repeat(3000);
    let req = format!(
        "GET / HTTP/1.1\r\nHost: shop.localhost\r\nCookie: s={cookie}\r\nConnection: close\r\n\r\n"
    );
    let answer = masked(&exchange(fast.http, &item("cookies".into(), req)).await);
    assert!(answer.contains("x-edge-cache: HIT"), "{answer}");
    assert_eq!(fast.metric(ANSWERED).await, before + 1.0);
}

/// One HTTPS node and its local CA's root, for HTTP/2.
async fn https_node(origin: SocketAddr, fast_path: bool) -> (Edge, SocketAddr, std::path::PathBuf) {
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let tls = format!("[tls]\nlisten = [\"{https}\"]\nissue_timeout = \"10s\"\n");
    let edge = node_with(origin, fast_path, &tls).await;
    let root = edge.dir.path().join("edgepop-data/tls/ca/ca.pem");
    assert!(
        eventually(Duration::from_secs(10), || async { root.exists() }).await,
        "the local CA's root is written"
    );
    (edge, https, root)
}

/// Request headers beyond the method and URL.
type Headers = Vec<(&'static str, String)>;
/// Host, method, path, headers.
type H2Request = (String, &'static str, String, Headers);

/// A response as an HTTP/2 client sees it, masked as `masked` does.
async fn h2_exchange(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut req = client.request(method.parse().unwrap(), url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return format!("error: {}", e.is_timeout()),
    };
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "{url}");
    let mut out = format!("{}\r\n", resp.status());
    for (name, value) in resp.headers() {
        out.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("?")));
    }
    out.push_str("\r\n");
    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    out.push_str(&String::from_utf8_lossy(&body));
    masked(out.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_and_the_proxy_phases_agree_over_http2() {
    let received = Received::default();
    let origin = recording_origin(received.clone()).await;
    let (fast, fast_https, fast_root) = https_node(origin, true).await;
    let (phases, phases_https, phases_root) = https_node(origin, false).await;

    let pages = ["/", "/products/42", "/api/stock/42", "/?utm_source=a"];
    let paths: Vec<&str> = [&pages[..], &["/?q=1", "/missing"], &ORIGIN_ANSWERS].concat();
    let mut requests: Vec<H2Request> = Vec::new();
    for host in ["shop.localhost", "proxied.test"] {
        for &path in &paths {
            for method in ["GET", "HEAD"] {
                requests.push((host.to_string(), method, path.to_string(), vec![]));
            }
        }
    }
    let extra: [(&str, &str, Headers); 5] = [
        ("GET", "/", vec![("if-none-match", "\"v1\"".to_string())]),
        (
            "HEAD",
            "/products/42",
            vec![("if-none-match", "*".to_string())],
        ),
        ("GET", "/", vec![("x-edge-route", "fra1".to_string())]),
        ("POST", "/cl", vec![]),
        ("DELETE", "/cl", vec![]),
    ];
    for (method, path, headers) in extra {
        requests.push(("shop.localhost".into(), method, path.into(), headers));
    }
    for path in ["/html", "/html-chunked"] {
        for coding in ACCEPT_ENCODINGS {
            let headers = vec![("accept-encoding", coding.to_string())];
            requests.push(("proxied.test".into(), "GET", path.into(), headers));
        }
    }

    let mut answers: [Vec<(String, String)>; 2] = Default::default();
    for (n, (https, root)) in [(fast_https, &fast_root), (phases_https, &phases_root)]
        .into_iter()
        .enumerate()
    {
        // Warm the caches alike: the first answers of a page are MISS.
        for path in ["/", "/products/42", "/api/stock/42"] {
            let client = https_client(root, "shop.localhost", https, false);
            let url = format!("https://shop.localhost:{}{path}", https.port());
            h2_exchange(&client, "GET", &url, &[]).await;
        }
        received.lock().unwrap().clear();
        for (i, (host, method, path, headers)) in requests.iter().enumerate() {
            let client = https_client(root, host, https, false);
            let url = format!("https://{host}:{}{path}", https.port());
            let item = i.to_string();
            let mut all: Vec<(&str, &str)> = vec![("x-item", item.as_str())];
            all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            // Alt-Svc names the node's own port too.
            let answer = h2_exchange(&client, method, &url, &all)
                .await
                .replace(&format!(":{}", https.port()), ":*");
            let seen = received
                .lock()
                .unwrap()
                .get(&item)
                .map(|r| r.join("\n---\n"));
            // The nodes listen on different ports: x-forwarded-host names them.
            let seen = seen
                .unwrap_or_default()
                .replace(&format!(":{}", https.port()), ":*");
            answers[n].push((answer, seen));
        }
    }
    let mut differences = Vec::new();
    for (i, (host, method, path, _)) in requests.iter().enumerate() {
        let (a, b) = (&answers[0][i], &answers[1][i]);
        if a != b {
            differences.push(format!(
                "#{i} {method} {host}{path}:\n  fast path: {:?}\n  phases:    {:?}",
                (a.0.chars().take(400).collect::<String>(), &a.1),
                (b.0.chars().take(400).collect::<String>(), &b.1)
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} HTTP/2 requests differ:\n{}",
        differences.len(),
        requests.len(),
        differences.join("\n")
    );
    let hits = answers[0]
        .iter()
        .filter(|(a, _)| a.contains("x-edge-cache: HIT"))
        .count();
    assert!(hits > 10, "few page hits over HTTP/2");
    let encoded = answers[0]
        .iter()
        .filter(|(a, _)| a.contains("content-encoding: zstd"))
        .count();
    assert!(encoded >= 2, "no zstd answer over HTTP/2");
    assert!(
        fast.metric(ANSWERED).await >= hits as f64,
        "the hits took the fast path"
    );
    assert_eq!(phases.metric(ANSWERED).await, 0.0);
}

/// A hot proxied GET whose origin refuses the connection is tried again on
/// the next server, as the phases would: the client sees the same answer
/// from both nodes and the live origin gets the request once. With no
/// live server left, both answer the same 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_origin_is_retried_the_same_on_both_paths() {
    let received = Received::default();
    let origin = recording_origin(received.clone()).await;
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let fast = node_of(&[dead, origin], true, "").await;
    let phases = node_of(&[dead, origin], false, "").await;
    let get = |n: usize| {
        let req = format!(
            "GET /cl HTTP/1.1\r\nHost: proxied.test\r\nx-item: {n}\r\nConnection: close\r\n\r\n"
        );
        item(format!("get {n}"), req)
    };
    for n in 0..30 {
        let a = masked(&exchange(fast.http, &get(n)).await);
        let b = masked(&exchange(phases.http, &get(n)).await);
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "#{n} fast path: {a}");
        assert_eq!(a, b, "#{n}");
    }
    // Every request reached the live origin exactly once from each node.
    let seen = received.lock().unwrap().clone();
    for n in 0..30 {
        assert_eq!(
            seen[&n.to_string()].len(),
            2,
            "#{n}: {:?}",
            seen[&n.to_string()]
        );
    }
    // Picked first (about half the time), the dead server hands the
    // request on to the phases after one try; else the fast path serves it.
    assert!(
        fast.metric(PROXIED).await > 0.0,
        "none proxied on the fast path"
    );
    assert!(
        fast.metric(DECLINED).await > 0.0,
        "none handed on after a failure"
    );

    let fast = node_of(&[dead], true, "").await;
    let phases = node_of(&[dead], false, "").await;
    let a = masked(&exchange(fast.http, &get(100)).await);
    let b = masked(&exchange(phases.http, &get(100)).await);
    assert!(a.starts_with("HTTP/1.1 503 "), "{a}");
    assert_eq!(a, b);
}
