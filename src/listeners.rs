//! The listening services, each a stack a connection passes through from
//! the bottom up: the gate (`conn`: connection limits), for HTTPS and the
//! peer port a TLS handshake (`tls`), the HTTP/1 keep-alive loop (`conn`:
//! head limits, gathered writes, parking), then Pingora's HTTP server
//! running `EdgeProxy`'s phases (`proxy`). Pingora owns the sockets, so a
//! graceful upgrade hands every listener over.

use crate::config::ProxyConfig;
use crate::conn::quic::{QuicHost, QuicListener, QuicSettings};
use crate::conn::{
    ClientStream, Connections, FastPath, Gate, H1Server, H2Offer, HeadLimits, KeepAlive,
};
use crate::domain::Hostname;
use crate::edge::Edge;
use crate::failover::Readiness;
use crate::proxy::EdgeProxy;
use crate::request::relay::PeerListener;
use crate::request::{Listener, Scheme};
use crate::tls::book::{PeerBook, SniBook};
use crate::tls::listener::{H1Wrap, TlsApp};
use crate::tls::peering::{PeerApp, PeerTls};
use crate::tls::CertManager;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::protocols::Stream;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::{
    background_service, BackgroundService, GenBackgroundService,
};
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;
use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The proxy with its fast path offered first, as every listener runs it.
type Offer = H2Offer<HttpProxy<EdgeProxy>>;

/// The keep-alive loop around the proxy, as every TCP listener runs it.
type Http = H1Server<Offer>;

/// The plain-HTTP listener's app: the gate (with the head limits), the
/// keep-alive loop, the proxy.
pub type HttpApp = Gate<Http>;

/// The HTTPS listener's app: the gate, the handshake, then the proxy.
pub type HttpsApp = Gate<TlsApp<Http>>;

/// The peer listener's app: the gate, the mutual-TLS handshake, then a
/// third instance of the proxy, which admits relayed requests.
pub type PeerListenerApp = Gate<PeerApp<Http>>;

/// Peer connections a PoP holds at most: a few per peer in normal use; the
/// limit bounds a flood on the port (which only peers should reach).
const MAX_PEER_CONNECTIONS: usize = 1024;

/// No L4 buffers on the client listeners. Reads: Pingora's head and body
/// buffers (or rustls's) take the bytes straight from the socket; a 64 KiB
/// buffer per connection would cost up to 64 KiB per idle keep-alive
/// connection. Writes: the client stream gathers a response's small writes
/// (`conn/gather.rs`) only while it is being written, where a 1,460-byte
/// write buffer was both allocated on every idle connection and too small
/// to send a head with its body.
const UNBUFFERED: L4BufferSettings = L4BufferSettings {
    read: Some(0),
    write: Some(0),
};

/// The plain-HTTP listeners.
pub fn http_service(
    conf: &Arc<ServerConf>,
    listen: &[SocketAddr],
    edge: Arc<Edge>,
    connections: Arc<Connections>,
) -> Service<HttpApp> {
    let proxy = EdgeProxy::new(edge.clone(), listener(Scheme::Http));
    let config = &edge.state().config.proxy;
    let gate = Gate {
        inner: Arc::new(keepalive_loop(conf, proxy, &edge, true)),
        connections,
        head: Some(head_limits(config)),
    };
    client_service("edge proxy", gate, listen)
}

/// The HTTPS listeners: a Pingora listening service whose app does the
/// handshake (waiting for on-demand certificates) and hands the decrypted
/// stream to a second instance of the proxy.
pub fn https_service(
    conf: &Arc<ServerConf>,
    listen: &[SocketAddr],
    edge: Arc<Edge>,
    certs: Arc<CertManager>,
    connections: Arc<Connections>,
) -> Service<HttpsApp> {
    let sni = Arc::new(SniBook::default());
    let https = Listener {
        sni: Some(sni.clone()),
        ..listener(Scheme::Https)
    };
    let proxy = EdgeProxy::new(edge.clone(), https);
    let limits = head_limits(&edge.state().config.proxy);
    let h1_wrap: H1Wrap =
        Arc::new(move |s: Stream| -> Stream { Box::new(ClientStream::new(s, limits)) });
    let tls_app = TlsApp {
        certs,
        http: Arc::new(keepalive_loop(conf, proxy, &edge, true)),
        h1_wrap: Some(h1_wrap),
        sni,
    };
    let gate = Gate {
        inner: Arc::new(tls_app),
        connections,
        head: None,
    };
    client_service("edge https", gate, listen)
}

/// A client-facing listening service on `listen`, unbuffered.
fn client_service<A>(name: &str, gate: Gate<A>, listen: &[SocketAddr]) -> Service<Gate<A>> {
    let mut service = Service::new(name.to_string(), gate);
    for addr in listen {
        service.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(UNBUFFERED));
    }
    service
}

/// The peer listener: relayed requests from peer PoPs over mutual TLS.
pub fn peer_service(
    conf: &Arc<ServerConf>,
    listen: &[SocketAddr],
    tls: Arc<PeerTls>,
    edge: Arc<Edge>,
    readiness: Arc<Readiness>,
) -> Service<PeerListenerApp> {
    let book = Arc::new(PeerBook::default());
    let peering = PeerListener {
        book: book.clone(),
        readiness,
    };
    let peers = Listener {
        peering: Some(peering),
        ..listener(Scheme::Http)
    };
    // Relayed requests are few and never hot: Pingora's phases serve them.
    let proxy = EdgeProxy::new(edge.clone(), peers);
    let http = Arc::new(keepalive_loop(conf, proxy, &edge, false));
    let gate = Gate {
        inner: Arc::new(PeerApp { tls, http, book }),
        connections: Arc::new(Connections::new(MAX_PEER_CONNECTIONS, 0)),
        head: None,
    };
    let mut service = Service::new("peer listener".to_string(), gate);
    for addr in listen {
        service.add_tcp(&addr.to_string());
    }
    service
}

/// A client listener of `scheme`, as the rules see it.
fn listener(scheme: Scheme) -> Listener {
    Listener {
        scheme,
        sni: None,
        peering: None,
    }
}

/// Pingora's HTTP server for `proxy`, inside edgepop's keep-alive loop;
/// with `hot`, the proxy's hot path first (`proxy.fast_path`).
fn keepalive_loop(conf: &Arc<ServerConf>, proxy: EdgeProxy, edge: &Arc<Edge>, hot: bool) -> Http {
    let app = offer(conf, proxy, edge, hot);
    let fast = app.fast.clone();
    let edge = edge.clone();
    let keepalive: KeepAlive = Arc::new(move || edge.state().config.proxy.keepalive_timeout);
    H1Server {
        app: Arc::new(app),
        keepalive,
        fast,
    }
}

/// Pingora's HTTP server for `proxy`; with `hot`, each request offered to
/// the proxy's hot path first (`proxy.fast_path`).
fn offer(conf: &Arc<ServerConf>, proxy: EdgeProxy, edge: &Arc<Edge>, hot: bool) -> Offer {
    let fast = hot.then(|| Arc::new(proxy.hot_path(conf)) as Arc<dyn FastPath>);
    let mut http = pingora_proxy::http_proxy(conf, proxy);
    http.server_options = Some(server_options(&edge.state().config.proxy));
    H2Offer {
        app: Arc::new(http),
        fast,
    }
}

/// The QUIC (HTTP/3) listeners: their UDP sockets bound now (an address
/// in use is a start-up error, as for TCP), served by a background
/// service on `threads` threads, through a fourth instance of the proxy
/// (HTTPS, its own SNI book: UDP and TCP addresses are apart).
pub fn quic_service(
    conf: &Arc<ServerConf>,
    listen: &[SocketAddr],
    edge: Arc<Edge>,
    certs: Arc<CertManager>,
    connections: Arc<Connections>,
) -> std::io::Result<GenBackgroundService<QuicService>> {
    let sockets = listen
        .iter()
        .map(|a| crate::conn::quic::udp_socket(*a).map_err(|e| bind_error(*a, e)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let sni = Arc::new(SniBook::default());
    let https = Listener {
        sni: Some(sni.clone()),
        ..listener(Scheme::Https)
    };
    let proxy = EdgeProxy::new(edge.clone(), https);
    let config = &edge.state().config;
    let tls = config.tls.as_ref();
    let limits = QuicSettings {
        reset_key: tls
            .and_then(|t| t.quic_reset_key.clone())
            .map(String::into_bytes),
        streams: 100,
        idle: config.proxy.keepalive_timeout,
        max_head_bytes: config.proxy.max_head_bytes,
        head_timeout: config.proxy.head_timeout,
        requests: config.proxy.keepalive_requests,
        retry_above: tls.map_or(64, |t| t.quic_retry_above),
        handshake_timeout: Duration::from_secs(10),
    };
    let service = QuicService {
        sockets: std::sync::Mutex::new(sockets),
        host: Arc::new(QuicCerts { certs, sni }),
        app: Arc::new(offer(conf, proxy, &edge, true)),
        connections,
        limits,
    };
    let mut service = background_service("edge quic", service);
    service.threads = Some(conf.threads);
    Ok(service)
}

fn bind_error(addr: SocketAddr, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("tls.listen_quic {addr} (UDP): {e}"))
}

/// The QUIC listeners, started on the service's runtime.
pub struct QuicService {
    sockets: std::sync::Mutex<Vec<std::net::UdpSocket>>,
    host: Arc<dyn QuicHost>,
    app: Arc<Offer>,
    connections: Arc<Connections>,
    limits: QuicSettings,
}

#[async_trait::async_trait]
impl BackgroundService for QuicService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let sockets = std::mem::take(&mut *crate::locked(&self.sockets));
        let mut running = Vec::new();
        for socket in sockets {
            let host = self.host.clone();
            let (app, connections) = (self.app.clone(), self.connections.clone());
            match QuicListener::bind(socket, host, app, connections, self.limits.clone()) {
                Ok(listener) => {
                    let addr = listener.local_addr().ok();
                    tracing::info!(listen = ?addr, "HTTP/3 (QUIC) listening");
                    running.push(tokio::spawn(listener.run(shutdown.clone())));
                }
                Err(e) => tracing::error!(error = %e, "QUIC listener not started"),
            }
        }
        for listener in running {
            let _ = listener.await;
        }
    }
}

/// Certificates for QUIC connections, and each connection's name noted
/// for the fronting check, as `TlsApp` does for TCP.
struct QuicCerts {
    certs: Arc<CertManager>,
    sni: Arc<SniBook>,
}

#[async_trait::async_trait]
impl QuicHost for QuicCerts {
    async fn config_for(
        &self,
        name: Option<&str>,
    ) -> Result<Arc<dyn quinn::crypto::ServerConfig>, String> {
        self.certs
            .quic_config_for(name)
            .await
            .map_err(|r| r.to_string())
    }

    fn opened(&self, name: Option<&str>, client: SocketAddr) -> Box<dyn Any + Send + Sync> {
        match name.and_then(|n| Hostname::parse(n).ok()) {
            Some(name) => Box::new(self.sni.enter(client, name)),
            None => Box::new(()),
        }
    }
}

/// Client connection limits Pingora enforces itself: requests per HTTP/1.1
/// connection, and the idle time of an HTTP/2 connection (HTTP/1.1 idle
/// time is set per request, in the proxy).
fn server_options(proxy: &ProxyConfig) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.keepalive_request_limit = Some(proxy.keepalive_requests);
    options.h2_idle_timeout = Some(proxy.keepalive_timeout);
    options
}

fn head_limits(proxy: &ProxyConfig) -> HeadLimits {
    HeadLimits {
        max_bytes: proxy.max_head_bytes,
        timeout: proxy.head_timeout,
    }
}
