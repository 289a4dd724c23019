//! The Debian package (issue 27), as an operator meets it: built by
//! `conf/debian/build.sh` with cargo-deb, checked by lintian and
//! `systemd-analyze verify`, installed by dpkg into a root made for the
//! test (`--root`, maintainer scripts run chrootless with DPKG_ROOT), its
//! installed binary run on its installed (edited) config, then upgraded to
//! a second build under load with the unit's own reload: no request fails.
//! What these machines do not allow: systemd as PID 1, so the reload that
//! postinst asks systemd for is run here from the installed unit's
//! `ExecReload=` lines, as systemd would run them.

mod common;

use common::{bin, load, pool, site, Origin};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `conf/debian/build.sh` on the binary the suite built (release profile:
/// the production build is the same code with more optimisation).
fn build_package(out: &Path, revision: &str) -> PathBuf {
    let target_dir = Path::new(bin()).parent().unwrap().parent().unwrap();
    assert!(target_dir.ends_with("target"), "{}", target_dir.display());
    run(Command::new("bash")
        .args([
            "conf/debian/build.sh",
            "--deb-revision",
            revision,
            "--output",
        ])
        .arg(out)
        .env("PROFILE", "release")
        .env("NO_BUILD", "1"));
    let deb = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    assert!(
        deb.file_name()
            .unwrap()
            .to_string_lossy()
            .contains(&format!("-{revision}_")),
        "{}",
        deb.display()
    );
    deb
}

/// `dpkg` on the test's root; maintainer scripts run on this machine with
/// DPKG_ROOT set (the root has no shell or libc of its own). The root's
/// dpkg database is empty, so the package's dependencies are not there.
fn dpkg(root: &Path, args: &[&str]) -> Output {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-confold",
        ])
        .args(args))
}

fn dpkg_install(root: &Path, deb: &Path) -> Output {
    dpkg(root, &["--install", deb.to_str().unwrap()])
}

fn passwd_has_edgepop(root: &Path) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f[0] == "edgepop").then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
    })
}

/// A command line from the installed unit, pointed into the test's root.
fn in_root(root: &Path, line: &str) -> String {
    let r = root.display();
    line.replace("/usr/bin/edgepop", &format!("{r}/usr/bin/edgepop"))
        .replace("/etc/edgepop/", &format!("{r}/etc/edgepop/"))
}

fn unit_lines(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

fn pid_in(file: &Path) -> i32 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

fn alive(pid: i32) -> bool {
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_package_installs_serves_upgrades_without_a_failed_request_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let first = build_package(&dir.path().join("first"), "1");
    let second = build_package(&dir.path().join("second"), "2");

    // lintian: no errors (warnings are printed for the reader).
    let lint = run(Command::new("lintian")
        .args(["--fail-on", "error"])
        .arg(&first));
    println!("lintian:\n{}", String::from_utf8_lossy(&lint.stdout));

    // Installed into a root of its own.
    let root = dir.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "run/edgepop"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    dpkg_install(&root, &first);
    let (uid, gid) = passwd_has_edgepop(&root).expect("postinst created the edgepop user");
    for d in ["var/lib/edgepop", "var/log/edgepop"] {
        let meta = std::fs::metadata(root.join(d)).unwrap_or_else(|e| panic!("{d}: {e}"));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, gid),
            "{d} belongs to edgepop"
        );
    }
    let status = String::from_utf8(dpkg(&root, &["--status", "edgepop"]).stdout).unwrap();
    assert!(status.contains("Status: install ok installed"), "{status}");
    for conffile in ["/etc/edgepop/edgepop.toml", "/etc/logrotate.d/edgepop"] {
        assert!(
            status.contains(&format!(" {conffile} ")),
            "conffile {conffile}:\n{status}"
        );
    }
    let man = root.join("usr/share/man/man1/edgepop-run.1.gz");
    assert!(man.exists(), "manual page from the command line");
    for f in ["dashboard.json", "alerts.yml", "prometheus.yml"] {
        assert!(
            root.join("usr/share/edgepop/monitoring").join(f).exists(),
            "{f}"
        );
    }

    // Both units, as installed: systemd's own verifier (in the root, with
    // this machine's targets for the units they name).
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for entry in std::fs::read_dir("/lib/systemd/system").unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "target" || e == "slice") {
            std::fs::copy(&p, units.join(p.file_name().unwrap())).unwrap();
        }
    }
    for unit in ["edgepop.service", "edgepop-anycast.service"] {
        let out = run(Command::new("systemd-analyze")
            .arg(format!("--root={}", root.display()))
            .args(["verify", "--man=no"])
            .arg(root.join("lib/systemd/system").join(unit)));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.trim().is_empty(),
            "systemd-analyze verify {unit}:\n{said}"
        );
    }

    // The operator edits the one file, for this machine's ports and paths.
    let origin = Origin::start(Duration::from_millis(2)).await;
    let http = format!("127.0.0.1:{}", common::free_port());
    let admin = format!("127.0.0.1:{}", common::free_port());
    let r = root.display();
    let config = format!(
        "# edited by the operator\n[pop]\nid = \"pkg1\"\n\n[listen]\nhttp = [\"{http}\"]\n\n[admin]\nlisten = \"{admin}\"\n\n\
         [server]\nthreads = 2\ndrain_timeout = \"10s\"\nupgrade_sock = \"{r}/run/edgepop/upgrade.sock\"\npid_file = \"{r}/run/edgepop/edgepop.pid\"\n\n\
         [log]\naccess = \"{r}/var/log/edgepop/access.log\"\nerror_log = \"{r}/var/log/edgepop/error.log\"\n\n\
         [replica]\nkind = \"embedded\"\npath = \"{r}/var/lib/edgepop/replica.redb\"\n\n{}{}",
        pool("public", &[(origin.addr, 1)]),
        site("shop.test", "public", "active"),
    );
    let conf_path = root.join("etc/edgepop/edgepop.toml");
    std::fs::write(&conf_path, &config).unwrap();

    // Started as the unit starts it.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/edgepop.service")).unwrap();
    for line in unit_lines(&unit, "ExecStartPre")
        .iter()
        .chain(&unit_lines(&unit, "ExecStart"))
    {
        run(Command::new("sh").arg("-c").arg(in_root(&root, line)));
    }
    let pid_file = root.join("run/edgepop/edgepop.pid");
    let old = pid_in(&pid_file);
    assert!(alive(old), "the daemon wrote its pid file");
    let url = format!("http://{http}/");
    until(
        Duration::from_secs(20),
        "the installed node answers",
        || {
            std::process::Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "-H", "Host: shop.test", &url])
                .status()
                .is_ok_and(|s| s.success())
        },
    )
    .await;

    // The upgrade, under load: dpkg replaces the files, then the unit's
    // reload (what postinst asks systemd for) hands the sockets over.
    let load_task = tokio::spawn(load(url.clone(), "shop.test", 4, Duration::from_secs(6)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    dpkg_install(&root, &second);
    let exe = std::fs::read_link(format!("/proc/{old}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().ends_with("(deleted)"),
        "the old process runs the replaced binary: {}",
        exe.display()
    );
    for line in unit_lines(&unit, "ExecReload") {
        run(Command::new("sh")
            .arg("-c")
            .arg(in_root(&root, &line))
            .env("MAINPID", old.to_string()));
    }
    until(Duration::from_secs(30), "the old process exits", || {
        !alive(old)
    })
    .await;
    let new = pid_in(&pid_file);
    assert!(alive(new) && new != old, "a new process serves (pid {new})");
    let exe = std::fs::read_link(format!("/proc/{new}/exe")).unwrap();
    assert_eq!(exe, root.join("usr/bin/edgepop"), "the new binary runs");

    let (ok, failed) = load_task.await.unwrap();
    assert!(
        failed.is_empty(),
        "requests failed during the upgrade: {failed:?}"
    );
    assert!(ok > 100, "only {ok} requests");
    let status = String::from_utf8(dpkg(&root, &["--status", "edgepop"]).stdout).unwrap();
    assert!(status.contains("Version: 0.1.0-2"), "{status}");
    assert_eq!(
        std::fs::read_to_string(&conf_path).unwrap(),
        config,
        "the edited config survives the upgrade"
    );

    // Remove keeps the user and the config; purge takes them away.
    unsafe { libc::kill(new, libc::SIGTERM) };
    until(Duration::from_secs(30), "the node stops", || !alive(new)).await;
    dpkg(&root, &["--remove", "edgepop"]);
    assert!(!root.join("usr/bin/edgepop").exists());
    assert!(passwd_has_edgepop(&root).is_some(), "user kept on remove");
    assert!(conf_path.exists(), "config kept on remove");
    dpkg(&root, &["--purge", "edgepop"]);
    assert!(passwd_has_edgepop(&root).is_none(), "user removed on purge");
    assert!(!conf_path.exists(), "config removed on purge");
    assert!(
        !root.join("var/lib/edgepop").exists(),
        "state removed on purge"
    );
}
