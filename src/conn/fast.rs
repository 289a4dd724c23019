//! The seam of the hot path: the keep-alive loop (`idle.rs`) reads a
//! request head with Pingora's own HTTP/1 session, then offers it to the
//! upper floor, which answers it on that session or declines. A declined
//! request goes on to Pingora's proxy on the same session, its request
//! read once (`ServerSession::keep_request`, a pingora-core patch),
//! carrying what the upper floor decided so far.

use async_trait::async_trait;
use pingora_core::protocols::http::ServerSession;
use std::any::Any;

/// What the upper floor did with a request.
pub enum Served {
    /// Answered on the session (written, logged, counted).
    Answered,
    /// Not answered: nothing was written. The value, if any, reaches the
    /// proxy as the connection's user context (`on_connection_reuse`).
    Declined(Option<Box<dyn Any + Send + Sync>>),
}

/// A request path of the upper floor that may answer a request before
/// Pingora's proxy does.
#[async_trait]
pub trait FastPath: Send + Sync + 'static {
    /// Whether a request starting with `head` (a whole head, as read) is
    /// offered at all: cheap, asked before Pingora's session reads it.
    fn wants(&self, head: &[u8]) -> bool;

    /// `session` holds a request whose head is read and whose body is
    /// empty: answer it on the session, or decline without writing.
    async fn serve(&self, session: &mut ServerSession) -> Served;
}
