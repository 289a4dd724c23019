//! The single-box store: one JSON file per name under `<tls.dir>/certs`,
//! the ACME account under `<tls.dir>/accounts`, all written 0600 (they hold
//! private keys). It is no challenge board: on one box the process that
//! orders is the one the CA reaches, and `Challenges` already holds its
//! answers in memory. Its issuance lock is a `MemoryLock`.

use super::storage::CertStore;
use crate::domain::Hostname;
use crate::tls::cert::IssuedCert;
use crate::tls::error::{FileError, StoreError};
use async_trait::async_trait;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct FileStore {
    certs: PathBuf,
    accounts: PathBuf,
    failures: PathBuf,
}

impl FileStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let (certs, accounts) = (dir.join("certs"), dir.join("accounts"));
        let failures = dir.join("failures");
        for d in [&certs, &accounts, &failures] {
            std::fs::create_dir_all(d).map_err(FileError::at(d))?;
        }
        Ok(FileStore {
            certs,
            accounts,
            failures,
        })
    }

    fn path(&self, host: &Hostname) -> PathBuf {
        // A normalised hostname has no '/' and no leading '.': safe as a file name.
        self.certs.join(format!("{host}.json"))
    }

    fn account_path(&self, directory: &str) -> PathBuf {
        let digest = ring::digest::digest(&ring::digest::SHA256, directory.as_bytes());
        let name: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.accounts.join(format!("{name}.json"))
    }
}

/// Writes `bytes` to `path` readable by the owner only, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(FileError::at(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(FileError::at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(FileError::at(path))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::at(path)(e)),
    }
}

/// Runs a walk of the store's folder on the blocking pool.
async fn walk<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Corrupt(format!("store walk: {e}")))?
}

#[async_trait]
impl CertStore for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn load(&self, host: &Hostname) -> Result<Option<IssuedCert>, StoreError> {
        read_optional(&self.path(host))?
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(format!("{host}: {e}")))
            })
            .transpose()
    }

    async fn save(&self, host: &Hostname, cert: &IssuedCert) -> Result<(), StoreError> {
        if let Ok(Some(held)) = self.load(host).await {
            if !held.revoked && held.not_before > cert.not_before {
                return Ok(());
            }
        }
        let json = serde_json::to_vec(cert).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(write_private(&self.path(host), &json)?)
    }

    // The walks below touch every file: off the async threads, so a store
    // of 100,000 names does not stall handshakes.
    async fn count(&self) -> Result<usize, StoreError> {
        let certs = self.certs.clone();
        walk(move || {
            let dir = std::fs::read_dir(&certs).map_err(FileError::at(&certs))?;
            Ok(dir
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count())
        })
        .await
    }

    async fn changed_within(&self, window: Duration) -> Result<Vec<Hostname>, StoreError> {
        let since = std::time::SystemTime::now() - window;
        let certs = self.certs.clone();
        walk(move || {
            let dir = std::fs::read_dir(&certs).map_err(FileError::at(&certs))?;
            Ok(dir
                .filter_map(Result::ok)
                .filter(|e| {
                    e.metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t >= since)
                })
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    Hostname::parse(name.strip_suffix(".json")?).ok()
                })
                .collect())
        })
        .await
    }

    async fn wanting(&self, hosts: &[Hostname], left: f64) -> Result<Vec<Hostname>, StoreError> {
        let (certs, hosts) = (self.certs.clone(), hosts.to_vec());
        walk(move || {
            let now = crate::tls::cert::now_unix();
            Ok(hosts
                .into_iter()
                .filter(|host| {
                    // Unreadable or undecodable counts as none stored.
                    let stored = std::fs::read(certs.join(format!("{host}.json")))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<IssuedCert>(&b).ok());
                    !stored.is_some_and(|c| c.valid() && now < c.planned_renewal(left).0.start)
                })
                .collect())
        })
        .await
    }

    async fn note_failure(&self, host: &Hostname, at: i64, error: &str) -> Result<(), StoreError> {
        let json =
            serde_json::to_vec(&(at, error)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(write_private(
            &self.failures.join(format!("{host}.json")),
            &json,
        )?)
    }

    async fn last_failure(&self, host: &Hostname) -> Result<Option<(i64, String)>, StoreError> {
        read_optional(&self.failures.join(format!("{host}.json")))?
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(format!("{host}: {e}")))
            })
            .transpose()
    }

    async fn load_account(&self, directory: &str) -> Result<Option<String>, StoreError> {
        read_optional(&self.account_path(directory))?
            .map(|b| String::from_utf8(b).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn save_account(&self, directory: &str, credentials: &str) -> Result<String, StoreError> {
        if let Some(kept) = self.load_account(directory).await? {
            return Ok(kept);
        }
        write_private(&self.account_path(directory), credentials.as_bytes())?;
        Ok(credentials.to_string())
    }
}
