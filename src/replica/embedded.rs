//! The embedded replica: one redb file under the data directory (ACID,
//! crash-safe, no server). The default for a single box.

use super::*;
use crate::change::Subject;
use arc_swap::ArcSwapOption;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("domains");
const PAGES: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("pages");
/// (table, key) -> tombstone of a deleted row.
const TOMBSTONES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tombstones");
/// (consumer, topic, partition) -> next offset.
const POSITIONS: TableDefinition<(&str, &str, i32), i64> = TableDefinition::new("positions");

/// redb allows one process per file. During a graceful upgrade the old
/// process releases the file when it hands over its sockets, and the new
/// one opens it on first use, waiting up to `OPEN_WAIT` for the release.
pub struct EmbeddedReplica {
    path: PathBuf,
    db: ArcSwapOption<Database>,
    released: AtomicBool,
    opening: tokio::sync::Mutex<()>,
}

const OPEN_WAIT: Duration = Duration::from_secs(10);
const CACHE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug)]
enum OpenError {
    Busy,
    Failed(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Busy => f.write_str("held by another process"),
            OpenError::Failed(e) => f.write_str(e),
        }
    }
}

fn err(e: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Other(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ReplicaError> {
    serde_json::from_slice(bytes).map_err(err)
}

impl EmbeddedReplica {
    /// Opens (or creates) the replica file and its tables. A file held by
    /// another process (the one being upgraded) is opened later, on use.
    pub fn open(path: &Path) -> Result<Self, ReplicaError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        }
        let replica = EmbeddedReplica {
            path: path.to_path_buf(),
            db: ArcSwapOption::empty(),
            released: AtomicBool::new(false),
            opening: tokio::sync::Mutex::new(()),
        };
        match Self::create(path) {
            Ok(db) => replica.db.store(Some(Arc::new(db))),
            Err(OpenError::Busy) => {}
            Err(e) => return Err(err(format!("{}: {e}", path.display()))),
        }
        Ok(replica)
    }

    /// Opens the file and makes sure the tables exist. `Busy`: another
    /// process holds it.
    fn create(path: &Path) -> Result<Database, OpenError> {
        // redb's own read cache would default to 1 GiB on top of the page
        // cache in front of it: keep it small, the moka cache does the work.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => OpenError::Busy,
                e => OpenError::Failed(e.to_string()),
            })?;
        let failed = |e: &dyn std::fmt::Display| OpenError::Failed(e.to_string());
        let tx = db.begin_write().map_err(|e| failed(&e))?;
        tx.open_table(DOMAINS).map_err(|e| failed(&e))?;
        tx.open_table(PAGES).map_err(|e| failed(&e))?;
        tx.open_table(TOMBSTONES).map_err(|e| failed(&e))?;
        tx.open_table(POSITIONS).map_err(|e| failed(&e))?;
        tx.commit().map_err(|e| failed(&e))?;
        Ok(db)
    }

    /// The open database, opening it (or waiting for the previous process
    /// to let go of it) on first use.
    async fn db(&self) -> Result<Arc<Database>, ReplicaError> {
        if let Some(db) = self.db.load_full() {
            return Ok(db);
        }
        if self.released.load(Ordering::Relaxed) {
            return Err(ReplicaError::Unavailable(
                "embedded replica handed to the new process".into(),
            ));
        }
        let _one = self.opening.lock().await;
        let deadline = Instant::now() + OPEN_WAIT;
        loop {
            if let Some(db) = self.db.load_full() {
                return Ok(db);
            }
            match Self::create(&self.path) {
                Ok(db) => {
                    let db = Arc::new(db);
                    self.db.store(Some(db.clone()));
                    return Ok(db);
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(ReplicaError::Unavailable(format!(
                        "{}: {e}",
                        self.path.display()
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn apply_sync(
        db: &Database,
        consumer: &str,
        events: &[ChangeEvent],
        positions: &[Position],
    ) -> Result<Vec<Outcome>, ReplicaError> {
        let tx = db.begin_write().map_err(err)?;
        let mut outcomes = Vec::with_capacity(events.len());
        {
            let mut domains = tx.open_table(DOMAINS).map_err(err)?;
            let mut pages = tx.open_table(PAGES).map_err(err)?;
            let mut tombs = tx.open_table(TOMBSTONES).map_err(err)?;
            for event in events {
                let outcome = match event.change.subject() {
                    Subject::Domain(host) => apply_row::<_, DomainRecord>(
                        &mut domains,
                        &mut tombs,
                        host.as_str(),
                        host,
                        event,
                    )?,
                    Subject::Page(key) => {
                        let k = (key.store_id.0, key.path.as_str());
                        apply_row::<_, Page>(&mut pages, &mut tombs, k, key, event)?
                    }
                    Subject::Table(Table::Domains) => {
                        truncate(&mut domains, &mut tombs, Table::Domains, event.lsn)?
                    }
                    Subject::Table(Table::Pages) => {
                        truncate(&mut pages, &mut tombs, Table::Pages, event.lsn)?
                    }
                };
                outcomes.push(outcome);
            }
            let mut pos = tx.open_table(POSITIONS).map_err(err)?;
            for p in positions {
                pos.insert((consumer, p.topic.as_str(), p.partition), p.next_offset)
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(outcomes)
    }
}

type Tombs<'t> = redb::Table<'t, (&'static str, &'static str), &'static [u8]>;

/// The stored row under `key`, with its version and position.
fn read<'k, K: redb::Key + 'static, T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
) -> Result<Option<Versioned<T>>, ReplicaError> {
    table
        .get(key)
        .map_err(err)?
        .map(|g| decode(g.value()))
        .transpose()
}

fn tombstones(tombs: &Tombs, table: Table, key: &str) -> Result<Tombstones, ReplicaError> {
    let get = |k: &str| -> Result<Option<Tombstone>, ReplicaError> {
        tombs
            .get((table.name(), k))
            .map_err(err)?
            .map(|g| decode(g.value()))
            .transpose()
    };
    Ok(Tombstones {
        key: get(key)?,
        truncated: get(TRUNCATED_KEY)?.and_then(|t| t.lsn),
    })
}

fn put_tombstone(
    tombs: &mut Tombs,
    table: Table,
    key: &str,
    t: &Tombstone,
) -> Result<(), ReplicaError> {
    tombs
        .insert(
            (table.name(), key),
            serde_json::to_vec(t).map_err(err)?.as_slice(),
        )
        .map_err(err)?;
    Ok(())
}

/// Decides one change against the row stored under `row_key` and its
/// tombstones, and carries the decision out.
fn apply_row<'k, K: redb::Key + 'static, R: Row + Serialize + serde::de::DeserializeOwned>(
    rows: &mut redb::Table<K, &'static [u8]>,
    tombs: &mut Tombs,
    row_key: impl std::borrow::Borrow<K::SelfType<'k>> + Copy,
    key: &R::Key,
    event: &ChangeEvent,
) -> Result<Outcome, ReplicaError> {
    let tomb_key = R::tomb_key(key);
    let stored = read(&*rows, row_key)?;
    let decision = R::decide(
        event,
        stored.as_ref(),
        &tombstones(tombs, R::TABLE, &tomb_key)?,
    );
    match &decision {
        Decision::Write(row) => {
            rows.insert(row_key, serde_json::to_vec(row).map_err(err)?.as_slice())
                .map_err(err)?;
        }
        Decision::Delete(t) => {
            rows.remove(row_key).map_err(err)?;
            put_tombstone(tombs, R::TABLE, &tomb_key, t)?;
        }
        Decision::Stale | Decision::Incomplete(_) => {}
    }
    Ok(R::outcome(event, key, &decision))
}

/// The position part of a stored `Versioned` row.
#[derive(serde::Deserialize)]
struct RowLsn {
    lsn: Option<i64>,
}

/// TRUNCATE: removes the rows written before it, keeps the mark.
fn truncate<K: redb::Key + 'static>(
    rows: &mut redb::Table<K, &'static [u8]>,
    tombs: &mut Tombs,
    table: Table,
    lsn: Option<i64>,
) -> Result<Outcome, ReplicaError> {
    let mark = truncation_mark(tombstones(tombs, table, TRUNCATED_KEY)?.truncated, lsn);
    let mut removed = 0;
    rows.retain(|_, v| {
        let row_lsn = serde_json::from_slice::<RowLsn>(v).ok().and_then(|r| r.lsn);
        let goes = truncates(row_lsn, lsn);
        removed += u64::from(goes);
        !goes
    })
    .map_err(err)?;
    put_tombstone(tombs, table, TRUNCATED_KEY, &mark)?;
    Ok(Outcome::Truncated(table, removed))
}

#[async_trait]
impl Replica for EmbeddedReplica {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn domain(&self, host: &Hostname) -> Result<Option<DomainRecord>, ReplicaError> {
        let tx = self.db().await?.begin_read().map_err(err)?;
        let t = tx.open_table(DOMAINS).map_err(err)?;
        Ok(read::<&str, DomainRecord>(&t, host.as_str())?.map(|v| v.row))
    }

    async fn page(&self, key: &PageKey) -> Result<Option<Page>, ReplicaError> {
        let tx = self.db().await?.begin_read().map_err(err)?;
        let t = tx.open_table(PAGES).map_err(err)?;
        let k = (key.store_id.0, key.path.as_str());
        Ok(read::<(i64, &str), Page>(&t, k)?.map(|v| v.row))
    }

    async fn apply(
        &self,
        consumer: &str,
        events: &[ChangeEvent],
        positions: &[Position],
    ) -> Result<Vec<Outcome>, ReplicaError> {
        let (db, consumer, events, positions) = (
            self.db().await?,
            consumer.to_string(),
            events.to_vec(),
            positions.to_vec(),
        );
        // redb commits fsync: keep them off the async workers.
        tokio::task::spawn_blocking(move || Self::apply_sync(&db, &consumer, &events, &positions))
            .await
            .map_err(err)?
    }

    async fn positions(&self, consumer: &str) -> Result<Vec<Position>, ReplicaError> {
        let tx = self.db().await?.begin_read().map_err(err)?;
        let t = tx.open_table(POSITIONS).map_err(err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            let (c, topic, partition) = k.value();
            if c == consumer {
                out.push(Position {
                    topic: topic.to_string(),
                    partition,
                    next_offset: v.value(),
                });
            }
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<(), ReplicaError> {
        self.db().await?.begin_read().map(|_| ()).map_err(err)
    }

    fn release(&self) {
        self.released.store(true, Ordering::Relaxed);
        self.db.store(None);
    }

    async fn active_domains(
        &self,
        after: Option<&Hostname>,
        limit: usize,
    ) -> Result<Vec<Hostname>, ReplicaError> {
        use std::ops::Bound;
        let tx = self.db().await?.begin_read().map_err(err)?;
        let t = tx.open_table(DOMAINS).map_err(err)?;
        let from = after.map_or(Bound::Unbounded, |h| Bound::Excluded(h.as_str()));
        let mut out = Vec::new();
        for entry in t.range::<&str>((from, Bound::Unbounded)).map_err(err)? {
            let (key, value) = entry.map_err(err)?;
            let record: Versioned<DomainRecord> = decode(value.value())?;
            if record.row.status == crate::domain::DomainStatus::Active {
                if let Ok(host) = Hostname::parse(key.value()) {
                    out.push(host);
                }
            }
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    async fn counts(&self) -> Result<(u64, u64), ReplicaError> {
        let tx = self.db().await?.begin_read().map_err(err)?;
        let d = tx.open_table(DOMAINS).map_err(err)?.len().map_err(err)?;
        let p = tx.open_table(PAGES).map_err(err)?.len().map_err(err)?;
        Ok((d, p))
    }
}
