//! `edgepop ttfb`: arguments into a `ttfb::Plan`, the run, its outputs.

use crate::ttfb::{self, Model, Plan, Protocol, Stop, Target};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Load one or more targets and report TTFB per PoP, cache status and
/// phase (docs: README "For load testers").
#[derive(clap::Args, Debug)]
pub struct Args {
    /// URLs to load (http:// or https://); each is one target, or one per
    /// --connect address.
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Send the URLs to this address instead of where their host resolves
    /// (repeat for several: e.g. each PoP's unicast address).
    #[arg(long = "connect", value_name = "ADDR")]
    connect: Vec<SocketAddr>,
    /// As curl's: requests for HOST:PORT go to ADDR (an IP address; the
    /// port stays), for URLs with no --connect.
    #[arg(long = "resolve", value_name = "HOST:PORT:ADDR")]
    resolve: Vec<String>,
    /// Connections per target (closed model: requests in flight).
    #[arg(short, long, default_value_t = 16)]
    connections: usize,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// How long to run (default 10s unless --requests is given).
    #[arg(short, long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Requests per target, then stop.
    #[arg(short = 'n', long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Open model: requests per second per target, latency counted from
    /// when each request should have been sent (coordinated omission).
    #[arg(short, long)]
    rate: Option<f64>,
    /// HTTP/1.1 only (no h2 in ALPN).
    #[arg(long)]
    http1: bool,
    /// HTTP/2 only (h2 by ALPN; h2c with prior knowledge on http://).
    #[arg(long, conflicts_with = "http1")]
    http2: bool,
    /// HTTP/3 over QUIC (https:// URLs only; UDP to the URL's port). The
    /// QUIC handshake is timed as tls, connect is 0.
    #[arg(long, conflicts_with_all = ["http1", "http2"])]
    http3: bool,
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// A request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Per request, connecting included.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// A new connection for every request.
    #[arg(long)]
    new_connections: bool,
    /// First-handshake mode for on-demand TLS: every request for a fresh
    /// name from PATTERN ("shop-{n}.test"), on a new connection.
    #[arg(long, value_name = "PATTERN")]
    first_handshake: Option<String>,
    /// PEM file of the roots to trust (default: the system's).
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Accept any server certificate.
    #[arg(short = 'k', long)]
    insecure: bool,
    /// Write the whole result as JSON ("-": stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write one CSV line per request.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Write a self-contained HTML report.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Write the report's charts as SVG.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// No progress bar and no table.
    #[arg(short, long)]
    quiet: bool,
}

impl Args {
    fn plan(self) -> Result<(Plan, Outputs), String> {
        let mut resolve = Vec::new();
        for r in &self.resolve {
            let mut parts = r.splitn(3, ':');
            let (host, port, ip) = (parts.next(), parts.next(), parts.next());
            let parsed = match (host, port.map(str::parse::<u16>), ip) {
                (Some(h), Some(Ok(p)), Some(ip)) => ip
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .ok()
                    .map(|ip| (h.to_ascii_lowercase(), p, SocketAddr::new(ip, p))),
                _ => None,
            };
            resolve.push(parsed.ok_or_else(|| format!("--resolve {r}: expected HOST:PORT:ADDR"))?);
        }
        let mut targets = Vec::new();
        for url in &self.urls {
            let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(format!("{url}: not an http:// or https:// URL with a host"));
            }
            if self.connect.is_empty() {
                let mut target = Target {
                    url: uri.clone(),
                    addr: None,
                };
                let (host, port) = (target.host().to_ascii_lowercase(), target.port());
                target.addr = resolve
                    .iter()
                    .find(|(h, p, _)| *h == host && *p == port)
                    .map(|(_, _, a)| *a);
                targets.push(target);
            }
            for addr in &self.connect {
                targets.push(Target {
                    url: uri.clone(),
                    addr: Some(*addr),
                });
            }
        }
        let model = match self.rate {
            Some(rate) if rate.is_finite() && rate > 0.0 => Model::Open { rate },
            Some(rate) => return Err(format!("--rate {rate}: must be above 0")),
            None => Model::Closed,
        };
        let stop = match (self.requests, self.duration) {
            (Some(0), _) => return Err("--requests: must be above 0".into()),
            (Some(n), _) => Stop::Requests(n),
            (None, Some(d)) if d.is_zero() => return Err("--duration: must be above 0".into()),
            (None, d) => Stop::After(d.unwrap_or(Duration::from_secs(10))),
        };
        if self.connections == 0 {
            return Err("--connections: must be above 0".into());
        }
        if self.http3 && targets.iter().any(|t| !t.https()) {
            return Err("--http3: the URLs must be https://".into());
        }
        if let Some(p) = &self.first_handshake {
            if !p.contains("{n}") {
                return Err(format!("--first-handshake {p}: the pattern needs {{n}}"));
            }
            if targets.iter().any(|t| !t.https()) {
                return Err("--first-handshake: the URLs must be https://".into());
            }
        }
        let method = self
            .method
            .parse()
            .map_err(|_| format!("--method {}: not a method", self.method))?;
        let mut headers = Vec::new();
        for h in &self.headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("--header {h}: expected \"Name: value\""))?;
            let name = name
                .trim()
                .parse()
                .map_err(|_| format!("--header {h}: bad name"))?;
            let value = value
                .trim()
                .parse()
                .map_err(|_| format!("--header {h}: bad value"))?;
            headers.push((name, value));
        }
        let plan = Plan {
            targets,
            model,
            connections: self.connections,
            threads: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            stop,
            protocol: match (self.http1, self.http2, self.http3) {
                (true, _, _) => Protocol::Http1,
                (_, true, _) => Protocol::Http2,
                (_, _, true) => Protocol::Http3,
                _ => Protocol::Auto,
            },
            method,
            headers,
            timeout: self.timeout,
            new_connections: self.new_connections,
            names: self.first_handshake,
            ca: self.cacert,
            insecure: self.insecure,
            csv: self.csv,
            progress: !self.quiet,
        };
        let outputs = Outputs {
            json: self.json,
            html: self.html,
            svg: self.svg,
            table: !self.quiet,
        };
        Ok((plan, outputs))
    }
}

struct Outputs {
    json: Option<PathBuf>,
    html: Option<PathBuf>,
    svg: Option<PathBuf>,
    table: bool,
}

impl Outputs {
    fn write(&self, report: &ttfb::Report) -> Result<(), String> {
        let write = |path: &PathBuf, text: &str| {
            if path.as_os_str() == "-" {
                println!("{text}");
                Ok(())
            } else {
                std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
            }
        };
        if self.table {
            print!("{}", ttfb::render::table(report));
        }
        if let Some(path) = &self.json {
            let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
            write(path, &json)?;
        }
        if self.svg.is_some() || self.html.is_some() {
            let svg = ttfb::svg::render(report)?;
            if let Some(path) = &self.svg {
                write(path, &svg)?;
            }
            if let Some(path) = &self.html {
                write(path, &ttfb::render::html(report, &svg))?;
            }
        }
        Ok(())
    }
}

pub fn run(args: Args) -> ExitCode {
    let (plan, outputs) = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // The collector's: the workers run on threads of their own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = runtime
        .block_on(ttfb::run(plan))
        .and_then(|report| outputs.write(&report));
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
