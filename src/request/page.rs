//! Storefront pages answered by the edge itself, from the cache or the
//! replica: `etag: "v<version>"` (`"v<version>-br"` for a variant), 304 on
//! a matching `If-None-Match`, the stored variant the client accepts best
//! (`compress::choose`). No encoding work here: variants are made when a
//! page arrives. `Range` is not served on pages: the whole page, 200.

use super::refusal::Refusal;
use crate::cache::CachedPage;
use crate::compress::{add_vary, choose, NotAcceptable};
use crate::metrics::METRICS;
use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, IF_NONE_MATCH};
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
/// current (304). A client that accepts no representation held (only an
/// encoded one, and not this page's codings): 406.
pub fn response(
    page: &CachedPage,
    req: &HeaderMap,
) -> Result<(ResponseHeader, Option<Bytes>), Refusal> {
    let accepted = req.get_all(ACCEPT_ENCODING).iter().map(|v| v.as_bytes());
    let held = page.variants.iter().map(|v| v.encoding);
    let variant = match choose(accepted, held) {
        Ok(chosen) => chosen.and_then(|e| page.variants.iter().find(|v| v.encoding == e)),
        Err(NotAcceptable) => {
            let reason = "no representation of this page in an accepted content coding";
            return Err(Refusal::new(StatusCode::NOT_ACCEPTABLE, reason));
        }
    };
    let (etag, body) = match variant {
        Some(v) => (v.etag.as_str(), &v.body),
        None => (page.etag.as_str(), &page.body),
    };
    // Any representation the client holds is current: its tag names this version.
    let not_modified = req.get_all(IF_NONE_MATCH).iter().any(|v| {
        let held = v.as_bytes();
        etag_matches(held, &page.etag) || page.variants.iter().any(|x| etag_matches(held, &x.etag))
    });
    // A stored status outside HTTP's range (only a hand-edited replica
    // can hold one) is the edge's error, not the page's.
    let status = match not_modified {
        true => StatusCode::NOT_MODIFIED,
        false => StatusCode::from_u16(page.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let mut resp = ResponseHeader::build(status, Some(10)).expect("a StatusCode is valid");
    let _ = resp.insert_header("etag", etag);
    if let Some(cc) = &page.cache_control {
        let _ = resp.insert_header("cache-control", cc);
    }
    if page.encodable {
        add_vary(&mut resp);
    }
    if not_modified {
        return Ok((resp, None));
    }
    let _ = resp.insert_header("content-type", &page.content_type);
    if let Some(v) = variant {
        let _ = resp.insert_header("content-encoding", v.encoding.as_str());
        METRICS
            .encoded_responses
            .with_label_values(&[v.encoding.as_str(), "page"])
            .inc();
    }
    let _ = resp.insert_header("content-length", body.len());
    Ok((resp, Some(body.clone())))
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
