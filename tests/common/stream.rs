//! Real components for the change stream: a tansu broker per test (memory
//! storage), a fresh database on the machine's PostgreSQL per test, and
//! Debezium-shaped records.
#![allow(dead_code)]

use super::free_port;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const DOMAINS: &str = "cdc.public.domains";
pub const PAGES: &str = "cdc.public.pages";

pub struct Broker {
    child: Child,
    /// TLS in front of the broker (socat), for `start_tls`.
    tls: Option<(Child, std::path::PathBuf, tempfile::TempDir)>,
    pub addr: String,
}

impl Broker {
    pub async fn start() -> Broker {
        let port = free_port();
        Broker::launch(port, port, None).await
    }

    /// A broker reachable only over TLS: socat terminates TLS on the
    /// advertised port and forwards to tansu (whose 0.6 CLI refuses
    /// `--cert` with `--key`).
    pub async fn start_tls() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = super::self_signed(dir.path(), "localhost", "IP:127.0.0.1,DNS:localhost");
        let (inner, outer) = (free_port(), free_port());
        let socat = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{outer},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
                cert.display(),
                key.display()
            ))
            .arg(format!("TCP:127.0.0.1:{inner}"))
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (tests/run.sh installs it)");
        Broker::launch(inner, outer, Some((socat, cert, dir))).await
    }

    async fn launch(
        port: u16,
        advertised: u16,
        tls: Option<(Child, std::path::PathBuf, tempfile::TempDir)>,
    ) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let adv = format!("tcp://127.0.0.1:{advertised}");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &adv,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu on PATH (tests/run.sh installs it)");
        for p in [port, advertised] {
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(("127.0.0.1", p))
                    .await
                    .is_ok()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let broker = Broker {
            child,
            tls,
            addr: format!("127.0.0.1:{advertised}"),
        };
        broker.create_topics(&[DOMAINS, PAGES], 1).await;
        broker
    }

    /// librdkafka settings every client of this broker needs.
    pub fn client_settings(&self) -> Vec<(&'static str, String)> {
        let mut s = vec![("bootstrap.servers", self.addr.clone())];
        if let Some((_, cert, _)) = &self.tls {
            s.push(("security.protocol", "ssl".into()));
            s.push(("ssl.ca.location", cert.display().to_string()));
        }
        s
    }

    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in self.client_settings() {
            c.set(k, v);
        }
        c
    }

    pub async fn create_topics(&self, names: &[&str], partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().unwrap();
        let topics: Vec<NewTopic> = names
            .iter()
            .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
            .collect();
        admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .expect("create topics");
    }

    pub fn producer(&self) -> Producer {
        Producer(
            self.client()
                .set("message.timeout.ms", "60000")
                .set("linger.ms", "0")
                .create()
                .unwrap(),
        )
    }

    /// Freezes the broker (SIGSTOP): an outage that keeps its memory log.
    pub fn pause(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    pub fn resume(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// A `[sync]` section reading `topics` of this broker (plain TCP: no
    /// TLS settings), every other setting left at its default.
    pub fn sync_topics(&self, topics: &[&str]) -> String {
        let topics: Vec<String> = topics.iter().map(|t| format!("\"{t}\"")).collect();
        format!(
            "[sync]\nbrokers = \"{}\"\ntopics = [{}]\n",
            self.addr,
            topics.join(", ")
        )
    }

    /// The `[sync]` section pointing at this broker.
    pub fn sync_section(&self) -> String {
        let mut section = self.sync_topics(&[DOMAINS, PAGES]);
        section.push_str("batch_max = 200\n");
        if self.tls.is_some() {
            section.push_str("dead_letter_topic = \"edgepop.dead\"\n[sync.kafka]\n");
            for (k, v) in self.client_settings().into_iter().skip(1) {
                section.push_str(&format!("\"{k}\" = \"{v}\"\n"));
            }
        }
        section
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some((socat, _, _)) = &mut self.tls {
            let _ = socat.kill();
            let _ = socat.wait();
        }
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Producer(pub FutureProducer);

impl Producer {
    /// Publishes one record and waits for the broker's acknowledgement.
    pub async fn send(&self, topic: &str, key: &str, value: Option<&Value>) {
        let body = value.map(|v| v.to_string());
        let mut record = FutureRecord::to(topic).key(key);
        if let Some(b) = &body {
            record = record.payload(b.as_str());
        }
        self.0
            .send(record, Duration::from_secs(60))
            .await
            .map_err(|(e, _)| e)
            .expect("publish");
    }

    /// Queues one record without waiting (it is delivered when it can be).
    pub fn queue(
        &self,
        topic: &str,
        key: &str,
        value: &Value,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let body = value.to_string();
        let fut = self
            .0
            .send_result(FutureRecord::to(topic).key(key).payload(body.as_str()))
            .map_err(|(e, _)| e)
            .expect("queue");
        async move {
            fut.await
                .expect("delivery")
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
    }

    pub async fn raw(&self, topic: &str, key: &str, payload: &str) {
        self.0
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("publish");
    }
}

static LSN: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1_000);

fn envelope(table: &str, op: &str, before: Value, after: Value, schema: bool) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let lsn = LSN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let payload = json!({
        "before": before, "after": after,
        "source": {"version": "2.7.0.Final", "connector": "postgresql", "name": "cdc", "db": "shop", "schema": "public",
                   "table": table, "lsn": lsn, "ts_ms": now},
        "op": op, "ts_ms": now
    });
    if schema {
        json!({"schema": {"type": "struct", "name": format!("cdc.public.{table}.Envelope"), "optional": false}, "payload": payload})
    } else {
        payload
    }
}

pub fn domain(host: &str, store_id: i64, status: &str, version: i64, schema: bool) -> Value {
    envelope(
        "domains",
        "c",
        Value::Null,
        json!({"hostname": host, "store_id": store_id, "status": status, "tier": "public", "version": version}),
        schema,
    )
}

pub fn page(store_id: i64, path: &str, body: &str, version: i64, schema: bool) -> Value {
    page_op("u", store_id, path, json!(body), version, schema)
}

pub fn page_op(
    op: &str,
    store_id: i64,
    path: &str,
    body: Value,
    version: i64,
    schema: bool,
) -> Value {
    envelope(
        "pages",
        op,
        Value::Null,
        json!({"store_id": store_id, "path": path, "content_type": "text/html; charset=utf-8", "body": body,
               "status": 200, "cache_control": "public, max-age=60", "version": version, "updated_at": "2026-11-21T12:00:00.000000Z"}),
        schema,
    )
}

/// A delete as Debezium sends it by default: only the key in `before`.
pub fn page_delete(store_id: i64, path: &str, schema: bool) -> Value {
    envelope(
        "pages",
        "d",
        json!({"store_id": store_id, "path": path}),
        Value::Null,
        schema,
    )
}

pub fn page_key(store_id: i64, path: &str) -> String {
    json!({"store_id": store_id, "path": path}).to_string()
}

/// The `[replica]` section of the embedded replica (the default kind).
pub const EMBEDDED: &str = "[replica]\nping_interval = \"200ms\"\n";

/// The two replicas every data-path scenario runs on.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Embedded,
    Postgres,
}

impl Kind {
    /// The `[replica]` section, and the database it uses (kept alive by the caller).
    pub fn replica(self) -> (String, Option<Pg>) {
        match self {
            Kind::Embedded => (EMBEDDED.to_string(), None),
            Kind::Postgres => {
                let pg = Pg::create();
                (pg.replica_section(), Some(pg))
            }
        }
    }
}

/// A database of its own on the machine's PostgreSQL, dropped at the end.
pub struct Pg {
    pub name: String,
}

/// Runs SQL in database `db` of the machine's PostgreSQL, returns its output.
fn psql_in(db: &str, sql: &str) -> String {
    super::psql(5432, db, sql)
}

fn psql(sql: &str) -> String {
    psql_in("postgres", sql)
}

impl Pg {
    pub fn create() -> Pg {
        let name = format!("edgepop_t{}_{}", std::process::id(), free_port());
        psql(&format!("CREATE DATABASE {name}"));
        Pg { name }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    pub fn replica_section(&self) -> String {
        format!("[replica]\nkind = \"postgres\"\nurl = \"{}\"\npool_size = 4\nping_interval = \"200ms\"\n", self.url())
    }

    /// Runs SQL in this test's database.
    pub fn sql(&self, sql: &str) -> String {
        psql_in(&self.name, sql)
    }

    /// Rows of a query in this test's database, as JSON objects.
    pub fn rows(&self, query: &str) -> Vec<Value> {
        super::rows(5432, &self.name, query)
    }

    /// The replica goes away: no new connections, existing ones cut.
    pub fn cut(&self) {
        psql(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            self.name
        ));
        psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}'",
            self.name
        ));
    }

    pub fn restore(&self) {
        psql(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            self.name
        ));
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // Not `psql`: a failure here must not panic in a drop.
        let _ = super::psql_command(5432, "postgres")
            .args([
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}
