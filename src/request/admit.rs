//! Admission: whether the edge takes a request at all, and for which site.
//! In order: a peer listener's own rules, requests no origin should see,
//! ACME HTTP-01 validations, the Host, the directory (421 unknown, 403
//! suspended), and for HTTPS domain fronting (HTTP: the redirect to HTTPS).

use super::answer::Answer;
use super::ctx::{RequestCtx, Scheme};
use super::refusal::Refusal;
use super::relay::{self, PeerListener};
use crate::domain::{Authority, DomainRecord, DomainStatus, Hostname};
use crate::edge::Edge;
use crate::tls::book::SniBook;
use crate::tls::challenge::ChallengeKey;
use crate::tls::policy::HttpsPolicy;
use crate::tls::CertManager;
use http::request::Parts;
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;

/// The listener a request came in on, as the rules need to know it.
pub struct Listener {
    pub scheme: Scheme,
    /// HTTPS: the name each connection was opened for.
    pub sni: Option<Arc<SniBook>>,
    /// The peer listener: requests come from authenticated peer PoPs.
    pub peering: Option<PeerListener>,
}

/// The site `req` is for, or the edge's answer instead. `client` is the
/// connection's address (the peer listener's and the fronting check's key).
pub async fn admit(
    edge: &Edge,
    listener: &Listener,
    req: &Parts,
    client: Option<SocketAddr>,
    ctx: &mut RequestCtx,
) -> Result<DomainRecord, Answer> {
    if let Some(peering) = &listener.peering {
        relay::inbound(req, client, ctx, peering)?;
    }
    not_for_origins(req)?;
    // ACME HTTP-01 validations may reach any PoP, for any name being
    // ordered anywhere: answered before the host checks and the redirect.
    if let Some(answer) = challenge(edge, req).await {
        return Err(Answer::Challenge(answer));
    }
    let authority = authority(req)?;
    let host = authority.host.clone();
    ctx.authority = Some(authority);
    let domain = site(&host, ctx).await?;
    ctx.host = Some(host);
    ctx.tier = Some(domain.tier);
    if domain.status == DomainStatus::Suspended {
        let reason = format!("{} is suspended", domain.hostname);
        return Err(Refusal::new(StatusCode::FORBIDDEN, reason).into());
    }
    if let Some(policy) = &ctx.state.https {
        if ctx.scheme == Scheme::Https {
            let sni = listener.sni.as_deref();
            if let Some(sni) = fronted(edge, sni, client, &domain.hostname, policy) {
                let reason = format!(
                    "this connection was opened for {sni}: open one for {}",
                    domain.hostname
                );
                return Err(Refusal::new(StatusCode::MISDIRECTED_REQUEST, reason).into());
            }
            ctx.hsts = policy.hsts(&domain.hostname).map(str::to_string);
        } else {
            let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
            if let Some(location) = policy.redirect(&domain.hostname, target) {
                return Err(Answer::Redirect(location));
            }
        }
    }
    Ok(domain)
}

/// Requests no origin should see: TRACE (it echoes headers such as cookies
/// back), and a Content-Length that is not one plain number (a list, or
/// several headers: framing two hops could read differently).
pub fn not_for_origins(req: &Parts) -> Result<(), Refusal> {
    if req.method == http::Method::TRACE || req.method.as_str() == "TRACK" {
        let allow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS".to_string();
        let reason = format!("{} is not allowed", req.method);
        let refusal = Refusal::new(StatusCode::METHOD_NOT_ALLOWED, reason);
        return Err(refusal.with_header("allow", allow));
    }
    let plain = |v: &http::HeaderValue| {
        let v = v.as_bytes();
        !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit)
    };
    let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let (first, second) = (lengths.next(), lengths.next());
    if second.is_some() || first.is_some_and(|v| !plain(v)) {
        let reason = "Content-Length must be one number, sent once";
        return Err(Refusal::new(StatusCode::BAD_REQUEST, reason));
    }
    Ok(())
}

/// The answer to an ACME HTTP-01 validation, if this is one.
async fn challenge(edge: &Edge, req: &Parts) -> Option<String> {
    let certs = edge.certs.get()?;
    let key = ChallengeKey::from_path(req.uri.path())?;
    certs.challenge_answer(&key).await
}

/// The Host of the request, normalised: the URI authority (HTTP/2
/// `:authority`, absolute-form) or else the single `Host` header.
pub fn authority(req: &Parts) -> Result<Authority, Refusal> {
    let bad = |reason: String| Refusal::new(StatusCode::BAD_REQUEST, reason);
    let raw = match req.uri.authority() {
        Some(auth) => auth.as_str().as_bytes(),
        None => {
            let mut hosts = req.headers.get_all(http::header::HOST).iter();
            match (hosts.next(), hosts.next()) {
                (Some(h), None) => h.as_bytes(),
                (None, _) => return Err(bad("missing Host header".into())),
                (Some(_), Some(_)) => return Err(bad("more than one Host header".into())),
            }
        }
    };
    Authority::parse(raw).map_err(|e| bad(e.to_string()))
}

/// The directory's record of `host`: unknown is 421 (never an open proxy),
/// a directory that cannot answer is 503.
async fn site(host: &Hostname, ctx: &RequestCtx) -> Result<DomainRecord, Refusal> {
    match ctx.state.directory.lookup(host).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) => {
            let reason = format!("{host} is not served by this network");
            Err(Refusal::new(StatusCode::MISDIRECTED_REQUEST, reason))
        }
        Err(e) => Err(Refusal::unavailable(e.to_string(), ctx.retry_after())),
    }
}

/// The name an HTTPS connection was opened for, when a request on it asks
/// for a site that may not be reached that way (domain fronting).
fn fronted(
    edge: &Edge,
    sni: Option<&SniBook>,
    client: Option<SocketAddr>,
    host: &Hostname,
    policy: &HttpsPolicy,
) -> Option<Hostname> {
    let sni = sni?.other_than(&client?, host)?;
    let coalesced = |c: &Arc<CertManager>| c.one_certificate(&sni, host);
    if policy.fronting_allowed(host) || edge.certs.get().is_some_and(coalesced) {
        return None;
    }
    Some(sni)
}
