//! What a client reads off the wire now that a response's writes are
//! gathered (a head leaves with its body, `conn/gather.rs`) and the
//! client listeners have no L4 buffers: framing and bytes stay exact for
//! pages larger than what is held, HEAD, 304, `Connection: close`,
//! chunked and large origin responses, one after another on one
//! keep-alive connection, over HTTP and HTTPS.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes of the replica's big page: far more than is ever held (1,460 B)
/// and than a TLS record (16 KiB).
const BIG_PAGE: usize = 300_000;
/// The origin's large body.
const LARGE: usize = 1 << 20;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| b'a' + ((i as u8).wrapping_mul(7).wrapping_add(seed) % 26))
        .collect()
}

/// An origin written by hand, so it can answer chunked in pieces with
/// pauses between them: `/chunked` (three chunks, one of 10 KiB),
/// `/large` (1 MiB with a content-length), anything else a short body.
async fn raw_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    if answer(&mut s, &path).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn answer(s: &mut TcpStream, path: &str) -> std::io::Result<()> {
    match path {
        "/chunked" => {
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n")
                .await?;
            for piece in [pattern(5, 1), pattern(10_240, 2), pattern(100, 3)] {
                s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                s.write_all(&piece).await?;
                s.write_all(b"\r\n").await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            s.write_all(b"0\r\n\r\n").await
        }
        "/large" => {
            let body = pattern(LARGE, 4);
            s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {LARGE}\r\n\r\n").as_bytes())
                .await?;
            s.write_all(&body).await
        }
        "/health" => {
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
        }
        _ => {
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nshort")
                .await
        }
    }
}

/// An edge for `ok.test` (store 1) in front of the hand-written origin,
/// its replica holding a small page `/` and the big page `/big`.
async fn edge(extra: &str) -> Edge {
    let origin = raw_origin().await;
    let edge = Edge::prepare(&format!(
        "{extra}\n{}{}",
        pool("public", &[(origin, 1)]),
        site("ok.test", "public", "active")
    ));
    let page = |path: &str, body: String| {
        serde_json::json!({"before": null, "after": {"store_id": 1, "path": path,
            "content_type": "text/html", "body": body, "status": 200,
            "cache_control": "public, max-age=60", "version": 3,
            "updated_at": "2026-11-22T00:00:00Z"},
            "source": {"table": "pages", "lsn": 2, "ts_ms": 0}, "op": "r"})
        .to_string()
    };
    let big = String::from_utf8(pattern(BIG_PAGE, 9)).unwrap();
    let snapshot = edge.dir.path().join("pages.jsonl");
    std::fs::write(
        &snapshot,
        [page("/", "<p>small</p>".into()), page("/big", big)].join("\n"),
    )
    .unwrap();
    edge.command(&["replica", "init"]);
    edge.command(&["replica", "load", snapshot.to_str().unwrap()]);
    edge.launch(false).await
}

/// A connection to `addr`; the listener may come up just after the admin
/// one that `Edge::start` waits for.
async fn connect(addr: SocketAddr) -> TcpStream {
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(addr).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listens on {addr}");
}

type Sender = SendRequest<Empty<Bytes>>;

async fn keepalive<S>(io: S) -> Sender
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// One request on the connection: status, headers and the whole body.
async fn ask(
    sender: &mut Sender,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Vec<u8>) {
    sender
        .ready()
        .await
        .expect("the connection is still usable");
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "ok.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        sender.send_request(req.body(Empty::new()).unwrap()),
    )
    .await
    .expect("answered in time")
    .expect("a well-framed response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// The whole sequence on one keep-alive connection; every response must
/// be framed exactly for the next one to be read at all.
async fn every_kind_of_response(sender: &mut Sender) {
    let big = pattern(BIG_PAGE, 9);
    for round in 0..2 {
        let (status, headers, body) = ask(sender, "GET", "/big", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(body.len(), BIG_PAGE, "round {round}");
        assert!(body == big, "the big page's bytes, round {round}");
        let cache = headers["x-edge-cache"].to_str().unwrap().to_string();
        assert_eq!(cache, if round == 0 { "MISS" } else { "HIT" });
    }

    let (status, headers, body) = ask(sender, "HEAD", "/big", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], BIG_PAGE.to_string().as_str());
    assert!(body.is_empty(), "HEAD has no body");

    let (status, headers, _) = ask(sender, "GET", "/", &[]).await;
    assert_eq!(status, 200);
    let etag = headers["etag"].to_str().unwrap().to_string();
    let (status, _, body) = ask(sender, "GET", "/", &[("if-none-match", &etag)]).await;
    assert_eq!(status, 304);
    assert!(body.is_empty(), "304 has no body");

    let (status, headers, body) = ask(sender, "GET", "/chunked", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-edge-cache"], "BYPASS");
    let want = [pattern(5, 1), pattern(10_240, 2), pattern(100, 3)].concat();
    assert!(body == want, "chunked body: {} bytes", body.len());

    let (status, _, body) = ask(sender, "GET", "/large", &[]).await;
    assert_eq!(status, 200);
    assert!(
        body == pattern(LARGE, 4),
        "large body: {} bytes",
        body.len()
    );

    let (status, _, body) = ask(sender, "GET", "/small", &[]).await;
    assert_eq!((status, body.as_slice()), (200, &b"short"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_keep_their_framing_one_after_another_over_http() {
    let edge = edge("").await;
    let mut sender = keepalive(connect(edge.http).await).await;
    every_kind_of_response(&mut sender).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_keep_their_framing_one_after_another_over_https() {
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let edge = edge(&format!(
        "[tls]\nlisten = [\"{https}\"]\nissue_timeout = \"5s\"\n"
    ))
    .await;
    let root = edge.dir.path().join("edgepop-data/tls/ca/ca.pem");
    assert!(
        eventually(Duration::from_secs(10), || async { root.exists() }).await,
        "the local CA's root is written"
    );
    let tcp = connect(https).await;
    let name = rustls_pki_types::ServerName::try_from("ok.test").unwrap();
    let tls = tls_connector(&root, &[b"http/1.1"])
        .connect(name, tcp)
        .await
        .expect("handshake");
    let mut sender = keepalive(tls).await;
    every_kind_of_response(&mut sender).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_gets_the_whole_body_then_the_end() {
    let edge = edge("").await;
    for path in ["/big", "/big", "/large", "/chunked"] {
        let mut s = connect(edge.http).await;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: ok.test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("the edge closes after the response")
            .unwrap();
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&out[..end]).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        let body = &out[end..];
        match path {
            "/big" => assert!(body == pattern(BIG_PAGE, 9).as_slice()),
            "/large" => assert!(body == pattern(LARGE, 4).as_slice()),
            // Chunked framing kept (the edge may re-chunk): at least the
            // data and the last chunk.
            _ => assert!(body.len() > 10_345 && body.ends_with(b"0\r\n\r\n")),
        }
    }
}
