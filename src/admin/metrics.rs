//! Prometheus metrics of the node, in one registry.

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::LazyLock;
use std::time::Duration;

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub backend_inflight: IntGaugeVec,
    pub backend_up: IntGaugeVec,
    pub reloads: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new_custom(Some("edgepop".into()), None).expect("registry");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Responses sent, by status and x-edge-cache",
            ),
            &["status", "cache"],
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
        registry
            .register(Box::new(requests.clone()))
            .expect("register");
        registry
            .register(Box::new(latency.clone()))
            .expect("register");
        registry
            .register(Box::new(backend_inflight.clone()))
            .expect("register");
        registry
            .register(Box::new(backend_up.clone()))
            .expect("register");
        registry
            .register(Box::new(reloads.clone()))
            .expect("register");
        Metrics {
            registry,
            requests,
            latency,
            backend_inflight,
            backend_up,
            reloads,
        }
    }

    pub fn observe_request(&self, status: u16, cache: &str, elapsed: Duration) {
        let mut buf = itoa::Buffer::new();
        self.requests
            .with_label_values(&[buf.format(status), cache])
            .inc();
        self.latency
            .with_label_values(&[cache])
            .observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
