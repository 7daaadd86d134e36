//! In-memory GCRA buckets of one rule, keyed by subject: `governor`'s keyed
//! rate limiter (a sharded map of atomic cells; a check is one compare and
//! swap, with no allocation for a subject already seen), and access keys'
//! own budgets ([`KeyBuckets`]).

use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::{Decision, Subject};
use crate::config::ratelimit::RateLimitRule;
use crate::scope::KeyRateLimit;

/// How often idle subjects (buckets full again) are dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Subjects are hashed with foldhash's quality variant, randomly seeded per
/// limiter: about a third of SipHash's cost per check, and still seeded
/// against chosen collisions (names and addresses are the client's choice).
type Hasher = foldhash::quality::RandomState;

type Limiter = RateLimiter<
    Subject,
    DashMapStateStore<Subject, Hasher>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// One rule's buckets.
pub struct MemoryBuckets {
    limiter: Limiter,
    /// Time one request's worth of budget takes to come back.
    period: Duration,
    burst: u32,
}

/// The longest refill time a bucket is given.
const MAX_PERIOD: Duration = Duration::from_secs(365 * 86_400);

impl MemoryBuckets {
    /// Empty buckets for `rule`, pruned in the background while they live.
    pub fn new(rule: &RateLimitRule) -> Arc<MemoryBuckets> {
        // Config keeps the rate within bounds; a period beyond a year (or
        // beyond a Duration) is as good as never, and governor counts in
        // u64 nanoseconds.
        let period = Duration::try_from_secs_f64(1.0 / rule.rate)
            .unwrap_or(MAX_PERIOD)
            .clamp(Duration::from_nanos(1), MAX_PERIOD);
        let burst = NonZeroU32::new(rule.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let buckets = Arc::new(MemoryBuckets {
            limiter: RateLimiter::dashmap_with_clock_and_hasher(
                quota,
                DefaultClock::default(),
                Hasher::default(),
            )
            .with_middleware::<StateInformationMiddleware>(),
            period,
            burst: burst.get(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(prune(Arc::downgrade(&buckets)));
        }
        buckets
    }

    /// Takes one request from `subject`'s bucket, if it has room.
    pub fn check(&self, subject: &Subject) -> Decision {
        match self.limiter.check_key(subject) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = self.burst.saturating_sub(remaining);
                Decision::Allowed {
                    remaining: u64::from(remaining),
                    reset: self.period * used,
                }
            }
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(self.limiter.clock().now()),
                reset: self.period * self.burst,
            },
        }
    }

    /// Subjects with a bucket.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether no subject has a bucket.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

async fn prune(buckets: Weak<MemoryBuckets>) {
    loop {
        tokio::time::sleep(PRUNE_INTERVAL).await;
        let Some(buckets) = buckets.upgrade() else {
            return;
        };
        buckets.limiter.retain_recent();
        buckets.limiter.shrink_to_fit();
    }
}

/// Access keys' own budgets (`"rate_limit"` of a key) in this process: one
/// GCRA cell per key id, each with the key's own rate and burst (which a
/// keyed `governor` limiter, one quota for all, cannot hold). The same
/// step as the Redis script: the cell holds the theoretical arrival time.
/// Only keys that authenticated get a cell, and cells of full buckets are
/// dropped in the background, so the table is bounded by the live keys.
pub struct KeyBuckets {
    /// Theoretical arrival time per key, nanoseconds since `epoch`.
    tats: dashmap::DashMap<uuid::Uuid, u64>,
    epoch: std::time::Instant,
}

impl KeyBuckets {
    /// An empty table, pruned in the background while it lives.
    pub fn new() -> Arc<KeyBuckets> {
        let buckets = Arc::new(KeyBuckets {
            tats: dashmap::DashMap::new(),
            epoch: std::time::Instant::now(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(prune_keys(Arc::downgrade(&buckets)));
        }
        buckets
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes one request from key `id`'s bucket of `limit`, if it has room.
    pub fn check(&self, id: uuid::Uuid, limit: KeyRateLimit) -> Decision {
        let now = self.now_ns();
        let (interval, capacity) = interval_and_capacity(limit);
        let mut tat = self.tats.entry(id).or_insert(now);
        let start = (*tat).max(now);
        let next = start.saturating_add(interval);
        let allow_at = next.saturating_sub(capacity);
        if allow_at > now {
            return Decision::Limited {
                retry_after: Duration::from_nanos(allow_at - now),
                reset: Duration::from_nanos(start - now),
            };
        }
        *tat = next;
        Decision::Allowed {
            remaining: (now.saturating_add(capacity) - next) / interval,
            reset: Duration::from_nanos(next - now),
        }
    }

    /// Keys with a cell.
    pub fn len(&self) -> usize {
        self.tats.len()
    }

    /// Whether no key has a cell.
    pub fn is_empty(&self) -> bool {
        self.tats.is_empty()
    }

    /// Drops the cells of buckets that are full again (the same as no cell).
    fn prune(&self) {
        let now = self.now_ns();
        self.tats.retain(|_, tat| *tat > now);
        self.tats.shrink_to_fit();
    }
}

/// Nanoseconds one request's worth takes to come back, and the bucket's
/// whole size in nanoseconds (`burst` of them).
fn interval_and_capacity(limit: KeyRateLimit) -> (u64, u64) {
    // The rate is at least MIN_KEY_RATE, so this is at most about 10^13 ns.
    let interval = (1e9 / limit.rate).clamp(1.0, 1e15) as u64;
    (interval, interval.saturating_mul(u64::from(limit.burst)))
}

async fn prune_keys(buckets: Weak<KeyBuckets>) {
    loop {
        tokio::time::sleep(PRUNE_INTERVAL).await;
        let Some(buckets) = buckets.upgrade() else {
            return;
        };
        buckets.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rate_too_slow_for_a_duration_does_not_panic() {
        let rule = RateLimitRule {
            name: Arc::from("slow"),
            by: crate::config::ratelimit::LimitBy::Address,
            rate: 1e-300,
            burst: 1,
            path_prefix: None,
        };
        let _ = MemoryBuckets::new(&rule);
    }

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let keys = KeyBuckets::new();
        let (a, b) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        let limit = KeyRateLimit {
            rate: 1.0,
            burst: 3,
        };
        for left in [2, 1, 0] {
            match keys.check(a, limit) {
                Decision::Allowed { remaining, .. } => assert_eq!(remaining, left),
                other => panic!("{other:?}"),
            }
        }
        match keys.check(a, limit) {
            Decision::Limited { retry_after, reset } => {
                assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
                assert!(reset > Duration::from_secs(2), "{reset:?}");
            }
            other => panic!("{other:?}"),
        }
        // Another key has its own bucket, with its own size.
        let one = KeyRateLimit {
            rate: 1.0,
            burst: 1,
        };
        assert!(matches!(
            keys.check(b, one),
            Decision::Allowed { remaining: 0, .. }
        ));
        assert!(matches!(keys.check(b, one), Decision::Limited { .. }));
        assert_eq!(keys.len(), 2);
        // Fast buckets are full again at once: pruned.
        let fast = uuid::Uuid::from_u128(3);
        let quick = KeyRateLimit {
            rate: 1e6,
            burst: 1,
        };
        keys.check(fast, quick);
        std::thread::sleep(Duration::from_millis(5));
        keys.prune();
        assert_eq!(keys.len(), 2, "a and b are still refilling");
    }
}
