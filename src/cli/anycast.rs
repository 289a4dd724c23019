//! `edgepop anycast`: asks the node's `/readyz` every `check_interval` and
//! tells the BGP daemon to announce or withdraw the anycast prefix. It runs
//! apart from edgepop (its own systemd unit), so a node killed by SIGKILL
//! or a crash is withdrawn too: its `/readyz` stops answering.

use crate::admin::exporter;
use crate::config::{AnycastDriver, Config};
use crate::failover::anycast::{Action, Announcement, Announcer, Bird};
use crate::metrics::AnycastMetrics;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
use pingora_load_balancing::Backend;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

pub fn run(rt: &tokio::runtime::Runtime, config: &Config) -> ExitCode {
    super::logs::init_logging(&config.log.level);
    let Some(anycast) = config.anycast.clone() else {
        eprintln!("error: the config has no [anycast] section");
        return ExitCode::from(2);
    };
    let announcer: Box<dyn Announcer> = match anycast.driver {
        AnycastDriver::Bird => Box::new(Bird::new(&anycast)),
    };
    let admin = config.admin.listen;
    let metrics = Arc::new(AnycastMetrics::new(&anycast.prefix));
    rt.block_on(async move {
        let exported = metrics.clone();
        let render = Arc::new(move || exported.render());
        let exporter = tokio::spawn(exporter::serve(anycast.metrics_listen, render));
        let mut check = HttpHealthCheck::new("localhost", false);
        check.req.set_uri(http::Uri::from_static("/readyz"));
        check.peer_template.options.connection_timeout = Some(anycast.check_timeout);
        check.peer_template.options.total_connection_timeout = Some(anycast.check_timeout);
        check.peer_template.options.read_timeout = Some(anycast.check_timeout);
        let node = Backend::new(&admin.to_string()).expect("socket address");
        let mut state = Announcement::new(anycast.rise, anycast.fall);
        let mut ticker = tokio::time::interval(anycast.check_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut term, mut int) = (
            signal(SignalKind::terminate()).expect("SIGTERM handler"),
            signal(SignalKind::interrupt()).expect("SIGINT handler"),
        );
        info!(prefix = %anycast.prefix, node = %admin, "anycast: watching the node's readiness");
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
            let verdict = tokio::time::timeout(anycast.check_timeout, check.check(&node)).await;
            let ready = matches!(verdict, Ok(Ok(())));
            metrics.node_ready.set(ready as i64);
            let result = if ready { "ready" } else { "not_ready" };
            metrics.checks.with_label_values(&[result]).inc();
            let Some(action) = state.observe(ready) else { continue };
            let result = match action {
                Action::Announce => announcer.announce().await,
                Action::Withdraw => announcer.withdraw().await,
            };
            match result {
                Ok(()) => {
                    state.applied(action);
                    metrics.announced.set((action == Action::Announce) as i64);
                    match action {
                        Action::Announce => info!(prefix = %anycast.prefix, "anycast prefix announced: the node is ready"),
                        Action::Withdraw => {
                            let why = match verdict {
                                Ok(Err(e)) => e.to_string(),
                                _ => "no answer in time".to_string(),
                            };
                            warn!(prefix = %anycast.prefix, %why, "anycast prefix withdrawn: the node is not ready")
                        }
                    }
                }
                Err(e) => {
                    metrics.daemon_errors.inc();
                    error!(prefix = %anycast.prefix, error = %e, "the BGP daemon refused; asking again on the next check")
                }
            }
        }
        // Nobody watches the node once this process is gone.
        match announcer.withdraw().await {
            Ok(()) => info!(prefix = %anycast.prefix, "anycast prefix withdrawn: stopping"),
            Err(e) => error!(prefix = %anycast.prefix, error = %e, "withdrawal at stop failed"),
        }
        exporter.abort();
        ExitCode::SUCCESS
    })
}
