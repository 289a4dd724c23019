//! Places at the door: how many client connections the node holds, in all
//! and per client address. A connection holds its place (`Admitted`) for
//! its whole life, parked (`park.rs`) included.

use crate::locked;
use crate::metrics::METRICS;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The counts behind the limits, shared by the HTTP and HTTPS listeners.
pub struct Connections {
    max: usize,
    per_client: usize,
    open: AtomicUsize,
    by_client: Mutex<HashMap<IpAddr, usize>>,
}

impl Connections {
    /// `per_client` 0: no per-address limit.
    pub fn new(max: usize, per_client: usize) -> Self {
        Connections {
            max,
            per_client,
            open: AtomicUsize::new(0),
            by_client: Mutex::default(),
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The node holds as many client connections as it may.
    pub fn full(&self) -> bool {
        self.open() >= self.max
    }

    /// A place for one more connection from `client`, or why not.
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Admitted, &'static str> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err("total");
        }
        let client = match (client, self.per_client > 0) {
            (Some(ip), true) => {
                let mut by_client = locked(&self.by_client);
                let n = by_client.entry(ip).or_default();
                if *n >= self.per_client {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    return Err("per_client");
                }
                *n += 1;
                Some(ip)
            }
            _ => None,
        };
        METRICS.connections_open.inc();
        Ok(Admitted {
            gate: self.clone(),
            client,
        })
    }
}

/// One admitted connection; gives its place back when dropped.
pub struct Admitted {
    gate: Arc<Connections>,
    client: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
        METRICS.connections_open.dec();
        if let Some(ip) = self.client {
            let mut by_client = locked(&self.gate.by_client);
            if let Some(n) = by_client.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by_client.remove(&ip);
                }
            }
        }
    }
}

/// Raises the soft descriptor limit to the hard one (as nginx's
/// `worker_rlimit_nofile`) and returns how many client connections fit:
/// `configured`, but at most half of what is left after a reserve (a
/// proxied connection may hold an origin connection too).
pub fn connection_budget(configured: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                ..lim
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
            lim.rlim_cur as usize
        } else {
            1024
        }
    };
    let reserve = (soft / 4).min(1024);
    let budget = configured.min(soft.saturating_sub(reserve) / 2).max(1);
    tracing::info!(
        nofile = soft,
        max_connections = budget,
        "client connection limit"
    );
    budget
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_in_all_and_per_client_and_given_back() {
        let c = Arc::new(Connections::new(3, 2));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = c.admit(Some(a)).unwrap();
        let _a2 = c.admit(Some(a)).unwrap();
        assert_eq!(c.admit(Some(a)).err(), Some("per_client"));
        let _b1 = c.admit(Some(b)).unwrap();
        assert!(c.full());
        assert_eq!(c.admit(Some(b)).err(), Some("total"));
        drop(a1);
        assert_eq!(c.open(), 2);
        assert!(
            c.admit(Some(a)).is_ok(),
            "a place given back is taken again"
        );
    }
}
