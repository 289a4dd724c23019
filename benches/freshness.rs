//! Freshness: time from publishing a page change to Kafka (tansu) until the
//! edge serves the new bytes, over N changes; prints p50 / p90 / p99 / max.
//!
//!   cargo bench --bench freshness -- [changes=1000]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn page(version: i64, body: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    json!({"after": {"store_id": 1, "path": "/", "content_type": "text/html", "body": body, "status": 200,
                     "cache_control": null, "version": version, "updated_at": "2026-11-21T00:00:00Z"},
           "source": {"table": "pages", "lsn": version, "ts_ms": now}, "op": "u", "ts_ms": now})
    .to_string()
}

#[tokio::main]
async fn main() {
    let changes: i64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let (kafka, http, admin) = (port(), port(), port());
    let broker_url = format!("tcp://127.0.0.1:{kafka}");
    let _broker = Killed(
        Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &broker_url,
                "--advertised-listener-url",
                &broker_url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu on PATH"),
    );
    let brokers = format!("127.0.0.1:{kafka}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let admin_client: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let topics = [
        NewTopic::new("cdc.public.domains", 1, TopicReplication::Fixed(1)),
        NewTopic::new("cdc.public.pages", 1, TopicReplication::Fixed(1)),
    ];
    admin_client
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap();

    let conf = dir.path().join("edgepop.toml");
    std::fs::write(
        &conf,
        format!(
            "[pop]\nid = \"bench1\"\n[listen]\nhttp = [\"127.0.0.1:{http}\"]\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [server]\nupgrade_sock = \"{d}/up.sock\"\npid_file = \"{d}/pid\"\n[log]\naccess = \"off\"\nlevel = \"warn\"\n\
             [sync]\nbrokers = \"{brokers}\"\ntopics = [\"cdc.public.domains\", \"cdc.public.pages\"]\n\
             [pools.public]\nservers = [{{ addr = \"127.0.0.1:9\" }}]\nhealth = {{ enabled = false }}\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let _edge = Killed(
        Command::new(env!("CARGO_BIN_EXE_edgepop"))
            .args(["run", "--config"])
            .arg(&conf)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let send = |topic: &'static str, key: String, value: String| {
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    };
    let domain = json!({"after": {"hostname": "shop.bench", "store_id": 1, "status": "active", "tier": "public", "version": 1},
                        "source": {"table": "domains"}, "op": "c"});
    send(
        "cdc.public.domains",
        "shop.bench".into(),
        domain.to_string(),
    )
    .await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{http}/");
    let served = |expect: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(r) = client.get(&url).header("host", "shop.bench").send().await {
                    if r.text().await.unwrap_or_default() == expect {
                        return true;
                    }
                }
            }
            false
        }
    };
    send("cdc.public.pages", "/".into(), page(1, "v1")).await;
    assert!(
        served("v1".into()).await,
        "edge never served the first page"
    );

    let mut took = Vec::with_capacity(changes as usize);
    for v in 2..=changes + 1 {
        let body = format!("v{v}");
        let started = Instant::now();
        send("cdc.public.pages", "/".into(), page(v, &body)).await;
        assert!(served(body).await, "change {v} never served");
        took.push(started.elapsed());
    }
    took.sort();
    let pct = |p: f64| {
        took[((took.len() as f64 * p).ceil() as usize).clamp(1, took.len()) - 1].as_secs_f64()
            * 1000.0
    };
    println!(
        "freshness over {} changes (publish -> new bytes served): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        took.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        took.last().unwrap().as_secs_f64() * 1000.0
    );
}
