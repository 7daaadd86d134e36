//! Users, access keys, one-time keys, revoked tokens and the change log,
//! in SQLite (embedded default) or PostgreSQL, through one sqlx `Any` pool
//! and portable SQL. The in-memory cache in front of it is [`cache`].

pub mod cache;
pub mod last_use;

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Connection, Row};

use crate::config::StoreUrl;
use crate::scope::KeyScope;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long a query may wait for a pooled connection before the store is
/// called unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an SQLite writer waits for another writer (e.g. the CLI).
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5000;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The addressed row does not exist.
    #[error("not found")]
    NotFound,
    /// A unique name is already taken.
    #[error("already exists")]
    AlreadyExists,
    /// The database could not be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A key was to be narrowed to a role its owner does not hold.
    #[error("the owner does not hold role {0:?}")]
    RoleNotHeld(String),
}

impl StoreError {
    /// What went wrong, without the "store unavailable" prefix.
    pub fn detail(&self) -> &str {
        match self {
            StoreError::NotFound => "not found",
            StoreError::AlreadyExists => "already exists",
            StoreError::Unavailable(detail) => detail,
            StoreError::RoleNotHeld(_) => "role not held",
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists,
            _ => StoreError::Unavailable(err.to_string()),
        }
    }
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// UUID.
    pub id: String,
    /// Login name.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// md5hex(user:realm:password).
    pub ha1: String,
    /// The realm HA1 was computed with.
    pub ha1_realm: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Credential generation; changes on password change.
    pub generation: i64,
    /// Unix seconds.
    pub created_at: i64,
}

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

/// What the cache needs to know about a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    /// Key id.
    pub key_id: uuid::Uuid,
    /// Owner.
    pub username: String,
    /// Owner's roles.
    pub roles: Vec<String>,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// The key's scope.
    pub scope: KeyScope,
}

/// One subject's answer to [`Store::throttle_admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The throttle row (`user:NAME` or `addr:IP`).
    pub subject: String,
    /// Whether the attempt may proceed; it is then counted as pending.
    pub admitted: bool,
    /// The end of the subject's lockout, unix seconds (0 or past: none).
    pub locked_until: i64,
}

/// How an admitted login attempt ends, for [`Store::throttle_settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Refused before any check: the pending count is taken back.
    Withdraw,
    /// The right credential: the subject's failures and lockout are cleared.
    Cleared,
    /// A wrong credential: counted; at `max` the subject is locked for
    /// `lockout` seconds and its count starts over.
    Failed {
        /// The subject's threshold.
        max: i64,
        /// Lockout in seconds.
        lockout: i64,
    },
}

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

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// The PostgreSQL URL, for `LISTEN`; `None` on SQLite.
    postgres_url: Option<String>,
}

fn join_roles(roles: &[String]) -> String {
    roles.join(",")
}

fn split_roles(roles: &str) -> Vec<String> {
    roles
        .split(',')
        .filter(|role| !role.is_empty())
        .map(str::to_owned)
        .collect()
}

fn user_from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        ha1: row.try_get("ha1")?,
        ha1_realm: row.try_get("ha1_realm")?,
        roles: split_roles(&row.try_get::<String, _>("roles")?),
        generation: row.try_get("generation")?,
        created_at: row.try_get("created_at")?,
    })
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

/// A generation strictly newer than `previous` (microseconds since the epoch,
/// so a removed and re-created user never gets an old generation back).
fn next_generation(previous: i64) -> i64 {
    let micros = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000)
        .unwrap_or(i64::MAX);
    micros.max(previous.saturating_add(1))
}

impl Store {
    /// Opens the store (creating an SQLite file and its folder when missing)
    /// and runs the migrations. A store that cannot be opened (an
    /// unreachable server, a file that is not a database, a folder that
    /// cannot be written) fails at once with the cause in one line.
    pub async fn open(url: &StoreUrl) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, max_connections, migrator, postgres_url, label) = match url {
            StoreUrl::Sqlite(path) => (
                sqlite_url(path)?,
                4,
                &SQLITE_MIGRATIONS,
                None,
                path.display().to_string(),
            ),
            // Never the URL itself: it may hold a password.
            StoreUrl::Postgres(url) => (
                url.clone(),
                10,
                &POSTGRES_MIGRATIONS,
                Some(url.clone()),
                "PostgreSQL".to_owned(),
            ),
        };
        let unavailable =
            |err: sqlx::Error| StoreError::Unavailable(format!("{label}: {}", describe(&err)));
        // One connection first: the pool would only retry until its timeout
        // and then report the timeout instead of the cause.
        let mut probe = sqlx::AnyConnection::connect(&url)
            .await
            .map_err(unavailable)?;
        prepare_connection(&mut probe).await.map_err(unavailable)?;
        let _ = probe.close().await;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _meta| Box::pin(prepare_connection(conn)))
            .connect(&url)
            .await
            .map_err(unavailable)?;
        migrator.run(&pool).await.map_err(|err| {
            let detail = match &err {
                sqlx::migrate::MigrateError::Execute(inner) => describe(inner),
                other => other.to_string(),
            };
            StoreError::Unavailable(format!("{label}: migrations failed: {detail}"))
        })?;
        Ok(Store { pool, postgres_url })
    }

    /// A transaction that writes. On SQLite it starts as the writer
    /// (`BEGIN IMMEDIATE`, which waits out other writers for the busy
    /// timeout): a deferred transaction that reads first and writes later
    /// fails with `SQLITE_BUSY_SNAPSHOT` when another connection wrote in
    /// between, and the busy timeout does not retry that.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        if self.postgres_url.is_some() {
            self.pool.begin().await
        } else {
            self.pool.begin_with("BEGIN IMMEDIATE").await
        }
    }

    /// The PostgreSQL URL to `LISTEN` on, when the store is PostgreSQL.
    pub fn postgres_url(&self) -> Option<&str> {
        self.postgres_url.as_deref()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- users ----

    /// Creates a user; `AlreadyExists` when the name is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        ha1: &str,
        realm: &str,
        roles: &[String],
        now: i64,
    ) -> Result<User, StoreError> {
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            ha1: ha1.to_owned(),
            ha1_realm: realm.to_owned(),
            roles: roles.to_vec(),
            generation: next_generation(0),
            created_at: now,
        };
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, ha1, ha1_realm, roles, generation, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(&user.ha1)
        .bind(&user.ha1_realm)
        .bind(join_roles(&user.roles))
        .bind(user.generation)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // A new user of a removed user's name must not revive cached state.
        log_change(&mut tx, &Change::User(user.username.clone()), now).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// The user named `username`, if any.
    pub async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// Sets a new password: a new generation (older tokens stop working) and
    /// every access key of the user revoked.
    pub async fn set_password(
        &self,
        username: &str,
        password_hash: &str,
        ha1: &str,
        realm: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let previous: i64 = sqlx::query("SELECT generation FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?
            .try_get("generation")?;
        sqlx::query(
            "UPDATE users SET password_hash = $1, ha1 = $2, ha1_realm = $3, generation = $4, updated_at = $5 \
             WHERE username = $6",
        )
        .bind(password_hash)
        .bind(ha1)
        .bind(realm)
        .bind(next_generation(previous))
        .bind(now)
        .bind(username)
        .execute(&mut *tx)
        .await?;
        revoke_user_keys(&mut tx, username, now).await?;
        log_change(&mut tx, &Change::User(username.to_owned()), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a user and revokes their keys.
    pub async fn remove_user(&self, username: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let removed = sqlx::query("DELETE FROM users WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 0 {
            return Err(StoreError::NotFound);
        }
        revoke_user_keys(&mut tx, username, now).await?;
        sqlx::query("DELETE FROM onetime_keys WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        log_change(&mut tx, &Change::User(username.to_owned()), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many users have an HA1 made with a realm other than `realm`.
    pub async fn users_with_other_realm(&self, realm: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE ha1_realm <> $1")
            .bind(realm)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    // ---- access keys ----

    /// Stores a new key (by hash) for `username`.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_key(
        &self,
        username: &str,
        name: &str,
        detail: &str,
        token_hash_hex: &str,
        token_prefix: &str,
        tm_expire: i64,
        scope: &KeyScope,
        now: i64,
    ) -> Result<AccessKey, StoreError> {
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
        let owner = sqlx::query("SELECT roles FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
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
            "SELECT k.id, k.username, k.tm_expire, u.roles, k.roles AS key_roles, k.methods, \
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
        log_change(&mut tx, &Change::Key(hash.clone()), now).await?;
        tx.commit().await?;
        Ok((key, hash))
    }

    // ---- one-time keys ----

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

    // ---- revoked tokens ----

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
        log_change(&mut tx, &change, now).await?;
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

    // ---- login throttling ----

    /// Counts a login attempt against each `(subject, max)` and answers, per
    /// subject, whether it may proceed, in one statement: a subject admits
    /// while its failures plus pending attempts are below `max` in the
    /// current window of `window` seconds and it is not locked. Atomic in
    /// SQLite (one writer) and PostgreSQL (the upsert locks each row), so
    /// concurrent attempts on any number of replicas cannot all pass.
    pub async fn throttle_admit(
        &self,
        subjects: [(&str, i64); 2],
        now: i64,
        window: i64,
    ) -> Result<Vec<Admission>, StoreError> {
        let [(first, first_max), (second, second_max)] = subjects;
        // `admitted` records this statement's answer in the row, so that
        // RETURNING (which sees only the new row) can report it.
        let rows = sqlx::query(
            "INSERT INTO login_failures (subject, window_start, failures, locked_until, pending, admitted) \
             VALUES ($1, $3, 0, 0, 1, 1), ($2, $3, 0, 0, 1, 1) \
             ON CONFLICT (subject) DO UPDATE SET \
               failures = CASE WHEN login_failures.locked_until <= $3 \
                                AND login_failures.window_start <= $3 - $4 THEN 0 \
                               ELSE login_failures.failures END, \
               pending = CASE WHEN login_failures.locked_until > $3 THEN login_failures.pending \
                              WHEN login_failures.window_start <= $3 - $4 THEN 1 \
                              WHEN login_failures.failures + login_failures.pending < \
                                   CASE WHEN login_failures.subject = $1 THEN $5 ELSE $6 END \
                                THEN login_failures.pending + 1 \
                              ELSE login_failures.pending END, \
               admitted = CASE WHEN login_failures.locked_until > $3 THEN 0 \
                               WHEN login_failures.window_start <= $3 - $4 THEN 1 \
                               WHEN login_failures.failures + login_failures.pending < \
                                    CASE WHEN login_failures.subject = $1 THEN $5 ELSE $6 END \
                                 THEN 1 \
                               ELSE 0 END, \
               window_start = CASE WHEN login_failures.locked_until <= $3 \
                                    AND login_failures.window_start <= $3 - $4 THEN $3 \
                                   ELSE login_failures.window_start END \
             RETURNING subject, admitted, locked_until",
        )
        .bind(first)
        .bind(second)
        .bind(now)
        .bind(window)
        .bind(first_max)
        .bind(second_max)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Admission {
                    subject: row.try_get("subject")?,
                    admitted: row.try_get::<i64, _>("admitted")? == 1,
                    locked_until: row.try_get("locked_until")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Ends an admitted attempt on `subject` (see [`Settle`]).
    pub async fn throttle_settle(
        &self,
        subject: &str,
        settle: Settle,
        now: i64,
    ) -> Result<(), StoreError> {
        const PENDING_DOWN: &str = "pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END";
        let sql = match settle {
            Settle::Withdraw => {
                format!("UPDATE login_failures SET {PENDING_DOWN} WHERE subject = $1")
            }
            Settle::Cleared => format!(
                "UPDATE login_failures SET {PENDING_DOWN}, failures = 0, locked_until = 0 \
                 WHERE subject = $1"
            ),
            Settle::Failed { .. } => format!(
                "UPDATE login_failures SET {PENDING_DOWN}, \
                   locked_until = CASE WHEN failures + 1 >= $3 THEN $2 + $4 ELSE locked_until END, \
                   window_start = CASE WHEN failures + 1 >= $3 THEN $2 ELSE window_start END, \
                   failures = CASE WHEN failures + 1 >= $3 THEN 0 ELSE failures + 1 END \
                 WHERE subject = $1"
            ),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(subject);
        if let Settle::Failed { max, lockout } = settle {
            query = query.bind(now).bind(max).bind(lockout);
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Forgets the throttle rows of `subjects` (every row when empty);
    /// returns how many went.
    pub async fn throttle_unlock(&self, subjects: &[String]) -> Result<u64, StoreError> {
        if subjects.is_empty() {
            let done = sqlx::query("DELETE FROM login_failures")
                .execute(&self.pool)
                .await?;
            return Ok(done.rows_affected());
        }
        let mut removed = 0;
        for subject in subjects {
            removed += sqlx::query("DELETE FROM login_failures WHERE subject = $1")
                .bind(subject)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(removed)
    }

    // ---- change log and housekeeping ----

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

    /// Deletes expired one-time keys and revoked tokens, and change-log
    /// entries older than `keep_changes_since`.
    pub async fn sweep(&self, now: i64, keep_changes_since: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM onetime_keys WHERE expires_at <= $1")
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

async fn revoke_user_keys(
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

async fn log_change(
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
    if tx.backend_name().eq_ignore_ascii_case("postgresql") {
        // Delivered to listeners when the transaction commits.
        sqlx::query(sqlx::AssertSqlSafe(format!("NOTIFY {CHANGES_CHANNEL}")))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Per-connection settings. SQLite: WAL + `synchronous = FULL`, so that a
/// write acknowledged to a client survives a crash of the process and of
/// the machine, and a busy timeout for writers in other processes.
async fn prepare_connection(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};"
        )))
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// A database error as one readable line: the database's own message and
/// code rather than sqlx's wrapping.
fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (code {code})", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}

/// Mode of the SQLite file and its `-wal` and `-shm` files: they hold
/// argon2 hashes and HA1 digests, and HA1 is password-equivalent for the
/// one-time-key login.
const SQLITE_FILE_MODE: u32 = 0o600;

/// Creates the SQLite file owner-only when it does not exist yet (SQLite
/// then gives its `-wal` and `-shm` files the database file's mode), and
/// takes group and other access away from existing ones made before.
fn owner_only_files(path: &Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // A failure (a folder that cannot be written) is left to SQLite, whose
    // own error names it when it tries the same.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SQLITE_FILE_MODE)
        .open(path);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    for file in [path.as_os_str(), &wal, &shm].map(Path::new) {
        let Ok(meta) = std::fs::metadata(file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        // Only group and other bits go: a read-only file stays read-only.
        let owner_only = mode & 0o700;
        match std::fs::set_permissions(file, std::fs::Permissions::from_mode(owner_only)) {
            Ok(()) => tracing::warn!(
                file = %file.display(),
                "store file was open to others (mode {mode:o}); now {owner_only:o}"
            ),
            Err(err) => tracing::warn!(
                file = %file.display(),
                error = %err,
                "store file is open to others (mode {mode:o}) and cannot be made owner-only"
            ),
        }
    }
}

/// `sqlite://` URL for `path`, creating the parent folder and the file
/// (owner-only). `mode=rwc` would create the file too, but with the
/// default mode.
fn sqlite_url(path: &Path) -> Result<String, StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|err| {
            StoreError::Unavailable(format!("cannot create {}: {err}", parent.display()))
        })?;
    }
    owner_only_files(path);
    let path = path
        .to_str()
        .ok_or_else(|| StoreError::Unavailable("the store path is not UTF-8".into()))?;
    Ok(format!("sqlite://{path}?mode=rwc"))
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

    #[test]
    fn roles_round_trip() {
        assert_eq!(split_roles(""), Vec::<String>::new());
        let roles = vec!["admin".to_owned(), "ops".to_owned()];
        assert_eq!(split_roles(&join_roles(&roles)), roles);
    }

    #[test]
    fn generations_only_grow() {
        let first = next_generation(0);
        assert!(next_generation(first) > first);
        assert_eq!(next_generation(i64::MAX - 1), i64::MAX);
    }

    #[tokio::test]
    async fn sqlite_runs_in_wal_mode_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreUrl::Sqlite(dir.path().join("a.db")))
            .await
            .unwrap();
        // Every pooled connection: the settings are per connection.
        for _ in 0..4 {
            let mut conn = store.pool.acquire().await.unwrap();
            let mode: String = sqlx::query("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .unwrap()
                .try_get(0)
                .unwrap();
            assert_eq!(mode, "wal");
            let sync: i64 = sqlx::query("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap()
                .try_get(0)
                .unwrap();
            assert_eq!(sync, 2, "synchronous = FULL");
        }
        store.close().await;
    }

    #[tokio::test]
    async fn throttle_admission_counts_pending_attempts_and_settles() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreUrl::Sqlite(dir.path().join("a.db")))
            .await
            .unwrap();
        let (now, window) = (1_000_000, 300);
        let admit = |user: &'static str| {
            let store = store.clone();
            async move {
                let answers = store
                    .throttle_admit([(user, 3), ("addr:x", 100)], now, window)
                    .await
                    .unwrap();
                answers
                    .iter()
                    .find(|a| a.subject == user)
                    .map(|a| (a.admitted, a.locked_until))
                    .unwrap()
            }
        };
        // Three in flight fill a budget of three; the fourth waits.
        for _ in 0..3 {
            assert_eq!(admit("user:a").await, (true, 0));
        }
        assert_eq!(admit("user:a").await, (false, 0));
        // One succeeds: the user's count and pending are cleared.
        store
            .throttle_settle("user:a", Settle::Cleared, now)
            .await
            .unwrap();
        assert_eq!(admit("user:a").await, (true, 0));
        // Failures lock at the threshold, and the lock refuses.
        let failed = Settle::Failed {
            max: 3,
            lockout: 60,
        };
        for _ in 0..3 {
            store.throttle_settle("user:b", failed, now).await.unwrap();
        }
        assert_eq!(
            admit("user:b").await,
            (true, 0),
            "no row yet: settle needs one"
        );
        for _ in 0..3 {
            store.throttle_settle("user:b", failed, now).await.unwrap();
        }
        assert_eq!(admit("user:b").await, (false, now + 60));
        // After the window a fresh count starts.
        let later = now + window + 60;
        let answers = store
            .throttle_admit([("user:b", 3), ("addr:x", 100)], later, window)
            .await
            .unwrap();
        assert!(answers.iter().all(|a| a.admitted), "{answers:?}");
        assert_eq!(store.throttle_unlock(&[]).await.unwrap(), 3);
        store.close().await;
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_refused_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        std::fs::write(&path, [0x5a_u8; 8192]).unwrap();
        let err = match Store::open(&StoreUrl::Sqlite(path.clone())).await {
            Err(err) => err,
            Ok(_) => panic!("opened garbage"),
        };
        let detail = err.detail();
        assert!(detail.contains("not a database"), "{detail}");
        assert!(detail.contains(&path.display().to_string()), "{detail}");
        assert!(!detail.contains('\n'), "{detail}");
    }
}
