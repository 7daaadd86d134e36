//! Revoked tokens (logout), kept until the token would have expired.

use sqlx::Row;

use super::changes::Change;
use super::{Store, StoreError};

impl Store {
    /// Revokes a token id until it would have expired anyway.
    pub async fn revoke_token(
        &self,
        jti: &str,
        username: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, username, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(username)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        let change = Change::Token {
            jti: jti.to_owned(),
            expires_at,
        };
        self.log_change(&mut tx, &change, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every revoked token that has not expired yet.
    pub async fn revoked_tokens(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("jti")?, row.try_get("expires_at")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
