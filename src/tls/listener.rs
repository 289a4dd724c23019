//! The HTTPS listener: a Pingora listening service (so graceful upgrades
//! hand its socket over like any other) whose app runs the TLS handshake
//! itself with `LazyConfigAcceptor`: the ClientHello is read first, the
//! certificate for its SNI may be obtained while the handshake waits, and
//! the decrypted stream is handed to the HTTP proxy (HTTP/2 or 1.1 by ALPN).

use super::book::SniBook;
use super::challenge::ACME_TLS_ALPN;
use super::manager::CertManager;
use crate::domain::Hostname;
use crate::metrics::METRICS;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{Shutdown, Ssl, Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;
use tracing::debug;

/// Bounds a client that opens a connection and never finishes its hello.
pub(super) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A config with no certificate for any name: a refused hello handed to
/// it ends in rustls's fatal alert (access_denied) before any key exchange.
fn refusal() -> Arc<ServerConfig> {
    static REFUSAL: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    REFUSAL
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(NoCertificate));
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

pub struct TlsApp<A> {
    pub certs: Arc<CertManager>,
    pub http: Arc<A>,
    /// Wraps a decrypted HTTP/1 stream before the HTTP app reads it (the
    /// proxy's request-head limits); HTTP/2 streams go on as they are.
    pub h1_wrap: Option<H1Wrap>,
    /// Each live connection's SNI, for the request path's fronting check.
    pub sni: Arc<SniBook>,
}

/// See `TlsApp::h1_wrap`.
pub type H1Wrap = Arc<dyn Fn(Stream) -> Stream + Send + Sync>;

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for TlsApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = match tokio::time::timeout(HELLO_TIMEOUT, acceptor).await {
            Ok(Ok(start)) => start,
            _ => return None,
        };
        let hello = start.client_hello();
        let sni = hello.server_name().map(str::to_string);
        let acme = hello
            .alpn()
            .is_some_and(|mut p| p.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // A CA validating a TLS-ALPN-01 challenge: answer, then close.
            if let Some(config) = self.certs.alpn_answer(sni.as_deref()).await {
                let _ = tokio::time::timeout(HELLO_TIMEOUT, start.into_stream(config)).await;
            }
            return None;
        }
        let config = match self.certs.config_for(sni.as_deref()).await {
            Ok(c) => c,
            Err(why) => {
                debug!(sni = ?sni, %why, "handshake refused");
                METRICS.tls_handshakes.with_label_values(&["refused"]).inc();
                // The client is told with an alert, not a bare close.
                let _ = tokio::time::timeout(HELLO_TIMEOUT, start.into_stream(refusal())).await;
                return None;
            }
        };
        let tls = match tokio::time::timeout(HELLO_TIMEOUT, start.into_stream(config)).await {
            Ok(Ok(tls)) => tls,
            _ => {
                METRICS.tls_handshakes.with_label_values(&["failed"]).inc();
                return None;
            }
        };
        METRICS.tls_handshakes.with_label_values(&["ok"]).inc();
        let client = tls
            .get_ref()
            .0
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        let named = sni.as_deref().and_then(|n| Hostname::parse(n).ok());
        let _sni = client.zip(named).map(|(c, n)| self.sni.enter(c, n));
        let io = TlsIo::new(tls);
        let h2 = io.alpn == Some(ALPN::H2);
        let stream: Stream = Box::new(io);
        let stream = match &self.h1_wrap {
            Some(wrap) if !h2 => wrap(stream),
            _ => stream,
        };
        // Keep-alive happens inside the HTTP app; a decrypted stream is
        // never handed back to the listener (that would handshake again).
        let _ = self.http.process_new(stream, shutdown).await;
        None
    }
}

/// A server TLS stream that Pingora's HTTP layer can drive.
pub struct TlsIo {
    inner: TlsStream<Stream>,
    alpn: Option<ALPN>,
}

impl TlsIo {
    pub(super) fn new(inner: TlsStream<Stream>) -> Self {
        let alpn = match inner.get_ref().1.alpn_protocol() {
            Some(b"h2") => Some(ALPN::H2),
            Some(b"http/1.1") => Some(ALPN::H1),
            _ => None,
        };
        TlsIo { inner, alpn }
    }

    fn tcp(&self) -> &Stream {
        self.inner.get_ref().0
    }
}

impl std::fmt::Debug for TlsIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIo")
            .field("tcp", self.tcp())
            .field("alpn", &self.alpn)
            .finish()
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for TlsIo {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl Ssl for TlsIo {
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

io_digests_from_inner!(TlsIo, |s| s.tcp());
