//! Prometheus metrics of the node, in one registry.

use prometheus::{
    exponential_buckets, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;
use std::time::Duration;

mod quic;
pub use quic::QuicMetrics;

pub struct Metrics {
    pub registry: Registry,
    pub quic: QuicMetrics,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub backend_inflight: IntGaugeVec,
    pub backend_up: IntGaugeVec,
    pub reloads: IntCounterVec,
    pub events: IntCounterVec,
    pub skipped: IntCounterVec,
    pub freshness: Histogram,
    pub records_behind: IntGaugeVec,
    pub cache_entries: IntGaugeVec,
    pub cache_bytes: IntGaugeVec,
    pub replica_up: IntGauge,
    pub access_log_dropped: IntGauge,
    pub replica_reads: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub connections_open: IntGauge,
    pub connections_parked: IntGauge,
    pub connections_refused: IntCounterVec,
    pub client_limits: IntCounterVec,
    pub client_cancelled: IntCounterVec,
    pub fast_path: IntCounterVec,
    pub tls_issuance: IntCounterVec,
    pub tls_issuance_failures: IntCounterVec,
    pub tls_issue_seconds: Histogram,
    pub tls_pending: IntGauge,
    pub tls_challenges: IntCounterVec,
    pub peer_handshakes: IntCounterVec,
    pub relays: IntCounterVec,
    pub relays_refused: IntCounterVec,
    pub peer_up: IntGaugeVec,
    pub overflow: IntCounterVec,
    pub ready: IntGauge,
    pub build_info: IntGaugeVec,
    pub tls_held: IntGauge,
    pub tls_soonest_expiry: Gauge,
    pub page_compression: IntCounterVec,
    pub page_compression_seconds: Histogram,
    pub page_bytes: IntGaugeVec,
    pub encoded_responses: IntCounterVec,
    pub sync_broker_up: IntGauge,
    pub tls_ahead: IntCounterVec,
    pub tls_ahead_queued: IntGauge,
    pub tls_issuer_orders: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new_custom(Some("edgepop".into()), None).expect("registry");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Responses sent, by status, x-edge-cache and the site's tier (none: no site, e.g. 421)",
            ),
            &["status", "cache", "tier"],
        )
        .expect("metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request to end of response",
            )
            .buckets(exponential_buckets(0.0001, 2.0, 18).expect("buckets")),
            &["cache"],
        )
        .expect("metric");
        let backend_inflight = IntGaugeVec::new(
            Opts::new("backend_inflight", "Requests in flight per origin server"),
            &["pool", "backend"],
        )
        .expect("metric");
        let backend_up = IntGaugeVec::new(
            Opts::new(
                "backend_up",
                "1 when the origin server takes requests (healthy, not ejected)",
            ),
            &["pool", "backend"],
        )
        .expect("metric");
        let reloads = IntCounterVec::new(
            Opts::new("config_reloads_total", "Config reloads by result"),
            &["result"],
        )
        .expect("metric");
        let events = IntCounterVec::new(
            Opts::new(
                "sync_events_total",
                "Change events by result: applied, stale, truncated, malformed, skipped, incomplete",
            ),
            &["result"],
        )
        .expect("metric");
        let skipped = IntCounterVec::new(
            Opts::new(
                "sync_skipped_total",
                "Records without a row change, by kind: tombstone, heartbeat, transaction, message",
            ),
            &["kind"],
        )
        .expect("metric");
        let freshness = Histogram::with_opts(
            HistogramOpts::new(
                "sync_freshness_seconds",
                "Commit at the primary (source.ts_ms) to visible at this edge",
            )
            .buckets(exponential_buckets(0.001, 2.0, 16).expect("buckets")),
        )
        .expect("metric");
        let records_behind = IntGaugeVec::new(
            Opts::new(
                "sync_records_behind",
                "Records on the broker not yet applied, per partition",
            ),
            &["topic", "partition"],
        )
        .expect("metric");
        let cache_entries = IntGaugeVec::new(
            Opts::new("cache_entries", "Entries held, by cache"),
            &["cache"],
        )
        .expect("metric");
        let cache_bytes = IntGaugeVec::new(
            Opts::new("cache_weight", "Weight held (bytes for pages)"),
            &["cache"],
        )
        .expect("metric");
        let replica_up = IntGauge::new("replica_up", "1 when the replica answers").expect("metric");
        let access_log_dropped = IntGauge::new(
            "access_log_lines_dropped",
            "Access-log lines dropped since start because the log writer was 128,000 lines behind (the log's disk slower than the traffic)",
        )
        .expect("metric");
        let replica_reads = IntCounterVec::new(
            Opts::new(
                "replica_reads_total",
                "Lookups sent to the replica (cache misses), by what",
            ),
            &["what"],
        )
        .expect("metric");
        let connections_open = IntGauge::new(
            "connections_open",
            "Client connections held (HTTP, HTTPS and QUIC listeners)",
        )
        .expect("metric");
        let connections_parked = IntGauge::new(
            "connections_parked",
            "Idle keep-alive connections parked as their socket alone (conn/park.rs)",
        )
        .expect("metric");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "connections_refused_total",
                "Client connections closed at accept, by the limit reached: total (server.max_connections), per_client (server.max_connections_per_client)",
            ),
            &["limit"],
        )
        .expect("metric");
        let client_limits = IntCounterVec::new(
            Opts::new(
                "client_limits_total",
                "Requests ended by a client limit: head_too_large (431, proxy.max_head_bytes), head_timeout (408, proxy.head_timeout), body_timeout (408, proxy.body_timeout)",
            ),
            &["limit"],
        )
        .expect("metric");
        let client_cancelled = IntCounterVec::new(
            Opts::new(
                "client_cancelled_total",
                "Requests the client gave up on (HTTP/2 stream reset, connection closed), by when: before_origin (no origin saw it), in_flight",
            ),
            &["when"],
        )
        .expect("metric");
        let fast_path = IntCounterVec::new(
            Opts::new(
                "fast_path_total",
                "Requests offered to the fast path (proxy.fast_path), by outcome: answered (by the edge, before pingora-proxy), proxied (to an origin server, before pingora-proxy), declined (on to Pingora's phases)",
            ),
            &["outcome"],
        )
        .expect("metric");
        let tls_handshakes = IntCounterVec::new(
            Opts::new(
                "tls_handshakes_total",
                "TLS handshakes by result: ok, refused, failed",
            ),
            &["result"],
        )
        .expect("metric");
        let tls_issuance = IntCounterVec::new(
            Opts::new(
                "tls_issuance_total",
                "Certificate issuance by result: issued, renewed, failed, renew_failed, rate_limited, from_store",
            ),
            &["result"],
        )
        .expect("metric");
        let tls_issuance_failures = IntCounterVec::new(
            Opts::new(
                "tls_issuance_failures_total",
                "Failed issuances (result=failed above) by cause: ca_refused, rate_limited, ca_unreachable, challenge, timeout, store, other",
            ),
            &["cause"],
        )
        .expect("metric");
        let tls_issue_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tls_issue_seconds",
                "Time to obtain a certificate from the issuer",
            )
            .buckets(exponential_buckets(0.005, 2.0, 14).expect("buckets")),
        )
        .expect("metric");
        let tls_pending = IntGauge::new(
            "tls_pending",
            "Certificate issuances in progress on this node (waiting on the CA or a peer's lock)",
        )
        .expect("metric");
        let tls_challenges = IntCounterVec::new(
            Opts::new(
                "tls_challenges_answered_total",
                "ACME validation requests answered from the store, by challenge type",
            ),
            &["type"],
        )
        .expect("metric");
        let peer_handshakes = IntCounterVec::new(
            Opts::new(
                "peer_handshakes_total",
                "Mutual-TLS handshakes on the peer listener by result: ok, refused (no certificate from the PoP CA, or none naming a PoP)",
            ),
            &["result"],
        )
        .expect("metric");
        let relays = IntCounterVec::new(
            Opts::new(
                "relays_total",
                "Requests relayed to a peer PoP, by peer and reason: no_origin, replica_down, overflow",
            ),
            &["peer", "reason"],
        )
        .expect("metric");
        let relays_refused = IntCounterVec::new(
            Opts::new(
                "relays_refused_total",
                "Relayed requests this PoP refused, by reason: loop, route (the chain does not end with the peer that sent it)",
            ),
            &["reason"],
        )
        .expect("metric");
        let peer_up = IntGaugeVec::new(
            Opts::new(
                "peer_up",
                "1 while a peer PoP answers its readiness check as ready",
            ),
            &["peer"],
        )
        .expect("metric");
        let overflow = IntCounterVec::new(
            Opts::new(
                "overflow_total",
                "Requests that found every origin server of their pool at its hard limit, by outcome: relayed, waited (got a slot), refused (503)",
            ),
            &["outcome"],
        )
        .expect("metric");
        let ready = IntGauge::new(
            "ready",
            "1 while /readyz answers ready (the anycast companion announces the prefix), 0 otherwise",
        )
        .expect("metric");
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Always 1: the running binary's version"),
            &["version"],
        )
        .expect("metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let tls_held = IntGauge::new(
            "tls_certificates_held",
            "Certificates this node holds in memory (obtained or loaded on demand, and static)",
        )
        .expect("metric");
        let tls_soonest_expiry = Gauge::new(
            "tls_certificate_soonest_expiry_timestamp_seconds",
            "Not-after (unix time) of the soonest-expiring certificate held; +Inf when none is held",
        )
        .expect("metric");
        tls_soonest_expiry.set(f64::INFINITY);
        let page_compression = IntCounterVec::new(
            Opts::new(
                "page_compression_total",
                "Page variant jobs by result: made, none_kept (no coding saved compression.min_saving), superseded (replaced, removed or evicted before its turn), dropped (queue full: asked again on the next hit), failed",
            ),
            &["result"],
        )
        .expect("metric");
        let page_compression_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "page_compression_seconds",
                "Time to make one page version's variants (every coding of compression.prefer)",
            )
            .buckets(exponential_buckets(0.0005, 2.0, 14).expect("buckets")),
        )
        .expect("metric");
        let page_bytes = IntGaugeVec::new(
            Opts::new(
                "cache_page_bytes",
                "Bytes of page bodies held, by representation: identity, br, zstd, gzip",
            ),
            &["encoding"],
        )
        .expect("metric");
        let encoded_responses = IntCounterVec::new(
            Opts::new(
                "encoded_responses_total",
                "Responses sent with a content coding, by coding and source: page (a stored variant), proxied (encoded as it streamed)",
            ),
            &["encoding", "source"],
        )
        .expect("metric");
        let sync_broker_up = IntGauge::new(
            "sync_broker_up",
            "1 while the Kafka broker answers the change stream's watermark queries (each second), 0 when none answered: sync_records_behind then stands still",
        )
        .expect("metric");
        let tls_ahead = IntCounterVec::new(
            Opts::new(
                "tls_ahead_total",
                "Domains made active by the change stream, by what their certificate ordered ahead became: issued_ahead (in memory before any handshake, obtained here or from the store), held (already held), held_for_renewal (stored, its renewal share begun: taken into memory to be renewed), failed_recently (the sweep leaves a name whose order failed within 24 h), refused (not active any more when its turn came), failed, dropped (queue full: left to the first handshake)",
            ),
            &["result"],
        )
        .expect("metric");
        let tls_ahead_queued = IntGauge::new(
            "tls_ahead_queued",
            "Domains waiting for their certificate to be ordered ahead",
        )
        .expect("metric");
        let tls_issuer_orders = IntCounterVec::new(
            Opts::new(
                "tls_issuer_orders_total",
                "Orders placed at each CA of tls.issuers, by result: issued, or the failure's cause (ca_refused, rate_limited, ca_unreachable, timeout, challenge, store, other); a failure other than challenge passes the order to the next CA",
            ),
            &["issuer", "result"],
        )
        .expect("metric");
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(tls_issuer_orders.clone()),
            Box::new(tls_ahead.clone()),
            Box::new(tls_ahead_queued.clone()),
            Box::new(sync_broker_up.clone()),
            Box::new(page_compression.clone()),
            Box::new(page_compression_seconds.clone()),
            Box::new(page_bytes.clone()),
            Box::new(encoded_responses.clone()),
            Box::new(ready.clone()),
            Box::new(build_info.clone()),
            Box::new(tls_held.clone()),
            Box::new(tls_soonest_expiry.clone()),
            Box::new(peer_handshakes.clone()),
            Box::new(relays.clone()),
            Box::new(relays_refused.clone()),
            Box::new(peer_up.clone()),
            Box::new(overflow.clone()),
            Box::new(client_limits.clone()),
            Box::new(client_cancelled.clone()),
            Box::new(fast_path.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_parked.clone()),
            Box::new(connections_refused.clone()),
            Box::new(tls_pending.clone()),
            Box::new(tls_challenges.clone()),
            Box::new(tls_handshakes.clone()),
            Box::new(tls_issuance.clone()),
            Box::new(tls_issuance_failures.clone()),
            Box::new(tls_issue_seconds.clone()),
            Box::new(replica_reads.clone()),
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(backend_inflight.clone()),
            Box::new(backend_up.clone()),
            Box::new(reloads.clone()),
            Box::new(events.clone()),
            Box::new(skipped.clone()),
            Box::new(freshness.clone()),
            Box::new(records_behind.clone()),
            Box::new(cache_entries.clone()),
            Box::new(cache_bytes.clone()),
            Box::new(replica_up.clone()),
            Box::new(access_log_dropped.clone()),
        ];
        for c in collectors {
            registry.register(c).expect("register");
        }
        Metrics {
            quic: QuicMetrics::register(&registry),
            registry,
            requests,
            latency,
            backend_inflight,
            backend_up,
            reloads,
            events,
            skipped,
            freshness,
            records_behind,
            cache_entries,
            cache_bytes,
            replica_up,
            access_log_dropped,
            replica_reads,
            tls_handshakes,
            connections_open,
            connections_parked,
            connections_refused,
            client_limits,
            client_cancelled,
            fast_path,
            tls_issuance,
            tls_issuance_failures,
            tls_issue_seconds,
            tls_pending,
            tls_challenges,
            peer_handshakes,
            relays,
            relays_refused,
            peer_up,
            overflow,
            ready,
            build_info,
            tls_held,
            tls_soonest_expiry,
            page_compression,
            page_compression_seconds,
            page_bytes,
            encoded_responses,
            sync_broker_up,
            tls_ahead,
            tls_ahead_queued,
            tls_issuer_orders,
        }
    }

    pub fn observe_request(&self, status: u16, cache: &str, tier: &str, elapsed: Duration) {
        let mut buf = itoa::Buffer::new();
        self.requests
            .with_label_values(&[buf.format(status), cache, tier])
            .inc();
        self.latency
            .with_label_values(&[cache])
            .observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> Vec<u8> {
        encode(&self.registry)
    }
}

/// The anycast companion's own metrics (`edgepop anycast`, a process apart
/// from the node): what BIRD was last told, and how the checks went.
pub struct AnycastMetrics {
    registry: Registry,
    pub announced: IntGauge,
    pub node_ready: IntGauge,
    pub checks: IntCounterVec,
    pub daemon_errors: IntCounter,
}

impl AnycastMetrics {
    pub fn new(prefix: &str) -> Self {
        let registry =
            Registry::new_custom(Some("edgepop_anycast".into()), None).expect("registry");
        let announced = IntGauge::with_opts(
            Opts::new(
                "announced",
                "1 when the BGP daemon last confirmed the prefix announced, 0 withdrawn (or not yet told)",
            )
            .const_label("prefix", prefix),
        )
        .expect("metric");
        let node_ready = IntGauge::new(
            "node_ready",
            "The node's last readiness check: 1 ready, 0 not",
        )
        .expect("metric");
        let checks = IntCounterVec::new(
            Opts::new(
                "checks_total",
                "Readiness checks of the node, by result: ready, not_ready",
            ),
            &["result"],
        )
        .expect("metric");
        for result in ["ready", "not_ready"] {
            checks.with_label_values(&[result]);
        }
        let daemon_errors = IntCounter::new(
            "daemon_errors_total",
            "Announce or withdraw commands the BGP daemon refused or did not answer",
        )
        .expect("metric");
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(announced.clone()),
            Box::new(node_ready.clone()),
            Box::new(checks.clone()),
            Box::new(daemon_errors.clone()),
        ];
        for c in collectors {
            registry.register(c).expect("register");
        }
        AnycastMetrics {
            registry,
            announced,
            node_ready,
            checks,
            daemon_errors,
        }
    }

    pub fn render(&self) -> Vec<u8> {
        encode(&self.registry)
    }
}

/// The text exposition format of everything in `registry`.
fn encode(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    out
}
