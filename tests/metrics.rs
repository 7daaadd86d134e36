//! `/metrics` in the Prometheus text format, and JSON access logs.

mod common;

use std::time::Duration;

use common::*;

/// The value of the first sample line that starts with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_outcome_logins_upstream_errors_cache_and_reloads() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.routes
        .push(RouteSpec::required("/down", &closed_port_url()));
    let gw = Gateway::start_with(opts).await;
    gw.add_user("alice", "alice-password", &[]).await;

    let token = login_ok(&gw, "alice", "alice-password").await;
    login(&gw, "alice", "wrong-password")
        .await
        .expect_status(401);
    for _ in 0..3 {
        get(&gw.url("/data"), Some(&token), &[])
            .await
            .expect_status(200);
    }
    get(&gw.url("/data"), None, &[]).await.expect_status(401);
    // A key the cache has never seen: a miss, then a negative entry.
    let unknown_key = format!("ag_{}", "A".repeat(43));
    get(
        &gw.url(&format!("/data?accesskey={unknown_key}")),
        None,
        &[],
    )
    .await
    .expect_status(401);
    get(&gw.url("/public/x"), None, &[])
        .await
        .expect_status(200);
    get(&gw.url("/down/x"), Some(&token), &[])
        .await
        .expect_status(502);
    gw.sighup();
    let reloaded = poll_until(Duration::from_secs(10), || async {
        gw.logs().contains("configuration reloaded")
    })
    .await;
    assert!(reloaded, "no reload logged:\n{}", gw.logs());

    let response = get(&gw.url("/metrics"), None, &[]).await;
    response.expect_status(200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "content type"
    );
    let text = response.text();
    let at_least = |prefix: &str, min: f64| {
        let value = sample(&text, prefix).unwrap_or_else(|| panic!("no sample {prefix}\n{text}"));
        assert!(
            value >= min,
            "{prefix} = {value}, expected at least {min}\n{text}"
        );
    };
    at_least(
        r#"authgate_requests_total{route="/",outcome="authenticated",reason=""}"#,
        3.0,
    );
    at_least(
        r#"authgate_requests_total{route="/",outcome="rejected",reason="AUTHENTICATION_REQUIRED"}"#,
        1.0,
    );
    at_least(
        r#"authgate_requests_total{route="/public",outcome="public",reason=""}"#,
        1.0,
    );
    at_least(
        r#"authgate_requests_total{route="/down",outcome="rejected",reason="UPSTREAM_UNREACHABLE"}"#,
        1.0,
    );
    at_least(r#"authgate_upstream_errors_total{kind="unreachable"}"#, 1.0);
    at_least(
        r#"authgate_login_attempts_total{kind="password",result="success"}"#,
        1.0,
    );
    at_least(
        r#"authgate_login_attempts_total{kind="password",result="failure"}"#,
        1.0,
    );
    at_least("authgate_request_duration_seconds_count", 7.0);
    at_least(
        r#"authgate_request_duration_seconds_bucket{le="+Inf"}"#,
        7.0,
    );
    at_least("authgate_upstream_duration_seconds_count", 4.0);
    // Login filled the user cache, so every JWT request hits it; the
    // unknown key missed.
    at_least("authgate_cache_hits_total", 4.0);
    at_least("authgate_cache_misses_total", 1.0);
    at_least("authgate_open_connections", 1.0);
    at_least("authgate_config_reloads_total", 1.0);
    assert!(!text.contains(&token), "metrics never carry credentials");
}

#[tokio::test]
async fn json_logs_have_one_access_line_per_request_without_secrets() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    gw.spawn_with_prelude("export AUTHGATE_LOG_FORMAT=json AUTHGATE_LOG=info")
        .await;
    gw.add_user("bob", "bob-password", &["ops"]).await;
    let token = login_ok(&gw, "bob", "bob-password").await;
    get(
        &gw.url(&format!("/data?token={token}&x=1")),
        None,
        &[("x-request-id", "req-json-1")],
    )
    .await
    .expect_status(200);

    let found = poll_until(Duration::from_secs(5), || async {
        gw.logs().contains("req-json-1")
    })
    .await;
    assert!(found, "no access line:\n{}", gw.logs());
    let logs = gw.logs();
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .filter(|entry: &serde_json::Value| entry["fields"]["message"] == "access")
        .filter(|entry| entry["span"]["request.id"] == "req-json-1")
        .collect();
    assert_eq!(access.len(), 1, "one access line per request:\n{logs}");
    let line = &access[0];
    assert_eq!(line["fields"]["http.status"], 200);
    assert!(line["fields"]["latency_ms"].is_number());
    assert_eq!(line["span"]["route"], "/");
    assert_eq!(line["span"]["auth.method"], "jwt");
    assert_eq!(line["span"]["auth.user"], "bob");
    assert_eq!(line["span"]["http.target"], "/data?token=REDACTED&x=1");
    assert!(!logs.contains(&token), "the token reached the log");
    assert!(
        !logs.contains("bob-password"),
        "the password reached the log"
    );
}

/// The `admin endpoints ... on http://ADDR` address from the log.
fn admin_addr(log: &str) -> Option<std::net::SocketAddr> {
    let line = log.lines().find(|l| l.contains("admin endpoints"))?;
    let rest = &line[line.find("http://")? + "http://".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | ':')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// With `server.admin_listen`, `/metrics`, `/healthz` and `/readyz` are
/// served there and nothing else is; `/metrics` is 404 on the public
/// listener, where the health checks stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listen_serves_metrics_and_health_only() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    let text = gw.render_config(gw.options());
    assert!(text.contains("[server]\n"), "{text}");
    gw.write_config(&text.replacen(
        "[server]\n",
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n",
        1,
    ));
    gw.spawn().await;
    let admin = poll_until(Duration::from_secs(10), || {
        let found = admin_addr(&gw.logs()).is_some();
        async move { found }
    })
    .await;
    assert!(admin, "no admin listener logged:\n{}", gw.logs());
    let admin = admin_addr(&gw.logs()).unwrap();
    assert_ne!(admin, gw.addr());
    let admin_url = |path: &str| format!("http://{admin}{path}");

    // The admin listener: the three operations endpoints.
    let metrics = get(&admin_url("/metrics"), None, &[]).await;
    metrics.expect_status(200);
    assert!(
        metrics.text().contains("# TYPE"),
        "Prometheus text: {}",
        metrics.text()
    );
    get(&admin_url("/healthz"), None, &[])
        .await
        .expect_status(200);
    get(&admin_url("/readyz"), None, &[])
        .await
        .expect_status(200);
    // Nothing else: no proxying, no login, no key API, no admin page.
    let user = unique("adm");
    let pw = random_password();
    gw.add_user(&user, &pw, &[]).await;
    let token = gw.issue_token(&user).await;
    for path in [
        "/data",
        "/public/x",
        "/",
        "/v1.0/accesskeys",
        "/_authgate/",
        "/.well-known/jwks.json",
        "/metrics/x",
    ] {
        get(&admin_url(path), Some(&token), &[]).await.expect_error(
            404,
            "NOT_FOUND",
            "RESOURCE_NOT_FOUND",
        );
    }
    post_json(
        &admin_url("/auth/login"),
        None,
        &serde_json::json!({ "username": user, "password": pw }),
    )
    .await
    .expect_error(404, "NOT_FOUND", "RESOURCE_NOT_FOUND");
    assert_eq!(upstream.count(), 0, "the admin listener proxied a request");
    request("POST", &admin_url("/metrics"), &[], None)
        .await
        .expect_status(405);

    // The public listener: no metrics; health checks and the rest as before.
    get(&gw.url("/metrics"), None, &[])
        .await
        .expect_error(404, "NOT_FOUND", "RESOURCE_NOT_FOUND");
    get(&gw.url("/metrics"), Some(&token), &[])
        .await
        .expect_error(404, "NOT_FOUND", "RESOURCE_NOT_FOUND");
    get(&gw.url("/healthz"), None, &[]).await.expect_status(200);
    get(&gw.url("/readyz"), None, &[]).await.expect_status(200);
    get(&gw.url("/data"), Some(&token), &[])
        .await
        .expect_status(200);
    login_ok(&gw, &user, &pw).await;
}

/// `check-config` names an admin address that collides with the public one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listen_on_the_public_address_is_a_config_problem() {
    let gw = Gateway::prepare(GatewayOptions::new("http://127.0.0.1:9"));
    let text = gw.render_config(gw.options());
    let text = text.replace(
        "[server]\n",
        "[server]\nadmin_listen = \"127.0.0.1:18080\"\n",
    );
    let listen_line = text
        .lines()
        .find(|l| l.starts_with("listen = "))
        .expect("listen line")
        .to_owned();
    gw.write_config(&text.replace(&listen_line, "listen = \"127.0.0.1:18080\""));
    let out = gw.cli(&["check-config"], None).await;
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("server.admin_listen: ") && l.contains("server.listen")),
        "{stdout}"
    );
}

/// One access line per request, whatever its end, denials with their reason
/// and the route and caller they were judged for (the request context logs
/// once, at the end).
#[tokio::test]
async fn every_request_has_one_access_line_and_denials_their_reason() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    gw.spawn_with_prelude("export AUTHGATE_LOG_FORMAT=json")
        .await;
    let user = unique("ctx");
    gw.add_user(&user, &random_password(), &[]).await;
    let jwt = gw.issue_token(&user).await;

    let cases: [(&str, Option<&str>, u16, &str, &str); 5] = [
        ("/hello?one", Some(&jwt), 200, "authenticated", ""),
        ("/public/x?two", None, 200, "public", ""),
        (
            "/hello?three",
            None,
            401,
            "rejected",
            "AUTHENTICATION_REQUIRED",
        ),
        ("/admin/x?four", Some(&jwt), 403, "rejected", "MISSING_ROLE"),
        ("/ADMIN/x?five", Some(&jwt), 403, "rejected", "MISSING_ROLE"),
    ];
    for (target, bearer, status, _, _) in &cases {
        get(&gw.url(target), *bearer, &[])
            .await
            .expect_status(*status);
    }
    for (target, _, status, outcome, reason) in &cases {
        let marker = target.split('?').nth(1).unwrap();
        let found = poll_until(std::time::Duration::from_secs(5), || {
            let n = access_lines(&gw.logs(), marker).len();
            async move { n >= 1 }
        })
        .await;
        assert!(found, "no access line for {target}:\n{}", gw.logs());
        let lines = access_lines(&gw.logs(), marker);
        assert_eq!(lines.len(), 1, "one access line for {target}: {lines:?}");
        let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let fields = &line["fields"];
        assert_eq!(fields["http.status"], *status, "{line}");
        assert_eq!(fields["outcome"], *outcome, "{line}");
        assert_eq!(fields["reason"], *reason, "{line}");
        let span = &line["span"];
        // Whoever was authenticated is named, also when then denied.
        if *outcome == "authenticated" || *reason == "MISSING_ROLE" {
            assert_eq!(span["auth.user"], user.as_str(), "{line}");
            assert_eq!(span["auth.method"], "jwt", "{line}");
        } else {
            assert!(span.get("auth.user").is_none(), "{line}");
        }
        if target.starts_with("/admin") || target.starts_with("/ADMIN") {
            assert_eq!(span["route"], "/admin", "{line}");
        }
    }
}

fn access_lines(log: &str, marker: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("\"access\"") && l.contains(marker))
        .map(str::to_string)
        .collect()
}
