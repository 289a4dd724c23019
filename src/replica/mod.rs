//! The local replica of the central `domains` and `pages` tables: a trait
//! with two implementations (`embedded` for a single box, `postgres` for a
//! PoP's shared replica). The rules of applying a change (version guard,
//! delete tombstones, TOAST placeholders) live here once, as pure functions
//! both implementations call inside their own transaction.

pub mod embedded;
pub mod postgres;

use crate::change::{Change, ChangeEvent, DomainChange, PageChange, Table};
use crate::domain::{DomainRecord, Hostname, Page, PageKey};
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
    /// a re-snapshot, or another process on the same replica applied it
    /// first). A page carries the event's version when it had one.
    StaleDomain(Hostname),
    StalePage(PageKey, Option<i64>),
    /// A TRUNCATE removed this many rows of the table.
    Truncated(Table, u64),
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
    /// Up to `limit` active domains in name order, after `after`: a walk
    /// of the directory in pages (certificates ordered ahead for domains
    /// that were active before the node started).
    async fn active_domains(
        &self,
        after: Option<&Hostname>,
        limit: usize,
    ) -> Result<Vec<Hostname>, ReplicaError>;
    /// Lets go of resources a successor process needs (graceful upgrade).
    fn release(&self) {}
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

/// What the replica remembers against a key: its own tombstone and the
/// WAL position of the table's last TRUNCATE (a mark for every key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tombstones {
    pub key: Option<Tombstone>,
    pub truncated: Option<i64>,
}

/// `a` is later than `b` at the primary: by WAL position when both carry
/// one (Debezium's `source.lsn`; per key it follows commit order), else by
/// version.
fn later(a_version: i64, a_lsn: Option<i64>, b: &Tombstone) -> bool {
    match (a_lsn, b.lsn) {
        (Some(a), Some(b)) => a > b,
        _ => a_version > b.version,
    }
}

/// An upsert wins over strictly older versions of the stored row, and over
/// a delete (or truncate) only when it came after it: so a replayed old
/// update cannot resurrect a deleted key, while a row re-inserted later
/// (perhaps with a lower version) comes back.
fn newer(version: i64, lsn: Option<i64>, stored: Option<i64>, tombs: &Tombstones) -> bool {
    stored.is_none_or(|v| version > v)
        && tombs.key.is_none_or(|t| later(version, lsn, &t))
        && tombs.truncated.zip(lsn).is_none_or(|(t, l)| l > t)
}

/// A delete is stale when it provably predates the stored row: by WAL
/// position when both carry one, else by the version of a full `before`
/// (REPLICA IDENTITY FULL). A key-only delete without positions applies.
fn delete<T>(
    stored: Option<&Versioned<T>>,
    tomb: Option<&Tombstone>,
    version: Option<i64>,
    lsn: Option<i64>,
) -> Decision<T> {
    let Some(row) = stored else {
        if tomb.is_some_and(|t| !later(version.unwrap_or(0), lsn, t)) {
            // Already deleted by this change or a later one: redelivery.
            return Decision::Stale;
        }
        // Nothing stored: remember the newest version known to be deleted.
        let v = version.unwrap_or(0).max(tomb.map_or(0, |t| t.version));
        let lsn = lsn.max(tomb.and_then(|t| t.lsn));
        return Decision::Delete(Tombstone { version: v, lsn });
    };
    let older = match (lsn, row.lsn, version) {
        (Some(l), Some(stored_lsn), _) => l <= stored_lsn,
        (_, _, Some(v)) => v < row.version,
        _ => false,
    };
    if older {
        return Decision::Stale;
    }
    Decision::Delete(Tombstone {
        version: version.unwrap_or(row.version).max(row.version),
        lsn: lsn.max(row.lsn),
    })
}

/// An upsert: newer than row and tombstones, and every unsent column found
/// in the stored row.
fn upsert<T>(
    version: i64,
    lsn: Option<i64>,
    stored: Option<&Versioned<T>>,
    tombs: &Tombstones,
    merge: impl FnOnce(Option<&T>) -> Option<T>,
    what: impl FnOnce() -> String,
) -> Decision<T> {
    if !newer(version, lsn, stored.map(|s| s.version), tombs) {
        return Decision::Stale;
    }
    match merge(stored.map(|s| &s.row)) {
        Some(row) => Decision::Write(Versioned { row, version, lsn }),
        None => Decision::Incomplete(format!("{}: unsent columns and no stored row", what())),
    }
}

/// Whether a stored row goes with a TRUNCATE at `lsn`: every row written
/// before it (or by a change without a position).
pub fn truncates(row_lsn: Option<i64>, lsn: Option<i64>) -> bool {
    match (row_lsn, lsn) {
        (Some(r), Some(t)) => r < t,
        _ => true,
    }
}

/// The key under which a table's truncation mark is kept among the
/// tombstones (no hostname or page key is empty); its `lsn` is the mark.
pub const TRUNCATED_KEY: &str = "";

/// The mark kept after a TRUNCATE at `lsn`: the later position wins.
pub fn truncation_mark(previous: Option<i64>, lsn: Option<i64>) -> Tombstone {
    Tombstone {
        version: 0,
        lsn: lsn.max(previous),
    }
}

/// A replicated row type: the table it lives in, what it is keyed by, and
/// the rules applied to it. Both replicas apply every table through this.
pub trait Row: Sized + Send + Sync {
    const TABLE: Table;
    type Key: Send + Sync;
    /// The key its tombstones are kept under (one text key space for both).
    fn tomb_key(key: &Self::Key) -> String;
    /// What to do with `event` given what the replica holds for its key.
    fn decide(
        event: &ChangeEvent,
        stored: Option<&Versioned<Self>>,
        tombs: &Tombstones,
    ) -> Decision<Self>;
    /// The outcome reported for a decision (what the cache should do).
    fn outcome(event: &ChangeEvent, key: &Self::Key, d: &Decision<Self>) -> Outcome;
}

impl Row for DomainRecord {
    const TABLE: Table = Table::Domains;
    type Key = Hostname;

    fn tomb_key(key: &Hostname) -> String {
        key.as_str().to_string()
    }

    fn decide(
        event: &ChangeEvent,
        stored: Option<&Versioned<Self>>,
        tombs: &Tombstones,
    ) -> Decision<Self> {
        match &event.change {
            Change::UpsertDomain(c) => upsert(
                c.version,
                event.lsn,
                stored,
                tombs,
                |s| merge_domain(c, s),
                || format!("domain {}", c.hostname),
            ),
            Change::DeleteDomain { version, .. } => {
                delete(stored, tombs.key.as_ref(), *version, event.lsn)
            }
            _ => Decision::Stale,
        }
    }

    fn outcome(_: &ChangeEvent, host: &Hostname, d: &Decision<Self>) -> Outcome {
        match d {
            Decision::Write(v) => Outcome::Domain(v.row.clone()),
            Decision::Delete(_) => Outcome::DomainDeleted(host.clone()),
            Decision::Stale => Outcome::StaleDomain(host.clone()),
            Decision::Incomplete(why) => Outcome::Incomplete(why.clone()),
        }
    }
}

impl Row for Page {
    const TABLE: Table = Table::Pages;
    type Key = PageKey;

    /// The numeric store id makes the first ':' unambiguous.
    fn tomb_key(key: &PageKey) -> String {
        format!("{}:{}", key.store_id, key.path)
    }

    fn decide(
        event: &ChangeEvent,
        stored: Option<&Versioned<Self>>,
        tombs: &Tombstones,
    ) -> Decision<Self> {
        match &event.change {
            Change::UpsertPage(c) => upsert(
                c.version,
                event.lsn,
                stored,
                tombs,
                |s| merge_page(c, s),
                || format!("page {} {}", c.key.store_id, c.key.path),
            ),
            Change::DeletePage { version, .. } => {
                delete(stored, tombs.key.as_ref(), *version, event.lsn)
            }
            _ => Decision::Stale,
        }
    }

    fn outcome(event: &ChangeEvent, key: &PageKey, d: &Decision<Self>) -> Outcome {
        match d {
            Decision::Write(v) => Outcome::Page(v.row.clone()),
            Decision::Delete(_) => Outcome::PageDeleted(key.clone()),
            Decision::Stale => {
                let version = match &event.change {
                    Change::UpsertPage(c) => Some(c.version),
                    _ => None,
                };
                Outcome::StalePage(key.clone(), version)
            }
            Decision::Incomplete(why) => Outcome::Incomplete(why.clone()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Col;
    use crate::domain::StoreId;

    const NONE: Tombstones = Tombstones {
        key: None,
        truncated: None,
    };

    fn tomb(t: Tombstone) -> Tombstones {
        Tombstones {
            key: Some(t),
            truncated: None,
        }
    }

    fn page_event(version: i64, body: Col<String>, lsn: i64) -> ChangeEvent {
        ChangeEvent {
            change: Change::UpsertPage(PageChange {
                key: PageKey {
                    store_id: StoreId(1),
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
        let Decision::Write(mut v) = Page::decide(
            &page_event(version, Col::Set(body.into()), lsn),
            None,
            &NONE,
        ) else {
            panic!()
        };
        v.row.body = body.into();
        v
    }

    #[test]
    fn version_guard() {
        let s = stored(5, "v5", 50);
        assert_eq!(
            Page::decide(&page_event(5, Col::Set("dup".into()), 50), Some(&s), &NONE),
            Decision::Stale
        );
        assert_eq!(
            Page::decide(&page_event(4, Col::Set("old".into()), 40), Some(&s), &NONE),
            Decision::Stale
        );
        assert!(matches!(
            Page::decide(&page_event(6, Col::Set("new".into()), 60), Some(&s), &NONE),
            Decision::Write(_)
        ));
    }

    #[test]
    fn toast_keeps_stored_column_or_is_incomplete() {
        let s = stored(5, "kept", 50);
        let Decision::Write(v) =
            Page::decide(&page_event(6, Col::Unavailable, 60), Some(&s), &NONE)
        else {
            panic!()
        };
        assert_eq!(v.row.body, "kept");
        assert_eq!(v.row.version, 6);
        assert!(matches!(
            Page::decide(&page_event(6, Col::Unavailable, 60), None, &NONE),
            Decision::Incomplete(_)
        ));
    }

    /// A delete as Debezium sends it by default: key only, no version.
    fn key_only_delete(lsn: i64) -> ChangeEvent {
        ChangeEvent {
            change: Change::DeletePage {
                key: PageKey {
                    store_id: StoreId(1),
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
        let Decision::Delete(t) = Page::decide(&del, Some(&s), &NONE) else {
            panic!()
        };
        assert_eq!(t.version, 5);
        assert_eq!(
            Page::decide(&page_event(4, Col::Set("old".into()), 40), None, &tomb(t)),
            Decision::Stale
        );
        assert_eq!(
            Page::decide(&page_event(5, Col::Set("same".into()), 50), None, &tomb(t)),
            Decision::Stale
        );
        assert!(matches!(
            Page::decide(&page_event(6, Col::Set("again".into()), 80), None, &tomb(t)),
            Decision::Write(_)
        ));
    }

    #[test]
    fn replayed_key_only_delete_before_newer_row_is_stale() {
        let s = stored(7, "v7", 90);
        let del = key_only_delete(70);
        assert_eq!(Page::decide(&del, Some(&s), &NONE), Decision::Stale);
    }

    #[test]
    fn full_identity_delete_orders_by_position() {
        let s = stored(5, "v5", 50);
        let full = |version, lsn| ChangeEvent {
            change: Change::DeletePage {
                key: s.row.key(),
                version: Some(version),
            },
            lsn: Some(lsn),
            source_ts_ms: None,
        };
        assert!(matches!(
            Page::decide(&full(5, 60), Some(&s), &NONE),
            Decision::Delete(Tombstone {
                version: 5,
                lsn: Some(60)
            })
        ));
        // The same delete replayed from before the row was written.
        assert_eq!(Page::decide(&full(4, 45), Some(&s), &NONE), Decision::Stale);
        // Without positions, a full `before` still orders by version.
        let mut no_lsn = full(4, 0);
        no_lsn.lsn = None;
        assert_eq!(Page::decide(&no_lsn, Some(&s), &NONE), Decision::Stale);
    }

    #[test]
    fn redelivered_delete_is_stale_and_reinsert_after_delete_returns() {
        let s = stored(5, "v5", 50);
        let Decision::Delete(t) = Page::decide(&key_only_delete(70), Some(&s), &NONE) else {
            panic!()
        };
        assert_eq!(
            Page::decide(&key_only_delete(70), None, &tomb(t)),
            Decision::Stale
        );
        // Deleted at the primary, then inserted again as a new row whose
        // version starts over: later in the WAL, so it comes back.
        assert!(matches!(
            Page::decide(
                &page_event(1, Col::Set("new row".into()), 90),
                None,
                &tomb(t)
            ),
            Decision::Write(_)
        ));
    }

    #[test]
    fn truncate_removes_older_rows_and_blocks_their_replay() {
        assert!(truncates(Some(50), Some(60)));
        assert!(!truncates(Some(70), Some(60)));
        assert!(truncates(None, Some(60)));
        assert!(truncates(Some(70), None));
        let after = Tombstones {
            key: None,
            truncated: Some(60),
        };
        assert_eq!(
            Page::decide(
                &page_event(9, Col::Set("replayed".into()), 55),
                None,
                &after
            ),
            Decision::Stale
        );
        assert!(matches!(
            Page::decide(&page_event(1, Col::Set("after".into()), 65), None, &after),
            Decision::Write(_)
        ));
        assert_eq!(truncation_mark(Some(60), Some(40)).lsn, Some(60));
    }
}
