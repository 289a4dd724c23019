//! `tls.issuers`: the CAs in order of preference, as one `Issuer`. An
//! order goes to the first; when it fails for the CA's own reasons
//! (`IssueError::next_ca_may_help`) the next is tried for that same order,
//! as Caddy does, so a CA outage does not take issuance down with it. Each
//! attempt is counted per CA and result, and the last failure is kept for
//! `/status`.

use super::cert::{CertId, IssuedCert};
use super::error::IssueError;
use super::issuer::Issuer;
use super::renewal::Suggested;
use crate::domain::Hostname;
use crate::locked;
use crate::metrics::METRICS;
use async_trait::async_trait;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use tracing::warn;

pub struct Issuers {
    each: Vec<(Arc<dyn Issuer>, Mutex<IssuerStatus>)>,
}

/// What `/status` shows of one CA.
#[derive(Clone, Default, Serialize)]
pub struct IssuerStatus {
    pub name: String,
    pub issued: u64,
    pub failed: u64,
    /// The last failure: when (unix seconds) and why.
    pub last_failure: Option<(i64, String)>,
}

impl Issuers {
    /// `each` in order of preference; at least one.
    pub fn new(each: Vec<Arc<dyn Issuer>>) -> Issuers {
        assert!(!each.is_empty(), "an issuer list needs an issuer");
        let each = each
            .into_iter()
            .map(|i| {
                let status = IssuerStatus {
                    name: i.name().to_string(),
                    ..Default::default()
                };
                (i, Mutex::new(status))
            })
            .collect();
        Issuers { each }
    }

    pub fn status(&self) -> Vec<IssuerStatus> {
        self.each.iter().map(|(_, s)| locked(s).clone()).collect()
    }

    /// The CA that issued a certificate. Certificates stored before CAs
    /// had names say "acme": the one `[tls.acme]` CA, now the first.
    fn by_name(&self, name: &str) -> Option<&Arc<dyn Issuer>> {
        let mut each = self.each.iter().map(|(i, _)| i);
        match each.clone().find(|i| i.name() == name) {
            Some(i) => Some(i),
            None if name == "acme" => each.next(),
            None => None,
        }
    }
}

#[async_trait]
impl Issuer for Issuers {
    /// The first CA's; each certificate names the CA that issued it.
    fn name(&self) -> &str {
        self.each[0].0.name()
    }

    async fn issue(
        &self,
        host: &Hostname,
        replacing: Option<&CertId>,
    ) -> Result<IssuedCert, IssueError> {
        let mut tried = Vec::new();
        for (issuer, status) in &self.each {
            let name = issuer.name();
            // Only the CA that issued a certificate knows what it replaces.
            let replaces = replacing.filter(|c| c.issuer == name);
            match issuer.issue(host, replaces).await {
                Ok(cert) => {
                    METRICS
                        .tls_issuer_orders
                        .with_label_values(&[name, "issued"])
                        .inc();
                    locked(status).issued += 1;
                    return Ok(cert);
                }
                Err(e) => {
                    METRICS
                        .tls_issuer_orders
                        .with_label_values(&[name, e.cause()])
                        .inc();
                    {
                        let mut s = locked(status);
                        s.failed += 1;
                        s.last_failure = Some((super::cert::now_unix(), e.to_string()));
                    }
                    let next = e.next_ca_may_help();
                    tried.push((name.to_string(), e));
                    if !next {
                        break;
                    }
                    if tried.len() < self.each.len() {
                        warn!(%host, issuer = name, error = %tried[tried.len() - 1].1, "CA failed the order; trying the next one");
                    }
                }
            }
        }
        if tried.len() == 1 {
            return Err(tried.pop().expect("one").1);
        }
        Err(IssueError::Issuers { tried })
    }

    async fn revoke(&self, cert: &IssuedCert) -> Result<(), IssueError> {
        match self.by_name(&cert.issuer) {
            Some(issuer) => issuer.revoke(cert).await,
            None => Err(IssueError::UnknownIssuer(cert.issuer.clone())),
        }
    }

    async fn renewal_window(&self, cert: &CertId) -> Option<Suggested> {
        self.by_name(&cert.issuer)?.renewal_window(cert).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A CA that answers each order with `result`, and remembers what it
    /// was asked to replace.
    struct Fake {
        name: &'static str,
        result: fn() -> Result<(), IssueError>,
        asked: AtomicUsize,
        replaced: Mutex<Option<CertId>>,
    }

    fn fake(name: &'static str, result: fn() -> Result<(), IssueError>) -> Arc<Fake> {
        Arc::new(Fake {
            name,
            result,
            asked: AtomicUsize::new(0),
            replaced: Mutex::new(None),
        })
    }

    #[async_trait]
    impl Issuer for Fake {
        fn name(&self) -> &str {
            self.name
        }
        async fn issue(
            &self,
            _host: &Hostname,
            replacing: Option<&CertId>,
        ) -> Result<IssuedCert, IssueError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            *locked(&self.replaced) = replacing.cloned();
            (self.result)().map(|()| IssuedCert {
                chain_pem: String::new(),
                key_pem: String::new(),
                not_before: 0,
                not_after: 1,
                issuer: self.name.into(),
                revoked: false,
            })
        }
        async fn revoke(&self, _cert: &IssuedCert) -> Result<(), IssueError> {
            Ok(())
        }
    }

    fn host() -> Hostname {
        Hostname::parse("shop.test").unwrap()
    }

    #[tokio::test]
    async fn a_ca_failure_passes_the_order_on_and_a_validation_failure_does_not() {
        let (down, ok) = (
            fake("down", || Err(IssueError::TimedOut)),
            fake("ok", || Ok(())),
        );
        let list = Issuers::new(vec![down.clone(), ok.clone()]);
        let cert = list.issue(&host(), None).await.unwrap();
        assert_eq!(cert.issuer, "ok");
        let status = list.status();
        assert_eq!((status[0].failed, status[1].issued), (1, 1));
        assert!(status[0]
            .last_failure
            .as_ref()
            .unwrap()
            .1
            .contains("timed out"));

        let bad = fake("bad", || {
            Err(IssueError::Challenge("no answer at :80".into()))
        });
        let never = fake("never", || Ok(()));
        let list = Issuers::new(vec![bad, never.clone()]);
        let e = list.issue(&host(), None).await.unwrap_err();
        assert_eq!(e.cause(), "challenge");
        assert_eq!(never.asked.load(Ordering::SeqCst), 0, "not passed on");
    }

    #[tokio::test]
    async fn when_every_ca_fails_each_reason_is_kept() {
        let a = fake("a", || Err(IssueError::TimedOut));
        let b = fake("b", || Err(IssueError::LockHeld));
        let e = Issuers::new(vec![a, b])
            .issue(&host(), None)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "a: timed out; b: another node is still ordering this name"
        );
        assert_eq!(e.cause(), "other", "the last CA's cause");
    }

    #[tokio::test]
    async fn only_the_issuing_ca_is_told_what_a_renewal_replaces() {
        let (first, second) = (
            fake("first", || Err(IssueError::TimedOut)),
            fake("second", || Ok(())),
        );
        let list = Issuers::new(vec![first.clone(), second.clone()]);
        let old = CertId {
            issuer: "second".into(),
            ari: Some("aki.serial".into()),
        };
        list.issue(&host(), Some(&old)).await.unwrap();
        assert_eq!(*locked(&first.replaced), None);
        assert_eq!(*locked(&second.replaced), Some(old));
    }
}
