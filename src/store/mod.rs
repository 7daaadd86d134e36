//! The store: opening SQLite (embedded default) or PostgreSQL through one
//! sqlx `Any` pool, migrations, and the connection settings each backend
//! needs. Each domain's portable SQL has a file of its own (users, access
//! keys, one-time keys, revocations, login throttling, the change log); the
//! in-memory cache in front of it is [`cache`], the uses noted for it
//! [`last_use`], and [`follow`] keeps both true to the store.

mod accesskeys;
pub mod acme;
mod audit;
pub mod cache;
mod changes;
pub mod follow;
pub mod last_use;
pub mod onetimekeys;
mod revocations;
mod throttle;
mod users;

pub use accesskeys::{AccessKey, KeyGrant, KeyUpdate, NewKey};
pub use audit::{AuditQuery, Event as AuditEvent};
pub use changes::{CHANGES_CHANNEL, Change};
pub use throttle::{Admission, Settle};
pub use users::{LOCAL_PROVIDER, ProviderConflict, User};

use crate::config::StoreUrl;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
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
    /// The owner holds as many unexpired access keys as it may.
    #[error("the owner holds as many access keys as it may")]
    KeyLimitReached,
}

impl StoreError {
    /// What went wrong, without the "store unavailable" prefix.
    pub fn detail(&self) -> &str {
        match self {
            StoreError::NotFound => "not found",
            StoreError::AlreadyExists => "already exists",
            StoreError::Unavailable(detail) => detail,
            StoreError::RoleNotHeld(_) => "role not held",
            StoreError::KeyLimitReached => "key limit reached",
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

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Which database the store runs on, decided once from the config's URL.
#[derive(Clone, Debug)]
enum Backend {
    Sqlite,
    /// With the URL, for `LISTEN`.
    Postgres(Arc<str>),
}

/// Per-connection settings. SQLite: WAL + `synchronous = FULL`, so that a
/// write acknowledged to a client survives a crash of the process and of
/// the machine, and a busy timeout for writers in other processes.
async fn prepare_connection(
    conn: &mut sqlx::AnyConnection,
    sqlite: bool,
) -> Result<(), sqlx::Error> {
    if sqlite {
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

impl Store {
    /// Opens the store (creating an SQLite file and its folder when missing)
    /// and runs the migrations. A store that cannot be opened (an
    /// unreachable server, a file that is not a database, a folder that
    /// cannot be written) fails at once with the cause in one line.
    pub async fn open(url: &StoreUrl) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, max_connections, migrator, backend, label) = match url {
            StoreUrl::Sqlite(path) => (
                sqlite_url(path)?,
                4,
                &SQLITE_MIGRATIONS,
                Backend::Sqlite,
                path.display().to_string(),
            ),
            // Never the URL itself: it may hold a password.
            StoreUrl::Postgres(url) => (
                url.clone(),
                10,
                &POSTGRES_MIGRATIONS,
                Backend::Postgres(Arc::from(url.as_str())),
                "PostgreSQL".to_owned(),
            ),
        };
        let sqlite = matches!(backend, Backend::Sqlite);
        let unavailable =
            |err: sqlx::Error| StoreError::Unavailable(format!("{label}: {}", describe(&err)));
        // One connection first: the pool would only retry until its timeout
        // and then report the timeout instead of the cause.
        let mut probe = sqlx::AnyConnection::connect(&url)
            .await
            .map_err(unavailable)?;
        prepare_connection(&mut probe, sqlite)
            .await
            .map_err(unavailable)?;
        let _ = probe.close().await;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| Box::pin(prepare_connection(conn, sqlite)))
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
        Ok(Store { pool, backend })
    }

    /// A transaction that writes. On SQLite it starts as the writer
    /// (`BEGIN IMMEDIATE`, which waits out other writers for the busy
    /// timeout): a deferred transaction that reads first and writes later
    /// fails with `SQLITE_BUSY_SNAPSHOT` when another connection wrote in
    /// between, and the busy timeout does not retry that.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres(_) => self.pool.begin().await,
        }
    }

    /// `select` as a read that locks the rows it returns until the
    /// transaction ends, so a count taken after it cannot race another
    /// writer's: PostgreSQL needs `FOR UPDATE`; SQLite's write
    /// transactions ([`Store::begin_write`]) hold the whole database already.
    fn locking_read(&self, select: &str) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(match self.backend {
            Backend::Sqlite => select.to_owned(),
            Backend::Postgres(_) => format!("{select} FOR UPDATE"),
        })
    }

    /// The PostgreSQL URL to `LISTEN` on, when the store is PostgreSQL.
    pub fn postgres_url(&self) -> Option<&str> {
        match &self.backend {
            Backend::Sqlite => None,
            Backend::Postgres(url) => Some(url),
        }
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
}

/// A list column (roles, methods, path prefixes): comma-separated.
fn join_roles(roles: &[String]) -> String {
    roles.join(",")
}

/// The items of a list column.
fn split_roles(roles: &str) -> Vec<String> {
    roles
        .split(',')
        .filter(|role| !role.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

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
