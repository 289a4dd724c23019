//! The change stream: a Kafka consumer (rdkafka) reading Debezium events of
//! `domains` and `pages`, applying them to the replica together with the
//! stream position (one transaction), then pushing the result into the
//! caches. Every process reads every partition itself (explicit assignment,
//! no group rebalancing): each keeps its own caches fresh, also when several
//! share one Postgres replica, and resumes from the position stored with
//! the data after any crash.

pub mod event;

use crate::cache::Storefront;
use crate::config::SyncConfig;
use crate::metrics::METRICS;
use crate::replica::{Outcome, Position};
use event::{Decoded, Malformed};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// Where each partition stands, for lag, readiness and /status.
#[derive(Default)]
pub struct SyncStats {
    partitions: Mutex<BTreeMap<(String, i32), PartitionState>>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct PartitionState {
    pub next_offset: i64,
    pub high_watermark: Option<i64>,
}

impl SyncStats {
    pub fn snapshot(&self) -> BTreeMap<(String, i32), PartitionState> {
        crate::locked(&self.partitions).clone()
    }

    /// Records behind the broker, summed over partitions (unknown counts 0).
    pub fn total_lag(&self) -> i64 {
        self.snapshot()
            .values()
            .map(|p| p.high_watermark.map_or(0, |h| (h - p.next_offset).max(0)))
            .sum()
    }

    fn set_next(&self, topic: &str, partition: i32, next_offset: i64) {
        let mut map = crate::locked(&self.partitions);
        map.entry((topic.to_string(), partition))
            .or_default()
            .next_offset = next_offset;
    }

    fn set_high(&self, topic: &str, partition: i32, high: i64) {
        let mut map = crate::locked(&self.partitions);
        let state = map.entry((topic.to_string(), partition)).or_default();
        state.high_watermark = Some(high);
        let lag = (high - state.next_offset).max(0);
        METRICS
            .records_behind
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag);
    }
}

/// One record, owned, as read from the broker.
struct Record {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

pub struct ChangeStream {
    config: SyncConfig,
    consumer_name: String,
    storefront: Arc<Storefront>,
    stats: Arc<SyncStats>,
    dead_letters: Option<FutureProducer>,
}

impl ChangeStream {
    pub fn new(
        config: SyncConfig,
        consumer_name: String,
        storefront: Arc<Storefront>,
        stats: Arc<SyncStats>,
    ) -> Result<Self, String> {
        let dead_letters = match &config.dead_letter_topic {
            Some(_) => Some(
                Self::client_config(&config, &consumer_name)
                    .create::<FutureProducer>()
                    .map_err(|e| format!("dead-letter producer: {e}"))?,
            ),
            None => None,
        };
        Ok(ChangeStream {
            config,
            consumer_name,
            storefront,
            stats,
            dead_letters,
        })
    }

    fn client_config(config: &SyncConfig, consumer_name: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &config.brokers)
            .set(
                "group.id",
                config.group_id.as_deref().unwrap_or(consumer_name),
            )
            .set("client.id", consumer_name)
            // Kafka answers a fetch as soon as data arrives; tansu holds it
            // until this deadline, which then bounds freshness. 10 ms costs
            // ~100 idle fetches/s. Overridable in [sync.kafka].
            .set("fetch.wait.max.ms", "10");
        for (k, v) in &config.kafka {
            c.set(k, v);
        }
        c
    }

    /// Runs forever: (re)connects, resumes from the stored positions, applies.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.session().await {
                METRICS.sync_broker_up.set(0);
                warn!(error = %e, "change stream session ended; retrying");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn session(&self) -> Result<(), String> {
        let consumer: StreamConsumer = Self::client_config(&self.config, &self.consumer_name)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|e| format!("consumer: {e}"))?;
        let consumer = Arc::new(consumer);
        let (partitions, missing) = self.partitions(&consumer).await?;
        if !missing.is_empty() {
            warn!(topics = ?missing, "topics not created yet (the connector makes one with its first record): reading the others meanwhile");
        }
        let stored = loop {
            match self
                .storefront
                .replica()
                .positions(&self.consumer_name)
                .await
            {
                Ok(p) => break p,
                Err(e) => {
                    self.storefront.report_error(&e);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &partitions {
            let next = stored
                .iter()
                .find(|p| &p.topic == topic && p.partition == *partition)
                .map(|p| p.next_offset);
            let offset = next.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(topic, *partition, offset)
                .map_err(|e| e.to_string())?;
            if let Some(n) = next {
                self.stats.set_next(topic, *partition, n);
            }
        }
        consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
        info!(consumer = %self.consumer_name, partitions = partitions.len(), resumed = stored.len(), "change stream assigned");
        let watcher = tokio::spawn(watch_lag(consumer.clone(), partitions, self.stats.clone()));
        let result = self.consume(&consumer, missing).await;
        watcher.abort();
        result
    }

    /// The partitions of the configured topics that exist, and the names of
    /// those that do not yet: Debezium creates a table's topic with its
    /// first record, so a table still empty has none. An error when the
    /// broker does not answer or no topic exists at all.
    async fn partitions(
        &self,
        consumer: &Arc<StreamConsumer>,
    ) -> Result<(Vec<(String, i32)>, Vec<String>), String> {
        let (mut found, mut missing) = (Vec::new(), Vec::new());
        for topic in &self.config.topics {
            let parts = topic_partitions(consumer, topic).await?;
            if parts.is_empty() {
                missing.push(topic.clone());
            }
            found.extend(parts.into_iter().map(|p| (topic.clone(), p)));
        }
        if found.is_empty() {
            return Err(format!("no topic exists yet: {missing:?}"));
        }
        Ok((found, missing))
    }

    /// Applies batches until a topic that was missing appears: then the
    /// session ends cleanly and the next one assigns it too. Only the wait
    /// for a batch is cut short, never the apply: nothing half-done is
    /// dropped (records taken but not applied are read again).
    async fn consume(
        &self,
        consumer: &Arc<StreamConsumer>,
        missing: Vec<String>,
    ) -> Result<(), String> {
        let appeared = appeared(consumer.clone(), missing);
        tokio::pin!(appeared);
        loop {
            let batch = tokio::select! {
                batch = self.next_batch(consumer) => batch,
                topic = &mut appeared => {
                    info!(%topic, "topic now exists: assigning it");
                    return Ok(());
                }
            };
            if !batch.is_empty() {
                self.process(batch).await;
            }
        }
    }

    /// Waits for one record, then takes whatever else is ready (bounded).
    async fn next_batch(&self, consumer: &StreamConsumer) -> Vec<Record> {
        let mut batch = Vec::new();
        let mut wait = Duration::from_secs(3600);
        while batch.len() < self.config.batch_max {
            match tokio::time::timeout(wait, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(Record {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                }),
                Ok(Err(e)) => {
                    // Broker outages surface here; librdkafka reconnects.
                    debug!(error = %e, "kafka");
                    if batch.is_empty() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    break;
                }
                Err(_) => break,
            }
            wait = Duration::from_millis(1);
        }
        batch
    }

    async fn process(&self, batch: Vec<Record>) {
        let mut events = Vec::with_capacity(batch.len());
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for r in &batch {
            next.insert((r.topic.clone(), r.partition), r.offset + 1);
            match event::decode(&r.topic, r.value.as_deref()) {
                Ok(Decoded::Event(e)) => events.push(e),
                Ok(Decoded::Skip(kind)) => {
                    debug!(topic = %r.topic, partition = r.partition, offset = r.offset, kind = kind.as_str(), "skipped record");
                    METRICS.events.with_label_values(&["skipped"]).inc();
                    METRICS.skipped.with_label_values(&[kind.as_str()]).inc();
                }
                Err(Malformed(why)) => {
                    warn!(topic = %r.topic, partition = r.partition, offset = r.offset, error = %why, "malformed change event skipped");
                    METRICS.events.with_label_values(&["malformed"]).inc();
                    self.dead_letter(r, &why);
                }
            }
        }
        let positions: Vec<Position> = next
            .iter()
            .map(|((topic, partition), n)| Position {
                topic: topic.clone(),
                partition: *partition,
                next_offset: *n,
            })
            .collect();

        // The replica is the only place the position moves forward: retry
        // until it takes the batch, so nothing is skipped while it is down.
        let mut backoff = Duration::from_millis(100);
        let outcomes = loop {
            match self
                .storefront
                .replica()
                .apply(&self.consumer_name, &events, &positions)
                .await
            {
                Ok(o) => break o,
                Err(e) => {
                    self.storefront.report_error(&e);
                    warn!(error = %e, retry_in = ?backoff, "replica write failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        self.storefront.apply(&outcomes).await;

        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for (e, o) in events.iter().zip(&outcomes) {
            let result = match o {
                Outcome::StaleDomain(_) | Outcome::StalePage(..) => "stale",
                Outcome::Truncated(table, rows) => {
                    info!(table = table.name(), rows, "table truncated at the primary");
                    "truncated"
                }
                Outcome::Incomplete(why) => {
                    warn!(error = %why, "change event skipped");
                    "incomplete"
                }
                _ => {
                    if let Some(ts) = e.source_ts_ms {
                        METRICS
                            .freshness
                            .observe(((now_ms - ts).max(0) as f64) / 1000.0);
                    }
                    "applied"
                }
            };
            METRICS.events.with_label_values(&[result]).inc();
        }
        for p in &positions {
            self.stats.set_next(&p.topic, p.partition, p.next_offset);
        }
    }

    fn dead_letter(&self, r: &Record, why: &str) {
        let (Some(producer), Some(topic)) = (&self.dead_letters, &self.config.dead_letter_topic)
        else {
            return;
        };
        let source = format!("{}/{}/{}", r.topic, r.partition, r.offset);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "edgepop-source",
                value: Some(source.as_str()),
            })
            .insert(Header {
                key: "edgepop-error",
                value: Some(why),
            });
        let mut record = FutureRecord::to(topic).headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            record = record.payload(v.as_slice());
        }
        if let Err((e, _)) = producer.send_result(record) {
            warn!(error = %e, %source, "could not queue dead letter");
        }
    }
}

/// The partition ids of `topic` (none when it does not exist).
async fn topic_partitions(consumer: &Arc<StreamConsumer>, topic: &str) -> Result<Vec<i32>, String> {
    let (c, t) = (consumer.clone(), topic.to_string());
    let md =
        tokio::task::spawn_blocking(move || c.fetch_metadata(Some(&t), Duration::from_secs(5)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("metadata for {topic}: {e}"))?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Resolves with the first of `missing` that exists (checked every 2 s);
/// never, when nothing is missing.
async fn appeared(consumer: Arc<StreamConsumer>, missing: Vec<String>) -> String {
    if missing.is_empty() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        for topic in &missing {
            if topic_partitions(&consumer, topic)
                .await
                .is_ok_and(|p| !p.is_empty())
            {
                return topic.clone();
            }
        }
    }
}

/// Polls the broker's high watermarks to report how far behind we are.
async fn watch_lag(
    consumer: Arc<StreamConsumer>,
    partitions: Vec<(String, i32)>,
    stats: Arc<SyncStats>,
) {
    loop {
        let mut answered = false;
        for (topic, partition) in &partitions {
            let (c, t, p) = (consumer.clone(), topic.clone(), *partition);
            if let Ok(Ok((_, high))) = tokio::task::spawn_blocking(move || {
                c.fetch_watermarks(&t, p, Duration::from_secs(2))
            })
            .await
            {
                stats.set_high(topic, *partition, high);
                answered = true;
            }
        }
        // Without answers the lag above stands still: this says why.
        METRICS.sync_broker_up.set(answered as i64);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
