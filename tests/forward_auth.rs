//! Forward authentication, `/_authgate/verify[/PATH]`, end to end: real
//! nginx (`auth_request`) and real Caddy (`forward_auth`) running the
//! guides' files in front of a recording upstream, authgate deciding; and
//! the header forms (Traefik's `X-Forwarded-*`, nginx's `X-Original-*`,
//! Envoy's path prefix) sent directly, each judged exactly like the same
//! request proxied through authgate.

mod common;
#[path = "forward_auth/front.rs"]
mod front;

use std::time::Duration;

use common::*;
use front::{FrontProxy, Kind};

/// Everything a test needs: the recording upstream, authgate with the
/// default routes (`/` required, `/public` public, `/admin` role `admin`)
/// plus `/internal` without an upstream, trusting 127.0.0.1 as a proxy,
/// and the callers.
struct Setup {
    upstream: Upstream,
    gw: Gateway,
    /// alice: role `dev`.
    alice: String,
    /// root: role `admin`.
    root: String,
    alice_key_id: String,
    alice_key: String,
}

async fn setup() -> Setup {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.routes.push(RouteSpec::required("/internal", ""));
    let mut gw = Gateway::prepare(opts.clone());
    let text = gw.render_config(&opts).replacen(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        1,
    );
    gw.write_config(&text);
    gw.spawn().await;
    gw.add_user("alice", &random_password(), &["dev"]).await;
    gw.add_user("root", &random_password(), &["admin"]).await;
    let alice = gw.issue_token("alice").await;
    let root = gw.issue_token("root").await;
    let (alice_key_id, alice_key) = gw.create_key_cli("alice", &[]).await;
    Setup {
        upstream,
        gw,
        alice,
        root,
        alice_key_id,
        alice_key,
    }
}

fn verify_url(s: &Setup) -> String {
    s.gw.url("/_authgate/verify")
}

/// A verify request in Traefik's form for `method` and `uri`.
async fn traefik(s: &Setup, method: &str, uri: &str, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![
        ("x-forwarded-method", method),
        ("x-forwarded-uri", uri),
        ("x-forwarded-host", "app.example"),
        ("x-forwarded-proto", "https"),
    ];
    headers.extend_from_slice(extra);
    request("GET", &verify_url(s), &headers, None).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The identity headers of a 200 decision (or a recorded request).
fn identity_of(
    resp: &Resp,
) -> (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
) {
    (
        resp.header("x-auth-user"),
        resp.header("x-auth-roles"),
        resp.header("x-auth-method"),
        resp.header("x-auth-key-id"),
    )
}

// ---------------------------------------------------------------------------
// The header forms, directly
// ---------------------------------------------------------------------------

#[tokio::test]
async fn traefik_form_judges_the_forwarded_method_uri_and_credential() {
    let s = setup().await;
    let r = traefik(
        &s,
        "POST",
        "/admin/x",
        &[("authorization", &bearer(&s.root))],
    )
    .await;
    r.expect_status(200);
    assert!(r.body.is_empty(), "a decision has an empty body");
    assert_eq!(
        identity_of(&r),
        (
            Some("root".into()),
            Some("admin".into()),
            Some("jwt".into()),
            None
        )
    );
    // The access key in the judged query.
    let uri = format!("/hello?a=1&accesskey={}", s.alice_key);
    let r = traefik(&s, "GET", &uri, &[]).await;
    r.expect_status(200);
    assert_eq!(
        identity_of(&r),
        (
            Some("alice".into()),
            Some("dev".into()),
            Some("accesskey".into()),
            Some(s.alice_key_id.clone())
        )
    );
    // A JWT in the judged query.
    let r = traefik(&s, "GET", &format!("/hello?token={}", s.alice), &[]).await;
    r.expect_status(200);
    assert_eq!(r.header("x-auth-user").as_deref(), Some("alice"));
    // Missing role, no credential: exactly a proxied request's errors.
    traefik(&s, "GET", "/admin", &[("authorization", &bearer(&s.alice))])
        .await
        .expect_error(403, "PERMISSION_DENIED", "MISSING_ROLE");
    traefik(&s, "GET", "/hello", &[])
        .await
        .expect_401("AUTHENTICATION_REQUIRED");
    // Public route: 200 without identity.
    let r = traefik(&s, "GET", "/public/x", &[]).await;
    r.expect_status(200);
    assert_eq!(identity_of(&r), (None, None, None, None));
    assert_eq!(s.upstream.count(), 0, "verify forwards nothing");
}

#[tokio::test]
async fn nginx_header_form_and_the_fallback_to_the_own_method() {
    let s = setup().await;
    let r = request(
        "GET",
        &verify_url(&s),
        &[
            ("x-original-uri", "/admin/panel?x=1"),
            ("x-original-method", "DELETE"),
            ("authorization", &bearer(&s.root)),
        ],
        None,
    )
    .await;
    r.expect_status(200);
    assert_eq!(r.header("x-auth-user").as_deref(), Some("root"));
    // X-Forwarded-Uri and X-Original-URI that disagree: neither wins
    // (the client may have added either one).
    request(
        "GET",
        &verify_url(&s),
        &[("x-forwarded-uri", "/public"), ("x-original-uri", "/admin")],
        None,
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT", "CONFLICTING_FORWARDED_HEADERS");
    // A method that is not a token is refused, not guessed.
    traefik(&s, "GE T", "/public", &[]).await.expect_error(
        400,
        "INVALID_ARGUMENT",
        "INVALID_FIELD",
    );
}

#[tokio::test]
async fn envoy_path_prefix_form_judges_the_rest_of_the_path_and_its_query() {
    let s = setup().await;
    let r = get(&s.gw.url("/_authgate/verify/admin/x"), Some(&s.root), &[]).await;
    r.expect_status(200);
    assert_eq!(r.header("x-auth-user").as_deref(), Some("root"));
    let r = get(
        &s.gw.url(&format!(
            "/_authgate/verify/hello?b=2&accesskey={}",
            s.alice_key
        )),
        None,
        &[],
    )
    .await;
    r.expect_status(200);
    assert_eq!(r.header("x-auth-method").as_deref(), Some("accesskey"));
    get(&s.gw.url("/_authgate/verify/admin"), Some(&s.alice), &[])
        .await
        .expect_error(403, "PERMISSION_DENIED", "MISSING_ROLE");
    get(&s.gw.url("/_authgate/verify/hello"), None, &[])
        .await
        .expect_401("AUTHENTICATION_REQUIRED");
    let r = get(&s.gw.url("/_authgate/verify/public"), None, &[]).await;
    r.expect_status(200);
    assert_eq!(identity_of(&r), (None, None, None, None));
    // The bare endpoint judges `/`, which needs a credential here.
    get(&verify_url(&s), None, &[])
        .await
        .expect_401("AUTHENTICATION_REQUIRED");
    get(&verify_url(&s), Some(&s.alice), &[])
        .await
        .expect_status(200);
    // Any method.
    let r = request(
        "DELETE",
        &s.gw.url("/_authgate/verify/hello"),
        &[("authorization", &bearer(&s.alice))],
        None,
    )
    .await;
    r.expect_status(200);
}

#[tokio::test]
async fn the_own_query_is_ignored_when_the_uri_comes_in_a_header() {
    let s = setup().await;
    // Caddy repeats the original query on the verify request: one
    // credential, not two.
    let own = format!("/_authgate/verify?token={}", s.alice);
    let r = request(
        "GET",
        &s.gw.url(&own),
        &[("x-forwarded-uri", &format!("/hello?token={}", s.alice))],
        None,
    )
    .await;
    r.expect_status(200);
    // A credential only in the own query does not count then.
    let r = request(
        "GET",
        &s.gw.url(&own),
        &[("x-forwarded-uri", "/hello")],
        None,
    )
    .await;
    r.expect_401("AUTHENTICATION_REQUIRED");
    // Nor does a different one clash with the judged query's.
    let other = format!("/_authgate/verify?token={}", s.root);
    let r = request(
        "GET",
        &s.gw.url(&other),
        &[("x-forwarded-uri", &format!("/hello?token={}", s.alice))],
        None,
    )
    .await;
    r.expect_status(200);
    assert_eq!(r.header("x-auth-user").as_deref(), Some("alice"));
}

#[tokio::test]
async fn conflicting_credentials_between_header_cookie_and_judged_query() {
    let s = setup().await;
    let key_query = format!("/hello?accesskey={}", s.alice_key);
    traefik(
        &s,
        "GET",
        &key_query,
        &[("authorization", &bearer(&s.alice))],
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT", "CONFLICTING_CREDENTIALS");
    let cookie = format!("token={}", s.root);
    traefik(
        &s,
        "GET",
        &format!("/hello?token={}", s.alice),
        &[("cookie", &cookie)],
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT", "CONFLICTING_CREDENTIALS");
    get(
        &s.gw.url(&format!(
            "/_authgate/verify/hello?accesskey={}",
            s.alice_key
        )),
        Some(&s.alice),
        &[],
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT", "CONFLICTING_CREDENTIALS");
    // The same token twice is one credential.
    traefik(
        &s,
        "GET",
        &format!("/hello?token={}", s.alice),
        &[("authorization", &bearer(&s.alice))],
    )
    .await
    .expect_status(200);
}

#[tokio::test]
async fn client_sent_identity_headers_are_never_trusted_or_echoed() {
    let s = setup().await;
    let forged = [
        ("x-auth-user", "root"),
        ("x-auth-roles", "admin"),
        ("x-auth-method", "accesskey"),
        ("x-auth-key-id", "00000000-0000-0000-0000-000000000000"),
    ];
    // Public route: no identity in the answer at all.
    let r = traefik(&s, "GET", "/public", &forged).await;
    r.expect_status(200);
    assert_eq!(identity_of(&r), (None, None, None, None));
    // Forged headers do not satisfy a role.
    traefik(&s, "GET", "/admin", &forged)
        .await
        .expect_401("AUTHENTICATION_REQUIRED");
    let mut with_token = forged.to_vec();
    let auth = bearer(&s.alice);
    with_token.push(("authorization", &auth));
    traefik(&s, "GET", "/admin", &with_token)
        .await
        .expect_error(403, "PERMISSION_DENIED", "MISSING_ROLE");
    let r = traefik(&s, "GET", "/hello", &with_token).await;
    r.expect_status(200);
    assert_eq!(r.header_all("x-auth-user"), vec!["alice".to_string()]);
    assert_eq!(r.header_all("x-auth-roles"), vec!["dev".to_string()]);
    assert_eq!(r.header_all("x-auth-method"), vec!["jwt".to_string()]);
    assert!(r.header("x-auth-key-id").is_none());
}

#[tokio::test]
async fn judged_uris_that_are_not_paths_are_refused() {
    let s = setup().await;
    for bad in [
        "http://evil.example/public",
        "//evil.example/public",
        "*",
        "",
        "public",
        "/public#frag",
        "/public?x=1#frag",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/..;/admin",
        "/public//x",
        "/public/%2fadmin",
        "/public/%00",
    ] {
        let r = traefik(&s, "GET", bad, &[]).await;
        r.expect_error(400, "INVALID_ARGUMENT", "INVALID_PATH");
        // Also for a caller that would pass anything.
        traefik(&s, "GET", bad, &[("authorization", &bearer(&s.root))])
            .await
            .expect_error(400, "INVALID_ARGUMENT", "INVALID_PATH");
    }
    // Raw bytes a header may carry but a path may not: space, obs-text.
    for head_value in ["/public x", "/pub\tlic", "/caf\u{e9}"] {
        let head = format!(
            "GET /_authgate/verify HTTP/1.1\r\nHost: x\r\nX-Forwarded-Uri: {head_value}\r\nConnection: close\r\n\r\n"
        );
        let r = raw_request(s.gw.addr(), &head, b"").await;
        assert_eq!(r.status, 400, "{head_value:?}");
    }
    // Two values: refused, not picked from.
    let head = "GET /_authgate/verify HTTP/1.1\r\nHost: x\r\nX-Forwarded-Uri: /public\r\n\
                X-Forwarded-Uri: /admin\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_request(s.gw.addr(), head, b"").await.status, 400);
}

/// The status and JSON error (status, reason, message) of a response, and
/// its `WWW-Authenticate`: what must be the same whether authgate
/// forwards or only judges.
fn outcome(status: u16, headers: &[(String, String)], body: &[u8]) -> String {
    let www = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, v)| v.clone());
    let error = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .map(|v| {
            let e = &v["error"];
            format!("{} {} {}", e["status"], e["reason"], e["message"])
        });
    format!("{status} {error:?} {www:?}")
}

fn tricky_paths() -> Vec<String> {
    let mut paths = Vec::new();
    for name in ["admin", "public", "internal"] {
        let upper = name.to_ascii_uppercase();
        for variant in [
            name.to_string(),
            upper.clone(),
            format!("{}{}", &upper[..1], &name[1..]),
            format!("{name};x"),
            format!("{upper};jsessionid=1"),
            format!("{name}."),
            format!("{name}~"),
            format!("{name}%20"),
            format!("{name}%2e"),
            format!("%{:02x}{}", name.as_bytes()[0], &name[1..]),
            format!("x/../{name}"),
            format!("x/..;/{name}"),
            format!("/{name}"),
        ] {
            for suffix in ["", "/", "/stats;x"] {
                paths.push(format!("/{variant}{suffix}"));
            }
        }
    }
    paths.push("/public/..;/admin/stats".into());
    paths.push("/public/%2e%2e/admin/stats".into());
    paths.push("/public;/../admin".into());
    paths
}

#[tokio::test]
async fn tricky_paths_are_judged_exactly_as_proxied() {
    let s = setup().await;
    let addr = s.gw.addr();
    for caller in [None, Some(&s.alice), Some(&s.root)] {
        let auth = caller
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        for path in tricky_paths() {
            let proxied = raw_request(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
                b"",
            )
            .await;
            let header_form = raw_request(
                addr,
                &format!(
                    "GET /_authgate/verify HTTP/1.1\r\nHost: x\r\nX-Forwarded-Uri: {path}\r\n{auth}Connection: close\r\n\r\n"
                ),
                b"",
            )
            .await;
            let envoy_form = raw_request(
                addr,
                &format!(
                    "GET /_authgate/verify{path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
                ),
                b"",
            )
            .await;
            let internal = path.to_ascii_lowercase().contains("internal");
            for (form, judged) in [
                ("X-Forwarded-Uri", &header_form),
                ("path prefix", &envoy_form),
            ] {
                let judged_outcome = outcome(judged.status, &judged.headers, &judged.body);
                if proxied.status == 200 {
                    // Forwarded inline: the decision is a bare 200.
                    assert_eq!(
                        judged.status, 200,
                        "{path} ({form}, {caller:?}): {judged_outcome}"
                    );
                } else if proxied.status == 404 && internal {
                    // A verify-only route: 404 proxied, judged as a required
                    // route (see a_route_without_upstream_is_verify_only).
                } else {
                    assert_eq!(
                        judged_outcome,
                        outcome(proxied.status, &proxied.headers, &proxied.body),
                        "{path} ({form}, caller {})",
                        caller.is_some()
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn a_route_without_upstream_is_verify_only() {
    let s = setup().await;
    // Proxied: no route, before credentials.
    get(&s.gw.url("/internal/x"), None, &[])
        .await
        .expect_error(404, "NOT_FOUND", "NO_ROUTE");
    get(&s.gw.url("/internal/x"), Some(&s.alice), &[])
        .await
        .expect_error(404, "NOT_FOUND", "NO_ROUTE");
    assert_eq!(s.upstream.count(), 0);
    // Judged: an ordinary required route.
    traefik(&s, "GET", "/internal/x", &[])
        .await
        .expect_401("AUTHENTICATION_REQUIRED");
    let r = traefik(
        &s,
        "GET",
        "/internal/x",
        &[("authorization", &bearer(&s.alice))],
    )
    .await;
    r.expect_status(200);
    assert_eq!(r.header("x-auth-user").as_deref(), Some("alice"));
    let check = s.gw.cli(&["check-config"], None).await;
    assert!(check.status.success(), "{}", out_text(&check));
}

#[tokio::test]
async fn revocation_refuses_at_once_on_verify() {
    let s = setup().await;
    // Logout: the next decision refuses the token.
    let token = s.gw.issue_token("alice").await;
    traefik(&s, "GET", "/hello", &[("authorization", &bearer(&token))])
        .await
        .expect_status(200);
    post_json(
        &s.gw.url("/auth/logout"),
        Some(&token),
        &serde_json::json!({}),
    )
    .await
    .expect_status(200);
    traefik(&s, "GET", "/hello", &[("authorization", &bearer(&token))])
        .await
        .expect_invalid_token();
    // Key revoked through the CLI (another process): within 3 s.
    let key_uri = format!("/hello?accesskey={}", s.alice_key);
    traefik(&s, "GET", &key_uri, &[]).await.expect_status(200);
    s.gw.cli_ok(&["key", "revoke", &s.alice_key_id], None).await;
    let refused = poll_until(PROPAGATION, || async {
        traefik(&s, "GET", &key_uri, &[]).await.status == 401
    })
    .await;
    assert!(
        refused,
        "a revoked key must be refused within {PROPAGATION:?}"
    );
    // Password change: the old tokens stop.
    traefik(&s, "GET", "/admin", &[("authorization", &bearer(&s.root))])
        .await
        .expect_status(200);
    s.gw.cli_ok(
        &["user", "passwd", "root", "--password-stdin"],
        Some("n3w-passw0rd-long\n"),
    )
    .await;
    let refused = poll_until(PROPAGATION, || async {
        traefik(&s, "GET", "/admin", &[("authorization", &bearer(&s.root))])
            .await
            .status
            == 401
    })
    .await;
    assert!(refused, "a token from before `user passwd` must be refused");
}

#[tokio::test]
async fn decisions_are_counted_by_outcome() {
    let s = setup().await;
    traefik(&s, "GET", "/hello", &[("authorization", &bearer(&s.alice))])
        .await
        .expect_status(200);
    traefik(&s, "GET", "/hello", &[]).await.expect_status(401);
    traefik(&s, "GET", "/public", &[]).await.expect_status(200);
    traefik(&s, "GET", "/a/../b", &[]).await.expect_status(400);
    let metrics = get(&s.gw.url("/metrics"), None, &[]).await.text();
    for line in [
        r#"authgate_verify_decisions_total{route="/",decision="allowed",reason=""} 1"#,
        r#"authgate_verify_decisions_total{route="/",decision="denied",reason="AUTHENTICATION_REQUIRED"} 1"#,
        r#"authgate_verify_decisions_total{route="/public",decision="public",reason=""} 1"#,
        r#"authgate_verify_decisions_total{route="none",decision="denied",reason="INVALID_PATH"} 1"#,
        r#"authgate_requests_total{route="verify",outcome="authenticated",reason=""} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in:\n{metrics}");
    }
}

// ---------------------------------------------------------------------------
// Real nginx and Caddy in front
// ---------------------------------------------------------------------------

async fn with_front(kind: Kind) -> (Setup, FrontProxy) {
    let s = setup().await;
    let front = front::start(kind, s.gw.addr(), s.upstream.addr()).await;
    (s, front)
}

/// What every front proxy must do with authgate's decisions.
async fn front_proxy_scenario(kind: Kind) {
    let (s, front) = with_front(kind).await;
    let logs = || {
        format!(
            "front log:\n{}\nauthgate log:\n{}",
            front.logs(),
            s.gw.logs()
        )
    };

    // A JWT: passes, with the identity, without the credential.
    let r = get(&front.url("/hello?a=1"), Some(&s.alice), &[]).await;
    assert_eq!(r.status, 200, "{}", logs());
    let seen = s.upstream.last();
    assert_eq!(seen.path(), "/hello");
    assert_eq!(seen.query(), Some("a=1"));
    assert_eq!(seen.header("x-auth-user").as_deref(), Some("alice"));
    assert_eq!(seen.header("x-auth-roles").as_deref(), Some("dev"));
    assert_eq!(seen.header("x-auth-method").as_deref(), Some("jwt"));
    assert!(
        seen.header("x-auth-key-id").is_none_or(|v| v.is_empty()),
        "{:?}",
        seen.header("x-auth-key-id")
    );
    assert!(
        !seen.has_header("authorization"),
        "the credential reached the upstream"
    );

    // An access key and a JWT in the original query.
    let r = get(
        &front.url(&format!("/k?accesskey={}", s.alice_key)),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", logs());
    let seen = s.upstream.last();
    assert_eq!(seen.path(), "/k");
    assert_eq!(seen.header("x-auth-method").as_deref(), Some("accesskey"));
    assert_eq!(seen.header("x-auth-key-id"), Some(s.alice_key_id.clone()));
    let r = get(&front.url(&format!("/t?token={}", s.root)), None, &[]).await;
    assert_eq!(r.status, 200, "{}", logs());
    assert_eq!(
        s.upstream.last().header("x-auth-user").as_deref(),
        Some("root")
    );

    // Forged identity headers never reach the upstream.
    let r = get(
        &front.url("/forged"),
        Some(&s.alice),
        &[("x-auth-user", "root"), ("x-auth-roles", "admin")],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = s.upstream.last();
    assert_eq!(seen.header_all("x-auth-user"), vec!["alice".to_string()]);
    assert_eq!(seen.header_all("x-auth-roles"), vec!["dev".to_string()]);

    // Public: passes without identity, even a forged one.
    let r = get(&front.url("/public/p"), None, &[("x-auth-user", "root")]).await;
    assert_eq!(r.status, 200, "{}", logs());
    let seen = s.upstream.last();
    assert_eq!(seen.path(), "/public/p");
    assert!(
        seen.header("x-auth-user").is_none_or(|v| v.is_empty()),
        "{:?}",
        seen.header("x-auth-user")
    );

    // Refusals: nothing forwarded.
    let before = s.upstream.count();
    let r = get(&front.url("/hello"), None, &[]).await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with(r#"Bearer realm="authgate""#)),
        "401 through {kind:?} must keep WWW-Authenticate: {:?}",
        r.header("www-authenticate")
    );
    assert_eq!(
        get(&front.url("/hello"), Some("not-a-token"), &[])
            .await
            .status,
        401
    );
    assert_eq!(
        get(&front.url("/admin/x"), Some(&s.alice), &[])
            .await
            .status,
        403
    );
    if kind == Kind::Caddy {
        // Caddy relays authgate's answer as it is: the JSON error too.
        get(&front.url("/admin/x"), Some(&s.alice), &[])
            .await
            .expect_error(403, "PERMISSION_DENIED", "MISSING_ROLE");
    }
    assert_eq!(
        s.upstream.count(),
        before,
        "a refused request was forwarded"
    );
    get(&front.url("/admin/x"), Some(&s.root), &[])
        .await
        .expect_status(200);

    // Tricky paths: judged like proxied ones, nothing refused is forwarded.
    for path in [
        "/ADMIN/x",
        "/Admin",
        "/admin;x=1",
        "/admin.",
        "/admin~/x",
        "/public/..;/admin",
        "/public/%2e%2e/admin",
        "/%61dmin",
        "/public/../admin",
    ] {
        let inline = raw_request(
            s.gw.addr(),
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", s.alice),
            b"",
        )
        .await;
        let before = s.upstream.count();
        // Caddy serves the site by its address: Host must name it.
        let through = raw_request(
            front.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", front.addr, s.alice),
            b"",
        )
        .await;
        assert_ne!(inline.status, 200, "{path} passes inline");
        assert_eq!(
            s.upstream.count(),
            before,
            "{path} was forwarded through {kind:?} ({}), inline {}",
            through.status,
            inline.status
        );
        match (kind, inline.status) {
            // auth_request relays only 401 and 403; any other refusal is a 500.
            (Kind::Nginx, 400 | 404) => assert!(
                matches!(through.status, 400 | 500),
                "{path}: {}",
                through.status
            ),
            _ => assert_eq!(
                through.status,
                inline.status,
                "{path} through {kind:?}: {}",
                logs()
            ),
        }
    }

    // A revoked key: refused within 3 s.
    let key_url = front.url(&format!("/k2?accesskey={}", s.alice_key));
    assert_eq!(get(&key_url, None, &[]).await.status, 200);
    s.gw.cli_ok(&["key", "revoke", &s.alice_key_id], None).await;
    let refused = poll_until(PROPAGATION, || async {
        get(&key_url, None, &[]).await.status == 401
    })
    .await;
    assert!(
        refused,
        "a revoked key passed {kind:?} after {PROPAGATION:?}"
    );
    let before = s.upstream.count();
    assert_eq!(get(&key_url, None, &[]).await.status, 401);
    assert_eq!(s.upstream.count(), before);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn nginx_auth_request_in_front() {
    front_proxy_scenario(Kind::Nginx).await;
}

#[tokio::test]
async fn caddy_forward_auth_in_front() {
    front_proxy_scenario(Kind::Caddy).await;
}

/// Issue 22 item 1: each guide driven with the client's own copies of every
/// header authgate reads the judged request from. The proxy in front sets
/// (or clears) them, so what is judged is what it forwards: an anonymous
/// request for `/admin/stats` claiming `/public/x` is refused, and a
/// GET-only key claiming GET for a DELETE (or asking for DELETE through a
/// method override) is out of scope. Nothing refused reaches the upstream.
async fn hostile_judged_headers_scenario(kind: Kind) {
    let (s, front) = with_front(kind).await;
    let logs = || {
        format!(
            "front log:\n{}\nauthgate log:\n{}",
            front.logs(),
            s.gw.logs()
        )
    };
    let (_, get_only) = s.gw.create_key_cli("alice", &["--method", "GET"]).await;
    let claims_public: [(&str, &str); 4] = [
        ("x-forwarded-uri", "/public/x"),
        ("x-original-uri", "/public/x"),
        ("x-forwarded-method", "GET"),
        ("x-original-method", "GET"),
    ];

    // Each claim alone, then all of them.
    let mut cases: Vec<Vec<(&str, &str)>> = claims_public.iter().map(|c| vec![*c]).collect();
    cases.push(claims_public.to_vec());
    for claims in &cases {
        let before = s.upstream.count();
        let r = get(&front.url("/admin/stats"), None, claims).await;
        assert_eq!(
            r.status,
            401,
            "{kind:?}: anonymous /admin/stats with {claims:?}: {}\n{}",
            r.text(),
            logs()
        );
        assert_eq!(s.upstream.count(), before, "{claims:?} was forwarded");
    }

    // A GET-only key: DELETE claiming GET, in every header.
    let key_cookie = format!("accesskey={get_only}");
    let key_auth = ("cookie", key_cookie.as_str());
    let method_claims: [(&str, &str); 2] =
        [("x-forwarded-method", "GET"), ("x-original-method", "GET")];
    let mut cases: Vec<Vec<(&str, &str)>> = method_claims.iter().map(|c| vec![*c]).collect();
    cases.push(method_claims.to_vec());
    for claims in &cases {
        let mut sent = claims.clone();
        sent.push(key_auth);
        let before = s.upstream.count();
        let r = request("DELETE", &front.url("/hello"), &sent, None).await;
        assert_eq!(
            r.status,
            403,
            "{kind:?}: DELETE with a GET-only key and {claims:?}: {}\n{}",
            r.text(),
            logs()
        );
        assert_eq!(s.upstream.count(), before, "{claims:?} was forwarded");
    }
    // A GET that the application would run as DELETE (method-override).
    for (url, extra) in [
        (front.url("/hello?_method=DELETE"), None),
        (
            front.url("/hello"),
            Some(("x-http-method-override", "DELETE")),
        ),
        (front.url("/hello"), Some(("x-method-override", "delete"))),
    ] {
        let mut sent = vec![key_auth];
        sent.extend(extra);
        let before = s.upstream.count();
        let r = request("GET", &url, &sent, None).await;
        assert_eq!(r.status, 403, "{kind:?}: {url} {extra:?}\n{}", logs());
        assert_eq!(s.upstream.count(), before, "{url} {extra:?} was forwarded");
    }

    // What the proxy sets is judged as before: the key may GET, and the
    // hostile headers change nothing for an honest request.
    let mut sent = claims_public.to_vec();
    sent.push(key_auth);
    let r = request("GET", &front.url("/hello"), &sent, None).await;
    assert_eq!(r.status, 200, "{kind:?}: {}", logs());
    assert_eq!(s.upstream.last().path(), "/hello");
    let r = request("GET", &front.url("/public/x"), &claims_public, None).await;
    assert_eq!(r.status, 200, "{kind:?}: {}", logs());
}

#[tokio::test]
async fn nginx_guide_judges_what_nginx_forwards_whatever_the_client_adds() {
    hostile_judged_headers_scenario(Kind::Nginx).await;
}

#[tokio::test]
async fn caddy_guide_judges_what_caddy_forwards_whatever_the_client_adds() {
    hostile_judged_headers_scenario(Kind::Caddy).await;
}

#[tokio::test]
async fn disagreeing_judged_sources_are_a_conflict() {
    let s = setup().await;
    let conflict = |r: Resp| {
        r.expect_error(400, "INVALID_ARGUMENT", "CONFLICTING_FORWARDED_HEADERS");
    };
    let verify = verify_url(&s);
    conflict(
        request(
            "GET",
            &verify,
            &[
                ("x-original-uri", "/admin/stats"),
                ("x-forwarded-uri", "/public/x"),
            ],
            None,
        )
        .await,
    );
    conflict(
        request(
            "GET",
            &verify,
            &[
                ("x-original-method", "DELETE"),
                ("x-forwarded-method", "GET"),
                ("x-original-uri", "/hello"),
                ("authorization", &bearer(&s.alice)),
            ],
            None,
        )
        .await,
    );
    // The path-prefix form (ingress-nginx, Envoy) against a header.
    conflict(
        request(
            "GET",
            &s.gw.url("/_authgate/verify/admin/stats"),
            &[("x-forwarded-uri", "/public/x")],
            None,
        )
        .await,
    );
    conflict(
        request(
            "GET",
            &s.gw.url("/_authgate/verify/admin/stats?a=1"),
            &[("x-original-uri", "/admin/stats?a=2")],
            None,
        )
        .await,
    );
    // Sources that agree are one source.
    request(
        "GET",
        &s.gw.url("/_authgate/verify/public/x?a=1"),
        &[
            ("x-original-uri", "/public/x?a=1"),
            ("x-forwarded-uri", "/public/x?a=1"),
            ("x-forwarded-method", "GET"),
            ("x-original-method", "GET"),
        ],
        None,
    )
    .await
    .expect_status(200);
}

#[tokio::test]
async fn nginx_keeps_the_credential_cookie_from_the_upstream() {
    let (s, front) = with_front(Kind::Nginx).await;
    for (cookie, left) in [
        (format!("a=1; token={}; b=2", s.alice), "a=1; b=2"),
        (format!("token={}; b=2", s.alice), "b=2"),
        (format!("a=1; accesskey={}", s.alice_key), "a=1"),
    ] {
        let r = get(&front.url("/c"), None, &[("cookie", &cookie)]).await;
        assert_eq!(r.status, 200, "{}", front.logs());
        let seen = s.upstream.last();
        assert_eq!(seen.header("cookie").as_deref(), Some(left), "{cookie}");
        assert!(seen.header("x-auth-user").is_some());
    }
}

#[tokio::test]
async fn no_credential_of_a_judged_request_is_logged() {
    let s = setup().await;
    traefik(&s, "GET", &format!("/hello?accesskey={}", s.alice_key), &[])
        .await
        .expect_status(200);
    traefik(&s, "GET", &format!("/admin?token={}", s.alice), &[])
        .await
        .expect_status(403);
    get(
        &s.gw.url(&format!(
            "/_authgate/verify/hello?accesskey={}",
            s.alice_key
        )),
        None,
        &[],
    )
    .await
    .expect_status(200);
    get(
        &s.gw.url(&format!("/_authgate/verify/x?token={}", s.root)),
        None,
        &[],
    )
    .await
    .expect_status(200);
    let logs = s.gw.logs();
    assert!(
        logs.contains("/_authgate/verify"),
        "the requests are logged"
    );
    for secret in [&s.alice_key, &s.alice, &s.root] {
        assert!(!logs.contains(secret.as_str()), "a credential was logged");
    }
}
