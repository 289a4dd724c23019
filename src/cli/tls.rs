//! The certificate store and issuer a config names (shared by `run` and
//! the `edgepop tls` commands), `edgepop tls revoke` and `edgepop tls status`.

use crate::config::{Config, TlsConfig};
use crate::domain::Hostname;
use crate::tls::acme::{AcmeIssuer, AcmeSettings};
use crate::tls::challenge::{ChallengeBoard, Challenges};
use crate::tls::issuer::{Issuer, LocalCa};
use crate::tls::issuers::Issuers;
use crate::tls::store::{CertStore, FileStore, IssuanceLock, MemoryLock, PostgresStore};
use crate::tls::CertId;
use crate::tls::{CertError, StoreError};
use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use tracing::info;

/// What `[tls.store]` provides: certificates and the ACME account, the
/// issuance lock, and (shared store only) the challenge board.
pub struct Stores {
    pub certs: Arc<dyn CertStore>,
    pub lock: Arc<dyn IssuanceLock>,
    pub board: Option<Arc<dyn ChallengeBoard>>,
}

pub fn stores(tls: &TlsConfig) -> Result<Stores, StoreError> {
    Ok(match &tls.store.postgres {
        Some(url) => {
            let pg = Arc::new(PostgresStore::connect(url)?);
            Stores {
                certs: pg.clone(),
                lock: pg.clone(),
                board: Some(pg),
            }
        }
        // One box: the process that orders is the one the CA reaches.
        None => Stores {
            certs: Arc::new(FileStore::open(&tls.dir)?),
            lock: Arc::new(MemoryLock::default()),
            board: None,
        },
    })
}

/// The issuers `[tls]` names, in order: each `[[tls.issuers]]` CA (or
/// `[tls.acme]`), else the local CA.
pub fn issuer(
    tls: &TlsConfig,
    store: Arc<dyn CertStore>,
    challenges: Arc<Challenges>,
) -> Result<Arc<Issuers>, CertError> {
    let mut each: Vec<Arc<dyn Issuer>> = Vec::new();
    for acme in tls.acme_issuers() {
        let name = acme.label();
        info!(issuer = %name, directory = %acme.directory, challenge = ?acme.challenge, store = store.kind(), "ACME issuer");
        let settings = AcmeSettings {
            name,
            directory: acme.directory.clone(),
            contact: acme.contact.clone(),
            ca_root: acme.ca_root.clone(),
            challenge: acme.challenge,
            timeout: tls.ca_timeout(acme),
            // Checked when the config was read.
            eab: acme.eab().ok().flatten(),
        };
        each.push(Arc::new(AcmeIssuer::new(
            settings,
            store.clone(),
            challenges.clone(),
        )));
    }
    if each.is_empty() {
        let ca = LocalCa::load_or_create(&tls.dir.join("ca"), tls.local_ca_validity)?;
        info!(root = %ca.root_path.display(), store = store.kind(), "local CA ready");
        each.push(Arc::new(ca));
    }
    Ok(Arc::new(Issuers::new(each)))
}

/// Revokes the stored certificate of `host` at its CA and marks it revoked
/// in the store. Running nodes drop it at their next store check
/// (`tls.renew_check`), and the next handshake gets a new certificate.
pub fn revoke(rt: &tokio::runtime::Runtime, config: &Config, host: &str) -> ExitCode {
    match rt.block_on(revoke_stored(config, host)) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn revoke_stored(config: &Config, host: &str) -> Result<String, Box<dyn Error>> {
    let tls = config.tls.as_ref().ok_or("the config has no [tls] table")?;
    let host = Hostname::parse(host).map_err(|e| format!("{host}: {e}"))?;
    let stores = stores(tls)?;
    let store = stores.certs;
    let mut cert = store
        .load(&host)
        .await?
        .ok_or_else(|| format!("no stored certificate for {host}"))?;
    if cert.revoked {
        return Ok(format!("{host}: already revoked"));
    }
    let challenges = Arc::new(Challenges::new(stores.board));
    let issuer = issuer(tls, store.clone(), challenges)?;
    // Told to the CA that issued it, if it is still on the list.
    issuer.revoke(&cert).await?;
    cert.revoked = true;
    store.save(&host, &cert).await?;
    Ok(format!(
        "{host}: revoked (issuer {}); nodes drop it within tls.renew_check",
        cert.issuer
    ))
}

/// What the store holds for `host`: store, issuer, validity, when renewal
/// starts (`tls.renew_when_left`), revoked or not. Exit 1 when nothing is
/// stored (the name gets its certificate on its first handshake).
pub fn status(rt: &tokio::runtime::Runtime, config: &Config, host: &str) -> ExitCode {
    match rt.block_on(stored_status(config, host)) {
        Ok((true, lines)) => {
            println!("{lines}");
            ExitCode::SUCCESS
        }
        Ok((false, lines)) => {
            println!("{lines}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Whether a certificate is stored, and what to print.
async fn stored_status(config: &Config, host: &str) -> Result<(bool, String), Box<dyn Error>> {
    let tls = config.tls.as_ref().ok_or("the config has no [tls] table")?;
    let host = Hostname::parse(host).map_err(|e| format!("{host}: {e}"))?;
    let store = stores(tls)?.certs;
    let when = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|d| {
                d.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| t.to_string())
    };
    let failure = store.last_failure(&host).await?;
    let last_error = |since: i64| match &failure {
        Some((at, error)) if *at >= since => format!("{}: {error}", when(*at)),
        _ => "none".to_string(),
    };
    let Some(cert) = store.load(&host).await? else {
        let last_error = last_error(i64::MIN);
        let none = "no certificate stored (ordered ahead or on the first handshake)";
        return Ok((
            false,
            format!("{host}: {none}\n  last error:  {last_error}"),
        ));
    };
    let (fixed, planned) = cert.planned_renewal(tls.renew_when_left);
    // The CA's renewal information, where its issuer is an ACME CA that
    // offers it (no local CA is created to ask).
    let ari = if tls.acme_issuers().any(|a| a.label() == cert.issuer) {
        let challenges = Arc::new(Challenges::new(None));
        issuer(tls, store.clone(), challenges)?
            .renewal_window(&CertId::of(&cert))
            .await
    } else {
        None
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // With ARI each node picks its own point of the window.
    let renew_from = ari.as_ref().map_or(planned, |s| s.window.start);
    let renewal = match &ari {
        Some(s) => format!(
            "within the CA's ARI window, {} to {}",
            when(s.window.start),
            when(s.window.end)
        ),
        None => format!(
            "{} (no ARI from the CA; spread over {} to {}: tls.renew_when_left = {})",
            when(planned),
            when(fixed.start),
            when(fixed.end),
            tls.renew_when_left
        ),
    };
    let state = match () {
        _ if cert.revoked => "revoked: not served; the next handshake orders a new one",
        _ if now >= cert.not_after => "expired: not served; the next handshake orders a new one",
        _ if now >= renew_from => {
            "due for renewal: the nodes holding it renew it in the background"
        }
        _ => "valid",
    };
    // Only a failure since this certificate was issued is news.
    let last_error = last_error(cert.not_before);
    Ok((true, format!(
        "{host}\n  store:       {}\n  issuer:      {}\n  not before:  {}\n  not after:   {}\n  renewal:     {renewal}\n  state:       {state}\n  last error:  {last_error}",
        store.kind(),
        cert.issuer,
        when(cert.not_before),
        when(cert.not_after),
    )))
}
