//! Rate limits (`[[ratelimit.rule]]`): GCRA buckets per rule and subject
//! (user, access key or client address), in memory ([`memory`], the
//! `governor` crate) or shared by every replica in Redis ([`redis`]).
//!
//! One entry point, [`RateLimits::check`], called after authorization and
//! before forwarding (proxied and verified requests alike), and
//! [`RateLimitAnswer::add_headers`] for the `RateLimit-Policy` and
//! `RateLimit` headers of draft-ietf-httpapi-ratelimit-headers-09 (a 429
//! carries them in its error).

pub mod memory;
pub mod redis;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tracing::warn;

use crate::auth::Identity;
use crate::auth::throttle::address_block;
use crate::config::ratelimit::{
    LimitBy, OnStoreError, RateLimitConfig, RateLimitRule, RateLimitStore,
};
use crate::error::{GatewayError, RATELIMIT, RATELIMIT_POLICY};
use crate::metrics::Metrics;
use crate::routes::{other_readings, prefix_matches_folded};
use memory::MemoryBuckets;
use redis::RedisBuckets;

/// Whose bucket a request draws on. Cheap to build: the username is the
/// identity's shared `Arc`, the key id 16 bytes, the address a copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// An authenticated caller: provider and subject together, so one
    /// name at two providers is two subjects.
    User {
        /// `local`, an `[[oidc]]` or a `[[jwt.jwks]]` provider.
        provider: Arc<str>,
        /// The name or `sub`.
        user: Arc<str>,
    },
    /// An access key's id.
    Key(uuid::Uuid),
    /// A client address (IPv6 by its /64).
    Address(IpAddr),
}

impl Subject {
    /// The subject as part of a Redis key.
    fn redis_part(&self) -> String {
        match self {
            // Neither part can hold `/` (provider and user name alphabets).
            Subject::User { provider, user } => format!("u:{provider}/{user}"),
            Subject::Key(id) => format!("k:{id}"),
            Subject::Address(ip) => format!("a:{ip}"),
        }
    }
}

/// A bucket's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let through; `remaining` more could go now, and the bucket is full
    /// again in `reset`.
    Allowed {
        /// Requests that could still go at once.
        remaining: u64,
        /// Time until the bucket is full again.
        reset: Duration,
    },
    /// Refused; the next request may go in `retry_after`.
    Limited {
        /// Time until one request fits.
        retry_after: Duration,
        /// Time until the bucket is full again.
        reset: Duration,
    },
}

/// One rule and its buckets.
struct Rule {
    config: RateLimitRule,
    /// `"name";q=BURST;w=SECONDS`, built once.
    policy: HeaderValue,
    /// The rule's buckets when the store is memory.
    memory: Option<Arc<MemoryBuckets>>,
}

/// The rules of one config snapshot.
pub struct RateLimits {
    rules: Vec<Rule>,
    redis: Option<Arc<RedisBuckets>>,
    on_store_error: OnStoreError,
    metrics: Arc<Metrics>,
}

/// What the rules that applied said about an allowed request.
#[derive(Debug, Default)]
pub struct RateLimitAnswer {
    /// `(rule index, remaining, reset)` per rule that counted the request;
    /// empty (no allocation) when none applied.
    counted: Vec<(usize, u64, Duration)>,
    policy: Option<HeaderValue>,
    state: Option<HeaderValue>,
}

impl RateLimitAnswer {
    /// Adds `RateLimit-Policy` and `RateLimit` for the rules that counted
    /// the request; nothing when none did.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        if let (Some(policy), Some(state)) = (&self.policy, &self.state) {
            headers.insert(RATELIMIT_POLICY, policy.clone());
            headers.insert(RATELIMIT, state.clone());
        }
    }
}

/// Whole seconds, rounded up.
fn ceil_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// The rule's `RateLimit-Policy` item: quota = the burst, window = the
/// time the bucket takes to refill from empty.
fn policy_item(rule: &RateLimitRule) -> String {
    let window = (f64::from(rule.burst) / rule.rate).ceil().max(1.0) as u64;
    format!("\"{}\";q={};w={window}", rule.name, rule.burst)
}

/// Whether `path` falls under `prefix` as the gateway routes it or as any
/// reading an upstream could make of it (a rule is a limit, so every
/// reading that may reach the prefix's resources counts).
fn applies_under(prefix: &str, path: &str) -> bool {
    prefix_matches_folded(prefix, path)
        || other_readings(path)
            .iter()
            .any(|reading| prefix_matches_folded(prefix, reading))
}

impl RateLimits {
    /// The rules of `config`. Buckets of rules that `previous` has with the
    /// same settings are kept (a reload does not refill them), and so is
    /// its Redis connection when the store is the same.
    pub fn new(
        config: &RateLimitConfig,
        metrics: Arc<Metrics>,
        previous: Option<&RateLimits>,
    ) -> RateLimits {
        let redis = match &config.store {
            RateLimitStore::Memory => None,
            RateLimitStore::Redis(url) => previous
                .and_then(|previous| previous.redis.clone())
                .filter(|redis| redis.same_settings(url, &config.key_prefix, config.timeout))
                .or_else(|| {
                    RedisBuckets::new(url, &config.key_prefix, config.timeout)
                        .map(Arc::new)
                        .map_err(
                            |err| warn!(error = %err, "cannot set up the Redis rate-limit store"),
                        )
                        .ok()
                }),
        };
        let rules = config
            .rules
            .iter()
            .map(|rule| {
                let memory = matches!(config.store, RateLimitStore::Memory).then(|| {
                    previous
                        .and_then(|previous| {
                            previous
                                .rules
                                .iter()
                                .find(|old| old.config == *rule)
                                .and_then(|old| old.memory.clone())
                        })
                        .unwrap_or_else(|| MemoryBuckets::new(rule))
                });
                Rule {
                    policy: HeaderValue::from_str(&policy_item(rule))
                        .unwrap_or_else(|_| HeaderValue::from_static("")),
                    config: rule.clone(),
                    memory,
                }
            })
            .collect();
        RateLimits {
            rules,
            redis,
            on_store_error: config.on_store_error,
            metrics,
        }
    }

    /// Counts a request by `identity` (none on public routes) from
    /// `client` for `path` against every rule that applies, in config
    /// order. The first rule that refuses answers 429 `RATE_LIMITED`
    /// (rules after it do not count the request). While the Redis store
    /// cannot be reached, `on_store_error` decides: allow (the rule is
    /// skipped) or deny (503).
    pub async fn check(
        &self,
        identity: Option<&Identity>,
        client: IpAddr,
        path: &str,
    ) -> Result<RateLimitAnswer, GatewayError> {
        let mut answer = RateLimitAnswer::default();
        if self.rules.is_empty() {
            return Ok(answer);
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let config = &rule.config;
            if let Some(prefix) = &config.path_prefix
                && !applies_under(prefix, path)
            {
                continue;
            }
            let subject = match config.by {
                LimitBy::User => match identity {
                    Some(identity) => Subject::User {
                        provider: identity.provider().clone(),
                        user: identity.user().clone(),
                    },
                    None => continue,
                },
                LimitBy::Key => match identity.and_then(|identity| identity.key_id) {
                    Some(id) => Subject::Key(id),
                    None => continue,
                },
                LimitBy::Address => Subject::Address(address_block(client)),
            };
            let decision = match (&rule.memory, &self.redis) {
                (Some(memory), _) => Ok(memory.check(&subject)),
                (None, Some(redis)) => redis.check(config, &subject).await,
                (None, None) => Err(()),
            };
            match decision {
                Ok(Decision::Allowed { remaining, reset }) => {
                    self.metrics.ratelimit(&config.name, "allowed");
                    answer.counted.push((index, remaining, reset));
                }
                Ok(Decision::Limited { retry_after, reset }) => {
                    self.metrics.ratelimit(&config.name, "limited");
                    answer.counted.push((index, 0, reset));
                    let (policy, state) = self.header_values(&answer.counted);
                    return Err(GatewayError::RateLimited {
                        rule: config.name.clone(),
                        retry_after: ceil_secs(retry_after).max(1),
                        policy,
                        state,
                    });
                }
                Err(()) => {
                    self.metrics.ratelimit(&config.name, "store_error");
                    if self.on_store_error == OnStoreError::Deny {
                        return Err(GatewayError::RateLimitUnavailable);
                    }
                }
            }
        }
        if !answer.counted.is_empty() {
            let (policy, state) = self.header_values(&answer.counted);
            answer.policy = Some(policy);
            answer.state = Some(state);
        }
        Ok(answer)
    }

    /// `RateLimit-Policy` and `RateLimit` for the rules counted: Lists of
    /// the rules' items (`"name";r=REMAINING;t=SECONDS` until full).
    fn header_values(&self, counted: &[(usize, u64, Duration)]) -> (HeaderValue, HeaderValue) {
        let policy = match counted {
            [(index, ..)] => self.rules[*index].policy.clone(),
            _ => {
                let items: Vec<&str> = counted
                    .iter()
                    .filter_map(|(index, ..)| self.rules[*index].policy.to_str().ok())
                    .collect();
                HeaderValue::from_str(&items.join(", "))
                    .unwrap_or_else(|_| HeaderValue::from_static(""))
            }
        };
        let mut state = String::with_capacity(32 * counted.len());
        for (n, (index, remaining, reset)) in counted.iter().enumerate() {
            if n > 0 {
                state.push_str(", ");
            }
            let _ = write!(
                state,
                "\"{}\";r={remaining};t={}",
                self.rules[*index].config.name,
                ceil_secs(*reset)
            );
        }
        let state = HeaderValue::from_str(&state).unwrap_or_else(|_| HeaderValue::from_static(""));
        (policy, state)
    }

    /// Whether any rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, by: LimitBy, rate: f64, burst: u32, prefix: Option<&str>) -> RateLimitRule {
        RateLimitRule {
            name: Arc::from(name),
            by,
            rate,
            burst,
            path_prefix: prefix.map(str::to_owned),
        }
    }

    fn limits(rules: Vec<RateLimitRule>) -> RateLimits {
        let config = RateLimitConfig {
            rules,
            ..RateLimitConfig::default()
        };
        RateLimits::new(&config, Arc::new(Metrics::default()), None)
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn policy_items_follow_draft_09() {
        let item = policy_item(&rule("per-user", LimitBy::User, 10.0, 20, None));
        assert_eq!(item, r#""per-user";q=20;w=2"#);
        let slow = policy_item(&rule("slow", LimitBy::User, 0.5, 1, None));
        assert_eq!(slow, r#""slow";q=1;w=2"#);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    }

    #[test]
    fn rules_apply_under_every_reading_of_their_prefix() {
        for under in [
            "/auth/login",
            "/AUTH/x",
            "/auth;x/login",
            "/auth./x",
            "/auth",
        ] {
            assert!(
                applies_under("/auth/", under) || applies_under("/auth", under),
                "{under}"
            );
        }
        assert!(applies_under("/auth", "/AUTH;x/"));
        assert!(!applies_under("/auth", "/authx"));
        assert!(!applies_under("/auth/", "/api/auth/"));
    }

    #[tokio::test]
    async fn a_burst_then_refusal_with_the_rule_named() {
        let limits = limits(vec![rule("per-addr", LimitBy::Address, 1.0, 3, None)]);
        for remaining in [2, 1, 0] {
            let answer = limits.check(None, CLIENT, "/x").await.unwrap();
            let mut headers = HeaderMap::new();
            answer.add_headers(&mut headers);
            assert_eq!(headers[RATELIMIT_POLICY], r#""per-addr";q=3;w=3"#);
            let state = headers[RATELIMIT].to_str().unwrap().to_owned();
            assert!(
                state.starts_with(&format!("\"per-addr\";r={remaining};t=")),
                "{state}"
            );
        }
        match limits.check(None, CLIENT, "/x").await {
            Err(GatewayError::RateLimited {
                rule, retry_after, ..
            }) => {
                assert_eq!(&*rule, "per-addr");
                assert_eq!(retry_after, 1);
            }
            other => panic!("{other:?}"),
        }
        // Another address has its own bucket; an IPv6 /64 is one subject.
        assert!(
            limits
                .check(None, "192.0.2.2".parse().unwrap(), "/x")
                .await
                .is_ok()
        );
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        for _ in 0..3 {
            limits.check(None, a, "/x").await.unwrap();
        }
        assert!(limits.check(None, b, "/x").await.is_err(), "same /64");
    }

    #[tokio::test]
    async fn no_rule_means_no_headers_and_users_need_an_identity() {
        let none = limits(vec![]);
        let answer = none.check(None, CLIENT, "/x").await.unwrap();
        let mut headers = HeaderMap::new();
        answer.add_headers(&mut headers);
        assert!(headers.is_empty());
        let by_user = limits(vec![rule("u", LimitBy::User, 1.0, 1, Some("/api"))]);
        for _ in 0..3 {
            // No identity, or outside the prefix: not counted.
            assert!(by_user.check(None, CLIENT, "/api/x").await.is_ok());
        }
    }
}
