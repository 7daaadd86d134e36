//! Access keys, stored by hash: creation, lookup for the cache, listing,
//! renaming and revocation.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::changes::Change;
use super::users::{join_roles, split_roles};
use super::{Store, StoreError};
use crate::scope::KeyScope;

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
    })
}

const KEY_COLUMNS: &str = "id, username, name, detail, token_prefix, tm_expire, tm_create, tm_update, \
     tm_last_used, roles, methods, path_prefixes";

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
               roles, methods, path_prefixes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11)",
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
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(key)
    }

    /// The live (not deleted) key with this hash and its owner's roles.
    pub async fn key_grant(&self, token_hash_hex: &str) -> Result<Option<KeyGrant>, StoreError> {
        let row = sqlx::query(
            "SELECT k.id, k.username, k.tm_expire, u.roles, u.provider, k.roles AS key_roles, k.methods, \
               k.path_prefixes FROM accesskeys k \
             JOIN users u ON u.username = k.username \
             WHERE k.token_hash = $1 AND k.tm_delete IS NULL",
        )
        .bind(token_hash_hex)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get("id")?;
        let key_id = uuid::Uuid::parse_str(&id)
            .map_err(|_| StoreError::Unavailable(format!("access key id {id:?} is not a UUID")))?;
        Ok(Some(KeyGrant {
            key_id,
            username: row.try_get("username")?,
            provider: row.try_get("provider")?,
            roles: split_roles(&row.try_get::<String, _>("roles")?),
            expires_at: row.try_get("tm_expire")?,
            scope: scope_from_row(&row, "key_roles")?,
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

    /// Records when keys were last used, in one transaction: `uses` are
    /// `(key id, unix seconds)`; a time never moves backwards. Returns the
    /// rows changed.
    pub async fn record_key_uses(&self, uses: &[(uuid::Uuid, i64)]) -> Result<u64, StoreError> {
        if uses.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let mut changed = 0;
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

    /// Renames a live key.
    pub async fn update_key(
        &self,
        id: &str,
        owner: Option<&str>,
        name: &str,
        detail: &str,
        now: i64,
    ) -> Result<AccessKey, StoreError> {
        let updated = sqlx::query(
            "UPDATE accesskeys SET name = $1, detail = $2, tm_update = $3 \
             WHERE id = $4 AND tm_delete IS NULL AND ($5 = '' OR username = $5)",
        )
        .bind(name)
        .bind(detail)
        .bind(now)
        .bind(id)
        .bind(owner.unwrap_or(""))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        self.key(id, owner).await
    }

    /// Revokes (soft-deletes) a live key; returns it and its hash.
    pub async fn delete_key(
        &self,
        id: &str,
        owner: Option<&str>,
        now: i64,
    ) -> Result<(AccessKey, String), StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE accesskeys SET tm_delete = $1, tm_update = $1 \
             WHERE id = $2 AND tm_delete IS NULL AND ($3 = '' OR username = $3) \
             RETURNING {KEY_COLUMNS}, token_hash"
        )))
        .bind(now)
        .bind(id)
        .bind(owner.unwrap_or(""))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let key = key_from_row(&row)?;
        let hash: String = row.try_get("token_hash")?;
        self.log_change(&mut tx, &Change::Key(hash.clone()), now)
            .await?;
        tx.commit().await?;
        Ok((key, hash))
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
