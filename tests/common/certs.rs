//! Many stored certificates at once (issue 26: tests/certificates.rs and
//! benches/certs.rs): a root CA, an intermediate under it and one leaf per
//! name signed by the intermediate, each leaf with a P-256 key of its own;
//! the chain is leaf + intermediate, as an ACME CA's. Written where
//! edgepop's file store, its PostgreSQL store and Caddy's file storage keep
//! certificates, and the names made active domains of a replica.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// One stored certificate.
pub struct Minted {
    pub name: String,
    /// Leaf, then the intermediate.
    pub chain_pem: String,
    pub key_pem: String,
    /// What a handshake for `name` must send first.
    pub leaf_der: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
}

/// The root a client trusts and the certificates under it, in name order.
pub struct Batch {
    pub root_pem: String,
    pub certs: Vec<Minted>,
}

/// The `i`th name: `s000042.certs.test`.
pub fn name(i: usize) -> String {
    format!("s{i:06}.certs.test")
}

pub fn names(n: usize) -> Vec<String> {
    (0..n).map(name).collect()
}

fn ca_params(cn: &str, now: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(365);
    p
}

/// A certificate for each of `names`, valid from an hour ago for 90 days
/// (nowhere near renewal), made on every core.
pub fn mint(names: &[String]) -> Batch {
    let now = OffsetDateTime::now_utc();
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("issue 26 root", now);
    let root_pem = root_params.self_signed(&root_key).unwrap().pem();
    let root = Issuer::new(root_params, root_key);
    let mid_key = KeyPair::generate().unwrap();
    let mut mid_params = ca_params("issue 26 intermediate", now);
    mid_params.use_authority_key_identifier_extension = true;
    let mid_pem = mid_params.signed_by(&mid_key, &root).unwrap().pem();
    let mid = Issuer::new(mid_params, mid_key);

    let (not_before, not_after) = (
        now - time::Duration::hours(1),
        now + time::Duration::days(90),
    );
    let leaf = |name: &String| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.clone()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name.as_str());
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.not_before = not_before;
        p.not_after = not_after;
        let cert = p.signed_by(&key, &mid).unwrap();
        Minted {
            name: name.clone(),
            chain_pem: format!("{}{mid_pem}", cert.pem()),
            key_pem: key.serialize_pem(),
            leaf_der: cert.der().to_vec(),
            not_before: not_before.unix_timestamp(),
            not_after: not_after.unix_timestamp(),
        }
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = names.len().div_ceil(threads).max(1);
    let certs = std::thread::scope(|s| {
        let parts: Vec<_> = names
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(leaf).collect::<Vec<_>>()))
            .collect();
        parts.into_iter().flat_map(|p| p.join().unwrap()).collect()
    });
    Batch { root_pem, certs }
}

/// Writes `bytes` to `path`, readable by the owner only.
fn write_0600(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The file store under `tls_dir` (`[tls] dir`): `certs/<name>.json`, 0600,
/// with the fields edgepop writes.
pub fn write_file_store(tls_dir: &Path, certs: &[Minted]) {
    let dir = tls_dir.join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    for c in certs {
        let json = serde_json::json!({
            "chain_pem": c.chain_pem,
            "key_pem": c.key_pem,
            "not_before": c.not_before,
            "not_after": c.not_after,
            "issuer": "local",
            "revoked": false,
        });
        write_0600(
            &dir.join(format!("{}.json", c.name)),
            json.to_string().as_bytes(),
        );
    }
}

/// Copies `certs` into the PostgreSQL store's table of database `db` (on
/// 127.0.0.1:5432), which the node has made (`edgepop tls status` does):
/// one `\copy`, columns named.
pub fn copy_to_postgres(db: &str, scratch: &Path, certs: &[Minted]) {
    let csv = scratch.join("certificates.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
    for c in certs {
        // PEM holds no double quote: quoting each text field is enough.
        writeln!(
            out,
            "\"{}\",\"{}\",\"{}\",{},{},local,false",
            c.name, c.chain_pem, c.key_pem, c.not_before, c.not_after
        )
        .unwrap();
    }
    out.into_inner().unwrap().sync_all().unwrap();
    let copy = format!(
        "\\copy edgepop_tls_certificates (name, chain_pem, key_pem, not_before, not_after, issuer, revoked) FROM '{}' WITH (FORMAT csv)",
        csv.display()
    );
    let out = super::psql_command(5432, db)
        .args(["-qc", &copy])
        .output()
        .expect("psql");
    super::succeeded(out, "\\copy certificates");
    std::fs::remove_file(csv).unwrap();
}

/// Caddy's file storage under `root` for issuer key `issuer` (certmagic:
/// `certificates/<issuer>/<name>/<name>.crt|.key|.json`).
pub fn write_caddy_storage(root: &Path, issuer: &str, certs: &[Minted]) {
    for c in certs {
        let dir = root.join("certificates").join(issuer).join(&c.name);
        std::fs::create_dir_all(&dir).unwrap();
        let file = |ext: &str| dir.join(format!("{}.{ext}", c.name));
        std::fs::write(file("crt"), &c.chain_pem).unwrap();
        write_0600(&file("key"), c.key_pem.as_bytes());
        let meta = serde_json::json!({ "sans": [c.name], "issuer_data": {} });
        std::fs::write(file("json"), meta.to_string()).unwrap();
    }
}

/// A snapshot (`edgepop replica load`) making each of `names` an active
/// domain of store 1, tier public.
pub fn write_domains(path: &Path, names: &[String]) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for n in names {
        let record = serde_json::json!({
            "after": { "hostname": n, "store_id": 1, "status": "active", "tier": "public", "version": 1 },
            "source": { "table": "domains", "lsn": 1, "ts_ms": 0 },
            "op": "r",
        });
        writeln!(out, "{record}").unwrap();
    }
    out.into_inner().unwrap().sync_all().unwrap();
}

/// A TLS client trusting only `root_pem`, no ALPN, no resumption (every
/// handshake a full one).
pub fn connector(root_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A verified handshake with `addr` for `host`: the leaf it was sent.
pub async fn leaf(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    host: &str,
) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(30), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("no certificate")?;
    Ok(certs[0].to_vec())
}

/// Runs `edgepop tls status <host>` on `config`: the store is opened (the
/// PostgreSQL store makes its tables) and nothing is found (exit 1).
pub fn touch_store(bin: &str, config: &Path, host: &str) {
    let out = Command::new(bin)
        .args(["tls", "status", host, "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "tls status {host}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
