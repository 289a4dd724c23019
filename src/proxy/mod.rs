//! The request path in Pingora's terms: `EdgeProxy`, whose `ProxyHttp`
//! phases (`phases.rs`, top to bottom) call the rules in `request` and
//! write what they decide to Pingora's session (`respond.rs`); the
//! upstream as Pingora's peer and its errors as refusals (`upstream.rs`);
//! requests a client gave up on (`cancel.rs`). `fast.rs` is the hot path's
//! upper half: the same rules, answered before pingora-proxy's phases;
//! `origin.rs` its proxied GET; `steps.rs` what both paths do in the
//! same words.

mod cancel;
mod fast;
mod origin;
mod phases;
mod respond;
mod steps;
mod upstream;

pub use fast::HotPath;

use crate::edge::Edge;
use crate::request::Listener;
use pingora_core::server::configuration::ServerConf;
use std::sync::Arc;

pub struct EdgeProxy {
    edge: Arc<Edge>,
    /// The listener this proxy serves, as the rules need to know it.
    listener: Arc<Listener>,
    cancellations: cancel::Cancellations,
}

impl EdgeProxy {
    pub fn new(edge: Arc<Edge>, listener: Listener) -> Self {
        EdgeProxy {
            edge,
            listener: Arc::new(listener),
            cancellations: cancel::Cancellations::default(),
        }
    }

    /// The hot path for this proxy's listener (`proxy.fast_path`), with
    /// its origin connections configured as the proxy's are (`conf`).
    pub fn hot_path(&self, conf: &ServerConf) -> HotPath {
        HotPath {
            edge: self.edge.clone(),
            listener: self.listener.clone(),
            origins: origin::Origins::new(conf),
        }
    }
}
