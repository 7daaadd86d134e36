//! `POST /auth/login`, `/auth/logout`, throttling, and the gateway's small
//! own endpoints (health, JWKS).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_ok_token_expires_after_ttl_and_sets_cookie() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    // Not the default, so a hard-coded TTL would show.
    opts.jwt_ttl = 3600;
    let gw = Gateway::start_with(opts).await;
    let user = unique("alice");
    let pw = random_password();
    gw.add_user(&user, &pw, &["ops"]).await;

    let before = now_secs();
    let r = login(&gw, &user, &pw).await;
    r.expect_status(200);
    let v = r.json();
    assert_eq!(v["username"], user.as_str(), "login body: {v}");
    let token = v["token"].as_str().expect("token").to_string();
    assert_eq!(token.split('.').count(), 3, "token is a JWS: {token}");

    let (header, claims) = jwt_parts(&token);
    assert_eq!(header["alg"], "HS256", "header: {header}");
    assert_eq!(claims["sub"], user.as_str(), "claims: {claims}");
    assert_eq!(claims["iss"], "authgate", "claims: {claims}");
    for k in ["sub", "roles", "iat", "nbf", "exp", "iss", "jti"] {
        assert!(claims.get(k).is_some(), "claim {k} missing: {claims}");
    }
    assert_eq!(claims["roles"], json!(["ops"]), "claims: {claims}");
    let exp = claims["exp"].as_i64().expect("exp is a number");
    let expected = before + 3600;
    assert!(
        (exp - expected).abs() <= 60,
        "exp {exp} should be about now + ttl = {expected}"
    );
    let iat = claims["iat"].as_i64().expect("iat is a number");
    assert!((iat - before).abs() <= 60, "iat {iat} vs now {before}");

    // The cookie: token=<jwt>; HttpOnly; Secure; SameSite=Strict; Max-Age=ttl.
    let cookies = r.header_all("set-cookie");
    let cookie = cookies
        .iter()
        .find(|c| c.starts_with("token="))
        .unwrap_or_else(|| panic!("no token cookie in {cookies:?}"));
    let attrs: Vec<String> = cookie.split(';').map(|a| a.trim().to_string()).collect();
    assert_eq!(attrs[0], format!("token={token}"), "cookie value: {cookie}");
    let has = |want: &str| attrs.iter().any(|a| a.eq_ignore_ascii_case(want));
    assert!(has("HttpOnly"), "HttpOnly missing: {cookie}");
    assert!(has("Secure"), "Secure missing: {cookie}");
    assert!(has("SameSite=Strict"), "SameSite=Strict missing: {cookie}");
    assert!(has("Max-Age=3600"), "Max-Age=3600 missing: {cookie}");

    // And the token works.
    let p = get(&gw.url("/x"), Some(&token), &[]).await;
    p.expect_status(200);
    assert_eq!(upstream.count(), 1);
    assert_eq!(
        upstream.last().header("x-auth-user").as_deref(),
        Some(user.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("bob");
    let pw = random_password();
    gw.add_user(&user, &pw, &[]).await;

    let wrong = login(&gw, &user, "not-the-password").await;
    let unknown = login(&gw, &unique("nobody"), "not-the-password").await;
    let a = wrong.expect_401("INVALID_CREDENTIALS");
    let b = unknown.expect_401("INVALID_CREDENTIALS");
    assert_eq!(
        a["error"]["message"], b["error"]["message"],
        "wrong password and unknown user must be indistinguishable"
    );
    assert_eq!(
        wrong.header("www-authenticate"),
        unknown.header("www-authenticate")
    );
    assert!(
        wrong.header_all("set-cookie").is_empty() && unknown.header_all("set-cookie").is_empty(),
        "a failed login sets no cookie"
    );
    // The right password still works (no accidental lockout, the user exists).
    login_ok(&gw, &user, &pw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_login_json_is_400_invalid_json() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;

    for body in [r#"{"username": "a", "password": "#, "not json at all", ""] {
        let r = post_raw(&gw.url("/auth/login"), body).await;
        r.expect_error(400, "INVALID_ARGUMENT", "INVALID_JSON");
    }
    // Well-formed JSON of the wrong shape is still a 400 INVALID_ARGUMENT.
    let r = post_raw(&gw.url("/auth/login"), r#"{"username": 1, "password": []}"#).await;
    r.expect_status(400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(upstream.count(), 0, "login never reaches the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_body_over_limit_is_413() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    // Default limits.max_body_bytes is 65536.
    let big = "x".repeat(70_000);
    let body = json!({ "username": "u", "password": big }).to_string();
    let r = post_raw(&gw.url("/auth/login"), &body).await;
    r.expect_error(413, "INVALID_ARGUMENT", "BODY_TOO_LARGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_refuses_the_token_afterwards_and_clears_cookie() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("carol");
    let pw = random_password();
    gw.add_user(&user, &pw, &[]).await;
    let t1 = login_ok(&gw, &user, &pw).await;
    let t2 = gw.issue_token(&user).await;

    get(&gw.url("/x"), Some(&t1), &[]).await.expect_status(200);
    let r = post_json(&gw.url("/auth/logout"), Some(&t1), &json!({})).await;
    r.expect_status(200);
    assert_eq!(r.json()["username"], user.as_str());
    let cookies = r.header_all("set-cookie");
    let clear = cookies
        .iter()
        .find(|c| c.starts_with("token="))
        .unwrap_or_else(|| panic!("logout must clear the token cookie: {cookies:?}"));
    assert!(
        clear.starts_with("token=;") || clear == "token=",
        "cleared cookie has an empty value: {clear}"
    );
    assert!(
        clear
            .split(';')
            .any(|a| a.trim().eq_ignore_ascii_case("Max-Age=0")),
        "cleared cookie has Max-Age=0: {clear}"
    );

    let n = upstream.count();
    get(&gw.url("/x"), Some(&t1), &[])
        .await
        .expect_invalid_token();
    assert_eq!(
        upstream.count(),
        n,
        "a logged-out token never reaches upstream"
    );
    // Only the presented token is revoked.
    get(&gw.url("/x"), Some(&t2), &[]).await.expect_status(200);
    // Logout without a token is refused.
    post_json(&gw.url("/auth/logout"), None, &json!({}))
        .await
        .expect_401("AUTHENTICATION_REQUIRED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_are_throttled_with_429() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.login_max_failures = 3;
    let gw = Gateway::start_with(opts).await;
    let user = unique("dave");
    let pw = random_password();
    gw.add_user(&user, &pw, &[]).await;

    for i in 0..3 {
        let r = login(&gw, &user, &format!("wrong-{i}")).await;
        r.expect_401("INVALID_CREDENTIALS");
    }
    let r = login(&gw, &user, "wrong-again").await;
    r.expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
    let retry = r.header("retry-after").expect("429 carries Retry-After");
    let secs: u64 = retry.trim().parse().expect("Retry-After is seconds");
    assert!(secs > 0 && secs <= 300, "Retry-After {secs}");
    // During the lockout even the right password is refused.
    let r = login(&gw, &user, &pw).await;
    r.expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_jwks() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    get(&gw.url("/healthz"), None, &[]).await.expect_status(200);
    get(&gw.url("/readyz"), None, &[]).await.expect_status(200);
    let r = get(&gw.url("/.well-known/jwks.json"), None, &[]).await;
    r.expect_status(200);
    assert_eq!(
        r.json(),
        json!({ "keys": [] }),
        "HS256 publishes an empty set"
    );
    let r = get(&gw.url("/healthz"), None, &[]).await;
    assert!(
        r.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "every response carries X-Request-Id"
    );
    assert_eq!(upstream.count(), 0, "own endpoints are not proxied");
}

/// Fires `n` logins at once: `(username, password)` for each.
async fn login_burst(gw: &Gateway, attempts: Vec<(String, String)>) -> Vec<Resp> {
    let url = gw.url("/auth/login");
    let tasks: Vec<_> = attempts
        .into_iter()
        .map(|(user, password)| {
            let url = url.clone();
            tokio::spawn(async move {
                post_json(
                    &url,
                    None,
                    &json!({ "username": user, "password": password }),
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("login task"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_beyond_max_concurrent_hashes_get_503_with_retry_after_and_the_rest_are_judged() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.login_max_concurrent_hashes = Some(1);
    // No queue: every login beyond the one slot is refused at once.
    opts.login_max_queued_hashes = Some(0);
    let gw = Gateway::start_with(opts).await;
    let user = unique("hasher");
    let pw = random_password();
    gw.add_user(&user, &pw, &[]).await;

    // Right passwords, wrong passwords and unknown users (the dummy hash).
    let mut attempts = Vec::new();
    for i in 0..48 {
        attempts.push(match i % 3 {
            0 => (user.clone(), pw.clone()),
            1 => (user.clone(), format!("wrong-{i}")),
            _ => (unique("nobody"), format!("wrong-{i}")),
        });
    }
    let answers = login_burst(&gw, attempts.clone()).await;
    let mut busy = 0;
    for ((name, password), r) in attempts.iter().zip(&answers) {
        match r.status {
            503 => {
                r.expect_error(503, "UNAVAILABLE", "LOGIN_BUSY");
                let retry: u64 = r
                    .header("retry-after")
                    .expect("503 carries Retry-After")
                    .parse()
                    .expect("Retry-After is seconds");
                assert!(retry >= 1, "Retry-After {retry}");
                busy += 1;
            }
            200 => assert!(
                *name == user && *password == pw,
                "only the right password passes"
            ),
            401 => {
                r.expect_401("INVALID_CREDENTIALS");
                assert!(
                    !(*name == user && *password == pw),
                    "the right password refused"
                );
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(
        busy > 0,
        "48 logins at once with one hashing slot: some must be refused"
    );
    assert!(
        answers.iter().any(|r| r.status != 503),
        "some logins must be judged"
    );
    // The slots are given back: one at a time, every login is judged.
    login_ok(&gw, &user, &pw).await;
    login(&gw, &unique("nobody"), "x")
        .await
        .expect_401("INVALID_CREDENTIALS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_are_checked_at_most_max_failures_times() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.login_max_failures = 5;
    // Enough slots that no attempt is refused for want of one.
    opts.login_max_concurrent_hashes = Some(100);
    let gw = Gateway::start_with(opts).await;
    let user = unique("raced");
    let pw = random_password();
    gw.add_user(&user, &pw, &[]).await;

    let attempts = (0..100)
        .map(|i| (user.clone(), format!("wrong-{i}")))
        .collect();
    let answers = login_burst(&gw, attempts).await;
    let checked = answers.iter().filter(|r| r.status == 401).count();
    for r in &answers {
        match r.status {
            401 => {
                r.expect_401("INVALID_CREDENTIALS");
            }
            429 => {
                r.expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
                assert!(r.header("retry-after").is_some());
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(
        (1..=5).contains(&checked),
        "{checked} of 100 concurrent wrong passwords were checked; max_failures is 5"
    );
    // And the user is locked now, even with the right password.
    login(&gw, &user, &pw)
        .await
        .expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_one_address_for_different_users_have_their_own_threshold() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.login_max_failures = 5;
    opts.login_address_max_failures = 50; // the default
    let gw = Gateway::start_with(opts).await;
    let sixth = unique("sixth");
    let pw = random_password();
    gw.add_user(&sixth, &pw, &[]).await;

    // Five users behind one address (a NAT, a demo) each get one wrong.
    for _ in 0..5 {
        login(&gw, &unique("colleague"), "typo")
            .await
            .expect_401("INVALID_CREDENTIALS");
    }
    login_ok(&gw, &sixth, &pw).await;
    // The address still has its own limit: 50 failures lock it.
    for _ in 5..50 {
        login(&gw, &unique("sprayed"), "guess")
            .await
            .expect_401("INVALID_CREDENTIALS");
    }
    login(&gw, &sixth, &pw)
        .await
        .expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_unlock_lifts_a_lockout_on_a_running_gateway() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.login_max_failures = 3;
    opts.login_address_max_failures = 6;
    opts.login_lockout = 300;
    let gw = Gateway::start_with(opts).await;
    let user = unique("locked");
    let pw = random_password();
    gw.add_user(&user, &pw, &[]).await;
    let lock_user = || async {
        for _ in 0..3 {
            login(&gw, &user, "wrong")
                .await
                .expect_401("INVALID_CREDENTIALS");
        }
        login(&gw, &user, &pw)
            .await
            .expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
    };
    let logs_in_within_3s = || async {
        poll_until(Duration::from_secs(3), || async {
            login(&gw, &user, &pw).await.status == 200
        })
        .await
    };

    // By user.
    lock_user().await;
    let out = gw.cli_ok(&["login", "unlock", "--user", &user], None).await;
    assert!(out.contains(&user), "{out}");
    assert!(logs_in_within_3s().await, "unlocked user still refused");

    // By address: other names' failures lock 127.0.0.1 for everyone (the
    // address kept the three failures above).
    let mut locked = false;
    for _ in 0..6 {
        if login(&gw, &unique("sprayed"), "guess").await.status == 429 {
            locked = true;
            break;
        }
    }
    assert!(locked, "address_max_failures = 6 never tripped");
    login(&gw, &user, &pw)
        .await
        .expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
    gw.cli_ok(&["login", "unlock", "--address", "127.0.0.1"], None)
        .await;
    assert!(logs_in_within_3s().await, "unlocked address still refused");

    // Neither: everything.
    lock_user().await;
    gw.cli_ok(&["login", "unlock"], None).await;
    assert!(logs_in_within_3s().await, "unlock of all left the lockout");

    // Bad input: one line, non-zero, nothing changed.
    for args in [
        &["login", "unlock", "--address", "not-an-ip"][..],
        &["login", "unlock", "--user", "bad name"][..],
    ] {
        let out = gw.cli(args, None).await;
        assert!(!out.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
}
