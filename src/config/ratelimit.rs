//! `[ratelimit]` and `[[ratelimit.rule]]`: raw TOML and its validation
//! into a [`RateLimitConfig`].

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::Problems;

/// Default prefix of the gateway's keys in Redis.
pub const DEFAULT_KEY_PREFIX: &str = "authgate:rl:";
/// Default time a Redis check may take before `on_store_error` decides.
const DEFAULT_TIMEOUT_MS: u64 = 200;
/// Highest sustained rate accepted, per second.
const MAX_RATE: f64 = 1_000_000.0;
/// Lowest sustained rate accepted, per second (one request in under three
/// hours): a slower one makes the refill time overflow a `Duration`.
const MIN_RATE: f64 = 0.0001;
/// Largest bucket accepted.
const MAX_BURST: u64 = 1_000_000;

/// Rate limiting, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateLimitConfig {
    /// Where buckets live.
    pub store: RateLimitStore,
    /// What happens while the Redis store cannot be reached.
    pub on_store_error: OnStoreError,
    /// Prefix of every Redis key the gateway writes.
    pub key_prefix: String,
    /// Longest a Redis check may take.
    pub timeout: Duration,
    /// The rules, in config order.
    pub rules: Vec<RateLimitRule>,
}

/// `ratelimit.store`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RateLimitStore {
    /// In this process (each replica has its own budget).
    #[default]
    Memory,
    /// A Redis URL: one budget shared by every replica on it.
    Redis(String),
}

/// `ratelimit.on_store_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// Let requests through unlimited.
    #[default]
    Allow,
    /// Refuse them with 503.
    Deny,
}

/// Whose budget a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitBy {
    /// The authenticated username.
    User,
    /// The access key's id; requests without one are not counted.
    Key,
    /// The client address, IPv6 by its /64.
    Address,
}

/// One `[[ratelimit.rule]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitRule {
    /// `[a-z0-9_-]+`, unique.
    pub name: Arc<str>,
    /// The subject.
    pub by: LimitBy,
    /// Sustained requests per second.
    pub rate: f64,
    /// Bucket size.
    pub burst: u32,
    /// Only requests under this prefix; `None`: every request.
    pub path_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    #[serde(default = "memory")]
    store: String,
    #[serde(default = "allow")]
    on_store_error: String,
    key_prefix: Option<String>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

fn memory() -> String {
    "memory".into()
}

fn allow() -> String {
    "allow".into()
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            store: memory(),
            on_store_error: allow(),
            key_prefix: None,
            timeout_ms: None,
            rule: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    name: String,
    by: String,
    rate: f64,
    burst: u64,
    path_prefix: Option<String>,
}

fn valid_rule_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

pub(super) fn validate(raw: RawRateLimit, p: &mut Problems) -> RateLimitConfig {
    let store = match raw.store.as_str() {
        "memory" => RateLimitStore::Memory,
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            match redis::Client::open(url) {
                Ok(_) => RateLimitStore::Redis(url.to_owned()),
                // Never the URL itself: it may hold a password.
                Err(_) => {
                    p.add("ratelimit.store", "is not a valid redis:// URL");
                    RateLimitStore::Memory
                }
            }
        }
        _ => {
            p.add(
                "ratelimit.store",
                "must be \"memory\" or a redis://host:port/db URL",
            );
            RateLimitStore::Memory
        }
    };
    let on_store_error = match raw.on_store_error.as_str() {
        "allow" => OnStoreError::Allow,
        "deny" => OnStoreError::Deny,
        other => {
            p.add(
                "ratelimit.on_store_error",
                format_args!("{other:?} must be \"allow\" or \"deny\""),
            );
            OnStoreError::Allow
        }
    };
    let key_prefix = raw
        .key_prefix
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    if key_prefix.len() > 128 || key_prefix.chars().any(char::is_control) {
        p.add(
            "ratelimit.key_prefix",
            "must be at most 128 characters, none of them control characters",
        );
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(10..=5000).contains(&timeout_ms) {
        p.add(
            "ratelimit.timeout_ms",
            format_args!("must be between 10 and 5000, got {timeout_ms}"),
        );
    }
    let mut rules: Vec<RateLimitRule> = Vec::with_capacity(raw.rule.len());
    for (index, rule) in raw.rule.into_iter().enumerate() {
        let key = format!("ratelimit.rule[{index}]");
        if !valid_rule_name(&rule.name) {
            p.add(
                &format!("{key}.name"),
                format_args!("{:?} must be 1 to 64 of a-z 0-9 _ -", rule.name),
            );
        } else if rules.iter().any(|seen| *seen.name == *rule.name) {
            p.add(
                &format!("{key}.name"),
                format_args!("{:?} is used by another rule", rule.name),
            );
        }
        let by = match rule.by.as_str() {
            "user" => LimitBy::User,
            "key" => LimitBy::Key,
            "address" => LimitBy::Address,
            other => {
                p.add(
                    &format!("{key}.by"),
                    format_args!("{other:?} must be \"user\", \"key\" or \"address\""),
                );
                LimitBy::User
            }
        };
        if !(rule.rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rule.rate)) {
            p.add(
                &format!("{key}.rate"),
                format_args!("must be between {MIN_RATE} and {MAX_RATE} requests per second"),
            );
        }
        if !(1..=MAX_BURST).contains(&rule.burst) {
            p.add(
                &format!("{key}.burst"),
                format_args!("must be between 1 and {MAX_BURST}, got {}", rule.burst),
            );
        }
        if let Some(prefix) = &rule.path_prefix
            && let Some(problem) = crate::scope::prefix_problem(prefix)
        {
            p.add(&format!("{key}.path_prefix"), problem);
        }
        rules.push(RateLimitRule {
            name: Arc::from(rule.name),
            by,
            rate: if rule.rate.is_finite() && rule.rate > 0.0 {
                rule.rate.clamp(MIN_RATE, MAX_RATE)
            } else {
                1.0
            },
            burst: u32::try_from(rule.burst.clamp(1, MAX_BURST)).unwrap_or(1),
            path_prefix: rule.path_prefix,
        });
    }
    RateLimitConfig {
        store,
        on_store_error,
        key_prefix,
        timeout: Duration::from_millis(timeout_ms.clamp(10, 5000)),
        rules,
    }
}
