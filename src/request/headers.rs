//! Header rules of the request path: what goes upstream, what every
//! response carries.

use super::ctx::RequestCtx;
use super::route;
use http::header::{self, HeaderName};
use pingora_http::{RequestHeader, ResponseHeader};
use std::fmt::Write;

/// RFC 9110 §7.6.1 connection-specific fields, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];
// Names to insert are `&'static str`: Pingora turns a `HeaderName` it is
// given into a freshly allocated copy of its spelling first (its case
// map), a static string it keeps as it is.
const X_FORWARDED_FOR: &str = "x-forwarded-for";
/// For the lookup: a `&str` name is parsed again at every lookup.
const X_FORWARDED_FOR_NAME: HeaderName = HeaderName::from_static(X_FORWARDED_FOR);
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_EDGE_ROUTE: &str = route::HEADER;
const X_EDGE_CACHE: &str = "x-edge-cache";
const X_REQUEST_ID: &str = "x-request-id";
const SERVER_TIMING: &str = "server-timing";

/// Extra hop-by-hop names a sender listed in `Connection`.
fn connection_tokens(headers: &http::HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::try_from(t.trim()).ok())
}

/// The hop-by-hop names present: one pass over the few names a message
/// has (cheaper than a hash lookup per listed name), usually finding
/// none, so usually no allocation and no change to Pingora's two maps.
fn hop_by_hop(headers: &http::HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = headers
        .keys()
        .filter_map(|name| HOP_BY_HOP.iter().find(|hop| *hop == name).cloned())
        .collect();
    if names.contains(&header::CONNECTION) {
        names.extend(connection_tokens(headers));
    }
    names
}

pub fn strip_hop_by_hop_request(req: &mut RequestHeader) {
    for name in hop_by_hop(&req.headers) {
        req.remove_header(&name);
    }
}

pub fn strip_hop_by_hop_response(resp: &mut ResponseHeader) {
    for name in hop_by_hop(&resp.headers) {
        resp.remove_header(&name);
    }
}

/// The forwarding headers of an upstream request.
pub fn add_forwarded(req: &mut RequestHeader, ctx: &RequestCtx, client_ip: Option<String>) {
    if let Some(ip) = client_ip {
        let xff = match req
            .headers
            .get(&X_FORWARDED_FOR_NAME)
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip,
        };
        let _ = req.insert_header(X_FORWARDED_FOR, xff);
    }
    let _ = req.insert_header(X_FORWARDED_PROTO, ctx.scheme.as_str());
    // The origin hears the name the edge routed on, not the client's
    // spelling of it (case, trailing dot, Unicode forms).
    if let Some(authority) = &ctx.authority {
        let _ = req.insert_header(http::header::HOST, authority.host.as_str());
        let _ = req.insert_header(X_FORWARDED_HOST, authority.to_string());
    }
    let _ = req.insert_header(X_EDGE_ROUTE, ctx.route.render());
}

/// `x-edge-route`, `x-edge-cache` and `server-timing`, on every response.
/// A relayed response shows the whole chain the peer reported.
pub fn decorate(resp: &mut ResponseHeader, ctx: &RequestCtx) {
    let relayed_route = ctx.relay.as_ref().and_then(|r| r.route.as_deref());
    let _ = resp.insert_header(X_EDGE_ROUTE, relayed_route.unwrap_or(ctx.route.render()));
    let _ = resp.insert_header(X_EDGE_CACHE, ctx.cache.as_str());
    let _ = resp.insert_header(X_REQUEST_ID, ctx.id.to_string());
    if ctx.relay.as_ref().is_some_and(|r| r.elapsed.is_some()) {
        // The peer's parts are in ours (`Relay::timing`), less its `edge`.
        resp.remove_header(SERVER_TIMING);
    }
    let _ = resp.append_header(SERVER_TIMING, server_timing(ctx));
    if let Some(hsts) = &ctx.hsts {
        let _ = resp.insert_header("strict-transport-security", hsts.as_str());
    }
    if let Some(alt_svc) = alt_svc(ctx) {
        let _ = resp.insert_header(header::ALT_SVC, alt_svc);
    }
}

/// HTTP/3 advertised on HTTPS answers for a site that has it (its own
/// answers and its origin's: an origin's Alt-Svc names the origin's
/// ports, not this edge's, so it is replaced).
fn alt_svc(ctx: &RequestCtx) -> Option<&str> {
    if ctx.scheme != super::ctx::Scheme::Https {
        return None;
    }
    ctx.state.https.as_ref()?.alt_svc(ctx.host.as_ref()?)
}

fn server_timing(ctx: &RequestCtx) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("edge;dur=");
    millis(&mut out, ctx.started.elapsed());
    if let Some(replica) = ctx.replica_elapsed {
        out.push_str(", replica;dur=");
        millis(&mut out, replica);
    }
    if let Some(origin) = ctx.origin_time() {
        out.push_str(", origin;dur=");
        millis(&mut out, origin);
    }
    if let Some(relay) = &ctx.relay {
        let spent = relay.elapsed.or_else(|| relay.started.map(|s| s.elapsed()));
        if let Some(spent) = spent {
            out.push_str(", relay;dur=");
            millis(&mut out, spent);
        }
        if let Some(parts) = &relay.timing {
            let _ = write!(out, ", {parts}");
        }
    }
    out
}

/// `d` in milliseconds with three decimals (`12.345`), rounded to the
/// microsecond: integers, since float formatting costs more than the
/// rest of the header's work.
fn millis(out: &mut String, d: std::time::Duration) {
    let micros = (d.as_nanos() + 500) / 1000;
    let mut buf = itoa::Buffer::new();
    out.push_str(buf.format(micros / 1000));
    out.push('.');
    let frac = buf.format(micros % 1000 + 1000);
    out.push_str(&frac[1..]);
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
    use std::time::Duration;

    #[test]
    fn timings_read_as_milliseconds_with_three_decimals() {
        let read = |d: Duration| {
            let mut out = String::new();
            millis(&mut out, d);
            out
        };
        assert_eq!(read(Duration::from_nanos(0)), "0.000");
        assert_eq!(read(Duration::from_nanos(1_499)), "0.001");
        assert_eq!(read(Duration::from_nanos(1_500)), "0.002");
        assert_eq!(read(Duration::from_micros(12_345)), "12.345");
        assert_eq!(read(Duration::from_micros(7_000_050)), "7000.050");
        assert_eq!(read(Duration::from_nanos(999_999_600)), "1000.000");
    }

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
