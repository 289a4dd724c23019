//! The seam of the hot path. A request is offered to the upper floor,
//! which answers it on Pingora's own session or declines:
//!
//! - HTTP/1 (`idle.rs`): a GET/HEAD whose whole head came in one read is
//!   read with Pingora's HTTP/1 session; declined, it goes on to Pingora's
//!   proxy on the same session, its request read once
//!   (`ServerSession::keep_request`, a pingora-core patch).
//! - HTTP/2 (`H2Offer`): each stream's session, its request already read,
//!   before the proxy's; declined, the proxy gets it as it is.
//!
//! What the upper floor decided before declining travels with the request
//! (`handed_over`), so nothing is decided twice.

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use std::any::Any;
use std::cell::RefCell;
use std::sync::Arc;

/// What the upper floor decided of a request it declined.
pub type Decided = Box<dyn Any + Send + Sync>;

/// What the upper floor did with a request.
pub enum Served {
    /// Answered on the session (written, logged, counted).
    Answered,
    /// Answered, but the response was cut short (its upstream failed, or
    /// the client went away, mid-body): the connection ends now, the
    /// response unfinished, so a client never takes a part for the whole.
    Broken,
    /// Not answered: nothing was written. What was decided, if anything,
    /// is the proxy's to take (`handed_over`).
    Declined(Option<Decided>),
}

/// A request path of the upper floor that may answer a request before
/// Pingora's proxy does.
#[async_trait]
pub trait FastPath: Send + Sync + 'static {
    /// Offer requests at all (asked per request: it may follow reloads).
    fn enabled(&self) -> bool;

    /// `session` holds a GET or HEAD whose head is read (its body, if any,
    /// is not): answer it on the session, or decline without writing. A
    /// request with a body must be declined (HTTP/2 streams with one are
    /// never offered; HTTP/1 is checked by the implementation).
    async fn serve(&self, session: &mut ServerSession) -> Served;
}

tokio::task_local! {
    static HANDED: RefCell<Option<Decided>>;
}

/// What the fast path decided of the request the proxy is now serving in
/// this task, if it declined one (taken once).
pub fn handed_over() -> Option<Decided> {
    HANDED.try_with(|h| h.borrow_mut().take()).ok().flatten()
}

/// `app` serves the declined request, with what was decided at hand.
pub(super) async fn hand_over<A: HttpServerApp + Send + Sync>(
    app: &Arc<A>,
    session: ServerSession,
    decided: Option<Decided>,
    shutdown: &ShutdownWatch,
) -> Option<ReusedHttpStream> {
    match decided {
        Some(d) => {
            let serve = app.process_new_http(session, shutdown);
            HANDED.scope(RefCell::new(Some(d)), serve).await
        }
        None => app.process_new_http(session, shutdown).await,
    }
}

/// An HTTP app whose HTTP/2 streams are offered to the fast path first.
pub struct H2Offer<A> {
    pub app: Arc<A>,
    pub fast: Option<Arc<dyn FastPath>>,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for H2Offer<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let fast = self.fast.as_deref().filter(|f| f.enabled());
        // HTTP/2 and HTTP/3 (custom) streams: each stream's head is read.
        let offered = (session.is_http2() || session.is_custom()) && session.is_body_empty();
        let Some(fast) = fast.filter(|_| offered && hot_method(&session)) else {
            return self.app.process_new_http(session, shutdown).await;
        };
        match fast.serve(&mut session).await {
            Served::Answered => {
                let _ = session.finish().await; // an HTTP/2 stream is not reused
                None
            }
            Served::Broken => None, // dropped unfinished: the stream is reset
            Served::Declined(decided) => hand_over(&self.app, session, decided, shutdown).await,
        }
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.app.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.app.server_options()
    }

    async fn http_cleanup(&self) {
        self.app.http_cleanup().await
    }
}

/// A GET or HEAD: the only requests offered.
pub(super) fn head_is_hot(head: &[u8]) -> bool {
    head.starts_with(b"GET ") || head.starts_with(b"HEAD ")
}

fn hot_method(session: &ServerSession) -> bool {
    let method = &session.req_header().method;
    method == http::Method::GET || method == http::Method::HEAD
}
