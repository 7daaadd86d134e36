//! The audit log's rows: batched inserts, the newest-first listing and the
//! retention purge. Portable SQL for both backends.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};

/// One audit event as stored: who did what to whom, from where, in which
/// request. Never a secret: every field is a name, an id or an address.
/// Events are made with [`crate::audit`]'s constructors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// UUID v7 made when the event happened: ids sort by time.
    #[serde(skip)]
    pub id: String,
    /// Unix seconds (shown as RFC 3339).
    #[serde(serialize_with = "as_rfc3339")]
    pub time: i64,
    /// The provider of whoever acted (`local` for a store user); `""` when
    /// nobody known acted (an anonymous caller, the CLI, a reload).
    pub provider: String,
    /// Who acted; `""` for an anonymous caller or the CLI.
    pub user: String,
    /// The client's address; `""` for the CLI and reloads.
    pub address: String,
    /// What happened (`login`, `key_created`, ...).
    pub event: String,
    /// The user or key acted on; `""` when none.
    pub target: String,
    /// The request's id; `""` outside a request.
    pub request_id: String,
}

fn as_rfc3339<S: serde::Serializer>(time: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::clock::rfc3339(*time))
}

/// Columns of one row, in insert order.
const COLUMNS: usize = 8;

/// Rows per `INSERT` (SQLite allows 32,766 bound values a statement).
const ROWS_PER_INSERT: usize = 256;

/// Which events a listing returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditQuery<'a> {
    /// Only events at or after this unix time.
    pub since: Option<i64>,
    /// Only events where this name acted or was acted on.
    pub user: Option<&'a str>,
    /// Only events older than the one with this id (a page token).
    pub before: Option<&'a str>,
    /// At most this many.
    pub limit: i64,
}

fn event_from_row(row: &AnyRow) -> Result<Event, sqlx::Error> {
    Ok(Event {
        id: row.try_get("id")?,
        time: row.try_get("tm")?,
        provider: row.try_get("provider")?,
        user: row.try_get("username")?,
        address: row.try_get("address")?,
        event: row.try_get("event")?,
        target: row.try_get("target")?,
        request_id: row.try_get("request_id")?,
    })
}

impl Store {
    /// Stores `events` in one transaction.
    pub async fn insert_audit(&self, events: &[Event]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO audit_log (id, tm, provider, username, address, event, target, request_id) VALUES ",
            );
            for row in 0..chunk.len() {
                if row > 0 {
                    sql.push_str(", ");
                }
                let first = row * COLUMNS + 1;
                let params: Vec<String> =
                    (first..first + COLUMNS).map(|n| format!("${n}")).collect();
                sql.push('(');
                sql.push_str(&params.join(", "));
                sql.push(')');
            }
            // Only placeholders are formatted into the text; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for event in chunk {
                query = query
                    .bind(&event.id)
                    .bind(event.time)
                    .bind(&event.provider)
                    .bind(&event.user)
                    .bind(&event.address)
                    .bind(&event.event)
                    .bind(&event.target)
                    .bind(&event.request_id);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Events newest first, as `query` narrows them.
    pub async fn audit_events(&self, query: AuditQuery<'_>) -> Result<Vec<Event>, StoreError> {
        let mut sql = String::from(
            "SELECT id, tm, provider, username, address, event, target, request_id \
             FROM audit_log WHERE 1 = 1",
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if query.since.is_some() {
            sql.push_str(&format!(" AND tm >= {}", next()));
        }
        if query.user.is_some() {
            let (a, b) = (next(), next());
            sql.push_str(&format!(" AND (username = {a} OR target = {b})"));
        }
        if query.before.is_some() {
            sql.push_str(&format!(" AND id < {}", next()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", next()));
        // Only placeholders are formatted into the text; every value is bound.
        let mut select = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(since) = query.since {
            select = select.bind(since);
        }
        if let Some(user) = query.user {
            select = select.bind(user).bind(user);
        }
        if let Some(before) = query.before {
            select = select.bind(before);
        }
        let rows = select.bind(query.limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
    }

    /// Deletes the events older than `before` (unix seconds); returns how
    /// many went. Idempotent: replicas may run it at the same time.
    pub async fn purge_audit(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit_log WHERE tm < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
