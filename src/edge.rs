//! The node's live state: one `EdgeState` per config generation, swapped
//! atomically on reload. A request keeps the generation it started with;
//! backend counters live in shared `BackendState`s, so they survive the swap.

use crate::cache::{domain_cache, page_cache, Press, PressSettings, Storefront};
use crate::compress::StreamPolicy;
use crate::config::{CompressionConfig, Config, ConfigError, ReplicaKind};
use crate::directory::{Directory, Layered, StaticDirectory};
use crate::domain::{DomainRecord, DomainStatus, Hostname, PopId};
use crate::failover::peers::{self, Peers};
use crate::failover::{Facts, StreamLag, Vitals};
use crate::lb::{health, Pools};
use crate::replica::{embedded::EmbeddedReplica, postgres::PostgresReplica, Replica};
use crate::sync::{ChangeStream, SyncStats};
use crate::tls::peering::PeerTls;
use crate::tls::{CertManager, IssuePolicy};
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tracing::{error, info, warn};

/// Everything derived from one version of the config file.
pub struct EdgeState {
    pub config: Arc<Config>,
    pub https: Option<crate::tls::policy::HttpsPolicy>,
    pub pop: PopId,
    pub directory: Arc<dyn Directory>,
    pub pools: Pools,
    /// Peer PoPs to relay to, in order of preference.
    pub peers: Arc<Peers>,
    pub generation: u64,
    pub loaded_at: SystemTime,
    /// Which proxied answers are encoded on the fly, and how.
    pub streaming: StreamPolicy,
}

/// What outlives config generations: the replica, the caches in front of
/// it and the change stream that keeps both fresh.
pub struct DataPlane {
    pub storefront: Arc<Storefront>,
    pub sync: Option<Arc<ChangeStream>>,
    pub sync_stats: Arc<SyncStats>,
}

impl DataPlane {
    pub fn open(config: &Config) -> Result<Self, String> {
        let replica = open_replica(config)?;
        let c = &config.cache;
        let storefront = Arc::new(Storefront::new(
            replica,
            page_cache(c.max_bytes, c.negative_ttl),
            domain_cache(c.max_domains, c.negative_ttl),
            c.ignorable_query_params.clone(),
            Press::new(press_settings(&config.compression)),
        ));
        let sync_stats = Arc::new(SyncStats::default());
        let sync = match &config.sync {
            Some(s) => Some(Arc::new(ChangeStream::new(
                s.clone(),
                config.consumer_name(),
                storefront.clone(),
                sync_stats.clone(),
            )?)),
            None => None,
        };
        Ok(DataPlane {
            storefront,
            sync,
            sync_stats,
        })
    }

    /// Starts the replica monitor and the change stream on this runtime.
    pub fn spawn(&self, ping_every: std::time::Duration) {
        tokio::spawn(self.storefront.clone().monitor(ping_every));
        if let Some(sync) = &self.sync {
            tokio::spawn(sync.clone().run());
        }
    }
}

pub fn open_replica(config: &Config) -> Result<Arc<dyn Replica>, String> {
    let r = &config.replica;
    Ok(match r.kind {
        ReplicaKind::Embedded => {
            Arc::new(EmbeddedReplica::open(&r.path).map_err(|e| e.to_string())?)
        }
        ReplicaKind::Postgres => {
            let url = r.url.as_deref().unwrap_or_default();
            Arc::new(PostgresReplica::connect(url, r.pool_size).map_err(|e| e.to_string())?)
        }
    })
}

/// `[compression]` as the page press takes it.
fn press_settings(c: &CompressionConfig) -> PressSettings {
    PressSettings {
        enabled: c.pages,
        worth: c.worth(),
        min_saving: c.min_saving,
        prefer: c.prefer.clone(),
        levels: c.page_levels.into(),
        workers: c.workers,
        queue: c.queue,
    }
}

impl EdgeState {
    fn build(
        config: Config,
        generation: u64,
        data: &DataPlane,
        peer_tls: Option<&PeerTls>,
    ) -> Self {
        let sites = config.sites.iter().map(|s| DomainRecord {
            hostname: s.hostname.clone(),
            store_id: s.store_id,
            status: s.status,
            tier: s.tier,
        });
        let c = &config.compression;
        let streaming = StreamPolicy {
            on: c.proxied,
            prefer: c.prefer.clone(),
            levels: c.proxied_levels.into(),
            worth: c.worth(),
            sites: config
                .sites
                .iter()
                .filter_map(|s| Some((s.hostname.clone(), s.compress_proxied?)))
                .collect(),
        };
        EdgeState {
            streaming,
            pop: config.pop.id.clone(),
            directory: Arc::new(Layered {
                sites: StaticDirectory::new(sites),
                replica: Some(data.storefront.clone() as Arc<dyn Directory>),
            }),
            pools: Pools::new(&config.pools),
            peers: Arc::new(Peers::new(
                &config.peers,
                &config
                    .peering
                    .as_ref()
                    .map(|p| p.check.clone())
                    .unwrap_or_default(),
                peer_tls,
            )),
            https: crate::tls::policy::HttpsPolicy::from_config(&config),
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
        tokio::spawn(peers::run_checks(Arc::downgrade(&self.peers)));
    }
}

pub struct Edge {
    current: ArcSwap<EdgeState>,
    pub data: DataPlane,
    /// Set once when HTTPS is configured (for /status).
    pub certs: std::sync::OnceLock<Arc<CertManager>>,
    /// This PoP's identity on the peer channel (read once at start, like
    /// the listeners).
    pub peer_tls: Option<Arc<PeerTls>>,
    config_path: PathBuf,
    active: Arc<AtomicUsize>,
    generations: AtomicU64,
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
    pub fn new(config: Config, config_path: &Path) -> Result<Self, String> {
        let data = DataPlane::open(&config)?;
        let peer_tls = match &config.peering {
            Some(p) => Some(Arc::new(
                PeerTls::load(p, &config.pop.id).map_err(|e| format!("peering: {e}"))?,
            )),
            None => None,
        };
        let state = EdgeState::build(config, 1, &data, peer_tls.as_deref());
        Ok(Edge {
            current: ArcSwap::from_pointee(state),
            data,
            certs: std::sync::OnceLock::new(),
            peer_tls,
            config_path: config_path.to_path_buf(),
            active: Arc::new(AtomicUsize::new(0)),
            generations: AtomicU64::new(1),
            started: Instant::now(),
        })
    }

    pub fn set_certs(&self, certs: Arc<CertManager>) {
        let _ = self.certs.set(certs);
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
                crate::metrics::METRICS
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
        if (&config.replica, &config.cache, &config.sync)
            != (&old.config.replica, &old.config.cache, &old.config.sync)
        {
            warn!("replica, cache and sync settings take effect on the next graceful upgrade");
        }
        if config.peering != old.config.peering {
            warn!("[peering] (listener, certificates) takes effect on the next graceful upgrade");
        }
        if config.pop.id != old.pop {
            warn!(old = %old.pop, new = %config.pop.id, "PoP id changed by reload");
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let state = Arc::new(EdgeState::build(
            config,
            generation,
            &self.data,
            self.peer_tls.as_deref(),
        ));
        self.current.store(state.clone());
        crate::metrics::METRICS
            .reloads
            .with_label_values(&["ok"])
            .inc();
        info!(generation, "config reloaded");
        Ok(state)
    }
}

/// Readiness is judged on the current generation and the data plane.
impl Vitals for Edge {
    fn facts(&self) -> Facts {
        let state = self.state();
        Facts {
            origins_available: state.pools.any_available(),
            peers_ready: state.peers.any_ready(),
            replica_up: self.data.storefront.replica_up(),
            stream: self.data.sync.as_ref().map(|_| StreamLag {
                records_behind: self.data.sync_stats.total_lag(),
                max: state.config.replica.max_lag,
            }),
            // Known to the listeners, not the edge (see cli/run.rs, `NodeVitals`).
            connections_full: false,
        }
    }
}

/// On-demand certificates go only to names this network serves and has
/// active, as the current config generation says at each ask.
#[async_trait::async_trait]
impl IssuePolicy for Edge {
    async fn may_issue(&self, host: &Hostname) -> bool {
        matches!(
            self.state().directory.lookup(host).await,
            Ok(Some(d)) if d.status == DomainStatus::Active
        )
    }

    async fn allowed_names(&self, after: Option<&Hostname>, limit: usize) -> Vec<Hostname> {
        let replica = self.data.storefront.replica();
        replica
            .active_domains(after, limit)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "replica: active domains not read"))
            .unwrap_or_default()
    }
}
