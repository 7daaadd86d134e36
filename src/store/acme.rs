//! ACME state shared by replicas on PostgreSQL: named text values (the
//! account, certificates, http-01 answers) and the lock that lets one
//! replica order at a time.

use sqlx::{AnyConnection, Connection, Row};

use super::{Store, StoreError};

/// `pg_advisory_lock` key of ACME ordering ("authgate" "acme" in ASCII):
/// one order at a time across every replica of the database.
const ACME_LOCK_KEY: i64 = 0x6175_7468_6163_6d65;

/// Held while this replica orders; other replicas' [`Store::acme_try_lock`]
/// get `None` until it is released or its connection ends (a crashed
/// replica does not keep it).
pub struct AcmeLock {
    conn: AnyConnection,
}

impl AcmeLock {
    /// Releases the lock and closes its connection.
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(ACME_LOCK_KEY)
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}

impl Store {
    /// The value stored under `name`, if any.
    pub async fn acme_get(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM acme_cache WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("value")).transpose()?)
    }

    /// Stores `value` under `name`, replacing what was there.
    pub async fn acme_put(&self, name: &str, value: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO acme_cache (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes the value under `name`.
    pub async fn acme_delete(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM acme_cache WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The ordering lock, on a connection of its own (an advisory lock
    /// belongs to its session, so it must not go back to the pool), or
    /// `None` while another replica holds it. An error on SQLite, whose
    /// gateways do not share ACME state.
    pub async fn acme_try_lock(&self) -> Result<Option<AcmeLock>, StoreError> {
        let Some(url) = self.postgres_url() else {
            return Err(StoreError::Unavailable(
                "the ACME lock needs PostgreSQL".into(),
            ));
        };
        let mut conn = AnyConnection::connect(url).await?;
        let row = sqlx::query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind(ACME_LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        let locked: bool = row.try_get("locked")?;
        if locked {
            Ok(Some(AcmeLock { conn }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}
