//! Counters and histograms, rendered in the Prometheus text format
//! (version 0.0.4) by `prometheus-client`.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram with fixed buckets, lock-free: an observation is
/// three relaxed atomic adds (`prometheus-client`'s histogram takes a
/// mutex on every observation). Encoded through the library's encoder.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        // One bucket per observation; the encoder adds them up into the
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
}

/// The registry's handle on a shared [`Histogram`].
#[derive(Debug, Clone, Default)]
struct SharedHistogram(Arc<Histogram>);

impl EncodeMetric for SharedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let histogram = &self.0;
        let mut buckets = [(0.0, 0); BUCKETS.len()];
        for ((slot, bound), bucket) in buckets.iter_mut().zip(BUCKETS).zip(&histogram.buckets) {
            *slot = (bound, bucket.load(Ordering::Relaxed));
        }
        let count = histogram.count.load(Ordering::Relaxed);
        let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Counters by label set, encoded as one family. Stands in for
/// `prometheus-client`'s `Family` (one lock, std `HashMap` with SipHash:
/// about 580 instructions to count a request in a micro-benchmark, as the
/// hand-written map did); this sharded map with foldhash takes about 340.
/// The label sets come from the config and the code (routes, outcomes,
/// error reasons), never from a client, so a fast hash is safe.
/// Each counter is shared (an `Arc`), so a caller on the hot path can keep
/// its own handle and count without looking the labels up
/// ([`Metrics::ratelimit_counter`]).
struct CounterFamily<S>(Arc<DashMap<S, Arc<AtomicU64>, foldhash::fast::RandomState>>);

impl<S> std::fmt::Debug for CounterFamily<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CounterFamily")
    }
}

impl<S: Eq + Hash> Default for CounterFamily<S> {
    fn default() -> Self {
        CounterFamily(Arc::default())
    }
}

impl<S> Clone for CounterFamily<S> {
    fn clone(&self) -> Self {
        CounterFamily(self.0.clone())
    }
}

impl<S: Eq + Hash> CounterFamily<S> {
    fn add(&self, labels: S, n: u64) {
        // A shard's shared lock for the counters that exist, nearly all
        // of them; the label set lives on the stack.
        match self.0.get(&labels) {
            Some(counter) => counter.fetch_add(n, Ordering::Relaxed),
            None => self
                .0
                .entry(labels)
                .or_default()
                .fetch_add(n, Ordering::Relaxed),
        };
    }

    fn inc(&self, labels: S) {
        self.add(labels, 1);
    }

    /// The counter of `labels`, created at 0 if it is new.
    fn counter(&self, labels: S) -> LabeledCounter {
        LabeledCounter(self.0.entry(labels).or_default().clone())
    }
}

/// One labelled counter of a family, held to count without a lookup.
#[derive(Debug, Clone)]
pub struct LabeledCounter(Arc<AtomicU64>);

impl LabeledCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S: Eq + Hash + EncodeLabelSet + std::fmt::Debug> EncodeMetric for CounterFamily<S> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for entry in self.0.iter() {
            let value = entry.value().load(Ordering::Relaxed);
            encoder
                .encode_family(entry.key())?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Labels of `authgate_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    outcome: &'static str,
    reason: &'static str,
}

/// Labels of `authgate_verify_decisions_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VerifyLabels {
    route: Arc<str>,
    decision: &'static str,
    reason: &'static str,
}

/// Labels of `authgate_login_attempts_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LoginLabels {
    kind: &'static str,
    result: &'static str,
}

/// Labels of `authgate_upstream_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamErrorLabels {
    kind: &'static str,
}

/// Labels of `authgate_trace_spans_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TraceSpanLabels {
    result: &'static str,
}

/// Labels of `authgate_ratelimit_checks_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RateLimitLabels {
    rule: Arc<str>,
    result: &'static str,
}

/// Every metric the gateway exports. The handles below share their values
/// with `registry`, which renders them.
pub struct Metrics {
    registry: Registry,
    requests: CounterFamily<RequestLabels>,
    logins: CounterFamily<LoginLabels>,
    upstream_errors: CounterFamily<UpstreamErrorLabels>,
    verify_decisions: CounterFamily<VerifyLabels>,
    ratelimits: CounterFamily<RateLimitLabels>,
    trace_spans: CounterFamily<TraceSpanLabels>,
    keys_created: Counter,
    reloads: Counter,
    audit_dropped: Counter,
    request_latency: SharedHistogram,
    upstream_latency: SharedHistogram,
    open_connections: Gauge,
    acme_orders: Counter,
    acme_failures: Counter,
    acme_next_attempt: Gauge,
    acme_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            registry: Registry::default(),
            requests: CounterFamily::default(),
            logins: CounterFamily::default(),
            upstream_errors: CounterFamily::default(),
            verify_decisions: CounterFamily::default(),
            ratelimits: CounterFamily::default(),
            trace_spans: CounterFamily::default(),
            keys_created: Counter::default(),
            reloads: Counter::default(),
            audit_dropped: Counter::default(),
            request_latency: SharedHistogram::default(),
            upstream_latency: SharedHistogram::default(),
            open_connections: Gauge::default(),
            acme_orders: Counter::default(),
            acme_failures: Counter::default(),
            acme_next_attempt: Gauge::default(),
            acme_expiry: Gauge::default(),
        };
        let mut registry = Registry::default();
        // Counters are named without `_total`: the encoder appends it.
        registry.register(
            "authgate_requests",
            "Requests by route, outcome and rejection reason",
            metrics.requests.clone(),
        );
        registry.register(
            "authgate_request_duration_seconds",
            "Time from request head to response head",
            metrics.request_latency.clone(),
        );
        registry.register(
            "authgate_upstream_duration_seconds",
            "Time from forwarding to the upstream's response head",
            metrics.upstream_latency.clone(),
        );
        registry.register(
            "authgate_upstream_errors",
            "Upstream failures by kind",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "authgate_verify_decisions",
            "Forward-authentication decisions by judged route, decision (allowed, public, denied) and reason",
            metrics.verify_decisions.clone(),
        );
        registry.register(
            "authgate_ratelimit_checks",
            "Rate-limit checks by rule and result (allowed, limited, store_error)",
            metrics.ratelimits.clone(),
        );
        registry.register(
            "authgate_trace_spans",
            "Spans exported to the OTLP collector, or dropped (queue full, collector down or slow)",
            metrics.trace_spans.clone(),
        );
        registry.register(
            "authgate_login_attempts",
            "Login attempts by kind and result",
            metrics.logins.clone(),
        );
        registry.register(
            "authgate_accesskeys_created",
            "Access keys created",
            metrics.keys_created.clone(),
        );
        registry.register(
            "authgate_config_reloads",
            "Successful configuration reloads",
            metrics.reloads.clone(),
        );
        registry.register(
            "authgate_audit_events_dropped",
            "Audit events not stored: the queue was full, the log was closed, or the store refused them",
            metrics.audit_dropped.clone(),
        );
        registry.register(
            "authgate_open_connections",
            "Client connections open",
            metrics.open_connections.clone(),
        );
        registry.register(
            "authgate_acme_orders",
            "ACME certificates ordered and issued by this process",
            metrics.acme_orders.clone(),
        );
        registry.register(
            "authgate_acme_failures",
            "ACME attempts (account, order, validation, issuance) that failed",
            metrics.acme_failures.clone(),
        );
        registry.register(
            "authgate_acme_next_attempt_seconds",
            "Unix time of the next ACME check or attempt (renewal or retry)",
            metrics.acme_next_attempt.clone(),
        );
        registry.register(
            "authgate_acme_certificate_expiry_seconds",
            "Unix time the served ACME certificate expires (0: none yet)",
            metrics.acme_expiry.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

/// The credential caches' counters and sizes at scrape time, for the
/// `authgate_cache_*` metrics. Plain numbers: the caches keep their own
/// counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheFigures {
    /// Fresh answers.
    pub hits: u64,
    /// Store round-trips needed.
    pub misses: u64,
    /// Entries dropped for room or revocation.
    pub evictions: u64,
    /// Users cached.
    pub users: usize,
    /// Access keys cached.
    pub keys: usize,
    /// Verified tokens cached (the current config's keys).
    pub tokens: usize,
}

/// The HTTPS certificates' counters at scrape time, for the
/// `authgate_tls_*` metrics (the resolver keeps its own counters).
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFigures {
    /// Changed certificate files that loaded and now serve.
    pub reloads: u64,
    /// Changed certificate files that did not load (the old pair serves).
    pub reload_failures: u64,
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
        self.requests.inc(RequestLabels {
            route,
            outcome,
            reason,
        });
        self.request_latency.0.observe(elapsed);
    }

    /// One `/_authgate/verify` decision on the judged `route` (`none` when
    /// refused before a route was found).
    pub fn verify_decision(&self, route: Arc<str>, outcome: Outcome) {
        let (decision, reason) = match outcome {
            Outcome::Authenticated => ("allowed", ""),
            Outcome::Public | Outcome::Own => ("public", ""),
            Outcome::Rejected(reason) => ("denied", reason),
        };
        self.verify_decisions.inc(VerifyLabels {
            route,
            decision,
            reason,
        });
    }

    /// Time until an upstream's response head.
    pub fn upstream(&self, elapsed: Duration) {
        self.upstream_latency.0.observe(elapsed);
    }

    /// An upstream failure of `kind` (`timeout`, `unreachable`).
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors.inc(UpstreamErrorLabels { kind });
    }

    /// A login attempt of `kind` with `result`.
    pub fn login(&self, kind: &'static str, result: &'static str) {
        self.logins.inc(LoginLabels { kind, result });
    }

    /// The counter of rate-limit checks of `rule` that ended with
    /// `result`; the rule keeps it, so a check counts without a lookup.
    pub fn ratelimit_counter(&self, rule: &Arc<str>, result: &'static str) -> LabeledCounter {
        self.ratelimits.counter(RateLimitLabels {
            rule: rule.clone(),
            result,
        })
    }

    /// An access key was created.
    pub fn keys_created(&self) {
        self.keys_created.inc();
    }

    /// `count` spans were `exported` or `dropped`.
    pub fn trace_spans(&self, result: &'static str, count: usize) {
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        self.trace_spans.add(TraceSpanLabels { result }, count);
    }

    /// The config was reloaded.
    pub fn reloads(&self) {
        self.reloads.inc();
    }

    /// `n` audit events could not be stored.
    pub fn audit_dropped(&self, n: u64) {
        self.audit_dropped.inc_by(n);
    }

    /// An ACME certificate was issued to this process.
    pub fn acme_ordered(&self) {
        self.acme_orders.inc();
    }

    /// An ACME attempt failed; the next one is at `next_attempt` (Unix
    /// seconds).
    pub fn acme_failed(&self, next_attempt: i64) {
        self.acme_failures.inc();
        self.acme_next_attempt.set(next_attempt);
    }

    /// The served ACME certificate expires at `expiry`; it is looked at
    /// again at `next_check` (Unix seconds).
    pub fn acme_serving(&self, expiry: i64, next_check: i64) {
        self.acme_expiry.set(expiry);
        self.acme_next_attempt.set(next_check);
    }

    /// A connection opened (`+1`) or closed (`-1`).
    pub fn connections(&self, delta: i64) {
        self.open_connections.inc_by(delta);
    }

    /// The Prometheus text exposition ([`CONTENT_TYPE`]), with the caches'
    /// figures passed in.
    pub fn render(&self, cache: CacheFigures, tls: TlsFigures) -> String {
        let mut caches = Registry::default();
        let counters = [
            (
                "authgate_tls_certificate_reloads",
                "Changed certificate files now served",
                tls.reloads,
            ),
            (
                "authgate_tls_certificate_reload_failures",
                "Changed certificate files that did not load (the previous pair stays)",
                tls.reload_failures,
            ),
            ("authgate_cache_hits", "Credential cache hits", cache.hits),
            (
                "authgate_cache_misses",
                "Credential cache misses",
                cache.misses,
            ),
            (
                "authgate_cache_evictions",
                "Credential cache evictions",
                cache.evictions,
            ),
        ];
        for (name, help, value) in counters {
            caches.register(name, help, ConstCounter::new(value));
        }
        let gauges = [
            ("authgate_cache_users", "Users in the cache", cache.users),
            (
                "authgate_cache_accesskeys",
                "Access keys in the cache",
                cache.keys,
            ),
            (
                "authgate_cache_tokens",
                "Verified tokens in the cache",
                cache.tokens,
            ),
        ];
        for (name, help, value) in gauges {
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            caches.register(name, help, ConstGauge::new(value));
        }
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_text::encode(&mut out, &caches);
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
        let text = metrics.render(CacheFigures::default(), TlsFigures::default());
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

    /// The names, types and help lines scrapers saw from the hand-written
    /// renderer, and the cache figures passed in.
    #[test]
    fn keeps_the_exposition_of_the_hand_written_renderer() {
        let metrics = Metrics::default();
        let empty = metrics.render(CacheFigures::default(), TlsFigures::default());
        // A family without samples has no lines at all (before: its HELP
        // and TYPE lines alone).
        assert!(!empty.contains("authgate_requests_total"), "{empty}");
        metrics.request(Arc::from("/"), Outcome::Own, Duration::ZERO);
        metrics.upstream_error("timeout");
        metrics.keys_created();
        let text = metrics.render(
            CacheFigures {
                hits: 7,
                misses: 3,
                evictions: 2,
                users: 4,
                keys: 5,
                tokens: 6,
            },
            TlsFigures::default(),
        );
        for line in [
            "# TYPE authgate_requests_total counter",
            "# HELP authgate_request_duration_seconds Time from request head to response head.",
            "# TYPE authgate_request_duration_seconds histogram",
            r#"authgate_request_duration_seconds_bucket{le="1"} 1"#,
            r#"authgate_request_duration_seconds_bucket{le="10"} 1"#,
            "# TYPE authgate_upstream_errors_total counter",
            r#"authgate_upstream_errors_total{kind="timeout"} 1"#,
            "# TYPE authgate_accesskeys_created_total counter",
            "authgate_accesskeys_created_total 1",
            "# TYPE authgate_cache_hits_total counter",
            "authgate_cache_hits_total 7",
            "authgate_cache_misses_total 3",
            "authgate_cache_evictions_total 2",
            "# TYPE authgate_cache_users gauge",
            "authgate_cache_users 4",
            "authgate_cache_accesskeys 5",
            "authgate_cache_tokens 6",
            "# TYPE authgate_open_connections gauge",
            "authgate_open_connections 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(!text.contains("# EOF"), "Prometheus text, not OpenMetrics");
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }
}
