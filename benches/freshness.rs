//! Freshness: time from publishing a page change to Kafka (tansu) until the
//! edge serves the new bytes, over N changes; prints p50 / p90 / p99 / max.
//!
//!   cargo bench --bench freshness -- [changes=1000]
//!
//! PAGE_BYTES=N pads each version to N bytes of HTML, so every change is
//! also encoded (br, zstd, gzip: `[compression]`) while it is polled;
//! PAGES_ENCODED=false turns the variants off for a baseline.
//!
//! Uses the test harness (tests/common): broker, edge, Debezium records.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::stream::{domain, page, page_key, Broker, DOMAINS, PAGES};
use common::{client, idle_pool, Edge};
use std::time::{Duration, Instant};

const HOST: &str = "shop.bench";
const STORE: i64 = 1;

#[tokio::main]
async fn main() {
    let changes = support::changes();
    let broker = Broker::start().await;
    // The embedded replica (the default), no access log.
    let sync = broker.sync_topics(&[DOMAINS, PAGES]);
    // PAGES_ENCODED=false: the same run with page variants off (the baseline).
    let encoded = std::env::var("PAGES_ENCODED").unwrap_or_else(|_| "true".into());
    let edge = Edge::start_quiet(&format!(
        "{sync}{}[compression]\npages = {encoded}\n",
        idle_pool()
    ))
    .await;

    let producer = broker.producer();
    let domain = domain(HOST, STORE, "active", 1, false);
    producer.send(DOMAINS, HOST, Some(&domain)).await;
    // One client for the whole run: every poll on a kept-alive connection.
    let request = client().get(edge.url("/")).header("host", HOST);
    let key = page_key(STORE, "/");
    let publish = |version: i64, body: &str| {
        let record = page(STORE, "/", body, version, false);
        let (producer, key) = (&producer, &key);
        async move { producer.send(PAGES, key, Some(&record)).await }
    };
    let limit = Duration::from_secs(30);
    publish(1, "v1").await;
    assert!(
        support::served(&request, "v1", limit).await,
        "edge never served the first page"
    );

    let pad: usize = std::env::var("PAGE_BYTES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let filler = "<p>storefront, product and price</p>".repeat(pad / 36 + 1);
    let mut took = Vec::with_capacity(changes as usize);
    for v in 2..=changes + 1 {
        let body = format!("v{v}{}", &filler[..pad.saturating_sub(8).min(filler.len())]);
        let started = Instant::now();
        publish(v, &body).await;
        assert!(
            support::served(&request, &body, limit).await,
            "change {v} never served"
        );
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "freshness over {} changes (publish -> new bytes served): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        took.len(),
        support::pct(&took, 0.50),
        support::pct(&took, 0.90),
        support::pct(&took, 0.99),
        took.last().unwrap().as_secs_f64() * 1000.0
    );
}
