//! One request as the tool saw it: how late it went out, its phases, and
//! what the edge said about itself (`x-edge-route`, `x-edge-cache`,
//! `server-timing`).

use serde::Serialize;
use std::time::Duration;

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Dns,
    Connect,
    Tls,
    Timeout,
    /// The connection broke or the response was not HTTP.
    Http,
    /// The response head came, its body broke off.
    Body,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Http => "http",
            ErrorKind::Body => "body",
        }
    }
}

/// Where a request's time went, client side. They add up to the total:
/// `queue` (open model: waiting for a free connection), then `dns`,
/// `connect`, `tls` (zero on a reused connection), `ttfb` (connection
/// ready → response head: the request written and answered) and
/// `transfer` (head → last body byte).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    pub queue: Duration,
    pub dns: Duration,
    pub connect: Duration,
    pub tls: Duration,
    pub ttfb: Duration,
    pub transfer: Duration,
}

impl Phases {
    pub const NAMES: [&'static str; 6] = ["queue", "dns", "connect", "tls", "ttfb", "transfer"];

    pub fn each(&self) -> [Duration; 6] {
        [
            self.queue,
            self.dns,
            self.connect,
            self.tls,
            self.ttfb,
            self.transfer,
        ]
    }

    /// The phases together: the request's `total` (timed on its own clock)
    /// to within microseconds, as the phases are laps of one stopwatch.
    pub fn sum(&self) -> Duration {
        self.each().iter().sum()
    }
}

/// Times consecutive phases: each split ends one phase and starts the
/// next, so the phases tile the request with no gap between them.
pub struct Laps(std::time::Instant);

impl Laps {
    pub fn from(start: std::time::Instant) -> Laps {
        Laps(start)
    }

    /// The time since the last split (or the start).
    pub fn split(&mut self) -> Duration {
        let now = std::time::Instant::now();
        let lap = now - self.0;
        self.0 = now;
        lap
    }
}

/// A response, as far as grouping and the edge's own timing go.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub bytes: u64,
    pub protocol: &'static str,
    /// `x-edge-route`: the PoPs the request went through, the answering one
    /// last. Empty when the header is missing (not an edge).
    pub route: Vec<String>,
    /// `x-edge-cache`, or "-".
    pub cache: String,
    pub timing: ServerTiming,
}

/// One request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub target: usize,
    /// When it went out, from the start of the run.
    pub sent_at: Duration,
    /// The Host (and SNI) it was sent for.
    pub host: std::sync::Arc<str>,
    pub reused: bool,
    pub phases: Phases,
    /// From its release (open model) or its start to its last byte: what
    /// a user waited, corrected for coordinated omission.
    pub total: Duration,
    /// Open model: how late the tool's pacer released it after its slot
    /// (the tool's own lag, not counted in `total`).
    pub behind: Duration,
    pub outcome: Result<Answer, ErrorKind>,
}

impl Sample {
    /// `total` without the time it should already have been under way:
    /// what a tool that ignores coordinated omission would report.
    pub fn uncorrected(&self) -> Duration {
        self.total.saturating_sub(self.phases.queue)
    }
}

/// The parts of `server-timing` edgepop sends, in milliseconds; a part the
/// response did not carry is `None`. Repeated parts add up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerTiming {
    pub parts: [Option<f64>; 4],
    /// A part whose name or `dur` could not be read (counted, not fatal).
    pub malformed: bool,
}

impl ServerTiming {
    pub const NAMES: [&'static str; 4] = ["edge", "replica", "origin", "relay"];

    /// Reads one or more `server-timing` header values
    /// (`edge;dur=0.05, origin;dur=1.2;desc="x"`). Parts with other names
    /// or without `dur` are left out; bad ones set `malformed`.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> ServerTiming {
        let mut out = ServerTiming::default();
        for part in values.into_iter().flat_map(|v| v.split(',')) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let mut params = part.split(';').map(str::trim);
            let name = params.next().unwrap_or_default();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                out.malformed = true;
                continue;
            }
            let mut dur = None;
            for param in params {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                if key.trim().eq_ignore_ascii_case("dur") {
                    match value.trim().trim_matches('"').parse::<f64>() {
                        Ok(ms) if ms.is_finite() && ms >= 0.0 => dur = Some(ms),
                        _ => out.malformed = true,
                    }
                }
            }
            let (Some(ms), Some(i)) = (dur, Self::NAMES.iter().position(|n| *n == name)) else {
                continue;
            };
            *out.parts[i].get_or_insert(0.0) += ms;
        }
        out
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `x-edge-route` as its PoP ids (`fra1, ams1` → [fra1, ams1]).
pub fn route(value: Option<&str>) -> Vec<String> {
    value
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// How a route is shown and grouped: the answering PoP, or the chain
/// (`fra1 > ams1`) when it was relayed; `-` when no edge answered.
pub fn pop_label(route: &[String]) -> String {
    if route.is_empty() {
        "-".into()
    } else {
        route.join(" > ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_parts_are_read_and_summed() {
        let t = ServerTiming::parse([
            "edge;dur=0.05, relay;dur=1.5",
            "origin;dur=2;desc=\"up\", cache;desc=HIT, replica;dur=\"0.25\", edge;dur=0.01",
        ]);
        let want = [0.06, 0.25, 2.0, 1.5];
        for (got, want) in t.parts.iter().zip(want) {
            let got = got.expect("every part present");
            assert!((got - want).abs() < 1e-9, "{:?}", t.parts);
        }
        assert!(!t.malformed);
    }

    #[test]
    fn malformed_parts_are_counted_and_the_rest_kept() {
        for bad in [
            "edge;dur=abc, origin;dur=3",
            "edge;dur=-1, origin;dur=3",
            "edge;dur=NaN, origin;dur=3",
            ";dur=1, origin;dur=3",
            "ed ge;dur=1, origin;dur=3",
        ] {
            let t = ServerTiming::parse([bad]);
            assert!(t.malformed, "{bad}");
            assert_eq!(t.parts[2], Some(3.0), "{bad}");
            assert_eq!(t.parts[0], None, "{bad}");
        }
    }

    #[test]
    fn routes_and_labels() {
        let r = route(Some("fra1, ams1"));
        assert_eq!(r, ["fra1", "ams1"]);
        assert_eq!(pop_label(&r), "fra1 > ams1");
        assert_eq!(pop_label(&route(Some(" ams1 "))), "ams1");
        assert_eq!(pop_label(&route(None)), "-");
    }

    #[test]
    fn phases_add_up() {
        let ms = Duration::from_millis;
        let p = Phases {
            queue: ms(100),
            dns: ms(1),
            connect: ms(2),
            tls: ms(3),
            ttfb: ms(4),
            transfer: ms(5),
        };
        assert_eq!(p.sum(), ms(115));
    }
}
