//! `edgepop replica init` and `edgepop replica load`: schema creation and
//! snapshot loading (bootstrapping a new PoP, the quickstart demo).

use crate::change::ChangeEvent;
use crate::config::{Config, ReplicaKind};
use crate::edge::open_replica;
use crate::replica::{postgres::PostgresReplica, Outcome, Replica};
use crate::sync::event::{self, Decoded};
use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;
use tokio::runtime::Runtime;

pub fn init(rt: &Runtime, config: &Config) -> ExitCode {
    let result: Result<(), String> = rt.block_on(async {
        match config.replica.kind {
            ReplicaKind::Postgres => {
                let url = config.replica.url.as_deref().unwrap_or_default();
                let r = PostgresReplica::connect(url, 1).map_err(|e| e.to_string())?;
                r.init_schema().await.map_err(|e| e.to_string())
            }
            // Opening creates the file and its tables.
            ReplicaKind::Embedded => open_replica(config).map(|_| ()),
        }
    });
    match result {
        Ok(()) => {
            println!("replica ready ({:?})", config.replica.kind);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
struct Summary {
    applied: u64,
    stale: u64,
    skipped: u64,
}

/// Loads Debezium JSON records, one per line. A malformed line is reported
/// with its number and skipped; the rest still load.
pub fn load(rt: &Runtime, config: &Config, file: &Path) -> ExitCode {
    let input = match std::fs::File::open(file) {
        Ok(f) => std::io::BufReader::new(f),
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let replica = match open_replica(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut summary = Summary::default();
    let mut batch: Vec<ChangeEvent> = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line_no = n + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{}:{line_no}: unreadable line skipped: {e}", file.display());
                summary.skipped += 1;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match event::decode("", Some(line.as_bytes())) {
            Ok(Decoded::Event(e)) => batch.push(e),
            Ok(Decoded::Skip(kind)) => {
                eprintln!("{}:{line_no}: skipped ({})", file.display(), kind.as_str());
                summary.skipped += 1;
            }
            Err(e) => {
                eprintln!("{}:{line_no}: malformed, skipped: {e}", file.display());
                summary.skipped += 1;
            }
        }
        if batch.len() >= 1000 {
            if let Err(e) = rt.block_on(flush(replica.as_ref(), &mut batch, &mut summary)) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = rt.block_on(flush(replica.as_ref(), &mut batch, &mut summary)) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "loaded {}: {} applied, {} stale, {} skipped",
        file.display(),
        summary.applied,
        summary.stale,
        summary.skipped
    );
    ExitCode::SUCCESS
}

async fn flush(
    replica: &dyn Replica,
    batch: &mut Vec<ChangeEvent>,
    summary: &mut Summary,
) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    let outcomes = replica
        .apply("snapshot-load", batch, &[])
        .await
        .map_err(|e| e.to_string())?;
    for o in outcomes {
        match o {
            Outcome::StaleDomain(_) | Outcome::StalePage(..) => summary.stale += 1,
            Outcome::Incomplete(why) => {
                eprintln!("skipped: {why}");
                summary.skipped += 1;
            }
            _ => summary.applied += 1,
        }
    }
    batch.clear();
    Ok(())
}
