//! GCRA buckets in Redis, shared by every replica: one Lua script per
//! check does the whole step atomically on the server (with the server's
//! clock), so the gateway never reads, modifies and writes a bucket.
//!
//! The gateway never stalls on Redis: every check has a short timeout, and
//! after a failure a circuit opens for [`RETRY_AFTER_FAILURE`], during which
//! checks fail at once without touching Redis; then one check probes. One
//! warning per outage, one line when Redis answers again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{info, warn};

use super::{Decision, Subject};

/// How long the circuit stays open after a failure before one probe.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The GCRA step. KEYS[1]: the bucket. ARGV[1]: emission interval (µs per
/// request), ARGV[2]: burst. The bucket holds its theoretical arrival time
/// (TAT) in µs of the server's clock and expires once it would be full
/// again. Returns {allowed, remaining, retry_after_µs, reset_µs}.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
local remaining = math.floor((now + interval * burst - new_tat) / interval)
return {1, remaining, 0, math.ceil(new_tat - now)}
";

fn script() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(GCRA_SCRIPT))
}

/// The Redis store of one config snapshot (kept across reloads while its
/// settings stay).
pub struct RedisBuckets {
    url: String,
    client: redis::Client,
    connection: ArcSwap<ConnectionManager>,
    key_prefix: String,
    timeout: Duration,
    /// Milliseconds since `epoch` until which the circuit is open (0: closed).
    open_until_ms: AtomicU64,
    /// Whether an outage has been reported and not yet its end.
    down: AtomicBool,
    epoch: Instant,
}

/// Why a Redis store could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RedisSetupError(String);

fn manager(
    client: &redis::Client,
    timeout: Duration,
) -> Result<ConnectionManager, RedisSetupError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(RETRY_AFTER_FAILURE);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|err| RedisSetupError(format!("{:?}", err.kind())))
}

impl RedisBuckets {
    /// A store on `url` (connected lazily: Redis may be down at start).
    pub fn new(url: &str, key_prefix: &str, timeout: Duration) -> Result<Self, RedisSetupError> {
        // Never the URL in the error: it may hold a password.
        let client = redis::Client::open(url)
            .map_err(|_| RedisSetupError("ratelimit.store is not a valid Redis URL".into()))?;
        let connection = ArcSwap::from_pointee(manager(&client, timeout)?);
        Ok(RedisBuckets {
            url: url.to_owned(),
            client,
            connection,
            key_prefix: key_prefix.to_owned(),
            timeout,
            open_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            epoch: Instant::now(),
        })
    }

    /// Whether this store was built from these settings.
    pub fn same_settings(&self, url: &str, key_prefix: &str, timeout: Duration) -> bool {
        self.url == url && self.key_prefix == key_prefix && self.timeout == timeout
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether this check may call Redis: the circuit is closed, or it is
    /// open past its time and this check wins the one probe.
    fn may_try(&self) -> bool {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= open_until
            && self
                .open_until_ms
                .compare_exchange(
                    open_until,
                    now + RETRY_AFTER_FAILURE.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    fn failed(&self, why: &str) {
        let reopen = self.now_ms() + RETRY_AFTER_FAILURE.as_millis() as u64;
        self.open_until_ms.store(reopen.max(1), Ordering::Release);
        if !self.down.swap(true, Ordering::AcqRel) {
            warn!(
                error = why,
                "the Redis rate-limit store cannot be reached; ratelimit.on_store_error decides until it answers again"
            );
        }
        // A fresh (lazy) connection for the next probe: the old one may be
        // stuck reconnecting with its own back-off.
        if let Ok(fresh) = manager(&self.client, self.timeout) {
            self.connection.store(Arc::new(fresh));
        }
    }

    fn succeeded(&self) {
        if self.open_until_ms.load(Ordering::Acquire) != 0 {
            self.open_until_ms.store(0, Ordering::Release);
        }
        if self.down.load(Ordering::Acquire) && self.down.swap(false, Ordering::AcqRel) {
            info!("the Redis rate-limit store answers again");
        }
    }

    /// One GCRA step for `subject` in the bucket family `name` (a rule's
    /// name, or [`super::KEY_BUDGET_REDIS_NAME`]) of `rate` per second and
    /// `burst`; `Err` when Redis cannot answer in time (or the circuit is
    /// open).
    pub async fn check(
        &self,
        name: &str,
        rate: f64,
        burst: u32,
        subject: &Subject,
    ) -> Result<Decision, ()> {
        if !self.may_try() {
            return Err(());
        }
        let key = format!("{}{}:{}", self.key_prefix, name, subject.redis_part());
        let interval_us = (1_000_000.0 / rate).max(1.0);
        let mut connection = ConnectionManager::clone(&self.connection.load());
        let mut invocation = script().key(&key);
        invocation.arg(interval_us).arg(burst);
        let step = invocation.invoke_async::<Vec<i64>>(&mut connection);
        let reply = match tokio::time::timeout(self.timeout, step).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(err)) => {
                self.failed(&format!("{:?}", err.kind()));
                return Err(());
            }
            Err(_) => {
                self.failed("timed out");
                return Err(());
            }
        };
        let [allowed, remaining, retry_us, reset_us] = reply[..] else {
            self.failed("unexpected script reply");
            return Err(());
        };
        self.succeeded();
        let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        Ok(if allowed == 1 {
            Decision::Allowed {
                remaining: u64::try_from(remaining).unwrap_or(0),
                reset: micros(reset_us),
            }
        } else {
            Decision::Limited {
                retry_after: micros(retry_us),
                reset: micros(reset_us),
            }
        })
    }
}
