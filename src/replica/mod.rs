//! The local replica of the central `domains` and `pages` tables: a trait
//! with two implementations (`embedded` for a single box, `postgres` for a
//! PoP's shared replica). The rules of applying a change (version guard,
//! delete tombstones, TOAST placeholders) live here once, as pure functions
//! both implementations call inside their own transaction.

pub mod embedded;
pub mod postgres;

use crate::domain::{DomainRecord, Hostname, Page, PageKey};
use crate::sync::event::{Change, ChangeEvent, DomainChange, PageChange};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("replica unavailable: {0}")]
    Unavailable(String),
    #[error("replica error: {0}")]
    Other(String),
}

/// Where the change stream stands for one partition: the next offset to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// What applying one event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Domain(DomainRecord),
    DomainDeleted(Hostname),
    Page(Page),
    PageDeleted(PageKey),
    /// Not newer than what the replica has (redelivery, replay, reordering,
    /// or another process on the same replica applied it first).
    StaleDomain(Hostname),
    StalePage(PageKey),
    /// An update whose unsent (TOASTed) columns have no stored row to come from.
    Incomplete(String),
}

#[async_trait]
pub trait Replica: Send + Sync {
    fn kind(&self) -> &'static str;
    async fn domain(&self, host: &Hostname) -> Result<Option<DomainRecord>, ReplicaError>;
    async fn page(&self, key: &PageKey) -> Result<Option<Page>, ReplicaError>;
    /// Applies `events` and stores `positions` (under `consumer`) in one
    /// transaction: after a crash both or neither are there.
    async fn apply(
        &self,
        consumer: &str,
        events: &[ChangeEvent],
        positions: &[Position],
    ) -> Result<Vec<Outcome>, ReplicaError>;
    async fn positions(&self, consumer: &str) -> Result<Vec<Position>, ReplicaError>;
    async fn ping(&self) -> Result<(), ReplicaError>;
    /// (domains, pages) held, for /status.
    async fn counts(&self) -> Result<(u64, u64), ReplicaError>;
    /// Lets go of resources a successor process needs (graceful upgrade).
    fn release(&self) {}
}

/// The key under which a deleted page's tombstone is kept (the numeric
/// store id makes the first ':' unambiguous).
pub fn page_tomb_key(key: &PageKey) -> String {
    format!("{}:{}", key.store_id, key.path)
}

/// A stored row with the WAL position of the change that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    pub row: T,
    pub version: i64,
    pub lsn: Option<i64>,
}

/// What the replica remembers of a deleted key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub version: i64,
    pub lsn: Option<i64>,
}

/// The result of deciding one change against the stored state.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<T> {
    Write(Versioned<T>),
    Delete(Tombstone),
    Stale,
    Incomplete(String),
}

/// An upsert wins only over strictly older versions, of the row and of
/// its tombstone (so a replayed old update cannot resurrect a deleted key).
fn newer(version: i64, stored: Option<i64>, tomb: Option<&Tombstone>) -> bool {
    stored.is_none_or(|v| version > v) && tomb.is_none_or(|t| version > t.version)
}

/// A delete is stale when it provably predates the stored row: by version
/// when it carries one, else by WAL position.
fn delete<T>(
    stored: Option<&Versioned<T>>,
    tomb: Option<&Tombstone>,
    version: Option<i64>,
    lsn: Option<i64>,
) -> Decision<T> {
    let Some(row) = stored else {
        // Nothing stored: remember the newest version known to be deleted.
        let v = version.unwrap_or(0).max(tomb.map_or(0, |t| t.version));
        let lsn = lsn.max(tomb.and_then(|t| t.lsn));
        return Decision::Delete(Tombstone { version: v, lsn });
    };
    let older = match (version, lsn, row.lsn) {
        (Some(v), _, _) => v < row.version,
        (None, Some(l), Some(stored_lsn)) => l < stored_lsn,
        _ => false,
    };
    if older {
        return Decision::Stale;
    }
    Decision::Delete(Tombstone {
        version: version.unwrap_or(row.version).max(row.version),
        lsn: lsn.or(row.lsn),
    })
}

/// An upsert: newer than row and tombstone, and every unsent column found
/// in the stored row.
fn upsert<T>(
    version: i64,
    lsn: Option<i64>,
    stored: Option<&Versioned<T>>,
    tomb: Option<&Tombstone>,
    merge: impl FnOnce(Option<&T>) -> Option<T>,
    what: impl FnOnce() -> String,
) -> Decision<T> {
    if !newer(version, stored.map(|s| s.version), tomb) {
        return Decision::Stale;
    }
    match merge(stored.map(|s| &s.row)) {
        Some(row) => Decision::Write(Versioned { row, version, lsn }),
        None => Decision::Incomplete(format!("{}: unsent columns and no stored row", what())),
    }
}

pub fn decide_domain(
    event: &ChangeEvent,
    stored: Option<&Versioned<DomainRecord>>,
    tomb: Option<&Tombstone>,
) -> Decision<DomainRecord> {
    match &event.change {
        Change::UpsertDomain(c) => upsert(
            c.version,
            event.lsn,
            stored,
            tomb,
            |s| merge_domain(c, s),
            || format!("domain {}", c.hostname),
        ),
        Change::DeleteDomain { version, .. } => delete(stored, tomb, *version, event.lsn),
        _ => Decision::Stale,
    }
}

pub fn decide_page(
    event: &ChangeEvent,
    stored: Option<&Versioned<Page>>,
    tomb: Option<&Tombstone>,
) -> Decision<Page> {
    match &event.change {
        Change::UpsertPage(c) => upsert(
            c.version,
            event.lsn,
            stored,
            tomb,
            |s| merge_page(c, s),
            || format!("page {} {}", c.key.store_id, c.key.path),
        ),
        Change::DeletePage { version, .. } => delete(stored, tomb, *version, event.lsn),
        _ => Decision::Stale,
    }
}

fn merge_domain(c: &DomainChange, stored: Option<&DomainRecord>) -> Option<DomainRecord> {
    Some(DomainRecord {
        hostname: c.hostname.clone(),
        store_id: c.store_id.clone().or_stored(stored.map(|s| s.store_id))?,
        status: c.status.clone().or_stored(stored.map(|s| s.status))?,
        tier: c.tier.clone().or_stored(stored.map(|s| s.tier))?,
    })
}

fn merge_page(c: &PageChange, stored: Option<&Page>) -> Option<Page> {
    Some(Page {
        store_id: c.key.store_id,
        path: c.key.path.clone(),
        content_type: c
            .content_type
            .clone()
            .or_stored(stored.map(|s| s.content_type.clone()))?,
        body: c.body.clone().or_stored(stored.map(|s| s.body.clone()))?,
        status: c.status.clone().or_stored(stored.map(|s| s.status))?,
        cache_control: c
            .cache_control
            .clone()
            .or_stored(stored.map(|s| s.cache_control.clone()))?,
        version: c.version,
        updated_at: c
            .updated_at
            .clone()
            .or_stored(stored.map(|s| s.updated_at.clone()))?,
    })
}

/// The outcome reported for a decision (what the cache should do).
pub fn outcome_of_domain(host: &Hostname, d: &Decision<DomainRecord>) -> Outcome {
    match d {
        Decision::Write(v) => Outcome::Domain(v.row.clone()),
        Decision::Delete(_) => Outcome::DomainDeleted(host.clone()),
        Decision::Stale => Outcome::StaleDomain(host.clone()),
        Decision::Incomplete(why) => Outcome::Incomplete(why.clone()),
    }
}

pub fn outcome_of_page(key: &PageKey, d: &Decision<Page>) -> Outcome {
    match d {
        Decision::Write(v) => Outcome::Page(v.row.clone()),
        Decision::Delete(_) => Outcome::PageDeleted(key.clone()),
        Decision::Stale => Outcome::StalePage(key.clone()),
        Decision::Incomplete(why) => Outcome::Incomplete(why.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::event::Col;

    fn page_event(version: i64, body: Col<String>, lsn: i64) -> ChangeEvent {
        ChangeEvent {
            change: Change::UpsertPage(PageChange {
                key: PageKey {
                    store_id: 1,
                    path: "/".into(),
                },
                content_type: Col::Set("text/html".into()),
                body,
                status: Col::Set(200),
                cache_control: Col::Set(None),
                version,
                updated_at: Col::Set("t".into()),
            }),
            lsn: Some(lsn),
            source_ts_ms: None,
        }
    }

    fn stored(version: i64, body: &str, lsn: i64) -> Versioned<Page> {
        let Decision::Write(mut v) =
            decide_page(&page_event(version, Col::Set(body.into()), lsn), None, None)
        else {
            panic!()
        };
        v.row.body = body.into();
        v
    }

    #[test]
    fn version_guard() {
        let s = stored(5, "v5", 50);
        assert_eq!(
            decide_page(&page_event(5, Col::Set("dup".into()), 50), Some(&s), None),
            Decision::Stale
        );
        assert_eq!(
            decide_page(&page_event(4, Col::Set("old".into()), 40), Some(&s), None),
            Decision::Stale
        );
        assert!(matches!(
            decide_page(&page_event(6, Col::Set("new".into()), 60), Some(&s), None),
            Decision::Write(_)
        ));
    }

    #[test]
    fn toast_keeps_stored_column_or_is_incomplete() {
        let s = stored(5, "kept", 50);
        let Decision::Write(v) = decide_page(&page_event(6, Col::Unavailable, 60), Some(&s), None)
        else {
            panic!()
        };
        assert_eq!(v.row.body, "kept");
        assert_eq!(v.row.version, 6);
        assert!(matches!(
            decide_page(&page_event(6, Col::Unavailable, 60), None, None),
            Decision::Incomplete(_)
        ));
    }

    /// A delete as Debezium sends it by default: key only, no version.
    fn key_only_delete(lsn: i64) -> ChangeEvent {
        ChangeEvent {
            change: Change::DeletePage {
                key: PageKey {
                    store_id: 1,
                    path: "/".into(),
                },
                version: None,
            },
            lsn: Some(lsn),
            source_ts_ms: None,
        }
    }

    #[test]
    fn key_only_delete_then_older_update_cannot_resurrect() {
        let s = stored(5, "v5", 50);
        let del = key_only_delete(70);
        let Decision::Delete(t) = decide_page(&del, Some(&s), None) else {
            panic!()
        };
        assert_eq!(t.version, 5);
        assert_eq!(
            decide_page(&page_event(4, Col::Set("old".into()), 40), None, Some(&t)),
            Decision::Stale
        );
        assert_eq!(
            decide_page(&page_event(5, Col::Set("same".into()), 50), None, Some(&t)),
            Decision::Stale
        );
        assert!(matches!(
            decide_page(&page_event(6, Col::Set("again".into()), 80), None, Some(&t)),
            Decision::Write(_)
        ));
    }

    #[test]
    fn replayed_key_only_delete_before_newer_row_is_stale() {
        let s = stored(7, "v7", 90);
        let del = key_only_delete(70);
        assert_eq!(decide_page(&del, Some(&s), None), Decision::Stale);
    }
}
