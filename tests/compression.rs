//! Compressed responses (issue 25) through the binary: page variants made
//! when a page arrives (through the real change stream), negotiated per
//! RFC 9110, decoded by an independent decoder (curl `--compressed`:
//! libbrotli, libzstd, zlib); proxied answers encoded as they stream.

mod common;

use common::scenario::*;
use common::stream::*;
use common::*;
use std::process::Command;
use std::time::Duration;

const SEC: fn(u64) -> Duration = Duration::from_secs;

/// A storefront page worth encoding: 40 KB of HTML, not all alike.
fn storefront(version: i64) -> String {
    let mut html = format!("<!doctype html><title>Shop v{version}</title><main>");
    for i in 0..400 {
        html.push_str(&format!(
            "<article id=\"p{i}\"><h2>Product {i}</h2><p>Version {version}: price {}.{:02} EUR</p></article>\n",
            10 + i * 7 % 90,
            i * 13 % 100
        ));
    }
    html + "</main>"
}

/// `a == b` without printing 40 KB bodies when not.
#[track_caller]
fn same(a: &[u8], b: &[u8], what: &str) {
    let first = a.iter().zip(b).position(|(x, y)| x != y);
    assert!(
        a == b,
        "{what}: {} bytes against {}, first difference at {first:?}",
        a.len(),
        b.len()
    );
}

/// What curl receives and decodes for `accept_encoding` (None: no header
/// at all): (headers, decoded body).
fn curl(edge: &Edge, host: &str, path: &str, extra: &[&str]) -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let out = Command::new("curl")
        .args(["-s", "--compressed", "-D"])
        .arg(&head)
        .args(["-H", &format!("Host: {host}")])
        .args(extra.iter().flat_map(|h| ["-H", h]))
        .arg(edge.url(path))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {out:?}");
    (
        std::fs::read_to_string(head).unwrap().to_ascii_lowercase(),
        out.stdout,
    )
}

async fn raw(edge: &Edge, host: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = edge.get(host, path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_are_served_in_every_coding_from_variants_made_when_they_arrive() {
    let s = DataPath::start().await;
    let (edge, _pg) = s.edge(Kind::Embedded, "").await;
    s.publish_shop().await;
    let v1 = storefront(1);
    s.publish_page("/", &v1, 1, false).await;
    s.publish_page("/small", "<p>tiny</p>", 1, false).await;
    assert!(edge.until_etag("/", "\"v1\"").await);

    // Variants are made off the request path, soon after the page arrived.
    let made = eventually(SEC(20), || async {
        header(
            &raw(&edge, SHOP, "/", &[("accept-encoding", "br")]).await,
            "etag",
        ) == "\"v1-br\""
    })
    .await;
    assert!(made, "no br variant");

    // Each coding, decoded by curl, is the identity body.
    for (accept, coding, etag) in [
        ("br", "br", "\"v1-br\""),
        ("zstd", "zstd", "\"v1-zstd\""),
        ("gzip", "gzip", "\"v1-gzip\""),
        ("x-gzip", "gzip", "\"v1-gzip\""),
        ("gzip;q=1, br;q=0.5", "gzip", "\"v1-gzip\""),
        ("br, gzip, zstd", "br", "\"v1-br\""),
        ("*", "br", "\"v1-br\""),
        (
            "br;q=0, zstd;q=0.5, gzip;q=0.4, identity;q=0.1",
            "zstd",
            "\"v1-zstd\"",
        ),
    ] {
        let (head, body) = curl(&edge, SHOP, "/", &[&format!("Accept-Encoding: {accept}")]);
        assert!(
            head.contains(&format!("content-encoding: {coding}\r\n")),
            "{accept}: {head}"
        );
        assert!(
            head.contains(&format!("etag: {etag}\r\n")),
            "{accept}: {head}"
        );
        assert!(
            head.contains("vary: accept-encoding\r\n"),
            "{accept}: {head}"
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            v1,
            "{accept}: decoded body"
        );
    }
    let r = raw(&edge, SHOP, "/", &[("accept-encoding", "br")]).await;
    let br_len: usize = header(&r, "content-length").parse().unwrap();
    assert!(br_len * 5 < v1.len(), "br {br_len} of {}", v1.len());
    assert_eq!(r.bytes().await.unwrap().len(), br_len);

    // No coding asked, or only identity: the identity body, still Vary.
    for headers in [
        vec![],
        vec![("accept-encoding", "identity")],
        vec![("accept-encoding", "br;q=0")],
    ] {
        let r = raw(&edge, SHOP, "/", &headers).await;
        assert_eq!(header(&r, "content-encoding"), "", "{headers:?}");
        assert_eq!(header(&r, "etag"), "\"v1\"");
        assert_eq!(header(&r, "vary"), "Accept-Encoding");
        same(&r.bytes().await.unwrap(), v1.as_bytes(), "identity");
    }

    // A page too small to encode: identity, no Vary; identity refused: 406.
    let r = raw(&edge, SHOP, "/small", &[("accept-encoding", "br")]).await;
    assert_eq!(
        (header(&r, "content-encoding"), header(&r, "vary")),
        (String::new(), String::new())
    );
    let r = raw(
        &edge,
        SHOP,
        "/small",
        &[("accept-encoding", "br, identity;q=0")],
    )
    .await;
    assert_eq!(r.status(), 406);
    assert!(r.text().await.unwrap().contains("accepted content coding"));
    let r = raw(
        &edge,
        SHOP,
        "/",
        &[("accept-encoding", "gzip, identity;q=0")],
    )
    .await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "content-encoding")),
        (200, "gzip".into())
    );

    // 304 across codings: any of the version's tags is current.
    for (held, accept, expect) in [
        ("\"v1\"", "br", "\"v1-br\""),
        ("\"v1-gzip\"", "", "\"v1\""),
        ("W/\"v1-zstd\"", "gzip", "\"v1-gzip\""),
    ] {
        let r = raw(
            &edge,
            SHOP,
            "/",
            &[("if-none-match", held), ("accept-encoding", accept)],
        )
        .await;
        assert_eq!(r.status(), 304, "{held} / {accept}");
        assert_eq!(header(&r, "etag"), expect);
        assert_eq!(header(&r, "vary"), "Accept-Encoding");
    }
    let r = raw(&edge, SHOP, "/", &[("if-none-match", "\"v0-br\"")]).await;
    assert_eq!(r.status(), 200);

    // HEAD: the chosen variant's length, no body.
    let r = client()
        .head(edge.url("/"))
        .header("host", SHOP)
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-length"), br_len.to_string());
    assert_eq!(header(&r, "content-encoding"), "br");

    // Range is not served on pages: the whole representation, 200.
    let r = raw(
        &edge,
        SHOP,
        "/",
        &[("range", "bytes=0-9"), ("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-range"), "");

    // Memory by representation, counted in the cache's bound.
    assert!(
        edge.metric("edgepop_cache_page_bytes{encoding=\"br\"}")
            .await
            > 0.0
    );
    assert_eq!(
        edge.metric("edgepop_cache_page_bytes{encoding=\"identity\"}")
            .await,
        (v1.len() + "<p>tiny</p>".len()) as f64
    );
    assert!(
        edge.metric("edgepop_page_compression_total{result=\"made\"}")
            .await
            >= 1.0
    );
    assert!(
        edge.metric("edgepop_encoded_responses_total{encoding=\"br\",source=\"page\"}")
            .await
            >= 1.0
    );

    // A new version replaces every variant: once its identity body is
    // served, no variant of the old one ever is.
    let v2 = storefront(2);
    s.publish_page("/", &v2, 2, false).await;
    let mut seen_v2 = false;
    let mut coded_v2 = [false; 3];
    let deadline = std::time::Instant::now() + SEC(30);
    while coded_v2 != [true; 3] {
        assert!(
            std::time::Instant::now() < deadline,
            "v2 variants never all served: {coded_v2:?}"
        );
        if header(&raw(&edge, SHOP, "/", &[]).await, "etag") == "\"v2\"" {
            seen_v2 = true;
        }
        for (i, coding) in ["br", "zstd", "gzip"].into_iter().enumerate() {
            let (head, body) = curl(&edge, SHOP, "/", &[&format!("Accept-Encoding: {coding}")]);
            if seen_v2 {
                same(
                    &body,
                    v2.as_bytes(),
                    &format!("{coding} after v2 was served: {head}"),
                );
            }
            if head.contains(&format!("etag: \"v2-{coding}\"")) {
                same(&body, v2.as_bytes(), coding);
                coded_v2[i] = true;
            }
        }
    }
}

/// An origin answering each path with one kind of response.
async fn origin() -> std::net::SocketAddr {
    use bytes::Bytes;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let html = storefront(7);
                    let chunks = |n: usize, piece: String| {
                        let frames = (0..n).map(move |_| {
                            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(
                                piece.clone(),
                            )))
                        });
                        http_body_util::Either::Right(StreamBody::new(futures::stream::iter(
                            frames,
                        )))
                    };
                    let full = |b: Vec<u8>| http_body_util::Either::Left(Full::new(Bytes::from(b)));
                    let (ctype, extra, body) = match req.uri().path() {
                        "/html" => ("text/html", None, full(html.into_bytes())),
                        "/chunked" => ("text/html", None, chunks(40, storefront(3))),
                        "/no-transform" => (
                            "text/html",
                            Some(("cache-control", "public, no-transform")),
                            full(html.into_bytes()),
                        ),
                        "/gzipped" => {
                            let mut e = flate2::write::GzEncoder::new(
                                Vec::new(),
                                flate2::Compression::fast(),
                            );
                            std::io::Write::write_all(&mut e, html.as_bytes()).unwrap();
                            (
                                "text/html",
                                Some(("content-encoding", "gzip")),
                                full(e.finish().unwrap()),
                            )
                        }
                        "/png" => ("image/png", None, full(html.into_bytes())),
                        // 10 MB in 64 KiB pieces: streamed, never held.
                        "/big" => (
                            "text/plain",
                            None,
                            chunks(160, "0123456789abcdef".repeat(4096)),
                        ),
                        _ => ("text/plain", None, full(b"ok".to_vec())),
                    };
                    let mut resp = hyper::Response::builder().header("content-type", ctype);
                    if let Some((k, v)) = extra {
                        resp = resp.header(k, v);
                    }
                    Ok::<_, std::convert::Infallible>(resp.body(body).unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxied_answers_are_encoded_as_they_stream() {
    let origin = origin().await;
    let edge = Edge::start(&format!(
        "{}{}{}",
        pool("public", &[(origin, 1)]),
        site("shop.test", "public", "active"),
        "[[sites]]\nhostname = \"plain.test\"\nstore_id = 2\ntier = \"public\"\ncompress_proxied = false\n"
    ))
    .await;

    // A Content-Length answer and a chunked one, in each coding.
    for (path, expect) in [
        ("/html", storefront(7)),
        ("/chunked", storefront(3).repeat(40)),
    ] {
        for coding in ["br", "zstd", "gzip"] {
            let (head, body) = curl(
                &edge,
                "shop.test",
                path,
                &[&format!("Accept-Encoding: {coding}")],
            );
            assert!(
                head.contains(&format!("content-encoding: {coding}\r\n")),
                "{path} {coding}: {head}"
            );
            assert!(!head.contains("content-length:"), "{path}: {head}");
            assert!(
                head.contains("transfer-encoding: chunked\r\n"),
                "{path}: {head}"
            );
            assert!(head.contains("vary: accept-encoding\r\n"), "{path}: {head}");
            same(
                &body,
                expect.as_bytes(),
                &format!("{path} {coding}: {head}"),
            );
        }
    }
    let r = raw(&edge, "shop.test", "/html", &[("accept-encoding", "gzip")]).await;
    let wire = r.bytes().await.unwrap().len();
    assert!(wire * 4 < storefront(7).len(), "gzip on the wire: {wire}");

    // No coding asked: identity, with its length, still Vary.
    let r = raw(&edge, "shop.test", "/html", &[]).await;
    assert_eq!(header(&r, "content-encoding"), "");
    assert_eq!(
        header(&r, "content-length"),
        storefront(7).len().to_string()
    );
    assert_eq!(header(&r, "vary"), "Accept-Encoding");

    // Never touched: no-transform, an answer already encoded, a type not
    // worth it, a site that turned it off.
    let gz = "Accept-Encoding: gzip, br";
    let (head, body) = curl(&edge, "shop.test", "/no-transform", &[gz]);
    assert!(!head.contains("content-encoding"), "{head}");
    same(&body, storefront(7).as_bytes(), "no-transform");
    let r = raw(
        &edge,
        "shop.test",
        "/gzipped",
        &[("accept-encoding", "gzip, br")],
    )
    .await;
    assert_eq!(
        header(&r, "content-encoding"),
        "gzip",
        "the origin's own coding, once"
    );
    let mut decoded = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&r.bytes().await.unwrap()[..]),
        &mut decoded,
    )
    .unwrap();
    same(
        decoded.as_bytes(),
        storefront(7).as_bytes(),
        "gzipped by the origin",
    );
    let (head, body) = curl(&edge, "shop.test", "/tiny", &[gz]);
    assert!(
        !head.contains("content-encoding"),
        "below min_bytes: {head}"
    );
    assert_eq!(body, b"ok");
    let (head, _) = curl(&edge, "shop.test", "/png", &[gz]);
    assert!(!head.contains("content-encoding"), "{head}");
    let (head, body) = curl(&edge, "plain.test", "/html", &[gz]);
    assert!(!head.contains("content-encoding"), "{head}");
    same(
        &body,
        storefront(7).as_bytes(),
        "site without proxied compression",
    );

    assert!(
        edge.metric("edgepop_encoded_responses_total{encoding=\"br\",source=\"proxied\"}")
            .await
            >= 2.0
    );

    // 10 MB streamed through gzip: the node's memory does not grow with it.
    let pid = edge.child.id();
    let before = rss_kib(pid);
    let (head, body) = curl(&edge, "shop.test", "/big", &["Accept-Encoding: gzip"]);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert_eq!(body.len(), 160 * 65536);
    let grew = rss_kib(pid).saturating_sub(before);
    assert!(grew < 4096, "RSS grew {grew} KiB for a 10 MB body");
}
