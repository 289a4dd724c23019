//! Header rules of the request path: what goes upstream, what every
//! response carries.

use super::ctx::RequestCtx;
use super::route;
use http::header::{self, HeaderName};
use pingora_http::{RequestHeader, ResponseHeader};
use std::fmt::Write;

/// RFC 9110 §7.6.1 connection-specific fields, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Extra hop-by-hop names a sender listed in `Connection` (usually none,
/// so usually no allocation).
fn connection_tokens(headers: &http::HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::try_from(t.trim()).ok())
        .collect()
}

pub fn strip_hop_by_hop_request(req: &mut RequestHeader) {
    for name in connection_tokens(&req.headers) {
        req.remove_header(&name);
    }
    for name in HOP_BY_HOP {
        req.remove_header(name);
    }
}

pub fn strip_hop_by_hop_response(resp: &mut ResponseHeader) {
    for name in connection_tokens(&resp.headers) {
        resp.remove_header(&name);
    }
    for name in HOP_BY_HOP {
        resp.remove_header(name);
    }
}

/// The forwarding headers of an upstream request.
pub fn add_forwarded(req: &mut RequestHeader, ctx: &RequestCtx, client_ip: Option<String>) {
    if let Some(ip) = client_ip {
        let xff = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip,
        };
        let _ = req.insert_header("x-forwarded-for", xff);
    }
    let _ = req.insert_header("x-forwarded-proto", ctx.scheme.as_str());
    // The origin hears the name the edge routed on, not the client's
    // spelling of it (case, trailing dot, Unicode forms).
    if let Some(authority) = &ctx.authority {
        let _ = req.insert_header(http::header::HOST, authority.host.as_str());
        let _ = req.insert_header("x-forwarded-host", authority.to_string());
    }
    let _ = req.insert_header(route::HEADER, ctx.route.render());
}

/// `x-edge-route`, `x-edge-cache` and `server-timing`, on every response.
/// A relayed response shows the whole chain the peer reported.
pub fn decorate(resp: &mut ResponseHeader, ctx: &RequestCtx) {
    let relayed_route = ctx.relay.as_ref().and_then(|r| r.route.as_deref());
    let _ = resp.insert_header(route::HEADER, relayed_route.unwrap_or(ctx.route.render()));
    let _ = resp.insert_header("x-edge-cache", ctx.cache.as_str());
    let _ = resp.insert_header("x-request-id", ctx.id.to_string());
    if ctx.relay.as_ref().is_some_and(|r| r.elapsed.is_some()) {
        // The peer's parts are in ours (`Relay::timing`), less its `edge`.
        resp.remove_header("server-timing");
    }
    let _ = resp.append_header("server-timing", server_timing(ctx));
    if let Some(hsts) = &ctx.hsts {
        let _ = resp.insert_header("strict-transport-security", hsts.as_str());
    }
}

fn server_timing(ctx: &RequestCtx) -> String {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let mut out = format!("edge;dur={:.3}", ms(ctx.started.elapsed()));
    if let Some(replica) = ctx.replica_elapsed {
        let _ = write!(out, ", replica;dur={:.3}", ms(replica));
    }
    if let Some(origin) = ctx.origin_time() {
        let _ = write!(out, ", origin;dur={:.3}", ms(origin));
    }
    if let Some(relay) = &ctx.relay {
        let spent = relay.elapsed.or_else(|| relay.started.map(|s| s.elapsed()));
        if let Some(spent) = spent {
            let _ = write!(out, ", relay;dur={:.3}", ms(spent));
        }
        if let Some(parts) = &relay.timing {
            let _ = write!(out, ", {parts}");
        }
    }
    out
}

/// What a relayed response says of the peer's work: its `server-timing`
/// parts other than its own `edge` (this PoP's `edge` and `relay` cover
/// that time), e.g. `replica;dur=0.4, origin;dur=2.1`.
pub fn peer_timing(resp: &ResponseHeader) -> Option<String> {
    let parts: Vec<&str> = resp
        .headers
        .get_all("server-timing")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.split(';').next() != Some("edge"))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_fixed_and_connection_listed_headers() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("connection", "keep-alive, x-secret")
            .unwrap();
        req.insert_header("x-secret", "1").unwrap();
        req.insert_header("te", "trailers").unwrap();
        req.insert_header("accept", "*/*").unwrap();
        strip_hop_by_hop_request(&mut req);
        assert!(req.headers.get("x-secret").is_none());
        assert!(req.headers.get("te").is_none());
        assert!(req.headers.get("connection").is_none());
        assert_eq!(req.headers.get("accept").unwrap(), "*/*");
    }
}
