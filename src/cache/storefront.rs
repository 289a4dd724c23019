//! The storefront read path: cache first, else the replica (loaded once for
//! concurrent misses), with the replica's health deciding HIT vs STALE.

use super::press::Press;
use super::slot::{CachedPage, DomainCache, PageCache, Slot};
use crate::change::Table;
use crate::directory::{Directory, DirectoryError};
use crate::domain::{DomainRecord, DomainStatus, Hostname, PageKey, StoreId};
use crate::metrics::METRICS;
use crate::replica::{Outcome, Replica, ReplicaError};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub enum Lookup {
    /// From memory, the replica reachable (so the stream keeps it fresh).
    Hit(Arc<CachedPage>),
    /// Loaded from the replica now, in `Duration`.
    Miss(Arc<CachedPage>, Duration),
    /// From memory while the replica is unreachable: may be outdated.
    Stale(Arc<CachedPage>),
    /// The replica has no such page: the origin serves it.
    NotFound,
    /// Neither cache nor replica could answer.
    Unavailable(String),
}

pub struct Storefront {
    replica: Arc<dyn Replica>,
    pages: PageCache,
    domains: DomainCache,
    replica_up: AtomicBool,
    /// Query parameters that do not change a page (`utm_*` is a prefix).
    ignorable: Vec<String>,
    /// Encoded variants, made after a page arrives.
    press: Press,
    /// Told of every domain the stream makes active (certificates ahead).
    activations: std::sync::OnceLock<tokio::sync::mpsc::Sender<Hostname>>,
}

impl Storefront {
    pub fn new(
        replica: Arc<dyn Replica>,
        pages: PageCache,
        domains: DomainCache,
        ignorable: Vec<String>,
        press: Press,
    ) -> Self {
        Storefront {
            replica,
            pages,
            domains,
            replica_up: AtomicBool::new(true),
            ignorable,
            press,
            activations: Default::default(),
        }
    }

    /// The names of domains the change stream makes active, from now on;
    /// at most `queue` waiting (more are dropped, counted). Once.
    pub fn watch_activations(&self, queue: usize) -> Option<tokio::sync::mpsc::Receiver<Hostname>> {
        let (tx, rx) = tokio::sync::mpsc::channel(queue.max(1));
        self.activations.set(tx).ok().map(|()| rx)
    }

    /// A replica row as the cache holds it.
    fn cached(press: &Press, page: crate::domain::Page) -> CachedPage {
        let mut page = CachedPage::from(page);
        page.encodable = press.encodable(&page);
        page
    }

    /// Bytes of pages held, by representation: `identity` and each coding.
    pub fn page_bytes(&self) -> Vec<(&'static str, u64)> {
        let mut identity = 0u64;
        let mut coded = [0u64; 3];
        for (_, slot) in self.pages.iter() {
            if let Slot::Found(p) = slot {
                identity += p.body.len() as u64;
                for v in &p.variants {
                    coded[v.encoding as usize] += v.body.len() as u64;
                }
            }
        }
        let mut out = vec![("identity", identity)];
        for e in crate::compress::Encoding::ALL {
            out.push((e.as_str(), coded[e as usize]));
        }
        out
    }

    pub fn replica(&self) -> &Arc<dyn Replica> {
        &self.replica
    }

    pub fn pages(&self) -> &PageCache {
        &self.pages
    }

    pub fn replica_up(&self) -> bool {
        self.replica_up.load(Ordering::Relaxed)
    }

    fn set_replica_up(&self, up: bool, why: &str) {
        if self.replica_up.swap(up, Ordering::Relaxed) != up {
            if up {
                info!("replica reachable again");
            } else {
                warn!(
                    error = why,
                    "replica unreachable: serving cached pages as STALE"
                );
            }
        }
    }

    /// The page key for a request path and query, or `None` when the query
    /// holds a parameter that is not ignorable (the origin decides then).
    pub fn page_key(&self, store_id: StoreId, path: &str, query: Option<&str>) -> Option<PageKey> {
        let ignorable = |name: &str| {
            self.ignorable.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == p,
            })
        };
        let all_ignorable = query.is_none_or(|q| {
            q.split('&')
                .filter(|kv| !kv.is_empty())
                .all(|kv| ignorable(kv.split('=').next().unwrap_or(kv)))
        });
        all_ignorable.then(|| PageKey {
            store_id,
            path: path.to_string(),
        })
    }

    pub async fn page(&self, key: PageKey) -> Lookup {
        // Hits (the common case) neither clone the key nor build a loader.
        match self.pages.get(&key).await {
            Some(Slot::Found(page)) if self.replica_up() => {
                self.press.request(&page, &self.pages);
                return Lookup::Hit(page);
            }
            Some(Slot::Found(page)) => return Lookup::Stale(page),
            Some(Slot::Missing) => return Lookup::NotFound,
            None => {}
        }
        let started = Instant::now();
        let replica = self.replica.clone();
        let load_key = key.clone();
        let press = &self.press;
        let loaded = self
            .pages
            .get_or_load(key, async move {
                METRICS.replica_reads.with_label_values(&["page"]).inc();
                replica
                    .page(&load_key)
                    .await
                    .map(|p| p.map(|p| Self::cached(press, p)))
            })
            .await;
        match loaded {
            Ok((Slot::Found(page), true)) => {
                self.set_replica_up(true, "");
                self.press.request(&page, &self.pages);
                Lookup::Miss(page, started.elapsed())
            }
            Ok((Slot::Found(page), false)) if self.replica_up() => Lookup::Hit(page),
            Ok((Slot::Found(page), false)) => Lookup::Stale(page),
            Ok((Slot::Missing, _)) => Lookup::NotFound,
            Err(e) => {
                self.set_replica_up(false, &e.to_string());
                Lookup::Unavailable(e.to_string())
            }
        }
    }

    /// Pushes what the change stream applied into the caches.
    pub async fn apply(&self, outcomes: &[Outcome]) {
        for o in outcomes {
            match o {
                Outcome::Page(p) => {
                    let page = Arc::new(Self::cached(&self.press, p.clone()));
                    self.pages.put_arc(p.key(), page.clone()).await;
                    self.press.request(&page, &self.pages);
                }
                Outcome::PageDeleted(key) => self.pages.remove(key).await,
                Outcome::Domain(d) => {
                    self.domains.put(d.hostname.clone(), d.clone()).await;
                    if d.status == DomainStatus::Active {
                        self.activated(&d.hostname);
                    }
                }
                Outcome::DomainDeleted(host) => self.domains.remove(host).await,
                // Stale here may mean another process on this replica got
                // there first: a copy older than the event is reloaded from
                // the replica, which has the newest. A copy at least as new
                // stays (a connector's re-snapshot must not empty the cache).
                Outcome::StalePage(key, version) => {
                    let current = match self.pages.get(key).await {
                        Some(Slot::Found(p)) => version.is_some_and(|v| p.version >= v),
                        _ => false,
                    };
                    if !current {
                        self.pages.remove(key).await;
                    }
                }
                Outcome::StaleDomain(host) => self.domains.remove(host).await,
                Outcome::Truncated(Table::Pages, _) => self.pages.clear(),
                Outcome::Truncated(Table::Domains, _) => self.domains.clear(),
                Outcome::Incomplete(_) => {}
            }
        }
    }

    fn activated(&self, host: &Hostname) {
        let Some(tx) = self.activations.get() else {
            return;
        };
        if tx.try_send(host.clone()).is_err() {
            METRICS.tls_ahead.with_label_values(&["dropped"]).inc();
        }
    }

    /// Pings the replica every `every`; the result drives HIT/STALE and readiness.
    pub async fn monitor(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let result =
                tokio::time::timeout(every.max(Duration::from_secs(1)), self.replica.ping()).await;
            match result {
                Ok(Ok(())) => self.set_replica_up(true, ""),
                Ok(Err(e)) => self.set_replica_up(false, &e.to_string()),
                Err(_) => self.set_replica_up(false, "ping timed out"),
            }
        }
    }

    /// Marks the replica down after a failed write by the consumer.
    pub fn report_error(&self, e: &ReplicaError) {
        self.set_replica_up(false, &e.to_string());
    }
}

#[async_trait]
impl Directory for Storefront {
    async fn lookup(&self, host: &Hostname) -> Result<Option<DomainRecord>, DirectoryError> {
        match self.domains.get(host).await {
            Some(Slot::Found(d)) => return Ok(Some((*d).clone())),
            Some(Slot::Missing) => return Ok(None),
            None => {}
        }
        let replica = self.replica.clone();
        let load_host = host.clone();
        match self
            .domains
            .get_or_load(host.clone(), async move {
                METRICS.replica_reads.with_label_values(&["domain"]).inc();
                replica.domain(&load_host).await
            })
            .await
        {
            Ok((Slot::Found(d), _)) => Ok(Some((*d).clone())),
            Ok((Slot::Missing, _)) => Ok(None),
            Err(e) => {
                self.set_replica_up(false, &e.to_string());
                Err(DirectoryError(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ignorable_queries_keep_the_page_key() {
        let sf = Storefront::new(
            Arc::new(crate::replica::embedded::EmbeddedReplica::open(&tempfile_path()).unwrap()),
            super::super::slot::page_cache(1 << 20, Duration::from_secs(1)),
            super::super::slot::domain_cache(100, Duration::from_secs(1)),
            vec!["utm_*".into(), "gclid".into(), "fbclid".into()],
            super::super::press::tests::press(false),
        );
        assert!(sf.page_key(StoreId(1), "/", None).is_some());
        assert!(sf
            .page_key(StoreId(1), "/", Some("utm_source=x&utm_medium=y&gclid=1"))
            .is_some());
        assert!(sf.page_key(StoreId(1), "/", Some("")).is_some());
        assert!(sf
            .page_key(StoreId(1), "/", Some("utm_source=x&page=2"))
            .is_none());
        assert!(sf.page_key(StoreId(1), "/", Some("gclidx=1")).is_none());
    }

    fn tempfile_path() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("edgepop-sf-{}.redb", std::process::id()))
    }
}
