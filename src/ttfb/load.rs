//! The workers: per target, `connections` of them, each with its own
//! connection. Closed model: the next request when the last is done. Open
//! model: a pacer thread releases slot `i` (`start + i / rate`) into the
//! target's queue and the first free connection takes it; a request that
//! waited there for a connection counts from its release (the correction
//! for coordinated omission, as oha's), so a stall shows in every request
//! it held up. How far the pacer itself fell behind its slots is the
//! tool's own lag: measured apart (`schedule_lag`), not charged to the
//! server.

use super::conn::{Conn, Dialer};
use super::plan::{Model, Plan, Stop, Target, TICK};
use super::quic::Endpoints;
use super::sample::{route, Answer, ErrorKind, Laps, Phases, Sample, ServerTiming};
use super::summary::{Aggregator, Report};
use http::header::CONNECTION;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

struct Shared {
    plan: Plan,
    dialer: Dialer,
    start: Instant,
    /// Requests claimed per target (`Stop::Requests`).
    claimed: Vec<AtomicU64>,
    /// The next fresh name's number (first-handshake mode).
    next_name: AtomicU64,
}

/// Runs `plan` to its end and returns what was measured.
pub async fn run(plan: Plan) -> Result<Report, String> {
    if plan.targets.is_empty() || plan.connections == 0 {
        return Err("nothing to load: give a URL and at least one connection".into());
    }
    let dialer = Dialer::new(&plan)?;
    let mut csv = match &plan.csv {
        Some(path) => {
            Some(csv::Writer::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        claimed: plan.targets.iter().map(|_| AtomicU64::new(0)).collect(),
        next_name: AtomicU64::new(1),
        dialer,
        start: Instant::now(),
        plan,
    });
    let (tx, mut rx) = mpsc::channel::<Sample>(8192);
    let (targets, connections) = (shared.plan.targets.len(), shared.plan.connections);
    // Workers are dealt round-robin to threads of their own, each with a
    // single-threaded runtime (as oha and nginx's workers): a worker and
    // its connection's task never wake each other across threads.
    let threads = shared.plan.threads.clamp(1, targets * connections);
    let mut dealt: Vec<Vec<(usize, Pace)>> = (0..threads).map(|_| Vec::new()).collect();
    let mut slots = Vec::new();
    for t in 0..targets {
        let (send, receive) = mpsc::unbounded_channel();
        let queue = Arc::new(tokio::sync::Mutex::new(receive));
        slots.push(send);
        for w in 0..connections {
            let pace = match shared.plan.model {
                Model::Closed => Pace::Closed,
                Model::Open { .. } => Pace::Open(queue.clone()),
            };
            dealt[(t * connections + w) % threads].push((t, pace));
        }
    }
    for (i, workers) in dealt.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("worker runtime: {e}"))?;
        let (shared, tx) = (shared.clone(), tx.clone());
        std::thread::Builder::new()
            .name(format!("ttfb-worker-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    // The thread's QUIC endpoints (--http3), on its runtime.
                    let endpoints = Arc::new(Endpoints::default());
                    let mut set = tokio::task::JoinSet::new();
                    for (t, pace) in workers {
                        let (sh, tx, ep) = (shared.clone(), tx.clone(), endpoints.clone());
                        set.spawn(worker(sh, t, pace, tx, ep));
                    }
                    while set.join_next().await.is_some() {}
                    drop(tx);
                    endpoints.close().await;
                })
            })
            .map_err(|e| format!("worker thread: {e}"))?;
    }
    if let Model::Open { rate } = shared.plan.model {
        let (start, stop) = (shared.start, shared.plan.stop);
        std::thread::Builder::new()
            .name("ttfb-pacer".into())
            .spawn(move || pace(start, rate, stop, slots))
            .map_err(|e| format!("pacer thread: {e}"))?;
    }
    drop(tx);

    let progress = progress_bar(&shared.plan);
    let mut agg = Aggregator::new(&shared.plan);
    let names: Vec<String> = shared.plan.targets.iter().map(Target::name).collect();
    if let Some(w) = &mut csv {
        w.write_record(super::render::csv_header())
            .map_err(|e| e.to_string())?;
    }
    // Drained every few milliseconds rather than woken per sample: a wake
    // of this thread per request cost the workers a third of their time.
    let mut drawn = Instant::now();
    'run: loop {
        loop {
            match rx.try_recv() {
                Ok(sample) => {
                    if let Some(w) = &mut csv {
                        w.write_record(super::render::csv_row(&names, &sample))
                            .map_err(|e| e.to_string())?;
                    }
                    agg.add(sample);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => break 'run,
            }
        }
        if drawn.elapsed() >= Duration::from_millis(200) {
            progress.update(&agg, shared.start.elapsed());
            drawn = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    progress.bar.finish_and_clear();
    if let Some(w) = &mut csv {
        w.flush().map_err(|e| e.to_string())?;
    }
    Ok(agg.report(shared.start.elapsed()))
}

/// How a worker learns when to send: as soon as it can (closed model),
/// or at the next slot of its target's queue (open model).
enum Pace {
    Closed,
    Open(Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Release>>>),
}

/// A slot of the open model, and when the pacer got to release it.
#[derive(Clone, Copy)]
struct Release {
    slot: Instant,
    at: Instant,
}

/// The open model's clock, on a thread of its own (not a worker's
/// runtime, busy with requests). Each slot goes to every target's queue.
/// When every connection is busy the slots wait there, and the time they
/// wait counts in their requests: the coordinated-omission correction.
fn pace(start: Instant, rate: f64, stop: Stop, queues: Vec<mpsc::UnboundedSender<Release>>) {
    // The default 50 µs of timer slack would be lateness in every slot.
    // SAFETY: prctl with an integer argument touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    for i in 0u64.. {
        let slot = start + Duration::from_secs_f64(i as f64 / rate);
        match stop {
            Stop::After(d) if slot >= start + d => break,
            Stop::Requests(n) if i >= n => break,
            _ => {}
        }
        // Slots come due in ticks: one wake-up releases all that are due,
        // rather than one wake-up of a worker thread per request.
        let now = Instant::now();
        if slot > now {
            std::thread::sleep((slot - now).max(TICK));
        }
        let release = Release {
            slot,
            at: Instant::now(),
        };
        let mut listening = false;
        for queue in &queues {
            listening |= queue.send(release).is_ok();
        }
        if !listening {
            break;
        }
    }
}

async fn worker(
    sh: Arc<Shared>,
    t: usize,
    mut pace: Pace,
    tx: mpsc::Sender<Sample>,
    endpoints: Arc<Endpoints>,
) {
    let plan = &sh.plan;
    let target = &plan.targets[t];
    let mut conn: Option<Conn> = None;
    let target_host: Arc<str> = target.host().into();
    loop {
        let release = match &mut pace {
            Pace::Open(queue) => match queue.lock().await.recv().await {
                Some(release) => Some(release),
                None => break,
            },
            Pace::Closed => {
                let done = match plan.stop {
                    Stop::After(d) => sh.start.elapsed() >= d,
                    Stop::Requests(n) => sh.claimed[t].fetch_add(1, Ordering::Relaxed) >= n,
                };
                if done {
                    break;
                }
                None
            }
        };
        let began = Instant::now();
        let host = match &plan.names {
            Some(pattern) => {
                Plan::fresh_name(pattern, sh.next_name.fetch_add(1, Ordering::Relaxed)).into()
            }
            None => target_host.clone(),
        };
        let mut phases = Phases {
            queue: release
                .map(|r| began.saturating_duration_since(r.at))
                .unwrap_or_default(),
            ..Phases::default()
        };
        let mut reused = false;
        let outcome = tokio::time::timeout(
            plan.timeout,
            one(
                &sh,
                target,
                &host,
                &mut conn,
                (&mut phases, &mut Laps::from(began)),
                &mut reused,
                &endpoints,
            ),
        )
        .await
        .unwrap_or(Err(ErrorKind::Timeout));
        let total = phases.queue + began.elapsed();
        if outcome.is_err() {
            conn = None;
        }
        let sample = Sample {
            target: t,
            sent_at: began - sh.start,
            host,
            reused,
            phases,
            total,
            behind: release
                .map(|r| r.at.saturating_duration_since(r.slot))
                .unwrap_or_default(),
            outcome,
        };
        if tx.send(sample).await.is_err() {
            break;
        }
    }
}

/// One request on `conn` (opened, or opened again, as needed); its
/// phases are laps of one stopwatch, started when the request began.
async fn one(
    sh: &Shared,
    target: &Target,
    host: &str,
    conn: &mut Option<Conn>,
    (phases, laps): (&mut Phases, &mut Laps),
    reused: &mut bool,
    endpoints: &Endpoints,
) -> Result<Answer, ErrorKind> {
    let fresh = sh.plan.new_connections || sh.plan.names.is_some();
    *reused = false;
    if let (false, Some(c)) = (fresh, conn.as_mut()) {
        // A keep-alive connection the server has closed is opened again,
        // as a browser would: not an error.
        *reused = c.ready().await;
    }
    if !*reused {
        *conn = None;
        *conn = Some(open(sh, target, host, (&mut *phases, &mut *laps), endpoints).await?);
    }
    let mut c = conn.as_mut().expect("opened above");
    let mut resp = c.send(c.request(&sh.plan, target, host)).await?;
    if resp.is_none() && *reused {
        // h3: the server's GOAWAY came before the request went out (nothing
        // was sent); opened again, as a keep-alive connection it closed.
        *reused = false;
        let again = open(sh, target, host, (&mut *phases, &mut *laps), endpoints).await?;
        c = conn.insert(again);
        resp = c.send(c.request(&sh.plan, target, host)).await?;
    }
    let resp = resp.ok_or(ErrorKind::Http)?;
    let protocol = c.protocol();
    phases.ttfb = laps.split();
    let headers = resp.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let timing = ServerTiming::parse(
        headers
            .get_all("server-timing")
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let route = route(text("x-edge-route"));
    let cache = text("x-edge-cache").unwrap_or("-").to_string();
    let close = text(CONNECTION.as_str()).is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let status = resp.status().as_u16();
    let bytes = resp.into_body().read_to_end().await?;
    phases.transfer = laps.split();
    if close {
        *conn = None;
    }
    Ok(Answer {
        status,
        bytes,
        protocol,
        route,
        cache,
        timing,
    })
}

/// A new connection, ready for a request.
async fn open(
    sh: &Shared,
    target: &Target,
    host: &str,
    (phases, laps): (&mut Phases, &mut Laps),
    endpoints: &Endpoints,
) -> Result<Conn, ErrorKind> {
    let mut c = sh
        .dialer
        .open(target, host, phases, laps, endpoints)
        .await?;
    if !c.ready().await {
        return Err(ErrorKind::Http);
    }
    Ok(c)
}

/// A bar on a terminal's stderr, nothing otherwise.
struct Progress {
    bar: ProgressBar,
    by_time: bool,
}

fn progress_bar(plan: &Plan) -> Progress {
    use std::io::IsTerminal;
    let (len, by_time) = match plan.stop {
        Stop::After(d) => (d.as_millis() as u64, true),
        Stop::Requests(n) => (n * plan.targets.len() as u64, false),
    };
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if plan.progress && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {percent:>3}% {msg}") {
        bar.set_style(style);
    }
    Progress { bar, by_time }
}

impl Progress {
    fn update(&self, agg: &Aggregator, elapsed: Duration) {
        if self.bar.is_hidden() {
            return;
        }
        let (requests, errors, p99) = agg.so_far();
        self.bar.set_position(if self.by_time {
            elapsed.as_millis() as u64
        } else {
            requests
        });
        self.bar.set_message(format!(
            "{requests} requests, {errors} errors, p99 {p99:.2} ms"
        ));
    }
}
