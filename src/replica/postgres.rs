//! The Postgres replica: a PoP's shared replica, reached through a
//! tokio-postgres connection pool with prepared (cached) statements.
//! `edgepop replica init` creates the schema; it is idempotent.

use super::*;
use deadpool_postgres::{GenericClient, Pool};

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

fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, ReplicaError> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|e| ReplicaError::Other(e.to_string()))
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

    async fn stored_domain(
        c: &impl GenericClient,
        host: &str,
    ) -> Result<(Option<Versioned<DomainRecord>>, Tombstones), ReplicaError> {
        let row = c
            .query_opt(&c.prepare_cached("SELECT store_id, status, tier, version, lsn FROM domains WHERE hostname = $1 FOR UPDATE").await.map_err(err)?, &[&host])
            .await
            .map_err(err)?;
        let stored = match row {
            Some(r) => Some(Versioned {
                row: DomainRecord {
                    hostname: Hostname::parse(host)
                        .map_err(|e| ReplicaError::Other(e.to_string()))?,
                    store_id: r.get(0),
                    status: parse_enum(r.get(1))?,
                    tier: parse_enum(r.get(2))?,
                },
                version: r.get(3),
                lsn: r.get(4),
            }),
            None => None,
        };
        Ok((stored, Self::tombstones(c, Table::Domains, host).await?))
    }

    async fn stored_page(
        c: &impl GenericClient,
        key: &PageKey,
    ) -> Result<(Option<Versioned<Page>>, Tombstones), ReplicaError> {
        let row = c
            .query_opt(
                &c.prepare_cached("SELECT content_type, body, status, cache_control, version, updated_at, lsn FROM pages WHERE store_id = $1 AND path = $2 FOR UPDATE")
                    .await
                    .map_err(err)?,
                &[&key.store_id, &key.path],
            )
            .await
            .map_err(err)?;
        let stored = row.map(|r| Versioned {
            row: page_from_row(key, &r),
            version: r.get(4),
            lsn: r.get(6),
        });
        Ok((
            stored,
            Self::tombstones(c, Table::Pages, &page_tomb_key(key)).await?,
        ))
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

    async fn apply_domain(
        c: &impl GenericClient,
        event: &ChangeEvent,
        host: &Hostname,
    ) -> Result<Outcome, ReplicaError> {
        let (stored, tombs) = Self::stored_domain(c, host.as_str()).await?;
        let decision = decide_domain(event, stored.as_ref(), &tombs);
        match &decision {
            Decision::Write(v) => {
                // The WHERE keeps a concurrent writer of the same event (two
                // edge processes on one replica) from going backwards.
                let stmt = c
                    .prepare_cached(
                        "INSERT INTO domains (hostname, store_id, status, tier, version, lsn) VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (hostname) DO UPDATE SET store_id = EXCLUDED.store_id, status = EXCLUDED.status,
                         tier = EXCLUDED.tier, version = EXCLUDED.version, lsn = EXCLUDED.lsn WHERE domains.version < EXCLUDED.version",
                    )
                    .await
                    .map_err(err)?;
                let status = serde_json::to_value(v.row.status).map_err(err)?;
                let status = status.as_str().unwrap_or("active");
                c.execute(
                    &stmt,
                    &[
                        &host.as_str(),
                        &v.row.store_id,
                        &status,
                        &v.row.tier.as_str(),
                        &v.version,
                        &v.lsn,
                    ],
                )
                .await
                .map_err(err)?;
            }
            Decision::Delete(t) => {
                let stmt = c
                    .prepare_cached("DELETE FROM domains WHERE hostname = $1")
                    .await
                    .map_err(err)?;
                c.execute(&stmt, &[&host.as_str()]).await.map_err(err)?;
                Self::write_tombstone(c, "domains", host.as_str(), t).await?;
            }
            _ => {}
        }
        Ok(outcome_of_domain(host, &decision))
    }

    async fn apply_page(
        c: &impl GenericClient,
        event: &ChangeEvent,
        key: &PageKey,
    ) -> Result<Outcome, ReplicaError> {
        let (stored, tombs) = Self::stored_page(c, key).await?;
        let decision = decide_page(event, stored.as_ref(), &tombs);
        match &decision {
            Decision::Write(v) => {
                let p = &v.row;
                let stmt = c
                    .prepare_cached(
                        "INSERT INTO pages (store_id, path, content_type, body, status, cache_control, version, updated_at, lsn)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                         ON CONFLICT (store_id, path) DO UPDATE SET content_type = EXCLUDED.content_type, body = EXCLUDED.body,
                         status = EXCLUDED.status, cache_control = EXCLUDED.cache_control, version = EXCLUDED.version,
                         updated_at = EXCLUDED.updated_at, lsn = EXCLUDED.lsn WHERE pages.version < EXCLUDED.version",
                    )
                    .await
                    .map_err(err)?;
                let status = p.status as i32;
                c.execute(
                    &stmt,
                    &[
                        &p.store_id,
                        &p.path,
                        &p.content_type,
                        &p.body,
                        &status,
                        &p.cache_control,
                        &v.version,
                        &p.updated_at,
                        &v.lsn,
                    ],
                )
                .await
                .map_err(err)?;
            }
            Decision::Delete(t) => {
                let stmt = c
                    .prepare_cached("DELETE FROM pages WHERE store_id = $1 AND path = $2")
                    .await
                    .map_err(err)?;
                c.execute(&stmt, &[&key.store_id, &key.path])
                    .await
                    .map_err(err)?;
                Self::write_tombstone(c, "pages", &page_tomb_key(key), t).await?;
            }
            _ => {}
        }
        Ok(outcome_of_page(event, key, &decision))
    }
}

fn page_from_row(key: &PageKey, r: &tokio_postgres::Row) -> Page {
    let status: i32 = r.get(2);
    Page {
        store_id: key.store_id,
        path: key.path.clone(),
        content_type: r.get(0),
        body: r.get(1),
        status: status as u16,
        cache_control: r.get(3),
        version: r.get(4),
        updated_at: r.get(5),
    }
}

#[async_trait]
impl Replica for PostgresReplica {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn domain(&self, host: &Hostname) -> Result<Option<DomainRecord>, ReplicaError> {
        let c = self.pool.get().await.map_err(err)?;
        let stmt = c
            .prepare_cached("SELECT store_id, status, tier FROM domains WHERE hostname = $1")
            .await
            .map_err(err)?;
        match c.query_opt(&stmt, &[&host.as_str()]).await.map_err(err)? {
            Some(r) => Ok(Some(DomainRecord {
                hostname: host.clone(),
                store_id: r.get(0),
                status: parse_enum(r.get(1))?,
                tier: parse_enum(r.get(2))?,
            })),
            None => Ok(None),
        }
    }

    async fn page(&self, key: &PageKey) -> Result<Option<Page>, ReplicaError> {
        let c = self.pool.get().await.map_err(err)?;
        let stmt = c
            .prepare_cached("SELECT content_type, body, status, cache_control, version, updated_at FROM pages WHERE store_id = $1 AND path = $2")
            .await
            .map_err(err)?;
        Ok(c.query_opt(&stmt, &[&key.store_id, &key.path])
            .await
            .map_err(err)?
            .map(|r| page_from_row(key, &r)))
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
            let outcome = match &event.change {
                Change::UpsertDomain(DomainChange { hostname, .. })
                | Change::DeleteDomain { hostname, .. } => {
                    Self::apply_domain(&tx, event, hostname).await?
                }
                Change::UpsertPage(PageChange { key, .. }) | Change::DeletePage { key, .. } => {
                    Self::apply_page(&tx, event, key).await?
                }
                Change::Truncate(table) => Self::truncate(&tx, *table, event.lsn).await?,
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
