//! One JSON line per request, written off the request path by a background
//! writer thread, and the request metrics.

use super::ctx::RequestCtx;
use crate::metrics::METRICS;
use serde::Serialize;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};

static TARGET: OnceLock<String> = OnceLock::new();
// Started on first use, so a daemonising fork cannot lose the writer thread.
static WRITER: OnceLock<Option<NonBlocking>> = OnceLock::new();
static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Where access lines go: "stdout", "off" or a file path. Set once at start.
pub fn configure(target: &str) {
    let _ = TARGET.set(target.to_string());
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
                path => match std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    Ok(f) => tracing_appender::non_blocking(f),
                    Err(e) => {
                        tracing::error!(%path, "cannot open access log: {e}; using stdout");
                        tracing_appender::non_blocking(std::io::stdout())
                    }
                },
            };
            *crate::locked(&GUARD) = Some(guard);
            Some(nb)
        })
        .as_ref()
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    pop: &'a str,
    host: Option<&'a str>,
    method: &'a str,
    path: &'a str,
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
    METRICS.observe_request(status, ctx.cache.as_str(), elapsed);

    let Some(writer) = writer() else { return };
    let line = Line {
        time: now_rfc3339(),
        pop: ctx.state.pop.as_str(),
        host: ctx.host.as_ref().map(|h| h.as_str()),
        method: exchange.method,
        path: exchange.path,
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
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
