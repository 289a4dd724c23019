//! PostgreSQL connection pools, shared by the replica and the certificate
//! store: the pool settings and error reporting are written once.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::time::Duration;
use tokio_postgres::NoTls;

/// A pool for `url` (libpq key=value or URL form); connections are made on
/// first use, so a database that is down at start does not stop the node.
pub fn pool(url: &str, size: usize) -> Result<Pool, String> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("url: {e}"))?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(2)))
        .create_timeout(Some(Duration::from_secs(2)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| e.to_string())
}

/// The whole error chain: tokio-postgres says only "db error" at the top.
pub fn chain(e: impl std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
