//! Run a scenario full of secrets with debug logging, then search everything
//! the gateway (and the CLI) wrote for them.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_log_holds_none_of_the_secrets() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::start(&upstream).await;
    gw.cli_debug_logs(true);
    let user = unique("sec");
    let pw = random_password();
    let wrong_pw = random_password();
    gw.add_user(&user, &pw, &["ops"]).await;
    let new_pw = random_password();

    let mut secrets: Vec<(String, String)> = vec![
        ("password".into(), pw.clone()),
        ("wrong password".into(), wrong_pw.clone()),
        ("new password".into(), new_pw.clone()),
        (
            "JWT secret".into(),
            String::from_utf8(gw.secret().to_vec()).unwrap(),
        ),
    ];

    // Logins, right and wrong, and a wrong one for an unknown user.
    let jwt = login_ok(&gw, &user, &pw).await;
    login(&gw, &user, &wrong_pw)
        .await
        .expect_401("INVALID_CREDENTIALS");
    login(&gw, &unique("nobody"), &wrong_pw)
        .await
        .expect_401("INVALID_CREDENTIALS");
    let cli_jwt = gw.issue_token(&user).await;
    secrets.push(("login JWT".into(), jwt.clone()));
    secrets.push(("CLI JWT".into(), cli_jwt.clone()));

    // The JWT in every position, also with other query parameters around it.
    get(&gw.url("/a?x=1"), Some(&jwt), &[])
        .await
        .expect_status(200);
    get(&gw.url(&format!("/b?x=1&token={jwt}&y=2")), None, &[])
        .await
        .expect_status(200);
    get(&gw.url("/c"), None, &[("cookie", &format!("token={jwt}"))])
        .await
        .expect_status(200);

    // Bad tokens are secrets too: a forged one in the query string.
    let forged = sign_hs256(&jwt_claims(&jwt), b"some-other-secret-of-32-bytes!!!");
    get(&gw.url(&format!("/d?token={forged}")), None, &[])
        .await
        .expect_invalid_token();
    secrets.push(("forged JWT".into(), forged));

    // Access keys over HTTP and the CLI, used, listed, and a random one.
    let r = post_json(
        &gw.url("/v1.0/accesskeys"),
        Some(&jwt),
        &json!({ "name": "n", "detail": "d", "expire": 3600 }),
    )
    .await;
    r.expect_status(200);
    let http_key = r.json()["token"].as_str().unwrap().to_string();
    let (_id, cli_key) = gw.create_key_cli(&user, &[]).await;
    for k in [&http_key, &cli_key] {
        get(&gw.url(&format!("/e?accesskey={k}&z=9")), None, &[])
            .await
            .expect_status(200);
        get(
            &gw.url("/f"),
            None,
            &[("cookie", &format!("accesskey={k}"))],
        )
        .await
        .expect_status(200);
        get(
            &gw.url(&format!("/v1.0/accesskeys?accesskey={k}")),
            None,
            &[],
        )
        .await
        .expect_status(200);
    }
    let random_key = format!("ag_{}", random_secret_text());
    get(&gw.url(&format!("/g?accesskey={random_key}")), None, &[])
        .await
        .expect_401("INVALID_CREDENTIALS");
    secrets.push(("HTTP access key".into(), http_key.clone()));
    secrets.push(("CLI access key".into(), cli_key.clone()));
    secrets.push(("random access key".into(), random_key));

    // One-time keys: a right and a wrong answer.
    let otk = |user: String| {
        let url = gw.url("/auth/onetimekey");
        async move {
            let r = post_json(&url, None, &json!({ "username": user })).await;
            r.expect_status(200);
            r.json()["key"].as_str().unwrap().to_string()
        }
    };
    let k1 = otk(user.clone()).await;
    let a1 = otk_answer(&k1, &user, "voximplant.com", &pw);
    let r = post_json(
        &gw.url("/auth/onetimekey/login"),
        None,
        &json!({ "username": user, "key": k1, "token": a1 }),
    )
    .await;
    r.expect_status(200);
    let otk_jwt = r.json()["token"].as_str().unwrap().to_string();
    let k2 = otk(user.clone()).await;
    let a2 = otk_answer(&k2, &user, "voximplant.com", &wrong_pw);
    post_json(
        &gw.url("/auth/onetimekey/login"),
        None,
        &json!({ "username": user, "key": k2, "token": a2 }),
    )
    .await
    .expect_401("INVALID_CREDENTIALS");
    let ha1 = md5_hex(&format!("{user}:voximplant.com:{pw}"));
    secrets.push(("one-time key".into(), k1));
    secrets.push(("one-time answer".into(), a1));
    secrets.push(("one-time key (wrong)".into(), k2));
    secrets.push(("one-time answer (wrong)".into(), a2));
    secrets.push(("one-time JWT".into(), otk_jwt.clone()));
    secrets.push(("HA1".into(), ha1));

    // Logout, then the revoked token again; a password change.
    post_json(&gw.url("/auth/logout"), Some(&otk_jwt), &json!({}))
        .await
        .expect_status(200);
    get(&gw.url("/h"), Some(&otk_jwt), &[])
        .await
        .expect_invalid_token();
    gw.cli_ok(
        &["user", "passwd", &user, "--password-stdin"],
        Some(&format!("{new_pw}\n")),
    )
    .await;
    // Everything the gateway will ever write: stop it and read its
    // output to the end (anything logged late, on drain or exit, too).
    let status = gw.stop(std::time::Duration::from_secs(30)).await;
    assert!(status.success(), "exit after SIGTERM: {status}");

    let gateway_log = gw.logs();
    let cli_log = gw.cli_logs();
    assert!(
        gateway_log.contains("listening on http://"),
        "the log was captured"
    );
    assert!(
        gateway_log.contains("all connections closed"),
        "the log was read to its end (the gateway's last line)"
    );
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        // The whole secret, and for JWTs the signature alone.
        let mut needles = vec![secret.clone()];
        if secret.matches('.').count() == 2 {
            let sig = secret.rsplit('.').next().unwrap();
            if sig.len() >= 16 {
                needles.push(sig.to_string());
            }
        }
        if let Some(rest) = secret.strip_prefix("ag_") {
            // The prefix (first 11 characters) may be shown; the rest not.
            needles.push(rest[8..].to_string());
        }
        for needle in needles {
            for (source, log) in [("gateway log", &gateway_log), ("CLI stderr", &cli_log)] {
                for line in log.lines().filter(|l| l.contains(&needle)).take(2) {
                    let shown: String = line.chars().take(400).collect();
                    leaks.push(format!("{what} in the {source}: {shown}"));
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} secret(s) leaked:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

/// Tokens and keys in places no credential rule reads (path parameters,
/// odd parameter names, any parameter, path segments) are redacted by
/// shape in the JSON access log, as recognised parameters are by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_redacts_token_shapes_in_every_placement() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    gw.spawn_with_prelude("export AUTHGATE_LOG_FORMAT=json")
        .await;
    let user = unique("odd");
    gw.add_user(&user, &random_password(), &[]).await;
    let jwt = gw.issue_token(&user).await;
    let (_id, key) = gw.create_key_cli(&user, &[]).await;
    let forged = sign_hs256(&jwt_claims(&jwt), b"some-other-secret-of-32-bytes!!!");
    let unsigned = unsigned_token("none", &jwt_claims(&jwt));
    let stray_key = format!("ag_{}", random_secret_text());

    let mut targets = Vec::new();
    for token in [&jwt, &forged] {
        for place in [
            "/x;token={}",
            "/public/x;token={}/more",
            "/x?token+={}",
            "/x?a=1&token%20={}",
            "/x?x={}",
            "/x?TOKEN={}",
            "/x?to%6Ben={}",
            "/x?access_token={}",
            "/seg/{}/y",
            "/public/{}",
            "/x?note=Bearer%20{}",
        ] {
            targets.push(place.replace("{}", token));
        }
    }
    for k in [&key, &stray_key] {
        for place in [
            "/x;accesskey={}",
            "/x?k={}",
            "/x?accesskey+={}",
            "/seg/{}",
            "/public/{}/y",
        ] {
            targets.push(place.replace("{}", k));
        }
    }
    targets.push(format!("/u/{unsigned}"));
    for target in &targets {
        // Status does not matter (some are 400 or 401); the log line does.
        let _ = get(&gw.url(target), Some(&jwt), &[]).await;
    }
    let expected = targets.len();
    assert!(
        poll_until(std::time::Duration::from_secs(5), || {
            let n = gw
                .logs()
                .lines()
                .filter(|l| l.contains("\"access\"") && l.contains("REDACTED"))
                .count();
            async move { n >= expected }
        })
        .await,
        "every request has a redacted JSON access line:\n{}",
        gw.logs()
    );

    let log = gw.logs();
    assert!(log.lines().any(|l| l.starts_with('{')), "the log is JSON");
    let mut leaks = Vec::new();
    for secret in [&jwt, &forged, &unsigned, &key, &stray_key] {
        let mut needles = vec![secret.clone()];
        if let Some(rest) = secret.strip_prefix("ag_") {
            needles.push(rest[8..].to_string());
        } else {
            let mut parts = secret.split('.');
            let _header = parts.next();
            needles.extend(parts.filter(|p| p.len() >= 16).map(str::to_owned));
        }
        for needle in needles {
            for line in log.lines().filter(|l| l.contains(&needle)).take(2) {
                leaks.push(line.chars().take(400).collect::<String>());
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leak(s):\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}
