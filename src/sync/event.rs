//! Debezium PostgreSQL change events (JSON, with or without the `schema`
//! envelope) decoded into `ChangeEvent`s. Anything that does not fit is a
//! `Malformed` with a reason: the consumer counts, logs and skips it.

use crate::change::{Change, ChangeEvent, Col, DomainChange, PageChange, Table};
use crate::domain::{DomainStatus, Hostname, PageKey, StoreId, Tier};
use serde_json::{Map, Value};

/// Debezium's stand-in for an unchanged TOASTed column it did not send.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    Event(ChangeEvent),
    /// A record with nothing to apply, and why.
    Skip(Skipped),
}

/// Records a Debezium deployment sends that carry no row change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// Null value after a delete (for log compaction).
    Tombstone,
    /// `heartbeat.interval.ms`: keeps the slot's LSN moving on idle tables.
    Heartbeat,
    /// `provide.transaction.metadata`: BEGIN / END markers.
    Transaction,
    /// `op: "m"`: a logical decoding message (pg_logical_emit_message).
    Message,
}

impl Skipped {
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::Tombstone => "tombstone",
            Skipped::Heartbeat => "heartbeat",
            Skipped::Transaction => "transaction",
            Skipped::Message => "message",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn bad<T>(msg: impl Into<String>) -> Result<T, Malformed> {
    Err(Malformed(msg.into()))
}

/// Decodes one record value. `topic` names the table when `source.table`
/// is absent (`<prefix>.public.pages`).
pub fn decode(topic: &str, value: Option<&[u8]>) -> Result<Decoded, Malformed> {
    let Some(bytes) = value else {
        return Ok(Decoded::Skip(Skipped::Tombstone));
    };
    let root: Value =
        serde_json::from_slice(bytes).map_err(|e| Malformed(format!("bad JSON: {e}")))?;
    let payload = match &root {
        Value::Object(m) if m.contains_key("schema") && m.contains_key("payload") => &m["payload"],
        Value::Null => return Ok(Decoded::Skip(Skipped::Tombstone)),
        other => other,
    };
    let Value::Object(payload) = payload else {
        return bad("payload is not an object");
    };
    let Some(op) = payload.get("op").and_then(Value::as_str) else {
        return not_a_change(payload);
    };
    let source = payload.get("source").and_then(Value::as_object);
    let table = source
        .and_then(|s| s.get("table"))
        .and_then(Value::as_str)
        .or_else(|| topic.rsplit('.').next())
        .unwrap_or_default();
    let lsn = source.and_then(|s| s.get("lsn")).and_then(Value::as_i64);
    let source_ts_ms = source.and_then(|s| s.get("ts_ms")).and_then(Value::as_i64);
    let row = |name: &str| payload.get(name).and_then(Value::as_object);

    let change = match (table, op) {
        ("domains" | "pages", "m") => return Ok(Decoded::Skip(Skipped::Message)),
        ("domains", "t") => Change::Truncate(Table::Domains),
        ("pages", "t") => Change::Truncate(Table::Pages),
        ("domains", "c" | "r" | "u") => Change::UpsertDomain(domain_row(
            row("after").ok_or_else(|| Malformed("missing after".into()))?,
        )?),
        ("domains", "d") => {
            let before = row("before").ok_or_else(|| Malformed("delete without before".into()))?;
            Change::DeleteDomain {
                hostname: hostname(before)?,
                version: delete_version(before),
            }
        }
        ("pages", "c" | "r" | "u") => Change::UpsertPage(page_row(
            row("after").ok_or_else(|| Malformed("missing after".into()))?,
        )?),
        ("pages", "d") => {
            let before = row("before").ok_or_else(|| Malformed("delete without before".into()))?;
            Change::DeletePage {
                key: page_key(before)?,
                version: delete_version(before),
            }
        }
        ("domains" | "pages", op) => return bad(format!("unknown op {op:?}")),
        (table, _) => return bad(format!("unknown table {table:?}")),
    };
    Ok(Decoded::Event(ChangeEvent {
        change,
        lsn,
        source_ts_ms,
    }))
}

type Row = Map<String, Value>;

/// Records without `op`: heartbeats (`{"ts_ms": …}`) and transaction
/// metadata (`{"status": "BEGIN", "id": …}`) when the configured topics carry them.
fn not_a_change(payload: &Row) -> Result<Decoded, Malformed> {
    let is = |k: &str| payload.contains_key(k);
    if is("status") && is("id") && !is("after") {
        Ok(Decoded::Skip(Skipped::Transaction))
    } else if is("ts_ms") && payload.len() == 1 {
        Ok(Decoded::Skip(Skipped::Heartbeat))
    } else {
        bad("missing op")
    }
}

/// The version a delete's `before` carries. Under REPLICA IDENTITY DEFAULT
/// Debezium sends only the key and fills the other NOT NULL columns with
/// zero values, so 0 (or nothing) means "not known", never "version 0".
fn delete_version(before: &Row) -> Option<i64> {
    before
        .get("version")
        .and_then(Value::as_i64)
        .filter(|v| *v > 0)
}

fn col<T>(row: &Row, name: &str, parse: impl Fn(&Value) -> Option<T>) -> Result<Col<T>, Malformed> {
    match row.get(name) {
        Some(Value::String(s)) if s == UNAVAILABLE => Ok(Col::Unavailable),
        Some(v) => parse(v)
            .map(Col::Set)
            .ok_or_else(|| Malformed(format!("bad {name}: {v}"))),
        None => bad(format!("missing {name}")),
    }
}

fn required<T>(row: &Row, name: &str, parse: impl Fn(&Value) -> Option<T>) -> Result<T, Malformed> {
    match col(row, name, parse)? {
        Col::Set(v) => Ok(v),
        Col::Unavailable => bad(format!("{name} unavailable")),
    }
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn store_id(v: &Value) -> Option<StoreId> {
    v.as_i64().map(StoreId)
}

fn hostname(row: &Row) -> Result<Hostname, Malformed> {
    let raw: String = required(row, "hostname", string)?;
    Hostname::parse(&raw).map_err(|e| Malformed(format!("hostname {raw:?}: {e}")))
}

fn page_key(row: &Row) -> Result<PageKey, Malformed> {
    Ok(PageKey {
        store_id: required(row, "store_id", store_id)?,
        path: required(row, "path", string)?,
    })
}

fn domain_row(row: &Row) -> Result<DomainChange, Malformed> {
    Ok(DomainChange {
        hostname: hostname(row)?,
        store_id: col(row, "store_id", store_id)?,
        status: col(row, "status", |v| v.as_str().and_then(DomainStatus::parse))?,
        tier: col(row, "tier", |v| v.as_str().and_then(Tier::parse))?,
        version: required(row, "version", Value::as_i64)?,
    })
}

fn page_row(row: &Row) -> Result<PageChange, Malformed> {
    let status = match row.get("status") {
        None | Some(Value::Null) => Col::Set(200),
        _ => col(row, "status", |v| {
            v.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| (100..=599).contains(n))
        })?,
    };
    let cache_control = match row.get("cache_control") {
        None | Some(Value::Null) => Col::Set(None),
        _ => col(row, "cache_control", |v| {
            v.as_str().map(|s| Some(s.to_string()))
        })?,
    };
    Ok(PageChange {
        key: page_key(row)?,
        content_type: col(row, "content_type", string)?,
        body: col(row, "body", string)?,
        status,
        cache_control,
        version: required(row, "version", Value::as_i64)?,
        updated_at: col(row, "updated_at", timestamp)?,
    })
}

/// Debezium sends timestamptz as an ISO string (ZonedTimestamp) or, with
/// `time.precision.mode=connect`, as epoch milliseconds / microseconds.
fn timestamp(v: &Value) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => {
            let n = n.as_i64()?;
            let nanos = if n.abs() > 100_000_000_000_000 {
                n as i128 * 1_000
            } else {
                n as i128 * 1_000_000
            };
            time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
                .ok()?
                .format(&Rfc3339)
                .ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page_payload(op: &str) -> Value {
        json!({
            "before": null,
            "after": {"store_id": 7, "path": "/", "content_type": "text/html", "body": "<h1>hi</h1>",
                      "status": 200, "cache_control": "max-age=60", "version": 3, "updated_at": "2026-11-21T10:00:00Z"},
            "source": {"table": "pages", "lsn": 1234, "ts_ms": 1700000000000i64},
            "op": op, "ts_ms": 1700000000100i64
        })
    }

    fn decode_value(v: &Value) -> Result<Decoded, Malformed> {
        decode("cdc.public.pages", Some(v.to_string().as_bytes()))
    }

    #[test]
    fn both_shapes_decode_alike() {
        let bare = decode_value(&page_payload("c")).unwrap();
        let wrapped =
            decode_value(&json!({"schema": {"type": "struct"}, "payload": page_payload("c")}))
                .unwrap();
        assert_eq!(bare, wrapped);
        let Decoded::Event(e) = bare else { panic!() };
        assert_eq!(e.lsn, Some(1234));
        assert_eq!(e.source_ts_ms, Some(1700000000000));
        let Change::UpsertPage(p) = e.change else {
            panic!()
        };
        assert_eq!(
            p.key,
            PageKey {
                store_id: StoreId(7),
                path: "/".into()
            }
        );
        assert_eq!(p.body, Col::Set("<h1>hi</h1>".into()));
        assert_eq!(p.cache_control, Col::Set(Some("max-age=60".into())));
    }

    #[test]
    fn toast_placeholder_is_unavailable() {
        let mut v = page_payload("u");
        v["after"]["body"] = json!(UNAVAILABLE);
        let Decoded::Event(e) = decode_value(&v).unwrap() else {
            panic!()
        };
        let Change::UpsertPage(p) = e.change else {
            panic!()
        };
        assert_eq!(p.body, Col::Unavailable);
    }

    #[test]
    fn key_only_delete() {
        let v = json!({"before": {"store_id": 7, "path": "/x"}, "after": null, "source": {"table": "pages"}, "op": "d"});
        let Decoded::Event(e) = decode_value(&v).unwrap() else {
            panic!()
        };
        assert_eq!(
            e.change,
            Change::DeletePage {
                key: PageKey {
                    store_id: StoreId(7),
                    path: "/x".into()
                },
                version: None
            }
        );
    }

    /// What the real connector sends under REPLICA IDENTITY DEFAULT: the key,
    /// and zero values for every other NOT NULL column.
    #[test]
    fn zero_filled_delete_has_no_version() {
        let v = json!({"before": {"store_id": 7, "path": "/x", "content_type": "", "body": "", "status": 0,
                        "cache_control": null, "version": 0, "updated_at": "1970-01-01T00:00:00Z"},
                       "after": null, "source": {"table": "pages", "lsn": 99}, "op": "d"});
        let Decoded::Event(e) = decode_value(&v).unwrap() else {
            panic!()
        };
        assert!(matches!(e.change, Change::DeletePage { version: None, .. }));
        assert_eq!(e.lsn, Some(99));
    }

    #[test]
    fn truncate_heartbeat_and_transaction_records() {
        let t = json!({"before": null, "after": null, "source": {"table": "pages", "lsn": 5}, "op": "t"});
        let Decoded::Event(e) = decode_value(&t).unwrap() else {
            panic!()
        };
        assert_eq!(e.change, Change::Truncate(Table::Pages));
        let hb = json!({"schema": {"type": "struct"}, "payload": {"ts_ms": 1700000000000i64}});
        assert_eq!(
            decode("__debezium-heartbeat.cdc", Some(hb.to_string().as_bytes())),
            Ok(Decoded::Skip(Skipped::Heartbeat))
        );
        let tx = json!({"status": "END", "id": "571:53195829", "event_count": 2, "data_collections": [], "ts_ms": 1});
        assert_eq!(
            decode("cdc.transaction", Some(tx.to_string().as_bytes())),
            Ok(Decoded::Skip(Skipped::Transaction))
        );
        assert!(decode("cdc.public.pages", Some(b"{\"ts_ms\": 1, \"x\": 2}")).is_err());
    }

    #[test]
    fn tombstones_skip_and_garbage_is_malformed() {
        assert_eq!(decode("t", None), Ok(Decoded::Skip(Skipped::Tombstone)));
        assert!(decode("t", Some(b"{not json")).is_err());
        assert!(
            decode_value(&json!({"op": "c", "source": {"table": "orders"}, "after": {}})).is_err()
        );
        let mut v = page_payload("c");
        v["after"].as_object_mut().unwrap().remove("version");
        assert!(decode_value(&v).unwrap_err().0.contains("version"));
        let mut v = page_payload("c");
        v["op"] = json!("x");
        assert!(decode_value(&v).is_err());
    }

    #[test]
    fn domains_decode_and_table_from_topic() {
        let v = json!({"after": {"hostname": "Shop.Example.COM", "store_id": 1, "status": "active", "tier": "enterprise", "version": 2}, "op": "r"});
        let Decoded::Event(e) =
            decode("cdc.public.domains", Some(v.to_string().as_bytes())).unwrap()
        else {
            panic!()
        };
        let Change::UpsertDomain(d) = e.change else {
            panic!()
        };
        assert_eq!(d.hostname.as_str(), "shop.example.com");
        assert_eq!(d.tier, Col::Set(Tier::Enterprise));
        let bad_status = json!({"after": {"hostname": "a.com", "store_id": 1, "status": "gone", "tier": "public", "version": 2}, "op": "c"});
        assert!(decode(
            "cdc.public.domains",
            Some(bad_status.to_string().as_bytes())
        )
        .is_err());
    }

    #[test]
    fn numeric_timestamps() {
        assert_eq!(timestamp(&json!(0)).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(
            timestamp(&json!(1_700_000_000_000_000i64)).unwrap(),
            timestamp(&json!(1_700_000_000_000i64)).unwrap()
        );
    }
}
