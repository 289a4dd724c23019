//! The hot path's upper half: a request whose head the keep-alive loop
//! (`conn/idle.rs`) has read, or an HTTP/2 stream (`conn::H2Offer`), answered by the edge itself before
//! pingora-proxy builds its request future: a storefront page (a cache hit,
//! 304 included) and every other answer the rules give without an upstream
//! (a refusal, a redirect); and a small GET for an origin server
//! (`origin.rs`). Any other request that needs an upstream goes on to
//! Pingora's phases with what the rules decided (`RequestCtx`), so no rule
//! runs twice and none runs on one path only.

use super::origin::{self, Origins};
use super::respond::answer;
use super::steps::{decide, new_ctx, prepare, record};
use crate::conn::{FastPath, Served};
use crate::edge::Edge;
use crate::metrics::METRICS;
use crate::request::Listener;
use async_trait::async_trait;
use pingora_core::protocols::http::ServerSession;
use pingora_http::RequestHeader;
use std::sync::Arc;

/// The rules and the edge, for the listener's keep-alive loop.
pub struct HotPath {
    pub(super) edge: Arc<Edge>,
    pub(super) listener: Arc<Listener>,
    pub(super) origins: Origins,
}

#[async_trait]
impl FastPath for HotPath {
    /// `proxy.fast_path` (it follows reloads).
    fn enabled(&self) -> bool {
        self.edge.state().config.proxy.fast_path
    }

    async fn serve(&self, session: &mut ServerSession) -> Served {
        if !hot(session.req_header()) {
            METRICS.fast_path.with_label_values(&["declined"]).inc();
            return Served::Declined(None);
        }
        let mut ctx = new_ctx(&self.edge, &self.listener);
        prepare(session, &ctx, &self.listener);
        let Err(answered) = decide(&self.edge, &self.listener, session, &mut ctx).await else {
            // An upstream is needed: a small GET goes to its origin from
            // here, anything else on to Pingora's phases.
            ctx.decided = true;
            if origin::proxiable(session, &ctx) {
                let served = self.origins.serve(session, ctx).await;
                let outcome = match served {
                    Served::Declined(_) => "declined",
                    _ => "proxied",
                };
                METRICS.fast_path.with_label_values(&[outcome]).inc();
                return served;
            }
            METRICS.fast_path.with_label_values(&["declined"]).inc();
            return Served::Declined(Some(Box::new(ctx)));
        };
        let written = answer(session, &mut ctx, answered).await;
        record(session, written.as_ref().err().map(|e| &**e), &mut ctx);
        METRICS.fast_path.with_label_values(&["answered"]).inc();
        Served::Answered
    }
}

/// A GET or HEAD without a body, an upgrade or an expectation: the edge
/// may answer it on the spot. Anything else is Pingora's from the start.
fn hot(req: &RequestHeader) -> bool {
    use http::header::{CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
    let headers = &req.headers;
    (req.method == http::Method::GET || req.method == http::Method::HEAD)
        && !headers.contains_key(TRANSFER_ENCODING)
        && !headers.contains_key(EXPECT)
        && !headers.contains_key(UPGRADE)
        && headers
            .get(CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}
