//! One-time keys for the digest login: issued, counted and consumed once.
//!
//! Every key issued is counted against the address that asked for it
//! (`onetime_key_issues`) until it is used or expires; only keys for real
//! users are stored in `onetime_keys`, the table they share.

use sqlx::Row;

use super::{Backend, Store, StoreError};

/// A one-time key to store.
#[derive(Debug, Clone, Copy)]
pub struct NewOneTimeKey<'a> {
    /// Hex SHA-256 of the key.
    pub key_hash_hex: &'a str,
    /// The user it is for; `None` for a name that is no local user (the
    /// key is counted against the address, and never stored).
    pub username: Option<&'a str>,
    /// The asking client's address, as the throttle names it
    /// ([`crate::auth::throttle::address_subject`]).
    pub address: &'a str,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// Keys kept per user and address; older ones are dropped.
    pub max_per_user: usize,
    /// Keys outstanding per address; beyond, the key is refused.
    pub max_per_address: usize,
}

/// Why a key was not issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressFull {
    /// Seconds until the address's oldest outstanding key expires.
    pub retry_after: u64,
}

/// Whether an address holding `held` keys may have one more; the wait
/// otherwise, from its oldest key's expiry.
fn admit(held: i64, oldest_expiry: Option<i64>, max: usize, now: i64) -> Result<(), AddressFull> {
    if usize::try_from(held).is_ok_and(|held| held < max) {
        return Ok(());
    }
    let wait = oldest_expiry.map_or(1, |at| at.saturating_sub(now));
    Err(AddressFull {
        retry_after: u64::try_from(wait).unwrap_or(1).max(1),
    })
}

impl Store {
    /// Issues a one-time key: refused with [`AddressFull`] when its address
    /// holds `max_per_address` outstanding keys, else counted against the
    /// address and, for a real user, stored, dropping that user's oldest
    /// keys from the same address beyond `max_per_user`. Count and insert
    /// are one transaction serialised per address (SQLite: the write lock;
    /// PostgreSQL: an advisory lock on the address), so parallel requests
    /// and replicas cannot overshoot the bound.
    pub async fn put_onetime_key(
        &self,
        key: NewOneTimeKey<'_>,
        now: i64,
    ) -> Result<Result<(), AddressFull>, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Backend::Postgres(_) = self.backend {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0)) IS NULL AS locked")
                .bind(key.address)
                .fetch_one(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM onetime_key_issues WHERE address = $1 AND expires_at <= $2")
            .bind(key.address)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(expires_at) AS oldest FROM onetime_key_issues \
             WHERE address = $1",
        )
        .bind(key.address)
        .fetch_one(&mut *tx)
        .await?;
        let held: i64 = row.try_get("n")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        if let Err(full) = admit(held, oldest, key.max_per_address, now) {
            return Ok(Err(full));
        }
        sqlx::query(
            "INSERT INTO onetime_key_issues (key_hash, address, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(key.key_hash_hex)
        .bind(key.address)
        .bind(key.expires_at)
        .execute(&mut *tx)
        .await?;
        if let Some(username) = key.username {
            sqlx::query(
                "INSERT INTO onetime_keys (key_hash, username, expires_at, created_at, address) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(key.key_hash_hex)
            .bind(username)
            .bind(key.expires_at)
            .bind(now)
            .bind(key.address)
            .execute(&mut *tx)
            .await?;
            let dropped = sqlx::query(
                "DELETE FROM onetime_keys WHERE username = $1 AND address = $2 AND key_hash NOT IN \
                 (SELECT key_hash FROM onetime_keys WHERE username = $1 AND address = $2 \
                  ORDER BY created_at DESC, key_hash LIMIT $3) RETURNING key_hash",
            )
            .bind(username)
            .bind(key.address)
            .bind(i64::try_from(key.max_per_user).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
            for row in dropped {
                let hash: String = row.try_get("key_hash")?;
                sqlx::query("DELETE FROM onetime_key_issues WHERE key_hash = $1")
                    .bind(hash)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Number of outstanding one-time keys of real users.
    pub async fn onetime_key_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM onetime_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Consumes a one-time key atomically: of concurrent callers, at most one
    /// gets it. Returns its user and expiry. Its address's count is given
    /// back either way (a key for an unknown name is used up too).
    pub async fn take_onetime_key(
        &self,
        key_hash_hex: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        sqlx::query("DELETE FROM onetime_key_issues WHERE key_hash = $1")
            .bind(key_hash_hex)
            .execute(&self.pool)
            .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_at_its_bound_until_its_oldest_key_expires() {
        assert_eq!(admit(0, None, 10, 100), Ok(()));
        assert_eq!(admit(9, Some(150), 10, 100), Ok(()));
        assert_eq!(
            admit(10, Some(150), 10, 100),
            Err(AddressFull { retry_after: 50 })
        );
        assert_eq!(
            admit(10, Some(100), 10, 100),
            Err(AddressFull { retry_after: 1 }),
            "at least one second"
        );
        assert_eq!(
            admit(11, None, 10, 100),
            Err(AddressFull { retry_after: 1 })
        );
    }
}
