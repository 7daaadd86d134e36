//! The change log that other processes follow to evict their caches, its
//! announcement on PostgreSQL, and the sweep of expired rows.

use sqlx::Row;

use super::{Backend, Store, StoreError};

/// One entry of the change log that other processes follow to evict their
/// caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A user was removed or changed password.
    User(String),
    /// An access key (by hex hash) was revoked.
    Key(String),
    /// A token (by jti) was revoked until `expires_at`.
    Token {
        /// Token id.
        jti: String,
        /// Unix seconds.
        expires_at: i64,
    },
}

impl Change {
    fn encode(&self) -> (&'static str, String) {
        match self {
            Change::User(name) => ("user", name.clone()),
            Change::Key(hash) => ("key", hash.clone()),
            Change::Token { jti, expires_at } => ("token", format!("{jti} {expires_at}")),
        }
    }

    fn decode(kind: &str, subject: String) -> Option<Change> {
        match kind {
            "user" => Some(Change::User(subject)),
            "key" => Some(Change::Key(subject)),
            "token" => {
                let (jti, expires_at) = subject.split_once(' ')?;
                Some(Change::Token {
                    jti: jti.to_owned(),
                    expires_at: expires_at.parse().ok()?,
                })
            }
            _ => None,
        }
    }
}

/// PostgreSQL channel on which every committed change is announced, so
/// replicas evict at once instead of at their next poll.
pub const CHANGES_CHANNEL: &str = "authgate_changes";

impl Store {
    /// Appends `change` to the log inside `tx`; on PostgreSQL it is also
    /// announced to listeners when `tx` commits.
    pub(super) async fn log_change(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        change: &Change,
        now: i64,
    ) -> Result<(), StoreError> {
        let (kind, subject) = change.encode();
        sqlx::query("INSERT INTO changes (kind, subject, created_at) VALUES ($1, $2, $3)")
            .bind(kind)
            .bind(subject)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        if let Backend::Postgres(_) = self.backend {
            sqlx::query(sqlx::AssertSqlSafe(format!("NOTIFY {CHANGES_CHANNEL}")))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// The newest change id (0 when there is none).
    pub async fn last_change_id(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS last FROM changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("last")?)
    }

    /// Changes with ids above `after`, oldest first (at most 10,000).
    pub async fn changes_since(&self, after: i64) -> Result<Vec<(i64, Change)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, subject FROM changes WHERE id > $1 ORDER BY id LIMIT 10000",
        )
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        let mut changes = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let kind: String = row.try_get("kind")?;
            if let Some(change) = Change::decode(&kind, row.try_get("subject")?) {
                changes.push((id, change));
            }
        }
        Ok(changes)
    }

    /// [`Self::sweep`] with the change log kept as long as replicas may
    /// still need it ([`super::follow::CHANGE_LOG_KEEP_SECS`]).
    pub async fn sweep_expired(&self, now: i64) -> Result<(), StoreError> {
        self.sweep(now, now - super::follow::CHANGE_LOG_KEEP_SECS)
            .await
    }

    /// Deletes expired one-time keys and revoked tokens, and change-log
    /// entries older than `keep_changes_since`.
    pub async fn sweep(&self, now: i64, keep_changes_since: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM onetime_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM onetime_key_issues WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM changes WHERE created_at < $1")
            .bind(keep_changes_since)
            .execute(&self.pool)
            .await?;
        // Throttle rows whose lockout is over and whose window is a day old.
        sqlx::query("DELETE FROM login_failures WHERE locked_until <= $1 AND window_start < $2")
            .bind(now)
            .bind(keep_changes_since)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip() {
        let cases = [
            Change::User("alice".into()),
            Change::Key("ab12".into()),
            Change::Token {
                jti: "j1".into(),
                expires_at: 42,
            },
        ];
        for change in cases {
            let (kind, subject) = change.encode();
            assert_eq!(Change::decode(kind, subject), Some(change));
        }
        assert_eq!(Change::decode("other", "x".into()), None);
    }
}
