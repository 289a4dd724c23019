//! The real pipeline end to end: SQL at a PostgreSQL primary → the real
//! Debezium PostgreSQL connector → Kafka (tansu) → edgepop → responses.
//! After each step, what the edge serves must equal what the primary holds,
//! row by row, on both replicas (and, for the Postgres replica, its tables).

mod common;

use common::cdc::*;
use common::scenario::DataPath;
use common::stream::{Kind, Pg, DOMAINS, EMBEDDED, PAGES};
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const SEC: fn(u64) -> Duration = Duration::from_secs;
const HEARTBEATS: &str = "__debezium-heartbeat.cdc";
const TRANSACTIONS: &str = "cdc.transaction";

struct Pipeline {
    primary: Primary,
    data: DataPath,
    connector: Connector,
    edge: Edge,
    pg: Option<Pg>,
    /// Every hostname and page key the primary has ever held in this test:
    /// the ones gone must be gone at the edge too.
    hosts: BTreeSet<String>,
    pages: BTreeSet<(i64, String)>,
}

/// Primary (with `seed` applied before the connector starts, so it arrives
/// as a snapshot), broker, connector and an edge on `kind`.
async fn pipeline(kind: Kind, schemas: bool, seed: &str) -> Pipeline {
    let primary = Primary::start();
    primary.sql(seed);
    let data = DataPath::start()
        .await
        .reading(&[DOMAINS, PAGES, HEARTBEATS, TRANSACTIONS]);
    data.broker
        .create_topics(&[HEARTBEATS, TRANSACTIONS], 1)
        .await;
    let connector = Connector::start(
        &primary,
        &data.broker,
        "cdc",
        schemas,
        "heartbeat.interval.ms=500\nprovide.transaction.metadata=true",
    );
    let (edge, pg) = data.edge(kind, "").await;
    Pipeline {
        primary,
        data,
        connector,
        edge,
        pg,
        hosts: BTreeSet::new(),
        pages: BTreeSet::new(),
    }
}

const SEED: &str = "
INSERT INTO domains VALUES ('shop.test', 7, 'active', 'public', 1), ('other.test', 8, 'active', 'public', 1);
INSERT INTO pages (store_id, path, content_type, body, cache_control, version, updated_at) VALUES
  (7, '/', 'text/html; charset=utf-8', '<h1>home v1</h1>', 'public, max-age=60', 1, now()),
  (7, '/a', 'text/html; charset=utf-8', 'a v1', NULL, 1, now()),
  (8, '/', 'application/json', '{\"other\": 1}', NULL, 1, now());
";

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

impl Pipeline {
    /// Differences between the primary and what the edge serves (empty when
    /// equal): every page of an active domain, every domain, and every key
    /// the primary held before and no longer holds.
    async fn differences(&mut self) -> Vec<String> {
        let domains = self
            .primary
            .rows("SELECT hostname, store_id, status FROM domains");
        let pages = self.primary.rows(
            "SELECT store_id, path, content_type, body, status, cache_control, version FROM pages",
        );
        self.hosts
            .extend(domains.iter().map(|d| text(d, "hostname")));
        self.pages.extend(
            pages
                .iter()
                .map(|p| (p["store_id"].as_i64().unwrap(), text(p, "path"))),
        );
        let mut diffs = Vec::new();
        for host in &self.hosts {
            let status = self.edge.read(host, "/").await.status;
            let want = match domains.iter().find(|d| text(d, "hostname") == *host) {
                None => Some(421),
                Some(d) if text(d, "status") == "suspended" => Some(403),
                Some(_) => None,
            };
            let ok = match want {
                Some(w) => status == w,
                None => status != 421 && status != 403,
            };
            if !ok {
                diffs.push(format!("{host}: {status}, primary wants {want:?}"));
            }
        }
        for (store, path) in &self.pages {
            // A page is reachable through an active domain of its store.
            let Some(host) = domains
                .iter()
                .find(|d| d["store_id"].as_i64() == Some(*store) && text(d, "status") == "active")
                .map(|d| text(d, "hostname"))
            else {
                continue;
            };
            let got = self.edge.read(&host, path).await;
            let row = pages
                .iter()
                .find(|p| p["store_id"].as_i64() == Some(*store) && text(p, "path") == *path);
            match row {
                None if got.cache != "BYPASS" => diffs.push(format!(
                    "{host}{path}: deleted at the primary, still served by the edge ({} {})",
                    got.etag, got.cache
                )),
                Some(p) => {
                    let want = (
                        p["status"].as_u64().unwrap() as u16,
                        format!("\"v{}\"", p["version"]),
                        text(p, "content_type"),
                        text(p, "cache_control"),
                    );
                    let edge = (
                        got.status,
                        got.etag.clone(),
                        got.content_type.clone(),
                        got.cache_control.clone(),
                    );
                    let same = edge == want
                        && got.body == text(p, "body")
                        && (got.cache == "HIT" || got.cache == "MISS");
                    if !same {
                        diffs.push(format!(
                            "{host}{path}: edge {edge:?} {} body {} bytes, primary {want:?} body {} bytes",
                            got.cache,
                            got.body.len(),
                            text(p, "body").len()
                        ));
                    }
                }
                None => {}
            }
        }
        if let Some(pg) = &self.pg {
            diffs.extend(replica_tables_differ(&self.primary, pg));
        }
        diffs
    }

    /// Waits until the edge serves what the primary holds.
    async fn converges(&mut self, step: &str) {
        let deadline = std::time::Instant::now() + SEC(60);
        let mut diffs = Vec::new();
        while std::time::Instant::now() < deadline {
            diffs = self.differences().await;
            if diffs.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "{step}: the edge never matched the primary:\n{}\nstatus: {}\nconnector:\n{}",
            diffs.join("\n"),
            self.edge.status().await,
            self.connector.log()
        );
    }
}

/// The Postgres replica's rows against the primary's (the columns both keep).
fn replica_tables_differ(primary: &Primary, pg: &Pg) -> Vec<String> {
    let q = [
        "SELECT hostname, store_id, status, tier, version FROM domains ORDER BY hostname",
        "SELECT store_id, path, content_type, md5(body) AS body, status, cache_control, version FROM pages ORDER BY store_id, path",
    ];
    let mut diffs = Vec::new();
    for query in q {
        let (want, got) = (
            Value::from(primary.rows(query)),
            Value::from(pg.rows(query)),
        );
        if want != got {
            diffs.push(format!(
                "replica table differs: primary {want} replica {got}"
            ));
        }
    }
    diffs
}

/// A body large enough to be TOASTed out of line (~22 kB of hex).
const BIG_BODY: &str = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 700) i)";

async fn sql_changes_are_served_as_the_primary_holds_them(kind: Kind, schemas: bool) {
    let mut p = pipeline(kind, schemas, SEED).await;
    p.converges("snapshot").await;

    // REPLICA IDENTITY DEFAULT: deletes carry the key, zero-filled.
    p.primary.sql(
        "INSERT INTO pages VALUES (7, '/new', 'text/html', 'new v1', 200, NULL, 1, now());
         UPDATE pages SET body = '<h1>home v2</h1>', version = 2, updated_at = now() WHERE store_id = 7 AND path = '/';
         DELETE FROM pages WHERE store_id = 7 AND path = '/a';",
    );
    p.converges("insert, update, key-only delete of pages")
        .await;
    assert_eq!(
        p.edge.page("/a").await.cache,
        "BYPASS",
        "the deleted page goes to the origin"
    );

    // Deleted, then inserted again as a new row whose version starts over.
    p.primary
        .sql("INSERT INTO pages VALUES (7, '/a', 'text/plain', 'a again', 200, NULL, 1, now())");
    p.converges("re-insert after delete").await;

    // A large TOASTed body, then an update of its version only: Debezium
    // sends the body as __debezium_unavailable_value.
    p.primary.sql(&format!(
        "INSERT INTO pages VALUES (7, '/big', 'text/plain', {BIG_BODY}, 200, NULL, 1, now())"
    ));
    p.converges("large body").await;
    p.primary
        .sql("UPDATE pages SET version = 2 WHERE store_id = 7 AND path = '/big'");
    p.converges("version-only update of a TOASTed row").await;

    // A domain suspended, then deleted (key only).
    p.primary
        .sql("UPDATE domains SET status = 'suspended', version = 2 WHERE hostname = 'other.test'");
    p.converges("domain suspended").await;
    p.primary
        .sql("DELETE FROM domains WHERE hostname = 'other.test'");
    p.converges("domain deleted").await;

    // REPLICA IDENTITY FULL: deletes carry the whole row.
    p.primary.sql(
        "ALTER TABLE pages REPLICA IDENTITY FULL; ALTER TABLE domains REPLICA IDENTITY FULL;
         INSERT INTO domains VALUES ('third.test', 9, 'active', 'public', 1);
         INSERT INTO pages VALUES (9, '/', 'text/html', 'third', 200, 'no-store', 1, now());
         UPDATE pages SET body = 'new v2', version = 2 WHERE store_id = 7 AND path = '/new';",
    );
    p.converges("identity full: inserts and update").await;
    p.primary.sql(
        "DELETE FROM pages WHERE store_id = 7 AND path = '/new';
         DELETE FROM domains WHERE hostname = 'third.test';",
    );
    p.converges("identity full: deletes").await;

    // TRUNCATE: every page goes; a page written after it is served.
    p.primary.sql("TRUNCATE pages");
    p.converges("truncate").await;
    p.primary.sql(
        "INSERT INTO pages VALUES (7, '/', 'text/html', 'after truncate', 200, NULL, 1, now())",
    );
    p.converges("insert after truncate").await;

    assert!(
        p.edge
            .metric("edgepop_sync_events_total{result=\"truncated\"}")
            .await
            >= 1.0
    );
    assert!(
        p.edge
            .metric("edgepop_sync_skipped_total{kind=\"transaction\"}")
            .await
            >= 2.0
    );
    assert!(
        eventually(SEC(10), || async {
            p.edge
                .metric("edgepop_sync_skipped_total{kind=\"heartbeat\"}")
                .await
                >= 1.0
        })
        .await,
        "heartbeats counted"
    );
    assert_eq!(
        p.edge
            .metric("edgepop_sync_events_total{result=\"malformed\"}")
            .await,
        0.0,
        "every real record was understood: {}",
        p.edge.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_changes_are_served_as_the_primary_holds_them_embedded() {
    sql_changes_are_served_as_the_primary_holds_them(Kind::Embedded, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_changes_are_served_as_the_primary_holds_them_postgres() {
    sql_changes_are_served_as_the_primary_holds_them(Kind::Postgres, false).await
}

/// Updates `n` pages of store 7, one transaction each, spread over time.
fn burst(primary: &Primary, n: u32, tag: &str) -> std::thread::JoinHandle<()> {
    let port = primary.port;
    let sql = format!(
        "DO $$ BEGIN FOR i IN 1..{n} LOOP
           UPDATE pages SET body = '{tag} ' || i, version = version + 1, updated_at = now()
             WHERE store_id = 7 AND path = '/p' || (i % 20);
           COMMIT; PERFORM pg_sleep(0.005);
         END LOOP; END $$"
    );
    std::thread::spawn(move || {
        psql(port, "postgres", &sql);
    })
}

async fn pipeline_restarts_lose_nothing(kind: Kind, schemas: bool) {
    let seed = "INSERT INTO domains VALUES ('shop.test', 7, 'active', 'public', 1);
        INSERT INTO pages SELECT 7, '/p' || i, 'text/html', 'p' || i, 200, NULL, 1, now()
          FROM generate_series(0, 19) i;";
    let mut p = pipeline(kind, schemas, seed).await;
    p.converges("snapshot").await;

    // The connector killed mid-stream (no offset flush), then restarted:
    // it resumes from its last flushed position and may send some again.
    let writer = burst(&p.primary, 300, "connector-kill");
    tokio::time::sleep(Duration::from_millis(700)).await;
    p.connector.restart();
    writer.join().unwrap();
    p.converges("connector killed and restarted mid-stream")
        .await;

    // The connector started without its offsets: a new snapshot, `op: r`
    // for every row the edge already holds. Nothing changes, and the
    // cached pages stay cached.
    for i in 0..20 {
        p.edge.page(&format!("/p{i}")).await;
    }
    let stale_before = p
        .edge
        .metric("edgepop_sync_events_total{result=\"stale\"}")
        .await;
    p.connector.restart_fresh();
    assert!(
        eventually(SEC(60), || async {
            p.edge
                .metric("edgepop_sync_events_total{result=\"stale\"}")
                .await
                >= stale_before + 21.0
        })
        .await,
        "the re-snapshot reached the edge: {}",
        p.connector.log()
    );
    p.converges("re-snapshot").await;
    assert_eq!(
        p.edge.page("/p3").await.cache,
        "HIT",
        "a re-snapshot keeps the cache"
    );

    // edgepop killed mid-stream and started again.
    let writer = burst(&p.primary, 300, "edge-kill");
    tokio::time::sleep(Duration::from_millis(700)).await;
    p.edge.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let edge = std::mem::replace(&mut p.edge, Edge::prepare(""));
    p.edge = edge.launch(false).await;
    writer.join().unwrap();
    p.converges("edge killed and restarted mid-stream").await;

    // The broker frozen for 30 s while the primary changes: the edge goes
    // on serving what it has, then catches up.
    p.data.broker.pause();
    p.primary.sql(
        "UPDATE pages SET body = 'during outage', version = version + 1 WHERE path = '/p1';
         DELETE FROM pages WHERE path = '/p2';
         INSERT INTO pages VALUES (7, '/fresh', 'text/html', 'fresh', 200, NULL, 1, now());",
    );
    let writer = burst(&p.primary, 100, "outage");
    for _ in 0..30 {
        let status = p.edge.page("/p5").await.status;
        assert_eq!(status, 200, "served while the broker is away");
        tokio::time::sleep(SEC(1)).await;
    }
    p.data.broker.resume();
    writer.join().unwrap();
    p.converges("broker paused for 30 s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipeline_restarts_lose_nothing_embedded() {
    pipeline_restarts_lose_nothing(Kind::Embedded, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipeline_restarts_lose_nothing_postgres() {
    pipeline_restarts_lose_nothing(Kind::Postgres, true).await
}

/// The records the real connector sent (captured by `tests/cdc/smoke.sh`,
/// scenario in `tests/fixtures/debezium/README.md`), replayed in order
/// through `edgepop replica load`: every record is understood, and the
/// replica ends as the primary did. No JVM needed: this pins the format.
async fn real_records_replayed(fixture: &str, hosts: &[&str], skipped: usize) {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let edge = Edge::prepare(&format!(
        "{EMBEDDED}{}",
        pool("public", &[(origin.addr, 1)])
    ));
    let path = format!(
        "{}/tests/fixtures/debezium/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = edge.command(&["replica", "load", &path]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!stderr.contains("malformed"), "{stderr}");
    assert!(
        stdout.contains(&format!(", {skipped} skipped")),
        "heartbeats and transaction markers skipped: {stdout}"
    );
    let edge = edge.launch(false).await;
    for host in hosts {
        let status = edge.read(host, "/").await.status;
        assert!(status != 421 && status != 403, "{host}: {status}");
    }
    // Deleted with REPLICA IDENTITY DEFAULT (c) and FULL (d).
    for host in ["c.example", "d.example"] {
        let status = edge.read(host, "/").await.status;
        assert_eq!(status, 421, "{host} was deleted at the primary");
    }
    // TRUNCATE emptied `pages`; the one page written after it is served
    // (with the status its row holds).
    assert_eq!(
        edge.read("a.example", "/big").await.cache,
        "BYPASS",
        "truncated"
    );
    let g = edge.read("e.example", "/").await;
    assert_eq!(
        (g.etag.as_str(), g.status, g.body.as_str()),
        ("\"v1\"", 404, "e")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_records_replayed_schemas_on() {
    real_records_replayed(
        "schemas-on.jsonl",
        &["a.example", "b.example", "e.example"],
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_records_replayed_schemas_off_with_heartbeats_restarts_and_resnapshot() {
    real_records_replayed(
        "schemas-off-extra.jsonl",
        &["a.example", "b.example", "e.example", "f.example"],
        86,
    )
    .await;
}

/// Debezium creates a table's topic with its first record: with `pages`
/// still empty there is no pages topic. The edge reads `domains` meanwhile
/// and takes the pages topic on once the connector has made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_the_connector_has_not_made_yet_is_taken_on_later() {
    let primary = Primary::start();
    primary.sql("INSERT INTO domains VALUES ('shop.test', 7, 'active', 'public', 1)");
    // Prefix `shop`: the harness made no topic for it, the connector will.
    let data = DataPath::start()
        .await
        .reading(&["shop.public.domains", "shop.public.pages"]);
    let _connector = Connector::start(&primary, &data.broker, "shop", false, "");
    let edge = Edge::start(&data.config(EMBEDDED, "")).await;
    assert!(
        eventually(SEC(60), || async { edge.page("/").await.status != 421 }).await,
        "domains applied while the pages topic does not exist: {}",
        edge.stderr()
    );
    primary
        .sql("INSERT INTO pages VALUES (7, '/', 'text/html', 'first page', 200, NULL, 1, now())");
    assert!(
        eventually(SEC(60), || async { edge.page("/").await.etag == "\"v1\"" }).await,
        "the page arrived once its topic existed: {}",
        edge.stderr()
    );
}
