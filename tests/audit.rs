//! The audit log through its surface: events written by the API and the
//! CLI, `GET /v1.0/audit` and `authgate audit`, bad queries, no secret in
//! any row, and nothing queued lost on a clean shutdown. (Two replicas
//! writing one log: tests/replicas.rs.)

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// How long the writer task may take to store what was queued.
const WRITTEN_WITHIN: Duration = Duration::from_secs(5);

/// Every row of `GET /v1.0/audit?QUERY`, following `next_page_token`.
async fn api_rows(gw: &Gateway, token: &str, query: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut page_token = String::new();
    loop {
        let r = get(
            &gw.url(&format!("/v1.0/audit?{query}&page_token={page_token}")),
            Some(token),
            &[],
        )
        .await;
        r.expect_status(200);
        let body = r.json();
        rows.extend(body["result"].as_array().expect("result").iter().cloned());
        page_token = body["next_page_token"].as_str().expect("token").to_owned();
        if page_token.is_empty() {
            return rows;
        }
    }
}

/// Polls the API until `want` events named `event` are listed.
async fn wait_for_event(gw: &Gateway, token: &str, event: &str, want: usize) -> bool {
    poll_until(WRITTEN_WITHIN, || async {
        api_rows(gw, token, "page_size=100")
            .await
            .iter()
            .filter(|row| row["event"] == event)
            .count()
            >= want
    })
    .await
}

fn find<'a>(rows: &'a [Value], event: &str, target: &str) -> Option<&'a Value> {
    rows.iter()
        .find(|row| row["event"] == event && row["target"] == target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_recorded_listed_and_holds_no_secret() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.login_max_failures = 2;
    let gw = Gateway::start_with(opts).await;
    let admin_pw = random_password();
    let pw = random_password();
    let new_pw = random_password();
    let wrong_pw = random_password();
    gw.add_user("root", &admin_pw, &["admin"]).await;
    gw.add_user("alice", &pw, &[]).await;
    gw.add_user("mallory", &random_password(), &[]).await;
    let mut secrets = vec![
        admin_pw.clone(),
        pw.clone(),
        new_pw.clone(),
        wrong_pw.clone(),
    ];

    // Logins: right, wrong, and two wrong ones that lock mallory out.
    let admin = login_ok(&gw, "root", &admin_pw).await;
    let jwt = login_ok(&gw, "alice", &pw).await;
    login(&gw, "alice", &wrong_pw)
        .await
        .expect_401("INVALID_CREDENTIALS");
    for _ in 0..2 {
        login(&gw, "mallory", &wrong_pw)
            .await
            .expect_401("INVALID_CREDENTIALS");
    }
    secrets.extend([admin.clone(), jwt.clone()]);

    // A one-time-key login.
    let r = post_json(
        &gw.url("/auth/onetimekey"),
        None,
        &json!({"username": "alice"}),
    )
    .await;
    r.expect_status(200);
    let otk = r.json()["key"].as_str().unwrap().to_owned();
    let answer = otk_answer(&otk, "alice", "voximplant.com", &pw);
    let r = post_json(
        &gw.url("/auth/onetimekey/login"),
        None,
        &json!({"username": "alice", "key": otk, "token": answer}),
    )
    .await;
    r.expect_status(200);
    let otk_jwt = r.json()["token"].as_str().unwrap().to_owned();
    secrets.extend([otk, answer, otk_jwt.clone()]);

    // Keys over the API: created, rerolled, disabled, enabled, revoked by
    // value; another deleted by id.
    let created = post_json(
        &gw.url("/v1.0/accesskeys"),
        Some(&jwt),
        &json!({"name": "k", "expire": 3600}),
    )
    .await;
    created.expect_status(200);
    let key_id = created.json()["id"].as_str().unwrap().to_owned();
    let first_secret = created.json()["token"].as_str().unwrap().to_owned();
    let rerolled = post_json(
        &gw.url(&format!("/v1.0/accesskeys/{key_id}/reroll")),
        Some(&jwt),
        &json!({"grace": 60}),
    )
    .await;
    rerolled.expect_status(200);
    let second_secret = rerolled.json()["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {jwt}");
    for enabled in [false, true] {
        request(
            "PUT",
            &gw.url(&format!("/v1.0/accesskeys/{key_id}")),
            &[("authorization", &bearer)],
            Some(&json!({"enabled": enabled})),
        )
        .await
        .expect_status(200);
    }
    let revoked = post_json(
        &gw.url("/v1.0/accesskeys/revoke"),
        None,
        &json!({"token": second_secret}),
    )
    .await;
    revoked.expect_status(200);
    assert_eq!(revoked.json()["revoked"], true);
    let other = post_json(
        &gw.url("/v1.0/accesskeys"),
        Some(&jwt),
        &json!({"name": "other", "expire": 3600}),
    )
    .await;
    let other_id = other.json()["id"].as_str().unwrap().to_owned();
    secrets.extend([
        first_secret,
        second_secret,
        other.json()["token"].as_str().unwrap().to_owned(),
    ]);
    request(
        "DELETE",
        &gw.url(&format!("/v1.0/accesskeys/{other_id}")),
        &[("authorization", &bearer)],
        None,
    )
    .await
    .expect_status(200);

    // A logout (before the password change, which revokes the token).
    post_json(&gw.url("/auth/logout"), Some(&otk_jwt), &json!({}))
        .await
        .expect_status(200);

    // The CLI: a key created and rerolled, a password changed, a user
    // removed, mallory unlocked.
    let (cli_id, cli_key) = gw.create_key_cli("alice", &[]).await;
    let out = gw
        .cli_ok(&["key", "reroll", &cli_id, "--grace", "0"], None)
        .await;
    let (_, cli_rerolled) = parse_key_create(&out);
    secrets.extend([cli_key, cli_rerolled]);
    gw.cli_ok(
        &["user", "passwd", "alice", "--password-stdin"],
        Some(&format!("{new_pw}\n")),
    )
    .await;
    gw.cli_ok(&["login", "unlock", "--user", "mallory"], None)
        .await;
    gw.cli_ok(&["user", "remove", "mallory"], None).await;

    // A reload.
    gw.sighup();
    assert!(
        gw.wait_for_log("configuration reloaded", 1, WRITTEN_WITHIN)
            .await
    );
    assert!(wait_for_event(&gw, &admin, "config_reloaded", 1).await);
    assert!(wait_for_event(&gw, &admin, "logout", 1).await);

    let rows = api_rows(&gw, &admin, "page_size=7").await;
    let expect = [
        ("user_added", "root"),
        ("user_added", "alice"),
        ("login", "root"),
        ("login", "alice"),
        ("login_failed", "alice"),
        ("login_failed", "mallory"),
        ("lockout", "mallory"),
        ("onetimekey_login", "alice"),
        ("key_created", key_id.as_str()),
        ("key_rerolled", key_id.as_str()),
        ("key_disabled", key_id.as_str()),
        ("key_enabled", key_id.as_str()),
        ("key_revoked_by_value", key_id.as_str()),
        ("key_deleted", other_id.as_str()),
        ("key_created", cli_id.as_str()),
        ("key_rerolled", cli_id.as_str()),
        ("password_changed", "alice"),
        ("unlock", "mallory"),
        ("user_removed", "mallory"),
        ("logout", "alice"),
        ("config_reloaded", ""),
    ];
    for (event, target) in expect {
        assert!(
            find(&rows, event, target).is_some(),
            "no {event} on {target:?} in {rows:#?}"
        );
    }
    // Newest first, one RFC 3339 time each.
    let times: Vec<&str> = rows.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert!(times.iter().all(|t| is_rfc3339_utc(t)), "{times:?}");
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(rows[0]["event"], "config_reloaded");
    // Who acted, from where, in which request.
    let login_row = find(&rows, "login", "alice").unwrap();
    assert_eq!(login_row["user"], "alice");
    assert_eq!(login_row["provider"], "local");
    assert_eq!(login_row["address"], "127.0.0.1");
    assert!(!login_row["request_id"].as_str().unwrap().is_empty());
    let created_row = find(&rows, "key_created", &key_id).unwrap();
    assert_eq!(created_row["user"], "alice");
    let failed = find(&rows, "login_failed", "alice").unwrap();
    assert_eq!(failed["user"], "", "an anonymous caller");
    let cli_row = find(&rows, "key_created", &cli_id).unwrap();
    assert_eq!(
        (&cli_row["user"], &cli_row["address"]),
        (&json!(""), &json!(""))
    );

    // `user`: acted or acted on; `since`: inclusive.
    let alice = api_rows(&gw, &admin, "user=alice").await;
    assert!(
        alice
            .iter()
            .all(|r| r["user"] == "alice" || r["target"] == "alice")
    );
    assert!(find(&alice, "password_changed", "alice").is_some());
    assert!(find(&alice, "key_created", &key_id).is_some(), "acted");
    // Events are stored to the second, and a fast run puts them all in one:
    // the newest second includes the newest event, the second after it none.
    let newest = rows[0]["time"].as_str().unwrap();
    let since = api_rows(&gw, &admin, &format!("since={newest}")).await;
    assert!(
        !since.is_empty() && since.iter().all(|r| r["time"].as_str() >= Some(newest)),
        "{since:?}"
    );
    assert!(since.iter().any(|r| r == &rows[0]), "since is inclusive");
    let after = time::OffsetDateTime::parse(newest, &time::format_description::well_known::Rfc3339)
        .unwrap()
        + time::Duration::seconds(1);
    let after = after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let later = api_rows(&gw, &admin, &format!("since={after}")).await;
    assert!(later.is_empty(), "{later:?}");

    // The CLI lists the same, as text and as JSON lines.
    let text = gw.cli_ok(&["audit"], None).await;
    let json_lines = gw.cli_ok(&["audit", "--json"], None).await;
    let cli_rows: Vec<Value> = json_lines
        .lines()
        .map(|line| serde_json::from_str(line).expect("one object per line"))
        .collect();
    assert_eq!(cli_rows.len(), rows.len());
    assert_eq!(cli_rows[0]["event"], "config_reloaded");
    assert!(text.starts_with("TIME\tEVENT\tPROVIDER\tUSER\tTARGET\tADDRESS\tREQUEST_ID\n"));
    assert_eq!(text.lines().count(), rows.len() + 1);
    let mallory = gw
        .cli_ok(&["audit", "--user", "mallory", "--json"], None)
        .await;
    assert!(
        mallory.lines().all(|l| l.contains("\"mallory\"")),
        "{mallory}"
    );
    // Added, two failures, locked out, unlocked, removed.
    assert_eq!(mallory.lines().count(), 6, "{mallory}");
    let since = gw
        .cli_ok(&["audit", "--since", newest, "--json"], None)
        .await;
    assert!(since.lines().count() >= 1);
    let later = gw
        .cli_ok(&["audit", "--since", &after, "--json"], None)
        .await;
    assert_eq!(later.lines().count(), 0, "{later}");

    // No secret anywhere: not a password, token, key or one-time key.
    let api_text = serde_json::to_string(&rows).unwrap();
    let mut leaks = Vec::new();
    for secret in &secrets {
        let mut needles = vec![secret.clone()];
        if let Some(rest) = secret.strip_prefix("ag_") {
            // The prefix may be shown; the rest not.
            needles.push(rest[8..].to_owned());
        }
        for needle in needles {
            for (source, text) in [
                ("API", &api_text),
                ("CLI", &text),
                ("CLI JSON", &json_lines),
            ] {
                if text.contains(&needle) {
                    leaks.push(format!("{source}: {needle}"));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "secrets in the audit log: {leaks:?}");
}

#[tokio::test]
async fn bad_queries_and_callers_are_refused() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    gw.add_user("root", "root-password", &["admin"]).await;
    gw.add_user("bob", "bob-password", &[]).await;
    let admin = login_ok(&gw, "root", "root-password").await;
    let bob = login_ok(&gw, "bob", "bob-password").await;

    get(&gw.url("/v1.0/audit"), Some(&bob), &[])
        .await
        .expect_error(403, "PERMISSION_DENIED", "MISSING_ROLE");
    get(&gw.url("/v1.0/audit"), None, &[])
        .await
        .expect_401("AUTHENTICATION_REQUIRED");
    for bad in [
        "since=yesterday",
        "since=2026-13-01T00:00:00Z",
        "page_token=garbage!",
        "page_token=aGVsbG8",
        "page_size=0",
        "page_size=101",
        "page_size=-3",
        "user=a%0Ab",
    ] {
        let r = get(&gw.url(&format!("/v1.0/audit?{bad}")), Some(&admin), &[]).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT", "{bad}");
    }
    request("POST", &gw.url("/v1.0/audit"), &[], None)
        .await
        .expect_status(405);
    // The CLI refuses a bad --since with one line.
    let out = gw.cli(&["audit", "--since", "last week"], None).await;
    assert!(!out.status.success());
    assert!(out_text(&out).contains("--since"), "{}", out_text(&out));

    // Pages of two walk every event once.
    for i in 0..3 {
        login(&gw, "bob", &format!("wrong-{i}")).await;
    }
    assert!(wait_for_event(&gw, &admin, "login_failed", 3).await);
    let all = api_rows(&gw, &admin, "page_size=100").await;
    let paged = api_rows(&gw, &admin, "page_size=2").await;
    assert_eq!(all, paged);
    assert!(all.len() >= 7, "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_at_a_clean_shutdown_are_stored() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::start(&upstream).await;
    // Failed one-time-key logins: an event each, no password hash. SIGTERM
    // comes while most are in flight: every one answered must be stored.
    const N: usize = 1000;
    let url = gw.url("/auth/onetimekey/login");
    let (answered_tx, mut answered_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut sent = Vec::new();
    for i in 0..N {
        let (url, answered) = (url.clone(), answered_tx.clone());
        sent.push(tokio::spawn(async move {
            let body = json!({"username": format!("u{i}"), "key": "k", "token": "t"});
            let status = client()
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok();
            let _ = answered.send(());
            status
        }));
    }
    for _ in 0..20 {
        answered_rx.recv().await;
    }
    gw.sigterm();
    let mut failed_logins = 0;
    for answer in sent {
        match answer.await.unwrap() {
            Some(401) => failed_logins += 1,
            Some(other) => panic!("answered {other}"),
            None => {}
        }
    }
    let status = gw.wait_exit(Duration::from_secs(20)).await.expect("exited");
    assert!(status.success(), "{status}\n{}", gw.logs());
    assert!(failed_logins >= 20, "{failed_logins}");
    let listed = gw.cli_ok(&["audit", "--json"], None).await;
    let stored = listed
        .lines()
        .filter(|l| l.contains("\"onetimekey_login_failed\""))
        .count();
    assert_eq!(stored, failed_logins, "{}", gw.logs());
}

#[tokio::test]
async fn check_config_refuses_a_keep_days_of_zero_or_less() {
    for bad in ["0", "-1"] {
        let mut opts = GatewayOptions::new("http://127.0.0.1:9");
        opts.extra_toml = format!("[audit]\nkeep_days = {bad}\n");
        let gw = Gateway::prepare(opts);
        let out = gw.cli(&["check-config"], None).await;
        assert!(!out.status.success(), "keep_days = {bad}");
        assert!(
            out_text(&out).contains("audit.keep_days"),
            "{}",
            out_text(&out)
        );
    }
}

#[tokio::test]
async fn events_older_than_keep_days_are_purged() {
    use sqlx::Connection;
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = "[audit]\nkeep_days = 2\n".into();
    let mut gw = Gateway::prepare(opts);
    // The store made (and migrated) by the CLI, then two rows written
    // straight into it: three days old and one day old.
    gw.add_user("alice", "alice-password", &[]).await;
    let mut db = sqlx::SqliteConnection::connect(&gw.db_url())
        .await
        .expect("open the store");
    for (id, days) in [
        ("00000000-0000-7000-8000-000000000003", 3),
        ("00000000-0000-7000-8000-000000000001", 1),
    ] {
        sqlx::query(
            "INSERT INTO audit_log (id, tm, provider, username, address, event, target, request_id) \
             VALUES ($1, $2, '', '', '', 'user_added', $3, '')",
        )
        .bind(id)
        .bind(now_secs() - days * 86_400)
        .bind(format!("{days}-days-old"))
        .execute(&mut db)
        .await
        .expect("insert");
    }
    db.close().await.expect("close");
    // The purge runs at start, then hourly.
    gw.spawn().await;
    let purged = poll_until(WRITTEN_WITHIN, || async {
        !gw.cli_ok(&["audit"], None).await.contains("3-days-old")
    })
    .await;
    let listed = gw.cli_ok(&["audit"], None).await;
    assert!(purged, "{listed}");
    assert!(listed.contains("1-days-old"), "{listed}");
    assert!(listed.contains("alice"), "{listed}");
}
