//! The edge's own answers (a refusal, a redirect, an ACME answer, a
//! readiness answer, a page) as plain responses (head and body) with the
//! headers every response carries; whichever path serves the request
//! writes them.

use super::ctx::RequestCtx;
use super::headers::decorate;
use super::refusal::Refusal;
use crate::cache::CachedPage;
use bytes::Bytes;
use http::StatusCode;
use pingora_http::ResponseHeader;
use std::sync::Arc;

/// A response the edge gives itself, before any upstream.
#[derive(Debug)]
pub enum Answer {
    Refuse(Refusal),
    /// A permanent redirect that keeps the method (308), e.g. HTTP to HTTPS.
    Redirect(String),
    /// An ACME HTTP-01 validation: the key authorization, as is.
    Challenge(String),
    /// A peer's readiness check (peer listener): 200, or 503 with the reasons.
    Ready(Vec<String>),
    /// A storefront page, from the cache or the replica.
    Page(Arc<CachedPage>),
}

impl From<Refusal> for Answer {
    fn from(r: Refusal) -> Self {
        Answer::Refuse(r)
    }
}

/// A response as written to the client: the head, and the body unless the
/// request was a HEAD or the status has none.
pub struct Response {
    pub head: ResponseHeader,
    pub body: Option<Bytes>,
}

impl Answer {
    /// The response for this answer to `req`. A refusal's reason is kept
    /// in `ctx.error_reason` for the log.
    pub fn response(self, req: &http::request::Parts, ctx: &mut RequestCtx) -> Response {
        let head_only = req.method == http::Method::HEAD;
        let (mut head, body) = match self {
            Answer::Refuse(refusal) => refusal_page(refusal, ctx),
            Answer::Redirect(location) => {
                let mut head = build(StatusCode::PERMANENT_REDIRECT, 6);
                let _ = head.insert_header("location", &location);
                let _ = head.insert_header("content-length", 0);
                (head, None)
            }
            Answer::Challenge(key_authorization) => {
                let kind = "application/octet-stream";
                content(StatusCode::OK, kind, key_authorization)
            }
            Answer::Ready(reasons) if reasons.is_empty() => {
                let kind = "text/plain; charset=utf-8";
                content(StatusCode::OK, kind, "ready\n".to_string())
            }
            Answer::Ready(reasons) => {
                let refusal = Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reasons.join("; "));
                refusal_page(refusal, ctx)
            }
            Answer::Page(page) => match super::page::response(&page, &req.headers) {
                Ok(page) => page,
                Err(refusal) => refusal_page(refusal, ctx),
            },
        };
        decorate(&mut head, ctx);
        Response {
            head,
            body: body.filter(|_| !head_only),
        }
    }
}

fn build(status: StatusCode, headers: usize) -> ResponseHeader {
    ResponseHeader::build(status, Some(headers)).expect("a valid status")
}

/// An error page: the status, a short reason a client may read, and the
/// request id that finds the full story in the log.
fn refusal_page(refusal: Refusal, ctx: &mut RequestCtx) -> (ResponseHeader, Option<Bytes>) {
    let code = refusal.status;
    let body = Bytes::from(format!(
        "{} {}: {}\nrequest id: {}\n",
        code.as_u16(),
        code.canonical_reason().unwrap_or(""),
        refusal.reason,
        ctx.id
    ));
    let mut head = build(code, 6);
    let _ = head.insert_header("content-type", "text/plain; charset=utf-8");
    let _ = head.insert_header("content-length", body.len());
    let _ = head.insert_header("cache-control", "no-store");
    if let Some(secs) = refusal.retry_after {
        let _ = head.insert_header("retry-after", secs.to_string());
    }
    for (name, value) in refusal.headers {
        let _ = head.insert_header(name, value);
    }
    ctx.error_reason = Some(refusal.reason);
    (head, Some(body))
}

fn content(code: StatusCode, content_type: &str, body: String) -> (ResponseHeader, Option<Bytes>) {
    let mut head = build(code, 4);
    let _ = head.insert_header("content-type", content_type);
    let _ = head.insert_header("content-length", body.len());
    (head, Some(Bytes::from(body)))
}
