//! Which hostnames this node serves. The proxy asks a `Directory`; today the
//! config's `[[sites]]` answer, the replica plugs in behind the same trait.

use crate::domain::{DomainRecord, Hostname};
use async_trait::async_trait;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
#[error("directory unavailable: {0}")]
pub struct DirectoryError(pub String);

#[async_trait]
pub trait Directory: Send + Sync {
    /// The domain row for `host`, or `None` if this network does not serve it.
    async fn lookup(&self, host: &Hostname) -> Result<Option<DomainRecord>, DirectoryError>;

    /// How many hostnames are known (for /status).
    fn len_hint(&self) -> Option<usize> {
        None
    }
}

/// Sites listed in the config file.
pub struct StaticDirectory {
    sites: HashMap<Hostname, DomainRecord>,
}

impl StaticDirectory {
    pub fn new(records: impl IntoIterator<Item = DomainRecord>) -> Self {
        StaticDirectory {
            sites: records
                .into_iter()
                .map(|r| (r.hostname.clone(), r))
                .collect(),
        }
    }
}

#[async_trait]
impl Directory for StaticDirectory {
    async fn lookup(&self, host: &Hostname) -> Result<Option<DomainRecord>, DirectoryError> {
        Ok(self.sites.get(host).cloned())
    }

    fn len_hint(&self) -> Option<usize> {
        Some(self.sites.len())
    }
}

/// Config sites first (the operator's own names), then the replica.
pub struct Layered {
    pub sites: StaticDirectory,
    pub replica: Option<std::sync::Arc<dyn Directory>>,
}

#[async_trait]
impl Directory for Layered {
    async fn lookup(&self, host: &Hostname) -> Result<Option<DomainRecord>, DirectoryError> {
        if let Some(found) = self.sites.lookup(host).await? {
            return Ok(Some(found));
        }
        match &self.replica {
            Some(r) => r.lookup(host).await,
            None => Ok(None),
        }
    }

    fn len_hint(&self) -> Option<usize> {
        self.sites.len_hint()
    }
}
