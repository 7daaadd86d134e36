//! Secrets, tokens and digests computed independently of the gateway:
//! random names and passwords, JWT signing and tampering, one-time-key answers.

use super::*;

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("getrandom");
    buf
}

/// 48 random bytes written as text (base64url, 64 characters).
pub fn random_secret_text() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(48))
}

/// A unique, recognisable name for users, keys, passwords.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(random_bytes(6)))
}

pub fn random_password() -> String {
    format!("Pw-{}", URL_SAFE_NO_PAD.encode(random_bytes(18)))
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn md5_hex(data: &str) -> String {
    hex::encode(Md5::digest(data.as_bytes()))
}

/// The one-time-key answer, computed independently of the gateway:
/// md5hex(key + "|" + md5hex(user + ":" + realm + ":" + password)).
pub fn otk_answer(key: &str, user: &str, realm: &str, password: &str) -> String {
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    md5_hex(&format!("{key}|{ha1}"))
}

/// The JWT's header and payload, decoded without verification.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let h = it.next().expect("JWT header");
    let p = it.next().expect("JWT payload");
    let dec = |s: &str| -> Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .expect("JWT segment is base64url");
        serde_json::from_slice(&bytes).expect("JWT segment is JSON")
    };
    (dec(h), dec(p))
}

pub fn jwt_claims(token: &str) -> Value {
    jwt_parts(token).1
}

/// Signs `claims` with `alg` (HMAC family) and `secret`.
pub fn sign_hmac(alg: jsonwebtoken::Algorithm, claims: &Value, secret: &[u8]) -> String {
    let header = jsonwebtoken::Header::new(alg);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign JWT")
}

pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    sign_hmac(jsonwebtoken::Algorithm::HS256, claims, secret)
}

/// `claims` under a raw JSON `header` (kept byte for byte, so it may hold
/// members `jsonwebtoken::Header` cannot express), correctly signed with
/// `key` and `alg`.
pub fn sign_raw_header(
    header: &str,
    claims: &Value,
    key: &jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign test token");
    format!("{message}.{signature}")
}

/// `crit` members (with the rest of a header after them) that must make a
/// correctly signed token fail: RFC 7515 §4.1.11, no extension is understood.
pub const CRIT_MEMBERS: [&str; 6] = [
    r#""crit":["x-unknown"],"x-unknown":true"#,
    r#""crit":["exp"]"#,
    r#""crit":[]"#,
    r#""crit":"x-unknown""#,
    r#""crit":null"#,
    r#""crit":["x-unknown"]"#,
];

/// `{"alg": alg_name, "typ":"JWT"}.payload.` with an empty signature.
pub fn unsigned_token(alg_name: &str, claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(json!({ "alg": alg_name, "typ": "JWT" }).to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{h}.{p}.")
}

/// Changes one character in the middle of the signature (not the last one,
/// whose low bits may be padding).
pub fn tamper_signature(token: &str) -> String {
    let (rest, sig) = token.rsplit_once('.').expect("JWT has a signature");
    let mut chars: Vec<char> = sig.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    format!("{rest}.{}", chars.into_iter().collect::<String>())
}

/// Splits an `X-Auth-Roles` value into a sorted list (empty value → empty list).
pub fn roles_of(value: &str) -> Vec<String> {
    let mut v: Vec<String> = value
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    v
}

/// Deterministic pseudo-random bytes (xorshift), cheap to make in bulk.
pub fn pseudo_random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}
