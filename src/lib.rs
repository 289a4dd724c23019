//! edgepop: an anycast edge node on Pingora.
//!
//! One module per noun, in floors (docs/ARCHITECTURE.md, "Who may use
//! whom", checked by tests/layers.rs). Ground floor, the words: `domain`
//! (`Hostname`, `PopId`, `StoreId`, `Tier`, pages), `change` (what happened
//! at the primary), `metrics` (the registry), `pg` (Postgres pools). The
//! rooms: `config` (TOML, validated), `directory` (which hostnames this node
//! serves), `replica` (the local copy of `domains` and `pages`), `cache`
//! (moka in front of it), `sync` (the Kafka change stream), `lb` (origin
//! pools, least-connections, health), `tls` (on-demand certificates),
//! `failover` (readiness and draining). Then `edge` (one reloadable
//! generation of the above), `proxy` (the request path, Pingora phases top
//! to bottom) and `admin` (metrics, health, status), and `cli` on top.

pub mod admin;
pub mod cache;
pub mod change;
pub mod cli;
pub mod config;
pub mod directory;
pub mod domain;
pub mod edge;
pub mod failover;
pub mod lb;
pub mod metrics;
pub mod pg;
pub mod proxy;
pub mod replica;
pub mod sync;
pub mod tls;

/// A mutex's guard even if a panicking holder poisoned it: the data behind
/// our mutexes (maps, counters) stays consistent across a panic.
pub(crate) fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
