//! Asymmetric JWT keys (`[[jwt.keys]]`): RS256, ES256 and EdDSA tokens are
//! issued and accepted, verify-only keys keep old tokens valid, a token is
//! checked only against the key its `kid` names and only with that key's
//! algorithm, and `/.well-known/jwks.json` publishes the public halves.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::tls::jwt_key_pair;
use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A key pair on disk and the name it goes by.
#[derive(Clone, Debug)]
struct Key {
    kid: String,
    algorithm: &'static str,
    private: PathBuf,
    public: PathBuf,
}

impl Key {
    fn new(dir: &Path, kid: &str, algorithm: &'static str) -> Key {
        let (private, public) = jwt_key_pair(dir, kid, algorithm);
        Key {
            kid: kid.to_string(),
            algorithm,
            private,
            public,
        }
    }

    fn alg(&self) -> Algorithm {
        match self.algorithm {
            "ES256" => Algorithm::ES256,
            "RS256" => Algorithm::RS256,
            _ => Algorithm::EdDSA,
        }
    }

    /// `[[jwt.keys]]` for this key; `signing` includes the private key.
    fn toml(&self, signing: bool) -> String {
        let mut s = format!(
            "[[jwt.keys]]\nkid = \"{}\"\nalgorithm = \"{}\"\npublic_key = \"{}\"\n",
            self.kid,
            self.algorithm,
            self.public.display()
        );
        if signing {
            s.push_str(&format!("private_key = \"{}\"\n", self.private.display()));
        }
        s
    }

    fn encoding(&self) -> EncodingKey {
        let pem = std::fs::read(&self.private).unwrap();
        match self.algorithm {
            "ES256" => EncodingKey::from_ec_pem(&pem).unwrap(),
            "RS256" => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ed_pem(&pem).unwrap(),
        }
    }

    fn decoding(&self) -> DecodingKey {
        let pem = std::fs::read(&self.public).unwrap();
        match self.algorithm {
            "ES256" => DecodingKey::from_ec_pem(&pem).unwrap(),
            "RS256" => DecodingKey::from_rsa_pem(&pem).unwrap(),
            _ => DecodingKey::from_ed_pem(&pem).unwrap(),
        }
    }

    fn public_pem(&self) -> Vec<u8> {
        std::fs::read(&self.public).unwrap()
    }

    /// `claims` signed with this key's private half, with `alg` and `kid`
    /// in the header.
    fn sign(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        sign_with(alg, kid, claims, &self.encoding())
    }
}

fn sign_with(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).expect("sign test token")
}

fn keys_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("authgate-jwt-keys-")
        .tempdir()
        .unwrap()
}

fn options(upstream: &Upstream, keys_toml: &str) -> GatewayOptions {
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = keys_toml.to_string();
    opts
}

/// `kid` and `alg` of a token's header.
fn kid_alg(token: &str) -> (Option<String>, String) {
    let (header, _) = jwt_parts(token);
    (
        header["kid"].as_str().map(str::to_string),
        header["alg"].as_str().unwrap_or_default().to_string(),
    )
}

/// The token is accepted on a proxied route and the upstream sees `user`.
async fn assert_accepted(gw: &Gateway, upstream: &Upstream, token: &str, user: &str) {
    let before = upstream.count();
    let r = get(&gw.url("/accepted"), Some(token), &[]).await;
    r.expect_status(200);
    assert_eq!(upstream.count(), before + 1);
    let rec = upstream.last();
    assert_eq!(rec.header("x-auth-user").as_deref(), Some(user));
    assert_eq!(rec.header("x-auth-method").as_deref(), Some("jwt"));
    assert!(!rec.has_header("authorization"));
}

/// `token` as Bearer, `?token=` and cookie: 401 `invalid_token` each time,
/// and the upstream sees nothing.
async fn assert_rejected(gw: &Gateway, upstream: &Upstream, token: &str, what: &str) {
    let before = upstream.count();
    let bearer = get(&gw.url("/attack"), Some(token), &[]).await;
    assert_eq!(bearer.status, 401, "{what}: {}", bearer.text());
    bearer.expect_invalid_token();
    get(&gw.url(&format!("/attack?token={token}")), None, &[])
        .await
        .expect_invalid_token();
    get(
        &gw.url("/attack"),
        None,
        &[("cookie", &format!("token={token}"))],
    )
    .await
    .expect_invalid_token();
    assert_eq!(
        upstream.count(),
        before,
        "{what}: a rejected token reached the upstream"
    );
}

/// Tokens from `token issue` and from `/auth/login` carry the key's `kid`
/// and algorithm, verify with its public key, and are accepted.
async fn issued_and_accepted(algorithm: &'static str) {
    let dir = keys_dir();
    let key = Key::new(
        dir.path(),
        &format!("{}-2026-11", algorithm.to_lowercase()),
        algorithm,
    );
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(options(&upstream, &key.toml(true))).await;
    let user = unique("asym");
    let password = random_password();
    gw.add_user(&user, &password, &["reader", "ops"]).await;

    let from_cli = gw.issue_token(&user).await;
    let from_login = login_ok(&gw, &user, &password).await;
    for (how, token) in [("token issue", &from_cli), ("/auth/login", &from_login)] {
        assert_eq!(
            kid_alg(token),
            (Some(key.kid.clone()), algorithm.to_string()),
            "{how}: header of {token}"
        );
        // Independently: the signature verifies with the configured public key.
        let mut validation = Validation::new(key.alg());
        validation.set_issuer(&["authgate"]);
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(token, &key.decoding(), &validation)
            .unwrap_or_else(|e| panic!("{how}: token does not verify with the public key: {e}"));
        assert_eq!(data.claims["sub"], user.as_str());

        assert_accepted(&gw, &upstream, token, &user).await;
        assert_eq!(
            roles_of(&upstream.last().header("x-auth-roles").unwrap()),
            vec!["ops", "reader"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_are_issued_and_accepted() {
    issued_and_accepted("ES256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_are_issued_and_accepted() {
    issued_and_accepted("RS256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_tokens_are_issued_and_accepted() {
    issued_and_accepted("EdDSA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_only_key_accepts_tokens_signed_before_the_rotation() {
    let dir = keys_dir();
    let old = Key::new(dir.path(), "2026-10", "ES256");
    let new = Key::new(dir.path(), "2026-11", "EdDSA");
    let upstream = Upstream::start().await;
    let mut gw = Gateway::start_with(options(&upstream, &old.toml(true))).await;
    let user = unique("rotated");
    let password = random_password();
    gw.add_user(&user, &password, &[]).await;
    let old_cli = gw.issue_token(&user).await;
    let old_login = login_ok(&gw, &user, &password).await;
    assert_eq!(kid_alg(&old_cli).0.as_deref(), Some("2026-10"));
    assert_eq!(kid_alg(&old_login).0.as_deref(), Some("2026-10"));

    // The new key signs; the old one only verifies.
    gw.set_options(options(
        &upstream,
        &format!("{}{}", new.toml(true), old.toml(false)),
    ));
    gw.restart().await;
    for token in [&old_cli, &old_login] {
        assert_accepted(&gw, &upstream, token, &user).await;
    }
    let fresh = login_ok(&gw, &user, &password).await;
    assert_eq!(
        kid_alg(&fresh),
        (Some("2026-11".to_string()), "EdDSA".to_string())
    );
    assert_accepted(&gw, &upstream, &fresh, &user).await;
    let fresh_cli = gw.issue_token(&user).await;
    assert_eq!(kid_alg(&fresh_cli).0.as_deref(), Some("2026-11"));
    assert_accepted(&gw, &upstream, &fresh_cli, &user).await;

    // The old key's signature presented under the new key's id is refused.
    let claims = jwt_claims(&old_cli);
    assert_rejected(
        &gw,
        &upstream,
        &old.sign(Algorithm::ES256, Some("2026-11"), &claims),
        "ES256 signature under the EdDSA kid",
    )
    .await;

    // Once the old key is gone, its tokens stop working.
    gw.set_options(options(&upstream, &new.toml(true)));
    gw.restart().await;
    assert_rejected(&gw, &upstream, &old_cli, "token of a removed key").await;
    assert_accepted(&gw, &upstream, &fresh, &user).await;
}

struct Mixed {
    _dir: TempDir,
    es: Key,
    rs: Key,
    ed: Key,
    upstream: Upstream,
    gw: Gateway,
    user: String,
    claims: Value,
}

/// HS256 secret, ES256 `es` signing, RS256 `rs` and EdDSA `ed` verify-only
/// (the test holds every private key, so it can sign like an attacker who
/// stole none of them could not, and like one who knows the public keys).
async fn mixed() -> Mixed {
    let dir = keys_dir();
    let es = Key::new(dir.path(), "es", "ES256");
    let rs = Key::new(dir.path(), "rs", "RS256");
    let ed = Key::new(dir.path(), "ed", "EdDSA");
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(options(
        &upstream,
        &format!("{}{}{}", es.toml(true), rs.toml(false), ed.toml(false)),
    ))
    .await;
    let user = unique("target");
    gw.add_user(&user, &random_password(), &["admin"]).await;
    let genuine = gw.issue_token(&user).await;
    assert_eq!(kid_alg(&genuine).0.as_deref(), Some("es"));
    let claims = jwt_claims(&genuine);
    Mixed {
        _dir: dir,
        es,
        rs,
        ed,
        upstream,
        gw,
        user,
        claims,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_path_like_kids_are_401() {
    let m = mixed().await;
    // Controls: the genuine claims re-signed by each configured key under
    // its own kid and algorithm are accepted (verify-only keys included).
    for key in [&m.es, &m.rs, &m.ed] {
        let token = key.sign(key.alg(), Some(&key.kid), &m.claims);
        assert_accepted(&m.gw, &m.upstream, &token, &m.user).await;
    }
    // HS256 with the configured secret and no kid still works (mixed config).
    assert_accepted(
        &m.gw,
        &m.upstream,
        &sign_hs256(&m.claims, m.gw.secret()),
        &m.user,
    )
    .await;

    let public_path = m.es.public.display().to_string();
    let kids = [
        "nope".to_string(),
        "ES".to_string(),
        "es ".to_string(),
        "es\u{0}".to_string(),
        "../../etc/passwd".to_string(),
        "../../../../../../etc/passwd".to_string(),
        "/etc/passwd".to_string(),
        "..\\..\\windows\\win.ini".to_string(),
        "es/../es".to_string(),
        "./es".to_string(),
        "es.pub.pem".to_string(),
        public_path,
        "file:///etc/passwd".to_string(),
        String::new(),
        "x".repeat(5000),
    ];
    for kid in &kids {
        let token = m.es.sign(Algorithm::ES256, Some(kid), &m.claims);
        assert_rejected(&m.gw, &m.upstream, &token, &format!("kid {kid:.40?}")).await;
    }
    // A verify-only key's id with another key's signature.
    let token = m.es.sign(Algorithm::ES256, Some("ed"), &m.claims);
    assert_rejected(&m.gw, &m.upstream, &token, "ES256 signature under kid ed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithm_mismatch_and_hs_rs_confusion_are_401() {
    let m = mixed().await;
    let rs_pub = m.rs.public_pem();
    let es_pub = m.es.public_pem();
    let trimmed = |pem: &[u8]| pem.trim_ascii_end().to_vec();
    let mut cases: Vec<(String, String)> = vec![
        // The right key, a different algorithm of the same family.
        (
            "PS256 by the RSA key under kid rs".into(),
            m.rs.sign(Algorithm::PS256, Some("rs"), &m.claims),
        ),
        (
            "RS512 by the RSA key under kid rs".into(),
            m.rs.sign(Algorithm::RS512, Some("rs"), &m.claims),
        ),
        // Another key's algorithm and signature under a kid.
        (
            "RS256 by the RSA key under kid es".into(),
            m.rs.sign(Algorithm::RS256, Some("es"), &m.claims),
        ),
        (
            "EdDSA by the Ed25519 key under kid es".into(),
            m.ed.sign(Algorithm::EdDSA, Some("es"), &m.claims),
        ),
        (
            "ES256 by the EC key under kid rs".into(),
            m.es.sign(Algorithm::ES256, Some("rs"), &m.claims),
        ),
        // An asymmetric token without kid in a config that has a secret.
        (
            "ES256 without kid".into(),
            m.es.sign(Algorithm::ES256, None, &m.claims),
        ),
    ];
    // HS/RS confusion: HMAC keyed with the public key's PEM bytes, which
    // anyone can fetch, with and without kid, with and without the
    // trailing newline.
    for (name, pem) in [("rs", &rs_pub), ("es", &es_pub)] {
        for (variant, secret) in [("PEM", pem.clone()), ("trimmed PEM", trimmed(pem))] {
            let key = EncodingKey::from_secret(&secret);
            for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                cases.push((
                    format!("{alg:?} keyed with the {name} public {variant}, kid {name}"),
                    sign_with(alg, Some(name), &m.claims, &key),
                ));
                cases.push((
                    format!("{alg:?} keyed with the {name} public {variant}, no kid"),
                    sign_with(alg, None, &m.claims, &key),
                ));
            }
        }
    }
    // HS256 with the real secret but naming an asymmetric key.
    let secret = EncodingKey::from_secret(m.gw.secret());
    cases.push((
        "HS256 with the real secret under kid rs".into(),
        sign_with(Algorithm::HS256, Some("rs"), &m.claims, &secret),
    ));
    // A typ other than JWT, correctly signed.
    let mut odd = Header::new(Algorithm::ES256);
    odd.kid = Some("es".into());
    odd.typ = Some("secevent+jwt".into());
    cases.push((
        "typ secevent+jwt".into(),
        jsonwebtoken::encode(&odd, &m.claims, &m.es.encoding()).unwrap(),
    ));
    // alg none under a valid kid.
    let head =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": "es"}).to_string());
    let body = URL_SAFE_NO_PAD.encode(m.claims.to_string());
    cases.push(("alg none under kid es".into(), format!("{head}.{body}.")));

    for (what, token) in &cases {
        assert_rejected(&m.gw, &m.upstream, token, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_kidless_and_confused_tokens_are_401() {
    let dir = keys_dir();
    let rs = Key::new(dir.path(), "rs-only", "RS256");
    let es = Key::new(dir.path(), "es-verify", "ES256");
    let upstream = Upstream::start().await;
    let mut opts = options(&upstream, &rs.toml(true));
    opts.omit_secret_file = true;
    let mut gw = Gateway::start_with(opts.clone()).await;
    let user = unique("nosecret");
    gw.add_user(&user, &random_password(), &[]).await;
    let genuine = gw.issue_token(&user).await;
    assert_eq!(
        kid_alg(&genuine),
        (Some("rs-only".to_string()), "RS256".to_string())
    );
    assert_accepted(&gw, &upstream, &genuine, &user).await;
    let claims = jwt_claims(&genuine);
    // One asymmetric key and no secret: a token without kid is checked
    // against that key (README), with its algorithm only.
    let kidless = rs.sign(Algorithm::RS256, None, &claims);
    assert_accepted(&gw, &upstream, &kidless, &user).await;

    let pem = rs.public_pem();
    for secret in [pem.clone(), pem.trim_ascii_end().to_vec()] {
        let key = EncodingKey::from_secret(&secret);
        for kid in [None, Some("rs-only")] {
            let token = sign_with(Algorithm::HS256, kid, &claims, &key);
            assert_rejected(
                &gw,
                &upstream,
                &token,
                &format!("HS256 with public PEM, kid {kid:?}"),
            )
            .await;
        }
    }
    let token = sign_hs256(&claims, gw.secret());
    assert_rejected(&gw, &upstream, &token, "HS256 with the unused secret file").await;

    // Two asymmetric keys and no secret: a token must name its key.
    opts.extra_toml = format!("{}{}", rs.toml(true), es.toml(false));
    gw.set_options(opts);
    gw.restart().await;
    assert_accepted(&gw, &upstream, &genuine, &user).await;
    assert_rejected(&gw, &upstream, &kidless, "kid-less token with two keys").await;
    let token = es.sign(Algorithm::ES256, None, &claims);
    assert_rejected(&gw, &upstream, &token, "kid-less ES256 token with two keys").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_endpoint_publishes_the_public_keys_only() {
    let m = mixed().await;
    let r = get(&m.gw.url("/.well-known/jwks.json"), None, &[]).await;
    r.expect_status(200);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .contains("json"),
        "content-type: {:?}",
        r.header("content-type")
    );
    let set = r.json();
    let keys = set["keys"].as_array().expect("`keys` array");
    assert_eq!(keys.len(), 3, "one JWK per configured key: {set}");
    let private_members = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    for jwk in keys {
        for member in private_members {
            assert!(
                jwk.get(member).is_none(),
                "JWK publishes private member {member:?}: {jwk}"
            );
        }
        assert_eq!(jwk["use"], "sig", "{jwk}");
        assert_ne!(jwk["kty"], "oct", "a symmetric key was published: {jwk}");
    }
    let secret_text = String::from_utf8(m.gw.secret().to_vec()).unwrap();
    assert!(!r.text().contains(&secret_text));
    assert!(!r.text().contains(&URL_SAFE_NO_PAD.encode(m.gw.secret())));

    let by_kid = |kid: &str| -> Value {
        keys.iter()
            .find(|k| k["kid"] == kid)
            .unwrap_or_else(|| panic!("no JWK with kid {kid}: {set}"))
            .clone()
    };
    let expected = [
        (&m.es, "EC", Some("P-256"), "ES256"),
        (&m.rs, "RSA", None, "RS256"),
        (&m.ed, "OKP", Some("Ed25519"), "EdDSA"),
    ];
    for (key, kty, crv, alg) in expected {
        let jwk = by_kid(&key.kid);
        assert_eq!(jwk["kty"], kty, "{jwk}");
        assert_eq!(jwk["alg"], alg, "{jwk}");
        assert_eq!(jwk["crv"].as_str(), crv, "{jwk}");
        // The published material is the configured public key's.
        let mine =
            serde_json::to_value(Jwk::from_decoding_key(&key.decoding(), Some(key.alg())).unwrap())
                .unwrap();
        for member in ["x", "y", "n", "e"] {
            assert_eq!(jwk.get(member), mine.get(member), "{member} of {jwk}");
        }
    }
    let rsa = by_kid("rs");
    let n = URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap();
    assert_eq!(n.len(), 256, "2048-bit modulus");

    // An upstream can verify gateway-issued tokens with the published set.
    let password = random_password();
    let user = unique("jwks");
    m.gw.add_user(&user, &password, &[]).await;
    let token = login_ok(&m.gw, &user, &password).await;
    let parsed: JwkSet = serde_json::from_value(set.clone()).expect("a valid JWK set");
    let header = jsonwebtoken::decode_header(&token).unwrap();
    let kid = header.kid.clone().expect("issued token has a kid");
    let jwk = parsed.find(&kid).expect("the token's kid is published");
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&["authgate"]);
    validation.validate_aud = false;
    let data =
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .expect("the token verifies with the published JWK");
    assert_eq!(data.claims["sub"], user.as_str());

    // HS256 alone publishes an empty set.
    let hs = Gateway::start(&m.upstream).await;
    let r = get(&hs.url("/.well-known/jwks.json"), None, &[]).await;
    r.expect_status(200);
    assert_eq!(r.json(), json!({ "keys": [] }));
}

/// A token signed by a configured asymmetric key is refused when its header
/// has `crit` (RFC 7515 §4.1.11), for every algorithm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crit_header_is_401_with_asymmetric_keys() {
    let dir = keys_dir();
    let keys = [
        Key::new(dir.path(), "crit-es", "ES256"),
        Key::new(dir.path(), "crit-rs", "RS256"),
        Key::new(dir.path(), "crit-ed", "EdDSA"),
    ];
    let toml: String = keys
        .iter()
        .enumerate()
        .map(|(i, key)| key.toml(i == 0))
        .collect();
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(options(&upstream, &toml)).await;
    let user = unique("crit");
    gw.add_user(&user, &random_password(), &[]).await;
    let claims = jwt_claims(&gw.issue_token(&user).await);
    for key in &keys {
        let alg = key.algorithm;
        let plain = format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{}"}}"#, key.kid);
        let control = sign_raw_header(&plain, &claims, &key.encoding(), key.alg());
        assert_accepted(&gw, &upstream, &control, &user).await;
        for member in CRIT_MEMBERS {
            let header = format!(
                r#"{{"alg":"{alg}","typ":"JWT","kid":"{}",{member}}}"#,
                key.kid
            );
            let token = sign_raw_header(&header, &claims, &key.encoding(), key.alg());
            assert_rejected(&gw, &upstream, &token, &header).await;
            assert_rejected(&gw, &upstream, &token, &header).await;
        }
    }
}
