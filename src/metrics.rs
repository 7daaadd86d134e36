//! Counters and histograms, rendered in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram with fixed buckets.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        // One bucket per observation; `render` adds them up into the
        // cumulative counts Prometheus expects.
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS
            .iter()
            .zip(&self.buckets)
            .find_map(|(bound, bucket)| (seconds <= *bound).then_some(bucket))
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Every metric the gateway exports.
#[derive(Default)]
pub struct Metrics {
    requests: DashMap<(Arc<str>, &'static str, &'static str), AtomicU64>,
    logins: DashMap<(&'static str, &'static str), AtomicU64>,
    upstream_errors: DashMap<&'static str, AtomicU64>,
    keys_created: AtomicU64,
    reloads: AtomicU64,
    request_latency: Histogram,
    upstream_latency: Histogram,
    open_connections: AtomicI64,
}

/// Entries in the caches, for the `authgate_cache_*` gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheSizes {
    /// Users.
    pub users: usize,
    /// Access keys.
    pub keys: usize,
    /// Verified tokens (the current config's keys).
    pub tokens: usize,
}

/// How a request ended, for `authgate_requests_total`.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Forwarded with an identity.
    Authenticated,
    /// Forwarded on a public route.
    Public,
    /// Answered by one of the gateway's own endpoints.
    Own,
    /// Refused or failed, with the error's reason.
    Rejected(&'static str),
}

impl Outcome {
    /// The `outcome` and `reason` labels (the reason is empty unless the
    /// request was rejected).
    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            Outcome::Authenticated => ("authenticated", ""),
            Outcome::Public => ("public", ""),
            Outcome::Own => ("own", ""),
            Outcome::Rejected(reason) => ("rejected", reason),
        }
    }
}

impl Metrics {
    /// Counts one request on `route` (a route prefix or an own endpoint's
    /// name) and its latency.
    pub fn request(&self, route: Arc<str>, outcome: Outcome, elapsed: Duration) {
        let (outcome, reason) = outcome.label();
        let key = (route, outcome, reason);
        // A shared lock for the counters that exist, nearly all of them.
        match self.requests.get(&key) {
            Some(counter) => counter.fetch_add(1, Ordering::Relaxed),
            None => self
                .requests
                .entry(key)
                .or_default()
                .fetch_add(1, Ordering::Relaxed),
        };
        self.request_latency.observe(elapsed);
    }

    /// Time until an upstream's response head.
    pub fn upstream(&self, elapsed: Duration) {
        self.upstream_latency.observe(elapsed);
    }

    /// An upstream failure of `kind` (`timeout`, `unreachable`).
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .entry(kind)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A login attempt of `kind` with `result`.
    pub fn login(&self, kind: &'static str, result: &'static str) {
        self.logins
            .entry((kind, result))
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// An access key was created.
    pub fn keys_created(&self) {
        self.keys_created.fetch_add(1, Ordering::Relaxed);
    }

    /// The config was reloaded.
    pub fn reloads(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection opened (`+1`) or closed (`-1`).
    pub fn connections(&self, delta: i64) {
        self.open_connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the cache counters passed in.
    pub fn render(&self, cache: &crate::store::cache::CacheStats, sizes: CacheSizes) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP authgate_requests_total Requests by route, outcome and rejection reason.\n\
             # TYPE authgate_requests_total counter"
        );
        for entry in &self.requests {
            let (route, outcome, reason) = entry.key();
            let _ = writeln!(
                out,
                "authgate_requests_total{{route=\"{route}\",outcome=\"{outcome}\",reason=\"{reason}\"}} {}",
                entry.value().load(Ordering::Relaxed)
            );
        }
        self.request_latency.render(
            &mut out,
            "authgate_request_duration_seconds",
            "Time from request head to response head.",
        );
        self.upstream_latency.render(
            &mut out,
            "authgate_upstream_duration_seconds",
            "Time from forwarding to the upstream's response head.",
        );
        let _ = writeln!(
            out,
            "# HELP authgate_upstream_errors_total Upstream failures by kind.\n\
             # TYPE authgate_upstream_errors_total counter"
        );
        for entry in &self.upstream_errors {
            let _ = writeln!(
                out,
                "authgate_upstream_errors_total{{kind=\"{}\"}} {}",
                entry.key(),
                entry.value().load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP authgate_login_attempts_total Login attempts by kind and result.\n\
             # TYPE authgate_login_attempts_total counter"
        );
        for entry in &self.logins {
            let (kind, result) = entry.key();
            let _ = writeln!(
                out,
                "authgate_login_attempts_total{{kind=\"{kind}\",result=\"{result}\"}} {}",
                entry.value().load(Ordering::Relaxed)
            );
        }
        let counters = [
            (
                "authgate_cache_hits_total",
                "Credential cache hits.",
                cache.hits.load(Ordering::Relaxed),
            ),
            (
                "authgate_cache_misses_total",
                "Credential cache misses.",
                cache.misses.load(Ordering::Relaxed),
            ),
            (
                "authgate_cache_evictions_total",
                "Credential cache evictions.",
                cache.evictions.load(Ordering::Relaxed),
            ),
            (
                "authgate_accesskeys_created_total",
                "Access keys created.",
                self.keys_created.load(Ordering::Relaxed),
            ),
            (
                "authgate_config_reloads_total",
                "Successful configuration reloads.",
                self.reloads.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let gauges = [
            (
                "authgate_open_connections",
                "Client connections open.",
                self.open_connections.load(Ordering::Relaxed),
            ),
            (
                "authgate_cache_users",
                "Users in the cache.",
                sizes.users as i64,
            ),
            (
                "authgate_cache_accesskeys",
                "Access keys in the cache.",
                sizes.keys as i64,
            ),
            (
                "authgate_cache_tokens",
                "Verified tokens in the cache.",
                sizes.tokens as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let metrics = Metrics::default();
        metrics.request(
            Arc::from("/"),
            Outcome::Authenticated,
            Duration::from_millis(3),
        );
        metrics.request(
            Arc::from("/"),
            Outcome::Rejected("INVALID_CREDENTIALS"),
            Duration::from_millis(1),
        );
        metrics.login("password", "failure");
        metrics.connections(1);
        metrics.reloads();
        let text = metrics.render(&Default::default(), CacheSizes::default());
        assert!(
            text.contains(
                r#"authgate_requests_total{route="/",outcome="authenticated",reason=""} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"reason="INVALID_CREDENTIALS"} 1"#),
            "{text}"
        );
        // Buckets are cumulative: 1 ms falls in every bucket from 0.001 up,
        // 3 ms from 0.005 up.
        for (bucket, count) in [("0.001", 1), ("0.0025", 1), ("0.005", 2), ("+Inf", 2)] {
            let line =
                format!(r#"authgate_request_duration_seconds_bucket{{le="{bucket}"}} {count}"#);
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(
            text.contains("authgate_request_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains(r#"authgate_login_attempts_total{kind="password",result="failure"} 1"#)
        );
        assert!(text.contains("authgate_open_connections 1"));
        assert!(text.contains("authgate_config_reloads_total 1"));
    }
}
