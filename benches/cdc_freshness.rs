//! Freshness end to end through the real connector: commit of an UPDATE at a
//! PostgreSQL primary → the Debezium record in Kafka → the new bytes served
//! by the edge. Prints p50 / p90 / p99 / max of the whole and of both parts.
//!
//!   bash tests/cdc/install.sh && cargo bench --bench cdc_freshness -- [changes=1000]
//!
//! Uses the test harness (tests/common): primary, connector, broker, edge.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::cdc::{Connector, Primary};
use common::stream::{Broker, DOMAINS, PAGES};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn line(name: &str, mut d: Vec<Duration>) {
    d.sort();
    println!(
        "{name:<28} p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  (n={})",
        support::pct(&d, 0.5),
        support::pct(&d, 0.9),
        support::pct(&d, 0.99),
        d.last().unwrap().as_secs_f64() * 1000.0,
        d.len()
    );
}

#[tokio::main]
async fn main() {
    let changes = support::changes();
    let primary = Primary::start();
    primary.sql(
        "INSERT INTO domains VALUES ('shop.bench', 1, 'active', 'public', 1);
         INSERT INTO pages VALUES (1, '/', 'text/html', 'v1', 200, NULL, 1, now());",
    );
    let broker = Broker::start().await;
    let _connector = Connector::start(&primary, &broker, "cdc", false, "");
    let body = format!(
        "[replica]\nping_interval = \"1s\"\n{}{}",
        broker.sync_topics(&[DOMAINS, PAGES]),
        common::idle_pool()
    );
    let edge = common::Edge::start_initialised(&body).await;

    // When each version's record reached Kafka (seen by a consumer of our own).
    let arrived: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let consumer: StreamConsumer = broker
        .client()
        .set("group.id", "bench-watch")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    consumer.subscribe(&[PAGES]).unwrap();
    let seen = arrived.clone();
    tokio::spawn(async move {
        loop {
            if let Ok(m) = consumer.recv().await {
                let at = Instant::now();
                let v: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap_or(b"null")).unwrap_or_default();
                let payload = v.get("payload").unwrap_or(&v);
                if let Some(version) = payload["after"]["version"].as_i64() {
                    seen.lock().unwrap().insert(version, at);
                }
            }
        }
    });

    let (db, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            primary.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let update = db
        .prepare("UPDATE pages SET body = $1, version = $2, updated_at = now() WHERE store_id = 1 AND path = '/'")
        .await
        .unwrap();
    // Polled by a client of its own for each change (`edge.get` makes one).
    let limit = Duration::from_secs(60);
    let page = || edge.get("shop.bench", "/");
    assert!(
        support::served(&page(), "v1", limit).await,
        "the snapshot never reached the edge"
    );

    let (mut total, mut to_kafka, mut to_edge) = (Vec::new(), Vec::new(), Vec::new());
    for v in 2..=changes + 1 {
        let body = format!("v{v}");
        db.execute(&update, &[&body, &v]).await.unwrap();
        let committed = Instant::now();
        assert!(
            support::served(&page(), &body, limit).await,
            "change {v} never served"
        );
        let done = Instant::now();
        total.push(done - committed);
        // The watcher may see the record a little after the edge served it.
        let seen_at = loop {
            if let Some(at) = arrived.lock().unwrap().get(&v) {
                break Some(*at);
            }
            if done.elapsed() > Duration::from_secs(2) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if let Some(at) = seen_at {
            to_kafka.push(
                at.saturating_duration_since(committed)
                    .min(done - committed),
            );
            to_edge.push(done.saturating_duration_since(at));
        }
    }
    println!("freshness through the real Debezium connector, {changes} changes:");
    line("commit -> new bytes served", total);
    line("commit -> record in Kafka", to_kafka);
    line("record in Kafka -> served", to_edge);
}
