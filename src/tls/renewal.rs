//! When a certificate is renewed. The CA's own answer where it offers one
//! (ARI, RFC 9773): a suggested window and when to ask again. Without it, a
//! fixed share of the lifetime, spread: certificates issued in the same
//! minute (a snapshot load, a bulk import) do not all renew in the same
//! minute, which is what gets an account rate-limited.

use std::time::Duration;

/// A span of unix seconds in which a certificate should be renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// The CA's suggested window (ARI) and when to ask for it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suggested {
    pub window: Window,
    pub ask_again: Duration,
}

/// Bounds on the CA's Retry-After (RFC 9773 §4.3.2 asks clients to clamp
/// it): at least a minute apart, at least once a day.
const ASK_AT_LEAST: Duration = Duration::from_secs(60);
const ASK_AT_MOST: Duration = Duration::from_secs(24 * 3600);

impl Window {
    /// Without ARI: renewal may start when `left` of the lifetime is left
    /// and is spread over the first half of that share (with the default
    /// 1/3 of a 90-day certificate: between 30 and 15 days before expiry).
    pub fn fixed(not_before: i64, not_after: i64, left: f64) -> Window {
        let lifetime = (not_after - not_before).max(1) as f64;
        let share = (lifetime * left.clamp(0.0, 1.0)) as i64;
        let start = not_after - share;
        Window {
            start,
            end: start + share / 2,
        }
    }

    /// A point of the window, uniform over it for uniform `seed`s. A seed
    /// taken from the certificate gives every PoP holding it the same time
    /// (and the same time after a restart), so one renews for the network.
    pub fn pick(&self, seed: u64) -> i64 {
        let span = (self.end - self.start).max(0) as u64;
        if span == 0 {
            return self.start;
        }
        // splitmix64: neighbouring seeds land far apart.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        self.start + (z % (span + 1)) as i64
    }
}

impl Suggested {
    /// The CA's answer, with its Retry-After clamped.
    pub fn new(window: Window, retry_after: Duration) -> Suggested {
        Suggested {
            window,
            ask_again: retry_after.clamp(ASK_AT_LEAST, ASK_AT_MOST),
        }
    }
}

/// When to renew: inside the CA's suggested window where it gave one (a
/// window already begun means now, RFC 9773 §4.2), else the fixed one.
pub fn renew_at(fixed: Window, suggested: Option<&Suggested>, seed: u64, now: i64) -> i64 {
    match suggested {
        Some(s) if s.window.start <= now => now,
        Some(s) => s.window.pick(seed),
        None => fixed.pick(seed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600;

    #[test]
    fn the_fixed_window_is_the_first_half_of_the_renewal_share() {
        let w = Window::fixed(0, 90 * DAY, 1.0 / 3.0);
        assert_eq!(w.start, 60 * DAY);
        assert_eq!(w.end, 75 * DAY);
        for seed in 0..1000 {
            let t = w.pick(seed);
            assert!((w.start..=w.end).contains(&t), "{t} outside {w:?}");
        }
        assert_eq!(w.pick(42), w.pick(42), "every node picks the same time");
    }

    #[test]
    fn a_day_of_issuance_does_not_renew_in_one_minute() {
        // 100,000 certificates issued in the same minute.
        let w = Window::fixed(0, 90 * DAY, 1.0 / 3.0);
        let mut per_minute = std::collections::HashMap::<i64, u32>::new();
        for seed in 0..100_000u64 {
            *per_minute.entry(w.pick(seed) / 60).or_default() += 1;
        }
        let busiest = *per_minute.values().max().unwrap();
        // 15 days are 21,600 minutes: about 4.6 renewals a minute on average.
        assert!(busiest <= 20, "{busiest} renewals in one minute");
        assert!(
            per_minute.len() > 15_000,
            "spread over {} minutes",
            per_minute.len()
        );
    }

    #[test]
    fn the_cas_window_wins_and_a_begun_window_means_now() {
        let fixed = Window::fixed(0, 90 * DAY, 1.0 / 3.0);
        let ari = Suggested::new(
            Window {
                start: 40 * DAY,
                end: 41 * DAY,
            },
            Duration::from_secs(6 * 3600),
        );
        let at = renew_at(fixed, Some(&ari), 7, 10 * DAY);
        assert!(
            (40 * DAY..=41 * DAY).contains(&at),
            "inside the CA's window"
        );
        assert_eq!(renew_at(fixed, Some(&ari), 7, 40 * DAY + 5), 40 * DAY + 5);
        // Revoked early by the CA: a window in the past renews at once.
        assert_eq!(renew_at(fixed, Some(&ari), 7, 50 * DAY), 50 * DAY);
        assert_eq!(renew_at(fixed, None, 7, 10 * DAY), fixed.pick(7));
    }

    #[test]
    fn retry_after_is_clamped() {
        let w = Window { start: 0, end: 1 };
        assert_eq!(
            Suggested::new(w, Duration::ZERO).ask_again,
            Duration::from_secs(60)
        );
        assert_eq!(
            Suggested::new(w, Duration::from_secs(7 * DAY as u64)).ask_again,
            Duration::from_secs(DAY as u64)
        );
    }
}
