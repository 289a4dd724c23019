//! A real ACME CA for tests: Debian's pebble, with pebble-challtestsrv as
//! its DNS (every name resolves to 127.0.0.1 unless a test says otherwise).
//! Pebble validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`
//! of that address: the edge node's listeners.

use super::{free_port, Edge};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An edge node whose ports are picked before its CA starts (pebble
/// validates HTTP-01 and TLS-ALPN-01 on them); each test file launches it
/// its own way.
pub struct Node {
    pub edge: Edge,
    pub https: SocketAddr,
}

impl Node {
    pub fn prepare() -> Node {
        Node {
            edge: Edge::prepare(""),
            https: SocketAddr::from(([127, 0, 0, 1], free_port())),
        }
    }
}

/// Where tests/run.sh unpacks Debian trixie's pebble 2.6 (ARI).
pub const PEBBLE_ARI: &str = "/opt/pebble-2.6/usr/bin/pebble";

/// How a test's pebble differs from the default one.
struct Opts {
    validity: Option<Duration>,
    blocked: Vec<String>,
    eab: Option<(String, String)>,
    binary: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            validity: None,
            blocked: Vec::new(),
            eab: None,
            binary: "pebble".into(),
        }
    }
}

pub struct Pebble {
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
    pub directory: String,
    /// Trust for pebble's own HTTPS (its directory and management API).
    pub listener_ca: PathBuf,
    /// Pebble's issuing root, which edge certificates chain to.
    pub root: PathBuf,
    dns_admin: SocketAddr,
    mgmt: SocketAddr,
}

/// A CA and a certificate for 127.0.0.1 signed by it (webpki will not take
/// a self-signed leaf as its own anchor).
fn listener_certs(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// GET on pebble's management API (its HTTPS is signed by `listener_ca`).
async fn management_get(listener_ca: &std::path::Path, url: String) -> String {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(listener_ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn listening(addr: SocketAddr) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

impl Pebble {
    pub async fn start(http_port: u16, tls_port: u16) -> Pebble {
        Pebble::start_with(http_port, tls_port, Opts::default()).await
    }

    /// `validity`: lifetime of the certificates pebble issues (default 5 years).
    pub async fn start_with_validity(
        http_port: u16,
        tls_port: u16,
        validity: Option<Duration>,
    ) -> Pebble {
        let opts = Opts {
            validity,
            ..Opts::default()
        };
        Pebble::start_with(http_port, tls_port, opts).await
    }

    /// A CA that opens accounts only with an external account binding
    /// (RFC 8555 §7.3.4): key id `kid`, base64url HMAC key `key`.
    pub async fn start_requiring_eab(
        http_port: u16,
        tls_port: u16,
        kid: &str,
        key: &str,
    ) -> Pebble {
        let opts = Opts {
            eab: Some((kid.into(), key.into())),
            ..Opts::default()
        };
        Pebble::start_with(http_port, tls_port, opts).await
    }

    /// A CA that refuses to issue for `blocked` (pebble's domainBlocklist:
    /// a `rejectedIdentifier` problem on the new order).
    pub async fn start_refusing(http_port: u16, tls_port: u16, blocked: &[&str]) -> Pebble {
        let opts = Opts {
            blocked: blocked.iter().map(|b| b.to_string()).collect(),
            ..Opts::default()
        };
        Pebble::start_with(http_port, tls_port, opts).await
    }

    /// Debian trixie's pebble 2.6 (tests/run.sh puts it in /opt/pebble-2.6),
    /// which offers ACME renewal information (ARI, RFC 9773): a window
    /// around two thirds of the lifetime, or one in the past for a revoked
    /// certificate. Bookworm's 2.4 has none.
    pub async fn start_with_ari(http_port: u16, tls_port: u16, validity: Duration) -> Pebble {
        let opts = Opts {
            validity: Some(validity),
            binary: PEBBLE_ARI.into(),
            ..Opts::default()
        };
        Pebble::start_with(http_port, tls_port, opts).await
    }

    async fn start_with(http_port: u16, tls_port: u16, opts: Opts) -> Pebble {
        // Its ports are picked free, then bound by pebble: another test can
        // take one in between (pebble then exits). Try again on new ports.
        for attempt in 1..=3 {
            match Pebble::try_start(http_port, tls_port, &opts).await {
                Ok(pebble) => return pebble,
                Err(why) if attempt < 3 => eprintln!("pebble did not start ({why}); again"),
                Err(why) => panic!("pebble did not start: {why}"),
            }
        }
        unreachable!()
    }

    async fn try_start(http_port: u16, tls_port: u16, opts: &Opts) -> Result<Pebble, String> {
        let dir = tempfile::tempdir().unwrap();
        let (listener_ca, cert, key) = listener_certs(dir.path());
        let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dns_admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let acme = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mgmt = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args([
                "-dns01",
                &dns.to_string(),
                "-management",
                &dns_admin.to_string(),
            ])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (apt-get install pebble)");
        let mut config = serde_json::json!({ "pebble": {
            "listenAddress": acme.to_string(),
            "managementListenAddress": mgmt.to_string(),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = opts.validity {
            config["pebble"]["certificateValidityPeriod"] = v.as_secs().into();
        }
        if !opts.blocked.is_empty() {
            config["pebble"]["domainBlocklist"] = opts.blocked.clone().into();
        }
        if let Some((kid, key)) = &opts.eab {
            config["pebble"]["externalAccountBindingRequired"] = true.into();
            config["pebble"]["externalAccountMACKeys"] = serde_json::Value::Object(
                [(kid.clone(), key.clone().into())].into_iter().collect(),
            );
        }
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let pebble = Command::new(&opts.binary)
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble (apt-get install pebble)");
        let mut children = vec![pebble, challtestsrv];
        for addr in [dns_admin, acme, mgmt] {
            if !listening(addr).await {
                for child in &mut children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let log =
                    std::fs::read_to_string(dir.path().join("pebble.log")).unwrap_or_default();
                return Err(format!("nothing listening on {addr}; pebble.log:\n{log}"));
            }
        }
        let root_pem = management_get(&listener_ca, format!("https://{mgmt}/roots/0")).await;
        let root = dir.path().join("root.pem");
        std::fs::write(&root, root_pem).unwrap();
        Ok(Pebble {
            dir,
            children,
            directory: format!("https://{acme}/dir"),
            listener_ca,
            root,
            dns_admin,
            mgmt,
        })
    }

    /// Stops the CA (its directory then refuses connections).
    pub fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One `[[tls.issuers]]` entry for an edge using this CA.
    pub fn issuer_entry(&self, name: &str, challenge: &str) -> String {
        format!(
            "[[tls.issuers]]\nname = \"{name}\"\ndirectory = \"{}\"\ncontact = [\"mailto:ops@edgepop.test\"]\nca_root = \"{}\"\nchallenge = \"{challenge}\"\n",
            self.directory,
            self.listener_ca.display()
        )
    }

    /// The `[tls.acme]` table for an edge using this CA.
    pub fn acme_table(&self, challenge: &str) -> String {
        format!(
            "[tls.acme]\ndirectory = \"{}\"\ncontact = [\"mailto:ops@edgepop.test\"]\nca_root = \"{}\"\nchallenge = \"{challenge}\"\n",
            self.directory,
            self.listener_ca.display()
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Orders pebble has received.
    pub fn orders(&self) -> usize {
        self.log().matches("Added order").count()
    }

    /// Requests pebble has received, of any kind.
    pub fn requests(&self) -> usize {
        self.log().matches("-> calling handler()").count()
    }

    /// Pebble's record of a certificate it issued (DER), e.g. `"Status": "Revoked"`.
    pub async fn cert_status(&self, der: &[u8]) -> String {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let serial = cert.serial.to_str_radix(16);
        let url = format!("https://{}/cert-status-by-serial/{serial}", self.mgmt);
        management_get(&self.listener_ca, url).await
    }

    /// Points `host` at `ip` in pebble's DNS (the CA validates there).
    pub async fn set_a(&self, host: &str, ip: &str) {
        self.dns(
            "add-a",
            serde_json::json!({"host": format!("{host}."), "addresses": [ip]}),
        )
        .await;
    }

    pub async fn clear_a(&self, host: &str) {
        self.dns("clear-a", serde_json::json!({"host": format!("{host}.")}))
            .await;
    }

    async fn dns(&self, op: &str, body: serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("http://{}/{op}", self.dns_admin))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "challtestsrv {op}: {}", r.status());
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
