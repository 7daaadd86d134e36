//! Access keys, stored by hash: creation, lookup for the cache, listing,
//! renaming and revocation.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::changes::Change;
use super::{Store, StoreError};
use super::{join_roles, split_roles};
use crate::scope::{KeyRateLimit, KeyScope};

/// An access key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// UUID (v7, so ids sort by creation time).
    pub id: String,
    /// Owner.
    pub username: String,
    /// Free text.
    pub name: String,
    /// Free text.
    pub detail: String,
    /// First characters of the key.
    pub token_prefix: String,
    /// Expiry, unix seconds.
    pub tm_expire: i64,
    /// Creation, unix seconds.
    pub tm_create: i64,
    /// Last change, unix seconds.
    pub tm_update: i64,
    /// Last use, unix seconds (at most a minute old); `None`: never used.
    pub tm_last_used: Option<i64>,
    /// What the key was narrowed to at creation.
    pub scope: KeyScope,
    /// Whether the key works; a disabled one is refused like a deleted one.
    pub enabled: bool,
    /// Requests the key authenticated (added in batches).
    pub uses: i64,
    /// The last reroll, unix seconds; `None`: never rerolled.
    pub tm_rerolled: Option<i64>,
    /// The key's own budget, fixed at creation; `None`: none.
    pub rate_limit: Option<KeyRateLimit>,
}

/// A change to a live key's name, detail and enabled state.
#[derive(Debug, Clone, Copy)]
pub struct KeyUpdate<'a> {
    /// New name.
    pub name: &'a str,
    /// New detail.
    pub detail: &'a str,
    /// `Some`: enable or disable; `None`: unchanged.
    pub enabled: Option<bool>,
}

/// A key to store: everything but the key itself, which only its
/// holder ever sees.
#[derive(Debug, Clone, Copy)]
pub struct NewKey<'a> {
    /// Owner.
    pub username: &'a str,
    /// Free text.
    pub name: &'a str,
    /// Free text.
    pub detail: &'a str,
    /// Hex SHA-256 of the key.
    pub token_hash_hex: &'a str,
    /// First characters of the key.
    pub token_prefix: &'a str,
    /// Expiry, unix seconds.
    pub tm_expire: i64,
    /// What the key is narrowed to.
    pub scope: &'a KeyScope,
    /// The key's own budget; `None`: none.
    pub rate_limit: Option<KeyRateLimit>,
    /// Unexpired keys the owner may hold, this one included.
    pub max_per_user: usize,
}

/// What the cache needs to know about a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    /// Key id.
    pub key_id: uuid::Uuid,
    /// Owner.
    pub username: String,
    /// Owner's `[[oidc]]` provider; `None` for local users.
    pub provider: Option<String>,
    /// Owner's roles.
    pub roles: Vec<String>,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// The key's scope.
    pub scope: KeyScope,
    /// The key's own budget; `None`: none.
    pub rate_limit: Option<KeyRateLimit>,
}

/// A comma-separated list column (no element holds a comma).
fn split_list(list: &str) -> Vec<String> {
    split_roles(list)
}

fn scope_from_row(row: &AnyRow, roles_column: &str) -> Result<KeyScope, sqlx::Error> {
    Ok(KeyScope {
        roles: row
            .try_get::<Option<String>, _>(roles_column)?
            .map(|roles| split_list(&roles)),
        methods: split_list(&row.try_get::<String, _>("methods")?),
        path_prefixes: split_list(&row.try_get::<String, _>("path_prefixes")?),
    })
}

/// The budget columns: both set, or the key has none.
fn rate_limit_from_row(row: &AnyRow) -> Result<Option<KeyRateLimit>, sqlx::Error> {
    let rate: Option<f64> = row.try_get("rate_limit_rate")?;
    let burst: Option<i64> = row.try_get("rate_limit_burst")?;
    Ok(match (rate, burst) {
        (Some(rate), Some(burst)) => Some(KeyRateLimit {
            rate,
            burst: u32::try_from(burst).unwrap_or(u32::MAX),
        }),
        _ => None,
    })
}

fn key_from_row(row: &AnyRow) -> Result<AccessKey, sqlx::Error> {
    Ok(AccessKey {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        name: row.try_get("name")?,
        detail: row.try_get("detail")?,
        token_prefix: row.try_get("token_prefix")?,
        tm_expire: row.try_get("tm_expire")?,
        tm_create: row.try_get("tm_create")?,
        tm_update: row.try_get("tm_update")?,
        tm_last_used: row.try_get("tm_last_used")?,
        scope: scope_from_row(row, "roles")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        uses: row.try_get("uses")?,
        tm_rerolled: row.try_get("tm_rerolled")?,
        rate_limit: rate_limit_from_row(row)?,
    })
}

const KEY_COLUMNS: &str = "id, username, name, detail, token_prefix, tm_expire, tm_create, tm_update, \
     tm_last_used, roles, methods, path_prefixes, enabled, uses, tm_rerolled, rate_limit_rate, rate_limit_burst";

/// The hashes a key is known by (its secret, and the one a reroll replaced
/// while it may still be in its grace), for the change log.
fn hashes_of(row: &AnyRow) -> Result<Vec<String>, sqlx::Error> {
    let mut hashes = vec![row.try_get::<String, _>("token_hash")?];
    if let Some(old) = row.try_get::<Option<String>, _>("old_token_hash")? {
        hashes.push(old);
    }
    Ok(hashes)
}

pub(super) async fn revoke_user_keys(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    username: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE accesskeys SET tm_delete = $1, tm_update = $1 WHERE username = $2 AND tm_delete IS NULL",
    )
    .bind(now)
    .bind(username)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether an owner holding `held` unexpired keys may have one more.
fn below_limit(held: i64, max_per_user: usize) -> bool {
    usize::try_from(held).is_ok_and(|held| held < max_per_user)
}

impl Store {
    /// Stores a new key (by hash); `NotFound` when its owner does not exist,
    /// `KeyLimitReached` when the owner holds `max_per_user` unexpired keys.
    /// The count and the insert are one transaction that holds the owner's
    /// row (SQLite: the write lock; PostgreSQL: `FOR UPDATE`), so parallel
    /// creations, on one replica or several, cannot both pass the count.
    pub async fn create_key(&self, new: NewKey<'_>, now: i64) -> Result<AccessKey, StoreError> {
        let NewKey {
            username,
            name,
            detail,
            token_hash_hex,
            token_prefix,
            tm_expire,
            scope,
            rate_limit,
            max_per_user,
        } = new;
        let key = AccessKey {
            id: uuid::Uuid::now_v7().to_string(),
            username: username.to_owned(),
            name: name.to_owned(),
            detail: detail.to_owned(),
            token_prefix: token_prefix.to_owned(),
            tm_expire,
            tm_create: now,
            tm_update: now,
            tm_last_used: None,
            scope: scope.clone(),
            enabled: true,
            uses: 0,
            tm_rerolled: None,
            rate_limit,
        };
        let mut tx = self.begin_write().await?;
        // The owner must exist at commit time, not only when the request
        // began, and still hold every role the key is narrowed to.
        let owner = sqlx::query(self.locking_read("SELECT roles FROM users WHERE username = $1"))
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let held: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM accesskeys \
             WHERE username = $1 AND tm_delete IS NULL AND tm_expire > $2",
        )
        .bind(username)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if !below_limit(held, max_per_user) {
            return Err(StoreError::KeyLimitReached);
        }
        let owner_roles = split_roles(&owner.try_get::<String, _>("roles")?);
        if let Some(roles) = &scope.roles
            && let Some(missing) = roles.iter().find(|role| !owner_roles.contains(role))
        {
            return Err(StoreError::RoleNotHeld(missing.clone()));
        }
        sqlx::query(
            "INSERT INTO accesskeys (id, username, name, detail, token_hash, token_prefix, tm_expire, tm_create, tm_update, \
               roles, methods, path_prefixes, rate_limit_rate, rate_limit_burst) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&key.id)
        .bind(&key.username)
        .bind(&key.name)
        .bind(&key.detail)
        .bind(token_hash_hex)
        .bind(&key.token_prefix)
        .bind(tm_expire)
        .bind(now)
        .bind(scope.roles.as_deref().map(join_roles))
        .bind(join_roles(&scope.methods))
        .bind(join_roles(&scope.path_prefixes))
        .bind(rate_limit.map(|limit| limit.rate))
        .bind(rate_limit.map(|limit| i64::from(limit.burst)))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(key)
    }

    /// The live (not deleted), enabled key with this hash and its owner's
    /// roles. A secret replaced by a reroll is found until its grace ends,
    /// and its grant expires then (or with the key, if sooner).
    pub async fn key_grant(
        &self,
        token_hash_hex: &str,
        now: i64,
    ) -> Result<Option<KeyGrant>, StoreError> {
        // Two indexed lookups in one statement: the current secret, or a
        // replaced one still in its grace.
        let row = sqlx::query(
            "SELECT k.id, k.username, k.tm_expire, u.roles, u.provider, k.roles AS key_roles, k.methods, \
               k.path_prefixes, CAST(CASE WHEN k.token_hash = $1 THEN 1 ELSE 0 END AS BIGINT) AS current, \
               k.old_token_expire, k.rate_limit_rate, k.rate_limit_burst FROM accesskeys k \
             JOIN users u ON u.username = k.username \
             WHERE (k.token_hash = $1 OR (k.old_token_hash = $1 AND k.old_token_expire > $2)) \
               AND k.tm_delete IS NULL AND k.enabled = 1",
        )
        .bind(token_hash_hex)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let tm_expire: i64 = row.try_get("tm_expire")?;
        let current = row.try_get::<i64, _>("current")? != 0;
        let expires_at = if current {
            tm_expire
        } else {
            let grace_end: Option<i64> = row.try_get("old_token_expire")?;
            grace_end.map_or(tm_expire, |end| end.min(tm_expire))
        };
        let id: String = row.try_get("id")?;
        let key_id = uuid::Uuid::parse_str(&id)
            .map_err(|_| StoreError::Unavailable(format!("access key id {id:?} is not a UUID")))?;
        Ok(Some(KeyGrant {
            key_id,
            username: row.try_get("username")?,
            provider: row.try_get("provider")?,
            roles: split_roles(&row.try_get::<String, _>("roles")?),
            expires_at,
            scope: scope_from_row(&row, "key_roles")?,
            rate_limit: rate_limit_from_row(&row)?,
        }))
    }

    /// A live key by id; with `owner`, only if it belongs to that user.
    pub async fn key(&self, id: &str, owner: Option<&str>) -> Result<AccessKey, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM accesskeys WHERE id = $1 AND tm_delete IS NULL \
             AND ($2 = '' OR username = $2)"
        )))
        .bind(id)
        .bind(owner.unwrap_or(""))
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(key_from_row(&row)?)
    }

    /// Live keys, newest first, ids below `before` (the page token); with
    /// `owner`, only that user's.
    pub async fn keys(
        &self,
        owner: Option<&str>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AccessKey>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM accesskeys WHERE tm_delete IS NULL \
             AND ($1 = '' OR username = $1) AND ($2 = '' OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        )))
        .bind(owner.unwrap_or(""))
        .bind(before.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(key_from_row).collect::<Result<_, _>>()?)
    }

    /// Records when keys were last used and how often, in one transaction:
    /// `uses` are `(key id, unix seconds)`, a time never moving backwards;
    /// `counts` are `(key id, requests)`, added to `uses`. Returns the rows
    /// changed.
    pub async fn record_key_uses(
        &self,
        uses: &[(uuid::Uuid, i64)],
        counts: &[(uuid::Uuid, u64)],
    ) -> Result<u64, StoreError> {
        if uses.is_empty() && counts.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let mut changed = 0;
        for (id, count) in counts {
            changed += sqlx::query("UPDATE accesskeys SET uses = uses + $1 WHERE id = $2")
                .bind(i64::try_from(*count).unwrap_or(i64::MAX))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        for (id, at) in uses {
            changed += sqlx::query(
                "UPDATE accesskeys SET tm_last_used = $1 \
                 WHERE id = $2 AND (tm_last_used IS NULL OR tm_last_used < $1)",
            )
            .bind(*at)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Renames, enables or disables a live key. A change of the enabled
    /// state goes into the change log under every hash the key is known by,
    /// so every replica forgets what it cached (a disabled key's grant, or
    /// the negative entry of a key enabled again); those hashes are returned
    /// for this process's own cache.
    pub async fn update_key(
        &self,
        id: &str,
        owner: Option<&str>,
        update: KeyUpdate<'_>,
        now: i64,
    ) -> Result<(AccessKey, Vec<String>), StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE accesskeys SET name = $1, detail = $2, tm_update = $3, \
               enabled = CASE WHEN $4 < 0 THEN enabled ELSE $4 END \
             WHERE id = $5 AND tm_delete IS NULL AND ($6 = '' OR username = $6) \
             RETURNING {KEY_COLUMNS}, token_hash, old_token_hash"
        )))
        .bind(update.name)
        .bind(update.detail)
        .bind(now)
        .bind(update.enabled.map_or(-1_i64, i64::from))
        .bind(id)
        .bind(owner.unwrap_or(""))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let key = key_from_row(&row)?;
        let mut evict = Vec::new();
        if update.enabled.is_some() {
            evict = hashes_of(&row)?;
            for hash in &evict {
                self.log_change(&mut tx, &Change::Key(hash.clone()), now)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok((key, evict))
    }

    /// Gives a live key a new secret (`new_hash_hex`, shown prefix
    /// `new_prefix`); id, name, scope, rate limit, enabled state and expiry
    /// are kept. The secret it replaces keeps working for `grace` seconds
    /// (not at all with `grace` 0); one replaced by an earlier reroll stops
    /// at once. Every hash whose grant changed goes into the change log
    /// and is returned for this process's cache.
    pub async fn reroll_key(
        &self,
        id: &str,
        owner: Option<&str>,
        new_hash_hex: &str,
        new_prefix: &str,
        grace: i64,
        now: i64,
    ) -> Result<(AccessKey, Vec<String>), StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT token_hash, old_token_hash FROM accesskeys \
             WHERE id = $1 AND tm_delete IS NULL AND ($2 = '' OR username = $2)",
        )
        .bind(id)
        .bind(owner.unwrap_or(""))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let evict = hashes_of(&row)?;
        let replaced: String = row.try_get("token_hash")?;
        // Times are whole seconds and `now` is truncated: one more second
        // makes the grace last at least `grace` (and less than `grace + 1`).
        let (old_hash, old_expire) = if grace > 0 {
            (
                Some(replaced.as_str()),
                Some(now.saturating_add(grace).saturating_add(1)),
            )
        } else {
            (None, None)
        };
        // Guarded by the secret read above: of two rerolls at once, the
        // second finds nothing and is answered as not found.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE accesskeys SET token_hash = $1, token_prefix = $2, old_token_hash = $3, \
               old_token_expire = $4, tm_rerolled = $5, tm_update = $5 \
             WHERE id = $6 AND token_hash = $7 AND tm_delete IS NULL \
             RETURNING {KEY_COLUMNS}"
        )))
        .bind(new_hash_hex)
        .bind(new_prefix)
        .bind(old_hash)
        .bind(old_expire)
        .bind(now)
        .bind(id)
        .bind(&replaced)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let key = key_from_row(&row)?;
        for hash in &evict {
            self.log_change(&mut tx, &Change::Key(hash.clone()), now)
                .await?;
        }
        tx.commit().await?;
        Ok((key, evict))
    }

    /// Revokes (soft-deletes) the live key known by this hash: its secret,
    /// or one a reroll replaced that is still in its grace. Returns its id
    /// and every hash it was known by; `None` when there is no such key.
    pub async fn revoke_key_by_hash(
        &self,
        hash_hex: &str,
        now: i64,
    ) -> Result<Option<(String, Vec<String>)>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE accesskeys SET tm_delete = $2, tm_update = $2 \
             WHERE (token_hash = $1 OR (old_token_hash = $1 AND old_token_expire > $2)) \
               AND tm_delete IS NULL \
             RETURNING id, token_hash, old_token_hash",
        )
        .bind(hash_hex)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        let hashes = hashes_of(&row)?;
        for hash in &hashes {
            self.log_change(&mut tx, &Change::Key(hash.clone()), now)
                .await?;
        }
        tx.commit().await?;
        Ok(Some((id, hashes)))
    }

    /// Revokes (soft-deletes) a live key; returns it and the hashes it was
    /// known by (its secret, and one a reroll replaced).
    pub async fn delete_key(
        &self,
        id: &str,
        owner: Option<&str>,
        now: i64,
    ) -> Result<(AccessKey, Vec<String>), StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE accesskeys SET tm_delete = $1, tm_update = $1 \
             WHERE id = $2 AND tm_delete IS NULL AND ($3 = '' OR username = $3) \
             RETURNING {KEY_COLUMNS}, token_hash, old_token_hash"
        )))
        .bind(now)
        .bind(id)
        .bind(owner.unwrap_or(""))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let key = key_from_row(&row)?;
        let hashes = hashes_of(&row)?;
        for hash in &hashes {
            self.log_change(&mut tx, &Change::Key(hash.clone()), now)
                .await?;
        }
        tx.commit().await?;
        Ok((key, hashes))
    }
}

#[cfg(test)]
mod tests {
    use super::below_limit;

    #[test]
    fn the_limit_counts_the_key_being_made() {
        assert!(below_limit(0, 1));
        assert!(!below_limit(1, 1));
        assert!(below_limit(99, 100));
        assert!(!below_limit(100, 100));
        assert!(!below_limit(-1, 100), "a nonsense count refuses");
    }
}
