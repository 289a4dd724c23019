//! One data-path scenario, for the change-stream tests (`tests/sync.rs`)
//! and the real-connector tests (`tests/cdc.rs`): a broker, an origin as
//! the public pool, edges on a replica kind reading the broker; the shop's
//! records published, and what an edge serves read back.
#![allow(dead_code)]

use super::stream::{domain, page, page_delete, page_key, Broker, Kind, Pg, Producer};
use super::stream::{DOMAINS, PAGES};
use super::{eventually, pool, Edge, Origin};
use std::time::Duration;

/// The shop every scenario publishes: its hostname and its store.
pub const SHOP: &str = "shop.test";
pub const STORE: i64 = 7;

pub struct DataPath {
    /// First field, so dropped first: while the broker still runs.
    pub producer: Producer,
    pub broker: Broker,
    pub origin: Origin,
    /// The `[sync]` section of the edges.
    sync: String,
}

impl DataPath {
    /// A plain broker and an origin answering after 1 ms.
    pub async fn start() -> DataPath {
        let broker = Broker::start().await;
        DataPath::on(broker, Origin::start(Duration::from_millis(1)).await)
    }

    /// Edges read `broker` (with its `sync_section`), `origin` is their pool.
    pub fn on(broker: Broker, origin: Origin) -> DataPath {
        DataPath {
            producer: broker.producer(),
            sync: broker.sync_section(),
            broker,
            origin,
        }
    }

    /// The edges read `topics` instead, with the other `[sync]` defaults.
    pub fn reading(mut self, topics: &[&str]) -> DataPath {
        self.sync = self.broker.sync_topics(topics);
        self
    }

    /// An edge's config: the `replica` section, `[sync]`, `extra`, the pool.
    pub fn config(&self, replica: &str, extra: &str) -> String {
        format!(
            "{replica}{}{extra}\n{}",
            self.sync,
            pool("public", &[(self.origin.addr, 1)])
        )
    }

    /// A running edge on a new replica of `kind`, with `extra` config; the
    /// Postgres replica's database comes with it.
    pub async fn edge(&self, kind: Kind, extra: &str) -> (Edge, Option<Pg>) {
        let (replica, pg) = kind.replica();
        let edge = Edge::start_initialised(&self.config(&replica, extra)).await;
        (edge, pg)
    }

    /// The shop's domain, active.
    pub async fn publish_shop(&self) {
        self.publish_domain("active", 1, true).await;
    }

    pub async fn publish_domain(&self, status: &str, version: i64, schema: bool) {
        let key = format!("{{\"hostname\":\"{SHOP}\"}}");
        let record = domain(SHOP, STORE, status, version, schema);
        self.producer.send(DOMAINS, &key, Some(&record)).await;
    }

    /// A page of the shop, created or updated to `version`.
    pub async fn publish_page(&self, path: &str, body: &str, version: i64, schema: bool) {
        let record = page(STORE, path, body, version, schema);
        self.producer
            .send(PAGES, &page_key(STORE, path), Some(&record))
            .await;
    }

    /// `publish_page` without waiting for the broker (schema off).
    pub fn queue_page(
        &self,
        path: &str,
        body: &str,
        version: i64,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let record = page(STORE, path, body, version, false);
        self.producer.queue(PAGES, &page_key(STORE, path), &record)
    }

    /// A key-only delete of a page of the shop (schema off).
    pub async fn delete_page(&self, path: &str) {
        let record = page_delete(STORE, path, false);
        self.producer
            .send(PAGES, &page_key(STORE, path), Some(&record))
            .await;
    }
}

/// One response of the edge: its status, the headers the tests read, its
/// body (headers absent are empty).
pub struct Got {
    pub status: u16,
    pub etag: String,
    /// `x-edge-cache`: HIT, MISS, STALE or BYPASS (the origin answered).
    pub cache: String,
    pub content_type: String,
    pub cache_control: String,
    pub body: String,
}

impl Got {
    pub async fn of(r: reqwest::Response) -> Got {
        let h = |n: &str| {
            r.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let (status, etag, cache, content_type, cache_control) = (
            r.status().as_u16(),
            h("etag"),
            h("x-edge-cache"),
            h("content-type"),
            h("cache-control"),
        );
        Got {
            status,
            etag,
            cache,
            content_type,
            cache_control,
            body: r.text().await.unwrap(),
        }
    }
}

impl Edge {
    /// What the edge answers to a GET of `path` on `host`.
    pub async fn read(&self, host: &str, path: &str) -> Got {
        Got::of(self.get(host, path).send().await.unwrap()).await
    }

    /// `read` on the shop.
    pub async fn page(&self, path: &str) -> Got {
        self.read(SHOP, path).await
    }

    /// Waits until the shop's `path` is served with `etag` (true), or 10 s.
    pub async fn until_etag(&self, path: &str, etag: &str) -> bool {
        eventually(Duration::from_secs(10), || async {
            self.page(path).await.etag == etag
        })
        .await
    }
}
