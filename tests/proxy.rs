//! Proxying: credentials in, stripped out; identity and forwarding headers;
//! routing, roles, conflicts; upstream failures; large bodies; shutdown.

mod common;

use std::time::Duration;

use common::*;

/// Gateway + upstream + a user with `roles` and a JWT for them.
async fn setup(roles: &[&str]) -> (Upstream, Gateway, String, String) {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("u");
    gw.add_user(&user, &random_password(), roles).await;
    let token = gw.issue_token(&user).await;
    (upstream, gw, user, token)
}

fn assert_identity(rec: &Recorded, user: &str, roles: &[&str]) {
    assert_eq!(
        rec.header_all("x-auth-user"),
        vec![user.to_string()],
        "X-Auth-User upstream"
    );
    let got = rec.header_all("x-auth-roles");
    assert_eq!(got.len(), 1, "exactly one X-Auth-Roles upstream: {got:?}");
    let mut want: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    want.sort();
    assert_eq!(
        roles_of(&got[0]),
        want,
        "X-Auth-Roles upstream: {:?}",
        got[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_proxied_and_stripped() {
    let (upstream, gw, user, token) = setup(&["ops"]).await;
    let r = get(&gw.url("/things/1?b=2&a=1"), Some(&token), &[]).await;
    r.expect_status(200);
    assert_eq!(r.header("x-upstream").as_deref(), Some("recorder"));
    let rec = upstream.last();
    assert_eq!(rec.method, "GET");
    assert_eq!(rec.uri, "/things/1?b=2&a=1", "path and query unchanged");
    assert!(
        !rec.has_header("authorization"),
        "Authorization must not reach the upstream"
    );
    assert!(
        !rec.contains_anywhere(&token),
        "the JWT reached the upstream"
    );
    assert_identity(&rec, &user, &["ops"]);
    assert_eq!(rec.header("x-auth-method").as_deref(), Some("jwt"));
    assert!(!rec.has_header("x-auth-key-id"), "no key id for a JWT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_token_is_stripped_leaving_the_rest_byte_for_byte() {
    let (upstream, gw, user, token) = setup(&[]).await;
    let cases = [
        (format!("/x?b=2&token={token}&a=1&b=3"), "/x?b=2&a=1&b=3"),
        (format!("/x?token={token}"), "/x"),
        (format!("/x?token={token}&z=1"), "/x?z=1"),
        (format!("/x?z=1&token={token}"), "/x?z=1"),
        (
            format!("/x/y?q=%2Fenc%20oded+plus&token={token}&e=&flag&u=%C3%A9"),
            "/x/y?q=%2Fenc%20oded+plus&e=&flag&u=%C3%A9",
        ),
    ];
    for (sent, want) in cases {
        let n = upstream.count();
        let r = get(&gw.url(&sent), None, &[]).await;
        r.expect_status(200);
        assert_eq!(upstream.count(), n + 1);
        let rec = upstream.last();
        assert_eq!(rec.uri, want, "sent {sent}");
        assert!(
            !rec.contains_anywhere(&token),
            "the JWT reached the upstream"
        );
        assert_identity(&rec, &user, &[]);
        assert_eq!(rec.header("x-auth-method").as_deref(), Some("jwt"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_token_is_stripped_other_cookies_kept() {
    let (upstream, gw, user, token) = setup(&[]).await;
    let cookie = format!("a=1; token={token}; b=2");
    let r = get(&gw.url("/c?k=v"), None, &[("cookie", &cookie)]).await;
    r.expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.uri, "/c?k=v");
    assert_eq!(
        rec.cookies(),
        vec!["a=1", "b=2"],
        "other cookies kept in order"
    );
    assert!(
        !rec.contains_anywhere(&token),
        "the JWT reached the upstream"
    );
    assert_identity(&rec, &user, &[]);
    assert_eq!(rec.header("x-auth-method").as_deref(), Some("jwt"));

    // Only the credential cookie: no cookie pair left upstream.
    let r = get(
        &gw.url("/c"),
        None,
        &[("cookie", &format!("token={token}"))],
    )
    .await;
    r.expect_status(200);
    let rec = upstream.last();
    assert!(
        rec.cookies().is_empty(),
        "cookies left: {:?}",
        rec.cookies()
    );
    assert!(!rec.contains_anywhere(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_header_lists_roles_and_is_present_and_empty_without_roles() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let with = unique("with");
    let without = unique("without");
    gw.add_user(&with, &random_password(), &["admin", "ops"])
        .await;
    gw.add_user(&without, &random_password(), &[]).await;

    let t = gw.issue_token(&with).await;
    get(&gw.url("/r"), Some(&t), &[]).await.expect_status(200);
    assert_identity(&upstream.last(), &with, &["admin", "ops"]);

    let t = gw.issue_token(&without).await;
    get(&gw.url("/r"), Some(&t), &[]).await.expect_status(200);
    let rec = upstream.last();
    assert_eq!(
        rec.header_all("x-auth-roles"),
        vec![String::new()],
        "X-Auth-Roles must be present and empty for a user with no roles; headers: {:?}",
        rec.header_names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_are_replaced() {
    let (upstream, gw, user, token) = setup(&[]).await;
    let spoof = [
        ("x-auth-user", "mallory"),
        ("x-auth-user", "root"),
        ("x-auth-roles", "admin"),
        ("x-auth-method", "accesskey"),
        ("x-auth-key-id", "00000000-0000-0000-0000-000000000000"),
    ];
    get(&gw.url("/s"), Some(&token), &spoof)
        .await
        .expect_status(200);
    let rec = upstream.last();
    assert_identity(&rec, &user, &[]);
    assert_eq!(rec.header_all("x-auth-method"), vec!["jwt".to_string()]);
    assert!(
        !rec.has_header("x-auth-key-id"),
        "client-sent X-Auth-Key-Id must be removed"
    );
    assert!(!rec.contains_anywhere("mallory") && !rec.contains_anywhere("root"));

    // Public routes forward no identity, and never the client's spoofed one.
    get(&gw.url("/public/p"), None, &spoof)
        .await
        .expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.path(), "/public/p");
    for h in [
        "x-auth-user",
        "x-auth-roles",
        "x-auth-method",
        "x-auth-key-id",
    ] {
        assert!(!rec.has_header(h), "{h} reached a public upstream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_request_id_are_set() {
    let (upstream, gw, _user, token) = setup(&[]).await;
    let r = get(&gw.url("/f"), Some(&token), &[]).await;
    r.expect_status(200);
    let rec = upstream.last();
    let xff = rec.header("x-forwarded-for").expect("X-Forwarded-For set");
    assert!(xff.contains("127.0.0.1"), "X-Forwarded-For: {xff}");
    assert_eq!(rec.header("x-forwarded-proto").as_deref(), Some("http"));
    let host = format!("127.0.0.1:{}", gw.addr().port());
    assert_eq!(rec.header("x-forwarded-host"), Some(host));
    let rid = rec.header("x-request-id").expect("X-Request-Id upstream");
    assert!(!rid.is_empty());
    assert_eq!(
        r.header("x-request-id").as_deref(),
        Some(rid.as_str()),
        "the client sees the same request id the upstream got"
    );

    // A sane client-sent request id is kept.
    let mine = "test-req-0123456789abcdef";
    let r = get(&gw.url("/f"), Some(&token), &[("x-request-id", mine)]).await;
    r.expect_status(200);
    assert_eq!(upstream.last().header_all("x-request-id"), vec![mine]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (upstream, gw, _user, token) = setup(&[]).await;
    let head = format!(
        "GET /hop?x=1 HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         Authorization: Bearer {token}\r\n\
         Connection: keep-alive, X-Foo\r\n\
         X-Foo: must-not-pass\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
         Proxy-Connection: keep-alive\r\n\
         TE: trailers\r\n\
         X-End-To-End: kept\r\n\
         \r\n",
        port = gw.addr().port()
    );
    let resp = raw_request(gw.addr(), &head, b"").await;
    assert_eq!(
        resp.status,
        200,
        "body: {}",
        String::from_utf8_lossy(&resp.body)
    );
    let rec = upstream.last();
    assert_eq!(rec.uri, "/hop?x=1");
    for h in [
        "x-foo",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
    ] {
        assert!(
            !rec.has_header(h),
            "hop-by-hop header {h} reached the upstream: {:?}",
            rec.header_names()
        );
    }
    for v in rec.header_all("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-foo"),
            "Connection upstream still lists x-foo: {v}"
        );
    }
    assert!(!rec.contains_anywhere("must-not-pass"));
    assert!(!rec.contains_anywhere("dXNlcjpwYXNz"));
    assert_eq!(rec.header("x-end-to-end").as_deref(), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credential_is_401_and_never_reaches_upstream() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let r = get(&gw.url("/x?a=1"), None, &[]).await;
    r.expect_401("AUTHENTICATION_REQUIRED");
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="authgate""#),
        "no error= when no token was given"
    );
    // Another scheme is not a credential the gateway accepts.
    let r = get(
        &gw.url("/x"),
        None,
        &[("authorization", "Basic dXNlcjpwYXNz")],
    )
    .await;
    r.expect_status(401);
    assert_eq!(r.json()["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(
        upstream.count(),
        0,
        "rejected requests never reach upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_route_needs_no_credentials() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let r = get(&gw.url("/public/docs?page=2"), None, &[]).await;
    r.expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.uri, "/public/docs?page=2");
    for h in [
        "x-auth-user",
        "x-auth-roles",
        "x-auth-method",
        "x-auth-key-id",
    ] {
        assert!(!rec.has_header(h), "{h} on a public route");
    }
    // The prefix itself matches too.
    get(&gw.url("/public"), None, &[]).await.expect_status(200);
    assert_eq!(upstream.last().uri, "/public");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_protected_route_403_without_role_200_with() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let plain = unique("plain");
    let admin = unique("admin");
    gw.add_user(&plain, &random_password(), &["ops"]).await;
    gw.add_user(&admin, &random_password(), &["admin"]).await;

    let t = gw.issue_token(&plain).await;
    get(&gw.url("/admin/panel"), Some(&t), &[])
        .await
        .expect_error(403, "PERMISSION_DENIED", "MISSING_ROLE");
    assert_eq!(upstream.count(), 0, "a 403 never reaches upstream");
    // Without credentials the answer is 401, not 403.
    get(&gw.url("/admin/panel"), None, &[])
        .await
        .expect_401("AUTHENTICATION_REQUIRED");

    let t = gw.issue_token(&admin).await;
    get(&gw.url("/admin/panel"), Some(&t), &[])
        .await
        .expect_status(200);
    assert_eq!(upstream.count(), 1);
    let rec = upstream.last();
    assert_eq!(rec.uri, "/admin/panel");
    assert_identity(&rec, &admin, &["admin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_credentials_are_400_and_the_same_token_twice_is_not() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let a = unique("a");
    let b = unique("b");
    gw.add_user(&a, &random_password(), &[]).await;
    gw.add_user(&b, &random_password(), &[]).await;
    let ta = gw.issue_token(&a).await;
    let tb = gw.issue_token(&b).await;

    get(&gw.url(&format!("/x?token={tb}")), Some(&ta), &[])
        .await
        .expect_error(400, "INVALID_ARGUMENT", "CONFLICTING_CREDENTIALS");
    get(
        &gw.url("/x"),
        Some(&ta),
        &[("cookie", &format!("token={tb}"))],
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT", "CONFLICTING_CREDENTIALS");
    get(
        &gw.url(&format!("/x?token={ta}")),
        None,
        &[("cookie", &format!("token={tb}"))],
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT", "CONFLICTING_CREDENTIALS");
    assert_eq!(upstream.count(), 0, "conflicts never reach upstream");

    // The same token twice is not a conflict; both copies are removed.
    let r = get(
        &gw.url(&format!("/x?k=1&token={ta}")),
        Some(&ta),
        &[("cookie", &format!("token={ta}; keep=me"))],
    )
    .await;
    r.expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.uri, "/x?k=1");
    assert!(!rec.contains_anywhere(&ta));
    assert_eq!(rec.cookies(), vec!["keep=me"]);
    assert_identity(&rec, &a, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_before_credentials() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.routes = vec![RouteSpec::required("/api", &upstream.url())];
    let gw = Gateway::start_with(opts).await;
    let user = unique("u");
    gw.add_user(&user, &random_password(), &[]).await;
    let t = gw.issue_token(&user).await;

    get(&gw.url("/elsewhere"), None, &[])
        .await
        .expect_error(404, "NOT_FOUND", "NO_ROUTE");
    get(&gw.url("/elsewhere"), Some("garbage"), &[])
        .await
        .expect_error(404, "NOT_FOUND", "NO_ROUTE");
    get(&gw.url("/apix"), Some(&t), &[])
        .await
        .expect_error(404, "NOT_FOUND", "NO_ROUTE");
    assert_eq!(upstream.count(), 0);
    get(&gw.url("/api/v"), Some(&t), &[])
        .await
        .expect_status(200);
    assert_eq!(upstream.last().uri, "/api/v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502() {
    let upstream = Upstream::start().await;
    let dead = closed_port_url();
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.routes.push(RouteSpec::required("/down", &dead));
    opts.routes.push(RouteSpec::public("/public-down", &dead));
    let gw = Gateway::start_with(opts).await;
    let user = unique("u");
    gw.add_user(&user, &random_password(), &[]).await;
    let t = gw.issue_token(&user).await;

    get(&gw.url("/down/x"), Some(&t), &[]).await.expect_error(
        502,
        "UNAVAILABLE",
        "UPSTREAM_UNREACHABLE",
    );
    get(&gw.url("/public-down"), None, &[]).await.expect_error(
        502,
        "UNAVAILABLE",
        "UPSTREAM_UNREACHABLE",
    );
    // A stopped upstream as well.
    upstream.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    get(&gw.url("/x"), Some(&t), &[]).await.expect_error(
        502,
        "UNAVAILABLE",
        "UPSTREAM_UNREACHABLE",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504() {
    let fast = Upstream::start().await;
    let slow = Upstream::start_with_delay(Duration::from_secs(6)).await;
    let mut opts = GatewayOptions::new(&fast.url());
    opts.routes
        .push(RouteSpec::required("/slow", &slow.url()).timeout(1));
    let gw = Gateway::start_with(opts).await;
    let user = unique("u");
    gw.add_user(&user, &random_password(), &[]).await;
    let t = gw.issue_token(&user).await;

    let r = get(&gw.url("/slow/op"), Some(&t), &[]).await;
    r.expect_error(504, "UNAVAILABLE", "UPSTREAM_TIMEOUT");
    assert_eq!(slow.count(), 1, "the request did reach the slow upstream");
    // Other routes are unaffected.
    get(&gw.url("/fast"), Some(&t), &[])
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_megabyte_body_reaches_upstream_intact() {
    let (upstream, gw, _user, token) = setup(&[]).await;
    let body = pseudo_random_bytes(20 * 1024 * 1024, 0x5eed_1234_abcd_0001);
    let digest = sha256_hex(&body);
    let len = body.len();
    let r = client()
        .post(gw.url("/upload?name=big.bin"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("send 20 MB");
    let r = Resp::from(r).await;
    r.expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.uri, "/upload?name=big.bin");
    assert_eq!(rec.body_len, len, "body length upstream");
    assert_eq!(rec.body_sha256, digest, "body digest upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_is_431() {
    let (upstream, gw, _user, token) = setup(&[]).await;
    // Default limits.max_header_bytes is 16384.
    let big = "v".repeat(20_000);
    let r = client()
        .get(gw.url("/x"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-big", big)
        .send()
        .await
        .expect("a 431 response, not a dropped connection");
    assert_eq!(r.status().as_u16(), 431);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_request_and_exits_zero() {
    let upstream = Upstream::start_with_delay(Duration::from_secs(2)).await;
    let mut gw = Gateway::start(&upstream).await;
    let user = unique("u");
    gw.add_user(&user, &random_password(), &[]).await;
    let t = gw.issue_token(&user).await;

    let url = gw.url("/drain");
    let in_flight = tokio::spawn(async move { get(&url, Some(&t), &[]).await });
    assert!(
        upstream.wait_for_count(1, Duration::from_secs(30)).await,
        "request reached the upstream"
    );
    gw.sigterm();
    let r = in_flight.await.expect("in-flight task");
    assert_eq!(
        r.status,
        200,
        "in-flight request completes after SIGTERM: {}",
        r.text()
    );
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("gateway exits after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through_after_authentication() {
    let (upstream, gw, user, token) = setup(&[]).await;
    let head = |auth: &str| {
        format!(
            "GET /ws?room=1 HTTP/1.1\r\n\
             Host: 127.0.0.1:{}\r\n\
             {auth}\
             Connection: Upgrade\r\n\
             Upgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             \r\n",
            gw.addr().port()
        )
    };
    // Not authenticated: refused, nothing upstream.
    let (status, _, _) = raw_upgrade(gw.addr(), &head("")).await;
    assert_eq!(status, 401);
    assert_eq!(upstream.count(), 0);

    let (status, headers, mut stream) = raw_upgrade(
        gw.addr(),
        &head(&format!("Authorization: Bearer {token}\r\n")),
    )
    .await;
    assert_eq!(status, 101, "headers: {headers:?}");
    let rec = upstream.last();
    assert_eq!(rec.uri, "/ws?room=1");
    assert_eq!(rec.header("upgrade").as_deref(), Some("websocket"));
    assert!(!rec.has_header("authorization"));
    assert_eq!(rec.header_all("x-auth-user"), vec![user]);

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"ping through the tunnel").await.unwrap();
    let mut got = vec![0u8; b"ping through the tunnel".len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut got))
        .await
        .expect("echo within 10 s")
        .expect("read echo");
    assert_eq!(got, b"ping through the tunnel");
}
