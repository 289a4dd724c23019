//! The node's two logs: the server log (JSON lines on stderr; a file when
//! daemonised, `log.error_log`) and the access log (`request::log`), and
//! opening both again after a rotation (SIGUSR1, as nginx's reopen).

use crate::request::log as access_log;
use std::os::fd::AsRawFd;
use std::path::Path;
use tracing::{error, info};

pub(super) fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// After logrotate renamed the files: the access log opens its path again
/// between two lines, and a daemon's stderr (`error_log`, where Pingora
/// pointed it) is pointed at a new file at the same path. Without a
/// daemon, stderr belongs to whoever started the node (systemd's journal)
/// and is left alone.
pub(super) fn reopen(error_log: Option<&Path>) {
    access_log::reopen();
    let Some(path) = error_log else {
        info!("SIGUSR1: access log reopened");
        return;
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    match file {
        // dup2 replaces fd 2 in one step: no write to stderr is lost or
        // sent to a closed descriptor meanwhile.
        Ok(f) if unsafe { libc::dup2(f.as_raw_fd(), libc::STDERR_FILENO) } >= 0 => {
            info!(path = %path.display(), "SIGUSR1: access and error logs reopened");
        }
        Ok(_) => {
            error!(path = %path.display(), "cannot point stderr at the new error log: {}", std::io::Error::last_os_error())
        }
        Err(e) => error!(path = %path.display(), "cannot reopen the error log: {e}"),
    }
}
