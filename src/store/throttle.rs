//! Login throttling rows: atomic admission, settling and unlocking.

use sqlx::Row;

use super::{Store, StoreError};

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

impl Store {
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

    /// Ends an admitted attempt on `subject` (see [`Settle`]); `true` when
    /// this failure locked the subject out (the audit log's lockout).
    pub async fn throttle_settle(
        &self,
        subject: &str,
        settle: Settle,
        now: i64,
    ) -> Result<bool, StoreError> {
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
                 WHERE subject = $1 RETURNING failures"
            ),
        };
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(subject);
        if let Settle::Failed { max, lockout } = settle {
            // A failure resets the count to 0 only when it locks.
            let row = query
                .bind(now)
                .bind(max)
                .bind(lockout)
                .fetch_optional(&self.pool)
                .await?;
            return match row {
                Some(row) => Ok(row.try_get::<i64, _>("failures")? == 0),
                None => Ok(false),
            };
        }
        query.execute(&self.pool).await?;
        Ok(false)
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
}
