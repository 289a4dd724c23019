//! What goes wrong in tls, by kind: a store outage is told apart from a CA
//! refusal or a bad certificate. The texts are those the string errors had,
//! so logs read as before; none of them reaches an HTTP client.

use crate::pg::chain;
use std::path::{Path, PathBuf};

/// A file that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{}: {err}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    pub err: std::io::Error,
}

impl FileError {
    /// For `map_err`: the error of an operation on `path`.
    pub fn at(path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
        let path = path.to_path_buf();
        move |err| FileError { path, err }
    }
}

/// Why a certificate store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's settings cannot be used (a bad database URL).
    #[error("tls store {0}")]
    Config(String),
    /// No connection to the database: down, unreachable, pool exhausted.
    #[error("{}", chain(.0))]
    Unavailable(deadpool_postgres::PoolError),
    /// A statement failed (creating the tables included).
    #[error("{}", chain(.0))]
    Query(tokio_postgres::Error),
    /// What the store holds cannot be used (undecodable, or gone when it
    /// must be there).
    #[error("{0}")]
    Corrupt(String),
    /// A file of the file store.
    #[error(transparent)]
    File(#[from] FileError),
}

/// A certificate, key or CSR that could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no certificate in the chain")]
    NoCertificate,
    #[error("certificate: {0}")]
    CertPem(rustls_pki_types::pem::Error),
    #[error("certificate: {0}")]
    X509(x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("private key: {0}")]
    KeyPem(rustls_pki_types::pem::Error),
    /// rustls refused the certificate, the key or the protocol versions.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// Generating a key, a certificate or a CSR failed.
    #[error("{0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate lifetime that does not fit (`tls.local_ca_validity`).
    #[error("{0}")]
    Lifetime(#[from] time::error::ConversionRange),
    #[error(transparent)]
    File(#[from] FileError),
    /// The peer channel's certificates do not fit together.
    #[error("{0}")]
    Peering(String),
    /// One of the above, about the file at `path`.
    #[error("{}: {err}", path.display())]
    In { path: PathBuf, err: Box<CertError> },
}

impl CertError {
    /// For `map_err`: an error about the file at `path`.
    pub fn about<E: Into<CertError>>(path: &Path) -> impl FnOnce(E) -> CertError {
        let path = path.to_path_buf();
        move |err| CertError::In {
            path,
            err: Box::new(err.into()),
        }
    }
}

/// Why an issuer produced no certificate (or could not revoke one).
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A request to the CA failed (`doing` says which): refused with a
    /// problem document, unreachable, or not understood.
    #[error("{doing}: {err}")]
    Ca {
        doing: String,
        err: instant_acme::Error,
    },
    /// The CA did not validate the name, or offered no challenge we answer.
    #[error("{0}")]
    Challenge(String),
    /// The order took longer than `tls.order_timeout`.
    #[error("timed out")]
    TimedOut,
    /// Another node held the name's issuance lock past the order's deadline.
    #[error("another node is still ordering this name")]
    LockHeld,
    /// The certificate store failed (the ACME account, say).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key, CSR or certificate could not be made or read (the issued one,
    /// or the trust roots of the ACME client).
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The ACME client found no trust roots on this machine.
    #[error("ACME client roots: {0}")]
    Roots(rustls::Error),
    /// The order's task ended without an answer (it panicked).
    #[error("{0}")]
    Aborted(String),
    /// A certificate's CA is not in `tls.issuers` any more.
    #[error("its issuer {0:?} is no longer in tls.issuers: revoke it at that CA by hand")]
    UnknownIssuer(String),
    /// Every CA of `tls.issuers` failed the order: each one's reason.
    #[error("{}", tried.iter().map(|(ca, e)| format!("{ca}: {e}")).collect::<Vec<_>>().join("; "))]
    Issuers { tried: Vec<(String, IssueError)> },
}

impl IssueError {
    /// For `map_err`: a failed request to the CA.
    pub fn ca(doing: impl Into<String>) -> impl FnOnce(instant_acme::Error) -> IssueError {
        let doing = doing.into();
        move |err| IssueError::Ca { doing, err }
    }

    /// Whether the next CA of `tls.issuers` may succeed where this one
    /// failed: yes for the CA's own trouble (refused, rate-limited,
    /// unreachable, slow); no when the name did not validate, which would
    /// fail at any CA (its DNS does not point here).
    pub fn next_ca_may_help(&self) -> bool {
        self.cause() != "challenge"
    }

    /// The `cause` label of `edgepop_tls_issuance_failures_total`.
    pub fn cause(&self) -> &'static str {
        use instant_acme::Error as Acme;
        match self {
            IssueError::Ca { err, .. } => match err {
                // The CA reporting a failed validation (RFC 8555 §6.7) is
                // the challenge's failure, not a refusal.
                Acme::Api(problem) if validation_problem(problem.r#type.as_deref()) => "challenge",
                Acme::Api(problem)
                    if problem.r#type.as_deref()
                        == Some("urn:ietf:params:acme:error:rateLimited") =>
                {
                    "rate_limited"
                }
                Acme::Api(_) => "ca_refused",
                Acme::Timeout(_) => "timeout",
                Acme::Http(_) | Acme::Hyper(_) => "ca_unreachable",
                // instant-acme wraps the HTTP client's own errors.
                Acme::Other(e) if e.is::<hyper_util::client::legacy::Error>() => "ca_unreachable",
                _ => "other",
            },
            IssueError::Challenge(_) => "challenge",
            IssueError::Issuers { tried } => tried.last().map_or("other", |(_, e)| e.cause()),
            IssueError::TimedOut => "timeout",
            IssueError::Store(_) => "store",
            IssueError::LockHeld
            | IssueError::Cert(_)
            | IssueError::Roots(_)
            | IssueError::Aborted(_)
            | IssueError::UnknownIssuer(_) => "other",
        }
    }
}

/// ACME problem types that say the CA could not validate the challenge.
fn validation_problem(kind: Option<&str>) -> bool {
    // Not `caa`: a name's CAA record allows some CAs and not others, so
    // the next CA may issue where this one may not.
    const VALIDATION: [&str; 5] = [
        "connection",
        "dns",
        "incorrectResponse",
        "tls",
        "unauthorized",
    ];
    kind.and_then(|k| k.strip_prefix("urn:ietf:params:acme:error:"))
        .is_some_and(|k| VALIDATION.contains(&k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_labelled_by_cause() {
        let problem: instant_acme::Problem = serde_json::from_str(
            r#"{"type": "urn:ietf:params:acme:error:rateLimited", "detail": "too many"}"#,
        )
        .unwrap();
        let limited = IssueError::ca("new order")(problem.into());
        assert_eq!(limited.cause(), "rate_limited");
        let problem: instant_acme::Problem = serde_json::from_str(
            r#"{"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "blocked"}"#,
        )
        .unwrap();
        let refused = IssueError::ca("new order")(problem.into());
        assert_eq!(refused.cause(), "ca_refused");
        let unreached: instant_acme::Problem = serde_json::from_str(
            r#"{"type": "urn:ietf:params:acme:error:connection", "detail": "no answer at :80"}"#,
        )
        .unwrap();
        let failed = IssueError::ca("challenge ready")(unreached.into());
        assert_eq!(
            failed.cause(),
            "challenge",
            "a validation the CA reports failed"
        );
        assert!(refused.to_string().starts_with("new order: "), "{refused}");
        let polled = IssueError::ca("validation")(instant_acme::Error::Timeout(None));
        assert_eq!(polled.cause(), "timeout");
        assert_eq!(IssueError::TimedOut.cause(), "timeout");
        assert_eq!(
            IssueError::Challenge("validation failed".into()).cause(),
            "challenge"
        );
        let gone = StoreError::Corrupt("ACME account vanished after saving".into());
        assert_eq!(IssueError::from(gone).cause(), "store");
    }

    #[test]
    fn texts_are_those_of_the_old_string_errors() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let file = FileError::at(Path::new("/x/ca.key"))(io);
        assert_eq!(file.to_string(), "/x/ca.key: entity not found");
        let wrapped = CertError::about(Path::new("/x/cert.pem"))(CertError::NoCertificate);
        assert_eq!(
            wrapped.to_string(),
            "/x/cert.pem: no certificate in the chain"
        );
        let polled = IssueError::ca("validation")(instant_acme::Error::Timeout(None));
        assert_eq!(
            polled.to_string(),
            "validation: timed out waiting for an order update"
        );
        assert_eq!(
            IssueError::LockHeld.to_string(),
            "another node is still ordering this name"
        );
    }
}
