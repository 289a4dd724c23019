//! The single-box store: one JSON file per name under `<tls.dir>/certs`,
//! the ACME account under `<tls.dir>/accounts`, all written 0600 (they hold
//! private keys). Locks live in memory, and challenges are not kept here at
//! all: on one box the process that orders is the one the CA reaches, and
//! `Challenges` already holds its answers in memory.

use super::{write_private, CertStore, Lock};
use crate::domain::Hostname;
use crate::locked;
use crate::tls::challenge::ChallengeKey;
use crate::tls::IssuedCert;
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct FileStore {
    certs: PathBuf,
    accounts: PathBuf,
    /// holder, lease end, backing off after a failure
    locks: Mutex<HashMap<Hostname, (String, Instant, bool)>>,
}

impl FileStore {
    pub fn open(dir: &Path) -> Result<Self, String> {
        let (certs, accounts) = (dir.join("certs"), dir.join("accounts"));
        for d in [&certs, &accounts] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        Ok(FileStore {
            certs,
            accounts,
            locks: Mutex::default(),
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

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[async_trait]
impl CertStore for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn load(&self, host: &Hostname) -> Result<Option<IssuedCert>, String> {
        read_optional(&self.path(host))?
            .map(|b| serde_json::from_slice(&b).map_err(|e| format!("{host}: {e}")))
            .transpose()
    }

    async fn save(&self, host: &Hostname, cert: &IssuedCert) -> Result<(), String> {
        if let Ok(Some(held)) = self.load(host).await {
            if held.not_after > cert.not_after {
                return Ok(());
            }
        }
        let json = serde_json::to_vec(cert).map_err(|e| e.to_string())?;
        write_private(&self.path(host), &json)
    }

    async fn count(&self) -> Result<usize, String> {
        let dir = std::fs::read_dir(&self.certs).map_err(|e| e.to_string())?;
        Ok(dir
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count())
    }

    async fn changed_within(&self, window: Duration) -> Result<Vec<Hostname>, String> {
        let since = std::time::SystemTime::now() - window;
        let dir = std::fs::read_dir(&self.certs).map_err(|e| e.to_string())?;
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
    }

    async fn load_account(&self, directory: &str) -> Result<Option<String>, String> {
        read_optional(&self.account_path(directory))?
            .map(|b| String::from_utf8(b).map_err(|e| e.to_string()))
            .transpose()
    }

    async fn save_account(&self, directory: &str, credentials: &str) -> Result<String, String> {
        if let Some(kept) = self.load_account(directory).await? {
            return Ok(kept);
        }
        write_private(&self.account_path(directory), credentials.as_bytes())?;
        Ok(credentials.to_string())
    }

    async fn put_challenge(&self, _: &ChallengeKey, _: &str, _: Duration) -> Result<(), String> {
        Ok(())
    }

    async fn challenge(&self, _: &ChallengeKey) -> Result<Option<String>, String> {
        Ok(None)
    }

    async fn remove_challenge(&self, _: &ChallengeKey) -> Result<(), String> {
        Ok(())
    }

    async fn try_lock(
        &self,
        host: &Hostname,
        holder: &str,
        lease: Duration,
    ) -> Result<Lock, String> {
        let mut locks = locked(&self.locks);
        let now = Instant::now();
        match locks.get(host) {
            Some((h, until, failed)) if h != holder && now < *until => Ok(if *failed {
                Lock::BackingOff(*until - now)
            } else {
                Lock::Held
            }),
            _ => {
                locks.insert(host.clone(), (holder.to_string(), now + lease, false));
                Ok(Lock::Acquired)
            }
        }
    }

    async fn unlock(
        &self,
        host: &Hostname,
        holder: &str,
        backoff: Option<Duration>,
    ) -> Result<(), String> {
        let mut locks = locked(&self.locks);
        if locks.get(host).is_some_and(|(h, _, _)| h == holder) {
            match backoff {
                Some(d) => {
                    locks.insert(host.clone(), (holder.to_string(), Instant::now() + d, true));
                }
                None => {
                    locks.remove(host);
                }
            }
        }
        Ok(())
    }
}
