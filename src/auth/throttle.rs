//! Throttling of failed logins, per username and per client address.
//!
//! A fixed window per subject: `max_failures` failures within `window` lock
//! the subject out for `lockout`, during which even the right password is
//! refused; it lifts by itself. The counters live in the store, so every
//! replica on a shared PostgreSQL counts the same attempts, and memory use
//! does not grow with the number of usernames or addresses tried.

use crate::config::LoginConfig;
use crate::store::{Store, StoreError};

/// Login throttle, backed by the store.
pub struct LoginThrottle {
    store: Store,
    config: LoginConfig,
}

impl LoginThrottle {
    /// A throttle over `store`.
    pub fn new(store: Store, config: &LoginConfig) -> Self {
        LoginThrottle {
            store,
            config: config.clone(),
        }
    }

    /// `Ok(Some(seconds))` when any of `subjects` is locked out.
    pub async fn locked_for(
        &self,
        subjects: &[String],
        now: i64,
    ) -> Result<Option<u64>, StoreError> {
        let until = self.store.throttle_locked_until(subjects, now).await?;
        Ok(until
            .filter(|until| *until > now)
            .map(|until| u64::try_from(until - now).unwrap_or(1).max(1)))
    }

    /// Counts a failure against each subject.
    pub async fn fail(&self, subjects: &[String], now: i64) -> Result<(), StoreError> {
        let window = secs(self.config.window);
        let lockout = secs(self.config.lockout);
        for subject in subjects {
            self.store
                .throttle_fail(
                    subject,
                    now,
                    window,
                    i64::from(self.config.max_failures),
                    lockout,
                )
                .await?;
        }
        Ok(())
    }

    /// Forgets a subject's failures (after a successful login).
    pub async fn succeed(&self, subject: &str) -> Result<(), StoreError> {
        self.store.throttle_clear(subject).await
    }
}

fn secs(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
