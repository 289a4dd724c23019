//! The caches themselves: a moka cache of `Slot`s (a value, or a brief
//! negative entry), single-flight loads, and a push epoch so a load that
//! started before a pushed change cannot put the older row back.

use crate::compress::Encoding;
use crate::domain::{DomainRecord, Hostname, Page, PageKey};
use bytes::Bytes;
use moka::future::Cache;
use moka::Expiry;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A page ready to serve: headers precomputed, body shared without copies.
#[derive(Debug)]
pub struct CachedPage {
    pub key: PageKey,
    pub content_type: String,
    pub body: Bytes,
    pub status: u16,
    pub cache_control: Option<String>,
    pub version: i64,
    /// `"v<version>"`, quotes included.
    pub etag: String,
    /// Its type and size are worth encoding (`[compression]`): responses
    /// vary by Accept-Encoding, and variants are made for it.
    pub encodable: bool,
    /// The encoded bodies kept (each saved enough), in the server's order
    /// of preference. Made after the page arrived: until then, none. They
    /// belong to this version: a new version is a new `CachedPage`.
    pub variants: Vec<Variant>,
    /// Variants were asked for (a hit does not ask again).
    pub pressed: std::sync::atomic::AtomicBool,
}

/// One encoded body of a page.
#[derive(Debug, Clone)]
pub struct Variant {
    pub encoding: Encoding,
    pub body: Bytes,
    /// `"v<version>-<coding>"`: a strong tag per representation.
    pub etag: String,
}

impl CachedPage {
    /// This version with its variants.
    pub fn with_variants(&self, variants: Vec<Variant>) -> CachedPage {
        CachedPage {
            key: self.key.clone(),
            content_type: self.content_type.clone(),
            body: self.body.clone(),
            status: self.status,
            cache_control: self.cache_control.clone(),
            version: self.version,
            etag: self.etag.clone(),
            encodable: self.encodable,
            variants,
            pressed: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// The tag of this version's `encoding` representation.
    pub fn variant_etag(&self, encoding: Encoding) -> String {
        format!("\"v{}-{}\"", self.version, encoding.as_str())
    }
}

impl From<Page> for CachedPage {
    fn from(p: Page) -> Self {
        CachedPage {
            etag: format!("\"v{}\"", p.version),
            key: PageKey {
                store_id: p.store_id,
                path: p.path,
            },
            content_type: p.content_type,
            body: Bytes::from(p.body),
            status: p.status,
            cache_control: p.cache_control,
            version: p.version,
            encodable: false,
            variants: Vec::new(),
            pressed: Default::default(),
        }
    }
}

/// A cache slot: the row, or "the replica has none" (negative, short-lived).
#[derive(Debug)]
pub enum Slot<V> {
    Found(Arc<V>),
    Missing,
}

impl<V> Clone for Slot<V> {
    fn clone(&self) -> Self {
        match self {
            Slot::Found(v) => Slot::Found(v.clone()),
            Slot::Missing => Slot::Missing,
        }
    }
}

struct NegativeTtl(Duration);

impl<K, V> Expiry<K, Slot<V>> for NegativeTtl {
    fn expire_after_create(&self, _: &K, value: &Slot<V>, _: Instant) -> Option<Duration> {
        matches!(value, Slot::Missing).then_some(self.0)
    }

    fn expire_after_update(
        &self,
        key: &K,
        value: &Slot<V>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

/// The cache behind both page and domain lookups.
pub struct SlotCache<K, V> {
    inner: Cache<K, Slot<V>>,
    /// Bumped before every push: a load that overlapped a push may have
    /// written an older row over it, and is then dropped (the replica,
    /// written before any push, has the newest for the next load).
    pushes: Arc<AtomicU64>,
}

impl<K, V> Clone for SlotCache<K, V> {
    fn clone(&self) -> Self {
        SlotCache {
            inner: self.inner.clone(),
            pushes: self.pushes.clone(),
        }
    }
}

impl<K, V> SlotCache<K, V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Send + Sync + 'static,
{
    fn build(
        builder: moka::future::CacheBuilder<K, Slot<V>, Cache<K, Slot<V>>>,
        negative_ttl: Duration,
    ) -> Self {
        SlotCache {
            inner: builder.expire_after(NegativeTtl(negative_ttl)).build(),
            pushes: Arc::new(AtomicU64::new(0)),
        }
    }

    pub async fn get(&self, key: &K) -> Option<Slot<V>> {
        self.inner.get(key).await
    }

    /// The slot for `key`, loading it once however many callers miss at the
    /// same time. `fresh` is true for the caller whose load filled it.
    pub async fn get_or_load<E, F>(&self, key: K, load: F) -> Result<(Slot<V>, bool), Arc<E>>
    where
        F: std::future::Future<Output = Result<Option<V>, E>>,
        E: Send + Sync + 'static,
    {
        let pushes_before = self.pushes.load(Ordering::SeqCst);
        let entry = self
            .inner
            .entry(key.clone())
            .or_try_insert_with(async {
                load.await
                    .map(|v| v.map_or(Slot::Missing, |v| Slot::Found(Arc::new(v))))
            })
            .await?;
        let fresh = entry.is_fresh();
        if fresh && self.pushes.load(Ordering::SeqCst) != pushes_before {
            self.inner.invalidate(&key).await;
        }
        Ok((entry.into_value(), fresh))
    }

    pub async fn put(&self, key: K, value: V) {
        self.put_arc(key, Arc::new(value)).await
    }

    pub async fn put_arc(&self, key: K, value: Arc<V>) {
        self.pushes.fetch_add(1, Ordering::SeqCst);
        self.inner.insert(key, Slot::Found(value)).await;
    }

    /// Every entry held (for the scrape; not on a request's way).
    pub fn iter(&self) -> impl Iterator<Item = (Arc<K>, Slot<V>)> + '_ {
        self.inner.iter()
    }

    /// Replaces the value held for `key` with what `f` makes of it, if it
    /// makes something; nothing when the key holds no value (evicted, or
    /// replaced by a push since: `f` sees the current one and decides).
    pub async fn upgrade(&self, key: K, f: impl FnOnce(&V) -> Option<V>) {
        use moka::ops::compute::Op;
        self.inner
            .entry(key)
            .and_compute_with(|held| {
                let op = match held.as_ref().map(|e| e.value()) {
                    Some(Slot::Found(v)) => match f(v) {
                        Some(new) => Op::Put(Slot::Found(Arc::new(new))),
                        None => Op::Nop,
                    },
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    pub async fn remove(&self, key: &K) {
        self.pushes.fetch_add(1, Ordering::SeqCst);
        self.inner.invalidate(key).await;
    }

    /// Drops every entry (a TRUNCATE at the primary).
    pub fn clear(&self) {
        self.pushes.fetch_add(1, Ordering::SeqCst);
        self.inner.invalidate_all();
    }

    pub fn entries(&self) -> u64 {
        self.inner.entry_count()
    }

    pub fn weight(&self) -> u64 {
        self.inner.weighted_size()
    }

    pub async fn settle(&self) {
        self.inner.run_pending_tasks().await;
    }
}

pub type PageCache = SlotCache<PageKey, CachedPage>;
pub type DomainCache = SlotCache<Hostname, DomainRecord>;

/// Approximate heap bytes of a page slot: what the byte bound counts.
fn page_weight(key: &PageKey, slot: &Slot<CachedPage>) -> u32 {
    let base = 96 + key.path.len();
    let size = match slot {
        Slot::Found(p) => {
            base + 160
                + p.variants
                    .iter()
                    .map(|v| 48 + v.body.len() + v.etag.len())
                    .sum::<usize>()
                + p.body.len()
                + p.content_type.len()
                + p.key.path.len()
                + p.etag.len()
                + p.cache_control.as_ref().map_or(0, String::len)
        }
        Slot::Missing => base,
    };
    size.min(u32::MAX as usize) as u32
}

pub fn page_cache(max_bytes: u64, negative_ttl: Duration) -> PageCache {
    SlotCache::build(
        Cache::builder()
            .max_capacity(max_bytes)
            .weigher(page_weight),
        negative_ttl,
    )
}

pub fn domain_cache(max_entries: u64, negative_ttl: Duration) -> DomainCache {
    SlotCache::build(Cache::builder().max_capacity(max_entries), negative_ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::StoreId;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn page(v: i64, body: &str) -> Page {
        Page {
            store_id: StoreId(1),
            path: "/".into(),
            content_type: "text/html".into(),
            body: body.into(),
            status: 200,
            cache_control: None,
            version: v,
            updated_at: "t".into(),
        }
    }

    #[tokio::test]
    async fn concurrent_misses_load_once_and_negative_entries_expire() {
        let cache = page_cache(1 << 20, Duration::from_millis(100));
        let loads = Arc::new(AtomicUsize::new(0));
        let key = PageKey {
            store_id: StoreId(1),
            path: "/nope".into(),
        };
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, loads, key) = (cache.clone(), loads.clone(), key.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_load(key, async {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, ()>(None::<CachedPage>)
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap().0, Slot::Missing));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(cache.get(&key).await.is_none(), "negative entry expired");
    }

    #[tokio::test]
    async fn push_replaces_and_bound_is_in_bytes() {
        let cache = page_cache(64 * 1024, Duration::from_secs(1));
        cache.put(page(1, "a").key(), page(1, "old").into()).await;
        cache.put(page(2, "b").key(), page(2, "new").into()).await;
        let Some(Slot::Found(p)) = cache.get(&page(1, "").key()).await else {
            panic!()
        };
        assert_eq!(
            (p.version, &p.body[..], p.etag.as_str()),
            (2, &b"new"[..], "\"v2\"")
        );
        for i in 0..100 {
            let mut p = page(1, &"x".repeat(8192));
            p.path = format!("/p{i}");
            cache.put(p.key(), p.into()).await;
        }
        cache.settle().await;
        assert!(cache.weight() <= 64 * 1024, "weight {}", cache.weight());
        assert!(cache.entries() < 10);
    }
}
