//! One-time-key login: `POST /auth/onetimekey`, `POST /auth/onetimekey/login`
//! and `authgate otk-token`, checked against an independent MD5 computation.

mod common;

use common::*;
use serde_json::{Value, json};

const REALM: &str = "voximplant.com";

async fn request_key(gw: &Gateway, user: &str) -> Value {
    let r = post_json(
        &gw.url("/auth/onetimekey"),
        None,
        &json!({ "username": user }),
    )
    .await;
    r.expect_status(200);
    let v = r.json();
    assert_eq!(v["username"], user, "{v}");
    let key = v["key"].as_str().expect("key is a string");
    // At least 128 bits: 22 base64 or 32 hex characters.
    assert!(key.len() >= 22, "one-time key too short: {key}");
    assert!(v["expires_in"].is_u64(), "expires_in is seconds: {v}");
    v
}

fn key_of(v: &Value) -> String {
    v["key"].as_str().unwrap().to_string()
}

async fn otk_login(gw: &Gateway, user: &str, key: &str, token: &str) -> Resp {
    post_json(
        &gw.url("/auth/onetimekey/login"),
        None,
        &json!({ "username": user, "key": key, "token": token }),
    )
    .await
}

async fn setup() -> (Upstream, Gateway, String, String) {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("otk");
    let pw = random_password();
    gw.add_user(&user, &pw, &["ops"]).await;
    (upstream, gw, user, pw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otk_login_succeeds_with_the_digest_answer() {
    let (upstream, gw, user, pw) = setup().await;
    let v = request_key(&gw, &user).await;
    assert_eq!(v["expires_in"], 300, "expires_in is onetimekey.ttl: {v}");
    let key = key_of(&v);
    let answer = otk_answer(&key, &user, REALM, &pw);
    let r = otk_login(&gw, &user, &key, &answer).await;
    r.expect_status(200);
    let body = r.json();
    assert_eq!(body["username"], user.as_str());
    let token = body["token"].as_str().expect("token").to_string();
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], user.as_str());
    let exp = claims["exp"].as_i64().unwrap();
    assert!((exp - (now_secs() + 604_800)).abs() <= 60, "exp {exp}");
    // The cookie, exactly as /auth/login sets it.
    let cookies = r.header_all("set-cookie");
    let cookie = cookies
        .iter()
        .find(|c| c.starts_with(&format!("token={token}")))
        .unwrap_or_else(|| panic!("token cookie missing: {cookies:?}"));
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age=604800"] {
        assert!(
            cookie
                .split(';')
                .any(|a| a.trim().eq_ignore_ascii_case(attr)),
            "{attr} missing: {cookie}"
        );
    }

    get(&gw.url("/after-otk"), Some(&token), &[])
        .await
        .expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.header_all("x-auth-user"), vec![user.clone()]);
    assert_eq!(rec.header_all("x-auth-roles"), vec!["ops"]);
    assert_eq!(rec.header_all("x-auth-method"), vec!["jwt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_401() {
    let (_upstream, gw, user, pw) = setup().await;
    let key = key_of(&request_key(&gw, &user).await);
    let answer = otk_answer(&key, &user, REALM, &pw);
    otk_login(&gw, &user, &key, &answer)
        .await
        .expect_status(200);
    otk_login(&gw, &user, &key, &answer)
        .await
        .expect_401("INVALID_CREDENTIALS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answer_is_401_and_burns_the_key() {
    let (_upstream, gw, user, pw) = setup().await;
    let key = key_of(&request_key(&gw, &user).await);
    let wrong = otk_answer(&key, &user, REALM, "not-the-password");
    let r = otk_login(&gw, &user, &key, &wrong).await;
    r.expect_401("INVALID_CREDENTIALS");
    assert!(r.header_all("set-cookie").is_empty());
    // The right answer no longer helps: the key was consumed.
    let right = otk_answer(&key, &user, REALM, &pw);
    otk_login(&gw, &user, &key, &right)
        .await
        .expect_401("INVALID_CREDENTIALS");
    // Control: a fresh key with the right answer works.
    let key = key_of(&request_key(&gw, &user).await);
    otk_login(&gw, &user, &key, &otk_answer(&key, &user, REALM, &pw))
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_used_by_another_user_is_401() {
    let (_upstream, gw, alice, _alice_pw) = setup().await;
    let bob = unique("bob");
    let bob_pw = random_password();
    gw.add_user(&bob, &bob_pw, &[]).await;

    let alice_key = key_of(&request_key(&gw, &alice).await);
    otk_login(
        &gw,
        &bob,
        &alice_key,
        &otk_answer(&alice_key, &bob, REALM, &bob_pw),
    )
    .await
    .expect_401("INVALID_CREDENTIALS");
    // Control: bob's own key works for bob.
    let bob_key = key_of(&request_key(&gw, &bob).await);
    otk_login(
        &gw,
        &bob,
        &bob_key,
        &otk_answer(&bob_key, &bob, REALM, &bob_pw),
    )
    .await
    .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_gets_200_then_401() {
    let (_upstream, gw, user, _pw) = setup().await;
    let real = request_key(&gw, &user).await;
    let ghost = unique("ghost");
    let fake = request_key(&gw, &ghost).await;
    assert_eq!(
        fake.as_object().unwrap().keys().collect::<Vec<_>>(),
        real.as_object().unwrap().keys().collect::<Vec<_>>(),
        "same fields for unknown users"
    );
    assert_eq!(fake["expires_in"], real["expires_in"]);
    assert_eq!(
        key_of(&fake).len(),
        key_of(&real).len(),
        "same key shape for unknown users"
    );
    let key = key_of(&fake);
    for pw in ["", "password", "hunter2"] {
        otk_login(&gw, &ghost, &key, &otk_answer(&key, &ghost, REALM, pw))
            .await
            .expect_401("INVALID_CREDENTIALS");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_key_is_401() {
    let (_upstream, gw, user, pw) = setup().await;
    let ttl = i64::try_from(gw.options().otk_ttl).expect("ttl");

    // Control: a fresh key works.
    let key = key_of(&request_key(&gw, &user).await);
    otk_login(&gw, &user, &key, &otk_answer(&key, &user, REALM, &pw))
        .await
        .expect_status(200);

    // Time passes for the next key: its expiry, as the store holds it,
    // moves a TTL and a second back (as if answered TTL + 1 s later).
    let key = key_of(&request_key(&gw, &user).await);
    age_onetime_keys(&gw, ttl + 1).await;
    otk_login(&gw, &user, &key, &otk_answer(&key, &user, REALM, &pw))
        .await
        .expect_401("INVALID_CREDENTIALS");
}

/// Moves the expiry of every stored one-time key `seconds` into the past:
/// the gateway reads a key's expiry from the store when it is answered, so
/// this is the clock having moved on for that key (no test hook in the
/// gateway, no waiting).
async fn age_onetime_keys(gw: &Gateway, seconds: i64) {
    use sqlx::Connection;
    let mut db = sqlx::SqliteConnection::connect(&gw.db_url())
        .await
        .expect("open the gateway's store");
    let aged = sqlx::query("UPDATE onetime_keys SET expires_at = expires_at - $1")
        .bind(seconds)
        .execute(&mut db)
        .await
        .expect("age the one-time keys");
    assert!(aged.rows_affected() > 0, "no one-time key stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otk_token_cli_equals_an_independent_computation() {
    let (_upstream, gw, user, pw) = setup().await;
    let key = key_of(&request_key(&gw, &user).await);
    let out = gw
        .cli_ok(
            &[
                "otk-token",
                "--key",
                &key,
                "--user",
                &user,
                "--password-stdin",
            ],
            Some(&format!("{pw}\n")),
        )
        .await;
    let printed = out.trim();
    let expected = otk_answer(&key, &user, REALM, &pw);
    assert_eq!(printed, expected, "otk-token output");
    assert_eq!(printed.len(), 32);
    // Other realm on the command line.
    let out = gw
        .cli_ok(
            &[
                "otk-token",
                "--key",
                "fixed-key",
                "--user",
                "alice",
                "--password-stdin",
                "--realm",
                "example.org",
            ],
            Some("s3cret\n"),
        )
        .await;
    assert_eq!(
        out.trim(),
        otk_answer("fixed-key", "alice", "example.org", "s3cret")
    );
    // The seed document's formula, spelled out once by hand.
    assert_eq!(
        out.trim(),
        md5_hex(&format!(
            "fixed-key|{}",
            md5_hex("alice:example.org:s3cret")
        ))
    );
    // And the gateway accepts what the CLI computed.
    otk_login(&gw, &user, &key, printed)
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realm_comes_from_the_config() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.realm = "test.example".to_string();
    let gw = Gateway::start_with(opts).await;
    let user = unique("realm");
    let pw = random_password();
    gw.add_user(&user, &pw, &[]).await;

    let key = key_of(&request_key(&gw, &user).await);
    otk_login(&gw, &user, &key, &otk_answer(&key, &user, REALM, &pw))
        .await
        .expect_401("INVALID_CREDENTIALS");
    let key = key_of(&request_key(&gw, &user).await);
    otk_login(
        &gw,
        &user,
        &key,
        &otk_answer(&key, &user, "test.example", &pw),
    )
    .await
    .expect_status(200);
    // otk-token defaults to the configured realm.
    let out = gw
        .cli_ok(
            &[
                "otk-token",
                "--key",
                "k",
                "--user",
                &user,
                "--password-stdin",
            ],
            Some(&format!("{pw}\n")),
        )
        .await;
    assert_eq!(out.trim(), otk_answer("k", &user, "test.example", &pw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_otk_requests_are_400() {
    let (upstream, gw, _user, _pw) = setup().await;
    for path in ["/auth/onetimekey", "/auth/onetimekey/login"] {
        post_raw(&gw.url(path), "{\"username\": ")
            .await
            .expect_error(400, "INVALID_ARGUMENT", "INVALID_JSON");
    }
    assert_eq!(upstream.count(), 0);
}
