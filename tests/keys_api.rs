//! Issue 24: access keys as the API credential. Keys as `Authorization:
//! Bearer ag_...` and in the `[accesskeys] header`, `credentials_in_query`,
//! the checksum of new keys, disable/enable.

mod common;

use common::*;
use serde_json::{Value, json};

const KEYS: &str = "/v1.0/accesskeys";

/// Gateway + upstream + a user with a JWT and one key (`(jwt, key, id)`).
async fn setup_with(opts: impl FnOnce(&mut GatewayOptions)) -> (Upstream, Gateway, String, Value) {
    let upstream = Upstream::start().await;
    let mut o = GatewayOptions::new(&upstream.url());
    opts(&mut o);
    let gw = Gateway::start_with(o).await;
    let user = unique("t");
    gw.add_user(&user, &random_password(), &["dev"]).await;
    let jwt = gw.issue_token(&user).await;
    let created = post_json(
        &gw.url(KEYS),
        Some(&jwt),
        &json!({"name": "k", "detail": "", "expire": 3600}),
    )
    .await;
    created.expect_status(200);
    (upstream, gw, jwt, created.json())
}

fn token(v: &Value) -> String {
    v["token"].as_str().expect("token").to_owned()
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_key_as_bearer_or_in_the_key_header_is_accepted_and_never_forwarded() {
    let (upstream, gw, _jwt, created) = setup_with(|_| {}).await;
    let key = token(&created);

    let r = get(&gw.url("/x?a=1"), Some(&key), &[]).await;
    r.expect_status(200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-auth-method").as_deref(), Some("accesskey"));
    assert_eq!(seen.header("x-auth-key-id"), Some(id(&created)));
    assert!(
        !seen.has_header("authorization"),
        "{:?}",
        seen.header_names()
    );
    assert!(!seen.contains_anywhere(&key[3..]));

    // The header, with folded spellings of it beside: none reaches the
    // upstream, whatever an upstream would fold them into.
    let r = get(
        &gw.url("/x"),
        None,
        &[
            ("X-API-Key", key.as_str()),
            ("X_API_Key", "ag_smuggled_value_for_the_upstream_00000"),
            ("x-api_key", "something"),
        ],
    )
    .await;
    r.expect_status(200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-auth-key-id"), Some(id(&created)));
    for name in seen.header_names() {
        assert!(
            !name.replace('_', "-").eq_ignore_ascii_case("x-api-key"),
            "{name} reached the upstream"
        );
    }
    assert!(!seen.contains_anywhere(&key[3..]));
    assert!(!seen.contains_anywhere("smuggled"));
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("private"),
        "an answer to a keyed request is the caller's"
    );

    // The gateway's own endpoints and verify read them too.
    get(&gw.url(KEYS), Some(&key), &[]).await.expect_status(200);
    get(&gw.url(KEYS), None, &[("x-api-key", key.as_str())])
        .await
        .expect_status(200);
    let r = get(
        &gw.url("/_authgate/verify"),
        None,
        &[("x-api-key", key.as_str()), ("x-forwarded-uri", "/x")],
    )
    .await;
    r.expect_status(200);
    assert_eq!(r.header("x-auth-key-id"), Some(id(&created)));
    assert_eq!(r.header("x-auth-method").as_deref(), Some("accesskey"));

    // A key of the right shape that is not ours: 401, as on ?accesskey=.
    let made_up = format!("ag_{}", "A".repeat(43));
    get(&gw.url("/x"), Some(&made_up), &[])
        .await
        .expect_401("INVALID_CREDENTIALS");
    get(&gw.url("/x"), None, &[("x-api-key", &made_up)])
        .await
        .expect_401("INVALID_CREDENTIALS");
}

#[tokio::test]
async fn a_key_in_a_header_and_another_in_the_query_conflict() {
    let (upstream, gw, jwt, created) = setup_with(|_| {}).await;
    let key = token(&created);
    let other = token(
        &post_json(
            &gw.url(KEYS),
            Some(&jwt),
            &json!({"name": "k2", "detail": "", "expire": 3600}),
        )
        .await
        .json(),
    );
    let before = upstream.count();
    let cases: Vec<(String, Vec<(&str, String)>)> = vec![
        (
            format!("/x?accesskey={other}"),
            vec![("x-api-key", key.clone())],
        ),
        (
            format!("/x?accesskey={other}"),
            vec![("authorization", format!("Bearer {key}"))],
        ),
        (
            "/x".to_owned(),
            vec![
                ("authorization", format!("Bearer {key}")),
                ("x-api-key", other.clone()),
            ],
        ),
        (
            "/x".to_owned(),
            vec![
                ("x-api-key", key.clone()),
                ("cookie", format!("token={jwt}")),
            ],
        ),
        (
            "/x".to_owned(),
            vec![
                ("x-api-key", key.clone()),
                ("authorization", format!("Bearer {jwt}")),
            ],
        ),
    ];
    for (target, headers) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for path in [target.clone(), target.replacen("/x", KEYS, 1)] {
            let r = get(&gw.url(&path), None, &headers).await;
            let body = r.expect_error(400, "INVALID_ARGUMENT", "CONFLICTING_CREDENTIALS");
            assert!(!body.to_string().contains(&key[3..]), "{body}");
        }
    }
    assert_eq!(
        upstream.count(),
        before,
        "a conflict never reaches the upstream"
    );
    // The same key in the header and the query is one credential.
    get(
        &gw.url(&format!("/x?accesskey={key}")),
        None,
        &[("x-api-key", &key)],
    )
    .await
    .expect_status(200);
}

#[tokio::test]
async fn a_bearer_key_cannot_manage_keys() {
    let (_upstream, gw, _jwt, created) = setup_with(|_| {}).await;
    let key = token(&created);
    let body = json!({"name": "minted", "detail": "", "expire": 60});
    let r = post_json(&gw.url(KEYS), Some(&key), &body).await;
    r.expect_error(403, "PERMISSION_DENIED", "ACCESSKEY_NOT_ALLOWED");
    let r = request(
        "POST",
        &gw.url(KEYS),
        &[("x-api-key", key.as_str())],
        Some(&body),
    )
    .await;
    r.expect_error(403, "PERMISSION_DENIED", "ACCESSKEY_NOT_ALLOWED");
    let path = format!("{KEYS}/{}", id(&created));
    let r = request(
        "DELETE",
        &gw.url(&path),
        &[("authorization", &format!("Bearer {key}"))],
        None,
    )
    .await;
    r.expect_error(403, "PERMISSION_DENIED", "ACCESSKEY_NOT_ALLOWED");
}

#[tokio::test]
async fn credentials_in_the_query_can_be_refused_everywhere() {
    let (upstream, gw, jwt, created) = setup_with(|o| {
        o.server_extra_toml = "credentials_in_query = false\n".to_owned();
    })
    .await;
    let key = token(&created);
    let before = upstream.count();
    for target in [
        format!("/x?accesskey={key}"),
        format!("/x?a=1&token={jwt}"),
        format!("/public/p?accesskey={key}"),
        format!("{KEYS}?accesskey={key}"),
        format!("/_authgate/verify/x?accesskey={key}"),
        "/x?%74oken=abc".to_owned(),
        // Where no credential is read at all.
        "/healthz?token=abc".to_owned(),
    ] {
        let r = get(&gw.url(&target), None, &[]).await;
        let body = r.expect_error(400, "INVALID_ARGUMENT", "CREDENTIAL_IN_QUERY");
        assert!(!body.to_string().contains(&key[3..]), "{body}");
    }
    // Also when the judged query comes in X-Forwarded-Uri, and beside a
    // good header credential.
    get(
        &gw.url("/_authgate/verify"),
        Some(&key),
        &[("x-forwarded-uri", &format!("/x?accesskey={key}"))],
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT", "CREDENTIAL_IN_QUERY");
    get(&gw.url(&format!("/x?accesskey={key}")), Some(&key), &[])
        .await
        .expect_error(400, "INVALID_ARGUMENT", "CREDENTIAL_IN_QUERY");
    assert_eq!(upstream.count(), before);
    // Headers still work.
    get(&gw.url("/x?tokens=1"), None, &[("x-api-key", &key)])
        .await
        .expect_status(200);
    get(&gw.url("/x"), Some(&jwt), &[]).await.expect_status(200);
}

#[tokio::test]
async fn the_key_header_can_be_renamed_or_turned_off() {
    let (upstream, gw, _jwt, created) = setup_with(|o| {
        o.extra_toml = "[accesskeys]\nheader = \"ApiKey\"".to_owned();
    })
    .await;
    let key = token(&created);
    get(&gw.url("/x"), None, &[("apikey", &key)])
        .await
        .expect_status(200);
    assert!(!upstream.last().contains_anywhere(&key[3..]));
    get(&gw.url("/x"), None, &[("x-api-key", &key)])
        .await
        .expect_401("AUTHENTICATION_REQUIRED");

    let (_upstream, gw, _jwt, created) = setup_with(|o| {
        o.extra_toml = "[accesskeys]\nheader = \"\"".to_owned();
    })
    .await;
    let key = token(&created);
    get(&gw.url("/x"), None, &[("x-api-key", &key)])
        .await
        .expect_401("AUTHENTICATION_REQUIRED");
    get(&gw.url("/x"), Some(&key), &[]).await.expect_status(200);
}

fn cache_misses(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|line| line.starts_with("authgate_cache_misses_total "))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no authgate_cache_misses_total in\n{metrics}"))
}

async fn misses(gw: &Gateway) -> u64 {
    cache_misses(&get(&gw.url("/metrics"), None, &[]).await.text())
}

/// A flood of made-up keys of the checksummed format costs no store
/// lookup: the cache-miss counter (every miss is a store query) does not
/// move, while each made-up key of the old format costs one.
#[tokio::test]
async fn made_up_and_mistyped_keys_cost_no_store_lookup() {
    let (_upstream, gw, _jwt, created) = setup_with(|_| {}).await;
    let key = token(&created);
    assert_eq!(key.len(), 52, "ag_ + 43 random + 6 checksum");
    assert_eq!(created["token_prefix"], key[..11]);
    get(&gw.url("/x"), Some(&key), &[]).await.expect_status(200);

    let before = misses(&gw).await;
    let alphabet: Vec<char> = ('A'..='Z').chain('a'..='z').chain('0'..='9').collect();
    for i in 0..300usize {
        let random: String = (0..49)
            .map(|j| alphabet[(i * 31 + j * 7 + i * j) % alphabet.len()])
            .collect();
        let made_up = format!("ag_{random}");
        let r = match i % 3 {
            0 => get(&gw.url("/x"), Some(&made_up), &[]).await,
            1 => get(&gw.url("/x"), None, &[("x-api-key", &made_up)]).await,
            _ => get(&gw.url(&format!("/x?accesskey={made_up}")), None, &[]).await,
        };
        r.expect_401("INVALID_CREDENTIALS");
    }
    // A real key with one character changed.
    for at in [3, 20, 45, 51] {
        let mut typo = key.clone().into_bytes();
        typo[at] = if typo[at] == b'x' { b'y' } else { b'x' };
        let typo = String::from_utf8(typo).unwrap();
        get(&gw.url("/x"), Some(&typo), &[])
            .await
            .expect_401("INVALID_CREDENTIALS");
    }
    assert_eq!(misses(&gw).await, before, "made-up keys reached the store");

    // Keys of the old format still go to the store (they may be real).
    for i in 0..5 {
        let legacy = format!("ag_{}{i}", "L".repeat(42));
        get(&gw.url("/x"), Some(&legacy), &[])
            .await
            .expect_401("INVALID_CREDENTIALS");
    }
    assert_eq!(misses(&gw).await, before + 5);
}

async fn put(gw: &Gateway, path: &str, auth: (&str, &str), body: &Value) -> Resp {
    request("PUT", &gw.url(path), &[auth], Some(body)).await
}

#[tokio::test]
async fn a_disabled_key_is_refused_like_a_deleted_one_until_enabled() {
    let (upstream, gw, jwt, created) = setup_with(|_| {}).await;
    let key = token(&created);
    let path = format!("{KEYS}/{}", id(&created));
    let auth = format!("Bearer {jwt}");
    assert_eq!(created["enabled"], true);
    get(&gw.url("/x"), Some(&key), &[]).await.expect_status(200);

    let r = put(
        &gw,
        &path,
        ("authorization", &auth),
        &json!({"enabled": false}),
    )
    .await;
    r.expect_status(200);
    assert_eq!(r.json()["enabled"], false);
    assert_eq!(r.json()["name"], "k", "a field left out is unchanged");
    let before = upstream.count();
    for headers in [vec![("x-api-key", key.as_str())], vec![]] {
        let target = if headers.is_empty() {
            format!("/x?accesskey={key}")
        } else {
            "/x".to_owned()
        };
        let r = get(&gw.url(&target), None, &headers).await;
        let body = r.expect_401("INVALID_CREDENTIALS");
        // The same answer as for a deleted key: nothing tells them apart.
        assert_eq!(
            body["error"]["message"], "the access key is unknown or revoked",
            "{body}"
        );
    }
    assert_eq!(upstream.count(), before);
    get(&gw.url(KEYS), Some(&key), &[])
        .await
        .expect_401("INVALID_CREDENTIALS");
    let listed = get(&gw.url(&path), Some(&jwt), &[]).await;
    assert_eq!(listed.json()["enabled"], false);

    // A disabled key cannot enable itself; nor can any key.
    put(&gw, &path, ("x-api-key", &key), &json!({"enabled": true}))
        .await
        .expect_401("INVALID_CREDENTIALS");
    let other = token(
        &post_json(
            &gw.url(KEYS),
            Some(&jwt),
            &json!({"name": "o", "expire": 60}),
        )
        .await
        .json(),
    );
    put(&gw, &path, ("x-api-key", &other), &json!({"enabled": true}))
        .await
        .expect_error(403, "PERMISSION_DENIED", "ACCESSKEY_NOT_ALLOWED");
    put(
        &gw,
        &path,
        ("authorization", &format!("Bearer {other}")),
        &json!({"enabled": true}),
    )
    .await
    .expect_error(403, "PERMISSION_DENIED", "ACCESSKEY_NOT_ALLOWED");

    let r = put(
        &gw,
        &path,
        ("authorization", &auth),
        &json!({"enabled": true, "name": "again"}),
    )
    .await;
    r.expect_status(200);
    assert_eq!(r.json()["enabled"], true);
    assert_eq!(r.json()["name"], "again");
    get(&gw.url("/x"), Some(&key), &[]).await.expect_status(200);

    // The CLI does the same.
    let out = gw.cli_ok(&["key", "disable", &id(&created)], None).await;
    assert!(out.contains("disabled"), "{out}");
    assert!(
        poll_until(std::time::Duration::from_secs(5), || async {
            get(&gw.url("/x"), Some(&key), &[]).await.status == 401
        })
        .await,
        "key disable did not reach the gateway"
    );
    let listed = gw.cli_ok(&["key", "list"], None).await;
    let line = listed
        .lines()
        .find(|l| l.starts_with(&id(&created)))
        .unwrap();
    assert!(line.contains("\tno\t"), "{line}");
    gw.cli_ok(&["key", "enable", &id(&created)], None).await;
    assert!(
        poll_until(std::time::Duration::from_secs(5), || async {
            get(&gw.url("/x"), Some(&key), &[]).await.status == 200
        })
        .await,
        "key enable did not reach the gateway"
    );
}

#[tokio::test]
async fn bad_updates_are_refused_with_the_field_named() {
    let (_upstream, gw, jwt, created) = setup_with(|_| {}).await;
    let path = format!("{KEYS}/{}", id(&created));
    let auth = format!("Bearer {jwt}");
    for (body, field, reason) in [
        (json!({"enabled": "no"}), "enabled", "INVALID_FIELD"),
        (json!({"enabled": 0}), "enabled", "INVALID_FIELD"),
        (
            json!({"enabled": null, "colour": "red"}),
            "colour",
            "INVALID_JSON",
        ),
    ] {
        let r = put(&gw, &path, ("authorization", &auth), &body).await;
        let err = r.expect_error(400, "INVALID_ARGUMENT", reason);
        assert!(
            err["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {err}"
        );
    }
    // Another user's key is not found.
    let stranger = unique("s");
    gw.add_user(&stranger, &random_password(), &[]).await;
    let theirs = gw.issue_token(&stranger).await;
    put(
        &gw,
        &path,
        ("authorization", &format!("Bearer {theirs}")),
        &json!({"enabled": false}),
    )
    .await
    .expect_error(404, "NOT_FOUND", "RESOURCE_NOT_FOUND");
    get(&gw.url("/x"), Some(&token(&created)), &[])
        .await
        .expect_status(200);
}

async fn reroll(gw: &Gateway, id: &str, auth: (&str, &str), body: &Value) -> Resp {
    request(
        "POST",
        &gw.url(&format!("{KEYS}/{id}/reroll")),
        &[auth],
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_rerolled_key_gets_a_new_secret_and_the_old_one_works_only_through_the_grace() {
    let (_upstream, gw, jwt, created) = setup_with(|_| {}).await;
    let old = token(&created);
    let key_id = id(&created);
    let auth = format!("Bearer {jwt}");
    // Cached before the reroll.
    get(&gw.url("/x"), Some(&old), &[]).await.expect_status(200);

    let r = reroll(&gw, &key_id, ("authorization", &auth), &json!({"grace": 2})).await;
    r.expect_status(200);
    let rerolled = r.json();
    let new = token(&rerolled);
    assert_ne!(new, old);
    assert_eq!(new.len(), 52);
    assert_eq!(rerolled["id"], created["id"]);
    assert_eq!(rerolled["name"], created["name"]);
    assert_eq!(rerolled["tm_expire"], created["tm_expire"]);
    assert_eq!(rerolled["token_prefix"], new[..11]);
    assert!(is_rfc3339_utc(rerolled["tm_rerolled"].as_str().unwrap()));
    let shown = get(&gw.url(&format!("{KEYS}/{key_id}")), Some(&jwt), &[]).await;
    assert!(
        shown.json().get("token").is_none(),
        "the token is shown only once"
    );
    assert_eq!(shown.json()["tm_rerolled"], rerolled["tm_rerolled"]);

    let r = get(&gw.url("/x"), None, &[("x-api-key", &new)]).await;
    r.expect_status(200);
    get(&gw.url("/x"), Some(&old), &[]).await.expect_status(200);
    // Through the whole grace (whole seconds: up to one more)...
    tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
    get(&gw.url("/x"), Some(&old), &[]).await.expect_status(200);
    // ...and after it, never again (the cached grant ends with it).
    assert!(
        poll_until(std::time::Duration::from_millis(1500), || async {
            get(&gw.url("/x"), Some(&old), &[]).await.status == 401
        })
        .await,
        "the old secret still works after its grace"
    );
    get(&gw.url("/x"), Some(&old), &[])
        .await
        .expect_401("INVALID_CREDENTIALS");
    get(&gw.url("/x"), Some(&new), &[]).await.expect_status(200);

    // Grace 0 (the default): the replaced secret stops at once, cached or not.
    let r = reroll(&gw, &key_id, ("authorization", &auth), &json!({})).await;
    r.expect_status(200);
    let newest = token(&r.json());
    get(&gw.url("/x"), Some(&new), &[])
        .await
        .expect_401("INVALID_CREDENTIALS");
    get(&gw.url("/x"), Some(&newest), &[])
        .await
        .expect_status(200);

    // The CLI, with a grace.
    let out = gw
        .cli_ok(&["key", "reroll", &key_id, "--grace", "60"], None)
        .await;
    let cli_key = out
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .expect("key line")
        .to_owned();
    assert!(
        poll_until(std::time::Duration::from_secs(5), || async {
            get(&gw.url("/x"), Some(&cli_key), &[]).await.status == 200
        })
        .await
    );
    get(&gw.url("/x"), Some(&newest), &[])
        .await
        .expect_status(200);
    assert!(!gw.logs().contains(&newest[3..]) && !gw.logs().contains(&old[3..]));
}

#[tokio::test]
async fn bad_rerolls_are_refused() {
    let (_upstream, gw, jwt, created) = setup_with(|_| {}).await;
    let key = token(&created);
    let key_id = id(&created);
    let auth = format!("Bearer {jwt}");
    for (body, field, reason) in [
        (json!({"grace": -1}), "grace", "INVALID_FIELD"),
        (json!({"grace": 604_801}), "grace", "INVALID_FIELD"),
        (json!({"grace": "10"}), "grace", "INVALID_FIELD"),
        (json!({"grace": 1.5}), "grace", "INVALID_FIELD"),
        (json!({"grace": 1, "graec": 2}), "graec", "INVALID_JSON"),
    ] {
        let r = reroll(&gw, &key_id, ("authorization", &auth), &body).await;
        let err = r.expect_error(400, "INVALID_ARGUMENT", reason);
        assert!(
            err["error"]["message"].as_str().unwrap().contains(field),
            "{err}"
        );
    }
    reroll(
        &gw,
        &key_id,
        ("authorization", &auth),
        &json!({"grace": 604_800}),
    )
    .await
    .expect_status(200);
    // The key (still in its grace) cannot reroll itself.
    for auth in [
        ("x-api-key", key.clone()),
        ("authorization", format!("Bearer {key}")),
    ] {
        reroll(&gw, &key_id, (auth.0, &auth.1), &json!({}))
            .await
            .expect_error(403, "PERMISSION_DENIED", "ACCESSKEY_NOT_ALLOWED");
    }
    let stranger = unique("s");
    gw.add_user(&stranger, &random_password(), &[]).await;
    let theirs = gw.issue_token(&stranger).await;
    reroll(
        &gw,
        &key_id,
        ("authorization", &format!("Bearer {theirs}")),
        &json!({}),
    )
    .await
    .expect_error(404, "NOT_FOUND", "RESOURCE_NOT_FOUND");
    reroll(&gw, "not-a-uuid", ("authorization", &auth), &json!({}))
        .await
        .expect_error(400, "INVALID_ARGUMENT", "INVALID_ID");
    get(&gw.url("/x"), Some(&key), &[]).await.expect_status(200);
}

async fn revoke(gw: &Gateway, body: &Value) -> Resp {
    request("POST", &gw.url(&format!("{KEYS}/revoke")), &[], Some(body)).await
}

#[tokio::test]
async fn whoever_holds_a_key_can_revoke_it_by_value() {
    let (_upstream, gw, jwt, created) = setup_with(|_| {}).await;
    let key = token(&created);
    get(&gw.url("/x"), Some(&key), &[]).await.expect_status(200);
    let r = revoke(&gw, &json!({"token": key})).await;
    r.expect_status(200);
    assert_eq!(r.json(), json!({"revoked": true, "id": id(&created)}));
    get(&gw.url("/x"), Some(&key), &[])
        .await
        .expect_401("INVALID_CREDENTIALS");
    assert_eq!(
        revoke(&gw, &json!({"token": key})).await.json(),
        json!({"revoked": false})
    );
    for made_up in [
        format!("ag_{}", "Q".repeat(49)),
        "hello".to_owned(),
        String::new(),
    ] {
        let r = revoke(&gw, &json!({"token": made_up})).await;
        r.expect_status(200);
        assert_eq!(r.json(), json!({"revoked": false}));
    }

    // A secret still in a reroll's grace revokes the key, new secret too.
    let second = post_json(
        &gw.url(KEYS),
        Some(&jwt),
        &json!({"name": "b", "expire": 600}),
    )
    .await
    .json();
    let old = token(&second);
    let r = reroll(
        &gw,
        &id(&second),
        ("authorization", &format!("Bearer {jwt}")),
        &json!({"grace": 600}),
    )
    .await;
    let new = token(&r.json());
    get(&gw.url("/x"), Some(&new), &[]).await.expect_status(200);
    get(&gw.url("/x"), Some(&old), &[]).await.expect_status(200);
    let r = revoke(&gw, &json!({"token": old})).await;
    assert_eq!(r.json(), json!({"revoked": true, "id": id(&second)}));
    get(&gw.url("/x"), Some(&new), &[])
        .await
        .expect_401("INVALID_CREDENTIALS");
    get(&gw.url("/x"), Some(&old), &[])
        .await
        .expect_401("INVALID_CREDENTIALS");

    // Bad bodies.
    for (body, field) in [
        (json!({}), "token"),
        (json!({"token": 5}), "token"),
        (json!({"token": "x", "id": "y"}), "id"),
    ] {
        let r = revoke(&gw, &body).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{body}"
        );
    }
    let logs = gw.logs();
    assert!(logs.contains("access key revoked by value"), "{logs}");
    for secret in [&key, &old, &new] {
        assert!(!logs.contains(&secret[3..]), "a key reached the log");
    }
}

#[tokio::test]
async fn revoking_by_value_is_bounded_per_address() {
    let (_upstream, gw, _jwt, created) = setup_with(|_| {}).await;
    let mut limited = None;
    for i in 0..40 {
        let r = revoke(
            &gw,
            &json!({"token": format!("ag_{}{i:02}", "Z".repeat(47))}),
        )
        .await;
        if r.status == 429 {
            limited = Some((i, r));
            break;
        }
        r.expect_status(200);
    }
    let (at, r) = limited.expect("40 revocations from one address in a row were all served");
    assert!(at >= 20, "limited after {at}");
    r.expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
    assert!(r.header("retry-after").is_some());
    // The real key still works; only the revoke endpoint is bounded.
    get(&gw.url("/x"), Some(&token(&created)), &[])
        .await
        .expect_status(200);
}

/// `uses` counts the requests a key authenticated, written in batches:
/// shown within 10 seconds, with one store write per key per flush.
#[tokio::test]
async fn uses_count_the_requests_a_key_authenticated() {
    let (_upstream, gw, jwt, created) = setup_with(|_| {}).await;
    assert_eq!(created["uses"], 0);
    let key = token(&created);
    let path = format!("{KEYS}/{}", id(&created));
    for i in 0..7 {
        let r = match i % 3 {
            0 => get(&gw.url("/x"), Some(&key), &[]).await,
            1 => get(&gw.url("/x"), None, &[("x-api-key", &key)]).await,
            _ => {
                get(
                    &gw.url("/_authgate/verify"),
                    None,
                    &[("x-api-key", &key), ("x-forwarded-uri", "/x")],
                )
                .await
            }
        };
        r.expect_status(200);
    }
    // Refused requests are not uses.
    get(&gw.url("/x"), Some(&format!("{key}x")), &[])
        .await
        .expect_401("INVALID_CREDENTIALS");
    let shown = poll_until(std::time::Duration::from_secs(10), || async {
        get(&gw.url(&path), Some(&jwt), &[]).await.json()["uses"] == 7
    })
    .await;
    let now = get(&gw.url(&path), Some(&jwt), &[]).await.json();
    assert!(shown, "uses not 7 within 10 s: {now}");
    assert!(
        is_rfc3339_utc(now["tm_last_used"].as_str().unwrap()),
        "{now}"
    );
    let listed = gw.cli_ok(&["key", "list"], None).await;
    let line = listed
        .lines()
        .find(|l| l.starts_with(&id(&created)))
        .unwrap();
    assert!(line.contains("\tyes\t7\t"), "{line}");
}

/// A 429 of the key's own budget; returns the body.
fn expect_key_limited(r: &Resp) -> Value {
    r.expect_status(429);
    let v = r.json();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED", "{v}");
    assert_eq!(v["error"]["reason"], "RATE_LIMITED", "{v}");
    assert_eq!(v["error"]["details"]["limited_by"], "key", "{v}");
    v
}

/// Creates a key for the setup's user with this `rate_limit`.
async fn create_limited(gw: &Gateway, jwt: &str, rate_limit: Value) -> Value {
    let r = post_json(
        &gw.url(KEYS),
        Some(jwt),
        &json!({"name": "limited", "expire": 3600, "rate_limit": rate_limit}),
    )
    .await;
    r.expect_status(200);
    r.json()
}

/// Issue 24 item 6: a key's own budget, with no `[ratelimit]` table at
/// all (the memory store): the burst, then 429 `limited_by: "key"` with
/// Retry-After and the RateLimit headers; every transport and verify draw
/// on the one bucket; other keys are untouched; a reroll keeps it.
#[tokio::test]
async fn a_keys_own_rate_limit_is_enforced_on_every_path_and_kept_by_a_reroll() {
    let (upstream, gw, jwt, unlimited) = setup_with(|_| {}).await;
    assert_eq!(unlimited["rate_limit"], Value::Null);
    let created = create_limited(&gw, &jwt, json!({"rate": 0.01, "burst": 3})).await;
    assert_eq!(created["rate_limit"], json!({"rate": 0.01, "burst": 3}));
    let key = token(&created);
    let shown = get(
        &gw.url(&format!("{KEYS}/{}", id(&created))),
        Some(&jwt),
        &[],
    )
    .await;
    assert_eq!(
        shown.json()["rate_limit"],
        json!({"rate": 0.01, "burst": 3})
    );

    // Three transports and verify: one bucket of 3.
    let query = gw.url(&format!("/x?accesskey={key}"));
    let answers = [
        get(&gw.url("/x"), Some(&key), &[]).await,
        get(&gw.url("/x"), None, &[("x-api-key", &key)]).await,
        get(&query, None, &[]).await,
    ];
    for (remaining, r) in [2, 1, 0].into_iter().zip(&answers) {
        r.expect_status(200);
        assert_eq!(
            r.header("ratelimit-policy").as_deref(),
            Some(r#""key";q=3;w=300"#)
        );
        let state = r.header("ratelimit").unwrap();
        assert!(
            state.starts_with(&format!("\"key\";r={remaining};t=")),
            "{state}"
        );
    }
    let seen = upstream.count();
    let refused = get(
        &gw.url("/_authgate/verify"),
        None,
        &[("x-api-key", &key), ("x-forwarded-uri", "/x")],
    )
    .await;
    expect_key_limited(&refused);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=100).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        refused.header("ratelimit-policy").as_deref(),
        Some(r#""key";q=3;w=300"#)
    );
    assert!(
        refused
            .header("ratelimit")
            .unwrap()
            .starts_with(r#""key";r=0;t="#)
    );
    assert!(!refused.text().contains(&key[3..]), "no key in the answer");
    expect_key_limited(&get(&gw.url("/x"), Some(&key), &[]).await);
    assert_eq!(
        upstream.count(),
        seen,
        "nothing refused reached the upstream"
    );

    // The owner's other key, and a JWT, have no such budget.
    for _ in 0..5 {
        let r = get(&gw.url("/x"), Some(&token(&unlimited)), &[]).await;
        r.expect_status(200);
        assert!(r.header("ratelimit").is_none(), "no budget, no header");
        get(&gw.url("/x"), Some(&jwt), &[]).await.expect_status(200);
    }
    // A second limited key has a bucket of its own.
    let other = create_limited(&gw, &jwt, json!({"rate": 0.01, "burst": 1})).await;
    get(&gw.url("/x"), Some(&token(&other)), &[])
        .await
        .expect_status(200);

    // Rerolled: the new secret is the same key, with the same (empty) budget.
    let r = reroll(
        &gw,
        &id(&created),
        ("authorization", &format!("Bearer {jwt}")),
        &json!({}),
    )
    .await;
    r.expect_status(200);
    assert_eq!(r.json()["rate_limit"], json!({"rate": 0.01, "burst": 3}));
    expect_key_limited(&get(&gw.url("/x"), Some(&token(&r.json())), &[]).await);

    // Listed, in the API and the CLI.
    let listed = get(&gw.url(KEYS), Some(&jwt), &[]).await.json();
    let row = listed["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == created["id"])
        .unwrap()
        .clone();
    assert_eq!(row["rate_limit"], json!({"rate": 0.01, "burst": 3}));
    let cli = gw.cli_ok(&["key", "list"], None).await;
    assert!(
        cli.lines().next().unwrap().ends_with("\tRATE_LIMIT"),
        "{cli}"
    );
    let line = cli.lines().find(|l| l.starts_with(&id(&created))).unwrap();
    assert!(line.ends_with("\t0.01/s burst 3"), "{line}");
    let line = cli
        .lines()
        .find(|l| l.starts_with(&id(&unlimited)))
        .unwrap();
    assert!(line.ends_with("\t-"), "{line}");
}

/// The key's budget holds on the gateway's own endpoints too: a key that
/// reads `/v1.0/accesskeys` draws on it like a proxied request.
#[tokio::test]
async fn a_keys_own_budget_holds_on_the_key_endpoints() {
    let (_upstream, gw, jwt, _created) = setup_with(|_| {}).await;
    let created = create_limited(&gw, &jwt, json!({"rate": 0.01, "burst": 2})).await;
    let key = token(&created);
    get(&gw.url("/x"), Some(&key), &[]).await.expect_status(200);
    get(&gw.url(KEYS), Some(&key), &[]).await.expect_status(200);
    let refused = get(&gw.url(KEYS), None, &[("x-api-key", &key)]).await;
    expect_key_limited(&refused);
    assert!(refused.header("retry-after").is_some());
    expect_key_limited(&get(&gw.url("/x"), Some(&key), &[]).await);
    // The owner's JWT is not the key.
    get(&gw.url(KEYS), Some(&jwt), &[]).await.expect_status(200);
}

/// Bad budgets: 400 naming the field, nothing made.
#[tokio::test]
async fn bad_rate_limits_are_refused_with_the_field_named() {
    let (_upstream, gw, jwt, _created) = setup_with(|_| {}).await;
    let before = get(&gw.url(KEYS), Some(&jwt), &[]).await.json()["result"]
        .as_array()
        .unwrap()
        .len();
    for (limit, field) in [
        (json!({"rate": 0, "burst": 1}), "rate_limit.rate"),
        (json!({"rate": -1, "burst": 1}), "rate_limit.rate"),
        (json!({"rate": -0.5, "burst": 1}), "rate_limit.rate"),
        (json!({"rate": 1e-9, "burst": 1}), "rate_limit.rate"),
        (json!({"rate": 2e6, "burst": 1}), "rate_limit.rate"),
        (json!({"rate": "5", "burst": 1}), "rate_limit.rate"),
        (json!({"rate": null, "burst": 1}), "rate_limit.rate"),
        (json!({"burst": 1}), "rate_limit.rate"),
        (json!({"rate": 1, "burst": 0}), "rate_limit.burst"),
        (json!({"rate": 1, "burst": -3}), "rate_limit.burst"),
        (json!({"rate": 1, "burst": 1.5}), "rate_limit.burst"),
        (json!({"rate": 1, "burst": "2"}), "rate_limit.burst"),
        (json!({"rate": 1, "burst": 1_000_001}), "rate_limit.burst"),
        (json!({"rate": 1}), "rate_limit.burst"),
        (json!({"rate": 1, "burst": 1, "window": 60}), "rate_limit"),
        (json!("fast"), "rate_limit"),
        (json!([1, 2]), "rate_limit"),
        (json!(5), "rate_limit"),
    ] {
        let r = post_json(
            &gw.url(KEYS),
            Some(&jwt),
            &json!({"name": "r", "expire": 60, "rate_limit": limit}),
        )
        .await;
        let err = r.expect_error(400, "INVALID_ARGUMENT", "INVALID_FIELD");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{limit}: {err}");
    }
    // A misspelt field is refused, never ignored (a caller must not
    // believe a limit applies).
    let r = post_json(
        &gw.url(KEYS),
        Some(&jwt),
        &json!({"name": "r", "expire": 60, "ratelimit": {"rate": 1, "burst": 1}}),
    )
    .await;
    let err = r.expect_error(400, "INVALID_ARGUMENT", "INVALID_JSON");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ratelimit"),
        "{err}"
    );
    // `null` is no limit.
    let none = create_limited(&gw, &jwt, Value::Null).await;
    assert_eq!(none["rate_limit"], Value::Null);
    let after = get(&gw.url(KEYS), Some(&jwt), &[]).await.json()["result"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, before + 1, "only the key without a limit was made");
}

/// `key create --rate R --burst B`: the same rules, one line naming the
/// flag; the budget applies as one made through the API.
#[tokio::test]
async fn the_cli_creates_keys_with_a_rate_limit_under_the_same_rules() {
    let (_upstream, gw, _jwt, _created) = setup_with(|_| {}).await;
    let user = unique("c");
    gw.add_user(&user, &random_password(), &[]).await;
    for (args, flag) in [
        (vec!["--rate", "0", "--burst", "1"], "--rate"),
        (vec!["--rate=-2", "--burst", "1"], "--rate"),
        (vec!["--rate", "1", "--burst", "0"], "--burst"),
        (vec!["--rate", "1"], "--burst"),
        (vec!["--burst", "1"], "--rate"),
        (vec!["--rate", "1", "--burst", "2000000"], "--burst"),
    ] {
        let mut all = vec!["key", "create", "--user", &user];
        all.extend(&args);
        let out = gw.cli(&all, None).await;
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains(flag), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    let (id, key) = gw
        .create_key_cli(&user, &["--rate", "0.01", "--burst", "2"])
        .await;
    for _ in 0..2 {
        get(&gw.url("/x"), Some(&key), &[]).await.expect_status(200);
    }
    expect_key_limited(&get(&gw.url("/x"), Some(&key), &[]).await);
    let list = gw.cli_ok(&["key", "list", "--user", &user], None).await;
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(line.ends_with("\t0.01/s burst 2"), "{line}");
}
