//! One client connection with its phases timed: name lookup, TCP connect,
//! TLS handshake (ALPN picks h2 or HTTP/1.1), then hyper's client
//! connection for the requests. hyper parses HTTP; this only times it.

use super::plan::{Plan, Protocol, Target};
use super::sample::{ErrorKind, Laps, Phases};
use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Request, Response, Version};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Opens connections the way the plan says (TLS roots, protocol).
pub struct Dialer {
    tls: TlsConnector,
    protocol: Protocol,
}

impl Dialer {
    pub fn new(plan: &Plan) -> Result<Dialer, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let mut config = if plan.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let path = plan.ca.clone().unwrap_or_else(|| SYSTEM_ROOTS.into());
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = match plan.protocol {
            Protocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
            Protocol::Http2 => vec![b"h2".to_vec()],
        };
        Ok(Dialer {
            tls: TlsConnector::from(Arc::new(config)),
            protocol: plan.protocol,
        })
    }

    /// A new connection to `target` for `host` (SNI), its phases written
    /// into `phases` as they pass (laps of `laps`).
    pub async fn open(
        &self,
        target: &Target,
        host: &str,
        phases: &mut Phases,
        laps: &mut Laps,
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
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        let _ = tcp.set_nodelay(true);
        phases.connect = laps.split();
        if !target.https() {
            return Conn::handshake(TokioIo::new(tcp), self.protocol == Protocol::Http2).await;
        }
        let name = ServerName::try_from(host.to_string()).map_err(|_| ErrorKind::Tls)?;
        let tls = self
            .tls
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
        }
    }

    /// Ready for the next request (false: the server closed it).
    pub async fn ready(&mut self) -> bool {
        match &mut self.sender {
            Sender::H1(s) => s.ready().await.is_ok(),
            Sender::H2(s) => s.ready().await.is_ok(),
        }
    }

    pub async fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> Result<Response<Incoming>, ErrorKind> {
        let sent = match &mut self.sender {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        };
        sent.map_err(|_| ErrorKind::Http)
    }

    /// The plan's request for `host` on this connection: origin-form with
    /// a Host header on HTTP/1.1, an absolute URI (`:authority`) on h2.
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
            Sender::H2(_) => {
                *req.version_mut() = Version::HTTP_2;
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
