//! In-memory GCRA buckets of one rule, keyed by subject: `governor`'s keyed
//! rate limiter (a sharded map of atomic cells; a check is one compare and
//! swap, with no allocation for a subject already seen).

use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::{Decision, Subject};
use crate::config::ratelimit::RateLimitRule;

/// How often idle subjects (buckets full again) are dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

type Limiter =
    RateLimiter<Subject, DefaultKeyedStateStore<Subject>, DefaultClock, StateInformationMiddleware>;

/// One rule's buckets.
pub struct MemoryBuckets {
    limiter: Limiter,
    /// Time one request's worth of budget takes to come back.
    period: Duration,
    burst: u32,
}

impl MemoryBuckets {
    /// Empty buckets for `rule`, pruned in the background while they live.
    pub fn new(rule: &RateLimitRule) -> Arc<MemoryBuckets> {
        let period = Duration::from_secs_f64(1.0 / rule.rate).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(rule.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let buckets = Arc::new(MemoryBuckets {
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
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
