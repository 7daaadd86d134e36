//! Rate limits (`[[ratelimit.rule]]`): bursts and refill, subjects, path
//! prefixes, the 429 and its headers, one budget shared by two replicas on
//! Redis, and Redis going away under both `on_store_error` settings.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// One rule: (name, by, rate, burst, path_prefix).
type Rule<'a> = (&'a str, &'a str, f64, u32, Option<&'a str>);

fn limits_toml(store: &str, on_store_error: &str, prefix: &str, rules: &[Rule]) -> String {
    let mut s = format!(
        "[ratelimit]\nstore = \"{store}\"\non_store_error = \"{on_store_error}\"\nkey_prefix = \"{prefix}\"\n"
    );
    for (name, by, rate, burst, path) in rules {
        s.push_str(&format!(
            "[[ratelimit.rule]]\nname = \"{name}\"\nby = \"{by}\"\nrate = {rate}\nburst = {burst}\n"
        ));
        if let Some(path) = path {
            s.push_str(&format!("path_prefix = \"{path}\"\n"));
        }
    }
    s
}

async fn start(upstream: &Upstream, toml: String) -> Gateway {
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = toml;
    Gateway::start_with(opts).await
}

async fn hit(gw: &Gateway, path: &str, bearer: Option<&str>) -> Resp {
    get(&gw.url(path), bearer, &[]).await
}

/// A fresh key prefix for a test's keys on the shared Redis.
fn redis_prefix() -> String {
    format!("authgate-test:{}:", unique("rl"))
}

/// Deletes every key under `prefix` on the Redis at `url`.
async fn redis_cleanup(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
    }
}

async fn redis_keys(url: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn assert_limited(r: &Resp, rule: &str) {
    r.expect_status(429);
    let v = r.json();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED", "{v}");
    assert_eq!(v["error"]["reason"], "RATE_LIMITED", "{v}");
    assert_eq!(v["error"]["details"]["limited_by"], rule, "{v}");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    let policy = r
        .header("ratelimit-policy")
        .expect("RateLimit-Policy on a 429");
    assert!(policy.contains(&format!("\"{rule}\";q=")), "{policy}");
    let state = r.header("ratelimit").expect("RateLimit on a 429");
    assert!(state.contains(&format!("\"{rule}\";r=0;t=")), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_burst_refill_headers_and_the_429() {
    let upstream = Upstream::start().await;
    let toml = limits_toml(
        "memory",
        "allow",
        "x:",
        &[("per-addr", "address", 1.0, 3, None)],
    );
    let gw = start(&upstream, toml).await;
    for remaining in [2, 1, 0] {
        let r = hit(&gw, "/public/x", None).await;
        r.expect_status(200);
        assert_eq!(
            r.header("ratelimit-policy").as_deref(),
            Some(r#""per-addr";q=3;w=3"#)
        );
        let state = r.header("ratelimit").unwrap();
        assert!(
            state.starts_with(&format!("\"per-addr\";r={remaining};t=")),
            "{state}"
        );
    }
    let refused = hit(&gw, "/public/x", None).await;
    assert_limited(&refused, "per-addr");
    assert_eq!(upstream.count(), 3, "a refused request is never forwarded");
    // One per second: one request's worth is back after a second (and a
    // second one only a second later, a wide margin on a loaded machine).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    hit(&gw, "/public/x", None).await.expect_status(200);
    assert_limited(&hit(&gw, "/public/x", None).await, "per-addr");
    assert_eq!(upstream.count(), 4);
    let metrics = hit(&gw, "/metrics", None).await.text();
    for line in [
        r#"authgate_ratelimit_checks_total{rule="per-addr",result="allowed"} 4"#,
        r#"authgate_ratelimit_checks_total{rule="per-addr",result="limited"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_keys_are_separate_subjects() {
    let upstream = Upstream::start().await;
    let toml = limits_toml(
        "memory",
        "allow",
        "x:",
        &[
            ("per-user", "user", 0.01, 2, Some("/api")),
            ("per-key", "key", 0.01, 1, Some("/keyed")),
        ],
    );
    let gw = start(&upstream, toml).await;
    let (alice, bob) = (unique("alice"), unique("bob"));
    gw.add_user(&alice, &random_password(), &[]).await;
    gw.add_user(&bob, &random_password(), &[]).await;
    let (ja, jb) = (gw.issue_token(&alice).await, gw.issue_token(&bob).await);
    for _ in 0..2 {
        hit(&gw, "/api/x", Some(&ja)).await.expect_status(200);
    }
    assert_limited(&hit(&gw, "/api/x", Some(&ja)).await, "per-user");
    // Bob has his own bucket; other paths are not under the rule.
    hit(&gw, "/api/x", Some(&jb)).await.expect_status(200);
    let other = hit(&gw, "/other", Some(&ja)).await;
    other.expect_status(200);
    assert!(other.header("ratelimit").is_none(), "no rule applied");
    // The same user through an access key draws on the same user budget.
    let (_, key) = gw.create_key_cli(&alice, &[]).await;
    assert_limited(
        &hit(&gw, &format!("/api/x?accesskey={key}"), None).await,
        "per-user",
    );
    // By key: JWT requests are not counted, each key has its own bucket.
    for _ in 0..3 {
        hit(&gw, "/keyed/x", Some(&jb)).await.expect_status(200);
    }
    let (_, k1) = gw.create_key_cli(&bob, &[]).await;
    let (_, k2) = gw.create_key_cli(&bob, &[]).await;
    hit(&gw, &format!("/keyed/x?accesskey={k1}"), None)
        .await
        .expect_status(200);
    assert_limited(
        &hit(&gw, &format!("/keyed/x?accesskey={k1}"), None).await,
        "per-key",
    );
    hit(&gw, &format!("/keyed/x?accesskey={k2}"), None)
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_rule_counts_every_reading_of_its_prefix() {
    let upstream = Upstream::start().await;
    let toml = limits_toml(
        "memory",
        "allow",
        "x:",
        &[("auth-tier", "address", 0.01, 3, Some("/public/auth"))],
    );
    let gw = start(&upstream, toml).await;
    hit(&gw, "/public/other", None).await.expect_status(200);
    // Each of these may reach /public/auth on some upstream: all counted.
    for path in ["/public/auth/a", "/public/AUTH/b", "/public/auth;x/c"] {
        let r = hit(&gw, path, None).await;
        r.expect_status(200);
        assert!(r.header("ratelimit").is_some(), "{path} counted");
    }
    assert_limited(&hit(&gw, "/public/auth./d", None).await, "auth-tier");
    assert_limited(&hit(&gw, "/public/Auth", None).await, "auth-tier");
    hit(&gw, "/public/authx", None).await.expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_rules_count_the_login_endpoint_but_not_probes() {
    let upstream = Upstream::start().await;
    let toml = limits_toml(
        "memory",
        "allow",
        "x:",
        &[("auth-per-address", "address", 0.01, 2, Some("/auth/"))],
    );
    let gw = start(&upstream, toml).await;
    let body = serde_json::json!({"username": "nobody", "password": "wrong-password"});
    for _ in 0..2 {
        let r = post_json(&gw.url("/auth/login"), None, &body).await;
        r.expect_status(401);
        assert!(r.header("ratelimit").is_some());
    }
    assert_limited(
        &post_json(&gw.url("/auth/login"), None, &body).await,
        "auth-per-address",
    );
    let everything = limits_toml(
        "memory",
        "allow",
        "x:",
        &[("all", "address", 0.01, 1, None)],
    );
    let gw = start(&upstream, everything).await;
    for _ in 0..3 {
        hit(&gw, "/healthz", None).await.expect_status(200);
        hit(&gw, "/metrics", None).await.expect_status(200);
    }
    hit(&gw, "/public/x", None).await.expect_status(200);
    assert_limited(&hit(&gw, "/public/x", None).await, "all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_the_same_rules_keeps_the_buckets() {
    let upstream = Upstream::start().await;
    let toml = limits_toml("memory", "allow", "x:", &[("r", "address", 0.01, 2, None)]);
    let gw = start(&upstream, toml).await;
    for _ in 0..2 {
        hit(&gw, "/public/x", None).await.expect_status(200);
    }
    assert_limited(&hit(&gw, "/public/x", None).await, "r");
    gw.sighup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_limited(&hit(&gw, "/public/x", None).await, "r");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_refuses_bad_rules() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = "[ratelimit]\nstore = \"redis://[::1\"\non_store_error = \"maybe\"\n\
        [[ratelimit.rule]]\nname = \"Bad Name\"\nby = \"user\"\nrate = 0\nburst = 0\n\
        [[ratelimit.rule]]\nname = \"dup\"\nby = \"everyone\"\nrate = 1.5\nburst = 1\npath_prefix = \"/a/../b\"\n\
        [[ratelimit.rule]]\nname = \"dup\"\nby = \"key\"\nrate = 1\nburst = 1\n\
        [[ratelimit.rule]]\nname = \"slow\"\nby = \"user\"\nrate = 1e-300\nburst = 1\n"
        .into();
    let gw = Gateway::prepare(opts);
    let out = gw.cli(&["check-config"], None).await;
    assert!(!out.status.success());
    let text = out_text(&out);
    for problem in [
        "ratelimit.store",
        "ratelimit.on_store_error",
        "ratelimit.rule[0].name",
        "ratelimit.rule[0].rate",
        "ratelimit.rule[0].burst",
        "ratelimit.rule[1].by",
        "ratelimit.rule[1].path_prefix",
        "ratelimit.rule[2].name: \"dup\" is used by another rule",
        // A refill time that overflows a Duration (it panicked the gateway).
        "ratelimit.rule[3].rate",
    ] {
        assert!(text.contains(problem), "{problem} in {text}");
    }
}

const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bursts_refill_and_expire() {
    let upstream = Upstream::start().await;
    let prefix = redis_prefix();
    let toml = limits_toml(
        SHARED_REDIS,
        "deny",
        &prefix,
        &[("per-addr", "address", 1.0, 3, None)],
    );
    let gw = start(&upstream, toml).await;
    for remaining in [2, 1, 0] {
        let r = hit(&gw, "/public/x", None).await;
        r.expect_status(200);
        let state = r.header("ratelimit").unwrap();
        assert!(
            state.starts_with(&format!("\"per-addr\";r={remaining};t=")),
            "{state}"
        );
    }
    assert_limited(&hit(&gw, "/public/x", None).await, "per-addr");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    hit(&gw, "/public/x", None).await.expect_status(200);
    assert_eq!(upstream.count(), 4);
    // One key per rule and subject, under the prefix, with a time to live.
    let keys = redis_keys(SHARED_REDIS, &prefix).await;
    assert_eq!(keys, vec![format!("{prefix}per-addr:a:127.0.0.1")]);
    let client = redis::Client::open(SHARED_REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    // Until the bucket is full again (3 s at most) plus one second.
    assert!(ttl > 0 && ttl <= 4000, "PTTL {ttl}");
    redis_cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_redis_share_one_budget() {
    let upstream = Upstream::start().await;
    let prefix = redis_prefix();
    let toml = limits_toml(
        SHARED_REDIS,
        "deny",
        &prefix,
        &[("per-user", "user", 0.01, 5, None)],
    );
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = toml;
    opts.secret_text = Some(random_secret_text());
    let a = Gateway::start_with(opts.clone()).await;
    let b = Gateway::start_with(opts).await;
    let user = unique("shared");
    // Each replica has its own SQLite store here: the user exists in both.
    a.add_user(&user, &random_password(), &[]).await;
    b.add_user(&user, &random_password(), &[]).await;
    let (ta, tb) = (a.issue_token(&user).await, b.issue_token(&user).await);
    let mut accepted = 0;
    for i in 0..12 {
        let r = if i % 2 == 0 {
            hit(&a, "/x", Some(&ta)).await
        } else {
            hit(&b, "/x", Some(&tb)).await
        };
        match r.status {
            200 => accepted += 1,
            429 => assert_limited(&r, "per-user"),
            other => panic!("status {other}: {}", r.text()),
        }
    }
    assert_eq!(accepted, 5, "the budget of one replica, not two");
    assert_eq!(upstream.count(), 5);
    redis_cleanup(SHARED_REDIS, &prefix).await;
}

/// A `redis-server` of the test's own, to stop, freeze and restart.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: libc::c_int) {
        send_signal(self.child.as_ref().expect("running").id(), signal);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGCONT);
        }
        self.kill();
    }
}

/// Requests while Redis is down (killed) or frozen (SIGSTOP: connections
/// accepted, nothing answered) are answered fast, as `on_store_error`
/// says; after a restart the limits hold again.
async fn redis_outage(on_store_error: &str) {
    let upstream = Upstream::start().await;
    let mut redis = PrivateRedis::start();
    let toml = limits_toml(
        &redis.url(),
        on_store_error,
        "t:",
        &[("per-addr", "address", 0.01, 2, None)],
    );
    let gw = start(&upstream, toml).await;
    for _ in 0..2 {
        hit(&gw, "/public/x", None).await.expect_status(200);
    }
    assert_limited(&hit(&gw, "/public/x", None).await, "per-addr");

    redis.kill();
    check_outage(&gw, on_store_error).await;
    redis.restart();
    // The restarted Redis is empty: a full bucket again, then limited.
    let back = poll_until(Duration::from_secs(10), || async {
        hit(&gw, "/public/x", None)
            .await
            .header("ratelimit")
            .is_some()
    })
    .await;
    assert!(back, "the gateway uses Redis again after it restarts");
    hit(&gw, "/public/x", None).await;
    assert_limited(&hit(&gw, "/public/x", None).await, "per-addr");

    redis.signal(libc::SIGSTOP);
    check_outage(&gw, on_store_error).await;
    redis.signal(libc::SIGCONT);

    let log = gw.logs();
    let warnings = log
        .matches("the Redis rate-limit store cannot be reached")
        .count();
    assert!(
        (1..=3).contains(&warnings),
        "one warning per outage, not per request: {warnings}"
    );
    let metrics = hit(&gw, "/metrics", None).await.text();
    assert!(
        metrics
            .contains(r#"authgate_ratelimit_checks_total{rule="per-addr",result="store_error"}"#),
        "{metrics}"
    );
}

async fn check_outage(gw: &Gateway, on_store_error: &str) {
    for _ in 0..20 {
        let started = Instant::now();
        let r = hit(gw, "/public/x", None).await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(800), "answered in {took:?}");
        if on_store_error == "allow" {
            r.expect_status(200);
            assert!(r.header("ratelimit").is_none());
        } else {
            r.expect_status(503);
            assert_eq!(r.json()["error"]["status"], "UNAVAILABLE");
            assert!(r.header("retry-after").is_some());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_on_store_error_allow() {
    redis_outage("allow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_on_store_error_deny() {
    redis_outage("deny").await;
}
