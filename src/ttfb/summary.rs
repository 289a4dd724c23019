//! Samples folded into HDR histograms (microseconds, 3 significant
//! digits): per target, and per group of target × PoP route × cache status
//! × status code. `Report` is the result, and the JSON the tool writes
//! (`docs/ttfb.schema.json` describes it).

use super::plan::{Model, Plan, Protocol};
use super::sample::{pop_label, ErrorKind, Phases, Sample, ServerTiming};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

pub const SCHEMA: &str = "edgepop-ttfb/1";

/// Percentiles on the report's curves.
const CURVE: [f64; 13] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
];

type Hist = Histogram<u64>;

fn hist() -> Hist {
    // 1 µs to an hour: more than any timeout the tool allows.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

fn record(h: &mut Hist, d: Duration) {
    h.saturating_record(micros(d));
}

/// A distribution in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dist {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Microseconds as milliseconds (three decimals: the µs stay).
fn ms(us: f64) -> f64 {
    us.round() / 1000.0
}

impl Dist {
    fn of(h: &Hist) -> Dist {
        let at = |q: f64| ms(h.value_at_quantile(q) as f64);
        Dist {
            count: h.len(),
            min_ms: ms(h.min() as f64),
            mean_ms: ms(h.mean()),
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms(h.max() as f64),
        }
    }
}

#[derive(Clone)]
struct Group {
    requests: u64,
    new_connections: u64,
    bytes: u64,
    latency: Hist,
    uncorrected: Hist,
    phases: [Hist; 6],
    /// TLS handshakes of the group's new connections.
    handshakes: Hist,
    timing: [Hist; 4],
}

impl Group {
    fn new() -> Group {
        Group {
            requests: 0,
            new_connections: 0,
            bytes: 0,
            latency: hist(),
            uncorrected: hist(),
            phases: std::array::from_fn(|_| hist()),
            handshakes: hist(),
            timing: std::array::from_fn(|_| hist()),
        }
    }
}

struct TargetAgg {
    requests: u64,
    errors: BTreeMap<ErrorKind, u64>,
    latency: Hist,
    uncorrected: Hist,
    behind: Hist,
    first: Option<Duration>,
    last: Duration,
}

/// (target, route, cache, status)
type GroupKey = (usize, Vec<String>, String, u16);

/// Folds samples as they come.
pub struct Aggregator {
    plan: Plan,
    targets: Vec<TargetAgg>,
    groups: BTreeMap<GroupKey, Group>,
    malformed: u64,
    all: Hist,
    errors: u64,
}

impl Aggregator {
    pub fn new(plan: &Plan) -> Aggregator {
        Aggregator {
            targets: plan
                .targets
                .iter()
                .map(|_| TargetAgg {
                    requests: 0,
                    errors: BTreeMap::new(),
                    latency: hist(),
                    uncorrected: hist(),
                    behind: hist(),
                    first: None,
                    last: Duration::ZERO,
                })
                .collect(),
            plan: plan.clone(),
            groups: BTreeMap::new(),
            malformed: 0,
            all: hist(),
            errors: 0,
        }
    }

    /// Takes the sample: its route and cache status become the group's
    /// key without a copy.
    pub fn add(&mut self, s: Sample) {
        let t = &mut self.targets[s.target];
        t.requests += 1;
        t.first = Some(t.first.map_or(s.sent_at, |f| f.min(s.sent_at)));
        t.last = t.last.max(s.sent_at + s.uncorrected());
        record(&mut t.behind, s.behind);
        let uncorrected = s.uncorrected();
        let answer = match s.outcome {
            Ok(a) => a,
            Err(kind) => {
                *t.errors.entry(kind).or_default() += 1;
                self.errors += 1;
                return;
            }
        };
        record(&mut t.latency, s.total);
        record(&mut t.uncorrected, uncorrected);
        record(&mut self.all, s.total);
        self.malformed += u64::from(answer.timing.malformed);
        let key = (s.target, answer.route, answer.cache, answer.status);
        let g = self.groups.entry(key).or_insert_with(Group::new);
        g.requests += 1;
        g.new_connections += u64::from(!s.reused);
        g.bytes += answer.bytes;
        record(&mut g.latency, s.total);
        record(&mut g.uncorrected, uncorrected);
        if !s.reused && !s.phases.tls.is_zero() {
            record(&mut g.handshakes, s.phases.tls);
        }
        for (h, d) in g.phases.iter_mut().zip(s.phases.each()) {
            record(h, d);
        }
        for (h, part) in g.timing.iter_mut().zip(answer.timing.parts) {
            if let Some(ms) = part {
                record(h, Duration::from_secs_f64(ms / 1000.0));
            }
        }
    }

    /// (requests, errors, p99 ms) so far, for the progress bar.
    pub fn so_far(&self) -> (u64, u64, f64) {
        let requests = self.targets.iter().map(|t| t.requests).sum();
        let p99 = self.all.value_at_quantile(0.99) as f64 / 1000.0;
        (requests, self.errors, p99)
    }

    pub fn report(&self, elapsed: Duration) -> Report {
        let open = matches!(self.plan.model, Model::Open { .. });
        let targets = self
            .plan
            .targets
            .iter()
            .zip(&self.targets)
            .map(|(target, agg)| {
                let ok = agg.latency.len();
                let span = agg.last.saturating_sub(agg.first.unwrap_or_default());
                TargetReport {
                    name: target.name(),
                    url: target.url.to_string(),
                    address: target.addr.map(|a| a.to_string()),
                    requests: agg.requests,
                    responses: ok,
                    errors: agg
                        .errors
                        .iter()
                        .map(|(k, n)| (k.as_str().to_string(), *n))
                        .collect(),
                    rate_rps: if span.is_zero() {
                        0.0
                    } else {
                        (agg.requests as f64 / span.as_secs_f64() * 10.0).round() / 10.0
                    },
                    latency: (ok > 0).then(|| Dist::of(&agg.latency)),
                    uncorrected_latency: (open && ok > 0).then(|| Dist::of(&agg.uncorrected)),
                    schedule_lag: open.then(|| Dist::of(&agg.behind)),
                }
            })
            .collect();
        let groups = self
            .groups
            .iter()
            .map(|((target, route, cache, status), g)| GroupReport {
                target: *target,
                pop: pop_label(route),
                route: route.clone(),
                cache: cache.clone(),
                status: *status,
                requests: g.requests,
                new_connections: g.new_connections,
                bytes: g.bytes,
                latency: Dist::of(&g.latency),
                uncorrected_latency: open.then(|| Dist::of(&g.uncorrected)),
                phases: Phases::NAMES
                    .iter()
                    .zip(&g.phases)
                    .map(|(n, h)| (n.to_string(), Dist::of(h)))
                    .collect(),
                handshakes: (!g.handshakes.is_empty()).then(|| Dist::of(&g.handshakes)),
                server_timing: ServerTiming::NAMES
                    .iter()
                    .zip(&g.timing)
                    .filter(|(_, h)| !h.is_empty())
                    .map(|(n, h)| (n.to_string(), Dist::of(h)))
                    .collect(),
            })
            .collect();
        Report {
            schema: SCHEMA,
            model: ModelReport {
                kind: if open { "open" } else { "closed" },
                rate_rps: match self.plan.model {
                    Model::Open { rate } => Some(rate),
                    Model::Closed => None,
                },
                connections: self.plan.connections,
                protocol: match self.plan.protocol {
                    Protocol::Auto => "auto",
                    Protocol::Http1 => "http1",
                    Protocol::Http2 => "http2",
                    Protocol::Http3 => "http3",
                },
                new_connections: self.plan.new_connections || self.plan.names.is_some(),
                first_handshake: self.plan.names.clone(),
            },
            elapsed_s: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            targets,
            groups,
            curves: self.curves(),
            server_timing_malformed: self.malformed,
        }
    }

    /// The latency percentile curve of each target × PoP route.
    fn curves(&self) -> Vec<Curve> {
        let mut merged: BTreeMap<(usize, &[String]), Hist> = BTreeMap::new();
        for ((target, route, _, _), g) in &self.groups {
            let h = merged.entry((*target, route)).or_insert_with(hist);
            h.add(&g.latency).expect("same bounds");
        }
        merged
            .into_iter()
            .map(|((target, route), h)| Curve {
                target,
                pop: pop_label(route),
                points: CURVE
                    .iter()
                    .map(|p| [*p, ms(h.value_at_quantile(p / 100.0) as f64)])
                    .collect(),
            })
            .collect()
    }
}

/// What a run measured (the JSON output).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub model: ModelReport,
    pub elapsed_s: f64,
    pub targets: Vec<TargetReport>,
    pub groups: Vec<GroupReport>,
    pub curves: Vec<Curve>,
    pub server_timing_malformed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub kind: &'static str,
    pub rate_rps: Option<f64>,
    pub connections: usize,
    pub protocol: &'static str,
    pub new_connections: bool,
    pub first_handshake: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub name: String,
    pub url: String,
    pub address: Option<String>,
    pub requests: u64,
    pub responses: u64,
    pub errors: BTreeMap<String, u64>,
    pub rate_rps: f64,
    /// Corrected for coordinated omission in the open model.
    pub latency: Option<Dist>,
    /// Open model only: from when each request was actually sent.
    pub uncorrected_latency: Option<Dist>,
    /// Open model only: how late the tool released requests after their
    /// slots (its own lag; high values mean the load was burstier than
    /// asked: the machine running the tool is short of CPU).
    pub schedule_lag: Option<Dist>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// Index into `targets`.
    pub target: usize,
    /// The answering PoP, or the relay chain (`fra1 > ams1`); `-`: no edge.
    pub pop: String,
    pub route: Vec<String>,
    pub cache: String,
    pub status: u16,
    pub requests: u64,
    pub new_connections: u64,
    pub bytes: u64,
    pub latency: Dist,
    pub uncorrected_latency: Option<Dist>,
    /// queue, dns, connect, tls, ttfb, transfer: consecutive laps, their
    /// means add up to the latency's mean.
    pub phases: BTreeMap<String, Dist>,
    /// TLS handshakes on the group's new connections (first handshakes in
    /// first-handshake mode); `None` without any.
    pub handshakes: Option<Dist>,
    /// The `server-timing` parts the responses carried.
    pub server_timing: BTreeMap<String, Dist>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub target: usize,
    pub pop: String,
    /// [percentile, latency ms]
    pub points: Vec<[f64; 2]>,
}
