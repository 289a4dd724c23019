//! What keeps issuance from flooding a CA: per-name backoff after a failed
//! order (doubling, at most an hour), a global token bucket, and a gauge of
//! issuances in progress.

use crate::domain::Hostname;
use crate::locked;
use crate::metrics::METRICS;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_BACKOFF: Duration = Duration::from_secs(3600);

struct Backoff {
    until: Instant,
    next: Duration,
}

/// Names whose last order failed, and until when they wait.
pub struct Backoffs {
    first: Duration,
    names: Mutex<HashMap<Hostname, Backoff>>,
}

impl Backoffs {
    pub fn new(first: Duration) -> Self {
        Backoffs {
            first,
            names: Mutex::default(),
        }
    }

    pub fn active(&self, host: &Hostname) -> bool {
        locked(&self.names)
            .get(host)
            .is_some_and(|b| Instant::now() < b.until)
    }

    pub fn clear(&self, host: &Hostname) {
        locked(&self.names).remove(host);
    }

    /// How long `host` still waits, if it has failed.
    pub fn left(&self, host: &Hostname) -> Option<Duration> {
        locked(&self.names)
            .get(host)
            .map(|b| b.until.saturating_duration_since(Instant::now()))
    }

    /// Another node's order failed: wait as long as it says.
    pub fn hold_off(&self, host: &Hostname, left: Duration) {
        let mut names = locked(&self.names);
        let next = names.get(host).map_or(left, |b| b.next.max(left));
        names.insert(
            host.clone(),
            Backoff {
                until: Instant::now() + left,
                next,
            },
        );
    }

    /// This node's order failed: the wait doubles each time. Returns it.
    pub fn failed(&self, host: &Hostname) -> Duration {
        let mut names = locked(&self.names);
        let next = names
            .get(host)
            .map_or(self.first, |b| (b.next * 2).min(MAX_BACKOFF));
        names.insert(
            host.clone(),
            Backoff {
                until: Instant::now() + next,
                next,
            },
        );
        next
    }
}

/// Tokens refill continuously up to `per_minute`.
pub struct RateLimit {
    bucket: Mutex<(f64, Instant)>,
    per_minute: f64,
}

impl RateLimit {
    pub fn new(per_minute: u32) -> Self {
        RateLimit {
            bucket: Mutex::new((per_minute as f64, Instant::now())),
            per_minute: per_minute as f64,
        }
    }

    pub fn take(&self) -> bool {
        self.take_above(0.0)
    }

    /// Takes one only down to half the bucket: orders
    /// made ahead (a bulk import, a catch-up) never use up what first
    /// handshakes need.
    pub fn take_spare(&self) -> bool {
        // Whole tokens: a rate of 1 a minute still lets one through.
        self.take_above((self.per_minute / 2.0).floor())
    }

    /// Whether `take_spare` would succeed now (it takes nothing): a
    /// background order waits on this instead of ordering to be refused.
    pub fn has_spare(&self) -> bool {
        let keep = (self.per_minute / 2.0).floor();
        self.refilled(&mut locked(&self.bucket)) >= 1.0 + keep
    }

    fn refilled(&self, bucket: &mut (f64, Instant)) -> f64 {
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * self.per_minute / 60.0;
        bucket.0 = (bucket.0 + refill).min(self.per_minute);
        bucket.1 = now;
        bucket.0
    }

    fn take_above(&self, keep: f64) -> bool {
        let mut bucket = locked(&self.bucket);
        if self.refilled(&mut bucket) >= 1.0 + keep {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts an issuance in progress for as long as it lives.
pub struct Pending;

impl Pending {
    pub fn start() -> Self {
        METRICS.tls_pending.inc();
        Pending
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        METRICS.tls_pending.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let b = Backoffs::new(Duration::from_secs(1000));
        let host = Hostname::parse("shop.example").unwrap();
        assert!(!b.active(&host));
        assert_eq!(b.failed(&host), Duration::from_secs(1000));
        assert!(b.active(&host));
        assert_eq!(b.failed(&host), Duration::from_secs(2000));
        assert_eq!(b.failed(&host), MAX_BACKOFF);
        b.clear(&host);
        assert!(!b.active(&host));
    }

    #[test]
    fn rate_limit_allows_a_minutes_worth_then_refuses() {
        let r = RateLimit::new(3);
        assert!((0..3).all(|_| r.take()));
        assert!(!r.take());
    }

    #[test]
    fn background_orders_leave_half_the_rate_to_handshakes() {
        let r = RateLimit::new(10);
        let spare = (0..10).take_while(|_| r.take_spare()).count();
        assert_eq!(spare, 5, "only down to half the bucket");
        let urgent = (0..10).take_while(|_| r.take()).count();
        assert_eq!(urgent, 5, "the other half is for handshakes");
        let one = RateLimit::new(1);
        assert!(one.take_spare(), "a rate of one a minute is not starved");
    }
}
