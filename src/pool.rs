//! Upstream pools (`upstreams = [...]` on a route): round robin over the
//! members, passive ejection of one that keeps failing, and the figures
//! `/metrics` shows. Each worker keeps its own turn and failure streaks
//! ([`crate::workers`]): a worker only ever touches its own slots, so the
//! hot path has no shared write but the member's in-flight counter (the
//! `limits.max_upstream_requests` bound, shared on purpose) and, on a
//! failure, its failure count.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Uri;

use crate::inflight::InFlight;

/// Consecutive failures (refused connection, closed before answering, time
/// out) after which a worker stops sending to a member.
pub const EJECT_AFTER_FAILURES: u32 = 3;

/// How long an ejected member gets no requests from that worker.
pub const EJECT_FOR: Duration = Duration::from_secs(10);

/// Shortest and longest `health_check.interval`, seconds.
pub const HEALTH_INTERVAL_SECONDS: (u64, u64) = (1, 3600);

/// `health_check = { path, interval }`: the pool's prober asks each member
/// `GET path` every `interval`; 2xx or 3xx within
/// `upstream.connect_timeout` is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Appended to each member's base URL; a normal absolute path.
    pub path: String,
    /// Time between two rounds.
    pub interval: Duration,
}

/// `ejected_until` of a member ejected until its health check passes.
const UNTIL_HEALTHY: u64 = u64::MAX;

/// One upstream of a pool.
#[derive(Debug)]
pub struct Member {
    /// Its base URL.
    pub uri: Uri,
    /// Requests in flight to it (shared with every route to this upstream).
    pub in_flight: Arc<InFlight>,
    /// Failures counted against it, all workers together (for metrics).
    failures: AtomicU64,
    /// The last health check passed (true until the first one ran, and
    /// always without health checks). Written by the prober only.
    healthy: AtomicBool,
}

impl Member {
    /// Failures counted so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// One worker's view of the pool: its turn and each member's streak and
/// ejection (milliseconds after the pool's epoch; 0: not ejected).
#[derive(Debug)]
struct WorkerView {
    next: AtomicUsize,
    streak: Box<[AtomicU32]>,
    ejected_until: Box<[AtomicU64]>,
}

/// The upstreams of one route.
#[derive(Debug)]
pub struct UpstreamPool {
    members: Box<[Member]>,
    workers: Box<[WorkerView]>,
    epoch: Instant,
    health: Option<HealthCheck>,
}

impl UpstreamPool {
    /// A pool over `members` (base URL and its in-flight counter) for
    /// `workers` worker threads.
    pub fn new(
        members: Vec<(Uri, Arc<InFlight>)>,
        workers: usize,
        health: Option<HealthCheck>,
    ) -> Self {
        let count = members.len();
        let view = || WorkerView {
            next: AtomicUsize::new(0),
            streak: (0..count).map(|_| AtomicU32::new(0)).collect(),
            ejected_until: (0..count).map(|_| AtomicU64::new(0)).collect(),
        };
        UpstreamPool {
            members: members
                .into_iter()
                .map(|(uri, in_flight)| Member {
                    uri,
                    in_flight,
                    failures: AtomicU64::new(0),
                    healthy: AtomicBool::new(true),
                })
                .collect(),
            workers: (0..workers.max(1)).map(|_| view()).collect(),
            epoch: Instant::now(),
            health,
        }
    }

    /// Its health check, if any.
    pub fn health_check(&self) -> Option<&HealthCheck> {
        self.health.as_ref()
    }

    /// What the prober found for `member`: healthy clears every worker's
    /// ejection of it (with a health check, ejection lasts until then).
    pub fn probed(&self, member: usize, healthy: bool) {
        self.members[member]
            .healthy
            .store(healthy, Ordering::Relaxed);
        if healthy {
            for view in &self.workers {
                view.streak[member].store(0, Ordering::Relaxed);
                view.ejected_until[member].store(0, Ordering::Relaxed);
            }
        }
    }

    /// The members, in config order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    fn view(&self, worker: usize) -> &WorkerView {
        &self.workers[worker % self.workers.len()]
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn ejected(&self, view: &WorkerView, member: usize, now: u64) -> bool {
        view.ejected_until[member].load(Ordering::Relaxed) > now
    }

    /// The member `worker` sends its next request to: the next in turn that
    /// passes its health check and that the worker has not ejected, other
    /// than `except` (the one a retry left). When every such candidate is
    /// ejected, the next healthy one in turn all the same: a pool that
    /// answers nothing for 10 s because each member failed a few times is
    /// worse than one more try. A member failing its health check is never
    /// picked; `None` when no candidate passes it.
    pub fn pick(&self, worker: usize, now: Instant, except: Option<usize>) -> Option<usize> {
        let view = self.view(worker);
        let count = self.members.len();
        let start = view.next.fetch_add(1, Ordering::Relaxed);
        let now = self.millis(now);
        let candidates = (0..count)
            .map(|offset| (start + offset) % count)
            .filter(|member| Some(*member) != except)
            .filter(|member| self.members[*member].healthy.load(Ordering::Relaxed));
        let mut fallback = None;
        for member in candidates {
            if !self.ejected(view, member, now) {
                return Some(member);
            }
            fallback.get_or_insert(member);
        }
        fallback
    }

    /// `member` answered `worker`: its streak there ends.
    pub fn succeeded(&self, worker: usize, member: usize) {
        let view = self.view(worker);
        if view.streak[member].load(Ordering::Relaxed) != 0 {
            view.streak[member].store(0, Ordering::Relaxed);
        }
    }

    /// `member` failed `worker`; the third failure in a row ejects it from
    /// that worker's turns for [`EJECT_FOR`], or with a health check until
    /// the prober sees it pass.
    pub fn failed(&self, worker: usize, member: usize, now: Instant) {
        self.members[member]
            .failures
            .fetch_add(1, Ordering::Relaxed);
        let view = self.view(worker);
        let streak = view.streak[member].fetch_add(1, Ordering::Relaxed) + 1;
        if streak >= EJECT_AFTER_FAILURES {
            view.streak[member].store(0, Ordering::Relaxed);
            let until = match self.health {
                Some(_) => UNTIL_HEALTHY,
                None => self.millis(now + EJECT_FOR).max(1),
            };
            view.ejected_until[member].store(until, Ordering::Relaxed);
        }
    }

    /// Whether `member` passes its health check and no worker has it
    /// ejected now (for metrics).
    pub fn is_up(&self, member: usize, now: Instant) -> bool {
        let now = self.millis(now);
        self.members[member].healthy.load(Ordering::Relaxed)
            && self
                .workers
                .iter()
                .all(|view| !self.ejected(view, member, now))
    }

    /// The same pool with each member's in-flight counter replaced by
    /// `counter(member)`'s (a reload keeping the old counters).
    pub fn with_counters(&self, counter: impl Fn(&Member) -> Arc<InFlight>) -> Self {
        let members = self
            .members
            .iter()
            .map(|member| (member.uri.clone(), counter(member)))
            .collect();
        UpstreamPool::new(members, self.workers.len(), self.health.clone())
    }
}

/// The client health checks are sent with (built like the forwarder's,
/// from `[upstream]`).
pub type ProbeClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

/// Starts one prober per pool with a health check (one for all workers),
/// on the current runtime. Each holds its pool weakly and stops once the
/// pool is gone (the config it belongs to was replaced). A check answers
/// within `timeout` (`upstream.connect_timeout`) with 2xx or 3xx, or the
/// member fails it.
pub fn spawn_probers<'a>(
    pools: impl Iterator<Item = &'a Arc<UpstreamPool>>,
    client: &ProbeClient,
    timeout: Duration,
) {
    for pool in pools {
        let Some(health) = pool.health_check().cloned() else {
            continue;
        };
        let weak = Arc::downgrade(pool);
        let client = client.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(health.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(pool) = weak.upgrade() else {
                    return;
                };
                for (index, member) in pool.members().iter().enumerate() {
                    let healthy = probe(&client, &member.uri, &health.path, timeout).await;
                    if !healthy {
                        tracing::warn!(upstream = %member.uri, path = %health.path, "health check failed");
                    }
                    pool.probed(index, healthy);
                }
            }
        });
    }
}

/// One health check: `GET` of `path` under `base`.
async fn probe(client: &ProbeClient, base: &Uri, path: &str, timeout: Duration) -> bool {
    let target = format!("{}{path}", base.path().trim_end_matches('/'));
    let mut parts = base.clone().into_parts();
    let Ok(path_and_query) = http::uri::PathAndQuery::try_from(target) else {
        return false;
    };
    parts.path_and_query = Some(path_and_query);
    let Ok(uri) = Uri::from_parts(parts) else {
        return false;
    };
    let request = http::Request::get(uri)
        .header(http::header::USER_AGENT, "authgate-health-check")
        .body(http_body_util::Empty::<bytes::Bytes>::new());
    let Ok(request) = request else {
        return false;
    };
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => {
            let status = response.status();
            status.is_success() || status.is_redirection()
        }
        _ => false,
    }
}

/// Appends each pool member's state to a Prometheus text exposition:
/// `authgate_upstream_up` (0 while some worker has it ejected),
/// `authgate_upstream_in_flight` and `authgate_upstream_failures_total`,
/// labelled by the route (`route`, a prefix) and the member (`upstream`).
pub fn render_metrics(pools: &[(&str, &UpstreamPool)], now: Instant, out: &mut String) {
    use std::fmt::Write;
    if pools.is_empty() {
        return;
    }
    let label = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
    let families: [(&str, &str, &str); 3] = [
        (
            "authgate_upstream_up",
            "gauge",
            "Whether a pool member takes requests (0 while a worker has it ejected)",
        ),
        (
            "authgate_upstream_in_flight",
            "gauge",
            "Requests in flight to a pool member",
        ),
        (
            "authgate_upstream_failures_total",
            "counter",
            "Failed requests to a pool member (refused, closed before answering, timed out)",
        ),
    ];
    for (index, (name, kind, help)) in families.iter().enumerate() {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} {kind}");
        for (route, pool) in pools {
            for (position, member) in pool.members().iter().enumerate() {
                let value = match index {
                    0 => u64::from(pool.is_up(position, now)),
                    1 => u64::try_from(member.in_flight.current()).unwrap_or(u64::MAX),
                    _ => member.failures(),
                };
                let _ = writeln!(
                    out,
                    "{name}{{route=\"{}\",upstream=\"{}\"}} {value}",
                    label(route),
                    label(&member.uri.to_string())
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(count: usize, workers: usize) -> UpstreamPool {
        let members = (0..count)
            .map(|i| {
                let uri: Uri = format!("http://127.0.0.1:{}", 9000 + i).parse().unwrap();
                (uri, InFlight::new(10))
            })
            .collect();
        UpstreamPool::new(members, workers, None)
    }

    #[test]
    fn members_take_turns() {
        let pool = pool(3, 1);
        let now = Instant::now();
        let picks: Vec<usize> = (0..6).filter_map(|_| pool.pick(0, now, None)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // A retry goes to another member.
        for _ in 0..6 {
            let first = pool.pick(0, now, None).unwrap();
            assert_ne!(pool.pick(0, now, Some(first)), Some(first));
        }
        assert_eq!(super::tests::pool(1, 1).pick(0, now, Some(0)), None);
    }

    #[test]
    fn three_failures_in_a_row_eject_for_ten_seconds_in_that_worker_only() {
        let pool = pool(2, 2);
        let now = Instant::now();
        pool.failed(0, 1, now);
        pool.failed(0, 1, now);
        pool.succeeded(0, 1);
        pool.failed(0, 1, now);
        pool.failed(0, 1, now);
        // Two in a row after a success: still in turn.
        assert!(pool.is_up(1, now));
        pool.failed(0, 1, now);
        assert!(!pool.is_up(1, now));
        let picks: Vec<usize> = (0..4).filter_map(|_| pool.pick(0, now, None)).collect();
        assert_eq!(picks, [0, 0, 0, 0]);
        // The other worker still sends to it.
        let picks: Vec<usize> = (0..2).filter_map(|_| pool.pick(1, now, None)).collect();
        assert_eq!(picks, [0, 1]);
        let later = now + EJECT_FOR + Duration::from_millis(1);
        assert!(pool.is_up(1, later));
        assert!((0..2).any(|_| pool.pick(0, later, None) == Some(1)));
        assert_eq!(pool.members()[1].failures(), 5);
    }

    #[test]
    fn metrics_show_each_member() {
        let pool = pool(2, 1);
        let now = Instant::now();
        for _ in 0..EJECT_AFTER_FAILURES {
            pool.failed(0, 1, now);
        }
        let _held = pool.members()[0].in_flight.try_enter();
        let mut out = String::new();
        render_metrics(&[("/api", &pool)], now, &mut out);
        for line in [
            "authgate_upstream_up{route=\"/api\",upstream=\"http://127.0.0.1:9000/\"} 1",
            "authgate_upstream_up{route=\"/api\",upstream=\"http://127.0.0.1:9001/\"} 0",
            "authgate_upstream_in_flight{route=\"/api\",upstream=\"http://127.0.0.1:9000/\"} 1",
            "authgate_upstream_failures_total{route=\"/api\",upstream=\"http://127.0.0.1:9001/\"} 3",
            "# TYPE authgate_upstream_failures_total counter",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
        }
    }

    #[test]
    fn with_a_health_check_ejection_lasts_until_a_check_passes() {
        let mut pool = pool(2, 2);
        pool.health = Some(HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(5),
        });
        let now = Instant::now();
        for _ in 0..EJECT_AFTER_FAILURES {
            pool.failed(0, 1, now);
        }
        let much_later = now + EJECT_FOR * 10;
        assert!(!pool.is_up(1, much_later));
        assert!((0..4).all(|_| pool.pick(0, much_later, None) == Some(0)));
        pool.probed(1, true);
        assert!(pool.is_up(1, much_later));
        assert!((0..2).any(|_| pool.pick(0, much_later, None) == Some(1)));
        // Failing the check: no worker sends to it, even as a last resort.
        pool.probed(1, false);
        assert!(!pool.is_up(1, now));
        assert!((0..4).all(|_| pool.pick(1, now, None) == Some(0)));
        assert_eq!(pool.pick(1, now, Some(0)), None);
        pool.probed(0, false);
        assert_eq!(pool.pick(1, now, None), None);
    }

    #[test]
    fn with_every_member_ejected_turns_go_on() {
        let pool = pool(2, 1);
        let now = Instant::now();
        for member in 0..2 {
            for _ in 0..EJECT_AFTER_FAILURES {
                pool.failed(0, member, now);
            }
        }
        assert!(pool.pick(0, now, None).is_some());
        assert!(pool.pick(0, now, Some(0)) == Some(1));
    }
}
