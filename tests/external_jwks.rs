//! External identity providers (`[[jwt.jwks]]`): tokens signed by a
//! provider's keys, verified against the JWK set it publishes, here served
//! by a small local HTTP server that counts its fetches.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::tls::{Ca, jwt_key_pair, server_config};
use common::*;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::watch;

const ISSUER: &str = "https://idp.test/realms/main";
const AUDIENCE: &str = "authgate-tests";

/// Serves a JWK set at `/jwks.json` and counts the fetches.
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    _stop: watch::Sender<bool>,
}

impl JwksServer {
    async fn start(set: &Value) -> JwksServer {
        JwksServer::start_with(set, None).await
    }

    /// With `tls`, the set is served over HTTPS.
    async fn start_with(set: &Value, tls: Option<Arc<rustls::ServerConfig>>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(set.to_string()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let (b, f) = (body.clone(), fetches.clone());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (b, f) = (b.clone(), f.clone());
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            match acceptor {
                                None => serve_jwks(stream, b, f).await,
                                Some(acceptor) => {
                                    if let Ok(tls) = acceptor.accept(stream).await {
                                        serve_jwks(tls, b, f).await;
                                    }
                                }
                            }
                        });
                    }
                }
            }
        });
        JwksServer {
            url: format!("{scheme}://localhost:{}/jwks.json", addr.port()),
            body,
            fetches,
            _stop: stop,
        }
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    /// From now on, serve `set`.
    fn serve(&self, set: &Value) {
        *self.body.lock().unwrap() = set.to_string();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    async fn wait_for_fetches(&self, n: usize, timeout: Duration) -> bool {
        poll_until(timeout, || async { self.fetches() >= n }).await
    }
}

/// Answers `/jwks.json` with the current set on one connection.
async fn serve_jwks<S>(io: S, body: Arc<Mutex<String>>, fetches: Arc<AtomicUsize>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (body, fetches) = (body.clone(), fetches.clone());
        async move {
            let response = if req.uri().path() == "/jwks.json" {
                fetches.fetch_add(1, Ordering::SeqCst);
                let text = body.lock().unwrap().clone();
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(text)))
            } else {
                Response::builder()
                    .status(404)
                    .body(Full::new(Bytes::new()))
            };
            Ok::<_, std::convert::Infallible>(response.unwrap())
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// A provider's signing key and its public JWK.
struct IdpKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl IdpKey {
    fn new(dir: &TempDir, kid: &str, algorithm: &str) -> IdpKey {
        let (private, _public) = jwt_key_pair(dir.path(), kid, algorithm);
        let pem = std::fs::read(private).unwrap();
        let (alg, encoding) = match algorithm {
            "ES256" => (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).unwrap()),
            "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).unwrap()),
            _ => (Algorithm::EdDSA, EncodingKey::from_ed_pem(&pem).unwrap()),
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let jwk = serde_json::to_value(jwk).unwrap();
        assert!(jwk.get("d").is_none(), "test JWK must be public: {jwk}");
        IdpKey {
            kid: kid.to_string(),
            alg,
            encoding,
            jwk,
        }
    }

    /// `claims` signed by this key with its `kid` (or `kid`).
    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn set_of(keys: &[&IdpKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

/// Provider claims for `sub` with `roles` under `realm_access.roles`.
fn claims(sub: &str, roles: &[&str]) -> Value {
    let now = now_secs();
    json!({
        "iss": ISSUER,
        "sub": sub,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": unique("jti-"),
        "realm_access": { "roles": roles },
    })
}

fn with(claims: &Value, key: &str, value: Value) -> Value {
    let mut c = claims.clone();
    c[key] = value;
    c
}

fn provider_toml(url: &str, refresh: u64, min_refresh: u64) -> String {
    format!(
        "[[jwt.jwks]]\nurl = \"{url}\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n\
         roles_claim = \"realm_access.roles\"\nrefresh = {refresh}\nmin_refresh = {min_refresh}\n"
    )
}

async fn gateway(
    upstream: &Upstream,
    jwks: &JwksServer,
    refresh: u64,
    min_refresh: u64,
) -> Gateway {
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = provider_toml(&jwks.url(), refresh, min_refresh);
    Gateway::start_with(opts).await
}

async fn assert_rejected(gw: &Gateway, upstream: &Upstream, token: &str, what: &str) {
    let before = upstream.count();
    let r = get(&gw.url("/ext"), Some(token), &[]).await;
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    r.expect_invalid_token();
    assert_eq!(upstream.count(), before, "{what}: reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_token_is_accepted_with_roles_from_a_dotted_claim() {
    let dir = tempfile::tempdir().unwrap();
    let es = IdpKey::new(&dir, "idp-es-1", "ES256");
    let rs = IdpKey::new(&dir, "idp-rs-1", "RS256");
    let stranger = IdpKey::new(&dir, "stranger", "ES256");
    let jwks = JwksServer::start(&set_of(&[&es, &rs])).await;
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, &jwks, 300, 30).await;

    let sub = unique("ext-user-");
    for key in [&es, &rs] {
        let token = key.sign(&claims(&sub, &["reader", "ops"]));
        let r = get(&gw.url("/ext/data?x=1"), Some(&token), &[]).await;
        r.expect_status(200);
        let rec = upstream.last();
        assert_eq!(rec.uri, "/ext/data?x=1");
        assert_eq!(rec.header("x-auth-user"), Some(sub.clone()));
        assert_eq!(rec.header("x-auth-method").as_deref(), Some("jwt"));
        assert_eq!(
            roles_of(&rec.header("x-auth-roles").unwrap()),
            vec!["ops", "reader"],
            "roles come from realm_access.roles"
        );
        assert!(!rec.has_header("authorization"));
    }
    assert!(jwks.fetches() >= 1);

    // Roles decide role-gated routes; only the configured claim counts.
    let reader = es.sign(&with(&claims(&sub, &["reader"]), "roles", json!(["admin"])));
    get(&gw.url("/admin/x"), Some(&reader), &[])
        .await
        .expect_error(403, "PERMISSION_DENIED", "MISSING_ROLE");
    let admin = es.sign(&claims(&sub, &["admin"]));
    get(&gw.url("/admin/x"), Some(&admin), &[])
        .await
        .expect_status(200);
    assert_eq!(
        upstream.last().header("x-auth-roles").as_deref(),
        Some("admin")
    );

    // Logout revokes a provider token by its jti.
    let leaving = es.sign(&claims(&sub, &["reader"]));
    get(&gw.url("/ext/before-logout"), Some(&leaving), &[])
        .await
        .expect_status(200);
    post_json(&gw.url("/auth/logout"), Some(&leaving), &json!({}))
        .await
        .expect_status(200);
    assert_rejected(&gw, &upstream, &leaving, "a provider token after logout").await;

    // `aud` may be a list that contains the audience.
    let listed = es.sign(&with(
        &claims(&sub, &["reader"]),
        "aud",
        json!(["another-service", AUDIENCE]),
    ));
    get(&gw.url("/ext/listed"), Some(&listed), &[])
        .await
        .expect_status(200);

    let base = claims(&sub, &["reader"]);
    let now = now_secs();
    let mut kidless_header = Header::new(Algorithm::ES256);
    kidless_header.kid = None;
    let kidless = jsonwebtoken::encode(&kidless_header, &base, &es.encoding).unwrap();
    let cases = [
        ("no kid", kidless),
        (
            "wrong audience",
            es.sign(&with(&base, "aud", json!("another-service"))),
        ),
        (
            "expired",
            es.sign(&with(
                &with(&base, "exp", json!(now - 3600)),
                "iat",
                json!(now - 7200),
            )),
        ),
        (
            "signed by a key not in the set, under a published kid",
            stranger.sign_as(&es.kid, &base),
        ),
        (
            "the RSA key's signature under the EC kid",
            rs.sign_as(&es.kid, &base),
        ),
        ("a kid the provider never published", stranger.sign(&base)),
        (
            "another issuer",
            es.sign(&with(&base, "iss", json!("https://evil.test"))),
        ),
        (
            "the provider's key with the gateway's own issuer",
            es.sign(&with(&base, "iss", json!("authgate"))),
        ),
        (
            "not valid before an hour from now",
            es.sign(&with(&base, "nbf", json!(now + 3600))),
        ),
        (
            "HS256 with the gateway's own secret",
            sign_hs256(&base, gw.secret()),
        ),
    ];
    // Every case is tried before failing, so one report lists them all.
    let mut accepted = Vec::new();
    for (what, token) in &cases {
        let before = upstream.count();
        let r = get(&gw.url("/ext"), Some(token), &[]).await;
        if r.status != 401 || upstream.count() != before {
            accepted.push(format!("{what}: HTTP {}", r.status));
        } else {
            r.expect_invalid_token();
        }
    }
    assert!(
        accepted.is_empty(),
        "provider tokens that must be refused with 401 were not: {accepted:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_at_the_provider_is_picked_up_on_an_unknown_kid() {
    let dir = tempfile::tempdir().unwrap();
    let first = IdpKey::new(&dir, "2026-10", "ES256");
    let second = IdpKey::new(&dir, "2026-11", "EdDSA");
    let jwks = JwksServer::start(&set_of(&[&first])).await;
    let upstream = Upstream::start().await;
    // A long periodic refresh: only the unknown kid can trigger the fetch.
    let gw = gateway(&upstream, &jwks, 3600, 1).await;
    let sub = unique("rotating-");

    let old = first.sign(&claims(&sub, &["reader"]));
    get(&gw.url("/before"), Some(&old), &[])
        .await
        .expect_status(200);

    // The provider rotates: only the new key is published now.
    jwks.serve(&set_of(&[&second]));
    let new = second.sign(&claims(&sub, &["reader"]));
    let started = Instant::now();
    let picked_up = poll_until(Duration::from_secs(10), || async {
        get(&gw.url("/after"), Some(&new), &[]).await.status == 200
    })
    .await;
    assert!(
        picked_up,
        "a token of the provider's new key was not accepted within 10 s ({} fetches); log:\n{}",
        jwks.fetches(),
        gw.logs()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let rec = upstream.last();
    assert_eq!(rec.path(), "/after");
    assert_eq!(rec.header("x-auth-user"), Some(sub.clone()));

    // The retired key is gone with the old set.
    let old_again = first.sign(&claims(&sub, &["reader"]));
    assert_rejected(
        &gw,
        &upstream,
        &old_again,
        "token of a key the provider retired",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_refresh_picks_up_a_rotation_without_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let first = IdpKey::new(&dir, "p-1", "ES256");
    let second = IdpKey::new(&dir, "p-2", "ES256");
    let jwks = JwksServer::start(&set_of(&[&first])).await;
    let upstream = Upstream::start().await;
    // refresh = 10 s (the smallest allowed); unknown kids may not refetch.
    let gw = gateway(&upstream, &jwks, 10, 3600).await;
    let sub = unique("periodic-");
    get(&gw.url("/p"), Some(&first.sign(&claims(&sub, &[]))), &[])
        .await
        .expect_status(200);
    let fetched = jwks.fetches();
    assert!(fetched >= 1);

    jwks.serve(&set_of(&[&first, &second]));
    assert!(
        jwks.wait_for_fetches(fetched + 1, Duration::from_secs(20))
            .await,
        "no periodic refresh within 20 s with refresh = 10"
    );
    let token = second.sign(&claims(&sub, &[]));
    get(&gw.url("/p2"), Some(&token), &[])
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_does_not_flood_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let key = IdpKey::new(&dir, "real-kid", "ES256");
    let jwks = JwksServer::start(&set_of(&[&key])).await;
    let upstream = Upstream::start().await;
    let gw = Arc::new(gateway(&upstream, &jwks, 300, 30).await);
    let sub = unique("flood-");
    get(&gw.url("/warm"), Some(&key.sign(&claims(&sub, &[]))), &[])
        .await
        .expect_status(200);
    let before = jwks.fetches();
    assert!(
        (1..=2).contains(&before),
        "fetches before the flood: {before}"
    );
    let seen = upstream.count();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let token = key.sign_as(&unique("random-kid-"), &claims(&sub, &[]));
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            get(&gw.url("/flood"), Some(&token), &[]).await.status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 401, "unknown kid must be 401");
    }
    let elapsed = started.elapsed();
    let during = jwks.fetches() - before;
    assert!(
        during <= 1,
        "50 unknown kids within min_refresh caused {during} JWK set fetches"
    );
    assert!(
        elapsed < Duration::from_secs(30),
        "the flood took {elapsed:?}: requests wait on the provider"
    );
    assert_eq!(upstream.count(), seen, "a flood token reached the upstream");

    // The real key still works, without another fetch.
    let fetches = jwks.fetches();
    get(&gw.url("/after"), Some(&key.sign(&claims(&sub, &[]))), &[])
        .await
        .expect_status(200);
    assert_eq!(jwks.fetches(), fetches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_jwks_over_https_is_verified_with_upstream_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "idp");
    let idp_cert = ca.server_cert("idp");
    let key = IdpKey::new(&dir, "tls-kid", "RS256");
    let jwks = JwksServer::start_with(&set_of(&[&key]), Some(server_config(&idp_cert, None))).await;
    assert!(jwks.url().starts_with("https://localhost:"));
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = provider_toml(&jwks.url(), 300, 1);
    opts.upstream_extra_toml = format!("ca_file = \"{}\"\n", ca.cert.display());
    let gw = Gateway::start_with(opts).await;
    let sub = unique("tls-idp-");
    let token = key.sign(&claims(&sub, &["reader"]));
    get(&gw.url("/tls-idp"), Some(&token), &[])
        .await
        .expect_status(200);
    assert_eq!(upstream.last().header("x-auth-user"), Some(sub.clone()));
    assert!(jwks.fetches() >= 1);

    // Without the CA the provider's certificate is not trusted: no keys.
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = provider_toml(&jwks.url(), 300, 1);
    let untrusting = Gateway::start_with(opts).await;
    let fetched = jwks.fetches();
    assert_rejected(
        &untrusting,
        &upstream,
        &token,
        "keys from an untrusted provider",
    )
    .await;
    assert_eq!(
        jwks.fetches(),
        fetched,
        "no set was served over an untrusted connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_token_without_aud_is_401_when_an_audience_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let key = IdpKey::new(&dir, "aud-kid", "ES256");
    let jwks = JwksServer::start(&set_of(&[&key])).await;
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, &jwks, 300, 30).await;
    let sub = unique("no-aud-");
    // Control: with the audience the token is accepted.
    get(&gw.url("/aud"), Some(&key.sign(&claims(&sub, &[]))), &[])
        .await
        .expect_status(200);
    // README: "audience: when set, tokens must carry this aud".
    let mut no_aud = claims(&sub, &[]);
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_rejected(&gw, &upstream, &key.sign(&no_aud), "a token without aud").await;
    assert_rejected(
        &gw,
        &upstream,
        &key.sign(&with(&claims(&sub, &[]), "aud", json!([]))),
        "a token with an empty aud list",
    )
    .await;
}

/// A provider token with `crit` in its header is refused although its
/// signature verifies with the provider's JWKS (RFC 7515 §4.1.11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_token_with_crit_header_is_401() {
    let dir = tempfile::tempdir().unwrap();
    let es = IdpKey::new(&dir, "idp-crit-es", "ES256");
    let rs = IdpKey::new(&dir, "idp-crit-rs", "RS256");
    let jwks = JwksServer::start(&set_of(&[&es, &rs])).await;
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, &jwks, 300, 30).await;
    let sub = unique("ext-crit-");
    for key in [&es, &rs] {
        let alg = format!("{:?}", key.alg);
        let plain = format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{}"}}"#, key.kid);
        let control = sign_raw_header(&plain, &claims(&sub, &[]), &key.encoding, key.alg);
        get(&gw.url("/ext/control"), Some(&control), &[])
            .await
            .expect_status(200);
        for member in CRIT_MEMBERS {
            let header = format!(
                r#"{{"alg":"{alg}","typ":"JWT","kid":"{}",{member}}}"#,
                key.kid
            );
            let token = sign_raw_header(&header, &claims(&sub, &[]), &key.encoding, key.alg);
            assert_rejected(&gw, &upstream, &token, &header).await;
            assert_rejected(&gw, &upstream, &token, &header).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Who a caller is: a provider and a subject together (issue 22, items 2, 13)
// ---------------------------------------------------------------------------

/// The provider's name when `[[jwt.jwks]]` has none: the host of its issuer.
const PROVIDER_NAME: &str = "idp.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_subject_named_like_a_store_user_is_refused_and_owns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let es = IdpKey::new(&dir, "idp-es-owner", "ES256");
    let jwks = JwksServer::start(&set_of(&[&es])).await;
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, &jwks, 300, 30).await;
    gw.add_user("alice", "alice-password-1", &["admin"]).await;
    let (alice_key_id, alice_key) = gw.create_key_cli("alice", &[]).await;
    let keys_url = gw.url("/v1.0/accesskeys");

    // alice at the provider, with no roles: not the local alice. Nothing she
    // asks for is served, on proxied routes, verify or the key endpoints.
    let alice_at_idp = es.sign(&claims("alice", &[]));
    let before = upstream.count();
    get(&gw.url("/ext"), Some(&alice_at_idp), &[])
        .await
        .expect_error(403, "PERMISSION_DENIED", "ACCOUNT_CONFLICT");
    get(&gw.url("/_authgate/verify/ext"), Some(&alice_at_idp), &[])
        .await
        .expect_error(403, "PERMISSION_DENIED", "ACCOUNT_CONFLICT");
    get(&keys_url, Some(&alice_at_idp), &[]).await.expect_error(
        403,
        "PERMISSION_DENIED",
        "ACCOUNT_CONFLICT",
    );
    post_json(&keys_url, Some(&alice_at_idp), &json!({"expire": 3600}))
        .await
        .expect_error(403, "PERMISSION_DENIED", "ACCOUNT_CONFLICT");
    let auth = format!("Bearer {alice_at_idp}");
    request(
        "DELETE",
        &gw.url(&format!("/v1.0/accesskeys/{alice_key_id}")),
        &[("authorization", &auth)],
        None,
    )
    .await
    .expect_error(403, "PERMISSION_DENIED", "ACCOUNT_CONFLICT");
    assert_eq!(
        upstream.count(),
        before,
        "a conflicting subject reached the upstream"
    );

    // A subject of its own, even with role admin at the provider, owns no
    // keys and manages nobody's.
    let ext_admin = es.sign(&claims("ext-admin", &["admin"]));
    get(&keys_url, Some(&ext_admin), &[]).await.expect_error(
        403,
        "PERMISSION_DENIED",
        "STORE_USER_REQUIRED",
    );
    post_json(&keys_url, Some(&ext_admin), &json!({"expire": 3600}))
        .await
        .expect_error(403, "PERMISSION_DENIED", "STORE_USER_REQUIRED");
    let auth = format!("Bearer {ext_admin}");
    for method in ["GET", "DELETE"] {
        request(
            method,
            &gw.url(&format!("/v1.0/accesskeys/{alice_key_id}")),
            &[("authorization", &auth)],
            None,
        )
        .await
        .expect_error(403, "PERMISSION_DENIED", "STORE_USER_REQUIRED");
    }

    // alice's key is untouched and still carries her roles.
    get(
        &gw.url(&format!("/admin/x?accesskey={alice_key}")),
        None,
        &[],
    )
    .await
    .expect_status(200);
    assert_eq!(
        upstream.last().header("x-auth-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        upstream.last().header("x-auth-provider").as_deref(),
        Some("local")
    );
    let alice_token = gw.issue_token("alice").await;
    let listed = get(&keys_url, Some(&alice_token), &[]).await;
    listed.expect_status(200);
    assert_eq!(listed.json()["result"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_carry_their_provider_upstream_and_in_verify_answers() {
    let dir = tempfile::tempdir().unwrap();
    let es = IdpKey::new(&dir, "idp-es-prov", "ES256");
    let jwks = JwksServer::start(&set_of(&[&es])).await;
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, &jwks, 300, 30).await;
    gw.add_user("loc", "loc-password-1", &[]).await;

    let ext = es.sign(&claims("ext-user", &["reader"]));
    let spoof = [("x-auth-provider", "local"), ("x_auth_provider", "local")];
    get(&gw.url("/ext"), Some(&ext), &spoof)
        .await
        .expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.header("x-auth-user").as_deref(), Some("ext-user"));
    assert_eq!(
        rec.header_all("x-auth-provider"),
        vec![PROVIDER_NAME.to_string()]
    );
    assert!(rec.header("x_auth_provider").is_none());

    let verified = get(&gw.url("/_authgate/verify/ext"), Some(&ext), &spoof).await;
    verified.expect_status(200);
    assert_eq!(
        verified.header("x-auth-provider").as_deref(),
        Some(PROVIDER_NAME)
    );

    let local = gw.issue_token("loc").await;
    get(
        &gw.url("/ext"),
        Some(&local),
        &[("x-auth-provider", PROVIDER_NAME)],
    )
    .await
    .expect_status(200);
    assert_eq!(
        upstream.last().header_all("x-auth-provider"),
        vec!["local".to_string()]
    );
    let verified = get(&gw.url("/_authgate/verify/ext"), Some(&local), &[]).await;
    assert_eq!(verified.header("x-auth-provider").as_deref(), Some("local"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_subjects_outside_the_username_alphabet_are_401() {
    let dir = tempfile::tempdir().unwrap();
    let es = IdpKey::new(&dir, "idp-es-alpha", "ES256");
    let jwks = JwksServer::start(&set_of(&[&es])).await;
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, &jwks, 300, 30).await;
    let long = "a".repeat(65);
    for sub in [
        "",
        "two words",
        "a/b",
        "a,b",
        "caf\u{e9}",
        "x\u{202e}y",
        "a:b",
        &long,
    ] {
        let token = es.sign(&claims(sub, &[]));
        let before = upstream.count();
        let r = get(&gw.url("/ext"), Some(&token), &[]).await;
        assert_eq!(r.status, 401, "subject {sub:?}: {}", r.text());
        r.expect_invalid_token();
        assert_eq!(
            upstream.count(),
            before,
            "subject {sub:?} reached the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_subjects_are_provider_and_user_together() {
    let dir = tempfile::tempdir().unwrap();
    let one = IdpKey::new(&dir, "idp-one", "ES256");
    let two = IdpKey::new(&dir, "idp-two", "ES256");
    let jwks_one = JwksServer::start(&set_of(&[&one])).await;
    let jwks_two = JwksServer::start(&set_of(&[&two])).await;
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    let issuer_two = "https://idp-two.test/realms/main";
    opts.extra_toml = format!(
        "{}[[jwt.jwks]]\nurl = \"{}\"\nissuer = \"{issuer_two}\"\naudience = \"{AUDIENCE}\"\n\
         roles_claim = \"realm_access.roles\"\n\n\
         [ratelimit]\nstore = \"memory\"\n\n\
         [[ratelimit.rule]]\nname = \"per-user\"\nby = \"user\"\nrate = 0.001\nburst = 1\n",
        provider_toml(&jwks_one.url(), 300, 30),
        jwks_two.url()
    );
    let gw = Gateway::start_with(opts).await;
    // One name at two providers: two callers, two budgets.
    let at_one = one.sign(&claims("dana", &[]));
    let at_two = two.sign(&with(&claims("dana", &[]), "iss", json!(issuer_two)));
    get(&gw.url("/ext/1"), Some(&at_one), &[])
        .await
        .expect_status(200);
    let second = get(&gw.url("/ext/2"), Some(&at_two), &[]).await;
    second.expect_status(200);
    assert_eq!(
        upstream.last().header("x-auth-provider").as_deref(),
        Some("idp-two.test")
    );
    // Each caller's own budget is spent.
    let third = get(&gw.url("/ext/3"), Some(&at_one), &[]).await;
    third.expect_status(429);
    assert_eq!(third.json()["error"]["reason"], "RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_published_for_encryption_do_not_verify_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let sig = IdpKey::new(&dir, "idp-sig", "ES256");
    let mut enc = IdpKey::new(&dir, "idp-enc", "ES256");
    enc.jwk["use"] = json!("enc");
    let mut enc_ops = IdpKey::new(&dir, "idp-enc-ops", "RS256");
    enc_ops.jwk.as_object_mut().unwrap().remove("use");
    enc_ops.jwk["key_ops"] = json!(["encrypt"]);
    let mut verify_ops = IdpKey::new(&dir, "idp-verify-ops", "ES256");
    verify_ops.jwk.as_object_mut().unwrap().remove("use");
    verify_ops.jwk["key_ops"] = json!(["verify"]);
    let jwks = JwksServer::start(&set_of(&[&sig, &enc, &enc_ops, &verify_ops])).await;
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, &jwks, 300, 30).await;
    for key in [&sig, &verify_ops] {
        get(
            &gw.url("/ext"),
            Some(&key.sign(&claims("sig-user", &[]))),
            &[],
        )
        .await
        .expect_status(200);
    }
    for key in [&enc, &enc_ops] {
        assert_rejected(
            &gw,
            &upstream,
            &key.sign(&claims("enc-user", &[])),
            &key.kid,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_warns_about_a_provider_without_audience() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = format!(
        "[[jwt.jwks]]\nname = \"corp-idp\"\nurl = \"https://idp.test/jwks.json\"\nissuer = \"{ISSUER}\"\n"
    );
    let gw = Gateway::start_with(opts).await;
    let out = gw.cli(&["check-config"], None).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning") && stdout.contains("jwt.jwks[0]") && stdout.contains("audience"),
        "{stdout}"
    );
    // With an audience there is nothing to warn about.
    let mut opts = gw.options().clone();
    opts.extra_toml = provider_toml("https://idp.test/jwks.json", 300, 30);
    gw.write_config(&gw.render_config(&opts));
    let out = gw.cli(&["check-config"], None).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !stdout.contains("warning"),
        "{stdout}"
    );
}
