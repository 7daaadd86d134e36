//! Routing by host and method, prefix rewrites and optional auth, through
//! the real gateway in front of recording upstreams (issue 25).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// One `[[route]]` in TOML with extra keys.
fn route(prefix: &str, upstream: &Upstream, keys: &str) -> String {
    format!(
        "\n[[route]]\npath_prefix = \"{prefix}\"\nupstream = \"{}\"\n{keys}",
        upstream.url()
    )
}

/// A gateway whose routes are `routes` only.
async fn gateway(routes: String) -> Gateway {
    let mut opts = GatewayOptions::new("http://127.0.0.1:1");
    opts.routes = Vec::new();
    opts.extra_toml = routes;
    Gateway::start_with(opts).await
}

/// A raw HTTP/1.1 request with `host` and extra header lines.
async fn send(gw: &Gateway, method: &str, target: &str, host: &str, extra: &str) -> RawResponse {
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    raw_request(gw.addr(), &head, b"").await
}

fn error_reason(response: &RawResponse) -> String {
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    body["error"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_pick_the_level_exact_then_wildcard_then_any() {
    let any = Upstream::start().await;
    let exact = Upstream::start().await;
    let wild = Upstream::start().await;
    let gw = gateway(
        route("/", &any, "auth = \"public\"\n")
            + &route("/", &exact, "auth = \"public\"\nhosts = [\"api.a.test\"]\n")
            + &route("/", &wild, "auth = \"public\"\nhosts = [\"*.a.test\"]\n"),
    )
    .await;
    let cases = [
        ("api.a.test", &exact),
        ("API.A.Test", &exact),
        ("api.a.test.", &exact),
        ("api.a.test:8443", &exact),
        ("other.a.test", &wild),
        ("x.y.a.test", &wild),
        ("a.test", &any),
        ("elsewhere.test", &any),
        ("127.0.0.1", &any),
        ("[::1]:80", &any),
    ];
    for (host, upstream) in cases {
        let before = upstream.count();
        let response = send(&gw, "GET", "/x", host, "").await;
        assert_eq!(response.status, 200, "{host}");
        assert_eq!(upstream.count(), before + 1, "{host} went elsewhere");
    }
    // The upstream is told the routed host, canonical.
    send(&gw, "GET", "/x", "API.A.Test.:8443", "").await;
    assert_eq!(
        exact.last().header("x-forwarded-host").as_deref(),
        Some("api.a.test:8443")
    );
    // An absolute-form target naming another host than Host is refused,
    // not routed by either.
    let before = (any.count(), exact.count(), wild.count());
    let response = send(&gw, "GET", "http://api.a.test/x", "other.test", "").await;
    assert_eq!(response.status, 400);
    assert_eq!(error_reason(&response), "INVALID_HOST");
    // The same host twice over: routed by it.
    let response = send(&gw, "GET", "http://API.a.test/x", "api.a.test", "").await;
    assert_eq!(response.status, 200);
    assert_eq!(exact.count(), before.1 + 1);
    assert_eq!((any.count(), wild.count()), (before.0, before.2));
    // Hosts that are no DNS name are refused before routing.
    for odd in ["a..b", "a%2eb", "a.test,b.test", "[::1"] {
        let response = send(&gw, "GET", "/x", odd, "").await;
        assert_eq!(response.status, 400, "{odd}");
    }
}

/// One HTTP/2 (h2c, prior knowledge) GET of `uri` with `headers`: status.
async fn h2_get(gw: &Gateway, uri: &str, headers: &[(&str, &str)]) -> u16 {
    let stream = TcpStream::connect(gw.addr()).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    let mut request = hyper::Request::builder().uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("h2 response");
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_routes_like_host() {
    let any = Upstream::start().await;
    let exact = Upstream::start().await;
    let gw = gateway(
        route("/", &any, "auth = \"public\"\n")
            + &route("/", &exact, "auth = \"public\"\nhosts = [\"api.a.test\"]\n"),
    )
    .await;
    assert_eq!(h2_get(&gw, "http://API.a.test:9/x", &[]).await, 200);
    assert_eq!((exact.count(), any.count()), (1, 0));
    assert_eq!(
        exact.last().header("x-forwarded-host").as_deref(),
        Some("api.a.test:9")
    );
    // `:authority` and a `Host` field naming another host: refused.
    assert_eq!(
        h2_get(&gw, "http://api.a.test/x", &[("host", "other.test")]).await,
        400
    );
    assert_eq!(
        h2_get(&gw, "http://other.test/x", &[("host", "api.a.test")]).await,
        400
    );
    assert_eq!((exact.count(), any.count()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_choose_routes_and_405_comes_before_credentials() {
    let reads = Upstream::start().await;
    let writes = Upstream::start().await;
    let gw = gateway(
        route(
            "/api",
            &reads,
            "methods = [\"GET\", \"HEAD\"]\nauth = \"public\"\n",
        ) + &route("/api", &writes, "methods = [\"POST\"]\n"),
    )
    .await;
    let response = send(&gw, "GET", "/api/1", "gw.test", "").await;
    assert_eq!(response.status, 200);
    assert_eq!(reads.count(), 1);
    // POST needs a credential on its own route.
    let response = send(&gw, "POST", "/api/1", "gw.test", "").await;
    assert_eq!(response.status, 401);
    let response = send(
        &gw,
        "DELETE",
        "/api/1",
        "gw.test",
        "Authorization: Bearer not-even-a-token\r\n",
    )
    .await;
    assert_eq!(response.status, 405);
    assert_eq!(error_reason(&response), "METHOD_NOT_ALLOWED");
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(response.header("allow"), Some("GET, HEAD, POST"));
    assert_eq!(writes.count(), 0);
    // Lower-case is another method, which no route takes.
    let response = send(&gw, "get", "/api/1", "gw.test", "").await;
    assert_eq!(response.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stricter_route_holds_per_host() {
    let site = Upstream::start().await;
    let gw = gateway(
        route("/", &site, "auth = \"public\"\n")
            + &route("/", &site, "auth = \"public\"\nhosts = [\"api.test\"]\n")
            + &route(
                "/admin",
                &site,
                "hosts = [\"api.test\"]\nroles = [\"admin\"]\n",
            ),
    )
    .await;
    for path in [
        "/admin/x",
        "/ADMIN/x",
        "/admin;x/y",
        "/admin./x",
        "/Admin%20/x",
    ] {
        let response = send(&gw, "GET", path, "api.test", "").await;
        assert_eq!(response.status, 401, "{path} on api.test");
    }
    // Another host has no /admin route: its own rules apply.
    let response = send(&gw, "GET", "/admin/x", "www.test", "").await;
    assert_eq!(response.status, 200);
    // A host level whose only route is another reading of the path
    // refuses it rather than sending it to the laxer level.
    let gw = gateway(
        route("/", &site, "auth = \"public\"\n")
            + &route("/admin", &site, "hosts = [\"api.test\"]\n"),
    )
    .await;
    for path in ["/admin;x/y", "/admin./x", "/admin~/x"] {
        let response = send(&gw, "GET", path, "api.test", "").await;
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(error_reason(&response), "INVALID_PATH", "{path}");
    }
    let response = send(&gw, "GET", "/ADMIN/x", "API.test.", "").await;
    assert_eq!(response.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_are_stripped_or_rewritten_for_the_upstream() {
    let up = Upstream::start().await;
    let gw = gateway(
        route("/api", &up, "auth = \"public\"\nstrip_prefix = true\n")
            + &route("/v1", &up, "auth = \"public\"\nrewrite_prefix = \"/v2\"\n"),
    )
    .await;
    let cases = [
        ("/api", "/"),
        ("/api/", "/"),
        ("/api/x/y?q=1", "/x/y?q=1"),
        ("/API/x", "/x"),
        ("/api/x;p=1", "/x;p=1"),
        ("/v1", "/v2"),
        ("/v1/x?token=", "/v2/x"),
        ("/V1/users/7", "/v2/users/7"),
    ];
    for (sent, seen) in cases {
        let response = send(&gw, "GET", sent, "gw.test", "").await;
        assert_eq!(response.status, 200, "{sent}");
        assert_eq!(up.last().uri, seen, "{sent}");
    }
    // Nothing climbs out of the prefix: refused before the upstream.
    let before = up.count();
    for sent in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/..;/admin",
        "/api//admin",
        "/api/.%2e/x",
        "/v1/%2e%2e/x",
        "/v1/..%3b/x",
    ] {
        let response = send(&gw, "GET", sent, "gw.test", "").await;
        assert_eq!(response.status, 400, "{sent}");
    }
    // `/apix` is not under `/api`.
    let response = send(&gw, "GET", "/apix", "gw.test", "").await;
    assert_eq!(response.status, 404);
    assert_eq!(up.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_auth_forwards_identity_only_for_a_good_credential() {
    let up = Upstream::start().await;
    let gw = gateway(route("/", &up, "auth = \"optional\"\n")).await;
    let user = unique("u");
    gw.add_user(&user, &random_password(), &["ops"]).await;
    let token = gw.issue_token(&user).await;

    let response = get(&gw.url("/x"), None, &[("x-auth-user", "root")]).await;
    response.expect_status(200);
    let seen = up.last();
    assert!(
        !seen.has_header("x-auth-user"),
        "no identity without a credential"
    );
    assert!(!seen.has_header("x-auth-roles"));

    let response = get(&gw.url("/x"), Some(&token), &[]).await;
    response.expect_status(200);
    let seen = up.last();
    assert_eq!(seen.header("x-auth-user").as_deref(), Some(user.as_str()));
    assert_eq!(seen.header("x-auth-roles").as_deref(), Some("ops"));
    assert!(!seen.has_header("authorization"));

    let before = up.count();
    let response = get(&gw.url("/x"), Some("not-a-token"), &[]).await;
    response.expect_invalid_token();
    let response = get(&gw.url("/x?token=bad"), None, &[]).await;
    response.expect_status(401);
    assert_eq!(up.count(), before, "a bad credential reached the upstream");
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_judges_with_the_same_table() {
    let up = Upstream::start().await;
    let gw = gateway(
        route("/", &up, "auth = \"public\"\n")
            + &route(
                "/api",
                &up,
                "hosts = [\"api.test\"]\nroles = [\"admin\"]\nstrip_prefix = true\nmethods = [\"GET\"]\n",
            ),
    )
    .await;
    gw.add_user("root", &random_password(), &["admin"]).await;
    let root = gw.issue_token("root").await;
    let verify = |headers: &'static str| {
        let gw = &gw;
        async move { send(gw, "GET", "/_authgate/verify", "gw.internal", headers).await }
    };
    // The judged host picks the level: api.test holds /api to its role.
    let response = verify("X-Forwarded-Host: api.test\r\nX-Forwarded-Uri: /api/x\r\n").await;
    assert_eq!(response.status, 401);
    let response = verify("X-Forwarded-Host: API.test.:443\r\nX-Forwarded-Uri: /API/x\r\n").await;
    assert_eq!(response.status, 401);
    let response = verify("X-Forwarded-Host: www.test\r\nX-Forwarded-Uri: /api/x\r\n").await;
    assert_eq!(response.status, 200);
    // The decision is on the path as the client sent it, not stripped:
    // `/x` on api.test is the public catch-all's.
    let response = verify("X-Forwarded-Host: api.test\r\nX-Forwarded-Uri: /x\r\n").await;
    assert_eq!(response.status, 200);
    assert!(response.header("x-auth-user").is_none());
    let head = format!(
        "GET /_authgate/verify HTTP/1.1\r\nHost: gw.internal\r\nX-Forwarded-Host: api.test\r\n\
         X-Forwarded-Uri: /api/x\r\nAuthorization: Bearer {root}\r\nConnection: close\r\n\r\n"
    );
    let response = raw_request(gw.addr(), &head, b"").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-auth-user"), Some("root"));
    // The judged method meets the route's methods: 405 with Allow.
    let response = verify(
        "X-Forwarded-Host: api.test\r\nX-Forwarded-Uri: /api/x\r\nX-Forwarded-Method: DELETE\r\n",
    )
    .await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET"));
    // Without X-Forwarded-Host, the verify request's own Host (Envoy).
    let response = send(&gw, "GET", "/_authgate/verify/api/x", "api.test", "").await;
    assert_eq!(response.status, 401);
    // Two hosts, or a host that is no host: refused, never guessed at.
    for headers in [
        "X-Forwarded-Host: api.test\r\nX-Forwarded-Host: www.test\r\nX-Forwarded-Uri: /api/x\r\n",
        "X-Forwarded-Host: www.test, api.test\r\nX-Forwarded-Uri: /api/x\r\n",
        "X-Forwarded-Host: api..test\r\nX-Forwarded-Uri: /api/x\r\n",
    ] {
        let response = verify(headers).await;
        assert_eq!(response.status, 400, "{headers}");
        assert_eq!(error_reason(&response), "INVALID_HOST", "{headers}");
    }
    assert_eq!(up.count(), 0, "a decision reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_table_while_requests_are_in_flight() {
    let before = Upstream::start().await;
    let after = Upstream::start().await;
    let slow = Upstream::start_with_delay(Duration::from_millis(300)).await;
    let table = |api: &Upstream| {
        route("/", &slow, "auth = \"public\"\n")
            + &route("/", api, "auth = \"public\"\nhosts = [\"api.test\"]\n")
    };
    let mut opts = GatewayOptions::new("http://127.0.0.1:1");
    opts.routes = Vec::new();
    opts.extra_toml = table(&before);
    let mut gw = Gateway::start_with(opts.clone()).await;
    // Requests in flight across the swap: each is answered by the table it
    // was routed by.
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let addr = gw.addr();
            tokio::spawn(async move {
                raw_request(
                    addr,
                    "GET /slow HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n",
                    b"",
                )
                .await
                .status
            })
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let addr = gw.addr();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            // Until told to stop (a bound keeps a broken reload from looping).
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let head = "GET /x HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n";
                statuses.push(raw_request(addr, head, b"").await.status);
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    opts.extra_toml = table(&after);
    gw.set_options(opts);
    gw.sighup();
    assert!(
        poll_until(Duration::from_secs(15), || async { after.count() > 0 }).await,
        "the new table never took requests"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for request in in_flight {
        assert_eq!(request.await.unwrap(), 200);
    }
    let switched = before.count() + after.count();
    assert_eq!(
        switched,
        statuses.len(),
        "every request went to one table's upstream"
    );
    // After the swap, api.test is the new upstream's only.
    let count = before.count();
    let response = send(&gw, "GET", "/x", "api.test", "").await;
    assert_eq!(response.status, 200);
    assert_eq!(before.count(), count);
}

/// A route spreading requests over `upstreams`.
fn pool_route(prefix: &str, upstreams: &[String], keys: &str) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "\n[[route]]\npath_prefix = \"{prefix}\"\nupstreams = [{}]\n{keys}",
        list.join(", ")
    )
}

/// The value of one `/metrics` sample.
async fn metric(gw: &Gateway, sample: &str) -> Option<u64> {
    let text = get(&gw.url("/metrics"), None, &[]).await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(sample))
        .and_then(|rest| rest.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_take_turns_eject_a_dead_member_and_retry_bodyless_requests() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let dead = closed_port_url();
    let gw = gateway(pool_route(
        "/",
        &[a.url(), b.url(), dead.clone()],
        "auth = \"public\"\n",
    ))
    .await;
    // Every GET is answered although one member refuses connections: a
    // request that could not connect is tried once on another member.
    for i in 0..30 {
        let response = send(&gw, "GET", &format!("/n/{i}"), "gw.test", "").await;
        assert_eq!(response.status, 200, "request {i}");
    }
    assert_eq!(a.count() + b.count(), 30);
    // Both live members took turns.
    assert!(
        a.count() >= 5 && b.count() >= 5,
        "{} / {}",
        a.count(),
        b.count()
    );
    let dead_label = format!("{{route=\"/\",upstream=\"{dead}/\"}}");
    let a_label = format!("{{route=\"/\",upstream=\"{}/\"}}", a.url());
    // Ejected after 3 failures in a row (per worker): down, and with far
    // fewer than 10 failures for 30 requests.
    assert_eq!(
        metric(&gw, &format!("authgate_upstream_up{dead_label}")).await,
        Some(0)
    );
    let failures = metric(
        &gw,
        &format!("authgate_upstream_failures_total{dead_label}"),
    )
    .await
    .unwrap();
    assert!((3..10).contains(&failures), "{failures} failures");
    assert_eq!(
        metric(&gw, &format!("authgate_upstream_up{a_label}")).await,
        Some(1)
    );
    assert_eq!(
        metric(&gw, &format!("authgate_upstream_in_flight{a_label}")).await,
        Some(0)
    );
    assert_eq!(
        metric(&gw, &format!("authgate_upstream_failures_total{a_label}")).await,
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_is_never_sent_twice() {
    let live = Upstream::start().await;
    let dead = closed_port_url();
    // Each worker's first turn is the first member: the dead one.
    let gw = gateway(pool_route("/", &[dead, live.url()], "auth = \"public\"\n")).await;
    let head = "POST /orders HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\n\
                Content-Length: 2\r\nConnection: close\r\n\r\n";
    let response = raw_request(gw.addr(), head, b"{}").await;
    assert_eq!(response.status, 502);
    assert_eq!(error_reason(&response), "UPSTREAM_UNREACHABLE");
    assert_eq!(live.count(), 0, "a request with a body was retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_member_keeps_the_in_flight_bound() {
    let slow = Upstream::start_with_delay(Duration::from_millis(800)).await;
    let mut opts = GatewayOptions::new("http://127.0.0.1:1");
    opts.routes = Vec::new();
    opts.extra_toml = format!(
        "[limits]\nmax_upstream_requests = 1\n{}",
        pool_route("/", &[slow.url()], "auth = \"public\"\n")
    );
    let gw = Gateway::start_with(opts).await;
    let addr = gw.addr();
    let first = tokio::spawn(async move {
        raw_request(
            addr,
            "GET /a HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
            b"",
        )
        .await
        .status
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = send(&gw, "GET", "/b", "gw.test", "").await;
    assert_eq!(second.status, 503);
    assert_eq!(error_reason(&second), "UPSTREAM_BUSY");
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_keep_a_failing_member_out_with_one_prober() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let b_addr = b.addr();
    let mut opts = GatewayOptions::new("http://127.0.0.1:1");
    opts.routes = Vec::new();
    opts.extra_toml = pool_route(
        "/",
        &[a.url(), b.url()],
        "auth = \"public\"\nhealth_check = { path = \"/healthz\", interval = 1 }\n",
    );
    let mut gw = Gateway::prepare(opts);
    // Three workers, one prober: a member is asked once a round.
    gw.spawn_with_prelude("export AUTHGATE_WORKERS=3").await;
    let checks = |up: &Upstream| {
        up.requests()
            .iter()
            .filter(|r| r.path() == "/healthz")
            .count()
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let seen = checks(&a);
    assert!((2..=4).contains(&seen), "{seen} health checks in 2.5 s");
    assert_eq!(a.last().method, "GET");

    // b stops: once its check fails, it gets no requests at all (none is
    // even tried and retried).
    b.stop();
    let b_label = format!("{{route=\"/\",upstream=\"{}/\"}}", b.url());
    assert!(
        poll_until(Duration::from_secs(5), || async {
            metric(&gw, &format!("authgate_upstream_up{b_label}")).await == Some(0)
        })
        .await,
        "b never went down"
    );
    let before = a.count();
    for i in 0..10 {
        let response = send(&gw, "GET", &format!("/x/{i}"), "gw.test", "").await;
        assert_eq!(response.status, 200);
    }
    assert!(a.count() >= before + 10);
    assert_eq!(
        metric(&gw, &format!("authgate_upstream_failures_total{b_label}")).await,
        Some(0),
        "a member failing its check was sent requests"
    );
    // b answers its check again: back in turn.
    let b = Upstream::start_at(b_addr).await;
    assert!(
        poll_until(Duration::from_secs(5), || async {
            metric(&gw, &format!("authgate_upstream_up{b_label}")).await == Some(1)
        })
        .await,
        "b never came back"
    );
    for i in 0..6 {
        send(&gw, "GET", &format!("/y/{i}"), "gw.test", "").await;
    }
    assert!(
        b.requests().iter().any(|r| r.path().starts_with("/y/")),
        "b healthy again but not in turn"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_and_answers_to_allowed_origins() {
    let up = Upstream::start().await;
    let gw = gateway(route(
        "/api",
        &up,
        "methods = [\"GET\", \"POST\"]\n[route.cors]\nallow_origins = [\"https://app.example.com\"]\n\
         allow_methods = [\"GET\", \"POST\"]\nallow_headers = [\"Authorization\", \"Content-Type\"]\n\
         allow_credentials = true\nmax_age = 600\n",
    ))
    .await;
    let user = unique("u");
    gw.add_user(&user, &random_password(), &[]).await;
    let token = gw.issue_token(&user).await;
    let app = "Origin: https://app.example.com\r\n";
    // A preflight: answered by the gateway, without a credential, whatever
    // the route's methods (OPTIONS is not among them).
    let preflight = "Access-Control-Request-Method: POST\r\n\
                     Access-Control-Request-Headers: authorization, content-type\r\n";
    let response = send(
        &gw,
        "OPTIONS",
        "/api/orders",
        "gw.test",
        &format!("{app}{preflight}"),
    )
    .await;
    assert_eq!(response.status, 204);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        response.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        response.header("access-control-allow-headers"),
        Some("Authorization, Content-Type")
    );
    assert_eq!(response.header("access-control-max-age"), Some("600"));
    assert_eq!(response.header("vary"), Some("Origin"));
    assert_eq!(up.count(), 0, "a preflight reached the upstream");
    // Another origin: 403 without CORS headers.
    let evil = "Origin: https://evil.example\r\n";
    let response = send(
        &gw,
        "OPTIONS",
        "/api/orders",
        "gw.test",
        &format!("{evil}{preflight}"),
    )
    .await;
    assert_eq!(response.status, 403);
    assert_eq!(error_reason(&response), "CORS_ORIGIN_NOT_ALLOWED");
    assert!(response.header("access-control-allow-origin").is_none());
    // The gateway's own 401 is readable by the allowed origin ...
    let response = send(&gw, "GET", "/api/orders", "gw.test", app).await;
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    // ... and so is the upstream's answer, with the upstream's own CORS
    // headers replaced.
    let auth = format!("{app}Authorization: Bearer {token}\r\n");
    let response = send(&gw, "GET", "/api/orders", "gw.test", &auth).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(
        response
            .headers
            .iter()
            .any(|(k, v)| k == "vary" && v.contains("Origin"))
    );
    // Requests from another origin are handled as usual, without CORS headers.
    let auth = format!("{evil}Authorization: Bearer {token}\r\n");
    let response = send(&gw, "GET", "/api/orders", "gw.test", &auth).await;
    assert_eq!(response.status, 200);
    assert!(response.header("access-control-allow-origin").is_none());
    // An OPTIONS that is not a preflight is a request like any other: no
    // route takes OPTIONS here.
    let response = send(&gw, "OPTIONS", "/api/orders", "gw.test", app).await;
    assert_eq!(response.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_replaces_pools_and_their_probers() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let check = "auth = \"public\"\nhealth_check = { path = \"/healthz\", interval = 1 }\n";
    let mut opts = GatewayOptions::new("http://127.0.0.1:1");
    opts.routes = Vec::new();
    opts.extra_toml = pool_route("/", &[a.url(), b.url()], check);
    let mut gw = Gateway::start_with(opts.clone()).await;
    let checks = |up: &Upstream| {
        up.requests()
            .iter()
            .filter(|r| r.path() == "/healthz")
            .count()
    };
    assert!(poll_until(Duration::from_secs(5), || async { checks(&a) > 0 }).await);
    opts.extra_toml = pool_route("/", &[b.url()], check);
    gw.set_options(opts);
    gw.sighup();
    assert!(
        poll_until(Duration::from_secs(10), || async {
            let before = a.count();
            send(&gw, "GET", "/x", "gw.test", "").await;
            a.count() == before
                && get(&gw.url("/metrics"), None, &[])
                    .await
                    .text()
                    .lines()
                    .all(|line| !line.contains(&a.url()))
        })
        .await,
        "the old pool still takes requests"
    );
    // The old pool's prober stops with it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = checks(&a);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(checks(&a), seen, "the old prober still runs");
    assert!(checks(&b) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_never_touches_the_pool() {
    let live = Upstream::start().await;
    let dead = closed_port_url();
    let gw = gateway(pool_route(
        "/api",
        &[dead.clone(), live.url()],
        "auth = \"public\"\nrewrite_prefix = \"/v2\"\n",
    ))
    .await;
    for _ in 0..5 {
        let response = send(
            &gw,
            "GET",
            "/_authgate/verify",
            "gw.internal",
            "X-Forwarded-Host: api.test\r\nX-Forwarded-Uri: /api/x\r\n",
        )
        .await;
        assert_eq!(response.status, 200);
    }
    assert_eq!(live.count(), 0);
    let dead_label = format!("{{route=\"/api\",upstream=\"{dead}/\"}}");
    assert_eq!(
        metric(
            &gw,
            &format!("authgate_upstream_failures_total{dead_label}")
        )
        .await,
        Some(0)
    );
    assert_eq!(
        metric(&gw, &format!("authgate_upstream_up{dead_label}")).await,
        Some(1)
    );
}
