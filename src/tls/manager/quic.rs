//! Certificates for QUIC connections (HTTP/3): the name's certificate as
//! a TCP handshake gets it (static, held, stored, or obtained now under
//! the same policy, limits and single flight), in a QUIC config: ALPN
//! `h3` and no early data (0-RTT stays off: a replayed request is not
//! this edge's to accept).

use super::{CertManager, Refusal};
use std::sync::Arc;

impl CertManager {
    /// The QUIC crypto config for a connection that asked for `sni`
    /// (awaited like `config_for`: an on-demand certificate is obtained).
    /// Only the TLS part: the listener puts it in its own server config,
    /// whose token key and limits are the endpoint's.
    pub async fn quic_config_for(
        self: &Arc<Self>,
        sni: Option<&str>,
    ) -> Result<Arc<dyn quinn::crypto::ServerConfig>, Refusal> {
        let tcp = self.config_for(sni).await?;
        // A clone shares the certificate and the session cache (Arcs).
        let mut tls = (*tcp).clone();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        tls.max_early_data_size = 0;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| Refusal::NoQuic(e.to_string()))?;
        Ok(Arc::new(quic))
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::Hostname;
    use crate::tls::challenge::Challenges;
    use crate::tls::issuer::{Issuer, LocalCa};
    use crate::tls::issuers::Issuers;
    use crate::tls::store::{FileStore, MemoryLock};
    use crate::tls::{CertManager, IssuePolicy, StaticCerts, TlsSettings};
    use std::sync::Arc;
    use std::time::Duration;

    /// Every name but `refused.test` may have a certificate.
    struct AllBut;

    #[async_trait::async_trait]
    impl IssuePolicy for AllBut {
        async fn may_issue(&self, host: &Hostname) -> bool {
            host.as_str() != "refused.test"
        }
    }

    fn manager(dir: &std::path::Path) -> (Arc<CertManager>, std::path::PathBuf) {
        let ca = LocalCa::load_or_create(&dir.join("ca"), Duration::from_secs(90 * 86400)).unwrap();
        let root = ca.root_path.clone();
        let issuer: Arc<dyn Issuer> = Arc::new(ca);
        let settings = TlsSettings {
            issue_timeout: Duration::from_secs(10),
            order_timeout: Duration::from_secs(30),
            backoff: Duration::from_secs(30),
            issue_per_minute: 60,
            renew_when_left: 1.0 / 3.0,
            renew_check: Duration::from_secs(60),
            hold_at_most: 100,
            sweep_every: Duration::from_secs(3600),
            node: "test".into(),
        };
        let manager = CertManager::new(
            Arc::new(AllBut),
            StaticCerts::default(),
            Arc::new(FileStore::open(dir).unwrap()),
            Arc::new(MemoryLock::default()),
            Arc::new(Challenges::new(None)),
            Arc::new(Issuers::new(vec![issuer])),
            settings,
        );
        (Arc::new(manager), root)
    }

    #[tokio::test]
    async fn a_quic_handshake_gets_an_on_demand_certificate_with_h3() {
        let dir = tempfile::tempdir().unwrap();
        let (certs, root) = manager(dir.path());
        assert!(certs.quic_config_for(Some("refused.test")).await.is_err());
        let server = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(
                certs.quic_config_for(Some("warm.test")).await.unwrap(),
            ),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        let accepting = {
            let certs = certs.clone();
            tokio::spawn(async move {
                let incoming = server.accept().await.unwrap();
                // The name as `quic_accept::Hellos` reads it; its
                // certificate does not exist yet and is obtained now.
                let crypto = certs.quic_config_for(Some("new.test")).await.unwrap();
                let config = Arc::new(quinn::ServerConfig::with_crypto(crypto));
                let connection = incoming.accept_with(config).unwrap().await.unwrap();
                connection.closed().await;
            })
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::pem::PemObject::pem_file_iter(&root).unwrap() {
            let c: rustls_pki_types::CertificateDer = c.unwrap();
            roots.add(c).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let connection = client
            .connect_with(quinn::ClientConfig::new(Arc::new(quic)), addr, "new.test")
            .unwrap()
            .await
            .expect("verified against the local CA for new.test");
        let alpn = connection
            .handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol;
        assert_eq!(alpn.as_deref(), Some(&b"h3"[..]));
        connection.close(0u32.into(), b"done");
        accepting.await.unwrap();
        // Obtained once, stored as for TCP: the next TCP handshake finds it.
        assert!(dir.path().join("certs/new.test.json").exists());
        assert_eq!(certs.held().await, 2, "warm.test and new.test");
    }
}
