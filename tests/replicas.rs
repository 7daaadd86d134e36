//! Two gateway processes on one PostgreSQL database: keys, revocations,
//! user removal and one-time keys are shared, and a database outage leaves
//! cached credentials working.
//!
//! Needs the PostgreSQL server of the machine (127.0.0.1:5432, trust auth);
//! `AUTHGATE_TEST_PG` overrides the admin URL. Each test makes its own
//! database, so the tests run in parallel.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sqlx::Connection;

/// Revocations must reach the other replica within this.
const ACROSS_REPLICAS: Duration = Duration::from_secs(1);

fn admin_url() -> String {
    std::env::var("AUTHGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh database, dropped at the end of the test.
struct TestDatabase {
    name: String,
}

impl TestDatabase {
    async fn create() -> TestDatabase {
        let name = format!("authgate_{}", unique("t").replace('-', "_")).to_lowercase();
        let mut admin = sqlx::PgConnection::connect(&admin_url()).await.expect(
            "PostgreSQL must be running on 127.0.0.1:5432 (see docs/operations.md: running several replicas)",
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        TestDatabase { name }
    }

    fn url(&self) -> String {
        let base = admin_url();
        let (server, _db) = base.rsplit_once('/').expect("admin URL has a database");
        format!("{server}/{}", self.name)
    }

    async fn admin(&self, sql: String) {
        let mut admin = sqlx::PgConnection::connect(&admin_url())
            .await
            .expect("connect admin");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .expect("admin statement");
    }

    /// New connections refused and the gateway's connections cut.
    async fn go_down(&self) {
        self.admin(format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            self.name
        ))
        .await;
        self.admin(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            self.name
        ))
        .await;
    }

    async fn come_back(&self) {
        self.admin(format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            self.name
        ))
        .await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort, off the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url()).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                });
            }
        })
        .join();
    }
}

/// Two gateways on one database and one secret, in front of one upstream.
async fn pair(upstream: &Upstream, db: &TestDatabase) -> (Gateway, Gateway) {
    pair_with(upstream, db, |_| {}).await
}

/// [`pair`], both started with the options `tune` sets.
async fn pair_with(
    upstream: &Upstream,
    db: &TestDatabase,
    tune: impl Fn(&mut GatewayOptions),
) -> (Gateway, Gateway) {
    let secret = random_secret_text();
    let options = || {
        let mut opts = GatewayOptions::new(&upstream.url());
        opts.store_url = Some(db.url());
        opts.secret_text = Some(secret.clone());
        tune(&mut opts);
        opts
    };
    let a = Gateway::start_with(options()).await;
    let b = Gateway::start_with(options()).await;
    (a, b)
}

async fn status_of(url: String) -> u16 {
    get(&url, None, &[]).await.status
}

/// Polls until `url` answers `expected`; returns how long it took.
async fn time_until_status(
    url: &str,
    bearer: Option<&str>,
    expected: u16,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() <= limit {
        if get(url, bearer, &[]).await.status == expected {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn a_key_created_on_one_replica_works_on_the_other_and_its_revocation_follows() {
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let (a, b) = pair(&upstream, &db).await;
    a.add_user("alice", "alice-password", &[]).await;
    let token = login_ok(&a, "alice", "alice-password").await;

    let created = post_json(
        &a.url("/v1.0/accesskeys"),
        Some(&token),
        &json!({"name": "k", "expire": 3600}),
    )
    .await;
    created.expect_status(200);
    let key = created.json()["token"].as_str().unwrap().to_string();
    let id = created.json()["id"].as_str().unwrap().to_string();

    // Used on B: cached there from now on.
    assert_eq!(
        status_of(b.url(&format!("/data?accesskey={key}"))).await,
        200
    );
    let seen = upstream.last();
    assert_eq!(seen.header("x-auth-method").as_deref(), Some("accesskey"));
    assert_eq!(seen.header("x-auth-key-id").as_deref(), Some(id.as_str()));

    let bearer = format!("Bearer {token}");
    let deleted = request(
        "DELETE",
        &a.url(&format!("/v1.0/accesskeys/{id}")),
        &[("authorization", bearer.as_str())],
        None,
    )
    .await;
    deleted.expect_status(200);
    let took = time_until_status(
        &b.url(&format!("/data?accesskey={key}")),
        None,
        401,
        ACROSS_REPLICAS,
    )
    .await;
    assert!(
        took.is_some(),
        "replica B still accepted the revoked key after {ACROSS_REPLICAS:?}"
    );
}

#[tokio::test]
async fn a_user_removed_on_one_replica_loses_its_tokens_on_the_other() {
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let (a, b) = pair(&upstream, &db).await;
    a.add_user("bob", "bob-password", &[]).await;
    let token = login_ok(&a, "bob", "bob-password").await;
    // B has seen and cached the user.
    assert_eq!(get(&b.url("/data"), Some(&token), &[]).await.status, 200);

    a.cli_ok(&["user", "remove", "bob"], None).await;
    let took = time_until_status(&b.url("/data"), Some(&token), 401, ACROSS_REPLICAS).await;
    assert!(
        took.is_some(),
        "replica B still accepted a removed user's token after {ACROSS_REPLICAS:?}"
    );
}

#[tokio::test]
async fn a_password_change_and_a_logout_reach_the_other_replica() {
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let (a, b) = pair(&upstream, &db).await;
    a.add_user("carol", "carol-password", &[]).await;
    let first = login_ok(&a, "carol", "carol-password").await;
    let second = login_ok(&a, "carol", "carol-password").await;
    assert_eq!(get(&b.url("/data"), Some(&first), &[]).await.status, 200);
    assert_eq!(get(&b.url("/data"), Some(&second), &[]).await.status, 200);

    let bearer = format!("Bearer {first}");
    let logout = request(
        "POST",
        &a.url("/auth/logout"),
        &[("authorization", bearer.as_str())],
        None,
    )
    .await;
    logout.expect_status(200);
    assert!(
        time_until_status(&b.url("/data"), Some(&first), 401, ACROSS_REPLICAS)
            .await
            .is_some()
    );
    assert_eq!(
        get(&b.url("/data"), Some(&second), &[]).await.status,
        200,
        "logout revokes only that token"
    );

    a.cli_ok(
        &["user", "passwd", "carol", "--password-stdin"],
        Some("new-password\n"),
    )
    .await;
    assert!(
        time_until_status(&b.url("/data"), Some(&second), 401, ACROSS_REPLICAS)
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_one_time_key_issued_on_one_replica_is_answered_on_the_other() {
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let (a, b) = pair(&upstream, &db).await;
    a.add_user("dave", "dave-password", &[]).await;
    let issued = post_json(
        &a.url("/auth/onetimekey"),
        None,
        &json!({"username": "dave"}),
    )
    .await;
    issued.expect_status(200);
    let key = issued.json()["key"].as_str().unwrap().to_string();
    let answer = otk_answer(&key, "dave", "voximplant.com", "dave-password");
    let login = post_json(
        &b.url("/auth/onetimekey/login"),
        None,
        &json!({"username": "dave", "key": key, "token": answer}),
    )
    .await;
    login.expect_status(200);
    assert_eq!(login.json()["username"], "dave");
}

#[tokio::test]
async fn fifty_concurrent_answers_to_one_key_across_replicas_win_exactly_once() {
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let (a, b) = pair(&upstream, &db).await;
    a.add_user("erin", "erin-password", &[]).await;
    let issued = post_json(
        &a.url("/auth/onetimekey"),
        None,
        &json!({"username": "erin"}),
    )
    .await;
    let key = issued.json()["key"].as_str().unwrap().to_string();
    let body = json!({
        "username": "erin",
        "key": key,
        "token": otk_answer(&key, "erin", "voximplant.com", "erin-password"),
    });
    let mut attempts = Vec::new();
    for i in 0..50 {
        let url = if i % 2 == 0 {
            a.url("/auth/onetimekey/login")
        } else {
            b.url("/auth/onetimekey/login")
        };
        let body = body.clone();
        attempts.push(tokio::spawn(async move {
            post_json(&url, None, &body).await.status
        }));
    }
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    let wins = statuses.iter().filter(|s| **s == 200).count();
    let refusals = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(wins, 1, "statuses: {statuses:?}");
    assert_eq!(refusals, 49, "statuses: {statuses:?}");
}

#[tokio::test]
async fn a_database_outage_keeps_cached_credentials_working_and_recovers() {
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let (a, b) = pair(&upstream, &db).await;
    a.add_user("frank", "frank-password", &[]).await;
    let token = login_ok(&a, "frank", "frank-password").await;
    let (_id, key) = a.create_key_cli("frank", &[]).await;
    // Warm both caches.
    for gw in [&a, &b] {
        assert_eq!(status_of(gw.url(&format!("/x?accesskey={key}"))).await, 200);
        assert_eq!(get(&gw.url("/x"), Some(&token), &[]).await.status, 200);
    }

    db.go_down().await;
    for gw in [&a, &b] {
        assert_eq!(
            status_of(gw.url(&format!("/x?accesskey={key}"))).await,
            200,
            "cached key during outage"
        );
        assert_eq!(
            get(&gw.url("/x"), Some(&token), &[]).await.status,
            200,
            "cached JWT user during outage"
        );
        let login = login(gw, "frank", "frank-password").await;
        login.expect_error(503, "UNAVAILABLE", "STORE_UNAVAILABLE");
        let listing = get(&gw.url("/v1.0/accesskeys"), Some(&token), &[]).await;
        listing.expect_error(503, "UNAVAILABLE", "STORE_UNAVAILABLE");
        assert_eq!(status_of(gw.url("/readyz")).await, 503);
        assert_eq!(status_of(gw.url("/healthz")).await, 200);
    }

    db.come_back().await;
    for gw in [&a, &b] {
        let recovered = poll_until(Duration::from_secs(15), || async {
            login(gw, "frank", "frank-password").await.status == 200
        })
        .await;
        assert!(
            recovered,
            "login did not recover after the database came back"
        );
        assert_eq!(status_of(gw.url("/readyz")).await, 200);
    }
}

#[tokio::test]
async fn failed_logins_are_counted_across_replicas() {
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let (a, b) = pair_with(&upstream, &db, |opts| {
        opts.login_max_failures = 4;
        opts.login_lockout = 60;
    })
    .await;
    a.add_user("gina", "gina-password", &[]).await;
    for gw in [&a, &b, &a, &b] {
        login(gw, "gina", "wrong").await.expect_status(401);
    }
    // Locked on both, even with the right password.
    for gw in [&a, &b] {
        let refused = login(gw, "gina", "gina-password").await;
        refused.expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
        assert!(refused.header("retry-after").is_some());
    }
}

#[tokio::test]
async fn concurrent_wrong_passwords_on_two_replicas_are_checked_at_most_max_failures_times() {
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let (a, b) = pair_with(&upstream, &db, |opts| {
        opts.login_max_failures = 5;
        opts.login_max_concurrent_hashes = Some(100);
    })
    .await;
    a.add_user("hana", "hana-password", &[]).await;
    let attempts: Vec<_> = (0..100)
        .map(|i| {
            let url = if i % 2 == 0 {
                a.url("/auth/login")
            } else {
                b.url("/auth/login")
            };
            tokio::spawn(async move {
                let body = json!({ "username": "hana", "password": format!("wrong-{i}") });
                let r = post_json(&url, None, &body).await;
                (
                    r.status,
                    r.json()["error"]["reason"].as_str().map(str::to_owned),
                )
            })
        })
        .collect();
    let mut answers = Vec::new();
    for attempt in attempts {
        answers.push(attempt.await.unwrap());
    }
    let checked = answers
        .iter()
        .filter(|(status, reason)| {
            *status == 401 && reason.as_deref() == Some("INVALID_CREDENTIALS")
        })
        .count();
    let refused = answers
        .iter()
        .filter(|(status, reason)| *status == 429 && reason.as_deref() == Some("TOO_MANY_ATTEMPTS"))
        .count();
    assert!(
        (1..=5).contains(&checked),
        "{checked} of 100 concurrent wrong passwords were checked; max_failures is 5: {answers:?}"
    );
    assert_eq!(checked + refused, 100, "{answers:?}");
    for gw in [&a, &b] {
        login(gw, "hana", "hana-password").await.expect_error(
            429,
            "RESOURCE_EXHAUSTED",
            "TOO_MANY_ATTEMPTS",
        );
    }
}

/// Issue 24: a key disabled on one replica is refused on the other within
/// [`ACROSS_REPLICAS`], even where it was cached, and works there again
/// once enabled (the negative entry is forgotten too).
#[tokio::test]
async fn a_key_disabled_on_one_replica_is_refused_on_the_other_and_enabled_again() {
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let (a, b) = pair(&upstream, &db).await;
    a.add_user("alice", "alice-password", &[]).await;
    let token = login_ok(&a, "alice", "alice-password").await;
    let created = post_json(
        &a.url("/v1.0/accesskeys"),
        Some(&token),
        &json!({"name": "k", "expire": 3600}),
    )
    .await;
    created.expect_status(200);
    let key = created.json()["token"].as_str().unwrap().to_string();
    let id = created.json()["id"].as_str().unwrap().to_string();
    let on_b = b.url("/data");
    assert_eq!(get(&on_b, Some(&key), &[]).await.status, 200);

    let bearer = format!("Bearer {token}");
    let path = a.url(&format!("/v1.0/accesskeys/{id}"));
    request(
        "PUT",
        &path,
        &[("authorization", bearer.as_str())],
        Some(&json!({"enabled": false})),
    )
    .await
    .expect_status(200);
    assert!(
        time_until_status(&on_b, Some(&key), 401, ACROSS_REPLICAS)
            .await
            .is_some(),
        "replica B still accepted the disabled key after {ACROSS_REPLICAS:?}"
    );
    request(
        "PUT",
        &path,
        &[("authorization", bearer.as_str())],
        Some(&json!({"enabled": true})),
    )
    .await
    .expect_status(200);
    assert!(
        time_until_status(&on_b, Some(&key), 200, ACROSS_REPLICAS)
            .await
            .is_some(),
        "replica B still refused the enabled key after {ACROSS_REPLICAS:?}"
    );
}

/// Issue 24: a key rerolled on one replica with a grace: on the other, the
/// old secret (cached there) works through the grace and is refused after
/// it; the new one works at once.
#[tokio::test]
async fn a_rerolled_keys_old_secret_ends_with_its_grace_on_the_other_replica() {
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let (a, b) = pair(&upstream, &db).await;
    a.add_user("alice", "alice-password", &[]).await;
    let token = login_ok(&a, "alice", "alice-password").await;
    let created = post_json(
        &a.url("/v1.0/accesskeys"),
        Some(&token),
        &json!({"name": "k", "expire": 3600}),
    )
    .await;
    created.expect_status(200);
    let old = created.json()["token"].as_str().unwrap().to_string();
    let id = created.json()["id"].as_str().unwrap().to_string();
    let on_b = b.url("/data");
    assert_eq!(get(&on_b, Some(&old), &[]).await.status, 200);

    let grace = Duration::from_secs(3);
    let rerolled = post_json(
        &a.url(&format!("/v1.0/accesskeys/{id}/reroll")),
        Some(&token),
        &json!({"grace": grace.as_secs()}),
    )
    .await;
    rerolled.expect_status(200);
    let started = Instant::now();
    let new = rerolled.json()["token"].as_str().unwrap().to_string();
    assert!(
        time_until_status(&on_b, Some(&new), 200, ACROSS_REPLICAS)
            .await
            .is_some(),
        "the new secret did not work on B"
    );
    assert_eq!(
        get(&on_b, Some(&old), &[]).await.status,
        200,
        "within the grace"
    );
    let refused_after = time_until_status(&on_b, Some(&old), 401, grace + ACROSS_REPLICAS)
        .await
        .map(|_| started.elapsed());
    let refused_after = refused_after.expect("the old secret still worked on B after its grace");
    assert!(
        refused_after >= grace - Duration::from_millis(200),
        "refused before the grace ended: {refused_after:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&on_b, Some(&old), &[]).await.status, 401, "never again");
    assert_eq!(get(&a.url("/data"), Some(&old), &[]).await.status, 401);
    assert_eq!(get(&on_b, Some(&new), &[]).await.status, 200);
}

/// Issue 24 item 6: a key's own budget drawn from the Redis store is one
/// budget for every replica (the key made on A, used on A and B).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_own_budget_is_shared_by_two_replicas_on_redis() {
    const REDIS: &str = "redis://127.0.0.1:6379/0";
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let prefix = format!("authgate-test:{}:", unique("keyrl"));
    let toml = format!(
        "[ratelimit]\nstore = \"{REDIS}\"\non_store_error = \"deny\"\nkey_prefix = \"{prefix}\"\n"
    );
    let (a, b) = pair_with(&upstream, &db, |opts| opts.extra_toml = toml.clone()).await;
    a.add_user("alice", "alice-password", &[]).await;
    let token = login_ok(&a, "alice", "alice-password").await;
    let created = post_json(
        &a.url("/v1.0/accesskeys"),
        Some(&token),
        &json!({"name": "k", "expire": 3600, "rate_limit": {"rate": 0.01, "burst": 5}}),
    )
    .await;
    created.expect_status(200);
    let key = created.json()["token"].as_str().unwrap().to_string();
    let mut accepted = 0;
    for i in 0..12 {
        let on = if i % 2 == 0 { &a } else { &b };
        let r = get(&on.url("/data"), Some(&key), &[]).await;
        match r.status {
            200 => accepted += 1,
            429 => {
                let v = r.json();
                assert_eq!(v["error"]["reason"], "RATE_LIMITED", "{v}");
                assert_eq!(v["error"]["details"]["limited_by"], "key", "{v}");
                assert!(r.header("retry-after").is_some());
            }
            other => panic!("status {other}: {}", r.text()),
        }
    }
    assert_eq!(accepted, 5, "the key's budget of one replica, not two");
    assert_eq!(upstream.count(), 5);

    // The buckets live under the configured prefix, apart from rules'.
    let client = redis::Client::open(REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let id = created.json()["id"].as_str().unwrap().to_string();
    assert_eq!(keys, vec![format!("{prefix}@key:k:{id}")]);
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn both_replicas_write_one_audit_log() {
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let (a, b) = pair(&upstream, &db).await;
    a.add_user("root", "root-password", &["admin"]).await;
    a.add_user("alice", "alice-password", &[]).await;
    let admin = login_ok(&a, "root", "root-password").await;
    login_ok(&b, "alice", "alice-password").await;
    login(&b, "alice", "wrong-password")
        .await
        .expect_401("INVALID_CREDENTIALS");
    // The logins were answered by different processes: their request ids
    // differ, and both show in one listing from either replica.
    for gw in [&a, &b] {
        let listed = poll_until(Duration::from_secs(5), || async {
            let rows = get(&gw.url("/v1.0/audit?user=alice"), Some(&admin), &[])
                .await
                .json();
            let events: Vec<String> = rows["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row["event"].as_str().unwrap().to_owned())
                .collect();
            events == ["login_failed", "login", "user_added"]
        })
        .await;
        assert!(
            listed,
            "replica at {} lists both replicas' events",
            gw.url("/")
        );
    }
    let root_login = get(&b.url("/v1.0/audit?user=root"), Some(&admin), &[])
        .await
        .json();
    assert_eq!(
        root_login["result"][0]["event"], "login",
        "written by A, read on B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_still_queued_at_a_clean_shutdown_are_stored() {
    let upstream = Upstream::start().await;
    let db = TestDatabase::create().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.store_url = Some(db.url());
    let mut gw = Gateway::start_with(opts).await;
    // The audit table locked: the writer's first insert waits, and the
    // events after it stay queued until the shutdown.
    let mut locker = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock the audit table");
    const N: usize = 20;
    for i in 0..N {
        post_json(
            &gw.url("/auth/onetimekey/login"),
            None,
            &json!({"username": format!("u{i}"), "key": "k", "token": "t"}),
        )
        .await
        .expect_401("INVALID_CREDENTIALS");
    }
    gw.sigterm();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::raw_sql("COMMIT")
        .execute(&mut locker)
        .await
        .expect("unlock");
    let status = gw.wait_exit(Duration::from_secs(20)).await.expect("exited");
    assert!(status.success(), "{status}");
    let listed = gw.cli_ok(&["audit", "--json"], None).await;
    let stored = listed
        .lines()
        .filter(|l| l.contains("\"onetimekey_login_failed\""))
        .count();
    assert_eq!(stored, N, "{}", gw.logs());
}
