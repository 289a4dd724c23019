//! Storefront pages answered by the edge itself, from the cache or the
//! replica: `etag: "v<version>"`, 304 on a matching `If-None-Match`.

use super::ctx::RequestCtx;
use super::headers::decorate;
use crate::cache::CachedPage;
use http::header::IF_NONE_MATCH;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// RFC 9110 §13.1.2: weak comparison, a list of tags or `*`.
pub fn etag_matches(if_none_match: &[u8], etag: &str) -> bool {
    let Ok(value) = std::str::from_utf8(if_none_match) else {
        return false;
    };
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

pub async fn serve(session: &mut Session, ctx: &mut RequestCtx, page: &CachedPage) -> Result<()> {
    let req = session.req_header();
    let head = req.method == http::Method::HEAD;
    let not_modified = req
        .headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .any(|v| etag_matches(v.as_bytes(), &page.etag));
    let status = if not_modified { 304 } else { page.status };
    let mut resp = ResponseHeader::build(status, Some(8))?;
    resp.insert_header("etag", &page.etag)?;
    if let Some(cc) = &page.cache_control {
        resp.insert_header("cache-control", cc)?;
    }
    if !not_modified {
        resp.insert_header("content-type", &page.content_type)?;
        resp.insert_header("content-length", page.body.len())?;
    }
    decorate(&mut resp, ctx);
    let body_follows = !head && !not_modified;
    session
        .write_response_header(Box::new(resp), !body_follows)
        .await?;
    if body_follows {
        session
            .write_response_body(Some(page.body.clone()), true)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_comparison() {
        assert!(etag_matches(b"\"v3\"", "\"v3\""));
        assert!(etag_matches(b"\"v1\", W/\"v3\"", "\"v3\""));
        assert!(etag_matches(b"*", "\"v3\""));
        assert!(!etag_matches(b"\"v4\"", "\"v3\""));
        assert!(!etag_matches(b"v3", "\"v3\""));
    }
}
