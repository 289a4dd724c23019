//! `edgepop check`: a config error names the key and the line.

mod common;

use std::process::Command;

fn check(src: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgepop.toml");
    std::fs::write(&path, src).unwrap();
    let out = Command::new(common::bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

const GOOD: &str = "[pop]\nid = \"fra1\"\n\n[listen]\nhttp = [\"127.0.0.1:8080\"]\n\n[pools.public]\nservers = [{ addr = \"127.0.0.1:9001\" }]\nhealth = { path = \"/healthz\", interval = \"2s\" }\n\n[[sites]]\nhostname = \"shop.example.com\"\nstore_id = 1\ntier = \"public\"\n";

#[test]
fn good_config_passes() {
    let (code, out) = check(GOOD);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok (pop fra1"), "{out}");
}

#[test]
fn shipped_configs_pass() {
    for f in ["conf/quickstart.toml", "conf/production.toml"] {
        let out = Command::new(common::bin())
            .args(["check", "--config", f])
            .output()
            .unwrap();
        common::succeeded(out, f);
    }
}

#[test]
fn broken_configs_name_key_and_line() {
    let cases = [
        (
            GOOD.replace("\"2s\"", "\"soon\""),
            "pools.public.health.interval",
            9,
        ),
        (
            GOOD.replace("127.0.0.1:9001", "nowhere"),
            "pools.public.servers[0].addr",
            8,
        ),
        (
            GOOD.replace("tier = \"public\"", "tier = \"enterprise\""),
            "sites[0].tier",
            14,
        ),
        (
            GOOD.replace("store_id = 1", "store_id = 1\nstatus = \"deleted\""),
            "sites[0].status",
            14,
        ),
        (
            GOOD.replace("id = \"fra1\"", "id = \"fra1\"\ncolour = \"blue\""),
            "pop.colour",
            3,
        ),
        (
            GOOD.replace("/healthz", "healthz"),
            "pools.public.health.path",
            9,
        ),
        (
            GOOD.replace("[{ addr = \"127.0.0.1:9001\" }]", "[]"),
            "pools.public.servers",
            8,
        ),
    ];
    for (src, key, line) in cases {
        let (code, out) = check(&src);
        assert_eq!(code, 2, "{out}");
        assert!(
            out.contains(&format!(":{line}: key `{key}`")),
            "want {key} at line {line}, got: {out}"
        );
    }
}

#[test]
fn toml_syntax_error_names_line() {
    let (code, out) = check(&GOOD.replace("[listen]", "[listen"));
    assert_eq!(code, 2);
    assert!(out.contains(":4"), "{out}");
}

#[test]
fn replica_load_reports_malformed_lines_and_loads_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("edgepop.toml");
    std::fs::write(&conf, GOOD).unwrap();
    let demo = std::fs::read_to_string("conf/demo/snapshot.jsonl").unwrap();
    let mut lines: Vec<&str> = demo.lines().collect();
    lines.insert(2, "{this is not json");
    lines.push(r#"{"op":"c","source":{"table":"orders"},"after":{}}"#);
    lines.push(lines[1]); // the same record again: stale
    let snapshot = dir.path().join("snap.jsonl");
    std::fs::write(&snapshot, lines.join("\n")).unwrap();

    let out = Command::new(common::bin())
        .args(["replica", "load"])
        .arg(&snapshot)
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("snap.jsonl:3: malformed"), "{stderr}");
    assert!(
        stderr.contains("snap.jsonl:6: malformed") && stderr.contains("orders"),
        "{stderr}"
    );
    assert!(stdout.contains("4 applied, 1 stale, 2 skipped"), "{stdout}");
    assert!(
        dir.path().join("edgepop-data/replica.redb").exists(),
        "replica file next to the config"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pid_file_is_written_in_the_foreground_too() {
    let edge = common::Edge::start(&common::idle_pool()).await;
    let pid = std::fs::read_to_string(edge.dir.path().join("edgepop.pid"))
        .expect("pid file written by a foreground edgepop run");
    assert_eq!(pid.trim(), edge.child.id().to_string());
}
