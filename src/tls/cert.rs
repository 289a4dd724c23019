//! A certificate as issuers produce and stores keep it (`IssuedCert`), and
//! as handshakes use it (`Served`: a rustls config with its window).

use super::error::{CertError, FileError};
use super::renewal::Window;
use crate::domain::Hostname;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A certificate with its key, as issuers produce and stores keep it.
#[derive(Clone, Serialize, Deserialize)]
pub struct IssuedCert {
    pub chain_pem: String,
    pub key_pem: String,
    pub not_before: i64,
    pub not_after: i64,
    pub issuer: String,
    /// Revoked by the operator (`edgepop tls revoke`): never served again;
    /// the next handshake for the name gets a new certificate.
    #[serde(default)]
    pub revoked: bool,
}

// Never print the key.
impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("not_after", &self.not_after)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl IssuedCert {
    /// Usable for a handshake now.
    pub(crate) fn valid(&self) -> bool {
        let now = now_unix();
        !self.revoked && self.not_before <= now && now < self.not_after
    }

    /// When renewal is due without the CA's word (ARI): a point of the
    /// fixed window that every node computes alike for this certificate.
    pub fn planned_renewal(&self, left: f64) -> (Window, i64) {
        let fixed = Window::fixed(self.not_before, self.not_after, left);
        (fixed, fixed.pick(self.fingerprint()))
    }

    /// Tells one certificate from another of the same name.
    pub(super) fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.chain_pem.hash(&mut h);
        h.finish()
    }
}

/// The first (leaf) certificate of a PEM chain.
pub(super) fn leaf(chain_pem: &str) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or(CertError::NoCertificate)?
        .map_err(CertError::CertPem)
}

/// The validity window of the first (leaf) certificate in a PEM chain.
pub fn validity(chain_pem: &str) -> Result<(i64, i64), CertError> {
    let leaf = leaf(chain_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).map_err(CertError::X509)?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// A rustls config serving one certificate: TLS 1.2 and 1.3 only (ring),
/// ALPN h2 and http/1.1.
pub fn server_config(chain_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(CertError::CertPem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(CertError::KeyPem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = SESSIONS.clone();
    Ok(Arc::new(config))
}

/// Resumable TLS sessions of every certificate in one bounded cache, not a
/// 256-slot cache per certificate: with 100,000 certificates held that was
/// two thirds of each one's 19 KB (docs/BENCHMARKS.md, issue 26). rustls
/// resumes a session only for the SNI it was made for.
static SESSIONS: std::sync::LazyLock<Arc<dyn rustls::server::StoresServerSessions>> =
    std::sync::LazyLock::new(|| rustls::server::ServerSessionMemoryCache::new(SESSIONS_HELD));

/// Sessions kept for resumption, all names together.
const SESSIONS_HELD: usize = 65_536;

/// Who issued a certificate and, for ARI (RFC 9773 §4.1), its identity at
/// that CA (`base64url(AKI).base64url(serial)`): what a renewal order
/// `replaces` and what the CA's renewal information is asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertId {
    pub issuer: String,
    /// None for a leaf without an authority key identifier.
    pub ari: Option<String>,
}

impl CertId {
    pub fn of(cert: &IssuedCert) -> CertId {
        let ari = leaf(&cert.chain_pem).ok().and_then(|der| {
            instant_acme::CertificateIdentifier::try_from(&der)
                .ok()
                .map(|id| id.to_string())
        });
        CertId {
            issuer: cert.issuer.clone(),
            ari,
        }
    }
}

/// A certificate ready for handshakes, with its validity window and when
/// it is to be renewed.
#[derive(Clone)]
pub(super) struct Served {
    pub config: Arc<ServerConfig>,
    pub not_before: i64,
    pub not_after: i64,
    pub fingerprint: u64,
    pub id: Arc<CertId>,
    /// When renewal is due (`renewal::renew_at`).
    pub renew_at: i64,
    /// When to ask the CA's renewal information again (0: not asked yet).
    pub ask_ari_at: i64,
}

impl Served {
    /// `left`: `tls.renew_when_left`, the fixed renewal share.
    pub fn new(cert: &IssuedCert, left: f64) -> Result<Self, CertError> {
        let fingerprint = cert.fingerprint();
        let renew_at = Window::fixed(cert.not_before, cert.not_after, left).pick(fingerprint);
        Ok(Served {
            config: server_config(&cert.chain_pem, &cert.key_pem)?,
            not_before: cert.not_before,
            not_after: cert.not_after,
            fingerprint,
            id: Arc::new(CertId::of(cert)),
            renew_at,
            ask_ari_at: 0,
        })
    }

    pub fn live(&self) -> bool {
        now_unix() < self.not_after
    }

    pub fn due(&self, now: i64) -> bool {
        self.renew_at <= now
    }
}

/// Static certificates from files, for the operator's own names.
pub fn load_static(certs: &[crate::config::StaticCert]) -> Result<StaticCerts, CertError> {
    let mut out = StaticCerts::default();
    for c in certs {
        let chain = std::fs::read_to_string(&c.cert).map_err(FileError::at(&c.cert))?;
        let key = std::fs::read_to_string(&c.key).map_err(FileError::at(&c.key))?;
        let config = server_config(&chain, &key).map_err(CertError::about(&c.cert))?;
        let (_, not_after) = validity(&chain).map_err(CertError::about(&c.cert))?;
        out.soonest_not_after = Some(
            out.soonest_not_after
                .map_or(not_after, |t| t.min(not_after)),
        );
        for h in &c.hostnames {
            out.by_name.insert(h.clone(), config.clone());
        }
    }
    Ok(out)
}

/// The certificates of `[[tls.certificates]]`, by the names they serve.
#[derive(Default)]
pub struct StaticCerts {
    pub by_name: HashMap<Hostname, Arc<ServerConfig>>,
    /// Nobody renews these: their expiry is watched (metrics) like the rest.
    pub soonest_not_after: Option<i64>,
}
