//! The report for people: a table on the terminal, one CSV line per
//! request, and a self-contained HTML page around the SVG.

use super::plan::TICK;
use super::sample::{pop_label, Answer, Phases, Sample, ServerTiming};
use super::summary::{Dist, GroupReport, Report};
use std::fmt::Write;

/// The CSV columns: one line per request (`--csv`).
pub fn csv_header() -> Vec<String> {
    let fixed = [
        "target",
        "sent_at_ms",
        "host",
        "reused",
        "protocol",
        "status",
        "error",
        "pop",
        "cache",
        "bytes",
    ];
    let mut header: Vec<String> = fixed.iter().map(|c| c.to_string()).collect();
    header.extend(Phases::NAMES.iter().map(|p| format!("{p}_ms")));
    header.push("total_ms".into());
    header.extend(
        ServerTiming::NAMES
            .iter()
            .map(|p| format!("server_timing_{p}_ms")),
    );
    header
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// A request's line under `csv_header`; `names`: the targets' names.
pub fn csv_row(names: &[String], s: &Sample) -> Vec<String> {
    let answer = s.outcome.as_ref().ok();
    let of = |f: &dyn Fn(&Answer) -> String| answer.map(f).unwrap_or_default();
    let mut row = vec![
        names[s.target].clone(),
        ms(s.sent_at),
        s.host.to_string(),
        s.reused.to_string(),
        of(&|a| a.protocol.to_string()),
        of(&|a| a.status.to_string()),
        s.outcome
            .as_ref()
            .err()
            .map(|k| k.as_str().to_string())
            .unwrap_or_default(),
        of(&|a| pop_label(&a.route)),
        of(&|a| a.cache.clone()),
        of(&|a| a.bytes.to_string()),
    ];
    row.extend(s.phases.each().into_iter().map(ms));
    row.push(ms(s.total));
    for i in 0..ServerTiming::NAMES.len() {
        row.push(of(&|a| {
            a.timing.parts[i]
                .map(|v| format!("{v:.3}"))
                .unwrap_or_default()
        }));
    }
    row
}

fn dist_cells(d: &Dist) -> String {
    format!(
        "{:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        d.p50_ms, d.p90_ms, d.p99_ms, d.p999_ms, d.max_ms
    )
}

/// "edge 0.050, origin 1.200": the p50 of each `server-timing` part.
fn timing_cell(g: &GroupReport) -> String {
    g.server_timing
        .iter()
        .map(|(name, d)| format!("{name} {:.3}", d.p50_ms))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The terminal table: per target, then per group.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let corrected = if r.model.kind == "open" {
        " (corrected for coordinated omission)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "{} model, {} connection(s) per target, {:.1} s; latency in ms{corrected}",
        r.model.kind, r.model.connections, r.elapsed_s
    );
    for (i, t) in r.targets.iter().enumerate() {
        let _ = writeln!(out, "\n[{i}] {}", t.name);
        let errors = if t.errors.is_empty() {
            "no errors".to_string()
        } else {
            t.errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "    {} requests, {} responses, {:.1} req/s, {errors}",
            t.requests, t.responses, t.rate_rps
        );
        if let Some(u) = &t.uncorrected_latency {
            let _ = writeln!(
                out,
                "    uncorrected p99 {:.3} ms (what a tool without correction reports)",
                u.p99_ms
            );
        }
        if let Some(lag) = &t.schedule_lag {
            let warn = if lag.p99_ms > 3.0 * TICK.as_secs_f64() * 1000.0 {
                ": the tool fell behind its schedule, the load came in bursts"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    schedule lag p99 {:.3} ms, max {:.3} ms{warn}",
                lag.p99_ms, lag.max_ms
            );
        }
        let _ = writeln!(
            out,
            "    {:<16} {:<8} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>5} {:>9}  server-timing p50",
            "pop", "cache", "status", "count", "p50", "p90", "p99", "p99.9", "max", "ttfb p99", "new", "tls p50"
        );
        for g in r.groups.iter().filter(|g| g.target == i) {
            let _ = writeln!(
                out,
                "    {:<16} {:<8} {:>6} {:>7} {} {:>9.3} {:>5} {:>9}  {}",
                g.pop,
                g.cache,
                g.status,
                g.requests,
                dist_cells(&g.latency),
                g.phases["ttfb"].p99_ms,
                g.new_connections,
                g.handshakes
                    .as_ref()
                    .map_or("-".to_string(), |d| format!("{:.3}", d.p50_ms)),
                timing_cell(g),
            );
        }
    }
    if r.server_timing_malformed > 0 {
        let _ = writeln!(
            out,
            "\n{} response(s) carried a server-timing part that could not be read",
            r.server_timing_malformed
        );
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One page, nothing fetched: the groups as a table, the SVG inline.
pub fn html(r: &Report, svg: &str) -> String {
    let mut rows = String::new();
    for g in &r.groups {
        let target = r.targets.get(g.target).map_or("", |t| t.name.as_str());
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
            escape(target),
            escape(&g.pop),
            escape(&g.cache),
            g.status,
            g.requests,
            g.latency.p50_ms,
            g.latency.p90_ms,
            g.latency.p99_ms,
            g.latency.p999_ms,
            g.latency.max_ms,
            escape(&timing_cell(g)),
        );
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>edgepop ttfb</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}\
         td:nth-child(-n+3){{text-align:left}}</style></head><body>\n\
         <h1>edgepop ttfb</h1>\n<p>{} model, {} connection(s) per target, {:.1} s. Latency in ms{}.</p>\n\
         <table><tr><th>target</th><th>pop</th><th>cache</th><th>status</th><th>requests</th>\
         <th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>server-timing p50</th></tr>\n\
         {rows}</table>\n{svg}\n</body></html>\n",
        r.model.kind,
        r.model.connections,
        r.elapsed_s,
        if r.model.kind == "open" {
            ", corrected for coordinated omission"
        } else {
            ""
        },
    )
}
