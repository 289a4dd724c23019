//! Storefront pages answered by the edge itself, from the cache or the
//! replica: `etag: "v<version>"`, 304 on a matching `If-None-Match`.

use crate::cache::CachedPage;
use bytes::Bytes;
use http::header::IF_NONE_MATCH;
use http::{HeaderMap, StatusCode};
use pingora_http::ResponseHeader;

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

/// The page's response head, and its body unless the client's copy is
/// current (304).
pub fn response(page: &CachedPage, req: &HeaderMap) -> (ResponseHeader, Option<Bytes>) {
    let not_modified = req
        .get_all(IF_NONE_MATCH)
        .iter()
        .any(|v| etag_matches(v.as_bytes(), &page.etag));
    // A stored status outside HTTP's range (only a hand-edited replica
    // can hold one) is the edge's error, not the page's.
    let status = match not_modified {
        true => StatusCode::NOT_MODIFIED,
        false => StatusCode::from_u16(page.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let mut resp = ResponseHeader::build(status, Some(8)).expect("a StatusCode is valid");
    let _ = resp.insert_header("etag", &page.etag);
    if let Some(cc) = &page.cache_control {
        let _ = resp.insert_header("cache-control", cc);
    }
    if not_modified {
        return (resp, None);
    }
    let _ = resp.insert_header("content-type", &page.content_type);
    let _ = resp.insert_header("content-length", page.body.len());
    (resp, Some(page.body.clone()))
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
