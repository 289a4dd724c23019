//! The domain's words about a change at the primary: what happened to which
//! row, and where in the primary's history it happened. `sync` decodes
//! Debezium records into these; `replica` applies them.

use crate::domain::{DomainStatus, Hostname, PageKey, StoreId, Tier};

/// A column value from an event: set, or not sent (keep the stored one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Col<T> {
    Set(T),
    Unavailable,
}

impl<T> Col<T> {
    /// The event's value, else the stored one, else nothing.
    pub fn or_stored(self, stored: Option<T>) -> Option<T> {
        match self {
            Col::Set(v) => Some(v),
            Col::Unavailable => stored,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainChange {
    pub hostname: Hostname,
    pub store_id: Col<StoreId>,
    pub status: Col<DomainStatus>,
    pub tier: Col<Tier>,
    pub version: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageChange {
    pub key: PageKey,
    pub content_type: Col<String>,
    pub body: Col<String>,
    pub status: Col<u16>,
    pub cache_control: Col<Option<String>>,
    pub version: i64,
    pub updated_at: Col<String>,
}

/// The two replicated tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Domains,
    Pages,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Domains => "domains",
            Table::Pages => "pages",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    UpsertDomain(DomainChange),
    /// `version` is known only with REPLICA IDENTITY FULL: under the default
    /// identity Debezium fills it with 0, which is read as unknown.
    DeleteDomain {
        hostname: Hostname,
        version: Option<i64>,
    },
    UpsertPage(PageChange),
    DeletePage {
        key: PageKey,
        version: Option<i64>,
    },
    /// TRUNCATE at the primary (published when the connector's
    /// `skipped.operations` does not list `t`): every row written before it goes.
    Truncate(Table),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeEvent {
    pub change: Change,
    /// WAL position at the primary: orders a key-only delete against rows.
    pub lsn: Option<i64>,
    /// Commit time at the primary (`source.ts_ms`), for freshness.
    pub source_ts_ms: Option<i64>,
}

/// What a change is about: one row of a table, or a whole table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject<'a> {
    Domain(&'a Hostname),
    Page(&'a PageKey),
    Table(Table),
}

impl Change {
    pub fn subject(&self) -> Subject<'_> {
        match self {
            Change::UpsertDomain(DomainChange { hostname, .. })
            | Change::DeleteDomain { hostname, .. } => Subject::Domain(hostname),
            Change::UpsertPage(PageChange { key, .. }) | Change::DeletePage { key, .. } => {
                Subject::Page(key)
            }
            Change::Truncate(table) => Subject::Table(*table),
        }
    }
}
