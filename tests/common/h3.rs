//! HTTP/3 requests from an independent client: `tests/h3/client.py` on
//! aioquic, in the venv `tests/h3/install.sh` makes. Its QUIC and TLS share
//! no code with the listener's (quinn, rustls), so a test sees what another
//! implementation sees, not what our stack agrees with itself about. One run
//! is one client process: a connection (two with 0-RTT: the first only gets
//! a session ticket), its requests, one JSON object back.
#![allow(dead_code)]

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The venv's interpreter (`tests/h3/install.sh`).
pub const PYTHON: &str = "/opt/edgepop-h3/bin/python";

/// What one client run does; `get` and the setters build it.
#[derive(Clone, Debug)]
pub struct H3Request {
    /// The UDP address of the listener.
    pub connect: SocketAddr,
    /// The TLS server name, and the `:authority` unless `authority` is set.
    pub sni: String,
    /// An `:authority` other than the SNI (a misdirected request: 421).
    pub authority: Option<String>,
    /// The PEM roots to verify against; `None`: no verification at all.
    pub ca: Option<PathBuf>,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Bytes of request body, [`body_pattern`]; a `content-length` is sent
    /// with it unless `headers` has one.
    pub body_size: usize,
    /// Rounds of requests, one after another, on the same connection.
    pub repeat: usize,
    /// Concurrent requests in each round, on the same connection.
    pub parallel: usize,
    /// Resume a session from a first connection and send the first round
    /// as early data (0-RTT), before the handshake ends.
    pub zero_rtt: bool,
    /// For each connection: handshake and answers, and QUIC's idle timeout.
    pub timeout: Duration,
}

impl H3Request {
    pub fn get(connect: SocketAddr, sni: &str, path: &str) -> Self {
        H3Request {
            connect,
            sni: sni.to_string(),
            authority: None,
            ca: None,
            method: "GET".into(),
            path: path.to_string(),
            headers: Vec::new(),
            body_size: 0,
            repeat: 1,
            parallel: 1,
            zero_rtt: false,
            timeout: Duration::from_secs(10),
        }
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = method.to_string();
        self
    }

    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = Some(authority.to_string());
        self
    }

    pub fn ca(mut self, pem: impl Into<PathBuf>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body_size(mut self, bytes: usize) -> Self {
        self.body_size = bytes;
        self
    }

    pub fn repeat(mut self, rounds: usize) -> Self {
        self.repeat = rounds;
        self
    }

    pub fn parallel(mut self, requests: usize) -> Self {
        self.parallel = requests;
        self
    }

    pub fn zero_rtt(mut self) -> Self {
        self.zero_rtt = true;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--connect".into(),
            self.connect.to_string(),
            "--sni".into(),
            self.sni.clone(),
            "--method".into(),
            self.method.clone(),
            "--path".into(),
            self.path.clone(),
            "--body-size".into(),
            self.body_size.to_string(),
            "--repeat".into(),
            self.repeat.to_string(),
            "--parallel".into(),
            self.parallel.to_string(),
            "--timeout".into(),
            self.timeout.as_secs_f64().to_string(),
        ];
        if let Some(authority) = &self.authority {
            args.extend(["--authority".into(), authority.clone()]);
        }
        match &self.ca {
            Some(ca) => args.extend(["--ca".into(), ca.display().to_string()]),
            None => args.push("--insecure".into()),
        }
        for (name, value) in &self.headers {
            args.extend(["--header".into(), format!("{name}: {value}")]);
        }
        if self.zero_rtt {
            args.push("--zero-rtt".into());
        }
        args
    }
}

/// What the client saw. With 0-RTT, the second connection's handshake (and
/// the first's certificate names: a resumed session shows none).
#[derive(Clone, Debug, Deserialize)]
pub struct H3Outcome {
    pub alpn: Option<String>,
    pub tls_version: Option<String>,
    pub session_resumed: bool,
    /// The session ticket allowed early data, so the requests went as 0-RTT.
    pub early_data_attempted: bool,
    /// The server took them as such (else they were sent again after the
    /// handshake, and answered all the same).
    pub early_data_accepted: bool,
    /// The server's leaf certificate's DNS names and addresses: which
    /// certificate came. Filled even when verification refused it.
    #[serde(rename = "peer_cert_subject_alt_names")]
    pub cert_names: Vec<String>,
    /// One per request sent, in the order sent.
    pub responses: Vec<H3Response>,
    /// Why the connection failed (handshake refused, timed out, closed
    /// before every answer ended); `None` when it worked, whatever the
    /// statuses and stream resets.
    pub error: Option<String>,
}

impl H3Outcome {
    /// The one response of a working connection; panics with the outcome
    /// otherwise.
    pub fn response(&self) -> &H3Response {
        assert!(
            self.error.is_none() && self.responses.len() == 1,
            "expected one response: {self:#?}"
        );
        &self.responses[0]
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct H3Response {
    /// 0 when no response headers came (reset or cut before them).
    pub status: u16,
    /// In the order received, without `:status`.
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub trailers: Vec<(String, String)>,
    pub body_len: usize,
    pub body_sha256: String,
    /// The body when under 4096 bytes and UTF-8.
    pub body: Option<String>,
    /// The stream was reset, or the connection closed, before its end.
    pub reset: bool,
    /// Why it did not end well (reset code, close reason, timeout).
    #[serde(default)]
    pub error: Option<String>,
    /// From sending the request to the end of the answer; `None`: no end.
    pub elapsed_ms: Option<f64>,
}

impl H3Response {
    /// The first header of that name (names come lowercase in HTTP/3).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The request body the client sends for `body_size`: byte `i` is `i % 251`.
pub fn body_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Lowercase hex SHA-256, as in `H3Response::body_sha256`.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the client (blocking) and parses what it printed. Panics when it
/// printed no outcome (a crash, or no venv: run `tests/h3/install.sh`);
/// a failed connection is an outcome, with `error`.
pub fn run(req: &H3Request) -> H3Outcome {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h3/client.py");
    let out = Command::new(PYTHON)
        .arg(&script)
        .args(req.args())
        .output()
        .unwrap_or_else(|e| panic!("{PYTHON}: {e} (tests/h3/install.sh makes it)"));
    match serde_json::from_slice::<H3Outcome>(&out.stdout) {
        Ok(outcome) if matches!(out.status.code(), Some(0 | 2)) => outcome,
        parsed => panic!(
            "client.py {:?} ({}): {:?}\nstdout: {}\nstderr: {}",
            req.args(),
            out.status,
            parsed.err(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// [`run`] off the runtime's threads, for tests whose servers run on it.
pub async fn run_async(req: &H3Request) -> H3Outcome {
    let req = req.clone();
    tokio::task::spawn_blocking(move || run(&req))
        .await
        .expect("client.py runner")
}
