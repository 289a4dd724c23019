//! The door of the client listeners: beyond the connection limits
//! (`places.rs`) a new connection is closed at once, so the descriptors
//! left over stay for the admin listener, the health checks, the origins
//! and the stores.

use super::head::HeadLimits;
use super::places::Connections;
use super::stream::ClientStream;
use crate::metrics::METRICS;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::sync::Arc;

/// A listener's app behind the gate.
pub struct Gate<A> {
    pub inner: Arc<A>,
    pub connections: Arc<Connections>,
    /// For a plain HTTP listener: the request-head limits (HTTPS applies
    /// them after the handshake, to HTTP/1 only).
    pub head: Option<HeadLimits>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Gate<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let place = match self.connections.admit(client) {
            Ok(place) => place,
            Err(limit) => {
                METRICS
                    .connections_refused
                    .with_label_values(&[limit])
                    .inc();
                return None; // closed: the cheapest answer to a flood
            }
        };
        // The keep-alive loop runs inside (`idle.rs`), so the connection
        // keeps its place until its last request is done. Plain HTTP: the
        // place goes with the client stream, into the lot when the
        // connection is parked (`park.rs`).
        match self.head {
            Some(limits) => {
                let client = ClientStream::new(stream, limits).holding(place);
                self.inner.process_new(Box::new(client), shutdown).await
            }
            None => {
                let _place = place;
                self.inner.process_new(stream, shutdown).await
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}
