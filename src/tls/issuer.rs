//! Where certificates come from. `LocalCa`: a CA generated on first start
//! under the TLS folder (the single-box default); its root is written to
//! `ca.pem` for clients to trust. (ACME is the production issuer.)

use super::cert::IssuedCert;
use super::store::write_private;
use crate::domain::Hostname;
use async_trait::async_trait;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer as RcIssuer,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use time::{Duration as TimeDelta, OffsetDateTime};

#[async_trait]
pub trait Issuer: Send + Sync {
    fn name(&self) -> &'static str;
    async fn issue(&self, host: &Hostname) -> Result<IssuedCert, String>;
    /// Tells the CA a certificate must no longer be trusted.
    async fn revoke(&self, cert: &IssuedCert) -> Result<(), String>;
}

pub struct LocalCa {
    issuer: RcIssuer<'static, KeyPair>,
    pub root_path: PathBuf,
    validity: TimeDelta,
}

impl LocalCa {
    /// Loads `dir/ca.pem` + `dir/ca.key`, or creates them (key mode 0600).
    pub fn load_or_create(dir: &Path, validity: std::time::Duration) -> Result<Self, String> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        let issuer = if cert_path.exists() && key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path)
                .map_err(|e| format!("{}: {e}", key_path.display()))?;
            let cert_pem = std::fs::read_to_string(&cert_path)
                .map_err(|e| format!("{}: {e}", cert_path.display()))?;
            let key =
                KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
            RcIssuer::from_ca_cert_pem(&cert_pem, key)
                .map_err(|e| format!("{}: {e}", cert_path.display()))?
        } else {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut params =
                CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
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
            let key = KeyPair::generate().map_err(|e| e.to_string())?;
            let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            std::fs::write(&cert_path, cert.pem())
                .map_err(|e| format!("{}: {e}", cert_path.display()))?;
            RcIssuer::new(params, key)
        };
        let validity = TimeDelta::try_from(validity).map_err(|e| e.to_string())?;
        Ok(LocalCa {
            issuer,
            root_path: cert_path,
            validity,
        })
    }
}

#[async_trait]
impl Issuer for LocalCa {
    fn name(&self) -> &'static str {
        "local"
    }

    /// The local CA publishes no CRL or OCSP: revoking only stops edgepop
    /// serving the certificate.
    async fn revoke(&self, _cert: &IssuedCert) -> Result<(), String> {
        Ok(())
    }

    async fn issue(&self, host: &Hostname) -> Result<IssuedCert, String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params =
            CertificateParams::new(vec![host.to_string()]).map_err(|e| e.to_string())?;
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
            .map_err(|e| e.to_string())?;
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
