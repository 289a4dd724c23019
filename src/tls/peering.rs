//! The peer channel between PoPs: mutual TLS under the operator's PoP CA.
//! A PoP's certificate names its PoP id (its first DNS name). The peer
//! listener admits only clients whose certificate chains to the CA and
//! notes which PoP each connection is from; a relay presents this PoP's
//! certificate and trusts nothing but the CA.

use super::book::PeerBook;
use super::error::{CertError, FileError};
use super::listener::{TlsIo, HELLO_TIMEOUT};
use crate::config::PeeringConfig;
use crate::domain::PopId;
use crate::metrics::METRICS;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::tls::CaType;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tracing::{debug, warn};

/// This PoP's identity on the peer channel, both ways.
pub struct PeerTls {
    /// The peer listener's config: a client certificate from the CA is required.
    server: Arc<ServerConfig>,
    /// What a relay presents (Pingora's connector).
    pub client_cert: Arc<CertKey>,
    /// What a relay trusts.
    pub ca: Arc<CaType>,
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = std::fs::read(path).map_err(FileError::at(path))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::about(path)(CertError::CertPem(e)))?;
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert)
            .map_err(|e| CertError::about(path)(CertError::X509(e)))?;
    }
    if certs.is_empty() {
        return Err(CertError::about(path)(CertError::NoCertificate));
    }
    Ok(certs)
}

impl PeerTls {
    /// Reads the CA, this PoP's chain and key; the chain must name `pop`.
    pub fn load(config: &PeeringConfig, pop: &PopId) -> Result<Self, CertError> {
        let ca = certs(&config.ca)?;
        let chain = certs(&config.cert)?;
        let key_pem = std::fs::read(&config.key).map_err(FileError::at(&config.key))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| CertError::about(&config.key)(CertError::KeyPem(e)))?;
        match pop_of(&chain[0]) {
            Some(named) if named == *pop => {}
            named => {
                let named = named.map_or("no PoP id".to_string(), |p| format!("PoP {p}"));
                let why = format!("the certificate names {named}, not this PoP ({pop})");
                return Err(CertError::about(&config.cert)(CertError::Peering(why)));
            }
        }
        let mut roots = RootCertStore::empty();
        for cert in &ca {
            roots.add(cert.clone())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| CertError::about(&config.ca)(CertError::Peering(e.to_string())))?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client_cert = CertKey::new(
            chain.iter().map(|c| c.to_vec()).collect(),
            key.secret_der().to_vec(),
        );
        let ca: Vec<WrappedX509> = ca
            .iter()
            .map(|c| WrappedX509::new(c.to_vec(), parse_x509))
            .collect();
        Ok(PeerTls {
            server: Arc::new(server),
            client_cert: Arc::new(client_cert),
            ca: Arc::from(ca.into_boxed_slice()),
        })
    }
}

/// The PoP a certificate names: its first DNS name, if that is a PoP id.
pub fn pop_of(cert: &CertificateDer<'_>) -> Option<PopId> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(name) => PopId::parse(name).ok(),
        _ => None,
    })
}

/// The peer listener's app: the mutual-TLS handshake, then the HTTP app,
/// with the connection's PoP noted in the book for the request path.
pub struct PeerApp<A> {
    pub tls: Arc<PeerTls>,
    pub http: Arc<A>,
    pub book: Arc<PeerBook>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for PeerApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.server.clone());
        let tls = match tokio::time::timeout(HELLO_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                // A certificate not from the PoP CA ends here.
                warn!(?client, error = %e, "peer handshake refused");
                METRICS
                    .peer_handshakes
                    .with_label_values(&["refused"])
                    .inc();
                return None;
            }
            Err(_) => {
                debug!(?client, "peer handshake timed out");
                METRICS
                    .peer_handshakes
                    .with_label_values(&["refused"])
                    .inc();
                return None;
            }
        };
        let pop = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(pop_of);
        let (Some(client), Some(pop)) = (client, pop) else {
            warn!(
                ?client,
                "peer certificate names no PoP id: connection closed"
            );
            METRICS
                .peer_handshakes
                .with_label_values(&["refused"])
                .inc();
            return None;
        };
        METRICS.peer_handshakes.with_label_values(&["ok"]).inc();
        let _entry = self.book.enter(client, pop);
        let _ = self
            .http
            .process_new(Box::new(TlsIo::new(tls)), shutdown)
            .await;
        None
    }
}
