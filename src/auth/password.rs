//! Password hashing with argon2id (PHC strings), and the bound on how many
//! hashes the gateway computes at once.

use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Hashes `password` with argon2id and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    Ok(Argon2::default()
        .hash_password(password.as_bytes())?
        .to_string())
}

/// Whether `password` matches the PHC string `phc`. A malformed PHC string
/// never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// A hash of a random password, verified against when the user does not
/// exist, so unknown users and wrong passwords take the same time.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = crate::auth::random_token(16);
        hash_password(&random).unwrap_or_default()
    })
}

/// Seconds a login refused for want of a hashing slot is told to wait.
pub const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// Every hash is running; the caller should answer 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every password-hashing slot is taken")]
pub struct HashersBusy;

/// At most `slots` argon2id computations at once. Each holds 19 MiB while it
/// runs, so an unbounded burst of logins is a burst of memory; a request
/// beyond the bound is refused at once rather than queued, since a queue
/// would hold connections and request bodies instead.
#[derive(Debug, Clone)]
pub struct HashLimiter {
    slots: Arc<Semaphore>,
}

impl HashLimiter {
    /// A limiter with `slots` concurrent hashes (at least one).
    pub fn new(slots: usize) -> Self {
        HashLimiter {
            slots: Arc::new(Semaphore::new(slots.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    /// Takes a slot, or says that none is free. The slot is held until the
    /// returned permit is dropped; pass it to [`HashPermit::verify`].
    pub fn try_acquire(&self) -> Result<HashPermit, HashersBusy> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(|slot| HashPermit { _slot: slot })
            .map_err(|_| HashersBusy)
    }

    /// Free slots now (for tests and metrics).
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

/// One hashing slot. It is the only way to hash on the request path, so
/// every hash there is counted against the bound.
#[derive(Debug)]
pub struct HashPermit {
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl HashPermit {
    /// Verifies `password` against `phc`, or against [`dummy_hash`] when
    /// `phc` is `None` (an unknown user), on the blocking pool; the slot is
    /// given back when the hash is done, even if the caller went away.
    pub async fn verify(self, password: String, phc: Option<String>) -> Option<bool> {
        tokio::task::spawn_blocking(move || {
            let matches = match &phc {
                Some(phc) => verify_password(&password, phc),
                None => verify_password(&password, dummy_hash()),
            };
            drop(self);
            matches
        })
        .await
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limiter_refuses_beyond_its_slots_and_frees_them_after_use() {
        let limiter = HashLimiter::new(2);
        let a = limiter.try_acquire().unwrap();
        let b = limiter.try_acquire().unwrap();
        assert_eq!(limiter.try_acquire().unwrap_err(), HashersBusy);
        drop(a);
        let c = limiter.try_acquire().unwrap();
        assert_eq!(c.verify("x".into(), None).await, Some(false));
        assert_eq!(limiter.available(), 1, "the verifying slot is given back");
        drop(b);
        assert_eq!(limiter.available(), 2);
        assert_eq!(HashLimiter::new(0).available(), 1, "at least one slot");
    }

    #[test]
    fn hash_and_verify() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horsf", &phc));
        assert!(!verify_password("correct horse", "not a phc string"));
        assert!(!verify_password("anything", dummy_hash()));
    }
}
