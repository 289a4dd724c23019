//! What the freshness benches share besides the test harness: the number
//! of changes asked for, polling for the new bytes, percentiles.

use std::time::{Duration, Instant};

/// The first number among the arguments (`cargo bench --bench x -- 1000`),
/// 1000 without one.
pub fn changes() -> i64 {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000)
}

/// Sends `request` again and again, without pause, until the body is
/// `expect` (true) or `limit` passes (false). The clock of a change stops
/// when this returns.
pub async fn served(request: &reqwest::RequestBuilder, expect: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(r) = request.try_clone().unwrap().send().await {
            if r.text().await.unwrap_or_default() == expect {
                return true;
            }
        }
    }
    false
}

/// The `p` percentile (0 to 1) of `sorted`, in milliseconds.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}
