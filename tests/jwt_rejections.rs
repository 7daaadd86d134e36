//! Forged and invalid JWTs are refused with 401 and never reach the upstream.
//!
//! Every test first re-signs the claims of a genuine token with the harness's
//! secret and checks that the gateway accepts it, so each rejection below is
//! caused by exactly the property the test changes.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

struct Setup {
    upstream: Upstream,
    gw: Gateway,
    claims: Value,
}

async fn setup() -> Setup {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("victim");
    gw.add_user(&user, &random_password(), &[]).await;
    let genuine = gw.issue_token(&user).await;
    let claims = jwt_claims(&genuine);
    // Control: our own signature over the genuine claims is accepted.
    let resigned = sign_hs256(&claims, gw.secret());
    get(&gw.url("/control"), Some(&resigned), &[])
        .await
        .expect_status(200);
    assert_eq!(upstream.count(), 1, "control request reached the upstream");
    Setup {
        upstream,
        gw,
        claims,
    }
}

/// Sends `token` as Bearer and as `?token=`; both must be 401 and unseen upstream.
async fn assert_rejected(s: &Setup, token: &str) {
    let before = s.upstream.count();
    get(&s.gw.url("/attack"), Some(token), &[])
        .await
        .expect_invalid_token();
    get(&s.gw.url(&format!("/attack?token={token}")), None, &[])
        .await
        .expect_invalid_token();
    get(
        &s.gw.url("/attack"),
        None,
        &[("cookie", &format!("token={token}"))],
    )
    .await
    .expect_invalid_token();
    assert_eq!(
        s.upstream.count(),
        before,
        "a rejected token reached the upstream"
    );
}

fn with(claims: &Value, key: &str, value: Value) -> Value {
    let mut c = claims.clone();
    c[key] = value;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_signature_is_401() {
    let s = setup().await;
    let good = sign_hs256(&s.claims, s.gw.secret());
    assert_rejected(&s, &tamper_signature(&good)).await;
    // A signature taken from another token.
    let other = sign_hs256(&with(&s.claims, "jti", json!("other")), s.gw.secret());
    let (head_payload, _) = good.rsplit_once('.').unwrap();
    let (_, other_sig) = other.rsplit_once('.').unwrap();
    assert_rejected(&s, &format!("{head_payload}.{other_sig}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_payload_is_401() {
    let s = setup().await;
    let good = sign_hs256(&s.claims, s.gw.secret());
    let parts: Vec<&str> = good.split('.').collect();
    let forged = with(&s.claims, "roles", json!(["admin"]));
    let payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        forged.to_string(),
    );
    assert_rejected(&s, &format!("{}.{}.{}", parts[0], payload, parts[2])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_401() {
    let s = setup().await;
    for alg in ["none", "None", "NONE"] {
        assert_rejected(&s, &unsigned_token(alg, &s.claims)).await;
    }
    // `none` header with the genuine signature kept.
    let good = sign_hs256(&s.claims, s.gw.secret());
    let sig = good.rsplit_once('.').unwrap().1;
    let unsigned = unsigned_token("none", &s.claims);
    assert_rejected(&s, &format!("{unsigned}{sig}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_hmac_algorithms_with_the_right_secret_are_401() {
    let s = setup().await;
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        assert_rejected(&s, &sign_hmac(alg, &s.claims, s.gw.secret())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_401() {
    let s = setup().await;
    let wrong = random_secret_text();
    assert_rejected(&s, &sign_hs256(&s.claims, wrong.as_bytes())).await;
    // The right secret plus the trailing newline the file has is a different key.
    let mut with_newline = s.gw.secret().to_vec();
    with_newline.push(b'\n');
    assert_rejected(&s, &sign_hs256(&s.claims, &with_newline)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_is_401_beyond_leeway() {
    let s = setup().await;
    let now = now_secs();
    let mut c = s.claims.clone();
    c["iat"] = json!(now - 7200);
    c["nbf"] = json!(now - 7200);
    // Leeway is 30 s: 10 s past exp is still accepted...
    c["exp"] = json!(now - 10);
    let before = s.upstream.count();
    get(
        &s.gw.url("/leeway"),
        Some(&sign_hs256(&c, s.gw.secret())),
        &[],
    )
    .await
    .expect_status(200);
    assert_eq!(s.upstream.count(), before + 1);
    // ...two minutes past is not.
    c["exp"] = json!(now - 120);
    assert_rejected(&s, &sign_hs256(&c, s.gw.secret())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_exp_is_401() {
    let s = setup().await;
    let mut c = s.claims.clone();
    c.as_object_mut().unwrap().remove("exp");
    assert_rejected(&s, &sign_hs256(&c, s.gw.secret())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbf_in_the_future_is_401() {
    let s = setup().await;
    let c = with(&s.claims, "nbf", json!(now_secs() + 3600));
    assert_rejected(&s, &sign_hs256(&c, s.gw.secret())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_issuer_is_401() {
    let s = setup().await;
    for iss in [json!("evil"), json!("Authgate"), json!("")] {
        assert_rejected(&s, &sign_hs256(&with(&s.claims, "iss", iss), s.gw.secret())).await;
    }
    let mut c = s.claims.clone();
    c.as_object_mut().unwrap().remove("iss");
    assert_rejected(&s, &sign_hs256(&c, s.gw.secret())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_subject_is_401() {
    let s = setup().await;
    let c = with(&s.claims, "sub", json!(unique("ghost")));
    assert_rejected(&s, &sign_hs256(&c, s.gw.secret())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_tokens_are_401() {
    let s = setup().await;
    for t in ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", "..."] {
        assert_rejected(&s, t).await;
    }
}

/// RFC 7515 §4.1.11: a correctly signed token whose header has `crit` is
/// refused (no extension is understood; an empty or non-array `crit` is
/// malformed), also on a second try, when a verified-token cache could
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crit_header_is_401() {
    let s = setup().await;
    let key = jsonwebtoken::EncodingKey::from_secret(s.gw.secret());
    // Control: a raw header without crit is accepted.
    let plain = sign_raw_header(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &s.claims,
        &key,
        Algorithm::HS256,
    );
    get(&s.gw.url("/control"), Some(&plain), &[])
        .await
        .expect_status(200);
    for member in CRIT_MEMBERS {
        let header = format!(r#"{{"alg":"HS256","typ":"JWT",{member}}}"#);
        let token = sign_raw_header(&header, &s.claims, &key, Algorithm::HS256);
        assert_rejected(&s, &token).await;
        assert_rejected(&s, &token).await;
    }
}
