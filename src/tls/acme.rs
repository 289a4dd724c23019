//! The ACME issuer (RFC 8555, through instant-acme): one order per name,
//! answered by HTTP-01 or TLS-ALPN-01. The account is created once and its
//! credentials kept in the certificate store, so every PoP orders under the
//! same account. Challenge answers are published (on the shared challenge
//! board, if any) before the CA is told to validate, and removed when the
//! order is done either way.

use super::cert::{leaf, validity, CertId, IssuedCert};
use super::challenge::{ChallengeKey, Challenges};
use super::error::{CertError, IssueError, StoreError};
use super::issuer::Issuer;
use super::renewal::{Suggested, Window};
use super::store::CertStore;
use crate::config::ChallengeKind;
use crate::domain::Hostname;
use async_trait::async_trait;
use bytes::Bytes;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::BodyWrapper;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    ExternalAccountKey, Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
    RevocationRequest,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use tracing::{debug, info};

pub struct AcmeSettings {
    /// The CA's name in logs, metrics and `IssuedCert::issuer`.
    pub name: String,
    pub directory: String,
    pub contact: Vec<String>,
    /// Trust for the directory's own TLS (a test CA such as pebble's).
    pub ca_root: Option<PathBuf>,
    pub challenge: ChallengeKind,
    /// How long one order may take at this CA, validation included.
    pub timeout: Duration,
    /// External account binding: key id and raw HMAC key.
    pub eab: Option<(String, Vec<u8>)>,
}

/// How long the CA's renewal information may take to answer.
const ARI_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AcmeIssuer {
    settings: AcmeSettings,
    store: Arc<dyn CertStore>,
    challenges: Arc<Challenges>,
    account: OnceCell<Account>,
}

impl AcmeIssuer {
    pub fn new(
        settings: AcmeSettings,
        store: Arc<dyn CertStore>,
        challenges: Arc<Challenges>,
    ) -> Self {
        AcmeIssuer {
            settings,
            store,
            challenges,
            account: OnceCell::new(),
        }
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, IssueError> {
        let tls = HttpsConnectorBuilder::new();
        let tls = match &self.settings.ca_root {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| CertError::about(path)(CertError::CertPem(e)))?
                {
                    let cert = cert.map_err(|e| CertError::about(path)(CertError::CertPem(e)))?;
                    roots.add(cert).map_err(CertError::about(path))?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(CertError::from)?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                tls.with_tls_config(config)
            }
            None => tls
                .try_with_platform_verifier()
                .map_err(IssueError::Roots)?,
        };
        // Without TCP_NODELAY each POST (headers, then body) waits for a
        // delayed ACK: about 40 ms per ACME request, a dozen per order.
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let https = tls
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let client: HyperClient<_, BodyWrapper<Bytes>> =
            HyperClient::builder(TokioExecutor::new()).build(https);
        Ok(Account::builder_with_http(Box::new(client)))
    }

    /// The stored account, or a new one (saved for every node to share).
    async fn account(&self) -> Result<&Account, IssueError> {
        self.account
            .get_or_try_init(|| async {
                let dir = &self.settings.directory;
                if let Some(json) = self.store.load_account(dir).await? {
                    return self.restore(&json).await;
                }
                let contact: Vec<&str> = self.settings.contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let eab = self
                    .settings
                    .eab
                    .as_ref()
                    .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
                let (account, creds) = self
                    .builder()?
                    .create(&new, dir.clone(), eab.as_ref())
                    .await
                    .map_err(IssueError::ca(format!("ACME account creation at {dir}")))?;
                let json = serde_json::to_string(&creds)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let kept = self.store.save_account(dir, &json).await?;
                if kept == json {
                    info!(directory = %dir, id = account.id(), "ACME account created");
                    return Ok(account);
                }
                // Another node saved its account first: order under that one.
                self.restore(&kept).await
            })
            .await
    }

    async fn restore(&self, json: &str) -> Result<Account, IssueError> {
        let creds: AccountCredentials = serde_json::from_str(json)
            .map_err(|e| StoreError::Corrupt(format!("stored ACME account: {e}")))?;
        self.builder()?
            .from_credentials(creds)
            .await
            .map_err(IssueError::ca("ACME account"))
    }

    /// Publishes the answer for every pending authorization and tells the
    /// CA to validate; returns what was published, for removal.
    async fn answer(&self, order: &mut Order) -> Result<Vec<ChallengeKey>, IssueError> {
        let mut published = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(IssueError::ca("authorization"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(IssueError::Challenge(format!("authorization is {other:?}"))),
            }
            let (kind, name) = match self.settings.challenge {
                ChallengeKind::Http01 => (ChallengeType::Http01, "http-01"),
                ChallengeKind::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
            };
            let ident = authz.identifier().to_string();
            let mut challenge = authz.challenge(kind).ok_or_else(|| {
                IssueError::Challenge(format!("the CA offers no {name} challenge"))
            })?;
            let key = match self.settings.challenge {
                ChallengeKind::Http01 => ChallengeKey::Http01(challenge.token.clone()),
                ChallengeKind::TlsAlpn01 => ChallengeKey::TlsAlpn01(
                    Hostname::parse(&ident)
                        .map_err(|e| IssueError::Challenge(format!("{ident}: {e}")))?,
                ),
            };
            let key_auth = challenge.key_authorization();
            self.challenges
                .publish(&key, key_auth.as_str(), self.settings.timeout * 2)
                .await;
            published.push(key);
            challenge
                .set_ready()
                .await
                .map_err(IssueError::ca("challenge ready"))?;
        }
        Ok(published)
    }

    async fn order(
        &self,
        host: &Hostname,
        replacing: Option<&CertId>,
        published: &mut Vec<ChallengeKey>,
    ) -> Result<IssuedCert, IssueError> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(host.to_string())];
        let replaces = replacing.and_then(|c| c.ari.as_deref()).and_then(ari_id);
        let placed = match replaces {
            Some(id) => match account.new_order(&NewOrder::new(&ids).replaces(id)).await {
                // No ARI at this CA, or it takes no replacement of this
                // certificate (replaced already): a plain order.
                Err(e) if replacement_refused(&e) => account.new_order(&NewOrder::new(&ids)).await,
                placed => placed,
            },
            None => account.new_order(&NewOrder::new(&ids)).await,
        };
        let mut order = placed.map_err(IssueError::ca("new order"))?;
        debug!(%host, url = order.url(), "ACME order placed");
        published.extend(self.answer(&mut order).await?);
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(10))
            .backoff(1.5)
            .timeout(self.settings.timeout);
        // A problem's type tells a failed validation from the CA's trouble
        // (`IssueError::cause`).
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(IssueError::ca("validation"))?;
        if status != OrderStatus::Ready {
            return Err(IssueError::Challenge(format!(
                "validation failed: {}",
                why_invalid(&mut order).await
            )));
        }
        let key = KeyPair::generate().map_err(CertError::from)?;
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(CertError::from)?;
        params.distinguished_name = DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(CertError::from)?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(IssueError::ca("finalize"))?;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .map_err(IssueError::ca("certificate"))?;
        let (not_before, not_after) = validity(&chain_pem)?;
        Ok(IssuedCert {
            chain_pem,
            key_pem: key.serialize_pem(),
            not_before,
            not_after,
            issuer: self.settings.name.clone(),
            revoked: false,
        })
    }
}

/// No ARI at this CA, or it takes no replacement of that certificate
/// (replaced already, RFC 9773 §5): worth a plain order. Anything else
/// (a rate limit, say) is the order's own failure.
fn replacement_refused(e: &instant_acme::Error) -> bool {
    match e {
        instant_acme::Error::Unsupported(_) => true,
        instant_acme::Error::Api(p) => matches!(
            p.r#type.as_deref(),
            Some(
                "urn:ietf:params:acme:error:alreadyReplaced"
                    | "urn:ietf:params:acme:error:conflict"
            )
        ),
        _ => false,
    }
}

/// instant-acme's form of an ARI identifier (`CertId::ari`).
fn ari_id(id: &str) -> Option<CertificateIdentifier<'_>> {
    let (aki, serial) = id.split_once('.')?;
    Some(CertificateIdentifier {
        authority_key_identifier: aki.into(),
        serial: serial.into(),
    })
}

/// The CA's own words for a failed validation.
async fn why_invalid(order: &mut Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                reasons.push(p.to_string());
            }
        }
    }
    if reasons.is_empty() {
        "order invalid".into()
    } else {
        reasons.join("; ")
    }
}

#[async_trait]
impl Issuer for AcmeIssuer {
    fn name(&self) -> &str {
        &self.settings.name
    }

    /// Asked of the CA's `renewalInfo` resource; None where the directory
    /// has none (Debian's pebble 2.4) or the CA did not answer in time.
    async fn renewal_window(&self, cert: &CertId) -> Option<Suggested> {
        let id = ari_id(cert.ari.as_deref()?)?;
        // Asking creates no account (`edgepop tls status` asks too): the
        // certificate's own was stored when it was ordered.
        let dir = &self.settings.directory;
        if self.account.get().is_none()
            && !matches!(self.store.load_account(dir).await, Ok(Some(_)))
        {
            return None;
        }
        let ask = async { self.account().await.ok()?.renewal_info(&id).await.ok() };
        let (info, retry_after) = tokio::time::timeout(ARI_TIMEOUT, ask).await.ok()??;
        let window = Window {
            start: info.suggested_window.start.unix_timestamp(),
            end: info.suggested_window.end.unix_timestamp(),
        };
        Some(Suggested::new(window, retry_after))
    }

    async fn revoke(&self, cert: &IssuedCert) -> Result<(), IssueError> {
        let leaf = leaf(&cert.chain_pem)?;
        let request = RevocationRequest {
            certificate: &leaf,
            reason: None,
        };
        self.account()
            .await?
            .revoke(&request)
            .await
            .map_err(IssueError::ca("ACME revocation"))
    }

    async fn issue(
        &self,
        host: &Hostname,
        replacing: Option<&CertId>,
    ) -> Result<IssuedCert, IssueError> {
        let mut published = Vec::new();
        let order = self.order(host, replacing, &mut published);
        // A CA that does not answer costs this long, then the next is tried.
        let result = tokio::time::timeout(self.settings.timeout, order)
            .await
            .unwrap_or(Err(IssueError::TimedOut));
        for key in &published {
            self.challenges.withdraw(key).await;
        }
        result
    }
}
