//! Rate limits (`[[ratelimit.rule]]`): GCRA buckets per rule and subject
//! (user, access key or client address), in memory ([`memory`], the
//! `governor` crate) or shared by every replica in Redis ([`redis`]); and
//! access keys' own budgets (a key's `rate_limit`), drawn from the same
//! store, answered as `limited_by: "key"`.
//!
//! One entry point, [`RateLimits::check`], called after authorization and
//! before forwarding (proxied and verified requests alike), and
//! [`RateLimitAnswer::add_headers`] for the `RateLimit-Policy` and
//! `RateLimit` headers of draft-ietf-httpapi-ratelimit-headers-09 (a 429
//! carries them in its error).

pub mod memory;
pub mod redis;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tracing::warn;

use crate::auth::Identity;
use crate::auth::throttle::address_block;
use crate::config::ratelimit::{
    LimitBy, OnStoreError, RateLimitConfig, RateLimitRule, RateLimitStore,
};
use crate::error::{GatewayError, RATELIMIT, RATELIMIT_POLICY};
use crate::metrics::{LabeledCounter, Metrics};
use crate::routes::{other_readings, prefix_matches_folded};
use crate::scope::KeyRateLimit;
use crate::text::push_decimal;
use memory::{KeyBuckets, MemoryBuckets};
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
    checks: CheckCounters,
}

/// A budget's `authgate_ratelimit_checks_total` counters by result, each
/// looked up at its first use (a series appears once it counts) and kept,
/// so a check counts without a label lookup.
#[derive(Default)]
struct CheckCounters {
    allowed: OnceLock<LabeledCounter>,
    limited: OnceLock<LabeledCounter>,
    store_error: OnceLock<LabeledCounter>,
}

impl CheckCounters {
    fn inc(&self, metrics: &Metrics, name: &Arc<str>, result: &'static str) {
        let cell = match result {
            "allowed" => &self.allowed,
            "limited" => &self.limited,
            _ => &self.store_error,
        };
        cell.get_or_init(|| metrics.ratelimit_counter(name, result))
            .inc();
    }
}

/// The name of an access key's own budget: `details.limited_by`, its
/// item in the RateLimit headers and its metrics label.
pub const KEY_BUDGET: &str = "key";
/// The bucket family of keys' own budgets in Redis: `@` is in no rule
/// name, so no rule's buckets can be confused with a key's.
pub const KEY_BUDGET_REDIS_NAME: &str = "@key";

/// The rules of one config snapshot, and keys' own budgets.
pub struct RateLimits {
    rules: Vec<Rule>,
    redis: Option<Arc<RedisBuckets>>,
    /// Keys' own budgets when the store is memory.
    keys: Option<Arc<KeyBuckets>>,
    /// [`KEY_BUDGET`], shared (the error and the metrics take an `Arc`).
    key_budget: Arc<str>,
    key_checks: CheckCounters,
    on_store_error: OnStoreError,
    metrics: Arc<Metrics>,
}

/// Which budget counted a request.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// A rule, by index.
    Rule(usize),
    /// The access key's own.
    Key(KeyRateLimit),
}

/// The access key's own budget, when `identity` is a key that has one.
fn key_draw(identity: &Identity) -> Option<(Budget, Subject)> {
    let (Some(id), Some(limit)) = (identity.key_id, identity.rate_limit) else {
        return None;
    };
    Some((Budget::Key(limit), Subject::Key(id)))
}

/// What the rules that applied said about an allowed request.
#[derive(Debug, Default)]
pub struct RateLimitAnswer {
    /// `(budget, remaining, reset)` per budget that counted the request;
    /// empty (no allocation) when none applied.
    counted: Vec<(Budget, u64, Duration)>,
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

/// Seconds a bucket takes to refill from empty, at least 1.
fn window_secs(rate: f64, burst: u32) -> u64 {
    (f64::from(burst) / rate).ceil().max(1.0) as u64
}

/// A `RateLimit-Policy` item: quota = the burst, window = the time the
/// bucket takes to refill from empty (`"name";q=BURST;w=SECONDS`).
fn push_policy_item(out: &mut Vec<u8>, name: &str, rate: f64, burst: u32) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\";q=");
    push_decimal(out, u64::from(burst));
    out.extend_from_slice(b";w=");
    push_decimal(out, window_secs(rate, burst));
}

/// The rule's `RateLimit-Policy` item.
fn policy_item(rule: &RateLimitRule) -> Vec<u8> {
    let mut item = Vec::with_capacity(rule.name.len() + 24);
    push_policy_item(&mut item, &rule.name, rule.rate, rule.burst);
    item
}

/// A header value from bytes built here (names are `[a-z0-9_-]`, the
/// rest digits and punctuation: always valid).
fn header_value(bytes: Vec<u8>) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(bytes))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
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
        let keys = matches!(config.store, RateLimitStore::Memory).then(|| {
            previous
                .and_then(|previous| previous.keys.clone())
                .unwrap_or_else(KeyBuckets::new)
        });
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
                    policy: header_value(policy_item(rule)),
                    config: rule.clone(),
                    memory,
                    checks: CheckCounters::default(),
                }
            })
            .collect();
        RateLimits {
            rules,
            redis,
            keys,
            key_budget: Arc::from(KEY_BUDGET),
            key_checks: CheckCounters::default(),
            on_store_error: config.on_store_error,
            metrics,
        }
    }

    /// Counts a request by `identity` (none on public routes) from
    /// `client` for `path`: first against the access key's own budget
    /// (when the identity is a key that has one), then against every rule
    /// that applies, in config order. The first budget that refuses
    /// answers 429 `RATE_LIMITED` (budgets after it do not count the
    /// request). While the Redis store cannot be reached,
    /// `on_store_error` decides: allow (the budget is skipped) or deny
    /// (503). The memory store answers on the first poll.
    pub async fn check(
        &self,
        identity: Option<&Identity>,
        client: IpAddr,
        path: &str,
    ) -> Result<RateLimitAnswer, GatewayError> {
        if let Some(answer) = self.check_now(identity, client, path) {
            return answer;
        }
        let mut draws = Vec::new();
        self.each_draw(identity, client, path, |budget, subject| {
            draws.push((budget, subject));
            Ok(())
        })?;
        let mut answer = RateLimitAnswer::default();
        for (budget, subject) in draws {
            let decision = self.decide(budget, &subject).await;
            self.count(&mut answer, budget, decision)?;
        }
        self.finish(&mut answer);
        Ok(answer)
    }

    /// [`Self::check`] at once when the store is memory (a bucket there is
    /// one compare and swap); `None` when it is Redis.
    fn check_now(
        &self,
        identity: Option<&Identity>,
        client: IpAddr,
        path: &str,
    ) -> Option<Result<RateLimitAnswer, GatewayError>> {
        // Memory: every budget's buckets are here.
        self.keys.as_ref()?;
        let mut answer = RateLimitAnswer::default();
        let counted = self.each_draw(identity, client, path, |budget, subject| {
            let decision = self.decide_now(budget, &subject).ok_or(());
            self.count(&mut answer, budget, decision)
        });
        if let Err(err) = counted {
            return Some(Err(err));
        }
        self.finish(&mut answer);
        Some(Ok(answer))
    }

    /// Counts a request of an access key that has a budget of its own
    /// against that budget alone: for the gateway's own endpoints, where
    /// the caller is known only inside the handler and rules do not apply.
    /// Nothing for other identities.
    pub async fn check_key(&self, identity: &Identity) -> Result<(), GatewayError> {
        let Some((budget, subject)) = key_draw(identity) else {
            return Ok(());
        };
        let decision = self.decide(budget, &subject).await;
        self.count(&mut RateLimitAnswer::default(), budget, decision)
    }

    /// Calls `draw` with each budget a request draws on, in order, and the
    /// subject whose bucket it takes from: the access key's own, then every
    /// rule that applies. Stops at `draw`'s first error.
    fn each_draw(
        &self,
        identity: Option<&Identity>,
        client: IpAddr,
        path: &str,
        mut draw: impl FnMut(Budget, Subject) -> Result<(), GatewayError>,
    ) -> Result<(), GatewayError> {
        if let Some((budget, subject)) = identity.and_then(key_draw) {
            draw(budget, subject)?;
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let config = &rule.config;
            if let Some(prefix) = &config.path_prefix
                && !applies_under(prefix, path)
            {
                continue;
            }
            let subject = match (config.by, identity) {
                (LimitBy::User, Some(identity)) => Subject::User {
                    provider: identity.provider().clone(),
                    user: identity.user().clone(),
                },
                (
                    LimitBy::Key,
                    Some(Identity {
                        key_id: Some(id), ..
                    }),
                ) => Subject::Key(*id),
                (LimitBy::Address, _) => Subject::Address(address_block(client)),
                (LimitBy::User | LimitBy::Key, _) => continue,
            };
            draw(Budget::Rule(index), subject)?;
        }
        Ok(())
    }

    /// One budget's decision for `subject` when its buckets are in memory;
    /// `None` when they are in Redis.
    fn decide_now(&self, budget: Budget, subject: &Subject) -> Option<Decision> {
        match (budget, subject) {
            (Budget::Rule(index), _) => {
                Some(self.rules.get(index)?.memory.as_ref()?.check(subject))
            }
            (Budget::Key(limit), Subject::Key(id)) => Some(self.keys.as_ref()?.check(*id, limit)),
            (Budget::Key(_), _) => None,
        }
    }

    /// One budget's decision for `subject`, from whichever store holds it.
    async fn decide(&self, budget: Budget, subject: &Subject) -> Result<Decision, ()> {
        if let Some(decision) = self.decide_now(budget, subject) {
            return Ok(decision);
        }
        let (name, rate, burst) = match budget {
            Budget::Rule(index) => {
                let config = &self.rules.get(index).ok_or(())?.config;
                (&*config.name, config.rate, config.burst)
            }
            Budget::Key(limit) => (KEY_BUDGET_REDIS_NAME, limit.rate, limit.burst),
        };
        let redis = self.redis.as_ref().ok_or(())?;
        // Boxed: the Redis round trip's state does not size the future
        // of every request that awaits a check.
        Box::pin(redis.check(name, rate, burst, subject)).await
    }

    /// The RateLimit headers of the budgets that counted the request.
    fn finish(&self, answer: &mut RateLimitAnswer) {
        if !answer.counted.is_empty() {
            let (policy, state) = self.header_values(&answer.counted);
            answer.policy = Some(policy);
            answer.state = Some(state);
        }
    }

    /// Books one budget's decision into `answer`; the 429 (or 503) when it
    /// refuses.
    fn count(
        &self,
        answer: &mut RateLimitAnswer,
        budget: Budget,
        decision: Result<Decision, ()>,
    ) -> Result<(), GatewayError> {
        let (name, checks) = match budget {
            Budget::Rule(index) => {
                let rule = &self.rules[index];
                (&rule.config.name, &rule.checks)
            }
            Budget::Key(_) => (&self.key_budget, &self.key_checks),
        };
        match decision {
            Ok(Decision::Allowed { remaining, reset }) => {
                checks.inc(&self.metrics, name, "allowed");
                answer.counted.push((budget, remaining, reset));
            }
            Ok(Decision::Limited { retry_after, reset }) => {
                checks.inc(&self.metrics, name, "limited");
                answer.counted.push((budget, 0, reset));
                let (policy, state) = self.header_values(&answer.counted);
                return Err(GatewayError::RateLimited {
                    rule: name.clone(),
                    retry_after: ceil_secs(retry_after).max(1),
                    policy,
                    state,
                });
            }
            Err(()) => {
                checks.inc(&self.metrics, name, "store_error");
                if self.on_store_error == OnStoreError::Deny {
                    return Err(GatewayError::RateLimitUnavailable);
                }
            }
        }
        Ok(())
    }

    /// `RateLimit-Policy` and `RateLimit` for the budgets counted: Lists
    /// of their items (`"name";r=REMAINING;t=SECONDS` until full). Built
    /// as bytes with no formatting machinery: this runs on every request a
    /// budget counts.
    fn header_values(&self, counted: &[(Budget, u64, Duration)]) -> (HeaderValue, HeaderValue) {
        let policy = match counted {
            [(Budget::Rule(index), ..)] => self.rules[*index].policy.clone(),
            _ => {
                let mut policy = Vec::with_capacity(32 * counted.len());
                for (n, (budget, ..)) in counted.iter().enumerate() {
                    if n > 0 {
                        policy.extend_from_slice(b", ");
                    }
                    match budget {
                        Budget::Rule(index) => {
                            policy.extend_from_slice(self.rules[*index].policy.as_bytes());
                        }
                        Budget::Key(limit) => {
                            push_policy_item(&mut policy, KEY_BUDGET, limit.rate, limit.burst);
                        }
                    }
                }
                header_value(policy)
            }
        };
        let mut state = Vec::with_capacity(32 * counted.len());
        for (n, (budget, remaining, reset)) in counted.iter().enumerate() {
            if n > 0 {
                state.extend_from_slice(b", ");
            }
            let name = match budget {
                Budget::Rule(index) => &*self.rules[*index].config.name,
                Budget::Key(_) => KEY_BUDGET,
            };
            state.push(b'"');
            state.extend_from_slice(name.as_bytes());
            state.extend_from_slice(b"\";r=");
            push_decimal(&mut state, *remaining);
            state.extend_from_slice(b";t=");
            push_decimal(&mut state, ceil_secs(*reset));
        }
        (policy, header_value(state))
    }

    /// Whether a request by `identity` may meet a budget: a rule is
    /// configured, or the identity is an access key with its own budget.
    /// Lets the request path skip [`Self::check`] when nothing applies.
    pub fn may_apply(&self, identity: Option<&Identity>) -> bool {
        !self.rules.is_empty() || identity.is_some_and(|identity| identity.rate_limit.is_some())
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
        assert_eq!(item, br#""per-user";q=20;w=2"#);
        let slow = policy_item(&rule("slow", LimitBy::User, 0.5, 1, None));
        assert_eq!(slow, br#""slow";q=1;w=2"#);
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

    fn key_identity(limit: Option<KeyRateLimit>) -> Identity {
        Identity {
            principal: crate::auth::Principal::Store(crate::auth::StoreUser::for_tests(
                "alice", "local",
            )),
            roles: Arc::from(vec![]),
            method: crate::auth::AuthMethod::AccessKey,
            key_id: Some(uuid::Uuid::from_u128(7)),
            token: None,
            scope: None,
            rate_limit: limit,
            values: Arc::default(),
        }
    }

    #[tokio::test]
    async fn a_keys_own_budget_applies_without_any_rule_and_before_them() {
        let none = limits(vec![]);
        let limit = KeyRateLimit {
            rate: 1.0,
            burst: 2,
        };
        let key = key_identity(Some(limit));
        assert!(none.may_apply(Some(&key)));
        assert!(!none.may_apply(Some(&key_identity(None))));
        assert!(!none.may_apply(None));
        for remaining in [1, 0] {
            let answer = none.check(Some(&key), CLIENT, "/x").await.unwrap();
            let mut headers = HeaderMap::new();
            answer.add_headers(&mut headers);
            assert_eq!(headers[RATELIMIT_POLICY], r#""key";q=2;w=2"#);
            assert_eq!(
                headers[RATELIMIT],
                format!("\"key\";r={remaining};t={}", 2 - remaining).as_str()
            );
        }
        match none.check(Some(&key), CLIENT, "/x").await {
            Err(GatewayError::RateLimited {
                rule,
                retry_after,
                policy,
                ..
            }) => {
                assert_eq!(&*rule, KEY_BUDGET);
                assert_eq!(retry_after, 1);
                assert_eq!(policy, r#""key";q=2;w=2"#);
            }
            other => panic!("{other:?}"),
        }
        // With a rule too: both items, the key's first; a refusal by the
        // key's budget does not count against the rule.
        let both = limits(vec![rule("per-key", LimitBy::Key, 1.0, 100, None)]);
        let answer = both.check(Some(&key), CLIENT, "/x").await.unwrap();
        let mut headers = HeaderMap::new();
        answer.add_headers(&mut headers);
        assert_eq!(
            headers[RATELIMIT_POLICY],
            r#""key";q=2;w=2, "per-key";q=100;w=100"#
        );
        let state = headers[RATELIMIT].to_str().unwrap().to_owned();
        assert!(state.starts_with(r#""key";r=1;t="#), "{state}");
        assert!(state.contains(r#", "per-key";r=99;t=1"#), "{state}");
        both.check(Some(&key), CLIENT, "/x").await.unwrap();
        assert!(both.check(Some(&key), CLIENT, "/x").await.is_err());
        let unlimited_same_key = key_identity(None);
        let answer = both
            .check(Some(&unlimited_same_key), CLIENT, "/x")
            .await
            .unwrap();
        let mut headers = HeaderMap::new();
        answer.add_headers(&mut headers);
        let state = headers[RATELIMIT].to_str().unwrap().to_owned();
        assert!(state.starts_with(r#""per-key";r=97;"#), "{state}");
    }
}
