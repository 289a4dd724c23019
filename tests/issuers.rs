//! `[[tls.issuers]]`: when the first CA fails an order (down, refusing,
//! slow), the next one issues it, through the binary, with two real CAs
//! (pebble). A name that fails validation is not passed on.

mod common;

use common::pebble::{Node, Pebble};
use common::*;
use std::time::Duration;

const SHOP: &str = "shop.example.com";
const BAD: &str = "bad.example.com";

impl Node {
    async fn launch(mut self, issuers: &str, origin: &Origin) -> Node {
        let body = format!(
            "[tls]\nlisten = [\"{}\"]\nissue_timeout = \"60s\"\n{issuers}\n{}{}{}",
            self.https,
            pool("public", &[(origin.addr, 1)]),
            site(SHOP, "public", "active"),
            site(BAD, "public", "active"),
        );
        self.edge.write_config(&body);
        self.edge = self.edge.launch(false).await;
        self
    }

    async fn orders(&self, issuer: &str, result: &str) -> f64 {
        self.edge
            .metric(&format!(
                "edgepop_tls_issuer_orders_total{{issuer=\"{issuer}\",result=\"{result}\"}}"
            ))
            .await
    }

    /// `edgepop tls status NAME`: exit code and what it printed.
    fn tls_status(&self, host: &str) -> (Option<i32>, String) {
        let out = std::process::Command::new(bin())
            .args(["tls", "status", host, "--config"])
            .arg(self.edge.config_path())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    }
}

/// The issuer entry of a CA at `directory` (not a pebble).
fn entry(name: &str, directory: &str, timeout: &str) -> String {
    format!(
        "[[tls.issuers]]\nname = \"{name}\"\ndirectory = \"{directory}\"\ntimeout = \"{timeout}\"\n"
    )
}

/// The second CA's certificate is served (it chains to that CA's root),
/// the first CA's failure is counted with `cause`, and both operators'
/// views (status, `/status`) name the second CA.
async fn second_ca_issued(node: &Node, second: &Pebble, first: &str, cause: &str) {
    let cert = peer_cert(node.https, SHOP, &second.root).await;
    assert!(
        cert.is_ok(),
        "the second CA's certificate: {cert:?}\n{}",
        node.edge.stderr()
    );
    assert_eq!(second.orders(), 1, "one order at the second CA");
    assert_eq!(
        node.orders(first, cause).await,
        1.0,
        "{first} failed: {cause}"
    );
    assert_eq!(node.orders("second", "issued").await, 1.0);
    assert_eq!(
        node.edge
            .metric("edgepop_tls_issuance_total{result=\"issued\"}")
            .await,
        1.0,
        "one issuance for the handshake"
    );
    let (code, said) = node.tls_status(SHOP);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("issuer:      second"), "{said}");
    let status = node.edge.status().await;
    let issuers = &status["certificates"]["issuers"];
    assert_eq!(issuers[0]["name"], first, "{issuers}");
    assert_eq!(issuers[0]["failed"], 1, "{issuers}");
    assert!(issuers[0]["last_failure"][1].is_string(), "{issuers}");
    assert_eq!(issuers[1]["issued"], 1, "{issuers}");
    // A second handshake is served from memory: no CA is asked again.
    peer_cert(node.https, SHOP, &second.root).await.unwrap();
    assert_eq!(second.orders(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_second_ca_issues_when_the_first_is_down_with_an_external_account_binding() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let node = Node::prepare();
    let (http, https) = (node.edge.http.port(), node.https.port());
    let mut first = Pebble::start(http, https).await;
    // The second CA opens accounts only with an external account binding
    // (as ZeroSSL and Google Trust Services do).
    let (kid, key) = (
        "kid-1",
        "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
    );
    let second = Pebble::start_requiring_eab(http, https, kid, key).await;
    let issuers = format!(
        "{}{}eab_kid = \"{kid}\"\neab_hmac_key = \"{key}\"\n",
        first.issuer_entry("first", "http-01"),
        second.issuer_entry("second", "http-01")
    );
    first.stop();
    let node = node.launch(&issuers, &origin).await;
    second_ca_issued(&node, &second, "first", "ca_unreachable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_second_ca_issues_when_the_first_refuses() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let node = Node::prepare();
    let (http, https) = (node.edge.http.port(), node.https.port());
    let first = Pebble::start_refusing(http, https, &[SHOP]).await;
    let second = Pebble::start(http, https).await;
    let issuers = format!(
        "{}{}",
        first.issuer_entry("first", "http-01"),
        second.issuer_entry("second", "http-01")
    );
    let node = node.launch(&issuers, &origin).await;
    second_ca_issued(&node, &second, "first", "ca_refused").await;
    let failure = node.edge.status().await["certificates"]["issuers"][0]["last_failure"][1].clone();
    assert!(
        failure.as_str().unwrap().contains("rejectedIdentifier"),
        "the CA's own words: {failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_second_ca_issues_when_the_first_is_slow() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let node = Node::prepare();
    let (http, https) = (node.edge.http.port(), node.https.port());
    // A CA that takes connections and never answers them.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = slow.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = slow.accept().await {
            open.push(conn);
        }
    });
    let second = Pebble::start(http, https).await;
    let issuers = format!(
        "{}{}",
        entry("slow", &format!("https://{slow_addr}/dir"), "2s"),
        second.issuer_entry("second", "http-01")
    );
    let node = node.launch(&issuers, &origin).await;
    second_ca_issued(&node, &second, "slow", "timeout").await;
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_that_fails_validation_is_not_passed_to_the_next_ca() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let node = Node::prepare();
    let (http, https) = (node.edge.http.port(), node.https.port());
    let first = Pebble::start(http, https).await;
    let second = Pebble::start(http, https).await;
    // The seller's DNS points elsewhere: no CA could validate it.
    first.set_a(BAD, "127.0.0.2").await;
    second.set_a(BAD, "127.0.0.2").await;
    let issuers = format!(
        "{}{}",
        first.issuer_entry("first", "http-01"),
        second.issuer_entry("second", "http-01")
    );
    let node = node.launch(&issuers, &origin).await;
    assert!(peer_cert(node.https, BAD, &first.root).await.is_err());
    let failed = eventually(Duration::from_secs(60), || async {
        node.orders("first", "challenge").await == 1.0
    })
    .await;
    assert!(
        failed,
        "the first CA's validation failed\nedge:\n{}\nfirst CA:\n{}",
        node.edge.stderr(),
        first.log()
    );
    assert_eq!(second.orders(), 0, "not passed on to the second CA");
    assert_eq!(node.orders("second", "issued").await, 0.0);
    // What the operator reads: no certificate, and why.
    let (code, said) = node.tls_status(BAD);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("last error:"), "{said}");
    assert!(said.contains("validation"), "the CA's reason: {said}");
}
