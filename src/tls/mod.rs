//! TLS with on-demand certificates (as Caddy's certmagic: its own module,
//! pluggable `Issuer`, `CertStore`, `IssuanceLock` and `ChallengeBoard`).
//! For a ClientHello naming `X`: static certificate → memory → store →
//! issue now, but only when the `IssuePolicy` allows `X` (the edge: an
//! active domain in the directory); any other name is refused at once and
//! no CA is contacted. Concurrent handshakes for one new name make one
//! order; a failed name backs off; issuance has a global rate limit. With a
//! shared store, a per-name lease lock makes one order for the whole network.

pub mod acme;
pub mod book;
mod cert;
pub mod challenge;
pub mod error;
pub mod issuer;
pub mod issuers;
mod limits;
pub mod listener;
mod manager;
pub mod peering;
pub mod policy;
pub mod renewal;
pub mod store;

pub use cert::{load_static, server_config, validity, CertId, IssuedCert, StaticCerts};
pub use error::{CertError, IssueError, StoreError};
pub use manager::{CertManager, IssuePolicy, Refusal, TlsSettings};
