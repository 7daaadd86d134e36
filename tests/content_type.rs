//! Login CSRF: the gateway's JSON endpoints take only bodies declared
//! `Content-Type: application/json`. A cross-site HTML form can send
//! `text/plain`, `application/x-www-form-urlencoded` or `multipart/form-data`
//! without a CORS preflight; each of them (and a missing header) is 415
//! `INVALID_ARGUMENT` / `UNSUPPORTED_MEDIA_TYPE` and changes nothing.

mod common;

use common::*;
use serde_json::{Value, json};

const REALM: &str = "voximplant.com";
const KEYS: &str = "/v1.0/accesskeys";

/// Content types an HTML form (or a careless client) sends; `None` is no
/// header at all.
const NOT_JSON: [Option<&str>; 7] = [
    Some("text/plain"),
    Some("text/plain; charset=utf-8"),
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=----x"),
    Some("application/json-seq"),
    Some("text/json"),
    None,
];

/// Sends `body` (JSON text) with `content_type` and optional Bearer.
async fn send(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    bearer: Option<&str>,
    body: &Value,
) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client().request(method, url).body(body.to_string());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    Resp::from(req.send().await.expect("send")).await
}

fn expect_415(r: &Resp, what: &str) {
    assert_eq!(r.status, 415, "{what}: {}", r.text());
    r.expect_error(415, "INVALID_ARGUMENT", "UNSUPPORTED_MEDIA_TYPE");
    assert!(
        r.header_all("set-cookie").is_empty(),
        "{what}: a refused request sets no cookie"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_needs_application_json() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("csrf");
    let pw = random_password();
    gw.add_user(&user, &pw, &[]).await;
    let body = json!({ "username": user, "password": pw });
    for ct in NOT_JSON {
        let r = send("POST", &gw.url("/auth/login"), ct, None, &body).await;
        expect_415(&r, &format!("login with {ct:?}"));
        assert!(
            !r.text().contains("\"token\""),
            "no token for {ct:?}: {}",
            r.text()
        );
    }
    // JSON with parameters, in any case, still logs in.
    for ct in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/json;charset=UTF-8",
    ] {
        let r = send("POST", &gw.url("/auth/login"), Some(ct), None, &body).await;
        r.expect_status(200);
        assert!(r.json()["token"].is_string(), "{ct}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onetimekey_endpoints_need_application_json() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("csrf");
    let pw = random_password();
    gw.add_user(&user, &pw, &[]).await;

    for ct in NOT_JSON {
        let r = send(
            "POST",
            &gw.url("/auth/onetimekey"),
            ct,
            None,
            &json!({ "username": user }),
        )
        .await;
        expect_415(&r, &format!("onetimekey with {ct:?}"));
        assert!(!r.text().contains("\"key\""), "{}", r.text());
    }

    let r = post_json(
        &gw.url("/auth/onetimekey"),
        None,
        &json!({ "username": user }),
    )
    .await;
    r.expect_status(200);
    let key = r.json()["key"].as_str().expect("key").to_owned();
    let answer = otk_answer(&key, &user, REALM, &pw);
    let body = json!({ "username": user, "key": key, "token": answer });
    for ct in NOT_JSON {
        let r = send("POST", &gw.url("/auth/onetimekey/login"), ct, None, &body).await;
        expect_415(&r, &format!("onetimekey/login with {ct:?}"));
    }
    // The refused attempts did not consume the key: it still works once.
    let r = send(
        "POST",
        &gw.url("/auth/onetimekey/login"),
        Some("application/json; charset=utf-8"),
        None,
        &body,
    )
    .await;
    r.expect_status(200);
    assert!(r.json()["token"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accesskey_writes_need_application_json() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("csrf");
    gw.add_user(&user, &random_password(), &[]).await;
    let jwt = gw.issue_token(&user).await;

    let create = json!({ "name": "form", "detail": "d", "expire": 3600 });
    for ct in NOT_JSON {
        let r = send("POST", &gw.url(KEYS), ct, Some(&jwt), &create).await;
        expect_415(&r, &format!("create with {ct:?}"));
    }
    let listed = get(&gw.url(KEYS), Some(&jwt), &[]).await;
    listed.expect_status(200);
    assert_eq!(
        listed.json()["result"].as_array().map(Vec::len),
        Some(0),
        "no key was created: {}",
        listed.text()
    );

    let r = post_json(&gw.url(KEYS), Some(&jwt), &create).await;
    r.expect_status(200);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let path = format!("{KEYS}/{id}");
    let rename = json!({ "name": "renamed", "detail": "changed" });
    for ct in NOT_JSON {
        let r = send("PUT", &gw.url(&path), ct, Some(&jwt), &rename).await;
        expect_415(&r, &format!("update with {ct:?}"));
    }
    let r = get(&gw.url(&path), Some(&jwt), &[]).await;
    r.expect_status(200);
    assert_eq!(r.json()["name"], "form", "name unchanged: {}", r.text());
    assert_eq!(r.json()["detail"], "d");
    // Control: JSON renames it.
    send(
        "PUT",
        &gw.url(&path),
        Some("application/json"),
        Some(&jwt),
        &rename,
    )
    .await
    .expect_status(200);
}

/// A bodyless POST such as `/auth/logout` needs no Content-Type: there is no
/// body to declare, and the JWT it revokes cannot come from a cross-site
/// form (the `token` cookie is SameSite=Strict).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodyless_logout_needs_no_content_type() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("csrf");
    let pw = random_password();
    gw.add_user(&user, &pw, &[]).await;
    let token = login_ok(&gw, &user, &pw).await;
    request(
        "POST",
        &gw.url("/auth/logout"),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await
    .expect_status(200);
    get(&gw.url("/after-logout"), Some(&token), &[])
        .await
        .expect_invalid_token();
}
