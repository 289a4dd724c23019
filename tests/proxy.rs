//! The request path through the real binary, against real origin servers.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MS: fn(u64) -> Duration = Duration::from_millis;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_connections_starves_the_slow_origin_not_the_clients() {
    let slow = Origin::start(MS(200)).await;
    let fast1 = Origin::start(MS(2)).await;
    let fast2 = Origin::start(MS(2)).await;
    let edge = Edge::start(&format!(
        "{}{}",
        pool(
            "public",
            &[(slow.addr, 1), (fast1.addr, 1), (fast2.addr, 1)]
        ),
        site("shop.test", "public", "active")
    ))
    .await;

    let (ok, failed) = load(edge.url("/"), "shop.test", 24, Duration::from_secs(3)).await;
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let total = slow.hits() + fast1.hits() + fast2.hits();
    assert_eq!(total, ok, "every OK response came from one origin request");
    let share = slow.hits() as f64 / total as f64;
    // Round robin would hand the slow server a third of the requests.
    assert!(
        share < 0.15,
        "slow origin got {} of {total} ({share:.2})",
        slow.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weights_are_honoured() {
    let heavy = Origin::start(MS(5)).await;
    let light = Origin::start(MS(5)).await;
    let edge = Edge::start(&format!(
        "{}{}",
        pool("public", &[(heavy.addr, 3), (light.addr, 1)]),
        site("shop.test", "public", "active")
    ))
    .await;
    let (_, failed) = load(edge.url("/"), "shop.test", 16, Duration::from_secs(2)).await;
    assert!(failed.is_empty(), "{failed:?}");
    let ratio = heavy.hits() as f64 / light.hits().max(1) as f64;
    assert!(
        (2.0..4.5).contains(&ratio),
        "weight 3:1 gave {}:{}",
        heavy.hits(),
        light.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_origin_is_retried_ejected_and_taken_back() {
    let a = Origin::start(MS(2)).await;
    let mut b = Origin::start(MS(2)).await;
    let c = Origin::start(MS(2)).await;
    let edge = Edge::start(&format!(
        "{}{}",
        pool("public", &[(a.addr, 1), (b.addr, 1), (c.addr, 1)]),
        site("shop.test", "public", "active")
    ))
    .await;

    let load_task = tokio::spawn(load(edge.url("/"), "shop.test", 8, Duration::from_secs(4)));
    tokio::time::sleep(MS(1000)).await;
    b.kill();
    let b_addr = b.addr.to_string();
    let out = eventually(Duration::from_secs(3), || async {
        let st = edge.status().await;
        backend(&st, &b_addr)
            .map(|s| s["healthy"] == false || s["ejected"] == true)
            .unwrap_or(false)
    })
    .await;
    assert!(
        out,
        "killed origin never taken out: {}",
        edge.status().await
    );

    let (ok, failed) = load_task.await.unwrap();
    assert!(ok > 100, "load ran: {ok}");
    assert!(
        failed.is_empty(),
        "GETs failed while an origin died: {failed:?}"
    );

    b.restart().await;
    let back = eventually(Duration::from_secs(5), || async {
        let st = edge.status().await;
        backend(&st, &b_addr)
            .map(|s| s["healthy"] == true && s["ejected"] == false)
            .unwrap_or(false)
    })
    .await;
    assert!(
        back,
        "restarted origin not taken back: {}",
        edge.status().await
    );
    let before = b.hits();
    let (_, failed) = load(edge.url("/"), "shop.test", 4, MS(500)).await;
    assert!(failed.is_empty());
    assert!(
        b.hits() > before,
        "restarted origin receives requests again"
    );
}

fn backend<'a>(status: &'a serde_json::Value, addr: &str) -> Option<&'a serde_json::Value> {
    status["pools"]
        .as_array()?
        .iter()
        .flat_map(|p| p["servers"].as_array().unwrap().iter())
        .find(|s| s["addr"] == addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn error_statuses_carry_edge_route_and_spoofed_route_is_dropped() {
    let fast = Origin::start(MS(1)).await;
    let slow = Origin::start(Duration::from_secs(3)).await;
    let edge = Edge::start(&format!(
        "[proxy]\nread_timeout = \"300ms\"\n\n{}{}{}{}{}",
        pool("public", &[(fast.addr, 1)]),
        pool("enterprise", &[(slow.addr, 1)]),
        site("ok.test", "public", "active"),
        site("slow.test", "enterprise", "active"),
        site("susp.test", "public", "suspended"),
    ))
    .await;

    // Proxied: a client-sent x-edge-route reaches neither origin nor client.
    let r = edge
        .get("OK.test:8080", "/x?y=1")
        .header("x-edge-route", "evil1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-edge-route"], "tst1");
    assert_eq!(r.headers()["x-edge-cache"], "BYPASS");
    let timing = r.headers()["server-timing"].to_str().unwrap().to_string();
    assert!(
        timing.contains("edge;dur=") && timing.contains("origin;dur="),
        "{timing}"
    );
    let seen = fast.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen["x-edge-route"], "tst1");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    // The origin hears the name the edge routed on, not the client's spelling.
    assert_eq!(seen["host"], "ok.test");
    assert_eq!(seen["x-forwarded-host"], "ok.test:8080");

    for (host, status) in [
        ("nope.test", 421),
        ("susp.test", 403),
        ("slow.test", 504),
        ("bad_host!", 400),
    ] {
        let r = edge.get(host, "/").send().await.unwrap();
        assert_eq!(r.status(), status, "{host}");
        assert_eq!(r.headers()["x-edge-route"], "tst1", "{host}");
        let body = r.text().await.unwrap();
        assert!(
            body.starts_with(&status.to_string()),
            "{host}: reason body {body:?}"
        );
    }
    // Counted by the site's tier; a name the edge does not serve has none.
    let unknown = r#"edgepop_requests_total{cache="BYPASS",status="421",tier="none"}"#;
    assert_eq!(edge.metric(unknown).await, 1.0);
    let suspended = r#"edgepop_requests_total{cache="BYPASS",status="403",tier="public"}"#;
    assert!(edge.metric(suspended).await >= 1.0);
    assert_eq!(fast.hits(), 1, "421/403/400 never reach an origin");

    // No Host at all.
    let mut s = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("x-edge-route: tst1"),
        "{raw}"
    );

    let log = edge.access_log();
    let line = log
        .lines()
        .find(|l| l.contains("\"status\":421"))
        .expect("421 logged");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    for key in [
        "time",
        "pop",
        "host",
        "method",
        "path",
        "proto",
        "bytes",
        "cache",
        "upstream",
        "duration_ms",
    ] {
        assert!(v.get(key).is_some(), "access log lacks {key}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_reachable_origin_is_503_with_retry_after() {
    let dead1 = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dead2 = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let edge = Edge::start(&format!(
        "{}{}",
        pool("public", &[(dead1, 1), (dead2, 1)]),
        site("shop.test", "public", "active")
    ))
    .await;
    // First while both still count as healthy (connects fail), then after
    // the health check has taken them out.
    for _ in 0..2 {
        let r = edge.get("shop.test", "/").send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["x-edge-route"], "tst1");
        assert_eq!(r.headers()["retry-after"], "5");
        tokio::time::sleep(MS(700)).await;
    }
    let (code, body) = edge.admin_get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no healthy origin"), "{body}");
    // What the alerts read: not ready, and the 503s counted for the site's tier.
    assert_eq!(edge.metric("edgepop_ready").await, 0.0);
    let refused = r#"edgepop_requests_total{cache="BYPASS",status="503",tier="public"}"#;
    assert_eq!(edge.metric(refused).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_loses_nothing_and_bad_config_is_refused() {
    let a = Origin::start(MS(20)).await;
    let b = Origin::start(MS(20)).await;
    let sites = site("shop.test", "public", "active");
    let edge = Edge::start(&format!("{}{sites}", pool("public", &[(a.addr, 1)]))).await;

    let load_task = tokio::spawn(load(edge.url("/"), "shop.test", 8, Duration::from_secs(3)));
    tokio::time::sleep(MS(800)).await;
    edge.write_config(&format!(
        "{}{sites}",
        pool("public", &[(a.addr, 1), (b.addr, 1)])
    ));
    edge.signal(libc::SIGHUP);
    tokio::time::sleep(MS(800)).await;
    edge.write_config("[pools.public]\nservers = [{ addr = \"nowhere\" }]\n");
    edge.signal(libc::SIGHUP);
    let (ok, failed) = load_task.await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 50);
    assert!(b.hits() > 0, "the reloaded pool is in use");

    let st = edge.status().await;
    assert_eq!(
        st["config"]["generation"], 2,
        "the broken config was refused"
    );
    assert!(
        edge.stderr().contains("config reload refused"),
        "{}",
        edge.stderr()
    );
    assert!(
        edge.stderr().contains("pools.public.servers[0].addr"),
        "error names the key"
    );
    // In-flight counters came back to zero across the swap.
    let all_zero = eventually(Duration::from_secs(2), || async {
        let st = edge.status().await;
        st["pools"][0]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["inflight"] == 0)
    })
    .await;
    assert!(all_zero, "{}", edge.status().await);
    let r = edge.get("shop.test", "/").send().await.unwrap();
    assert_eq!(r.status(), 200, "still serving on the good config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let slow = Origin::start(MS(1500)).await;
    let mut edge = Edge::start(&format!(
        "{}{}",
        pool("public", &[(slow.addr, 1)]),
        site("shop.test", "public", "active")
    ))
    .await;
    let mut inflight = Vec::new();
    for _ in 0..4 {
        let req = edge.get("shop.test", "/slow");
        inflight.push(tokio::spawn(async move {
            req.send().await.map(|r| r.status().as_u16())
        }));
    }
    assert!(eventually(Duration::from_secs(2), || async { slow.hits() == 4 }).await);
    edge.signal(libc::SIGTERM);
    // The admin listener drains too: a probe gets 503 or no answer, never 200.
    let drained = eventually(Duration::from_secs(1), || async {
        !matches!(client().get(format!("http://{}/readyz", edge.admin)).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(drained, "/readyz stops saying ready while draining");
    for t in inflight {
        assert_eq!(
            t.await.unwrap().unwrap(),
            200,
            "an in-flight request was cut"
        );
    }
    assert_eq!(edge.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert!(
        edge.get("shop.test", "/").send().await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_upgrade_hands_over_sockets_without_failures() {
    let origin = Origin::start(MS(5)).await;
    let mut old = Edge::start(&format!(
        "{}{}",
        pool("public", &[(origin.addr, 1)]),
        site("shop.test", "public", "active")
    ))
    .await;
    let load_task = tokio::spawn(load(old.url("/"), "shop.test", 4, Duration::from_secs(4)));
    tokio::time::sleep(MS(500)).await;

    // The new process waits on the upgrade socket; SIGQUIT makes the old one
    // send its listeners over, then drain and exit.
    let mut new = std::process::Command::new(bin())
        .args(["run", "--upgrade", "--config"])
        .arg(old.config_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(old.dir.path().join("stderr.new.log")).unwrap())
        .spawn()
        .unwrap();
    tokio::time::sleep(MS(500)).await;
    old.signal(libc::SIGQUIT);

    let (ok, failed) = load_task.await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 100);
    assert_eq!(
        old.wait_exit(Duration::from_secs(15)).await,
        Some(0),
        "old process exits after handing over"
    );
    let r = old.get("shop.test", "/").send().await.unwrap();
    assert_eq!(r.status(), 200, "the new process serves the same listener");
    assert!(new.try_wait().unwrap().is_none(), "new process running");
    let _ = new.kill();
    let _ = new.wait();
}
