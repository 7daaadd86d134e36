//! One-time keys for the digest login: issued, counted and consumed once.

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// Stores a one-time key for `username`, dropping that user's oldest
    /// outstanding keys beyond `max_per_user`.
    pub async fn put_onetime_key(
        &self,
        key_hash_hex: &str,
        username: &str,
        expires_at: i64,
        max_per_user: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO onetime_keys (key_hash, username, expires_at, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key_hash_hex)
        .bind(username)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM onetime_keys WHERE username = $1 AND key_hash NOT IN \
             (SELECT key_hash FROM onetime_keys WHERE username = $1 \
              ORDER BY created_at DESC, key_hash LIMIT $2)",
        )
        .bind(username)
        .bind(max_per_user)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Number of outstanding one-time keys.
    pub async fn onetime_key_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM onetime_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Consumes a one-time key atomically: of concurrent callers, at most one
    /// gets it. Returns its user and expiry.
    pub async fn take_onetime_key(
        &self,
        key_hash_hex: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM onetime_keys WHERE key_hash = $1 RETURNING username, expires_at",
        )
        .bind(key_hash_hex)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((row.try_get("username")?, row.try_get("expires_at")?)))
    }
}
