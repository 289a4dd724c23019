//! Responses the edge writes itself (errors with a reason), decorated like
//! every other response.

use super::ctx::RequestCtx;
use super::headers::decorate;
use bytes::Bytes;
use http::StatusCode;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// An error page: the status, a short reason a client may read, and the
/// request id that finds the full story in the log (the caller may record
/// a fuller `ctx.error_reason` after this).
pub async fn error(
    session: &mut Session,
    ctx: &mut RequestCtx,
    code: StatusCode,
    reason: String,
    retry_after: Option<u32>,
) -> Result<()> {
    let extra = retry_after.map(|secs| ("retry-after", secs.to_string()));
    error_with(session, ctx, code, reason, extra.as_slice()).await
}

/// `error` with extra response headers (`allow` on a 405).
pub async fn error_with(
    session: &mut Session,
    ctx: &mut RequestCtx,
    code: StatusCode,
    reason: String,
    headers: &[(&'static str, String)],
) -> Result<()> {
    let body = Bytes::from(format!(
        "{} {}: {}\nrequest id: {}\n",
        code.as_u16(),
        code.canonical_reason().unwrap_or(""),
        reason,
        ctx.id
    ));
    ctx.error_reason = Some(reason);
    let mut resp = ResponseHeader::build(code, Some(6))?;
    resp.insert_header("content-type", "text/plain; charset=utf-8")?;
    resp.insert_header("content-length", body.len())?;
    resp.insert_header("cache-control", "no-store")?;
    for (name, value) in headers {
        resp.insert_header(*name, value)?;
    }
    decorate(&mut resp, ctx);
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// A permanent redirect that keeps the method (308), e.g. HTTP to HTTPS.
pub async fn redirect(session: &mut Session, ctx: &mut RequestCtx, location: String) -> Result<()> {
    let mut resp = ResponseHeader::build(StatusCode::PERMANENT_REDIRECT, Some(6))?;
    resp.insert_header("location", &location)?;
    resp.insert_header("content-length", 0)?;
    decorate(&mut resp, ctx);
    session.write_response_header(Box::new(resp), true).await
}

/// The answer to an ACME HTTP-01 validation: the key authorization, as is.
pub async fn challenge(
    session: &mut Session,
    ctx: &mut RequestCtx,
    key_authorization: String,
) -> Result<()> {
    let kind = "application/octet-stream";
    content(session, ctx, StatusCode::OK, kind, key_authorization).await
}

/// A peer's readiness check (peer listener): 200, or 503 with the reasons.
pub async fn readiness(
    session: &mut Session,
    ctx: &mut RequestCtx,
    reasons: Vec<String>,
) -> Result<()> {
    if !reasons.is_empty() {
        let code = StatusCode::SERVICE_UNAVAILABLE;
        return error(session, ctx, code, reasons.join("; "), None).await;
    }
    let kind = "text/plain; charset=utf-8";
    content(session, ctx, StatusCode::OK, kind, "ready\n".to_string()).await
}

async fn content(
    session: &mut Session,
    ctx: &mut RequestCtx,
    code: StatusCode,
    content_type: &str,
    body: String,
) -> Result<()> {
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("content-length", body.len())?;
    decorate(&mut resp, ctx);
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}
