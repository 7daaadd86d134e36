//! Throttling of failed logins, per username and per client address.
//!
//! A fixed window per subject: `max_failures` failures within `window` lock
//! the subject out for `lockout`, during which even the right password is
//! refused. The state is bounded: when full, expired entries go first, then
//! an arbitrary share, so rotating usernames or addresses cannot grow it.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::LoginConfig;

/// Most subjects tracked at once.
const MAX_SUBJECTS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Attempts {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

/// Login throttle state.
pub struct LoginThrottle {
    subjects: DashMap<String, Attempts>,
    config: LoginConfig,
}

impl LoginThrottle {
    /// An empty throttle.
    pub fn new(config: &LoginConfig) -> Self {
        LoginThrottle {
            subjects: DashMap::new(),
            config: config.clone(),
        }
    }

    /// `Err(seconds)` when any of `subjects` is locked out.
    pub fn check<'a>(
        &self,
        subjects: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> Result<(), u64> {
        let mut wait = Duration::ZERO;
        for subject in subjects {
            if let Some(attempts) = self.subjects.get(subject)
                && let Some(until) = attempts.locked_until
                && until > now
            {
                wait = wait.max(until - now);
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.as_secs().max(1))
        }
    }

    /// Counts a failure against each subject.
    pub fn fail<'a>(&self, subjects: impl IntoIterator<Item = &'a str>, now: Instant) {
        for subject in subjects {
            if self.subjects.len() >= MAX_SUBJECTS && !self.subjects.contains_key(subject) {
                self.make_room(now);
            }
            let mut entry = self.subjects.entry(subject.to_owned()).or_insert(Attempts {
                window_start: now,
                failures: 0,
                locked_until: None,
            });
            let attempts = entry.value_mut();
            if now.saturating_duration_since(attempts.window_start) >= self.config.window {
                attempts.window_start = now;
                attempts.failures = 0;
            }
            attempts.failures += 1;
            if attempts.failures >= self.config.max_failures {
                attempts.locked_until = Some(now + self.config.lockout);
                attempts.failures = 0;
                attempts.window_start = now;
            }
        }
    }

    /// Forgets a subject's failures (after a successful login).
    pub fn succeed(&self, subject: &str) {
        self.subjects.remove(subject);
    }

    fn make_room(&self, now: Instant) {
        let window = self.config.window;
        self.subjects.retain(|_, attempts| {
            attempts.locked_until.is_some_and(|until| until > now)
                || now.saturating_duration_since(attempts.window_start) < window
        });
        if self.subjects.len() >= MAX_SUBJECTS {
            let victims: Vec<String> = self
                .subjects
                .iter()
                .take(MAX_SUBJECTS / 8)
                .map(|entry| entry.key().clone())
                .collect();
            for key in victims {
                self.subjects.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(&LoginConfig {
            max_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(30),
        })
    }

    #[test]
    fn locks_after_max_failures_and_lifts_by_itself() {
        let t = throttle();
        let t0 = Instant::now();
        for _ in 0..2 {
            t.fail(["user:a"], t0);
            assert_eq!(t.check(["user:a"], t0), Ok(()));
        }
        t.fail(["user:a"], t0);
        assert_eq!(t.check(["user:a"], t0), Err(30));
        assert_eq!(
            t.check(["user:b", "user:a"], t0 + Duration::from_secs(10)),
            Err(20)
        );
        assert_eq!(t.check(["user:a"], t0 + Duration::from_secs(31)), Ok(()));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t = throttle();
        let t0 = Instant::now();
        t.fail(["s"], t0);
        t.fail(["s"], t0);
        t.fail(["s"], t0 + Duration::from_secs(61));
        assert_eq!(t.check(["s"], t0 + Duration::from_secs(61)), Ok(()));
    }

    #[test]
    fn success_resets() {
        let t = throttle();
        let t0 = Instant::now();
        t.fail(["s"], t0);
        t.fail(["s"], t0);
        t.succeed("s");
        t.fail(["s"], t0);
        assert_eq!(t.check(["s"], t0), Ok(()));
    }

    #[test]
    fn state_is_bounded() {
        let t = throttle();
        let t0 = Instant::now();
        for i in 0..(MAX_SUBJECTS + 10) {
            t.fail([format!("user:{i}").as_str()], t0);
        }
        assert!(t.subjects.len() <= MAX_SUBJECTS);
    }
}
