//! A `/metrics` endpoint for a process that has no admin listener of its
//! own (the anycast companion): hyper's HTTP/1 server, one page. Bounded
//! like every listener: a few connections, a head deadline, no keep-alive
//! beyond a scrape's.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// Scrapers at once: Prometheus needs one; more wait in the backlog.
const MAX_CONNECTIONS: usize = 8;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `render()` at `GET /metrics` on `listen` until the task is
/// dropped. A port that cannot be bound is logged, not fatal: the caller's
/// own job matters more than its metrics.
pub async fn serve(listen: SocketAddr, render: Arc<dyn Fn() -> Vec<u8> + Send + Sync>) {
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%listen, error = %e, "metrics listener not bound; metrics are not served");
            return;
        }
    };
    info!(%listen, "metrics at /metrics");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let render = render.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &*render)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}

fn answer(req: &Request<Incoming>, render: &dyn Fn() -> Vec<u8>) -> Response<Full<Bytes>> {
    let (status, kind, body) = match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", render()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            b"not found: try GET /metrics\n".to_vec(),
        ),
    };
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, kind)
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}
