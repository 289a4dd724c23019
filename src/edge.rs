//! The node's live state: one `EdgeState` per config generation, swapped
//! atomically on reload. A request keeps the generation it started with;
//! backend counters live in shared `BackendState`s, so they survive the swap.

use crate::config::{Config, ConfigError};
use crate::directory::{Directory, StaticDirectory};
use crate::domain::{DomainRecord, PopId};
use crate::failover::Readiness;
use crate::lb::{health, Pools};
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tracing::{error, info, warn};

/// Everything derived from one version of the config file.
pub struct EdgeState {
    pub config: Arc<Config>,
    pub pop: PopId,
    pub directory: Arc<dyn Directory>,
    pub pools: Pools,
    pub generation: u64,
    pub loaded_at: SystemTime,
}

impl EdgeState {
    fn build(config: Config, generation: u64) -> Self {
        let sites = config.sites.iter().map(|s| DomainRecord {
            hostname: s.hostname.clone(),
            store_id: s.store_id,
            status: s.status,
            tier: s.tier,
        });
        EdgeState {
            pop: config.pop.id.clone(),
            directory: Arc::new(StaticDirectory::new(sites)),
            pools: Pools::new(&config.pools),
            generation,
            loaded_at: SystemTime::now(),
            config: Arc::new(config),
        }
    }

    /// Starts the active health checks of this generation's pools; they end
    /// when the generation is replaced and its last request is done.
    pub fn spawn_health_checks(&self) {
        for pool in self.pools.iter() {
            tokio::spawn(health::run(Arc::downgrade(pool)));
        }
    }
}

pub struct Edge {
    current: ArcSwap<EdgeState>,
    config_path: PathBuf,
    active: Arc<AtomicUsize>,
    generations: AtomicU64,
    pub readiness: Readiness,
    pub started: Instant,
}

/// Counts a request from context creation to drop (for draining).
pub struct ActiveRequest(Arc<AtomicUsize>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Edge {
    pub fn new(config: Config, config_path: &Path) -> Self {
        Edge {
            current: ArcSwap::from_pointee(EdgeState::build(config, 1)),
            config_path: config_path.to_path_buf(),
            active: Arc::new(AtomicUsize::new(0)),
            generations: AtomicU64::new(1),
            readiness: Readiness::default(),
            started: Instant::now(),
        }
    }

    pub fn state(&self) -> Arc<EdgeState> {
        self.current.load_full()
    }

    pub fn begin_request(&self) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self.active.clone())
    }

    pub fn active_requests(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Re-reads the config file. A bad file is refused and the running
    /// generation keeps serving. Listeners and the admin address are bound
    /// once: changing them needs a graceful upgrade, which is said in the log.
    pub fn reload(&self) -> Result<Arc<EdgeState>, ConfigError> {
        let config = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "config reload refused; the running config stays");
                crate::admin::metrics::METRICS
                    .reloads
                    .with_label_values(&["refused"])
                    .inc();
                return Err(e);
            }
        };
        let old = self.state();
        if config.listen.http != old.config.listen.http
            || config.admin.listen != old.config.admin.listen
        {
            warn!("listener addresses changed: they take effect on the next graceful upgrade");
        }
        if config.pop.id != old.pop {
            warn!(old = %old.pop, new = %config.pop.id, "PoP id changed by reload");
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let state = Arc::new(EdgeState::build(config, generation));
        self.current.store(state.clone());
        crate::admin::metrics::METRICS
            .reloads
            .with_label_values(&["ok"])
            .inc();
        info!(generation, "config reloaded");
        Ok(state)
    }
}
