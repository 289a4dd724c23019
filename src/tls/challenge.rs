//! ACME challenge answers. The node that orders publishes each answer in
//! the certificate store; with anycast the CA's validation may reach any
//! PoP, so every node answers from the store, not from its own memory.
//! HTTP-01: `GET /.well-known/acme-challenge/<token>` on port 80 returns the
//! key authorization. TLS-ALPN-01 (RFC 8737): a handshake offering ALPN
//! `acme-tls/1` gets a self-signed certificate for the name carrying the
//! SHA-256 of the key authorization.

use crate::domain::Hostname;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Which challenge a node answers when it orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum ChallengeKind {
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

/// What a pending challenge is looked up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChallengeKey {
    /// HTTP-01: the token in the request path.
    Http01(String),
    /// TLS-ALPN-01: the name in the SNI.
    TlsAlpn01(Hostname),
}

impl ChallengeKey {
    /// (kind, key) as stored.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            ChallengeKey::Http01(token) => ("http-01", token),
            ChallengeKey::TlsAlpn01(host) => ("tls-alpn-01", host.as_str()),
        }
    }

    /// The HTTP-01 key for a request path, if it is a challenge path.
    pub fn from_path(path: &str) -> Option<ChallengeKey> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        // Tokens are base64url (RFC 8555 §8.3): anything else is not ours.
        let valid = !token.is_empty()
            && token.len() <= 256
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        valid.then(|| ChallengeKey::Http01(token.to_string()))
    }
}

/// The handshake answer to a TLS-ALPN-01 validation of `host`.
pub fn alpn_config(host: &Hostname, key_authorization: &str) -> Result<Arc<ServerConfig>, String> {
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    let mut params = CertificateParams::new(vec![host.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| e.to_string())?;
    // Not `with_single_cert`: its key check parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension.
    let certified = CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signer);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_token_shaped_paths_are_challenges() {
        assert_eq!(
            ChallengeKey::from_path("/.well-known/acme-challenge/abc-DEF_123"),
            Some(ChallengeKey::Http01("abc-DEF_123".into()))
        );
        for p in [
            "/.well-known/acme-challenge/",
            "/.well-known/acme-challenge/../etc/passwd",
            "/.well-known/acme-challenge/a/b",
            "/.well-known/acme-challenge/a?b",
            "/index.html",
        ] {
            assert_eq!(ChallengeKey::from_path(p), None, "{p}");
        }
    }

    #[test]
    fn alpn_answer_offers_only_acme_tls() {
        let host = Hostname::parse("shop.example").unwrap();
        let config = alpn_config(&host, "token.thumbprint").unwrap();
        assert_eq!(config.alpn_protocols, vec![ACME_TLS_ALPN.to_vec()]);
    }
}
