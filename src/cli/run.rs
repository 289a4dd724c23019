//! `edgepop run`: wires the services into one Pingora server (which owns
//! the listening sockets, signals and the graceful upgrade).

use super::logs;
use crate::admin::AdminApp;
use crate::config::{Config, TlsConfig};
use crate::conn::{connection_budget, Connections};
use crate::edge::Edge;
use crate::failover::{Facts, Readiness, Vitals};
use crate::listeners;
use crate::request::log as access_log;
use crate::tls::challenge::Challenges;
use crate::tls::{load_static, CertManager, IssuePolicy, TlsSettings};
use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{
    ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch,
};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;
use tracing::{info, warn};

pub fn run(config: Config, path: &Path, upgrade: bool, daemon: bool) -> ExitCode {
    logs::init_logging(&config.log.level);
    access_log::configure(&config.log.access);

    let drain = config.server.drain_timeout;
    let conf = ServerConf {
        threads: config.server.threads,
        work_stealing: config.server.work_stealing,
        pid_file: config.server.pid_file.display().to_string(),
        upgrade_sock: config.server.upgrade_sock.display().to_string(),
        // The control service exits as soon as in-flight requests are done;
        // Pingora's fixed grace period is only the outer bound.
        grace_period_seconds: Some(drain.as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        max_retries: config.proxy.max_tries,
        error_log: config
            .log
            .error_log
            .as_ref()
            .map(|p| p.display().to_string()),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    if !daemon {
        // Pingora writes the pid file only when it daemonizes; service
        // managers and scripts look for it either way.
        let pid_file = &config.server.pid_file;
        if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            warn!(path = %pid_file.display(), error = %e, "pid file not written");
        }
    }

    let edge = match Edge::new(config.clone(), path) {
        Ok(e) => Arc::new(e),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };

    let connections = Arc::new(Connections::new(
        connection_budget(config.server.max_connections),
        config.server.max_connections_per_client,
    ));
    let proxy = listeners::http_service(
        &server.configuration,
        &config.listen.http,
        edge.clone(),
        connections.clone(),
    );

    let readiness = Arc::new(Readiness::new(Arc::new(NodeVitals {
        edge: edge.clone(),
        connections: connections.clone(),
    })));
    let peer_listener = match (&config.peering, &edge.peer_tls) {
        (Some(peering), Some(tls)) => Some(listeners::peer_service(
            &server.configuration,
            &peering.listen,
            tls.clone(),
            edge.clone(),
            readiness.clone(),
        )),
        _ => None,
    };
    let mut admin = Service::new(
        "admin".to_string(),
        AdminApp::new(edge.clone(), readiness.clone()),
    );
    admin.add_tcp(&config.admin.listen.to_string());
    admin.threads = Some(1);

    let shutdown_signal = Box::new(WithdrawFirst {
        readiness: readiness.clone(),
        grace: config
            .anycast
            .as_ref()
            .map_or(Duration::ZERO, |a| a.withdraw_grace),
    });
    let ping_every = config.replica.ping_interval;
    let phases = Mutex::new(Some(server.watch_execution_phase()));
    let control = background_service(
        "control",
        Control {
            edge: edge.clone(),
            error_log: config.log.error_log.clone().filter(|_| daemon),
            readiness,
            drain,
            ping_every,
            phases,
        },
    );

    if let Some(tls) = &config.tls {
        // The edge decides which names get a certificate: its active domains.
        let certs = match cert_manager(tls, edge.clone(), node_name(&config)) {
            Ok(certs) => Arc::new(certs),
            Err(e) => {
                eprintln!("error: tls: {e}");
                return ExitCode::from(1);
            }
        };
        edge.set_certs(certs.clone());
        if !tls.quic_listen().is_empty() {
            // QUIC connections hold no descriptor: their own count, with
            // the TCP listeners' limits.
            let quic_connections = Arc::new(Connections::new(
                config.server.max_connections,
                config.server.max_connections_per_client,
            ));
            match listeners::quic_service(
                &server.configuration,
                tls.quic_listen(),
                edge.clone(),
                certs.clone(),
                quic_connections,
            ) {
                Ok(quic) => {
                    server.add_service(quic);
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        let https = listeners::https_service(
            &server.configuration,
            &tls.listen,
            edge.clone(),
            certs,
            connections,
        );
        server.add_service(https);
    }
    server.add_service(proxy);
    if let Some(peers) = peer_listener {
        server.add_service(peers);
    }
    server.add_service(admin);
    server.add_service(control);
    info!(pop = %config.pop.id, listen = ?config.listen.http, admin = %config.admin.listen, "edgepop starting");
    server.run(RunArgs { shutdown_signal });
    ExitCode::SUCCESS
}

/// Pingora's signals, except that SIGTERM first makes the node not ready
/// (so `edgepop anycast` withdraws the prefix) and waits `grace` for
/// routers to converge while the listeners still serve; then Pingora
/// closes them and the drain begins.
struct WithdrawFirst {
    readiness: Arc<Readiness>,
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for WithdrawFirst {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = term.recv() => {
                if !self.grace.is_zero() {
                    self.readiness.start_draining();
                    info!(grace = ?self.grace, "SIGTERM: not ready, so the anycast prefix is withdrawn; serving on until routers converge");
                    tokio::time::sleep(self.grace).await;
                }
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}

/// Store (file or postgres), issuer (ACME or the local CA) and settings.
fn cert_manager(
    tls: &TlsConfig,
    policy: Arc<dyn IssuePolicy>,
    node: String,
) -> Result<CertManager, Box<dyn Error>> {
    let stores = super::tls::stores(tls)?;
    let challenges = Arc::new(Challenges::new(stores.board));
    let issuer = super::tls::issuer(tls, stores.certs.clone(), challenges.clone())?;
    let settings = TlsSettings {
        issue_timeout: tls.issue_timeout,
        order_timeout: tls.order_timeout,
        backoff: tls.backoff,
        issue_per_minute: tls.issue_per_minute,
        renew_when_left: tls.renew_when_left,
        renew_check: tls.renew_check,
        hold_at_most: tls.hold_at_most,
        sweep_every: tls.sweep_every,
        node,
    };
    Ok(CertManager::new(
        policy,
        load_static(&tls.certificates)?,
        stores.certs,
        stores.lock,
        challenges,
        issuer,
        settings,
    ))
}

/// The edge's facts, plus what only the listeners know.
struct NodeVitals {
    edge: Arc<Edge>,
    connections: Arc<Connections>,
}

impl Vitals for NodeVitals {
    fn facts(&self) -> Facts {
        Facts {
            connections_full: self.connections.full(),
            ..self.edge.facts()
        }
    }
}

/// This process as an issuance lock holder: PoP, machine, process.
fn node_name(config: &Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}/{}/{}", config.pop.id, host.trim(), std::process::id())
}

/// Health checks, SIGHUP reloads, SIGUSR1 log reopening and the drain at
/// shutdown.
struct Control {
    edge: Arc<Edge>,
    /// Where a daemon's stderr goes (reopened on SIGUSR1).
    error_log: Option<PathBuf>,
    readiness: Arc<Readiness>,
    drain: Duration,
    ping_every: Duration,
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

#[async_trait]
impl BackgroundService for Control {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.edge.state().spawn_health_checks();
        self.edge.data.spawn(self.ping_every);
        if let Some(certs) = self.edge.certs.get() {
            tokio::spawn(certs.clone().renew_loop());
            let tls = self.edge.state().config.tls.clone();
            if let Some(tls) = tls.filter(|t| t.issue_ahead) {
                let storefront = &self.edge.data.storefront;
                if let Some(activated) = storefront.watch_activations(tls.issue_ahead_queue) {
                    tokio::spawn(certs.clone().issue_ahead(activated));
                    tokio::spawn(certs.clone().sweep_store());
                }
            }
        }
        if let Some(mut phases) = crate::locked(&self.phases).take() {
            let edge = self.edge.clone();
            tokio::spawn(async move {
                while let Ok(phase) = phases.recv().await {
                    if matches!(phase, ExecutionPhase::GracefulUpgradeTransferringFds) {
                        info!("handing the replica to the new process");
                        edge.data.storefront.replica().release();
                    }
                }
            });
        }
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let mut usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1 handler");
        loop {
            tokio::select! {
                _ = usr1.recv() => logs::reopen(self.error_log.as_deref()),
                _ = hup.recv() => {
                    info!("SIGHUP: reloading config");
                    if let Ok(state) = self.edge.reload() {
                        state.spawn_health_checks();
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        self.drain_and_exit().await
    }
}

impl Control {
    /// Listeners have stopped accepting (Pingora did that on the shutdown
    /// signal). Wait for in-flight requests, bounded by the drain timeout,
    /// then exit instead of sitting out Pingora's whole grace period.
    async fn drain_and_exit(&self) -> ! {
        self.readiness.start_draining();
        info!(in_flight = self.edge.active_requests(), "draining");
        let deadline = Instant::now() + self.drain;
        let mut quiet_ticks = 0;
        while Instant::now() < deadline {
            // Two quiet ticks in a row: a request accepted just before the
            // listener closed has had time to show up.
            quiet_ticks = if self.edge.active_requests() == 0 {
                quiet_ticks + 1
            } else {
                0
            };
            if quiet_ticks >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = self.edge.active_requests();
        if left > 0 {
            warn!(left, "drain timeout: exiting with requests in flight");
        }
        info!("drained, exiting");
        access_log::flush();
        std::process::exit(0)
    }
}
