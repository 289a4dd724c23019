//! Encoded variants of pages (br, zstd, gzip), made once per version off
//! the request path: a bounded queue of jobs, a few threads of their own at
//! the idle CPU priority (encoding at br 11 never takes a core from
//! requests or the change stream), and the variants put in beside the
//! identity body only if that version is still the one held (a newer
//! version pushed meanwhile wins; no variant of an older body is served).

use super::slot::{CachedPage, PageCache, Slot, Variant};
use crate::compress::{encode, Encoding, Levels, Worth};
use crate::metrics::METRICS;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::warn;

/// What `[compression]` says of pages.
#[derive(Debug, Clone)]
pub struct PressSettings {
    pub enabled: bool,
    /// Which pages: as for proxied answers.
    pub worth: Worth,
    /// A variant is kept only if it is at most (1 - this) of the identity.
    pub min_saving: f64,
    /// The server's order of preference, and the codings made.
    pub prefer: Vec<Encoding>,
    pub levels: Levels,
    /// Threads encoding at once, and jobs waiting for them.
    pub workers: usize,
    pub queue: usize,
}

/// One page version to encode, and the cache to put its variants in.
struct Job {
    page: Arc<CachedPage>,
    pages: PageCache,
}

pub struct Press {
    settings: Arc<PressSettings>,
    jobs: SyncSender<Job>,
}

impl Press {
    pub fn new(settings: PressSettings) -> Self {
        let settings = Arc::new(settings);
        let (jobs, queue) = sync_channel(settings.queue.max(1));
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..settings.workers.max(1) {
            let (queue, settings) = (queue.clone(), settings.clone());
            let started = std::thread::Builder::new()
                .name(format!("edgepop-press-{n}"))
                .spawn(move || work(&queue, &settings));
            if let Err(e) = started {
                warn!(error = %e, "page encoder thread not started");
            }
        }
        Press { settings, jobs }
    }

    /// Whether a page of this type, size and status gets variants.
    pub fn encodable(&self, page: &CachedPage) -> bool {
        let worth = &self.settings.worth;
        self.settings.enabled
            && worth.allows(page.status, &page.content_type, Some(page.body.len()))
    }

    /// Asks for `page`'s variants (once per version), to be put into
    /// `pages` when made. A full queue drops the job (counted): the page
    /// is served as identity and asked again on its next hit.
    pub fn request(&self, page: &Arc<CachedPage>, pages: &PageCache) {
        if !page.encodable || !page.variants.is_empty() || page.pressed.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let job = Job {
            page: page.clone(),
            pages: pages.clone(),
        };
        if self.jobs.try_send(job).is_err() {
            page.pressed.store(false, Ordering::Release);
            METRICS
                .page_compression
                .with_label_values(&["dropped"])
                .inc();
        }
    }
}

/// An encoder thread: lowest priority, one job at a time.
fn work(queue: &Mutex<Receiver<Job>>, settings: &PressSettings) {
    // SCHED_IDLE: this thread runs only on a core nothing else wants, and
    // yields it at once to a request or the change stream (nice 19 still
    // cost 2-3 ms at p90 of freshness: benches/freshness.rs, PAGE_BYTES).
    // A fully busy node serves identity until it has a moment.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread; `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        // SAFETY: as above, for the fallback (who = 0: this thread).
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    }
    loop {
        let next = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        let Ok(Job { page, pages }) = next else {
            return; // the press is gone
        };
        // Replaced, removed or evicted while it waited: not worth encoding.
        // moka's future cache needs no runtime: this thread waits on it.
        let held = futures::executor::block_on(pages.get(&page.key));
        if !matches!(held, Some(Slot::Found(p)) if Arc::ptr_eq(&p, &page)) {
            METRICS
                .page_compression
                .with_label_values(&["superseded"])
                .inc();
            continue;
        }
        let started = Instant::now();
        let variants = match variants(&page, settings) {
            Ok(v) => v,
            Err(e) => {
                METRICS
                    .page_compression
                    .with_label_values(&["failed"])
                    .inc();
                warn!(path = %page.key.path, error = %e, "page not encoded; served as identity");
                continue;
            }
        };
        METRICS
            .page_compression_seconds
            .observe(started.elapsed().as_secs_f64());
        if variants.is_empty() {
            METRICS
                .page_compression
                .with_label_values(&["none_kept"])
                .inc();
            continue;
        }
        METRICS.page_compression.with_label_values(&["made"]).inc();
        let version = page.version;
        futures::executor::block_on(pages.upgrade(page.key.clone(), |held| {
            (held.version == version && held.variants.is_empty())
                .then(|| held.with_variants(variants))
        }));
    }
}

/// Every coding of `prefer` that saves enough, in that order.
fn variants(page: &CachedPage, settings: &PressSettings) -> std::io::Result<Vec<Variant>> {
    let limit = (page.body.len() as f64 * (1.0 - settings.min_saving)) as usize;
    let mut out = Vec::new();
    for &encoding in &settings.prefer {
        let body = encode(encoding, &page.body, &settings.levels)?;
        if body.len() <= limit {
            out.push(Variant {
                encoding,
                body: body.into(),
                etag: page.variant_etag(encoding),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::slot::page_cache;
    use super::*;
    use crate::domain::{Page, StoreId};
    use std::time::Duration;

    pub fn press(enabled: bool) -> Press {
        Press::new(PressSettings {
            enabled,
            worth: Worth {
                types: vec!["text/*".into()],
                min_bytes: 1024,
            },
            min_saving: 0.1,
            prefer: vec![Encoding::Br, Encoding::Gzip],
            levels: Levels {
                br: 5,
                zstd: 3,
                gzip: 6,
            },
            workers: 1,
            queue: 4,
        })
    }

    fn page(version: i64, body: String) -> CachedPage {
        CachedPage::from(Page {
            store_id: StoreId(1),
            path: "/".into(),
            content_type: "text/html".into(),
            body,
            status: 200,
            cache_control: None,
            version,
            updated_at: "t".into(),
        })
    }

    async fn held(pages: &PageCache, key: &crate::domain::PageKey) -> Arc<CachedPage> {
        match pages.get(key).await {
            Some(Slot::Found(p)) => p,
            _ => panic!("page gone"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn variants_join_their_version_and_never_a_newer_one() {
        let press = press(true);
        let pages = page_cache(1 << 22, Duration::from_secs(1));
        let mut v1 = page(1, "<p>storefront</p>".repeat(200));
        v1.encodable = press.encodable(&v1);
        assert!(v1.encodable);
        let v1 = Arc::new(v1);
        let key = v1.key.clone();
        pages.put_arc(key.clone(), v1.clone()).await;
        press.request(&v1, &pages);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while held(&pages, &key).await.variants.is_empty() {
            assert!(std::time::Instant::now() < deadline, "no variants");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = held(&pages, &key).await;
        let codings: Vec<_> = got.variants.iter().map(|v| v.encoding).collect();
        assert_eq!(
            codings,
            [Encoding::Br, Encoding::Gzip],
            "in the order preferred"
        );
        assert_eq!(got.variants[0].etag, "\"v1-br\"");

        // A newer version pushed: v1's variants are not put on it.
        let v2 = Arc::new(page(2, "<p>new</p>".repeat(300)));
        pages.put_arc(key.clone(), v2).await;
        pages
            .upgrade(key.clone(), |p| {
                (p.version == 1).then(|| p.with_variants(got.variants.clone()))
            })
            .await;
        let now = held(&pages, &key).await;
        assert_eq!((now.version, now.variants.len()), (2, 0));

        // Too small, or off: no variants asked for.
        let small = page(3, "tiny".into());
        assert!(!press.encodable(&small));
        assert!(!super::tests::press(false).encodable(&v1));
    }
}
