//! ACME challenge answers. The node that orders publishes each answer on
//! the challenge board (the shared store); with anycast the CA's validation
//! may reach any PoP, so every node answers from the board, not only from
//! its own memory.
//! HTTP-01: `GET /.well-known/acme-challenge/<token>` on port 80 returns the
//! key authorization. TLS-ALPN-01 (RFC 8737): a handshake offering ALPN
//! `acme-tls/1` gets a self-signed certificate for the name carrying the
//! SHA-256 of the key authorization.

use super::error::{CertError, StoreError};
use crate::domain::Hostname;
use crate::locked;
use async_trait::async_trait;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

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

/// Where pending challenge answers are shared by every PoP (certmagic
/// keeps them in its Storage; here the Postgres store is the board).
#[async_trait]
pub trait ChallengeBoard: Send + Sync {
    /// Publishes an answer for `ttl` (any node may be asked for it).
    async fn put(
        &self,
        key: &ChallengeKey,
        key_authorization: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    async fn get(&self, key: &ChallengeKey) -> Result<Option<String>, StoreError>;
    async fn remove(&self, key: &ChallengeKey) -> Result<(), StoreError>;
}

/// Pending challenge answers: published on the board for every PoP (when
/// there is one), and kept here too, so this node can still answer the CA
/// when the board is unreachable (then only validations that reach this
/// node succeed). Without a board (one box) only this node answers.
pub struct Challenges {
    board: Option<Arc<dyn ChallengeBoard>>,
    /// Answer and the moment it expires (an order cut off by its timeout
    /// never withdraws its answers).
    local: Mutex<HashMap<ChallengeKey, (String, Instant)>>,
}

impl Challenges {
    pub fn new(board: Option<Arc<dyn ChallengeBoard>>) -> Self {
        Challenges {
            board,
            local: Mutex::default(),
        }
    }

    pub async fn publish(&self, key: &ChallengeKey, key_authorization: &str, ttl: Duration) {
        {
            let now = Instant::now();
            let mut local = locked(&self.local);
            local.retain(|_, (_, until)| now < *until);
            local.insert(key.clone(), (key_authorization.to_string(), now + ttl));
        }
        let Some(board) = &self.board else { return };
        if let Err(e) = board.put(key, key_authorization, ttl).await {
            warn!(error = %e, "challenge not published in the store; only this node can answer it");
        }
    }

    pub async fn withdraw(&self, key: &ChallengeKey) {
        locked(&self.local).remove(key);
        let Some(board) = &self.board else { return };
        if let Err(e) = board.remove(key).await {
            warn!(error = %e, "challenge not removed from the store; it expires there");
        }
    }

    /// This node's answer, else the one another node published.
    pub async fn answer(&self, key: &ChallengeKey) -> Option<String> {
        let mine = locked(&self.local)
            .get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(a, _)| a.clone());
        if mine.is_some() {
            return mine;
        }
        self.board
            .as_ref()?
            .get(key)
            .await
            .inspect_err(|e| warn!(error = %e, "challenge lookup failed"))
            .ok()
            .flatten()
    }
}

/// The handshake answer to a TLS-ALPN-01 validation of `host`.
pub fn alpn_config(
    host: &Hostname,
    key_authorization: &str,
) -> Result<Arc<ServerConfig>, CertError> {
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    let mut params = CertificateParams::new(vec![host.to_string()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = provider.key_provider.load_private_key(key_der)?;
    // Not `with_single_cert`: its key check parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension.
    let certified = CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signer);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
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

    #[tokio::test]
    async fn answers_expire_and_are_withdrawn() {
        let challenges = Challenges::new(None);
        let (old, new) = (
            ChallengeKey::Http01("old".into()),
            ChallengeKey::Http01("new".into()),
        );
        challenges.publish(&old, "a.b", Duration::ZERO).await;
        assert_eq!(challenges.answer(&old).await, None, "expired");
        challenges
            .publish(&new, "c.d", Duration::from_secs(60))
            .await;
        assert_eq!(challenges.answer(&new).await.as_deref(), Some("c.d"));
        assert!(!locked(&challenges.local).contains_key(&old), "pruned");
        challenges.withdraw(&new).await;
        assert_eq!(challenges.answer(&new).await, None);
    }

    #[test]
    fn alpn_answer_offers_only_acme_tls() {
        let host = Hostname::parse("shop.example").unwrap();
        let config = alpn_config(&host, "token.thumbprint").unwrap();
        assert_eq!(config.alpn_protocols, vec![ACME_TLS_ALPN.to_vec()]);
    }
}
