//! The listening services, each a stack a connection passes through from
//! the bottom up: the gate (`conn`: connection limits), for HTTPS and the
//! peer port a TLS handshake (`tls`), the HTTP/1 keep-alive loop (`conn`:
//! head limits, gathered writes, parking), then Pingora's HTTP server
//! running `EdgeProxy`'s phases (`proxy`). Pingora owns the sockets, so a
//! graceful upgrade hands every listener over.

use crate::config::ProxyConfig;
use crate::conn::{
    ClientStream, Connections, FastPath, Gate, H1Server, H2Offer, HeadLimits, KeepAlive,
};
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
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;
use std::net::SocketAddr;
use std::sync::Arc;

/// The keep-alive loop around the proxy, as every listener runs it.
type Http = H1Server<H2Offer<HttpProxy<EdgeProxy>>>;

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
    let fast = hot.then(|| Arc::new(proxy.hot_path(conf)) as Arc<dyn FastPath>);
    let mut http = pingora_proxy::http_proxy(conf, proxy);
    http.server_options = Some(server_options(&edge.state().config.proxy));
    let edge = edge.clone();
    let keepalive: KeepAlive = Arc::new(move || edge.state().config.proxy.keepalive_timeout);
    let app = H2Offer {
        app: Arc::new(http),
        fast: fast.clone(),
    };
    H1Server {
        app: Arc::new(app),
        keepalive,
        fast,
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
