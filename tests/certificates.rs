//! Issue 26, through the binary: a node with 10,000 certificates in its
//! store (the file store, then the PostgreSQL store) for 10,000 active
//! domains starts, and the first handshake for a stored name gets exactly
//! that certificate: loaded by name, not ordered, and not every
//! certificate read. Behaviour only, with generous deadlines: how fast it
//! starts (with 100,000) is benches/certs.rs's figure.

mod common;

use common::certs::{self, Batch};
use common::stream::Pg;
use common::*;
use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;

const N: usize = 10_000;
/// Deadline for anything that waits: far beyond what it should take.
const PATIENCE: Duration = Duration::from_secs(60);
/// Stored too, but not an active domain: never served.
const NOT_ACTIVE: &str = "gone.certs.test";

struct Node {
    edge: Edge,
    https: SocketAddr,
    batch: Batch,
    _origin: Origin,
}

/// An edge with `N` certificates for `N` active domains: `store` and
/// `replica` are the `[tls.store]` and `[replica]` tables, `fill` puts the
/// certificates in the store before the node starts.
async fn node(store: &str, replica: &str, fill: impl FnOnce(&Edge, &Batch)) -> Node {
    let origin = Origin::start(Duration::from_millis(1)).await;
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut edge = Edge::prepare("");
    edge.write_config(&format!(
        "[tls]\nlisten = [\"{https}\"]\nissue_timeout = \"30s\"\n{store}\n{replica}\n{}",
        pool("public", &[(origin.addr, 1)])
    ));
    let mut names = certs::names(N);
    let snapshot = edge.dir.path().join("domains.jsonl");
    certs::write_domains(&snapshot, &names);
    edge.command(&["replica", "init"]);
    edge.command(&["replica", "load", snapshot.to_str().unwrap()]);
    names.push(NOT_ACTIVE.into());
    let batch = certs::mint(&names);
    fill(&edge, &batch);
    edge = edge.launch(false).await;
    Node {
        edge,
        https,
        batch,
        _origin: origin,
    }
}

impl Node {
    /// The leaf a verified handshake for `host` gets: the first attempt
    /// must succeed.
    async fn leaf(&self, host: &str) -> Vec<u8> {
        let connector = certs::connector(&self.batch.root_pem);
        certs::leaf(&connector, self.https, host)
            .await
            .unwrap_or_else(|e| {
                panic!("handshake for {host}: {e}; stderr:\n{}", self.edge.stderr())
            })
    }

    async fn issuance(&self, result: &str) -> f64 {
        self.edge
            .metric(&format!(
                "edgepop_tls_issuance_total{{result=\"{result}\"}}"
            ))
            .await
    }

    /// Ready, then a random stored name and a few others each get exactly
    /// their stored certificate, from the store, with nothing ordered and
    /// only those names held in memory.
    async fn serves_stored_certificates(&self) {
        let ready = eventually(PATIENCE, || async {
            self.edge.admin_get("/readyz").await.0 == 200
        })
        .await;
        assert!(
            ready,
            "never ready: {:?}",
            self.edge.admin_get("/readyz").await
        );
        let listening = eventually(PATIENCE, || async {
            tokio::net::TcpStream::connect(self.https).await.is_ok()
        })
        .await;
        assert!(listening, "the HTTPS listener never took a connection");

        let mut rng = rand::rng();
        let mut picked: Vec<usize> = vec![rng.random_range(0..N)];
        // The first and last names, and a few more at random.
        picked.extend([0, N - 1]);
        picked.extend((0..3).map(|_| rng.random_range(0..N)));
        picked.sort_unstable();
        picked.dedup();
        for &i in &picked {
            let c = &self.batch.certs[i];
            assert_eq!(
                self.leaf(&c.name).await,
                c.leaf_der,
                "{}: the stored certificate",
                c.name
            );
        }
        // Again: from memory now, not from the store.
        let first = &self.batch.certs[picked[0]];
        assert_eq!(self.leaf(&first.name).await, first.leaf_der);

        let connector = certs::connector(&self.batch.root_pem);
        let refused = certs::leaf(&connector, self.https, NOT_ACTIVE).await;
        assert!(
            refused.is_err(),
            "{NOT_ACTIVE} is stored but no active domain: refused"
        );

        // The store sweep has passed over all N names (it holds a name
        // only when its renewal is due, and none is): still only these.
        let swept = eventually(PATIENCE, || async {
            self.edge.stderr().contains("active domains checked")
        })
        .await;
        assert!(
            swept,
            "the store sweep never finished:\n{}",
            self.edge.stderr()
        );
        let held = picked.len() as f64;
        assert_eq!(self.issuance("issued").await, 0.0, "nothing ordered");
        assert_eq!(self.issuance("failed").await, 0.0);
        assert_eq!(
            self.issuance("from_store").await,
            held,
            "each name loaded from the store once"
        );
        assert_eq!(
            self.edge.metric("edgepop_tls_certificates_held").await,
            held,
            "only the names handshaken are held, not the {N} stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_certificates_in_the_file_store() {
    let node = node("", "", |edge, batch| {
        certs::write_file_store(&edge.dir.path().join("edgepop-data/tls"), &batch.certs);
    })
    .await;
    node.serves_stored_certificates().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_certificates_in_the_postgres_store() {
    // One database for the store and the replica, as a PoP has.
    let pg = Pg::create();
    let store = format!("[tls.store]\npostgres = \"{}\"\n", pg.url());
    let node = node(&store, &pg.replica_section(), |edge, batch| {
        certs::touch_store(bin(), &edge.config_path(), NOT_ACTIVE);
        certs::copy_to_postgres(&pg.name, edge.dir.path(), &batch.certs);
    })
    .await;
    let stored = pg.sql("SELECT count(*) FROM edgepop_tls_certificates");
    assert_eq!(stored, (N + 1).to_string());
    node.serves_stored_certificates().await;
}
