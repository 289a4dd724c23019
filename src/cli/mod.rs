//! The command line: `edgepop run`, `check`, `anycast`, `replica …`, `tls …`
//! and `ttfb` (the load testers' tool).

mod anycast;
mod logs;
mod replica;
mod run;
mod tls;
mod ttfb;

use crate::config::Config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "edgepop", version, about = "Anycast edge node")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the edge node.
    Run {
        #[arg(short, long, default_value = "conf/quickstart.toml")]
        config: PathBuf,
        /// Take the listening sockets over from a running edgepop (graceful
        /// upgrade: start the new binary with this flag, then send SIGQUIT
        /// to the old one).
        #[arg(short, long)]
        upgrade: bool,
        /// Fork into the background (for systemd Type=forking).
        #[arg(short, long)]
        daemon: bool,
    },
    /// Announce the PoP's anycast prefix through its BGP daemon while the
    /// node on this config is ready; withdraw it when it is not, or dead
    /// (a companion process with its own service).
    Anycast {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file; errors name the key and the line.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Manage the local replica named by the config.
    Replica {
        #[command(subcommand)]
        command: ReplicaCommand,
    },
    /// Manage certificates in the store named by the config.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Load targets and report TTFB per PoP, cache status and phase.
    Ttfb(Box<ttfb::Args>),
    /// Write the manual pages (edgepop.1 and one per command) into DIR:
    /// the package's, made from this very command line.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
enum TlsCommand {
    /// Revoke a name's certificate at its CA; every node stops serving it
    /// and obtains a new one on the next handshake.
    Revoke {
        hostname: String,
        #[arg(short, long)]
        config: PathBuf,
    },
    /// What the store holds for a name: store, issuer, validity, when its
    /// renewal starts, revoked or not (exit 1: nothing stored).
    Status {
        hostname: String,
        #[arg(short, long)]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ReplicaCommand {
    /// Create the replica's schema (idempotent).
    Init {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Load Debezium JSON records, one per line (snapshot of a new PoP).
    Load {
        file: PathBuf,
        #[arg(short, long)]
        config: PathBuf,
    },
}

/// For the one-shot commands (`replica …`, `tls …`).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn with_config(path: &std::path::Path, f: impl FnOnce(Config) -> ExitCode) -> ExitCode {
    match Config::load(path) {
        Ok(c) => f(c),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok (pop {}, {} pools, {} sites)",
                    config.display(),
                    c.pop.id,
                    c.pools.len(),
                    c.sites.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            config,
            upgrade,
            daemon,
        } => with_config(&config, |c| run::run(c, &config, upgrade, daemon)),
        Command::Anycast { config } => with_config(&config, |c| anycast::run(&runtime(), &c)),
        Command::Replica {
            command: ReplicaCommand::Init { config },
        } => with_config(&config, |c| replica::init(&runtime(), &c)),
        Command::Replica {
            command: ReplicaCommand::Load { file, config },
        } => with_config(&config, |c| replica::load(&runtime(), &c, &file)),
        Command::Tls {
            command: TlsCommand::Revoke { hostname, config },
        } => with_config(&config, |c| tls::revoke(&runtime(), &c, &hostname)),
        Command::Tls {
            command: TlsCommand::Status { hostname, config },
        } => with_config(&config, |c| tls::status(&runtime(), &c, &hostname)),
        Command::Ttfb(args) => ttfb::run(*args),
        Command::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::generate_to(cmd, &dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}
