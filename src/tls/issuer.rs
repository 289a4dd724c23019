//! Where certificates come from. `LocalCa`: a CA generated on first start
//! under the TLS folder (the single-box default); its root is written to
//! `ca.pem` for clients to trust. (ACME is the production issuer.)

use super::cert::{CertId, IssuedCert};
use super::error::{CertError, FileError, IssueError};
use super::renewal::Suggested;
use super::store::write_private;
use crate::domain::Hostname;
use async_trait::async_trait;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer as RcIssuer,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use time::{Duration as TimeDelta, OffsetDateTime};

/// A CA (certmagic's Issuer). Contract: `issue` returns a certificate for
/// `host` whose `IssuedCert::issuer` is `name()`, or says why not (the
/// `IssueError::cause` tells a refusal from an outage); it bounds its own
/// time. `revoke` and `renewal_window` are only asked about certificates
/// this issuer issued.
#[async_trait]
pub trait Issuer: Send + Sync {
    /// The issuer's name in logs, metrics and the store.
    fn name(&self) -> &str;
    /// A new certificate for `host`; `replacing`: the one it renews, so a
    /// CA that takes ARI can be told (RFC 9773 `replaces`).
    async fn issue(
        &self,
        host: &Hostname,
        replacing: Option<&CertId>,
    ) -> Result<IssuedCert, IssueError>;
    /// Tells the CA a certificate must no longer be trusted.
    async fn revoke(&self, cert: &IssuedCert) -> Result<(), IssueError>;
    /// The CA's suggested renewal window for a certificate (ARI), None
    /// where the CA offers none or did not answer.
    async fn renewal_window(&self, _cert: &CertId) -> Option<Suggested> {
        None
    }
}

pub struct LocalCa {
    issuer: RcIssuer<'static, KeyPair>,
    pub root_path: PathBuf,
    validity: TimeDelta,
}

impl LocalCa {
    /// Loads `dir/ca.pem` + `dir/ca.key`, or creates them (key mode 0600).
    pub fn load_or_create(dir: &Path, validity: std::time::Duration) -> Result<Self, CertError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        let issuer = if cert_path.exists() && key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(FileError::at(&key_path))?;
            let cert_pem =
                std::fs::read_to_string(&cert_path).map_err(FileError::at(&cert_path))?;
            let key = KeyPair::from_pem(&key_pem).map_err(CertError::about(&key_path))?;
            RcIssuer::from_ca_cert_pem(&cert_pem, key).map_err(CertError::about(&cert_path))?
        } else {
            std::fs::create_dir_all(dir).map_err(FileError::at(dir))?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "edgepop local CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - TimeDelta::hours(1);
            params.not_after = now + TimeDelta::days(3650);
            let key = KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            std::fs::write(&cert_path, cert.pem()).map_err(FileError::at(&cert_path))?;
            RcIssuer::new(params, key)
        };
        let validity = TimeDelta::try_from(validity)?;
        Ok(LocalCa {
            issuer,
            root_path: cert_path,
            validity,
        })
    }
}

#[async_trait]
impl Issuer for LocalCa {
    fn name(&self) -> &str {
        "local"
    }

    /// The local CA publishes no CRL or OCSP: revoking only stops edgepop
    /// serving the certificate.
    async fn revoke(&self, _cert: &IssuedCert) -> Result<(), IssueError> {
        Ok(())
    }

    async fn issue(
        &self,
        host: &Hostname,
        _replacing: Option<&CertId>,
    ) -> Result<IssuedCert, IssueError> {
        let key = KeyPair::generate().map_err(CertError::from)?;
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(CertError::from)?;
        params
            .distinguished_name
            .push(DnType::CommonName, host.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        // Backdated for clock skew, but by a small share of short lifetimes.
        let backdate = std::cmp::min(self.validity / 10_i32, TimeDelta::minutes(5));
        params.not_before = now - backdate;
        params.not_after = now + self.validity;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(CertError::from)?;
        Ok(IssuedCert {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_before: params.not_before.unix_timestamp(),
            not_after: params.not_after.unix_timestamp(),
            issuer: "local".into(),
            revoked: false,
        })
    }
}
