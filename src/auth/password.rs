//! Password hashing with argon2id (PHC strings), and the bound on how many
//! hashes the gateway computes at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

/// The longest a login waits in the queue for a hashing slot before it is
/// answered 503 `LOGIN_BUSY`.
pub const HASH_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// At most `slots` argon2id computations at once, and at most `max_queued`
/// logins waiting for one. Each hash holds 19 MiB while it runs, so the
/// slots bound memory; a queued login holds only its connection and its
/// small body, so a burst smaller than the queue (a shift logging in at
/// once) is served instead of refused. Beyond the queue, or after
/// [`HASH_QUEUE_WAIT`] in it, a login is refused.
#[derive(Debug, Clone)]
pub struct HashLimiter {
    slots: Arc<Semaphore>,
    total: usize,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    max_wait: Duration,
}

impl HashLimiter {
    /// A limiter with `slots` concurrent hashes (at least one) and room for
    /// `max_queued` waiting logins.
    pub fn new(slots: usize, max_queued: usize) -> Self {
        Self::with_wait(slots, max_queued, HASH_QUEUE_WAIT)
    }

    fn with_wait(slots: usize, max_queued: usize, max_wait: Duration) -> Self {
        let total = slots.clamp(1, Semaphore::MAX_PERMITS);
        HashLimiter {
            slots: Arc::new(Semaphore::new(total)),
            total,
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued,
            max_wait,
        }
    }

    /// Whether a limiter built with these bounds would be this one's
    /// equal (a reload then keeps this one, and the hashes it counts).
    pub fn same_bounds(&self, slots: usize, max_queued: usize) -> bool {
        self.max_queued == max_queued && self.total == slots.clamp(1, Semaphore::MAX_PERMITS)
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

    /// Takes a slot, waiting in the queue (first come, first served) when
    /// every slot is taken: refused at once when the queue is full, or
    /// after the longest wait.
    pub async fn acquire(&self) -> Result<HashPermit, HashersBusy> {
        if let Ok(permit) = self.try_acquire() {
            return Ok(permit);
        }
        let max_queued = self.max_queued;
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_queued).then_some(n + 1)
            })
            .map_err(|_| HashersBusy)?;
        // Leaves the queue however the wait ends, the caller hanging up too.
        let _place = QueuePlace(&self.queued);
        match tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(HashPermit { _slot: slot }),
            _ => Err(HashersBusy),
        }
    }

    /// Free slots now (for tests and metrics).
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Logins waiting for a slot now (for tests and metrics).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// A login's place in the hash queue, given up when dropped.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
        let limiter = HashLimiter::new(2, 0);
        let a = limiter.try_acquire().unwrap();
        let b = limiter.try_acquire().unwrap();
        assert_eq!(limiter.try_acquire().unwrap_err(), HashersBusy);
        drop(a);
        let c = limiter.try_acquire().unwrap();
        assert_eq!(c.verify("x".into(), None).await, Some(false));
        assert_eq!(limiter.available(), 1, "the verifying slot is given back");
        drop(b);
        assert_eq!(limiter.available(), 2);
        assert_eq!(HashLimiter::new(0, 0).available(), 1, "at least one slot");
    }

    #[tokio::test]
    async fn logins_beyond_the_slots_wait_in_the_queue_and_beyond_it_are_refused() {
        let limiter = HashLimiter::with_wait(1, 2, Duration::from_secs(30));
        let held = limiter.try_acquire().unwrap();
        let first = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire().await.map(|_| ()) }
        });
        let second = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire().await.map(|_| ()) }
        });
        while limiter.queued() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            limiter.acquire().await.unwrap_err(),
            HashersBusy,
            "beyond the queue: refused at once"
        );
        drop(held);
        assert_eq!(first.await.unwrap(), Ok(()));
        assert_eq!(second.await.unwrap(), Ok(()));
        assert_eq!(limiter.queued(), 0);
        assert_eq!(limiter.available(), 1);
    }

    #[tokio::test]
    async fn a_queued_login_gives_up_after_the_longest_wait() {
        let limiter = HashLimiter::with_wait(1, 4, Duration::from_millis(50));
        let _held = limiter.try_acquire().unwrap();
        assert_eq!(limiter.acquire().await.unwrap_err(), HashersBusy);
        assert_eq!(limiter.queued(), 0, "the place is given back");
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
