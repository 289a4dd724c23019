//! The real pipeline end to end: SQL at a PostgreSQL primary → the real
//! Debezium PostgreSQL connector → Kafka (tansu) → edgepop → responses.
//! After each step, what the edge serves must equal what the primary holds,
//! row by row, on both replicas (and, for the Postgres replica, its tables).

mod common;

use common::cdc::*;
use common::stream::{Broker, Kind, Pg, DOMAINS, PAGES};
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const SEC: fn(u64) -> Duration = Duration::from_secs;
const HEARTBEATS: &str = "__debezium-heartbeat.cdc";
const TRANSACTIONS: &str = "cdc.transaction";

struct Pipeline {
    primary: Primary,
    broker: Broker,
    connector: Connector,
    edge: Edge,
    pg: Option<Pg>,
    _origin: Origin,
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
    let broker = Broker::start().await;
    broker.create_topics(&[HEARTBEATS, TRANSACTIONS], 1).await;
    let connector = Connector::start(
        &primary,
        &broker,
        "cdc",
        schemas,
        "heartbeat.interval.ms=500\nprovide.transaction.metadata=true",
    );
    let origin = Origin::start(Duration::from_millis(1)).await;
    let (replica, pg) = kind.replica();
    let body = format!(
        "{replica}[sync]\nbrokers = \"{}\"\ntopics = [\"{DOMAINS}\", \"{PAGES}\", \"{HEARTBEATS}\", \"{TRANSACTIONS}\"]\n\n{}",
        broker.addr,
        pool("public", &[(origin.addr, 1)])
    );
    let edge = Edge::prepare(&body);
    edge.command(&["replica", "init"]);
    let edge = edge.launch(false).await;
    Pipeline {
        primary,
        broker,
        connector,
        edge,
        pg,
        _origin: origin,
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
            let status = self
                .edge
                .get(host, "/")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
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
            let r = self.edge.get(&host, path).send().await.unwrap();
            let h = |n: &str| {
                r.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            let got = (
                r.status().as_u16(),
                h("etag"),
                h("x-edge-cache"),
                h("content-type"),
                h("cache-control"),
            );
            let body = r.text().await.unwrap();
            let row = pages
                .iter()
                .find(|p| p["store_id"].as_i64() == Some(*store) && text(p, "path") == *path);
            match row {
                None if got.2 != "BYPASS" => diffs.push(format!(
                    "{host}{path}: deleted at the primary, still served by the edge ({} {})",
                    got.1, got.2
                )),
                Some(p) => {
                    let want = (
                        p["status"].as_u64().unwrap() as u16,
                        format!("\"v{}\"", p["version"]),
                        text(p, "content_type"),
                        text(p, "cache_control"),
                    );
                    let same = (got.0, got.1.clone(), got.3.clone(), got.4.clone()) == want
                        && body == text(p, "body")
                        && (got.2 == "HIT" || got.2 == "MISS");
                    if !same {
                        diffs.push(format!(
                            "{host}{path}: edge {:?} body {} bytes, primary {want:?} body {} bytes",
                            got,
                            body.len(),
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

    async fn metric(&self, sample: &str) -> f64 {
        self.edge.metric(sample).await
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
        let want = primary.sql(&format!(
            "SELECT coalesce(json_agg(r), '[]') FROM ({query}) r"
        ));
        let got = pg.sql(&format!(
            "SELECT coalesce(json_agg(r), '[]') FROM ({query}) r"
        ));
        let (want, got): (Value, Value) = (
            serde_json::from_str(&want).unwrap(),
            serde_json::from_str(&got).unwrap(),
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
    let r = p.edge.get("shop.test", "/a").send().await.unwrap();
    assert_eq!(
        r.headers()["x-edge-cache"],
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
        p.metric("edgepop_sync_events_total{result=\"truncated\"}")
            .await
            >= 1.0
    );
    assert!(
        p.metric("edgepop_sync_skipped_total{kind=\"transaction\"}")
            .await
            >= 2.0
    );
    assert!(
        eventually(SEC(10), || async {
            p.metric("edgepop_sync_skipped_total{kind=\"heartbeat\"}")
                .await
                >= 1.0
        })
        .await,
        "heartbeats counted"
    );
    assert_eq!(
        p.metric("edgepop_sync_events_total{result=\"malformed\"}")
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
        let out = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", &sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        p.edge
            .get("shop.test", &format!("/p{i}"))
            .send()
            .await
            .unwrap();
    }
    let stale_before = p
        .metric("edgepop_sync_events_total{result=\"stale\"}")
        .await;
    p.connector.restart_fresh();
    assert!(
        eventually(SEC(60), || async {
            p.metric("edgepop_sync_events_total{result=\"stale\"}")
                .await
                >= stale_before + 21.0
        })
        .await,
        "the re-snapshot reached the edge: {}",
        p.connector.log()
    );
    p.converges("re-snapshot").await;
    let r = p.edge.get("shop.test", "/p3").send().await.unwrap();
    assert_eq!(
        r.headers()["x-edge-cache"],
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
    p.broker.pause();
    p.primary.sql(
        "UPDATE pages SET body = 'during outage', version = version + 1 WHERE path = '/p1';
         DELETE FROM pages WHERE path = '/p2';
         INSERT INTO pages VALUES (7, '/fresh', 'text/html', 'fresh', 200, NULL, 1, now());",
    );
    let writer = burst(&p.primary, 100, "outage");
    for _ in 0..30 {
        let r = p.edge.get("shop.test", "/p5").send().await.unwrap();
        assert_eq!(r.status(), 200, "served while the broker is away");
        tokio::time::sleep(SEC(1)).await;
    }
    p.broker.resume();
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
        "[replica]\nping_interval = \"200ms\"\n{}",
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
        let r = edge.get(host, "/").send().await.unwrap();
        assert!(
            r.status() != 421 && r.status() != 403,
            "{host}: {}",
            r.status()
        );
    }
    // Deleted with REPLICA IDENTITY DEFAULT (c) and FULL (d).
    for host in ["c.example", "d.example"] {
        let r = edge.get(host, "/").send().await.unwrap();
        assert_eq!(r.status(), 421, "{host} was deleted at the primary");
    }
    // TRUNCATE emptied `pages`; the one page written after it is served
    // (with the status its row holds).
    let r = edge.get("a.example", "/big").send().await.unwrap();
    assert_eq!(r.headers()["x-edge-cache"], "BYPASS", "truncated");
    let r = edge.get("e.example", "/").send().await.unwrap();
    let got = (
        r.headers()["etag"].to_str().unwrap().to_string(),
        r.status().as_u16(),
    );
    assert_eq!(
        (got.0.as_str(), got.1, r.text().await.unwrap().as_str()),
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
    let broker = Broker::start().await;
    // Prefix `shop`: the harness made no topic for it, the connector will.
    let _connector = Connector::start(&primary, &broker, "shop", false, "");
    let origin = Origin::start(Duration::from_millis(1)).await;
    let edge = Edge::start(&format!(
        "[replica]\nping_interval = \"200ms\"\n[sync]\nbrokers = \"{}\"\n\
         topics = [\"shop.public.domains\", \"shop.public.pages\"]\n\n{}",
        broker.addr,
        pool("public", &[(origin.addr, 1)])
    ))
    .await;
    assert!(
        eventually(SEC(60), || async {
            edge.get("shop.test", "/").send().await.unwrap().status() != 421
        })
        .await,
        "domains applied while the pages topic does not exist: {}",
        edge.stderr()
    );
    primary
        .sql("INSERT INTO pages VALUES (7, '/', 'text/html', 'first page', 200, NULL, 1, now())");
    assert!(
        eventually(SEC(60), || async {
            let r = edge.get("shop.test", "/").send().await.unwrap();
            r.headers().get("etag").is_some_and(|e| e == "\"v1\"")
        })
        .await,
        "the page arrived once its topic existed: {}",
        edge.stderr()
    );
}
