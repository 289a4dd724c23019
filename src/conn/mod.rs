//! The connection side, below the request path: what happens to a client
//! connection before and between its requests. It knows bytes and
//! sockets, not sites, pages or origins (it imports neither `edge` nor
//! `proxy`).
//!
//! - `gate`: the door of the client listeners (connection limits, kept in
//!   `places`).
//! - `stream`: a client's HTTP/1 connection as the edge holds it: reads
//!   held to the request-head limits (`head`), small writes gathered so a
//!   response head leaves with its body (`gather`), its place at the door.
//! - `idle`: the HTTP/1 keep-alive loop (`H1Server`): the wait for the next
//!   request outside Pingora's request future; idle plain-HTTP connections
//!   parked as their sockets (`park`); a request whose head came whole
//!   offered first to the upper floor's hot path (`fast`: `FastPath`;
//!   `H2Offer` does the same for each HTTP/2 and HTTP/3 stream).
//! - `quic`: the QUIC listener (Retry, limits, the name's certificate
//!   from the floor above, then h3); `quic_hello` / `quic_accept` read the
//!   name a client asks for from its Initial packets; `h3`: one HTTP/3
//!   request stream as a Pingora server session.

pub mod fast;
pub mod gate;
mod gather;
pub mod h3;
pub mod head;
pub mod idle;
mod park;
pub mod places;
pub mod quic;
pub mod quic_accept;
pub mod quic_hello;
pub mod stream;

pub use fast::{handed_over, Decided, FastPath, H2Offer, Served};
pub use gate::Gate;
pub use head::HeadLimits;
pub use idle::{H1Server, KeepAlive};
pub use places::{connection_budget, Connections};
pub use stream::ClientStream;
