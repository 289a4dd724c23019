//! Log rotation as logrotate does it (`conf/logrotate/edgepop`): the file
//! renamed, then SIGUSR1. No line may be lost or split, under load.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A node serving the demo store's pages, its access log in its dir.
async fn demo_node() -> Edge {
    let edge = Edge::prepare(&idle_pool());
    edge.load_demo();
    edge.launch(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_access_log_under_load_loses_no_line() {
    let edge = demo_node().await;
    let dir = edge.dir.path().to_path_buf();
    let log = dir.join("access.log");

    let load = tokio::spawn(load(
        edge.url("/"),
        "shop.localhost",
        4,
        Duration::from_secs(4),
    ));
    // Three rotations while the load runs: rename, then ask for a reopen.
    for i in 1..=3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        std::fs::rename(&log, dir.join(format!("access.log.{i}"))).unwrap();
        edge.signal(libc::SIGUSR1);
    }
    let (ok, failed) = load.await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 100, "only {ok} requests");

    let files = [
        dir.join("access.log.1"),
        dir.join("access.log.2"),
        dir.join("access.log.3"),
        log.clone(),
    ];
    let count = || files.iter().map(|f| lines(f).len()).sum::<usize>();
    // The writer is a thread behind the requests: wait for it.
    assert!(
        eventually(Duration::from_secs(10), || async { count() >= ok }).await,
        "{} access lines for {ok} requests",
        count()
    );
    assert_eq!(count(), ok, "more lines than requests");
    for file in &files {
        let lines = lines(file);
        assert!(!lines.is_empty(), "{} got no line", file.display());
        for line in lines {
            let parsed: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{}: a broken line {line:?}: {e}", file.display()));
            assert_eq!(parsed["host"], "shop.localhost");
        }
    }
    assert_eq!(edge.metric("edgepop_access_log_lines_dropped").await, 0.0);
}

/// A daemon's stderr is its error log (`log.error_log`); after a rename and
/// SIGUSR1 the node writes to a new file at the same path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_reopens_its_error_log() {
    let edge = Edge::prepare(&idle_pool());
    let dir = edge.dir.path().to_path_buf();
    let error_log = dir.join("error.log");
    let config = std::fs::read_to_string(edge.config_path()).unwrap();
    let config = config.replacen(
        "[log]\n",
        &format!("[log]\nerror_log = \"{}\"\n", error_log.display()),
        1,
    );
    std::fs::write(edge.config_path(), config).unwrap();
    let config_path = edge.config_path();
    let started = std::process::Command::new(bin())
        .args(["run", "--daemon", "--config"])
        .arg(&config_path)
        .status()
        .unwrap();
    assert!(started.success());
    edge.wait_admin().await;
    let pid_file = dir.join("edgepop.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _daemon = Daemon(pid);

    assert!(
        eventually(Duration::from_secs(5), || async {
            std::fs::metadata(&error_log).is_ok_and(|m| m.len() > 0)
        })
        .await,
        "the daemon wrote nothing to {}",
        error_log.display()
    );
    std::fs::rename(&error_log, dir.join("error.log.1")).unwrap();
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    // The reopen is logged, to the new file.
    assert!(
        eventually(Duration::from_secs(5), || async {
            lines(&error_log).iter().any(|l| l.contains("reopened"))
        })
        .await,
        "nothing in the new error log; the old one ends:\n{}",
        lines(&dir.join("error.log.1")).join("\n")
    );
}

/// Stops the daemon when the test ends, whatever happens.
struct Daemon(i32);

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// The logrotate file operators install (`conf/logrotate/edgepop`), run by
/// logrotate itself with its paths pointed at this node: the lines before
/// and after are all there, in the rotated file and the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_logrotate_file_rotates_without_losing_a_line() {
    let edge = demo_node().await;
    let dir = edge.dir.path().to_path_buf();
    let d = dir.display().to_string();
    let shipped = std::fs::read_to_string("conf/logrotate/edgepop").unwrap();
    let conf = shipped
        .replace("/var/log/edgepop", &d)
        .replace("/run/edgepop", &d)
        .replace("create 0640 edgepop edgepop", "create 0640");
    assert_ne!(conf, shipped);
    std::fs::write(dir.join("logrotate.conf"), conf).unwrap();

    let send = |n: usize| {
        let url = edge.url("/");
        async move {
            for _ in 0..n {
                let r = client().get(&url).header("host", "shop.localhost");
                assert_eq!(r.send().await.unwrap().status(), 200);
            }
        }
    };
    send(200).await;
    let rotated = std::process::Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(dir.join("logrotate.conf"))
        .output()
        .expect("logrotate (tests/run.sh installs it)");
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    send(200).await;
    let (old, new) = (dir.join("access.log.1"), dir.join("access.log"));
    let count = || lines(&old).len() + lines(&new).len();
    assert!(
        eventually(Duration::from_secs(10), || async { count() >= 400 }).await,
        "{} + {} lines for 400 requests",
        lines(&old).len(),
        lines(&new).len()
    );
    assert_eq!(count(), 400);
    assert!(
        !lines(&new).is_empty(),
        "nothing written after the rotation"
    );
}
