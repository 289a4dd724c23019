//! On-demand certificates from a real ACME CA (pebble), through the binary:
//! one node with the file store, and two nodes sharing the Postgres store
//! where the CA's validation reaches the node that did not order.

mod common;

use common::pebble::{Node, Pebble};
use common::stream::Pg;
use common::*;
use std::time::Duration;

const SHOP: &str = "shop.example.com";
const GONE: &str = "gone.example.com";
const BAD: &str = "bad.example.com";
const LATE: &str = "late.example.com";

impl Node {
    /// `tls_extra`: plain keys of `[tls]`; `store`: the shared database.
    async fn launch(
        self,
        pebble: &Pebble,
        challenge: &str,
        tls_extra: &str,
        store: Option<&Pg>,
        origin: &Origin,
    ) -> Node {
        self.launch_with(pebble, challenge, tls_extra, store, origin, "")
            .await
    }

    /// `launch`, with `tail` (whole tables, e.g. `[sync]`) at the end and
    /// the replica made first.
    async fn launch_with(
        mut self,
        pebble: &Pebble,
        challenge: &str,
        tls_extra: &str,
        store: Option<&Pg>,
        origin: &Origin,
        tail: &str,
    ) -> Node {
        let store = store
            .map(|pg| format!("[tls.store]\npostgres = \"{}\"\n", pg.url()))
            .unwrap_or_default();
        // Patient handshakes: eleven pebbles, their nodes and PostgreSQL
        // share two cores while this file runs, and one order has been seen
        // to take longer than 10 s here.
        let timeout = if tls_extra.contains("issue_timeout") {
            ""
        } else {
            "issue_timeout = \"30s\"\n"
        };
        let body = format!(
            "[tls]\nlisten = [\"{}\"]\n{timeout}{tls_extra}\n{store}{}\n{}{}{}{}{}",
            self.https,
            pebble.acme_table(challenge),
            pool("public", &[(origin.addr, 1)]),
            site(SHOP, "public", "active"),
            site(BAD, "public", "active"),
            site(GONE, "public", "suspended"),
            site(LATE, "public", "active"),
        );
        self.edge.write_config(&format!("{body}{tail}"));
        if !tail.is_empty() {
            self.edge.command(&["replica", "init"]);
        }
        self.edge = self.edge.launch(false).await;
        self
    }

    async fn cert(&self, host: &str, pebble: &Pebble) -> Result<Vec<u8>, String> {
        peer_cert(self.https, host, &pebble.root).await
    }

    async fn metric(&self, sample: &str) -> f64 {
        self.edge.metric(sample).await
    }

    async fn issued(&self) -> f64 {
        self.metric("edgepop_tls_issuance_total{result=\"issued\"}")
            .await
    }
}

/// Two nodes sharing one Postgres store; pebble validates at node B's
/// listeners, so whatever node A orders is validated through node B.
struct Pair {
    pebble: Pebble,
    a: Node,
    b: Node,
    pg: Pg,
    _origin: Origin,
}

async fn pair(challenge: &str, tls_extra: &str, validity: Option<Duration>) -> Pair {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let pg = Pg::create();
    let (a, b) = (Node::prepare(), Node::prepare());
    let pebble = Pebble::start_with_validity(b.edge.http.port(), b.https.port(), validity).await;
    let a = a
        .launch(&pebble, challenge, tls_extra, Some(&pg), &origin)
        .await;
    let b = b
        .launch(&pebble, challenge, tls_extra, Some(&pg), &origin)
        .await;
    Pair {
        pebble,
        a,
        b,
        pg,
        _origin: origin,
    }
}

/// One node, validated on its own listeners.
async fn single(challenge: &str, tls_extra: &str) -> (Pebble, Node, Origin) {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let node = Node::prepare();
    let pebble = Pebble::start(node.edge.http.port(), node.https.port()).await;
    let node = node
        .launch(&pebble, challenge, tls_extra, None, &origin)
        .await;
    (pebble, node, origin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_handshake_gets_a_ca_certificate_and_later_ones_do_not_contact_the_ca() {
    let (pebble, mut node, _origin) = single("http-01", "").await;
    let client = https_client(&pebble.root, SHOP, node.https, false);
    let url = format!("https://{SHOP}:{}/", node.https.port());
    let r = client
        .get(&url)
        .send()
        .await
        .expect("the chain verifies against pebble's root");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(pebble.orders(), 1);
    assert!(
        node.metric("edgepop_tls_challenges_answered_total{type=\"http-01\"}")
            .await
            >= 1.0,
        "pebble's HTTP-01 validation was answered by the edge"
    );

    let asked = pebble.requests();
    let r = https_client(&pebble.root, SHOP, node.https, true)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        pebble.requests(),
        asked,
        "a second handshake is served from memory"
    );

    // A restart reads the certificate and the account from the store.
    node.edge.kill9();
    node.edge = std::mem::replace(&mut node.edge, Edge::prepare(""))
        .launch(false)
        .await;
    node.cert(SHOP, &pebble).await.unwrap();
    assert_eq!(pebble.requests(), asked, "no re-issuance after a restart");
    assert_eq!(node.issued().await, 0.0);
    let certs = &node.edge.status().await["certificates"];
    assert_eq!(
        (certs["store"].as_str(), certs["stored"].as_u64()),
        (Some("file"), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_and_suspended_names_get_no_order() {
    let (pebble, node, _origin) = single("http-01", "").await;
    for host in ["unknown.example.com", GONE] {
        let err = node.cert(host, &pebble).await.unwrap_err();
        assert!(!err.is_empty());
    }
    assert_eq!(pebble.orders(), 0);
    assert_eq!(pebble.requests(), 0, "the CA was not contacted at all");
    assert_eq!(
        node.metric("edgepop_tls_handshakes_total{result=\"refused\"}")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_first_handshakes_make_one_order_over_tls_alpn() {
    let (pebble, node, _origin) = single("tls-alpn-01", "").await;
    let node = std::sync::Arc::new(node);
    let root = pebble.root.clone();
    let handshakes: Vec<_> = (0..50)
        .map(|_| {
            let (node, root) = (node.clone(), root.clone());
            tokio::spawn(async move { peer_cert(node.https, SHOP, &root).await })
        })
        .collect();
    let mut certs = Vec::new();
    for h in handshakes {
        certs.push(h.await.unwrap().expect("every handshake succeeds"));
    }
    assert!(certs.windows(2).all(|w| w[0] == w[1]), "one certificate");
    assert_eq!(pebble.orders(), 1);
    assert!(
        node.metric("edgepop_tls_challenges_answered_total{type=\"tls-alpn-01\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_validation_backs_off_then_succeeds_once_fixed() {
    let (pebble, node, _origin) = single("http-01", "backoff = \"2s\"").await;
    // The seller's DNS points elsewhere: the CA cannot reach this node.
    pebble.set_a(BAD, "127.0.0.2").await;
    assert!(node.cert(BAD, &pebble).await.is_err());
    // The order is a task of its own: under load the handshake can end
    // before pebble's log shows it (one CI run saw 0 here).
    let ordered = eventually(Duration::from_secs(15), || async { pebble.orders() == 1 }).await;
    assert!(ordered, "one order; edge log:\n{}", node.edge.stderr());
    for _ in 0..10 {
        assert!(node.cert(BAD, &pebble).await.is_err());
    }
    assert_eq!(pebble.orders(), 1, "backoff holds: no order storm");
    assert_eq!(
        node.metric("edgepop_tls_issuance_total{result=\"failed\"}")
            .await,
        1.0
    );
    assert_eq!(
        node.metric("edgepop_tls_issuance_failures_total{cause=\"challenge\"}")
            .await,
        1.0,
        "a failed validation is counted as such, not as a CA or store failure"
    );

    pebble.clear_a(BAD).await;
    let ok = eventually(Duration::from_secs(15), || async {
        node.cert(BAD, &pebble).await.is_ok()
    })
    .await;
    assert!(ok, "issued once the backoff passed and DNS was fixed");
    assert_eq!(pebble.orders(), 2);
}

/// Node A orders; the CA's validation reaches node B (pebble's ports are
/// B's), which answers from the shared store. Both then serve one
/// certificate, and a name wanted by both at once is still ordered once.
async fn two_nodes_share_one_order(challenge: &str, tls_extra: &str) -> Pair {
    let p = pair(challenge, tls_extra, None).await;
    let (pebble, a, b) = (&p.pebble, &p.a, &p.b);

    // One CI run saw AccessDenied here (not reproduced in 7 runs): the logs
    // say why if it happens again.
    let from_a = a.cert(SHOP, pebble).await.unwrap_or_else(|e| {
        panic!(
            "node A's handshake: {e}\nnode A log:\n{}\nnode B log:\n{}\npebble log:\n{}",
            a.edge.stderr(),
            b.edge.stderr(),
            pebble.log()
        )
    });
    assert_eq!(pebble.orders(), 1);
    let answered = format!("edgepop_tls_challenges_answered_total{{type=\"{challenge}\"}}");
    assert!(b.metric(&answered).await >= 1.0, "node B answered");
    assert_eq!(a.metric(&answered).await, 0.0, "node A was not asked");
    let from_b = b.cert(SHOP, pebble).await.expect("node B's handshake");
    assert_eq!(from_a, from_b, "both nodes serve the same certificate");
    assert_eq!(pebble.orders(), 1, "total orders = 1");
    assert_eq!((a.issued().await, b.issued().await), (1.0, 0.0));

    // Both nodes asked for a new name at the same moment.
    let both: Vec<_> = (0..10)
        .map(|i| {
            let https = if i % 2 == 0 { a.https } else { b.https };
            let root = pebble.root.clone();
            tokio::spawn(async move { peer_cert(https, BAD, &root).await })
        })
        .collect();
    let mut certs = Vec::new();
    for h in both {
        certs.push(h.await.unwrap().expect("every handshake succeeds"));
    }
    assert!(certs.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(pebble.orders(), 2, "one order for the second name");
    let certs = &b.edge.status().await["certificates"];
    assert_eq!(certs["store"], "postgres");
    assert_eq!(certs["stored"], 2);
    assert_eq!(certs["pending"], 0);
    assert_eq!(certs["in_memory"], 2, "both names held by node B");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_one_order_over_http01() {
    // The challenge path is answered before the HTTP→HTTPS redirect.
    let p = two_nodes_share_one_order("http-01", "redirect_http = true").await;
    let (pebble, a, pg) = (&p.pebble, &p.a, &p.pg);

    // A holder that crashed mid-order: nobody orders while its lease
    // runs, and the lock is taken over when it lapses.
    pg.sql(&format!(
        "INSERT INTO edgepop_tls_locks VALUES ('{LATE}', 'crashed-node', now() + interval '3 seconds')"
    ));
    let started = std::time::Instant::now();
    a.cert(LATE, pebble)
        .await
        .expect("issued after the dead holder's lease");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the live lease was respected"
    );
    assert_eq!(pebble.orders(), 3);
    assert_eq!(pg.sql("SELECT count(*) FROM edgepop_tls_locks"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_one_order_over_tls_alpn01() {
    two_nodes_share_one_order("tls-alpn-01", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewal_on_two_nodes_replaces_short_lived_certificates_without_a_failed_handshake() {
    let renew = "renew_when_left = 0.5\nrenew_check = \"300ms\"";
    let validity = Some(Duration::from_secs(6));
    let p = pair("http-01", renew, validity).await;
    let (pebble, a, b) = (&p.pebble, &p.a, &p.b);

    a.cert(SHOP, pebble).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    // 9 s: every certificate involved expires during it.
    for i in 0..45 {
        let node = if i % 2 == 0 { &a } else { &b };
        let cert = node
            .cert(SHOP, pebble)
            .await
            .unwrap_or_else(|e| panic!("handshake {i} failed: {e}"));
        seen.insert(cert);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen.len() >= 3, "renewed more than once: {}", seen.len());
    let mut renewed = 0.0;
    let mut from_store = 0.0;
    for n in [&a, &b] {
        renewed += n
            .metric("edgepop_tls_issuance_total{result=\"renewed\"}")
            .await;
        from_store += n
            .metric("edgepop_tls_issuance_total{result=\"from_store\"}")
            .await;
    }
    let issued = a.issued().await + b.issued().await;
    assert_eq!(
        issued + renewed,
        pebble.orders() as f64,
        "every order is one node's"
    );
    assert!(
        from_store >= 1.0,
        "a node took the renewal its peer ordered instead of ordering its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_certificate_is_replaced_on_every_node() {
    let check = "renew_check = \"300ms\"";
    let p = pair("http-01", check, None).await;
    let (pebble, a, b) = (&p.pebble, &p.a, &p.b);
    let old = a.cert(SHOP, pebble).await.unwrap();
    assert_eq!(b.cert(SHOP, pebble).await.unwrap(), old);
    assert!(pebble.cert_status(&old).await.contains("Valid"));

    let out = a.edge.command(&["tls", "revoke", SHOP]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    assert!(
        pebble.cert_status(&old).await.contains("Revoked"),
        "revoked at the CA"
    );
    let replaced = eventually(Duration::from_secs(10), || async {
        let (x, y) = (a.cert(SHOP, pebble).await, b.cert(SHOP, pebble).await);
        matches!((x, y), (Ok(x), Ok(y)) if x != old && y != old)
    })
    .await;
    assert!(
        replaced,
        "both nodes stopped serving the revoked certificate"
    );
    assert_eq!(
        a.cert(SHOP, pebble).await.unwrap(),
        b.cert(SHOP, pebble).await.unwrap()
    );
    assert_eq!(pebble.orders(), 2, "one new order for the network");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_order_backs_off_every_node_sharing_the_store() {
    let backoff = "backoff = \"2s\"";
    let p = pair("http-01", backoff, None).await;
    let (pebble, a, b) = (&p.pebble, &p.a, &p.b);

    pebble.set_a(BAD, "127.0.0.2").await;
    assert!(a.cert(BAD, pebble).await.is_err());
    assert_eq!(pebble.orders(), 1);
    for node in [&b, &a, &b, &b] {
        assert!(node.cert(BAD, pebble).await.is_err());
    }
    assert_eq!(
        pebble.orders(),
        1,
        "no node orders while the name backs off"
    );
    let failed = "edgepop_tls_issuance_total{result=\"failed\"}";
    assert_eq!((a.metric(failed).await, b.metric(failed).await), (1.0, 0.0));

    pebble.clear_a(BAD).await;
    let ok = eventually(Duration::from_secs(15), || async {
        b.cert(BAD, pebble).await.is_ok()
    })
    .await;
    assert!(ok, "issued once the backoff passed and DNS was fixed");
    assert_eq!(pebble.orders(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_goes_on_after_the_handshake_stops_waiting() {
    // A CA slower than the handshake's patience: here, any CA at all.
    let (pebble, node, _origin) = single("http-01", "issue_timeout = \"1ms\"").await;
    let err = node.cert(SHOP, &pebble).await.unwrap_err();
    assert!(!err.is_empty());
    // Generous: eleven pebbles share two cores while this suite runs.
    let served = eventually(Duration::from_secs(30), || async {
        node.cert(SHOP, &pebble).await.is_ok()
    })
    .await;
    assert!(
        served,
        "a later handshake gets the certificate of that order; edge log:\n{}\npebble log:\n{}",
        node.edge.stderr(),
        pebble.log()
    );
    assert_eq!(pebble.orders(), 1, "the order was not abandoned and redone");
    assert_eq!(
        node.metric("edgepop_tls_issuance_total{result=\"failed\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_still_orders_when_the_shared_store_is_down() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let pg = Pg::create();
    let node = Node::prepare();
    let pebble = Pebble::start(node.edge.http.port(), node.https.port()).await;
    let node = node
        .launch(&pebble, "http-01", "", Some(&pg), &origin)
        .await;
    let log = |e: String| panic!("{e}; edge log:\n{}", node.edge.stderr());
    node.cert(SHOP, &pebble)
        .await
        .map_err(|e| format!("store up: {e}"))
        .unwrap_or_else(log);

    pg.cut();
    let cert = node.cert(LATE, &pebble).await;
    pg.restore();
    cert.map_err(|e| format!("issued without the store (challenge answered from memory): {e}"))
        .unwrap_or_else(log);
    assert_eq!(pebble.orders(), 2);
    node.cert(SHOP, &pebble)
        .await
        .expect("held certificates keep serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_domain_the_stream_makes_active_is_ordered_once_for_the_network_before_any_handshake() {
    use common::stream::{domain, Broker, DOMAINS};
    const AHEAD: &str = "ahead.example.com";
    let broker = Broker::start().await;
    let origin = Origin::start(Duration::from_millis(1)).await;
    let pg = Pg::create();
    let (a, b) = (Node::prepare(), Node::prepare());
    let pebble = Pebble::start(b.edge.http.port(), b.https.port()).await;
    let sync = broker.sync_section();
    let a = a
        .launch_with(&pebble, "http-01", "", Some(&pg), &origin, &sync)
        .await;
    let b = b
        .launch_with(&pebble, "http-01", "", Some(&pg), &origin, &sync)
        .await;

    // Committed at the primary: both PoPs hear of it at once.
    let record = domain(AHEAD, 9, "active", 1, false);
    let key = format!("{{\"hostname\":\"{AHEAD}\"}}");
    broker.producer().send(DOMAINS, &key, Some(&record)).await;
    let ahead = "edgepop_tls_ahead_total{result=\"issued_ahead\"}";
    for node in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(60), || async {
                node.metric(ahead).await == 1.0
            })
            .await,
            "a PoP has no certificate ahead\n{}",
            node.edge.stderr()
        );
    }
    // One order for the network; the other PoP took it from the store.
    assert_eq!(a.issued().await + b.issued().await, 1.0);
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());

    // Every PoP's first handshake for the name issues nothing.
    for node in [&a, &b] {
        node.cert(AHEAD, &pebble).await.expect("served");
    }
    assert_eq!(a.issued().await + b.issued().await, 1.0);
    assert_eq!(pebble.orders(), 1);
}

/// Revokes `leaf` at the CA under the node's own ACME account (from its
/// file store), as a CA does in a mass revocation: the node is not told.
async fn revoke_at_the_ca(node: &Node, pebble: &Pebble, leaf: &[u8]) {
    let accounts = node.edge.dir.path().join("edgepop-data/tls/accounts");
    let file = std::fs::read_dir(&accounts)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let creds: instant_acme::AccountCredentials =
        serde_json::from_slice(&std::fs::read(file.path()).unwrap()).unwrap();
    let account = instant_acme::Account::builder_with_root(&pebble.listener_ca)
        .unwrap()
        .from_credentials(creds)
        .await
        .unwrap();
    let leaf = rustls_pki_types::CertificateDer::from(leaf.to_vec());
    let request = instant_acme::RevocationRequest {
        certificate: &leaf,
        reason: None,
    };
    account.revoke(&request).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_the_ca_revoked_is_renewed_at_once_through_ari_and_replaced() {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let node = Node::prepare();
    let month = Duration::from_secs(30 * 24 * 3600);
    let pebble = Pebble::start_with_ari(node.edge.http.port(), node.https.port(), month).await;
    let mut node = node
        .launch(&pebble, "http-01", "renew_check = \"1s\"", None, &origin)
        .await;
    let first = node.cert(SHOP, &pebble).await.unwrap();

    // The CA's window for a 30-day certificate: about two thirds in.
    let asked = eventually(Duration::from_secs(30), || async {
        node.edge.stderr().contains("CA's renewal window")
    })
    .await;
    assert!(
        asked,
        "the node asked the CA's renewal information\n{}",
        node.edge.stderr()
    );
    let said = String::from_utf8(node.edge.command(&["tls", "status", SHOP]).stdout).unwrap();
    assert!(said.contains("within the CA's ARI window"), "{said}");
    assert!(said.contains("state:       valid"), "{said}");
    assert_eq!(
        node.metric("edgepop_tls_issuance_total{result=\"renewed\"}")
            .await,
        0.0
    );

    // The CA revokes it behind the node's back; its renewal information
    // now says "at once". The node asks again after the CA's Retry-After
    // (6 h): a restart asks now.
    revoke_at_the_ca(&node, &pebble, &first).await;
    node.edge.kill9();
    node.edge = node.edge.launch(false).await;
    // Still served from the store (the node was not told), now held.
    assert_eq!(node.cert(SHOP, &pebble).await.unwrap(), first);
    let renewed = eventually(Duration::from_secs(60), || async {
        node.metric("edgepop_tls_issuance_total{result=\"renewed\"}")
            .await
            == 1.0
    })
    .await;
    assert!(renewed, "renewed at once\n{}", node.edge.stderr());
    let log = pebble.log();
    assert!(
        log.contains("is a replacement of"),
        "the new order named the certificate it replaces (ARI `replaces`)\n{log}"
    );
    let second = node.cert(SHOP, &pebble).await.unwrap();
    assert_ne!(second, first, "the replacement is served");
    assert_eq!(
        node.metric("edgepop_tls_issuance_total{result=\"failed\"}")
            .await,
        0.0
    );
}
