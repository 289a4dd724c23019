//! edgepop: an anycast edge node on Pingora.
//!
//! One module per noun: `config` (TOML, validated), `domain` (the words:
//! `Hostname`, `PopId`, `Tier`), `directory` (which hostnames this node
//! serves), `lb` (origin pools, least-connections, health), `proxy` (the
//! request path, Pingora phases top to bottom), `failover` (readiness and
//! draining), `admin` (metrics, health, status), `edge` (one reloadable
//! generation of the above), `replica` (the local copy of `domains` and
//! `pages`), `cache` (moka in front of it), `sync` (the Kafka change stream),
//! `tls` (on-demand certificates), `pg` (Postgres pools) and `cli`.

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
