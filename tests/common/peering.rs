//! PoPs that relay to each other: certificates from a PoP CA made by
//! `conf/peering-certs.sh`, their `[peering]` / `[[peers]]` sections, and
//! a client that speaks on the peer channel as a given PoP.

use super::{free_port, succeeded, Edge};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub struct PopCa {
    pub dir: tempfile::TempDir,
}

impl PopCa {
    /// A CA and a certificate for each of `pops`.
    pub fn new(pops: &[&str]) -> PopCa {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg("conf/peering-certs.sh")
            .arg(dir.path())
            .args(pops)
            .output()
            .unwrap();
        succeeded(out, "conf/peering-certs.sh");
        PopCa { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `pop`'s `[peering]` on `listen`, and its `[[peers]]` in order.
    pub fn peering(&self, pop: &str, listen: SocketAddr, peers: &[(&str, SocketAddr)]) -> String {
        let mut out = format!(
            "[peering]\nlisten = [\"{listen}\"]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
             check = {{ interval = \"200ms\", timeout = \"500ms\", rise = 1, fall = 1 }}\n",
            ca = self.path("ca.pem").display(),
            cert = self.path(&format!("{pop}.pem")).display(),
            key = self.path(&format!("{pop}.key")).display(),
        );
        for (peer, addr) in peers {
            out.push_str(&format!("[[peers]]\npop = \"{peer}\"\naddr = \"{addr}\"\n"));
        }
        out
    }
}

/// An HTTPS client on the peer channel trusting `trust`'s CA, presenting
/// the certificate of PoP `as_pop` from `cert_from` (which may be another
/// CA), or none; `peer` (a PoP id) resolves to `addr`.
pub fn peer_client(
    cert_from: Option<(&PopCa, &str)>,
    trust: &PopCa,
    peer: &str,
    addr: SocketAddr,
) -> reqwest::Client {
    let root =
        reqwest::Certificate::from_pem(&std::fs::read(trust.path("ca.pem")).unwrap()).unwrap();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .resolve(peer, addr)
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(20));
    if let Some((ca, pop)) = cert_from {
        let mut pem = std::fs::read(ca.path(&format!("{pop}.pem"))).unwrap();
        pem.extend(std::fs::read(ca.path(&format!("{pop}.key"))).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// A PoP's edge with its own id and peer listener.
pub struct Pop {
    pub edge: Edge,
    pub peer_addr: SocketAddr,
}

/// Where a PoP's peer listener will be, before its config is written.
pub fn peer_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

impl Pop {
    /// Starts `pop` with `body` (pools, sites, `[peering]`...); `setup`
    /// runs on the prepared edge first (e.g. loading its replica).
    pub async fn start(
        pop: &str,
        peer_addr: SocketAddr,
        body: &str,
        setup: impl FnOnce(&Edge),
    ) -> Pop {
        let mut edge = Edge::prepare(body);
        edge.pop = pop.to_string();
        edge.write_config(body);
        setup(&edge);
        Pop {
            edge: edge.launch(false).await,
            peer_addr,
        }
    }

    /// Whether this PoP sees `peer` as ready (its `/status`).
    pub async fn sees_ready(&self, peer: &str) -> bool {
        let status = self.edge.status().await;
        status["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["pop"] == peer && p["ready"] == true)
    }
}
