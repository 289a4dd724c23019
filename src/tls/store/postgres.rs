//! The network-wide store in the central, writable PostgreSQL: every PoP
//! reads and writes the same certificates, ACME account, pending challenges
//! and per-name issuance locks. The tables are created on first use (two
//! nodes starting together serialise on an advisory lock). Private keys are
//! stored in the clear: access to this database is access to the keys.

use super::lock::{IssuanceLock, Lock};
use super::storage::CertStore;
use crate::domain::Hostname;
use crate::tls::cert::IssuedCert;
use crate::tls::challenge::{ChallengeBoard, ChallengeKey};
use crate::tls::error::StoreError;
use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};
use std::time::Duration;
use tokio::sync::OnceCell;

const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(727001);
CREATE TABLE IF NOT EXISTS edgepop_tls_certificates (
    name        text PRIMARY KEY,
    chain_pem   text NOT NULL,
    key_pem     text NOT NULL,
    not_before  bigint NOT NULL,
    not_after   bigint NOT NULL,
    issuer      text NOT NULL,
    revoked     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- changed_within, asked by every node each tls.renew_check.
CREATE INDEX IF NOT EXISTS edgepop_tls_certificates_updated
    ON edgepop_tls_certificates (updated_at);
CREATE TABLE IF NOT EXISTS edgepop_tls_failures (
    name        text PRIMARY KEY,
    at          bigint NOT NULL,
    error       text NOT NULL
);
CREATE TABLE IF NOT EXISTS edgepop_tls_accounts (
    directory   text PRIMARY KEY,
    credentials text NOT NULL
);
CREATE TABLE IF NOT EXISTS edgepop_tls_challenges (
    kind              text NOT NULL,
    key               text NOT NULL,
    key_authorization text NOT NULL,
    expires_at        timestamptz NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS edgepop_tls_locks (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    failed      boolean NOT NULL DEFAULT false
);
";

pub struct PostgresStore {
    pool: Pool,
    schema: OnceCell<()>,
}

impl PostgresStore {
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(PostgresStore {
            pool: crate::pg::pool(url, 4).map_err(StoreError::Config)?,
            schema: OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<Object, StoreError> {
        let client = self.pool.get().await.map_err(StoreError::Unavailable)?;
        self.schema
            .get_or_try_init(|| async {
                let tx = format!("BEGIN; {SCHEMA} COMMIT;");
                client.batch_execute(&tx).await.map_err(StoreError::Query)
            })
            .await?;
        Ok(client)
    }
}

/// The first column of each row, as hostnames.
fn hostnames(rows: &[tokio_postgres::Row]) -> Vec<Hostname> {
    rows.iter()
        .filter_map(|r| Hostname::parse(r.get::<_, &str>(0)).ok())
        .collect()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[async_trait]
impl CertStore for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn load(&self, host: &Hostname) -> Result<Option<IssuedCert>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT chain_pem, key_pem, not_before, not_after, issuer, revoked
                 FROM edgepop_tls_certificates WHERE name = $1",
                &[&host.as_str()],
            )
            .await
            .map_err(StoreError::Query)?;
        Ok(row.map(|r| IssuedCert {
            chain_pem: r.get(0),
            key_pem: r.get(1),
            not_before: r.get(2),
            not_after: r.get(3),
            issuer: r.get(4),
            revoked: r.get(5),
        }))
    }

    async fn save(&self, host: &Hostname, cert: &IssuedCert) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO edgepop_tls_certificates
                 (name, chain_pem, key_pem, not_before, not_after, issuer, revoked)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO UPDATE SET
                 chain_pem = excluded.chain_pem, key_pem = excluded.key_pem,
                 not_before = excluded.not_before, not_after = excluded.not_after,
                 issuer = excluded.issuer, revoked = excluded.revoked, updated_at = now()
             WHERE edgepop_tls_certificates.revoked
                OR edgepop_tls_certificates.not_before <= excluded.not_before",
            &[
                &host.as_str(),
                &cert.chain_pem,
                &cert.key_pem,
                &cert.not_before,
                &cert.not_after,
                &cert.issuer,
                &cert.revoked,
            ],
        )
        .await
        .map_err(StoreError::Query)?;
        Ok(())
    }

    async fn wanting(&self, hosts: &[Hostname], left: f64) -> Result<Vec<Hostname>, StoreError> {
        let names: Vec<&str> = hosts.iter().map(Hostname::as_str).collect();
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT n FROM unnest($1::text[]) AS n WHERE NOT EXISTS (
                     SELECT 1 FROM edgepop_tls_certificates c WHERE c.name = n AND NOT c.revoked
                     AND c.not_after - ((c.not_after - c.not_before) * $2::float8)::bigint
                         > extract(epoch FROM now()))",
                &[&names, &left],
            )
            .await
            .map_err(StoreError::Query)?;
        Ok(hostnames(&rows))
    }

    async fn count(&self) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT count(*) FROM edgepop_tls_certificates", &[])
            .await
            .map_err(StoreError::Query)?;
        Ok(row.get::<_, i64>(0) as usize)
    }

    async fn changed_within(&self, window: Duration) -> Result<Vec<Hostname>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT name FROM edgepop_tls_certificates
                 WHERE updated_at > now() - make_interval(secs => $1)",
                &[&secs(window)],
            )
            .await
            .map_err(StoreError::Query)?;
        Ok(hostnames(&rows))
    }

    async fn note_failure(&self, host: &Hostname, at: i64, error: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO edgepop_tls_failures (name, at, error) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET at = excluded.at, error = excluded.error",
            &[&host.as_str(), &at, &error],
        )
        .await
        .map_err(StoreError::Query)?;
        Ok(())
    }

    async fn last_failure(&self, host: &Hostname) -> Result<Option<(i64, String)>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT at, error FROM edgepop_tls_failures WHERE name = $1",
                &[&host.as_str()],
            )
            .await
            .map_err(StoreError::Query)?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    async fn load_account(&self, directory: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT credentials FROM edgepop_tls_accounts WHERE directory = $1",
                &[&directory],
            )
            .await
            .map_err(StoreError::Query)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn save_account(&self, directory: &str, credentials: &str) -> Result<String, StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO edgepop_tls_accounts (directory, credentials) VALUES ($1, $2)
             ON CONFLICT (directory) DO NOTHING",
            &[&directory, &credentials],
        )
        .await
        .map_err(StoreError::Query)?;
        self.load_account(directory)
            .await?
            .ok_or_else(|| StoreError::Corrupt("ACME account vanished after saving".into()))
    }
}

#[async_trait]
impl ChallengeBoard for PostgresStore {
    async fn put(
        &self,
        key: &ChallengeKey,
        key_authorization: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (kind, k) = key.parts();
        let c = self.client().await?;
        c.execute(
            "INSERT INTO edgepop_tls_challenges (kind, key, key_authorization, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))
             ON CONFLICT (kind, key) DO UPDATE SET
                 key_authorization = excluded.key_authorization,
                 expires_at = excluded.expires_at",
            &[&kind, &k, &key_authorization, &secs(ttl)],
        )
        .await
        .map_err(StoreError::Query)?;
        Ok(())
    }

    async fn get(&self, key: &ChallengeKey) -> Result<Option<String>, StoreError> {
        let (kind, k) = key.parts();
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT key_authorization FROM edgepop_tls_challenges
                 WHERE kind = $1 AND key = $2 AND expires_at > now()",
                &[&kind, &k],
            )
            .await
            .map_err(StoreError::Query)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn remove(&self, key: &ChallengeKey) -> Result<(), StoreError> {
        let (kind, k) = key.parts();
        let c = self.client().await?;
        // Expired rows of crashed issuers go with it.
        c.execute(
            "DELETE FROM edgepop_tls_challenges
             WHERE (kind = $1 AND key = $2) OR expires_at < now()",
            &[&kind, &k],
        )
        .await
        .map_err(StoreError::Query)?;
        Ok(())
    }
}

#[async_trait]
impl IssuanceLock for PostgresStore {
    async fn try_lock(
        &self,
        host: &Hostname,
        holder: &str,
        lease: Duration,
    ) -> Result<Lock, StoreError> {
        let c = self.client().await?;
        let taken = c
            .query_opt(
                "INSERT INTO edgepop_tls_locks (name, holder, expires_at)
                 VALUES ($1, $2, now() + make_interval(secs => $3))
                 ON CONFLICT (name) DO UPDATE SET
                     holder = excluded.holder, expires_at = excluded.expires_at, failed = false
                 WHERE edgepop_tls_locks.expires_at < now()
                    OR edgepop_tls_locks.holder = excluded.holder
                 RETURNING holder",
                &[&host.as_str(), &holder, &secs(lease)],
            )
            .await
            .map_err(StoreError::Query)?;
        if taken.is_some() {
            return Ok(Lock::Acquired);
        }
        let row = c
            .query_opt(
                "SELECT failed, extract(epoch FROM expires_at - now())::float8
                 FROM edgepop_tls_locks WHERE name = $1",
                &[&host.as_str()],
            )
            .await
            .map_err(StoreError::Query)?;
        Ok(match row {
            Some(r) if r.get::<_, bool>(0) => {
                Lock::BackingOff(Duration::from_secs_f64(r.get::<_, f64>(1).max(0.0)))
            }
            _ => Lock::Held,
        })
    }

    async fn unlock(
        &self,
        host: &Hostname,
        holder: &str,
        backoff: Option<Duration>,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let name = host.as_str();
        match backoff {
            Some(d) => {
                c.execute(
                    "UPDATE edgepop_tls_locks SET failed = true,
                         expires_at = now() + make_interval(secs => $3)
                     WHERE name = $1 AND holder = $2",
                    &[&name, &holder, &secs(d)],
                )
                .await
            }
            None => {
                c.execute(
                    "DELETE FROM edgepop_tls_locks WHERE name = $1 AND holder = $2",
                    &[&name, &holder],
                )
                .await
            }
        }
        .map_err(StoreError::Query)?;
        Ok(())
    }
}
