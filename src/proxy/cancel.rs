//! Requests a client gives up on: an HTTP/2 stream reset, a connection
//! closed mid-request. One client can cancel thousands of streams on one
//! connection (a rapid-reset burst); each is counted, but the log gets one
//! line per connection, not one per stream.

use pingora_core::protocols::http::ServerSession;
use pingora_core::{Error, ErrorSource, ErrorType};
use std::net::SocketAddr;
use std::time::Duration;

/// The connections whose first cancellation was logged. A connection is
/// known by its client address and port; forgotten after ten quiet minutes.
pub struct Cancellations {
    logged: moka::sync::Cache<SocketAddr, ()>,
}

impl Default for Cancellations {
    fn default() -> Self {
        Cancellations {
            logged: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }
}

impl Cancellations {
    /// True for the first cancellation seen on this connection: log it.
    pub fn first_on(&self, connection: SocketAddr) -> bool {
        self.logged.entry(connection).or_insert(()).is_fresh()
    }
}

/// The client went away or reset the stream: nothing of the error is the
/// node's or the origin's doing.
pub fn by_client(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::H2Error
                | ErrorType::ConnectionClosed
                | ErrorType::ReadError
                | ErrorType::WriteError
        )
}

/// Why an HTTP/2 stream is already gone (the client reset it, or its
/// connection failed), seen without waiting; None while it is alive.
pub fn stream_gone(session: &mut ServerSession) -> Option<String> {
    use futures::FutureExt;
    let ServerSession::H2(s) = session else {
        return None;
    };
    match s.idle().now_or_never()? {
        Ok(reason) => Some(format!("client reset the stream: {reason}")),
        Err(e) => Some(format!("client stream failed: {e}")),
    }
}
