//! The QUIC listener (HTTP/3): a UDP socket, quinn's endpoint on it, and
//! for each connection the same limits and request path as a TCP one.
//!
//! A connection is taken in this order, cheapest refusal first:
//! 1. address validation: while more than `retry_above` handshakes are
//!    under way, a client whose address is not yet proven gets a Retry
//!    (stateless: nothing is kept for it);
//! 2. the connection limits (`places.rs`, the same counts as TCP's, per
//!    client address);
//! 3. the name the client asked for (`quic_accept::Hellos`), then the
//!    certificate for it from the floor above (`QuicHost`), which may be
//!    obtained now, as for a TCP handshake;
//! 4. the handshake, bounded; then HTTP/3 (h3), each request stream a
//!    Pingora custom session (`h3.rs`) handed to the same HTTP app as the
//!    TCP listeners' (fast path, then `ProxyHttp` phases).
//!
//! The amplification limit (3× before the address is validated) is
//! quinn's and stays on.

use super::h3::H3Session;
use super::places::Connections;
use super::quic_accept::{HelloTap, Hellos};
use crate::metrics::METRICS;
use async_trait::async_trait;
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use std::any::Any;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the listener asks of the floors above.
#[async_trait]
pub trait QuicHost: Send + Sync + 'static {
    /// The TLS config to accept a connection for `name` with (the name's
    /// certificate, ALPN h3); awaited: a new certificate may be obtained.
    /// Err: refused, with the reason for the log.
    async fn config_for(
        &self,
        name: Option<&str>,
    ) -> Result<Arc<dyn quinn::crypto::ServerConfig>, String>;

    /// Notes a live connection's name for its requests, until the value
    /// returned is dropped (noted again when the client's address moves).
    fn opened(&self, name: Option<&str>, client: SocketAddr) -> Box<dyn Any + Send + Sync>;
}

/// The listener's settings: limits from the TCP ones (`[proxy]`,
/// `[server]`), and `[tls]`.
#[derive(Clone, Debug)]
pub struct QuicSettings {
    /// The key of stateless resets (`tls.quic_reset_key`): shared by
    /// every PoP, a reset from any of them ends a connection another
    /// took; None: a key of this process alone.
    pub reset_key: Option<Vec<u8>>,
    /// Requests at once on one connection (HTTP/2's stream limit).
    pub streams: u32,
    /// A connection with nothing in flight for this long is closed.
    pub idle: Duration,
    /// Request head (QPACK field section) at most.
    pub max_head_bytes: usize,
    /// Longest wait for a request stream's head.
    pub head_timeout: Duration,
    /// Requests per connection, then GOAWAY (`keepalive_requests`).
    pub requests: u32,
    /// Handshakes under way above which clients must prove their address.
    pub retry_above: usize,
    /// Longest a handshake may take once its certificate is known.
    pub handshake_timeout: Duration,
}

/// How long the rest of a hello spanning several datagrams is waited for.
const HELLO_WAIT: Duration = Duration::from_secs(5);

/// A QUIC listener for `app`.
pub struct QuicListener<A> {
    endpoint: quinn::Endpoint,
    hellos: Arc<Hellos>,
    host: Arc<dyn QuicHost>,
    app: Arc<A>,
    connections: Arc<Connections>,
    limits: QuicSettings,
    /// The endpoint's own config: each connection gets a copy with its
    /// name's TLS config, so the token key (Retry and NEW_TOKEN tokens),
    /// the transport limits and the buffer bounds are one set.
    template: quinn::ServerConfig,
    handshaking: Arc<AtomicUsize>,
}

impl<A: HttpServerApp + Send + Sync + 'static> QuicListener<A> {
    /// The listener on `socket` (from `udp_socket`). Must run inside a
    /// tokio runtime: quinn's endpoint task is spawned on it.
    pub fn bind(
        socket: std::net::UdpSocket,
        host: Arc<dyn QuicHost>,
        app: Arc<A>,
        connections: Arc<Connections>,
        limits: QuicSettings,
    ) -> std::io::Result<Arc<Self>> {
        let runtime = quinn::default_runtime()
            .ok_or_else(|| std::io::Error::other("no tokio runtime for the QUIC endpoint"))?;
        let socket = runtime.wrap_udp_socket(socket)?;
        let (mut template, crypto) = endpoint_config()?;
        template.transport_config(Arc::new(transport(&limits)));
        let hellos = Hellos::new(crypto);
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_settings(limits.reset_key.as_deref()),
            Some(template.clone()),
            HelloTap::new(socket, hellos.clone()),
            runtime,
        )?;
        Ok(Arc::new(QuicListener {
            endpoint,
            hellos,
            host,
            app,
            connections,
            template,
            limits,
            handshaking: Arc::new(AtomicUsize::new(0)),
        }))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Accepts connections until `shutdown`; then refuses new ones and
    /// asks every open connection to end after its requests (GOAWAY).
    pub async fn run(self: Arc<Self>, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => {
                        let listener = self.clone();
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move { listener.connection(incoming, shutdown).await });
                    }
                    None => return,
                },
                _ = shutdown.changed() => break,
            }
        }
        self.endpoint.set_server_config(None);
    }

    async fn connection(self: Arc<Self>, incoming: quinn::Incoming, shutdown: ShutdownWatch) {
        let quic = &METRICS.quic;
        let busy = self.handshaking.load(Ordering::Relaxed) >= self.limits.retry_above;
        if busy && !incoming.remote_address_validated() && incoming.may_retry() {
            quic.retries.inc();
            let _ = incoming.retry();
            return;
        }
        let client = incoming.remote_address();
        let _place = match self.connections.admit(Some(client.ip())) {
            Ok(place) => place,
            Err(limit) => {
                quic.refused.with_label_values(&[limit]).inc();
                incoming.refuse();
                return;
            }
        };
        let handshake = Handshaking::start(&self.handshaking);
        let name = match self.hellos.name_of(&incoming, HELLO_WAIT).await {
            Ok(name) => name,
            Err(e) => {
                tracing::debug!(%client, error = %e, "QUIC hello unreadable");
                quic.refused.with_label_values(&["hello"]).inc();
                incoming.refuse();
                return;
            }
        };
        let crypto = match self.host.config_for(name.as_deref()).await {
            Ok(crypto) => crypto,
            Err(why) => {
                tracing::debug!(%client, name = ?name, %why, "QUIC connection refused");
                quic.handshakes.with_label_values(&["refused"]).inc();
                incoming.refuse();
                return;
            }
        };
        let mut config = self.template.clone();
        config.crypto = crypto;
        let connecting = match incoming.accept_with(Arc::new(config)) {
            Ok(c) => c,
            Err(_) => {
                quic.handshakes.with_label_values(&["failed"]).inc();
                return;
            }
        };
        let connection = match tokio::time::timeout(self.limits.handshake_timeout, connecting).await
        {
            Ok(Ok(connection)) => connection,
            _ => {
                quic.handshakes.with_label_values(&["failed"]).inc();
                return;
            }
        };
        drop(handshake);
        quic.handshakes.with_label_values(&["ok"]).inc();
        let _open = Open::count();
        self.serve(connection, name, shutdown).await;
    }

    /// HTTP/3 on an established connection: each request stream on a task
    /// of its own, through the HTTP app.
    async fn serve(
        &self,
        connection: quinn::Connection,
        name: Option<String>,
        mut shutdown: ShutdownWatch,
    ) {
        let quic = &METRICS.quic;
        let mut h3 = match h3::server::builder()
            .max_field_section_size(self.limits.max_head_bytes as u64)
            .build::<_, bytes::Bytes>(h3_quinn::Connection::new(connection.clone()))
            .await
        {
            Ok(h3) => h3,
            Err(_) => return,
        };
        let local = self.endpoint.local_addr().ok();
        let mut noted = (
            connection.remote_address(),
            self.host
                .opened(name.as_deref(), connection.remote_address()),
        );
        let mut served = 0u32;
        let mut closing = *shutdown.borrow();
        if closing {
            let _ = h3.shutdown(1).await;
        }
        loop {
            let resolver = tokio::select! {
                r = h3.accept() => r,
                _ = shutdown.changed(), if !closing => {
                    closing = true;
                    let _ = h3.shutdown(1).await;
                    continue;
                }
            };
            let resolver = match resolver {
                Ok(Some(resolver)) => resolver,
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!(error = %e, "HTTP/3 connection ended");
                    }
                    break;
                }
            };
            // The client's address may move (migration): its requests are
            // known by the address they come from.
            let remote = connection.remote_address();
            if remote != noted.0 {
                noted = (remote, self.host.opened(name.as_deref(), remote));
            }
            served += 1;
            if served >= self.limits.requests && !closing {
                closing = true;
                let _ = h3.shutdown(1).await;
            }
            let app = self.app.clone();
            let connection = connection.clone();
            let head_timeout = self.limits.head_timeout;
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let (req, stream) =
                    match tokio::time::timeout(head_timeout, resolver.resolve_request()).await {
                        Ok(Ok(request)) => request,
                        Ok(Err(e)) => {
                            let limit = match e {
                                h3::error::StreamError::HeaderTooBig { .. } => "head_too_large",
                                _ => "malformed",
                            };
                            quic.streams.with_label_values(&[limit]).inc();
                            return;
                        }
                        Err(_) => {
                            METRICS
                                .client_limits
                                .with_label_values(&["head_timeout"])
                                .inc();
                            quic.streams.with_label_values(&["head_timeout"]).inc();
                            return;
                        }
                    };
                quic.streams.with_label_values(&["request"]).inc();
                let session = H3Session::new(req, stream, connection, local);
                let session = ServerSession::new_custom(Box::new(session));
                app.process_new_http(session, &shutdown).await;
            });
        }
        drop(noted);
    }
}

/// An established connection in `edgepop_quic_connections_open`, for as
/// long as it lives (however its task ends).
struct Open;

impl Open {
    fn count() -> Open {
        METRICS.quic.open.inc();
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        METRICS.quic.open.dec();
    }
}

/// Counts a handshake under way for as long as it lives.
struct Handshaking(Arc<AtomicUsize>);

impl Handshaking {
    fn start(count: &Arc<AtomicUsize>) -> Handshaking {
        count.fetch_add(1, Ordering::Relaxed);
        Handshaking(count.clone())
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoint's stateless resets and connection IDs, from the secret
/// every PoP shares if there is one. A PoP that gets a packet of another
/// PoP's connection (a route moved) answers it with a reset the client
/// accepts only if both the reset key and the connection IDs agree:
/// quinn drops a packet whose ID its own generator did not make before it
/// would reset it, and its default generator is keyed per process.
fn endpoint_settings(reset_key: Option<&[u8]>) -> quinn::EndpointConfig {
    let Some(secret) = reset_key else {
        return quinn::EndpointConfig::default();
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let cid_key = ring::hmac::sign(&key, b"edgepop quic connection ids");
    let cid_key = u64::from_le_bytes(cid_key.as_ref()[..8].try_into().expect("8 bytes"));
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    // quinn's default (one reset per 20 ms) would take minutes to end the
    // connections of a PoP whose route moved; a reset is smaller than the
    // packet that causes it, so it amplifies nothing.
    config.min_reset_interval(Duration::from_millis(1));
    config
}

/// Every connection's transport: the TCP listener's limits in QUIC's
/// words.
fn transport(limits: &QuicSettings) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(limits.streams.into());
    // The client's control and two QPACK streams, and room for grease.
    t.max_concurrent_uni_streams(8u32.into());
    let idle =
        quinn::IdleTimeout::try_from(limits.idle).unwrap_or(quinn::VarInt::from_u32(60_000).into());
    t.max_idle_timeout(Some(idle));
    t
}

/// The endpoint's own config, used before a connection's name is known:
/// Initial keys (they depend on the connection ID only), Retry tokens, and
/// the bounds on what an unaccepted connection may buffer. Its throwaway
/// certificate is never shown: every connection is accepted with its
/// name's config.
fn endpoint_config() -> std::io::Result<(quinn::ServerConfig, Arc<dyn quinn::crypto::ServerConfig>)>
{
    let key = rcgen::KeyPair::generate().map_err(std::io::Error::other)?;
    let cert = rcgen::CertificateParams::new(vec!["edgepop.invalid".to_string()])
        .and_then(|p| p.self_signed(&key))
        .map_err(std::io::Error::other)?;
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key.into())
        .map_err(std::io::Error::other)?;
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto: Arc<dyn quinn::crypto::ServerConfig> = Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(std::io::Error::other)?,
    );
    let mut config = quinn::ServerConfig::with_crypto(crypto.clone());
    // quinn's defaults let unaccepted connections buffer 100 MB in all.
    config.incoming_buffer_size(64 * 1024);
    config.incoming_buffer_size_total(16 * 1024 * 1024);
    Ok((config, crypto))
}

/// A UDP socket bound to `addr`, shared with a new process during a
/// graceful upgrade (SO_REUSEPORT).
pub fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
