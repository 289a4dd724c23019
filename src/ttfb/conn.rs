//! One client connection with its phases timed: name lookup, TCP connect,
//! TLS handshake (ALPN picks h2 or HTTP/1.1), then hyper's client
//! connection for the requests; or, with `--http3`, a QUIC connection with
//! h3 on it (`quic`). hyper and h3 parse HTTP; this only times it.

use super::plan::{Plan, Protocol, Target};
use super::quic::{self, Endpoints, H3};
use super::sample::{ErrorKind, Laps, Phases};
use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedProtocolVersion,
};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The plan's TLS client: its roots (`--cacert`, else the system's) or any
/// certificate (`--insecure`), `versions`, `alpn`. TCP and QUIC share it.
fn tls_config(
    plan: &Plan,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let mut config = if plan.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let path = plan.ca.clone().unwrap_or_else(|| SYSTEM_ROOTS.into());
        let mut roots = RootCertStore::empty();
        let certs =
            CertificateDer::pem_file_iter(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Opens connections the way the plan says (TLS roots, protocol).
pub struct Dialer {
    transport: Transport,
    protocol: Protocol,
}

enum Transport {
    Tcp(TlsConnector),
    /// `--http3`: QUIC (TLS 1.3, ALPN h3).
    Quic(quinn::ClientConfig),
}

impl Dialer {
    pub fn new(plan: &Plan) -> Result<Dialer, String> {
        let tcp = |alpn: &[&[u8]]| {
            let config = tls_config(plan, rustls::DEFAULT_VERSIONS, alpn)?;
            Ok::<_, String>(Transport::Tcp(TlsConnector::from(Arc::new(config))))
        };
        let transport = match plan.protocol {
            Protocol::Auto => tcp(&[b"h2", b"http/1.1"])?,
            Protocol::Http1 => tcp(&[b"http/1.1"])?,
            Protocol::Http2 => tcp(&[b"h2"])?,
            Protocol::Http3 => Transport::Quic(quic::client_config(tls_config(
                plan,
                &[&rustls::version::TLS13],
                &[b"h3"],
            )?)?),
        };
        Ok(Dialer {
            transport,
            protocol: plan.protocol,
        })
    }

    /// A new connection to `target` for `host` (SNI), its phases written
    /// into `phases` as they pass (laps of `laps`); QUIC ones from the
    /// worker thread's `endpoints`.
    pub async fn open(
        &self,
        target: &Target,
        host: &str,
        phases: &mut Phases,
        laps: &mut Laps,
        endpoints: &Endpoints,
    ) -> Result<Conn, ErrorKind> {
        let addr = match target.addr {
            Some(a) => a,
            None => tokio::net::lookup_host((target.host(), target.port()))
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(ErrorKind::Dns)?,
        };
        phases.dns = laps.split();
        let connector = match &self.transport {
            Transport::Tcp(connector) => connector,
            Transport::Quic(config) => {
                let h3 = H3::open(config, endpoints, addr, host, phases, laps).await?;
                return Ok(Conn {
                    sender: Sender::H3(h3),
                });
            }
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        let _ = tcp.set_nodelay(true);
        phases.connect = laps.split();
        if !target.https() {
            return Conn::handshake(TokioIo::new(tcp), self.protocol == Protocol::Http2).await;
        }
        let name = ServerName::try_from(host.to_string()).map_err(|_| ErrorKind::Tls)?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|_| ErrorKind::Tls)?;
        phases.tls = laps.split();
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Conn::handshake(TokioIo::new(tls), h2).await
    }
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
    H3(H3),
}

/// A response's body, read to its end to time the transfer.
pub enum Body {
    Hyper(Incoming),
    H3(Box<quic::Stream>),
}

impl Body {
    /// Its length in bytes, once the last of it came.
    pub async fn read_to_end(self) -> Result<u64, ErrorKind> {
        match self {
            Body::Hyper(mut body) => {
                let mut bytes = 0u64;
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|_| ErrorKind::Body)?;
                    bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                Ok(bytes)
            }
            Body::H3(stream) => quic::read_to_end(*stream).await,
        }
    }
}

/// A client connection: one request at a time on it.
pub struct Conn {
    sender: Sender,
}

impl Conn {
    async fn handshake<I>(io: I, h2: bool) -> Result<Conn, ErrorKind>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let sender = if h2 {
            let (s, c) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|_| ErrorKind::Http)?;
            tokio::spawn(c);
            Sender::H2(s)
        } else {
            let (s, c) = http1::handshake(io).await.map_err(|_| ErrorKind::Http)?;
            tokio::spawn(c);
            Sender::H1(s)
        };
        Ok(Conn { sender })
    }

    pub fn protocol(&self) -> &'static str {
        match self.sender {
            Sender::H1(_) => "http/1.1",
            Sender::H2(_) => "h2",
            Sender::H3(_) => "h3",
        }
    }

    /// Ready for the next request (false: the server closed it).
    pub async fn ready(&mut self) -> bool {
        match &mut self.sender {
            Sender::H1(s) => s.ready().await.is_ok(),
            Sender::H2(s) => s.ready().await.is_ok(),
            Sender::H3(h) => h.ready(),
        }
    }

    /// Sends `req`; the response head, its body still to be read. `None`:
    /// not sent, the connection is going away (h3: the server's GOAWAY
    /// came first).
    pub async fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> Result<Option<Response<Body>>, ErrorKind> {
        let sent = match &mut self.sender {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
            Sender::H3(h) => {
                return Ok(h
                    .send(req.map(|_| ()))
                    .await?
                    .map(|r| r.map(|s| Body::H3(Box::new(s)))))
            }
        };
        sent.map(|r| Some(r.map(Body::Hyper)))
            .map_err(|_| ErrorKind::Http)
    }

    /// The plan's request for `host` on this connection: origin-form with
    /// a Host header on HTTP/1.1, an absolute URI (`:authority`) on h2/h3.
    pub fn request(&self, plan: &Plan, target: &Target, host: &str) -> Request<Empty<Bytes>> {
        let path = target
            .url
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let authority = match target.url.port_u16() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let mut req = Request::new(Empty::new());
        *req.method_mut() = plan.method.clone();
        let uri = match self.sender {
            Sender::H1(_) => {
                if let Ok(v) = HeaderValue::from_str(&authority) {
                    req.headers_mut().insert(HOST, v);
                }
                path.to_string()
            }
            Sender::H2(_) | Sender::H3(_) => {
                *req.version_mut() = match self.sender {
                    Sender::H3(_) => Version::HTTP_3,
                    _ => Version::HTTP_2,
                };
                let scheme = target.url.scheme_str().unwrap_or("http");
                format!("{scheme}://{authority}{path}")
            }
        };
        *req.uri_mut() = uri.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
        req.headers_mut().insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("edgepop-ttfb/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &plan.headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        req
    }
}

/// `--insecure`: any certificate, signatures still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
