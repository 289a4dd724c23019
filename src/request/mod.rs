//! The rules a request passes through, as plain functions over plain data
//! (the request's `http::request::Parts`, the connection's address, the
//! `RequestCtx`), without Pingora's `Session`: whichever path serves a
//! request calls these, so a rule exists once. In the order a request
//! meets them:
//!
//! 1. `admit`: requests no origin should see (405, 400), ACME HTTP-01
//!    answers, the Host (400), the directory (421, 403), HTTPS fronting
//!    (421) or the redirect to HTTPS (308); on the peer listener first the
//!    relayed request's own rules (`relay::inbound`).
//! 2. `routing`: a storefront page the edge answers itself (`page`), else
//!    the origin pool of the domain's tier; per attempt the upstream
//!    (`Upstream`: a server by least connections, or a peer PoP, `relay`).
//! 3. `headers`: what goes upstream (forwarding, hop-by-hop out) and what
//!    every response carries (`x-edge-route`, `x-edge-cache`,
//!    `server-timing`: `decorate`).
//! 4. `refusal`: the one shape of "no" (`Refusal`); `answer`: the edge's
//!    own answers (`Answer`: a refusal, a redirect, a page…) as responses.
//! 5. `log`: the request's metrics and its access-log line.

pub mod admit;
pub mod answer;
pub mod ctx;
pub mod headers;
pub mod log;
pub mod page;
pub mod refusal;
pub mod relay;
pub mod route;
pub mod routing;

pub use admit::{admit, Listener};
pub use answer::{Answer, Response};
pub use ctx::{CacheStatus, RequestCtx, Scheme, Upstream};
pub use refusal::Refusal;
pub use routing::{choose_upstream, route};
