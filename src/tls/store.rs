//! Where certificates are kept between restarts. `FileStore`: one JSON file
//! per name under the TLS folder, written 0600 (it holds the private key).

use super::IssuedCert;
use crate::domain::Hostname;
use async_trait::async_trait;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[async_trait]
pub trait CertStore: Send + Sync {
    async fn load(&self, host: &Hostname) -> Result<Option<IssuedCert>, String>;
    async fn save(&self, host: &Hostname, cert: &IssuedCert) -> Result<(), String>;
    /// How many certificates are held (for /status).
    async fn count(&self) -> usize;
}

/// Writes `bytes` to `path` readable by the owner only, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(FileStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, host: &Hostname) -> PathBuf {
        // A normalised hostname has no '/' and no leading '.': safe as a file name.
        self.dir.join(format!("{host}.json"))
    }
}

#[async_trait]
impl CertStore for FileStore {
    async fn load(&self, host: &Hostname) -> Result<Option<IssuedCert>, String> {
        match std::fs::read(self.path(host)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{host}: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{host}: {e}")),
        }
    }

    async fn save(&self, host: &Hostname, cert: &IssuedCert) -> Result<(), String> {
        let json = serde_json::to_vec(cert).map_err(|e| e.to_string())?;
        write_private(&self.path(host), &json)
    }

    async fn count(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    }
}
