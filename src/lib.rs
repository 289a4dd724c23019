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

/// The Pingora `IO` ids and digests of a stream wrapper (`TlsIo`,
/// `ClientStream`), taken from the stream it wraps: `|s| <expr on s>`.
macro_rules! io_digests_from_inner {
    ($ty:ty, |$s:ident| $inner:expr) => {
        impl pingora_core::protocols::UniqueID for $ty {
            fn id(&self) -> pingora_core::protocols::UniqueIDType {
                let $s = self;
                $inner.id()
            }
        }
        impl pingora_core::protocols::GetTimingDigest for $ty {
            fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
                let $s = self;
                $inner.get_timing_digest()
            }
        }
        impl pingora_core::protocols::GetProxyDigest for $ty {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
                let $s = self;
                $inner.get_proxy_digest()
            }
        }
        impl pingora_core::protocols::GetSocketDigest for $ty {
            fn get_socket_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::SocketDigest>> {
                let $s = self;
                $inner.get_socket_digest()
            }
        }
        #[async_trait::async_trait]
        impl pingora_core::protocols::Peek for $ty {}
    };
}

pub mod admin;
pub mod cache;
pub mod change;
pub mod cli;
pub mod compress;
pub mod config;
pub mod conn;
pub mod directory;
pub mod domain;
pub mod edge;
pub mod failover;
pub mod lb;
pub mod listeners;
pub mod metrics;
pub mod pg;
pub mod proxy;
pub mod replica;
pub mod request;
pub mod sync;
pub mod tls;
pub mod ttfb;

/// A mutex's guard even if a panicking holder poisoned it: the data behind
/// our mutexes (maps, counters) stays consistent across a panic.
pub(crate) fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
