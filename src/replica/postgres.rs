//! The Postgres replica: a PoP's shared replica, reached through a
//! tokio-postgres connection pool with prepared (cached) statements.
//! `edgepop replica init` creates the schema; it is idempotent.

use super::*;
use crate::change::Subject;
use crate::domain::{DomainStatus, StoreId, Tier};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::types::ToSql;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS domains (
    hostname text PRIMARY KEY,
    store_id bigint NOT NULL,
    status   text   NOT NULL,
    tier     text   NOT NULL,
    version  bigint NOT NULL,
    lsn      bigint
);
CREATE TABLE IF NOT EXISTS pages (
    store_id      bigint,
    path          text,
    content_type  text   NOT NULL,
    body          text   NOT NULL,
    status        int    NOT NULL DEFAULT 200,
    cache_control text,
    version       bigint NOT NULL,
    updated_at    text   NOT NULL,
    lsn           bigint,
    PRIMARY KEY (store_id, path)
);
CREATE TABLE IF NOT EXISTS edgepop_tombstones (
    tbl     text,
    key     text,
    version bigint NOT NULL,
    lsn     bigint,
    PRIMARY KEY (tbl, key)
);
CREATE TABLE IF NOT EXISTS edgepop_positions (
    consumer    text,
    topic       text,
    partition   int,
    next_offset bigint NOT NULL,
    PRIMARY KEY (consumer, topic, partition)
);
";

pub struct PostgresReplica {
    pool: Pool,
}

fn err(e: impl std::error::Error) -> ReplicaError {
    ReplicaError::Unavailable(crate::pg::chain(e))
}

/// A `domains` text column read back into its word (`DomainStatus`, `Tier`).
fn parse_word<T>(column: &str, s: &str, parse: fn(&str) -> Option<T>) -> Result<T, ReplicaError> {
    parse(s).ok_or_else(|| ReplicaError::Other(format!("domains.{column}: unknown value {s:?}")))
}

impl PostgresReplica {
    pub fn connect(url: &str, pool_size: usize) -> Result<Self, ReplicaError> {
        let pool = crate::pg::pool(url, pool_size)
            .map_err(|e| ReplicaError::Other(format!("replica {e}")))?;
        Ok(PostgresReplica { pool })
    }

    pub async fn init_schema(&self) -> Result<(), ReplicaError> {
        self.pool
            .get()
            .await
            .map_err(err)?
            .batch_execute(SCHEMA)
            .await
            .map_err(err)
    }

    /// The row stored under `key` (locked for the transaction when
    /// `for_update`), with its version and position.
    async fn read<R: PgRow>(
        c: &impl GenericClient,
        key: &R::Key,
        for_update: bool,
    ) -> Result<Option<Versioned<R>>, ReplicaError> {
        let sql = if for_update {
            R::SELECT_FOR_UPDATE
        } else {
            R::SELECT
        };
        let stmt = c.prepare_cached(sql).await.map_err(err)?;
        let params = R::key_params(key);
        let Some(r) = c.query_opt(&stmt, &refs(&params)).await.map_err(err)? else {
            return Ok(None);
        };
        // Every SELECT ends in `version, lsn`.
        let n = r.len();
        Ok(Some(Versioned {
            row: R::from_row(key, &r)?,
            version: r.get(n - 2),
            lsn: r.get(n - 1),
        }))
    }

    /// The key's tombstone and the table's truncation mark, in one query.
    async fn tombstones(
        c: &impl GenericClient,
        table: Table,
        key: &str,
    ) -> Result<Tombstones, ReplicaError> {
        let stmt = c
            .prepare_cached(
                "SELECT key, version, lsn FROM edgepop_tombstones WHERE tbl = $1 AND key IN ($2, $3)",
            )
            .await
            .map_err(err)?;
        let mut found = Tombstones::default();
        for r in c
            .query(&stmt, &[&table.name(), &key, &TRUNCATED_KEY])
            .await
            .map_err(err)?
        {
            let t = Tombstone {
                version: r.get(1),
                lsn: r.get(2),
            };
            if r.get::<_, &str>(0) == TRUNCATED_KEY {
                found.truncated = t.lsn;
            } else {
                found.key = Some(t);
            }
        }
        Ok(found)
    }

    /// TRUNCATE: removes the rows written before it, keeps the mark.
    async fn truncate(
        c: &impl GenericClient,
        table: Table,
        lsn: Option<i64>,
    ) -> Result<Outcome, ReplicaError> {
        let marks = Self::tombstones(c, table, TRUNCATED_KEY).await?;
        let mark = truncation_mark(marks.truncated, lsn);
        // Table names come from the enum, never from the event.
        let sql = format!(
            "DELETE FROM {} WHERE $1::bigint IS NULL OR lsn IS NULL OR lsn < $1",
            table.name()
        );
        let removed = c.execute(sql.as_str(), &[&lsn]).await.map_err(err)?;
        Self::write_tombstone(c, table.name(), TRUNCATED_KEY, &mark).await?;
        Ok(Outcome::Truncated(table, removed))
    }

    async fn write_tombstone(
        c: &impl GenericClient,
        table: &str,
        key: &str,
        t: &Tombstone,
    ) -> Result<(), ReplicaError> {
        let stmt = c
            .prepare_cached(
                "INSERT INTO edgepop_tombstones (tbl, key, version, lsn) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tbl, key) DO UPDATE SET version = GREATEST(edgepop_tombstones.version, EXCLUDED.version),
                 lsn = GREATEST(edgepop_tombstones.lsn, EXCLUDED.lsn)",
            )
            .await
            .map_err(err)?;
        c.execute(&stmt, &[&table, &key, &t.version, &t.lsn])
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Decides one change against the stored row and its tombstones, and
    /// carries the decision out.
    async fn apply_row<R: PgRow>(
        c: &impl GenericClient,
        event: &ChangeEvent,
        key: &R::Key,
    ) -> Result<Outcome, ReplicaError> {
        let tomb_key = R::tomb_key(key);
        let stored = Self::read::<R>(c, key, true).await?;
        let tombs = Self::tombstones(c, R::TABLE, &tomb_key).await?;
        let decision = R::decide(event, stored.as_ref(), &tombs);
        match &decision {
            Decision::Write(v) => {
                let stmt = c.prepare_cached(R::UPSERT).await.map_err(err)?;
                let params = R::row_params(v);
                c.execute(&stmt, &refs(&params)).await.map_err(err)?;
            }
            Decision::Delete(t) => {
                let stmt = c.prepare_cached(R::DELETE).await.map_err(err)?;
                let params = R::key_params(key);
                c.execute(&stmt, &refs(&params)).await.map_err(err)?;
                Self::write_tombstone(c, R::TABLE.name(), &tomb_key, t).await?;
            }
            Decision::Stale | Decision::Incomplete(_) => {}
        }
        Ok(R::outcome(event, key, &decision))
    }
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}

/// How a replicated row lives in its Postgres table. Upserts keep a
/// concurrent writer of the same event (two edge processes on one replica)
/// from going backwards with their `WHERE ... version <`.
trait PgRow: Row {
    /// Columns for `from_row`, then `version, lsn`; parameters: the key.
    const SELECT: &'static str;
    const SELECT_FOR_UPDATE: &'static str;
    /// Parameters: `row_params`.
    const UPSERT: &'static str;
    /// Parameters: the key.
    const DELETE: &'static str;
    fn key_params(key: &Self::Key) -> Params;
    fn row_params(v: &Versioned<Self>) -> Params;
    fn from_row(key: &Self::Key, r: &tokio_postgres::Row) -> Result<Self, ReplicaError>;
}

macro_rules! select {
    ($cols:literal, $from:literal) => {
        (
            concat!("SELECT ", $cols, ", version, lsn FROM ", $from),
            concat!(
                "SELECT ",
                $cols,
                ", version, lsn FROM ",
                $from,
                " FOR UPDATE"
            ),
        )
    };
}

const DOMAIN_SELECT: (&str, &str) =
    select!("store_id, status, tier", "domains WHERE hostname = $1");

impl PgRow for DomainRecord {
    const SELECT: &'static str = DOMAIN_SELECT.0;
    const SELECT_FOR_UPDATE: &'static str = DOMAIN_SELECT.1;
    const UPSERT: &'static str = "INSERT INTO domains (hostname, store_id, status, tier, version, lsn) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (hostname) DO UPDATE SET store_id = EXCLUDED.store_id, status = EXCLUDED.status,
         tier = EXCLUDED.tier, version = EXCLUDED.version, lsn = EXCLUDED.lsn WHERE domains.version < EXCLUDED.version";
    const DELETE: &'static str = "DELETE FROM domains WHERE hostname = $1";

    fn key_params(host: &Hostname) -> Params {
        vec![Box::new(host.as_str().to_string())]
    }

    fn row_params(v: &Versioned<Self>) -> Params {
        let d = &v.row;
        vec![
            Box::new(d.hostname.as_str().to_string()),
            Box::new(d.store_id.0),
            Box::new(d.status.as_str()),
            Box::new(d.tier.as_str()),
            Box::new(v.version),
            Box::new(v.lsn),
        ]
    }

    fn from_row(host: &Hostname, r: &tokio_postgres::Row) -> Result<Self, ReplicaError> {
        Ok(DomainRecord {
            hostname: host.clone(),
            store_id: StoreId(r.get(0)),
            status: parse_word("status", r.get(1), DomainStatus::parse)?,
            tier: parse_word("tier", r.get(2), Tier::parse)?,
        })
    }
}

const PAGE_SELECT: (&str, &str) = select!(
    "content_type, body, status, cache_control, updated_at",
    "pages WHERE store_id = $1 AND path = $2"
);

impl PgRow for Page {
    const SELECT: &'static str = PAGE_SELECT.0;
    const SELECT_FOR_UPDATE: &'static str = PAGE_SELECT.1;
    const UPSERT: &'static str = "INSERT INTO pages (store_id, path, content_type, body, status, cache_control, version, updated_at, lsn)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (store_id, path) DO UPDATE SET content_type = EXCLUDED.content_type, body = EXCLUDED.body,
         status = EXCLUDED.status, cache_control = EXCLUDED.cache_control, version = EXCLUDED.version,
         updated_at = EXCLUDED.updated_at, lsn = EXCLUDED.lsn WHERE pages.version < EXCLUDED.version";
    const DELETE: &'static str = "DELETE FROM pages WHERE store_id = $1 AND path = $2";

    fn key_params(key: &PageKey) -> Params {
        vec![Box::new(key.store_id.0), Box::new(key.path.clone())]
    }

    fn row_params(v: &Versioned<Self>) -> Params {
        let p = &v.row;
        vec![
            Box::new(p.store_id.0),
            Box::new(p.path.clone()),
            Box::new(p.content_type.clone()),
            Box::new(p.body.clone()),
            Box::new(p.status as i32),
            Box::new(p.cache_control.clone()),
            Box::new(v.version),
            Box::new(p.updated_at.clone()),
            Box::new(v.lsn),
        ]
    }

    fn from_row(key: &PageKey, r: &tokio_postgres::Row) -> Result<Self, ReplicaError> {
        let status: i32 = r.get(2);
        Ok(Page {
            store_id: key.store_id,
            path: key.path.clone(),
            content_type: r.get(0),
            body: r.get(1),
            status: status as u16,
            cache_control: r.get(3),
            updated_at: r.get(4),
            version: r.get(5),
        })
    }
}

#[async_trait]
impl Replica for PostgresReplica {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn domain(&self, host: &Hostname) -> Result<Option<DomainRecord>, ReplicaError> {
        let c = self.pool.get().await.map_err(err)?;
        Ok(Self::read::<DomainRecord>(&c, host, false)
            .await?
            .map(|v| v.row))
    }

    async fn page(&self, key: &PageKey) -> Result<Option<Page>, ReplicaError> {
        let c = self.pool.get().await.map_err(err)?;
        Ok(Self::read::<Page>(&c, key, false).await?.map(|v| v.row))
    }

    async fn apply(
        &self,
        consumer: &str,
        events: &[ChangeEvent],
        positions: &[Position],
    ) -> Result<Vec<Outcome>, ReplicaError> {
        let mut c = self.pool.get().await.map_err(err)?;
        let tx = c.transaction().await.map_err(err)?;
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            let outcome = match event.change.subject() {
                Subject::Domain(host) => Self::apply_row::<DomainRecord>(&tx, event, host).await?,
                Subject::Page(key) => Self::apply_row::<Page>(&tx, event, key).await?,
                Subject::Table(table) => Self::truncate(&tx, table, event.lsn).await?,
            };
            outcomes.push(outcome);
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO edgepop_positions (consumer, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
            )
            .await
            .map_err(err)?;
        for p in positions {
            tx.execute(&stmt, &[&consumer, &p.topic, &p.partition, &p.next_offset])
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(outcomes)
    }

    async fn positions(&self, consumer: &str) -> Result<Vec<Position>, ReplicaError> {
        let c = self.pool.get().await.map_err(err)?;
        let stmt = c
            .prepare_cached(
                "SELECT topic, partition, next_offset FROM edgepop_positions WHERE consumer = $1",
            )
            .await
            .map_err(err)?;
        Ok(c.query(&stmt, &[&consumer])
            .await
            .map_err(err)?
            .iter()
            .map(|r| Position {
                topic: r.get(0),
                partition: r.get(1),
                next_offset: r.get(2),
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), ReplicaError> {
        let c = self.pool.get().await.map_err(err)?;
        c.simple_query("SELECT 1").await.map_err(err)?;
        Ok(())
    }

    async fn active_domains(
        &self,
        after: Option<&Hostname>,
        limit: usize,
    ) -> Result<Vec<Hostname>, ReplicaError> {
        let c = self.pool.get().await.map_err(err)?;
        let rows = c
            .query(
                "SELECT hostname FROM domains WHERE status = 'active' AND hostname > $1
                 ORDER BY hostname LIMIT $2",
                &[&after.map_or("", |h| h.as_str()), &(limit as i64)],
            )
            .await
            .map_err(err)?;
        Ok(rows
            .iter()
            .filter_map(|r| Hostname::parse(r.get::<_, &str>(0)).ok())
            .collect())
    }

    async fn counts(&self) -> Result<(u64, u64), ReplicaError> {
        let c = self.pool.get().await.map_err(err)?;
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM domains), (SELECT count(*) FROM pages)",
                &[],
            )
            .await
            .map_err(err)?;
        Ok((r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
    }
}
