//! Access keys: `/v1.0/accesskeys`, use on proxied requests, CLI, revocation,
//! expiry, durability.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const KEYS: &str = "/v1.0/accesskeys";

/// Gateway + upstream + a user (roles given) with a JWT.
async fn setup(roles: &[&str]) -> (Upstream, Gateway, String, String) {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("k");
    gw.add_user(&user, &random_password(), roles).await;
    let jwt = gw.issue_token(&user).await;
    (upstream, gw, user, jwt)
}

fn bearer(jwt: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {jwt}"))
}

async fn call(
    gw: &Gateway,
    method: &str,
    path: &str,
    jwt: Option<&str>,
    body: Option<&Value>,
) -> Resp {
    let auth = jwt.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    request(method, &gw.url(path), &headers, body).await
}

/// `POST /v1.0/accesskeys` with a JWT; returns the created object (with token).
async fn create_key(gw: &Gateway, jwt: &str, name: &str, expire: i64) -> Value {
    let r = call(
        gw,
        "POST",
        KEYS,
        Some(jwt),
        Some(&json!({ "name": name, "detail": format!("detail of {name}"), "expire": expire })),
    )
    .await;
    r.expect_status(200);
    r.json()
}

fn token_of(v: &Value) -> String {
    v["token"]
        .as_str()
        .expect("created key has a token")
        .to_string()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("key has an id").to_string()
}

/// The contract's accesskey object (without the token).
fn assert_shape(v: &Value, user: &str) {
    for k in [
        "id",
        "user",
        "name",
        "detail",
        "token_prefix",
        "tm_expire",
        "tm_create",
        "tm_update",
    ] {
        assert!(v.get(k).is_some(), "accesskey lacks {k}: {v}");
    }
    uuid::Uuid::parse_str(v["id"].as_str().unwrap()).expect("id is a UUID");
    assert_eq!(v["user"], user, "owner: {v}");
    for k in ["tm_expire", "tm_create", "tm_update"] {
        let t = v[k].as_str().unwrap_or_default();
        assert!(is_rfc3339_utc(t), "{k} is RFC 3339 UTC: {t:?}");
    }
    let prefix = v["token_prefix"].as_str().unwrap();
    assert_eq!(prefix.len(), 11, "token_prefix is 11 characters: {prefix}");
    assert!(prefix.starts_with("ag_"));
}

fn assert_no_secret(v: &Value, keys: &[&str]) {
    let text = v.to_string();
    for k in keys {
        assert!(!text.contains(k), "a key leaked in {text}");
        assert!(!text.contains(&k[11..]), "key material leaked in {text}");
    }
    let items: Vec<&Value> = match v.get("result") {
        Some(Value::Array(a)) => a.iter().collect(),
        _ => vec![v],
    };
    for item in items {
        assert!(item.get("token").is_none(), "token field returned: {item}");
    }
}

fn random_key() -> String {
    format!("ag_{}", random_secret_text())
}

async fn use_key_query(gw: &Gateway, key: &str) -> Resp {
    get(&gw.url(&format!("/use?accesskey={key}")), None, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_use_via_query_and_cookie() {
    let (upstream, gw, user, jwt) = setup(&["ops"]).await;
    let created = create_key(&gw, &jwt, "ci", 3600).await;
    assert_shape(&created, &user);
    assert_eq!(created["name"], "ci");
    assert_eq!(created["detail"], "detail of ci");
    let key = token_of(&created);
    let id = id_of(&created);
    assert!(key.starts_with("ag_"), "key format: {key}");
    let body = &key[3..];
    assert!(body.len() >= 32, "at least 32 characters after ag_: {key}");
    assert!(
        body.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        "base64url characters: {key}"
    );
    assert_eq!(created["token_prefix"], &key[..11]);
    let exp = created["tm_expire"].as_str().unwrap();
    assert!(is_rfc3339_utc(exp));

    // Query parameter, between others.
    let r = get(
        &gw.url(&format!("/use/1?x=1&accesskey={key}&y=2")),
        None,
        &[],
    )
    .await;
    r.expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.uri, "/use/1?x=1&y=2");
    assert!(!rec.contains_anywhere(&key), "the key reached the upstream");
    assert_eq!(rec.header_all("x-auth-method"), vec!["accesskey"]);
    assert_eq!(rec.header_all("x-auth-key-id"), vec![id.clone()]);
    assert_eq!(rec.header_all("x-auth-user"), vec![user.clone()]);
    assert_eq!(rec.header_all("x-auth-roles"), vec!["ops"]);

    // Cookie, next to another one.
    let r = get(
        &gw.url("/use/2"),
        None,
        &[("cookie", &format!("theme=dark; accesskey={key}"))],
    )
    .await;
    r.expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.uri, "/use/2");
    assert_eq!(rec.cookies(), vec!["theme=dark"]);
    assert!(!rec.contains_anywhere(&key), "the key reached the upstream");
    assert_eq!(rec.header_all("x-auth-method"), vec!["accesskey"]);
    assert_eq!(rec.header_all("x-auth-key-id"), vec![id.clone()]);

    // Spoofed key id replaced.
    get(
        &gw.url(&format!("/use/3?accesskey={key}")),
        None,
        &[("x-auth-key-id", "spoofed"), ("x-auth-method", "jwt")],
    )
    .await
    .expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.header_all("x-auth-key-id"), vec![id]);
    assert_eq!(rec.header_all("x-auth-method"), vec!["accesskey"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_sets_tm_expire() {
    let (_upstream, gw, _user, jwt) = setup(&[]).await;
    let created = create_key(&gw, &jwt, "exp", 7200).await;
    // tm_expire - tm_create should be the requested 7200 s (± clock rounding).
    let parse = |s: &str| -> i64 {
        // Compare only up to seconds: YYYY-MM-DDTHH:MM:SS.
        let d = &s[..19];
        let (date, time) = d.split_once('T').unwrap();
        let dp: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
        let tp: Vec<i64> = time.split(':').map(|x| x.parse().unwrap()).collect();
        days_from_civil(dp[0], dp[1], dp[2]) * 86400 + tp[0] * 3600 + tp[1] * 60 + tp[2]
    };
    let e = parse(created["tm_expire"].as_str().unwrap());
    let c = parse(created["tm_create"].as_str().unwrap());
    assert!(
        (e - c - 7200).abs() <= 2,
        "tm_expire - tm_create = {}",
        e - c
    );
    assert!(
        (e - (now_secs() + 7200)).abs() <= 60,
        "tm_expire ≈ now + 7200"
    );
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_get_never_return_the_key() {
    let (_upstream, gw, user, jwt) = setup(&[]).await;
    let a = create_key(&gw, &jwt, "a", 3600).await;
    let b = create_key(&gw, &jwt, "b", 3600).await;
    let (ka, kb) = (token_of(&a), token_of(&b));

    let r = call(&gw, "GET", KEYS, Some(&jwt), None).await;
    r.expect_status(200);
    let list = r.json();
    assert_no_secret(&list, &[&ka, &kb]);
    let items = list["result"].as_array().expect("result array");
    assert_eq!(items.len(), 2, "{list}");
    for it in items {
        assert_shape(it, &user);
    }
    assert_eq!(list["next_page_token"], "", "single page: {list}");

    // Reading with an access key works too, and still hides keys.
    let r = get(&gw.url(&format!("{KEYS}?accesskey={ka}")), None, &[]).await;
    r.expect_status(200);
    assert_no_secret(&r.json(), &[&ka, &kb]);
    assert_eq!(r.json()["result"].as_array().unwrap().len(), 2);

    for (obj, key) in [(&a, &ka), (&b, &kb)] {
        let path = format!("{KEYS}/{}", id_of(obj));
        let r = call(&gw, "GET", &path, Some(&jwt), None).await;
        r.expect_status(200);
        let v = r.json();
        assert_shape(&v, &user);
        assert_eq!(v["id"], obj["id"]);
        assert_no_secret(&v, &[key]);
        let r = get(&gw.url(&format!("{path}?accesskey={ka}")), None, &[]).await;
        r.expect_status(200);
        assert_no_secret(&r.json(), &[&ka, &kb]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_key_cannot_create_change_or_delete_keys() {
    let (_upstream, gw, _user, jwt) = setup(&[]).await;
    let k = create_key(&gw, &jwt, "leaky", 3600).await;
    let (key, id) = (token_of(&k), id_of(&k));
    let by_id = format!("{KEYS}/{id}");
    let body = json!({ "name": "x", "detail": "y", "expire": 60 });
    let cookie = format!("accesskey={key}");
    for (method, path, body) in [
        ("POST", KEYS.to_string(), Some(&body)),
        ("PUT", by_id.clone(), Some(&body)),
        ("DELETE", by_id.clone(), None),
    ] {
        let url = gw.url(&format!("{path}?accesskey={key}"));
        request(method, &url, &[], body).await.expect_error(
            403,
            "PERMISSION_DENIED",
            "ACCESSKEY_NOT_ALLOWED",
        );
        request(method, &gw.url(&path), &[("cookie", &cookie)], body)
            .await
            .expect_error(403, "PERMISSION_DENIED", "ACCESSKEY_NOT_ALLOWED");
    }
    // Nothing changed: one key, same name, still working.
    let r = call(&gw, "GET", KEYS, Some(&jwt), None).await;
    r.expect_status(200);
    let items = r.json()["result"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"], "leaky");
    use_key_query(&gw, &key).await.expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_put_delete_and_deleted_key_is_401_at_once() {
    let (upstream, gw, user, jwt) = setup(&[]).await;
    let k = create_key(&gw, &jwt, "orig", 3600).await;
    let (key, id) = (token_of(&k), id_of(&k));
    let path = format!("{KEYS}/{id}");

    let r = call(&gw, "GET", &path, Some(&jwt), None).await;
    r.expect_status(200);
    assert_eq!(r.json()["name"], "orig");

    let r = call(
        &gw,
        "PUT",
        &path,
        Some(&jwt),
        Some(&json!({ "name": "renamed", "detail": "new detail" })),
    )
    .await;
    r.expect_status(200);
    let v = r.json();
    assert_shape(&v, &user);
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["name"], "renamed");
    assert_eq!(v["detail"], "new detail");
    assert_eq!(v["token_prefix"], &key[..11]);
    assert_no_secret(&v, &[&key]);
    let r = call(&gw, "GET", &path, Some(&jwt), None).await;
    assert_eq!(r.json()["name"], "renamed");
    assert_eq!(r.json()["detail"], "new detail");

    // Warm any cache, then delete.
    use_key_query(&gw, &key).await.expect_status(200);
    let n = upstream.count();
    let r = call(&gw, "DELETE", &path, Some(&jwt), None).await;
    r.expect_status(200);
    assert_eq!(r.json()["id"], id.as_str());
    assert_no_secret(&r.json(), &[&key]);
    // At once: the very next request.
    use_key_query(&gw, &key)
        .await
        .expect_401("INVALID_CREDENTIALS");
    assert_eq!(upstream.count(), n, "a deleted key reached the upstream");
    call(&gw, "GET", &path, Some(&jwt), None)
        .await
        .expect_error(404, "NOT_FOUND", "RESOURCE_NOT_FOUND");
    call(&gw, "DELETE", &path, Some(&jwt), None)
        .await
        .expect_error(404, "NOT_FOUND", "RESOURCE_NOT_FOUND");
    let r = call(&gw, "GET", KEYS, Some(&jwt), None).await;
    assert!(
        r.json()["result"].as_array().unwrap().is_empty(),
        "deleted key listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_foreign_and_malformed_ids() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let (alice, bob, root) = (unique("alice"), unique("bob"), unique("root"));
    gw.add_user(&alice, &random_password(), &[]).await;
    gw.add_user(&bob, &random_password(), &[]).await;
    gw.add_user(&root, &random_password(), &["admin"]).await;
    let (ja, jb, jr) = (
        gw.issue_token(&alice).await,
        gw.issue_token(&bob).await,
        gw.issue_token(&root).await,
    );
    let ka = create_key(&gw, &ja, "alice-key", 3600).await;
    let kb = create_key(&gw, &jb, "bob-key", 3600).await;
    let body = json!({ "name": "n", "detail": "d" });

    let unknown = format!("{KEYS}/{}", uuid::Uuid::new_v4());
    let foreign = format!("{KEYS}/{}", id_of(&kb));
    for (method, b) in [("GET", None), ("PUT", Some(&body)), ("DELETE", None)] {
        call(&gw, method, &unknown, Some(&ja), b)
            .await
            .expect_error(404, "NOT_FOUND", "RESOURCE_NOT_FOUND");
        call(&gw, method, &foreign, Some(&ja), b)
            .await
            .expect_error(404, "NOT_FOUND", "RESOURCE_NOT_FOUND");
        call(&gw, method, &format!("{KEYS}/not-a-uuid"), Some(&ja), b)
            .await
            .expect_error(400, "INVALID_ARGUMENT", "INVALID_ID");
    }
    // Bob's key survived alice's attempts.
    use_key_query(&gw, &token_of(&kb)).await.expect_status(200);
    let r = call(&gw, "GET", &foreign, Some(&jb), None).await;
    r.expect_status(200);
    assert_eq!(r.json()["name"], "bob-key");

    // Each user lists only their own; admin sees all.
    let ids = |r: &Resp| -> HashSet<String> {
        r.json()["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(id_of)
            .collect()
    };
    let r = call(&gw, "GET", KEYS, Some(&ja), None).await;
    assert_eq!(ids(&r), HashSet::from([id_of(&ka)]));
    let r = call(&gw, "GET", KEYS, Some(&jr), None).await;
    r.expect_status(200);
    let all = ids(&r);
    assert!(
        all.contains(&id_of(&ka)) && all.contains(&id_of(&kb)),
        "admin sees every user's keys: {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_validates_its_input() {
    let (_upstream, gw, _user, jwt) = setup(&[]).await;
    for body in [
        json!({ "name": "n", "detail": "d" }),
        json!({ "name": "n", "detail": "d", "expire": 0 }),
        json!({ "name": "n", "detail": "d", "expire": -5 }),
        json!({ "name": "n", "detail": "d", "expire": "soon" }),
    ] {
        let r = call(&gw, "POST", KEYS, Some(&jwt), Some(&body)).await;
        r.expect_status(400);
        assert_eq!(
            r.json()["error"]["status"],
            "INVALID_ARGUMENT",
            "for {body}"
        );
    }
    let r = request(
        "POST",
        &gw.url(KEYS),
        &[("authorization", &format!("Bearer {jwt}"))],
        None,
    )
    .await;
    // No body and no Content-Type: not JSON.
    r.expect_error(415, "INVALID_ARGUMENT", "UNSUPPORTED_MEDIA_TYPE");
    let r = client()
        .post(gw.url(KEYS))
        .header("authorization", format!("Bearer {jwt}"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    Resp::from(r)
        .await
        .expect_error(400, "INVALID_ARGUMENT", "INVALID_JSON");
    let r = call(&gw, "GET", KEYS, Some(&jwt), None).await;
    assert!(r.json()["result"].as_array().unwrap().is_empty());
    // Without credentials at all.
    call(
        &gw,
        "POST",
        KEYS,
        None,
        Some(&json!({ "name": "n", "detail": "d", "expire": 60 })),
    )
    .await
    .expect_401("AUTHENTICATION_REQUIRED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_with_expire_1_is_401_after_it_passes() {
    let (upstream, gw, _user, jwt) = setup(&[]).await;
    let created_at = Instant::now();
    let k = create_key(&gw, &jwt, "short", 1).await;
    let key = token_of(&k);
    // Use it while it is valid (fills any cache), when we are quick enough.
    let r = use_key_query(&gw, &key).await;
    if created_at.elapsed() < Duration::from_millis(700) {
        r.expect_status(200);
    } else {
        eprintln!("slow machine: skipped the before-expiry check");
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let n = upstream.count();
    use_key_query(&gw, &key)
        .await
        .expect_401("INVALID_CREDENTIALS");
    get(
        &gw.url("/x"),
        None,
        &[("cookie", &format!("accesskey={key}"))],
    )
    .await
    .expect_401("INVALID_CREDENTIALS");
    assert_eq!(upstream.count(), n, "an expired key reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_key_is_401() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let key = random_key();
    for _ in 0..3 {
        use_key_query(&gw, &key)
            .await
            .expect_401("INVALID_CREDENTIALS");
    }
    get(
        &gw.url("/x"),
        None,
        &[("cookie", &format!("accesskey={key}"))],
    )
    .await
    .expect_401("INVALID_CREDENTIALS");
    for k in ["ag_short", "not-even-prefixed", ""] {
        let r = use_key_query(&gw, k).await;
        assert_eq!(r.status, 401, "key {k:?}: {}", r.text());
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_over_five_keys_returns_each_once_newest_first() {
    let (_upstream, gw, _user, jwt) = setup(&[]).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(id_of(&create_key(&gw, &jwt, &format!("p{i}"), 3600).await));
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut sizes = Vec::new();
    for _ in 0..10 {
        let mut path = format!("{KEYS}?page_size=2");
        if !page_token.is_empty() {
            let enc: String = form_urlencoded::byte_serialize(page_token.as_bytes()).collect();
            path.push_str(&format!("&page_token={enc}"));
        }
        let r = call(&gw, "GET", &path, Some(&jwt), None).await;
        r.expect_status(200);
        let v = r.json();
        let items = v["result"].as_array().expect("result").clone();
        sizes.push(items.len());
        seen.extend(items.iter().map(id_of));
        page_token = v["next_page_token"]
            .as_str()
            .expect("next_page_token is a string")
            .to_string();
        if page_token.is_empty() {
            break;
        }
    }
    assert_eq!(sizes, vec![2, 2, 1], "page sizes");
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "each key once, newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_created_key_works_and_cli_list_hides_it() {
    let (upstream, gw, user, jwt) = setup(&["ops"]).await;
    let (id, key) = gw
        .create_key_cli(
            &user,
            &[
                "--name",
                "from-cli",
                "--detail",
                "made by CLI",
                "--expire",
                "3600",
            ],
        )
        .await;
    uuid::Uuid::parse_str(&id).expect("CLI prints a UUID id");
    assert!(key.starts_with("ag_") && key.len() >= 35, "key: {key}");

    use_key_query(&gw, &key).await.expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.header_all("x-auth-key-id"), vec![id.clone()]);
    assert_eq!(rec.header_all("x-auth-user"), vec![user.clone()]);
    assert_eq!(rec.header_all("x-auth-roles"), vec!["ops"]);

    let r = call(&gw, "GET", &format!("{KEYS}/{id}"), Some(&jwt), None).await;
    r.expect_status(200);
    assert_eq!(r.json()["name"], "from-cli");
    assert_eq!(r.json()["detail"], "made by CLI");

    let list = gw.cli_ok(&["key", "list", "--user", &user], None).await;
    assert!(list.contains(&id), "key list shows the id: {list}");
    assert!(
        list.contains(&key[..11]),
        "key list shows the prefix: {list}"
    );
    assert!(
        !list.contains(&key[11..]),
        "key list leaked the key: {list}"
    );
    let all = gw.cli_ok(&["key", "list"], None).await;
    assert!(all.contains(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_revoke_is_honoured_by_the_running_gateway_within_3s() {
    let (upstream, gw, _user, jwt) = setup(&[]).await;
    let k = create_key(&gw, &jwt, "to-revoke", 3600).await;
    let (key, id) = (token_of(&k), id_of(&k));
    use_key_query(&gw, &key).await.expect_status(200);
    use_key_query(&gw, &key).await.expect_status(200);

    let out = gw.cli_ok(&["key", "revoke", &id], None).await;
    assert_eq!(out.trim(), format!("revoked key {id}"));
    let url = gw.url(&format!("/use?accesskey={key}"));
    let refused = poll_until(PROPAGATION, || {
        let url = url.clone();
        async move { get(&url, None, &[]).await.status == 401 }
    })
    .await;
    assert!(refused, "a CLI-revoked key still works after 3 s");
    let n = upstream.count();
    use_key_query(&gw, &key)
        .await
        .expect_401("INVALID_CREDENTIALS");
    assert_eq!(upstream.count(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_kill_9_right_after_create() {
    let (_upstream, mut gw, user, jwt) = setup(&[]).await;
    let k = create_key(&gw, &jwt, "durable", 3600).await;
    gw.kill9();
    gw.restart().await;
    let (key, id) = (token_of(&k), id_of(&k));
    use_key_query(&gw, &key).await.expect_status(200);
    let r = call(&gw, "GET", &format!("{KEYS}/{id}"), Some(&jwt), None).await;
    r.expect_status(200);
    assert_eq!(r.json()["name"], "durable");
    assert_eq!(r.json()["user"], user.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_a_graceful_restart() {
    let (_upstream, mut gw, _user, jwt) = setup(&[]).await;
    let k = create_key(&gw, &jwt, "durable", 3600).await;
    gw.sigterm();
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status}");
    gw.spawn().await;
    use_key_query(&gw, &token_of(&k)).await.expect_status(200);
}

async fn assert_refused_within_3s(gw: &Gateway, jwt: &str, key: &str) {
    let (url_t, url_k) = (gw.url("/t"), gw.url(&format!("/k?accesskey={key}")));
    let jwt = jwt.to_string();
    let refused = poll_until(PROPAGATION, || {
        let (url_t, url_k, jwt) = (url_t.clone(), url_k.clone(), jwt.clone());
        async move {
            get(&url_t, Some(&jwt), &[]).await.status == 401
                && get(&url_k, None, &[]).await.status == 401
        }
    })
    .await;
    assert!(refused, "the user's JWT and key still work after 3 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_removal_kills_their_keys_and_tokens() {
    let (_upstream, gw, user, jwt) = setup(&[]).await;
    let other = unique("other");
    gw.add_user(&other, &random_password(), &[]).await;
    let other_jwt = gw.issue_token(&other).await;
    let key = token_of(&create_key(&gw, &jwt, "mine", 3600).await);
    let other_key = token_of(&create_key(&gw, &other_jwt, "theirs", 3600).await);
    use_key_query(&gw, &key).await.expect_status(200);
    get(&gw.url("/t"), Some(&jwt), &[]).await.expect_status(200);

    gw.cli_ok(&["user", "remove", &user], None).await;
    assert_refused_within_3s(&gw, &jwt, &key).await;
    use_key_query(&gw, &other_key).await.expect_status(200);
    get(&gw.url("/t"), Some(&other_jwt), &[])
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_kills_their_keys_and_tokens() {
    let (_upstream, gw, user, jwt) = setup(&[]).await;
    let other = unique("other");
    gw.add_user(&other, &random_password(), &[]).await;
    let other_key = token_of(&create_key(&gw, &gw.issue_token(&other).await, "t", 3600).await);
    let key = token_of(&create_key(&gw, &jwt, "mine", 3600).await);
    use_key_query(&gw, &key).await.expect_status(200);
    get(&gw.url("/t"), Some(&jwt), &[]).await.expect_status(200);

    let new_pw = random_password();
    gw.cli_ok(
        &["user", "passwd", &user, "--password-stdin"],
        Some(&format!("{new_pw}\n")),
    )
    .await;
    assert_refused_within_3s(&gw, &jwt, &key).await;
    use_key_query(&gw, &other_key).await.expect_status(200);
    // The user can log in again with the new password.
    let fresh = login_ok(&gw, &user, &new_pw).await;
    get(&gw.url("/t"), Some(&fresh), &[])
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_and_key_together_conflict_same_key_twice_does_not() {
    let (upstream, gw, _user, jwt) = setup(&[]).await;
    let key = token_of(&create_key(&gw, &jwt, "k", 3600).await);
    let key2 = token_of(&create_key(&gw, &jwt, "k2", 3600).await);
    get(&gw.url(&format!("/x?accesskey={key}")), Some(&jwt), &[])
        .await
        .expect_error(400, "INVALID_ARGUMENT", "CONFLICTING_CREDENTIALS");
    get(
        &gw.url(&format!("/x?accesskey={key}")),
        None,
        &[("cookie", &format!("accesskey={key2}"))],
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT", "CONFLICTING_CREDENTIALS");
    assert_eq!(upstream.count(), 0);
    get(
        &gw.url(&format!("/x?accesskey={key}&a=1")),
        None,
        &[("cookie", &format!("accesskey={key}"))],
    )
    .await
    .expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.uri, "/x?a=1");
    assert!(!rec.contains_anywhere(&key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_key_acts_with_its_owners_roles() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let (admin, plain) = (unique("adm"), unique("pl"));
    gw.add_user(&admin, &random_password(), &["admin"]).await;
    gw.add_user(&plain, &random_password(), &[]).await;
    let ka = token_of(&create_key(&gw, &gw.issue_token(&admin).await, "a", 3600).await);
    let kp = token_of(&create_key(&gw, &gw.issue_token(&plain).await, "p", 3600).await);
    get(&gw.url(&format!("/admin/x?accesskey={kp}")), None, &[])
        .await
        .expect_error(403, "PERMISSION_DENIED", "MISSING_ROLE");
    assert_eq!(upstream.count(), 0);
    get(&gw.url(&format!("/admin/x?accesskey={ka}")), None, &[])
        .await
        .expect_status(200);
    assert_eq!(upstream.last().header_all("x-auth-roles"), vec!["admin"]);
}
