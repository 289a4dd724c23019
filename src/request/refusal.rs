//! The one shape of "no" on the request path: a status, a reason a client
//! may read, and what it may do next. Made by the rules, by a failed
//! upstream and by the peer listener alike; `answer.rs` turns it into the
//! error page.

use http::StatusCode;

/// A request the edge answers with an error status: a short reason fit for
/// a client (never an address or an OS error: those go to the log), and
/// what the client may do (`retry-after`, `allow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
    /// Seconds, for a 503: when to come back.
    pub retry_after: Option<u32>,
    /// More response headers (`allow` on a 405).
    pub headers: Vec<(&'static str, String)>,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// 503, to come back after `retry_after` seconds (`proxy.retry_after`).
    pub fn unavailable(reason: impl Into<String>, retry_after: u32) -> Self {
        let mut refusal = Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason);
        refusal.retry_after = Some(retry_after);
        refusal
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}
