//! The data plane's sections: `[replica]`, `[cache]`, `[sync]`.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaKind {
    Embedded,
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaConfig {
    pub kind: ReplicaKind,
    /// Embedded replica file; relative paths are from the config file's folder.
    pub path: PathBuf,
    /// Postgres replica, e.g. `postgres://edgepop@127.0.0.1:5432/replica`.
    pub url: Option<String>,
    pub pool_size: usize,
    /// Records behind the broker beyond which the node is not ready.
    pub max_lag: i64,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            kind: ReplicaKind::Embedded,
            path: PathBuf::from("edgepop-data/replica.redb"),
            url: None,
            pool_size: 8,
            max_lag: 10_000,
            ping_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bound of the page cache, in bytes of pages held.
    pub max_bytes: u64,
    pub max_domains: u64,
    /// How long "no such page / domain" is remembered.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Query parameters that still hit the page (`name*` matches a prefix).
    pub ignorable_query_params: Vec<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 256 * 1024 * 1024,
            max_domains: 1_000_000,
            negative_ttl: Duration::from_secs(2),
            ignorable_query_params: vec!["utm_*".into(), "gclid".into(), "fbclid".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// `host:port[,host:port...]`
    pub brokers: String,
    /// Debezium topics, e.g. `cdc.public.domains`, `cdc.public.pages`.
    pub topics: Vec<String>,
    /// Name under which this process stores its stream positions; must be
    /// unique per process sharing a replica. Default: `<pop>-<first listener>`.
    pub consumer_name: Option<String>,
    pub group_id: Option<String>,
    /// Malformed records are copied here (with their source and error).
    pub dead_letter_topic: Option<String>,
    #[serde(default = "default_batch")]
    pub batch_max: usize,
    /// Extra librdkafka settings (security.protocol, sasl.*, ssl.*...).
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
}

fn default_batch() -> usize {
    500
}
