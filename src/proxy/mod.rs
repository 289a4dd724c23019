//! The request path in Pingora's terms: `EdgeProxy`, whose `ProxyHttp`
//! phases (`phases.rs`, top to bottom) call the rules in `request` and
//! write what they decide to Pingora's session (`respond.rs`); the
//! upstream as Pingora's peer and its errors as refusals (`upstream.rs`);
//! requests a client gave up on (`cancel.rs`).

mod cancel;
mod phases;
mod respond;
mod upstream;

use crate::edge::Edge;
use crate::request::relay::PeerListener;
use crate::request::{Listener, Scheme};
use crate::tls::book::SniBook;
use std::sync::Arc;

pub struct EdgeProxy {
    edge: Arc<Edge>,
    /// The listener this proxy serves, as the rules need to know it.
    listener: Listener,
    cancellations: cancel::Cancellations,
}

impl EdgeProxy {
    pub fn new(edge: Arc<Edge>, scheme: Scheme) -> Self {
        EdgeProxy {
            edge,
            listener: Listener {
                scheme,
                sni: None,
                peering: None,
            },
            cancellations: cancel::Cancellations::default(),
        }
    }

    /// For the peer listener: requests come from authenticated peer PoPs.
    pub fn with_peering(mut self, listener: PeerListener) -> Self {
        self.listener.peering = Some(listener);
        self
    }

    /// For HTTPS: requests are held against their connection's SNI.
    pub fn with_sni(mut self, book: Arc<SniBook>) -> Self {
        self.listener.sni = Some(book);
        self
    }
}
