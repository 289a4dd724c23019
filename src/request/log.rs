//! One JSON line per request, written off the request path by a background
//! writer thread, and the request metrics.

use super::ctx::RequestCtx;
use crate::metrics::METRICS;
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, WorkerGuard};

static TARGET: OnceLock<String> = OnceLock::new();
// Started on first use, so a daemonising fork cannot lose the writer thread.
static WRITER: OnceLock<Option<NonBlocking>> = OnceLock::new();
static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);
// The writer's count of dropped lines, kept once (asked of the writer, it
// is an `Arc` cloned on every request).
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Where access lines go: "stdout", "off" or a file path. Set once at start.
pub fn configure(target: &str) {
    let _ = TARGET.set(target.to_string());
}

/// Opens the access log file again (SIGUSR1, after a rotation renamed it):
/// lines written before go to the renamed file, the next ones to a new file
/// at the configured path; none is lost or split between the two.
pub fn reopen() {
    REOPEN.store(true, Ordering::Relaxed);
}

/// Writes out what is queued (at exit).
pub fn flush() {
    drop(crate::locked(&GUARD).take());
}

fn writer() -> Option<&'static NonBlocking> {
    WRITER
        .get_or_init(|| {
            let target = TARGET.get().map(String::as_str).unwrap_or("stdout");
            let (nb, guard) = match target {
                "off" => return None,
                "stdout" => tracing_appender::non_blocking(std::io::stdout()),
                path => match LogFile::open(path) {
                    Ok(f) => tracing_appender::non_blocking(f),
                    Err(e) => {
                        tracing::error!(%path, "cannot open access log: {e}; using stdout");
                        tracing_appender::non_blocking(std::io::stdout())
                    }
                },
            };
            *crate::locked(&GUARD) = Some(guard);
            let _ = DROPPED.set(nb.error_counter());
            Some(nb)
        })
        .as_ref()
}

static REOPEN: AtomicBool = AtomicBool::new(false);

/// The access log as a file that can be opened again at its path, between
/// two lines (the writer thread writes each line whole, ending in `\n`).
struct LogFile {
    path: String,
    file: File,
    at_line_start: bool,
}

impl LogFile {
    fn open(path: &str) -> std::io::Result<Self> {
        Ok(LogFile {
            path: path.to_string(),
            file: Self::append(path)?,
            at_line_start: true,
        })
    }

    fn append(path: &str) -> std::io::Result<File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.at_line_start && REOPEN.swap(false, Ordering::Relaxed) {
            match Self::append(&self.path) {
                Ok(file) => self.file = file,
                // Kept on the old file: nothing is lost, and the next
                // SIGUSR1 tries again.
                Err(e) => tracing::error!(path = %self.path, "cannot reopen access log: {e}"),
            }
        }
        let n = self.file.write(buf)?;
        if n > 0 {
            self.at_line_start = buf[n - 1] == b'\n';
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    pop: &'a str,
    host: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    proto: &'static str,
    status: u16,
    bytes: usize,
    cache: &'static str,
    upstream: Option<String>,
    tries: usize,
    duration_ms: f64,
    origin_ms: Option<f64>,
    client: Option<String>,
    request_id: String,
    /// The PoP route (`x-edge-route` as sent to the client).
    route: &'a str,
    /// Relayed to a peer: which and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    relay: Option<RelayLine<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct RelayLine<'a> {
    peer: Option<&'a str>,
    reason: &'static str,
    ms: Option<f64>,
}

/// What the client sent and received, as the path that served it saw.
pub struct Exchange<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The client's HTTP version: `HTTP/1.1`, `HTTP/2.0`, `HTTP/3.0`.
    pub proto: &'static str,
    /// 0: no response was written (the client left first).
    pub status: u16,
    pub body_bytes: usize,
    pub client: Option<std::net::SocketAddr>,
    /// The error that ended the request, if one did.
    pub error: Option<String>,
}

/// The request's metrics and its access-log line.
pub fn record(exchange: Exchange<'_>, ctx: &RequestCtx) {
    let status = exchange.status;
    let elapsed = ctx.started.elapsed();
    let tier = ctx.tier.map_or("none", |t| t.as_str());
    METRICS.observe_request(status, ctx.cache.as_str(), tier, elapsed);

    let Some(writer) = writer() else { return };
    let line = Line {
        time: now_rfc3339(),
        pop: ctx.state.pop.as_str(),
        host: ctx.host.as_ref().map(|h| h.as_str()),
        method: exchange.method,
        path: exchange.path,
        proto: exchange.proto,
        status,
        bytes: exchange.body_bytes,
        cache: ctx.cache.as_str(),
        upstream: ctx.tried.last().map(|a| a.to_string()),
        tries: ctx.tried.len(),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        origin_ms: ctx.origin_time().map(|d| d.as_secs_f64() * 1000.0),
        client: exchange.client.map(|a| a.to_string()),
        request_id: ctx.id.to_string(),
        route: ctx
            .relay
            .as_ref()
            .and_then(|r| r.route.as_deref())
            .unwrap_or(ctx.route.render()),
        relay: ctx.relay.as_ref().map(|r| RelayLine {
            peer: ctx.peer().map(|p| p.as_str()),
            reason: r.reason.as_str(),
            ms: r.elapsed.map(|d| d.as_secs_f64() * 1000.0),
        }),
        error: ctx.error_reason.clone().or(exchange.error),
    };
    let Ok(mut json) = serde_json::to_vec(&line) else {
        return;
    };
    json.push(b'\n');
    let _ = writer.clone().write_all(&json);
    // A full queue drops the line (never the request): counted, not silent.
    let dropped = DROPPED.get().map_or(0, ErrorCounter::dropped_lines);
    if dropped > 0 {
        METRICS.access_log_dropped.set(dropped as i64);
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
