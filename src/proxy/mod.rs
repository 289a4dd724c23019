//! The request path, as Pingora phases from top to bottom:
//!
//! 1. `request_filter`: ACME HTTP-01 answers; Host → `Hostname` (400), directory lookup (421, 403);
//!    a GET/HEAD for a page in the replica is answered here (cache, else
//!    replica: HIT / MISS / STALE); anything else picks the origin pool of
//!    the domain's tier.
//! 2. `upstream_peer`: least-connections pick among healthy servers not yet
//!    tried (503 when none).
//! 3. `fail_to_connect` / `error_while_proxy`: passive ejection, retry on
//!    another server for idempotent methods.
//! 4. `upstream_request_filter`: forwarding headers, hop-by-hop removed.
//! 5. `upstream_response_filter` / `response_filter`: route, cache status
//!    and timing headers.
//! 6. `fail_to_proxy`: 502 / 503 / 504 with a reason.
//! 7. `logging`: metrics and the JSON access log.

pub mod access_log;
mod cancel;
mod ctx;
pub mod gate;
mod gather;
pub mod head;
mod headers;
pub mod idle;
mod page;
mod park;
mod places;
pub mod relay;
mod respond;
pub mod route;
mod upstream;

pub use ctx::{CacheStatus, RequestCtx, Scheme};

use crate::cache::Lookup;
use crate::domain::{Authority, DomainRecord, DomainStatus, Hostname};
use crate::edge::Edge;
use crate::failover::RelayReason;
use crate::lb::Pick;
use crate::metrics::METRICS;
use crate::tls::book::SniBook;
use crate::tls::challenge::ChallengeKey;
use crate::tls::policy::HttpsPolicy;
use crate::tls::CertManager;
use async_trait::async_trait;
use http::StatusCode;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use relay::{Inbound, PeerListener};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

pub struct EdgeProxy {
    edge: Arc<Edge>,
    /// The listener this proxy serves.
    scheme: Scheme,
    cancellations: cancel::Cancellations,
    /// HTTPS: the name each connection was opened for.
    sni: Option<Arc<SniBook>>,
    /// Set on the peer listener's proxy.
    peering: Option<PeerListener>,
}

impl EdgeProxy {
    /// The answer to an ACME HTTP-01 validation, if this is one.
    async fn acme_challenge(&self, session: &Session) -> Option<String> {
        let certs = self.edge.certs.get()?;
        let key = ChallengeKey::from_path(session.req_header().uri.path())?;
        certs.challenge_answer(&key).await
    }

    pub fn new(edge: Arc<Edge>, scheme: Scheme) -> Self {
        EdgeProxy {
            edge,
            scheme,
            cancellations: cancel::Cancellations::default(),
            sni: None,
            peering: None,
        }
    }

    /// For the peer listener: requests come from authenticated peer PoPs.
    pub fn with_peering(mut self, listener: PeerListener) -> Self {
        self.peering = Some(listener);
        self
    }

    /// For HTTPS: requests are held against their connection's SNI.
    pub fn with_sni(mut self, book: Arc<SniBook>) -> Self {
        self.sni = Some(book);
        self
    }

    /// The name an HTTPS connection was opened for, when a request on it
    /// asks for a site that may not be reached that way (domain fronting).
    fn fronted(
        &self,
        session: &Session,
        host: &Hostname,
        policy: &HttpsPolicy,
    ) -> Option<Hostname> {
        let connection = session.client_addr()?.as_inet()?;
        let sni = self.sni.as_ref()?.other_than(connection, host)?;
        let coalesced = |c: &Arc<CertManager>| c.one_certificate(&sni, host);
        if policy.fronting_allowed(host) || self.edge.certs.get().is_some_and(coalesced) {
            return None;
        }
        Some(sni)
    }

    /// The Host of the request: the URI authority (HTTP/2 `:authority`,
    /// absolute-form) or else the single `Host` header.
    fn authority(req: &RequestHeader) -> Result<&[u8], &'static str> {
        if let Some(auth) = req.uri.authority() {
            return Ok(auth.as_str().as_bytes());
        }
        let mut hosts = req.headers.get_all(http::header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(h), None) => Ok(h.as_bytes()),
            (None, _) => Err("missing Host header"),
            (Some(_), Some(_)) => Err("more than one Host header"),
        }
    }

    /// Connection limits, and requests no origin should see: TRACE (it
    /// echoes headers such as cookies back), and a Content-Length that is
    /// not one plain number (a list, or several headers: framing two hops
    /// could read differently). True: answered here.
    async fn refused(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let proxy = &ctx.state.config.proxy;
        // Idle keep-alive connections close after the timeout; the count
        // limit gives per-connection memory back now and then.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(proxy.keepalive_timeout.as_secs().max(1)));
        }
        // Pipelined requests are read from what the client already sent
        // and answered in order instead of being dropped with the buffer.
        session.set_pipelining_enabled(true);
        // Each read of the request body (HTTP/1) waits this long at most.
        session.set_read_timeout(Some(proxy.body_timeout));

        let req = session.req_header();
        if req.method == http::Method::TRACE || req.method.as_str() == "TRACK" {
            let allow = [(
                "allow",
                "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS".to_string(),
            )];
            let reason = format!("{} is not allowed", req.method);
            respond::error_with(session, ctx, StatusCode::METHOD_NOT_ALLOWED, reason, &allow)
                .await?;
            return Ok(true);
        }
        let plain = |v: &http::HeaderValue| {
            let v = v.as_bytes();
            !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit)
        };
        let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
        let (first, second) = (lengths.next(), lengths.next());
        if second.is_some() || first.is_some_and(|v| !plain(v)) {
            let reason = "Content-Length must be one number, sent once".to_string();
            respond::error(session, ctx, StatusCode::BAD_REQUEST, reason, None).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Answers a storefront page from the edge. False: the origin serves it.
    async fn serve_page(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        domain: &DomainRecord,
    ) -> Result<bool> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return Ok(false);
        }
        let storefront = &self.edge.data.storefront;
        let Some(key) = storefront.page_key(domain.store_id, req.uri.path(), req.uri.query())
        else {
            return Ok(false);
        };
        let page = match storefront.page(key).await {
            Lookup::Hit(p) => {
                ctx.cache = CacheStatus::Hit;
                p
            }
            Lookup::Miss(p, took) => {
                ctx.cache = CacheStatus::Miss;
                ctx.replica_elapsed = Some(took);
                p
            }
            Lookup::Stale(p) => {
                ctx.cache = CacheStatus::Stale;
                p
            }
            Lookup::NotFound => return Ok(false),
            Lookup::Unavailable(why) => {
                // No copy anywhere here: a peer PoP with its replica up
                // serves it (upstream_peer), else the origin may have it.
                ctx.error_reason = Some(why);
                ctx.relay = Some(ctx::Relay::new(RelayReason::ReplicaDown));
                return Ok(false);
            }
        };
        page::serve(session, ctx, &page).await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let mut ctx = RequestCtx::new(self.edge.state(), self.edge.begin_request());
        ctx.scheme = self.scheme;
        ctx
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        match &self.peering {
            Some(listener) => match relay::inbound(session, ctx, listener) {
                Inbound::Admitted => {}
                Inbound::Ready(reasons) => {
                    respond::readiness(session, ctx, reasons).await?;
                    return Ok(true);
                }
                Inbound::Refused(code, reason) => {
                    respond::error(session, ctx, code, reason, None).await?;
                    return Ok(true);
                }
            },
            // A client's x-edge-route never travels on.
            None => {
                session.req_header_mut().remove_header(route::HEADER);
            }
        }
        if self.refused(session, ctx).await? {
            return Ok(true);
        }

        // ACME HTTP-01 validations may reach any PoP, for any name being
        // ordered anywhere: answered before the host checks and the redirect.
        if let Some(answer) = self.acme_challenge(session).await {
            respond::challenge(session, ctx, answer).await?;
            return Ok(true);
        }

        let authority = match Self::authority(session.req_header()) {
            Ok(a) => a,
            Err(reason) => {
                respond::error(session, ctx, StatusCode::BAD_REQUEST, reason.into(), None).await?;
                return Ok(true);
            }
        };
        let authority = match Authority::parse(authority) {
            Ok(a) => a,
            Err(e) => {
                respond::error(session, ctx, StatusCode::BAD_REQUEST, e.to_string(), None).await?;
                return Ok(true);
            }
        };
        let host = authority.host.clone();
        ctx.authority = Some(authority);

        let domain = match ctx.state.directory.lookup(&host).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                let reason = format!("{host} is not served by this network");
                respond::error(session, ctx, StatusCode::MISDIRECTED_REQUEST, reason, None).await?;
                return Ok(true);
            }
            Err(e) => {
                let retry = Some(ctx.state.config.proxy.retry_after);
                respond::error(
                    session,
                    ctx,
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.to_string(),
                    retry,
                )
                .await?;
                return Ok(true);
            }
        };
        ctx.host = Some(host);
        if domain.status == DomainStatus::Suspended {
            let reason = format!("{} is suspended", domain.hostname);
            respond::error(session, ctx, StatusCode::FORBIDDEN, reason, None).await?;
            return Ok(true);
        }
        if let Some(policy) = &ctx.state.https {
            if ctx.scheme == Scheme::Https {
                if let Some(sni) = self.fronted(session, &domain.hostname, policy) {
                    let reason = format!(
                        "this connection was opened for {sni}: open one for {}",
                        domain.hostname
                    );
                    respond::error(session, ctx, StatusCode::MISDIRECTED_REQUEST, reason, None)
                        .await?;
                    return Ok(true);
                }
                ctx.hsts = policy.hsts(&domain.hostname).map(str::to_string);
            } else {
                let target = session
                    .req_header()
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str());
                if let Some(location) = policy.redirect(&domain.hostname, target) {
                    respond::redirect(session, ctx, location).await?;
                    return Ok(true);
                }
            }
        }
        if self.serve_page(session, ctx, &domain).await? {
            return Ok(true);
        }
        ctx.pool = ctx.state.pools.get(domain.tier).cloned();
        if ctx.pool.is_none() {
            let reason = format!("no origin pool for tier {}", domain.tier.as_str());
            let retry = Some(ctx.state.config.proxy.retry_after);
            respond::error(session, ctx, StatusCode::SERVICE_UNAVAILABLE, reason, retry).await?;
            return Ok(true);
        }
        // A stream the client reset already (a rapid-reset burst) costs the
        // origin nothing: no answer, no connection, no slot.
        if let Some(why) = cancel::stream_gone(session.as_downstream_mut()) {
            METRICS
                .client_cancelled
                .with_label_values(&["before_origin"])
                .inc();
            ctx.error_reason = Some(why);
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        // A retry releases the previous server (or peer) before the next.
        ctx.inflight = None;
        if let Some(reason) = ctx.relay.as_ref().map(|r| r.reason) {
            if let Some(peer) = relay::target(session, ctx, reason) {
                return Ok(peer);
            }
            if reason != RelayReason::ReplicaDown {
                let why = "no peer PoP could take the request";
                return Error::e_explain(ErrorType::HTTPStatus(503), why);
            }
            // The replica is down and no peer can take it: the origin may
            // have the page.
            ctx.relay = None;
        }
        let pool = ctx.pool.clone().expect("request_filter set the pool");
        let guard = match pool.acquire(&ctx.tried) {
            Pick::Server(guard) => guard,
            Pick::NoneAvailable => {
                if let Some(peer) = relay::target(session, ctx, RelayReason::NoOrigin) {
                    return Ok(peer);
                }
                // Either way the client sees "no healthy server": 503, retry later.
                let why = if ctx.tried.is_empty() {
                    "no healthy origin server"
                } else {
                    "no origin server reachable"
                };
                return Error::e_explain(ErrorType::HTTPStatus(503), why);
            }
            Pick::Full => {
                if let Some(peer) = relay::target(session, ctx, RelayReason::Overflow) {
                    METRICS.overflow.with_label_values(&["relayed"]).inc();
                    return Ok(peer);
                }
                upstream::wait_for_slot(&pool, ctx).await?
            }
        };
        Ok(upstream::origin(ctx, guard))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(pop) = ctx.relay.as_ref().and_then(|r| r.peer.clone()) {
            // Nothing reached the peer: another one may take the request.
            ctx.inflight = None;
            ctx.state.peers.failed(&pop);
            if relay::possible(session, ctx) {
                e.set_retry(true);
                return e;
            }
            let why = "no peer PoP reachable";
            return Error::because(ErrorType::HTTPStatus(503), why, e);
        }
        upstream::record_origin_failure(ctx);
        // Nothing reached the origin: another server, else a peer PoP.
        if upstream::retry_allowed(session, ctx) || relay::possible(session, ctx) {
            e.set_retry(true);
            return e;
        }
        // Out of servers to try: to the client no origin is available; the
        // cause (addresses, OS errors) goes to the log only.
        let why = format!("no origin server reachable after {} tries", ctx.tried.len());
        Error::because(ErrorType::HTTPStatus(503), why, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if upstream::body_late(session, &e) {
            // The origin waits for a body the client is slow to send: 408,
            // the origin's slot given back now, no failure held against it.
            ctx.inflight = None;
            METRICS
                .client_limits
                .with_label_values(&["body_timeout"])
                .inc();
            let why = "the request body was not received in time";
            return Error::because(ErrorType::HTTPStatus(408), why, e);
        }
        // A slow origin is answered 504 at once: retrying would double the wait.
        let timed_out = matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        if ctx.relay.as_ref().is_some_and(|r| r.peer.is_some()) {
            // A peer's failure is not held against an origin. Retried only
            // where Pingora's default would: a stale pooled connection.
            let safe = !timed_out
                && !ctx.upstream_responded()
                && !session.as_ref().retry_buffer_truncated()
                && session.req_header().method.is_idempotent();
            if safe {
                e.retry.decide_reuse(client_reused);
            } else {
                e.set_retry(false);
            }
            return e;
        }
        if e.esource() == &pingora_core::ErrorSource::Upstream && !timed_out {
            upstream::record_origin_failure(ctx);
        }
        let retry = !timed_out
            && !ctx.upstream_responded()
            && !session.as_ref().retry_buffer_truncated()
            && upstream::retry_allowed(session, ctx);
        e.set_retry(retry);
        e
    }

    /// A body trickled in small pieces (each within `body_timeout` of the
    /// last) still has a due time: `body_timeout` after the head, plus a
    /// second per `body_min_rate` bytes received.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.body_received += body.as_ref().map_or(0, |b| b.len() as u64);
        let proxy = &ctx.state.config.proxy;
        if end_of_stream || proxy.body_min_rate == 0 {
            return Ok(());
        }
        let earned = Duration::from_secs_f64(ctx.body_received as f64 / proxy.body_min_rate as f64);
        if ctx.started.elapsed() > proxy.body_timeout + earned {
            let why = format!(
                "request body slower than {} bytes/s ({} bytes in {:?})",
                proxy.body_min_rate,
                ctx.body_received,
                ctx.started.elapsed()
            );
            let mut e = Error::explain(ErrorType::ReadTimedout, why);
            e.as_down();
            return Err(e);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        headers::strip_hop_by_hop_request(upstream);
        // A relayed request keeps the forwarding headers of the PoP the
        // client landed on: the peer's address is not the client's.
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .filter(|_| ctx.relayed_from.is_none())
            .map(|a| a.ip().to_string());
        headers::add_forwarded(upstream, ctx, client_ip);
        if ctx.relay.as_ref().is_some_and(|r| r.peer.is_some()) {
            relay::upstream_request(upstream, ctx);
        } else {
            ctx.sent_to_origin = true;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.relay.as_ref().is_some_and(|r| r.peer.is_some()) {
            relay::response(upstream, ctx);
        } else {
            ctx.origin_elapsed = ctx.origin_started.map(|s| s.elapsed());
            if let Some(guard) = &ctx.inflight {
                guard.backend().record_success();
            }
        }
        headers::strip_hop_by_hop_response(upstream);
        // Speak HTTP/1.1 to clients even when an origin answers in 1.0.
        upstream.set_version(http::Version::HTTP_11);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        headers::decorate(resp, ctx);
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        use pingora_core::ErrorSource;
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream if cancel::by_client(e) => 0,
                ErrorSource::Downstream => 400,
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        // Nothing can be said once the response has started or the client is gone.
        if code > 0 && session.response_written().is_none() {
            // The connection ends after this page (can_reuse_downstream is
            // false): say so, or a client may send its next request on it.
            session.set_keepalive(None);
            // Our own 503s say why in words fit for a client; anything else
            // gets its status's short reason. The full error is logged.
            let upstream = match ctx.relay.as_ref().and_then(|r| r.peer.as_ref()) {
                Some(_) => "the peer PoP",
                None => "the origin server",
            };
            let reason = match (e.etype(), &e.context) {
                (ErrorType::HTTPStatus(_), Some(why)) => why.as_str().to_string(),
                _ => match code {
                    502 => format!("{upstream} failed to answer"),
                    504 => format!("{upstream} did not answer in time"),
                    400 => "malformed request".to_string(),
                    _ => "internal error".to_string(),
                },
            };
            let retry = (code == 503).then_some(ctx.state.config.proxy.retry_after);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if let Err(write_err) = respond::error(session, ctx, status, reason, retry).await {
                warn!("failed to send error response: {write_err}");
            }
        }
        ctx.error_reason = Some(e.to_string());
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A client's cancellations are counted, and logged once per connection.
    fn suppress_error_log(&self, session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        if !cancel::by_client(e) {
            return false;
        }
        let connection = session.client_addr().and_then(|a| a.as_inet()).copied();
        if let Some(connection) = connection.filter(|c| self.cancellations.first_on(*c)) {
            warn!(client = %connection, "client cancelled a request (later ones on this connection are counted, not logged): {e}");
        }
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.inflight = None;
        relay::count(ctx);
        if e.is_some_and(cancel::by_client) {
            METRICS
                .client_cancelled
                .with_label_values(&["in_flight"])
                .inc();
        }
        access_log::record(session, e, ctx);
    }
}
