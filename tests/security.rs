//! The attack suite: each test is one attack on the gateway, run against the
//! real binary, and fails without the defence it names.
//!
//! Limits and timeouts are set small in each test's config so that the
//! attacks finish in seconds. Requests whose bytes a client library would
//! fix are sent raw.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Writes `bytes` and reads until the gateway closes the connection (end of
/// stream or reset). `None` when it is still open after `within`.
async fn exchange(addr: SocketAddr, bytes: &[u8], within: Duration) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The gateway may answer and close before taking every byte.
    let _ = stream.write_all(bytes).await;
    until_closed(&mut stream, within).await
}

/// Reads until the peer closes; `None` if it has not within `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().map(|()| buf)
}

/// The JSON body of the first response in `raw` (after the head).
fn json_body(raw: &[u8]) -> Value {
    let text = String::from_utf8_lossy(raw);
    let start = text.find("\r\n\r\n").expect("a response head") + 4;
    let body = &text[start..];
    let body = body.find('{').map_or(body, |at| &body[at..]);
    let end = body.rfind('}').map_or(body.len(), |at| at + 1);
    serde_json::from_str(&body[..end]).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Reads one response with a `Content-Length` body from a kept-alive stream.
async fn read_one_response(stream: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !buf.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.expect("read head");
            assert!(n > 0, "closed before a response head");
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("content-length"));
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.expect("read body");
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("a response within 20 s");
    statuses(&buf)[0]
}

/// Options with a public catch-all (`/`), a public `/public`, a protected
/// `/private` and `/admin` (role `admin`): a request that escapes its
/// route's policy would reach the upstream unauthenticated.
fn public_catch_all(upstream: &Upstream) -> GatewayOptions {
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.routes = vec![
        RouteSpec::public("/", &upstream.url()),
        RouteSpec::public("/public", &upstream.url()),
        RouteSpec::required("/private", &upstream.url()),
        RouteSpec::required("/admin", &upstream.url()).roles(&["admin"]),
    ];
    opts
}

/// A user with `roles` and a fresh JWT for them.
async fn user_with_token(gw: &Gateway, roles: &[&str]) -> (String, String, String) {
    let user = unique("u");
    let password = random_password();
    gw.add_user(&user, &password, roles).await;
    let token = gw.issue_token(&user).await;
    (user, password, token)
}

/// Inserts `lines` right after the `[server]` header of the gateway's config
/// (the harness renders that table itself).
fn add_server_keys(gw: &Gateway, lines: &str) {
    let text = std::fs::read_to_string(gw.config_path()).expect("read config");
    let text = text.replacen("[server]\n", &format!("[server]\n{lines}\n"), 1);
    std::fs::write(gw.config_path(), text).expect("write config");
}

/// One HTTP/2 (h2c, prior knowledge) GET; status and body.
async fn h2_get(addr: SocketAddr, path: &str, headers: &[(String, String)]) -> (u16, Vec<u8>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    let mut request = hyper::Request::builder().uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("h2 response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("h2 body")
        .to_bytes()
        .to_vec();
    (status, body)
}

async fn login_status(gw: &Gateway, user: &str, password: &str, xff: Option<&str>) -> Resp {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(xff) = xff {
        headers.push(("x-forwarded-for", xff));
    }
    request(
        "POST",
        &gw.url("/auth/login"),
        &headers,
        Some(&json!({ "username": user, "password": password })),
    )
    .await
}

/// A gateway that locks logins after 3 failures in a minute (per user,
/// and per address unless `address_max_failures` says otherwise) for
/// `lockout` seconds, trusting `trusted_proxies` when given; with one user
/// who has not failed yet.
async fn throttled_gateway(
    upstream: &Upstream,
    address_max_failures: Option<u32>,
    lockout: u64,
    trusted_proxies: Option<&str>,
) -> (Gateway, String, String) {
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.login_max_failures = 3;
    if let Some(max) = address_max_failures {
        opts.login_address_max_failures = max;
    }
    opts.login_window = 60;
    opts.login_lockout = lockout;
    let mut gw = Gateway::prepare(opts);
    if let Some(proxies) = trusted_proxies {
        add_server_keys(&gw, &format!("trusted_proxies = [\"{proxies}\"]"));
    }
    gw.spawn().await;
    let user = unique("fresh");
    let password = random_password();
    gw.add_user(&user, &password, &[]).await;
    (gw, user, password)
}

// ---------------------------------------------------------------------------
// Limits and timeouts
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_is_431() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(public_catch_all(&upstream)).await;
    let r = client()
        .get(gw.url("/public/x"))
        .header("x-big", "v".repeat(20_000))
        .send()
        .await
        .expect("a 431 response, not a dropped connection");
    assert_eq!(r.status().as_u16(), 431);
    assert_eq!(upstream.count(), 0);
    get(&gw.url("/healthz"), None, &[]).await.expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_is_431() {
    let upstream = Upstream::start().await;
    // Default: 100 header fields.
    let gw = Gateway::start_with(public_catch_all(&upstream)).await;
    let mut req = client().get(gw.url("/public/x"));
    for i in 0..150 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let r = req.send().await.expect("a 431 response");
    assert_eq!(r.status().as_u16(), 431);
    assert_eq!(upstream.count(), 0);
    drop(gw);

    // Configured lower: HTTP/1 is refused by the parser, HTTP/2 by the
    // gateway with the JSON envelope.
    let mut opts = public_catch_all(&upstream);
    opts.extra_toml = "[limits]\nmax_headers = 20\n".into();
    let gw = Gateway::start_with(opts).await;
    let many: Vec<(String, String)> = (0..30).map(|i| (format!("x-h{i}"), "1".into())).collect();
    let mut req = client().get(gw.url("/public/x"));
    for (name, value) in &many {
        req = req.header(name, value);
    }
    assert_eq!(req.send().await.expect("response").status().as_u16(), 431);
    let mut req = client().get(gw.url("/public/x"));
    for (name, value) in &many[..10] {
        req = req.header(name, value);
    }
    assert_eq!(req.send().await.expect("response").status().as_u16(), 200);
    assert_eq!(upstream.count(), 1);

    let (status, body) = h2_get(gw.addr(), "/public/h2", &many).await;
    assert_eq!(status, 431, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("JSON envelope");
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(v["error"]["reason"], "HEADERS_TOO_LARGE");
    let (status, _) = h2_get(gw.addr(), "/public/h2", &many[..10]).await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream.count(),
        2,
        "only the two small requests got through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_partial_head_is_cut_off_after_header_read_timeout() {
    let upstream = Upstream::start().await;
    let mut opts = public_catch_all(&upstream);
    opts.extra_toml = "[limits]\nheader_read_timeout = 1\nidle_timeout = 60\n".into();
    let gw = Gateway::start_with(opts).await;

    // A partial head, then silence.
    let mut stalled = TcpStream::connect(gw.addr()).await.expect("connect");
    stalled
        .write_all(b"GET /public/x HTTP/1.1\r\nHost: gw.test\r\nX-Slow: ")
        .await
        .expect("write");
    let started = Instant::now();
    until_closed(&mut stalled, Duration::from_secs(10))
        .await
        .expect("a stalled head is cut off");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );

    // A head trickled a byte at a time: activity does not extend the deadline.
    let stream = TcpStream::connect(gw.addr()).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        let _ = write.write_all(b"GET /public/x HTTP/1.1\r\nX-Slow: ").await;
        for _ in 0..100 {
            if write.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a trickled head is cut off too");
    assert!(started.elapsed() < Duration::from_secs(6));
    trickle.abort();

    assert_eq!(upstream.count(), 0);
    get(&gw.url("/healthz"), None, &[]).await.expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let upstream = Upstream::start().await;
    let mut opts = public_catch_all(&upstream);
    opts.extra_toml = "[limits]\nheader_read_timeout = 30\nidle_timeout = 1\n".into();
    let gw = Gateway::start_with(opts).await;

    let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(read_one_response(&mut stream).await, 200);
    let started = Instant::now();
    until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection is closed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn excess_connections_wait_for_a_slot_and_none_fails() {
    let upstream = Upstream::start().await;
    let mut opts = public_catch_all(&upstream);
    opts.extra_toml = "[limits]\nmax_connections = 2\nheader_read_timeout = 30\n".into();
    let gw = Gateway::start_with(opts).await;
    let addr = gw.addr();

    // Two connections take both slots and hold them.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("write");
        holders.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let waiting = tokio::spawn(async move {
        raw_request(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
            b"",
        )
        .await
        .status
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection must wait while two hold the slots"
    );
    drop(holders.pop());
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a slot is free")
        .expect("task");
    assert_eq!(status, 200);

    // Many more than the cap: all wait their turn, none fails.
    let mut tasks = Vec::new();
    for i in 0..30 {
        tasks.push(tokio::spawn(async move {
            raw_request(
                addr,
                &format!("GET /public/{i} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"),
                b"",
            )
            .await
            .status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), 200);
    }
    assert_eq!(upstream.count(), 30);
    drop(holders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgraded_connections_keep_their_slot_and_close_when_idle() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml =
        "[limits]\nmax_connections = 2\nidle_timeout = 3\nheader_read_timeout = 30\n".into();
    let gw = Gateway::start_with(opts).await;
    let (_user, _pw, token) = user_with_token(&gw, &[]).await;
    let addr = gw.addr();
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {token}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let mut tunnels = Vec::new();
    for _ in 0..2 {
        let (status, _, stream) = raw_upgrade(addr, &head).await;
        assert_eq!(status, 101);
        tunnels.push(stream);
    }
    let opened = Instant::now();
    let waiting = tokio::spawn(async move {
        raw_request(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
            b"",
        )
        .await
        .status
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "upgraded connections still count against max_connections"
    );
    // Idle tunnels are closed after idle_timeout, which frees the slots.
    for tunnel in &mut tunnels {
        until_closed(tunnel, Duration::from_secs(10))
            .await
            .expect("an idle tunnel is closed");
    }
    assert!(opened.elapsed() >= Duration::from_secs(2));
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once the tunnels closed")
        .expect("task");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_body_over_64_kib_is_413() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let big = json!({ "username": "u", "password": "x".repeat(70_000) }).to_string();
    post_raw(&gw.url("/auth/login"), &big).await.expect_error(
        413,
        "INVALID_ARGUMENT",
        "BODY_TOO_LARGE",
    );
    // Without a Content-Length: counted while read.
    let mut body = Vec::new();
    for chunk in big.as_bytes().chunks(8192) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let r = raw_request(
        gw.addr(),
        "POST /auth/login HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        &body,
    )
    .await;
    assert_eq!(r.status, 413);
    let v: Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(v["error"]["reason"], "BODY_TOO_LARGE");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_body_over_the_limit_is_413_and_the_upstream_gets_no_request() {
    let upstream = Upstream::start().await;
    let mut opts = public_catch_all(&upstream);
    opts.extra_toml = "[limits]\nmax_proxy_body_bytes = 1024\n".into();
    let gw = Gateway::start_with(opts).await;

    // Declared too large: refused before the upstream is contacted.
    let r = client()
        .post(gw.url("/public/upload"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .expect("send");
    Resp::from(r)
        .await
        .expect_error(413, "INVALID_ARGUMENT", "BODY_TOO_LARGE");
    assert_eq!(upstream.count(), 0);

    // Within the limit: streamed through intact.
    let body = pseudo_random_bytes(1000, 7);
    let r = client()
        .post(gw.url("/public/upload"))
        .body(body.clone())
        .send()
        .await
        .expect("send");
    Resp::from(r).await.expect_status(200);
    assert_eq!(upstream.last().body_sha256, sha256_hex(&body));

    // Chunked, no length: cut off when the limit is crossed. The upstream
    // sees at most a truncated body and never a complete request.
    let mut chunked = Vec::new();
    for _ in 0..8 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'y'; 512]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut raw = b"POST /public/upload HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    raw.extend_from_slice(&chunked);
    let answer = exchange(gw.addr(), &raw, Duration::from_secs(20))
        .await
        .expect("answered and closed");
    assert_eq!(
        statuses(&answer),
        vec![413],
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(json_body(&answer)["error"]["reason"], "BODY_TOO_LARGE");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upstream.count(), 1, "only the request within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_token_and_key_are_401() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let long_token = format!("eyJhbGciOiJIUzI1NiJ9.{}.sig", "a".repeat(9000));
    get(&gw.url("/x"), Some(&long_token), &[])
        .await
        .expect_invalid_token();
    let long_key = format!("ag_{}", "a".repeat(400));
    get(&gw.url(&format!("/x?accesskey={long_key}")), None, &[])
        .await
        .expect_401("INVALID_CREDENTIALS");
    get(
        &gw.url("/x"),
        None,
        &[("cookie", &format!("accesskey={long_key}"))],
    )
    .await
    .expect_401("INVALID_CREDENTIALS");
    assert_eq!(upstream.count(), 0);
}

// ---------------------------------------------------------------------------
// Login throttling
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_per_user_refuses_even_the_right_password_then_lifts() {
    let upstream = Upstream::start().await;
    // Each attempt from its own address, so only the per-user count trips.
    let (gw, user, password) = throttled_gateway(&upstream, None, 2, Some("127.0.0.1")).await;
    let other = unique("bystander");
    let other_password = random_password();
    gw.add_user(&other, &other_password, &[]).await;

    for i in 0..3 {
        let xff = format!("198.51.100.{i}");
        login_status(&gw, &user, "wrong", Some(&xff))
            .await
            .expect_401("INVALID_CREDENTIALS");
    }
    let r = login_status(&gw, &user, &password, Some("198.51.100.50")).await;
    r.expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // One-time-key logins are throttled by the same count.
    let r = request(
        "POST",
        &gw.url("/auth/onetimekey/login"),
        &[("x-forwarded-for", "198.51.100.51")],
        Some(&json!({ "username": user, "key": "k", "token": "t" })),
    )
    .await;
    r.expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
    // Another user is not affected.
    login_status(&gw, &other, &other_password, Some("198.51.100.52"))
        .await
        .expect_status(200);

    // The lockout lifts by itself.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    login_status(&gw, &user, &password, Some("198.51.100.53"))
        .await
        .expect_status(200);
    // A success resets the count: 2 + 2 failures around it lock nothing.
    for i in 0..2 {
        login_status(&gw, &user, "wrong", Some(&format!("198.51.100.6{i}")))
            .await
            .expect_401("INVALID_CREDENTIALS");
    }
    login_status(&gw, &user, &password, Some("198.51.100.70"))
        .await
        .expect_status(200);
    for i in 0..2 {
        login_status(&gw, &user, "wrong", Some(&format!("198.51.100.8{i}")))
            .await
            .expect_401("INVALID_CREDENTIALS");
    }
    login_status(&gw, &user, &password, Some("198.51.100.90"))
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_per_address_spans_usernames_and_ignores_forged_forwarded_for() {
    let upstream = Upstream::start().await;
    // No trusted proxies: the TCP peer is the client address.
    let (gw, user, password) = throttled_gateway(&upstream, Some(3), 2, None).await;

    for i in 0..3 {
        // Rotating usernames and forged X-Forwarded-For values.
        login_status(
            &gw,
            &unique("guess"),
            "wrong",
            Some(&format!("203.0.113.{i}")),
        )
        .await
        .expect_401("INVALID_CREDENTIALS");
    }
    let r = login_status(&gw, &user, &password, Some("203.0.113.99")).await;
    r.expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
    assert!(r.header("retry-after").is_some());
    // Long and random names do not escape the address count either.
    login_status(&gw, &"n".repeat(5000), "wrong", None)
        .await
        .expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    login_status(&gw, &user, &password, None)
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_decides_the_address_only_behind_a_trusted_proxy() {
    let upstream = Upstream::start().await;
    let (gw, user, password) =
        throttled_gateway(&upstream, Some(3), 30, Some("127.0.0.1/32")).await;

    for _ in 0..3 {
        login_status(&gw, &unique("guess"), "wrong", Some("203.0.113.7"))
            .await
            .expect_401("INVALID_CREDENTIALS");
    }
    // The attacker's address is locked, whatever name it tries...
    login_status(&gw, &user, &password, Some("203.0.113.7"))
        .await
        .expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
    // ...also behind another proxy hop that is not trusted...
    login_status(&gw, &user, &password, Some("203.0.113.7, 127.0.0.1"))
        .await
        .expect_error(429, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS");
    // ...while another client behind the same proxy logs in.
    login_status(&gw, &user, &password, Some("203.0.113.8"))
        .await
        .expect_status(200);
}

// ---------------------------------------------------------------------------
// Path and request safety
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_tricks_never_reach_a_protected_path_unauthenticated() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(public_catch_all(&upstream)).await;
    let targets = [
        "/public/../admin",
        "/public/./admin",
        "/public/../private/x",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/.%2e/admin",
        "/public/%2e%2e%2fadmin",
        "/public%2fadmin",
        "/public%2Fadmin",
        "/public/..%2fadmin",
        "/public%5cadmin",
        "/public%5C..%5Cadmin",
        "/public\\..\\admin",
        "//admin",
        "/public//admin",
        "//private/x",
        "/%61dmin",
        "/%41dmin",
        "/priv%61te/x",
        "/public/..;/admin",
        "/public/..;jsessionid=1/admin",
        "/public/..%3b/admin",
        "/admin%00",
        "/admin%00/x",
        "/public/%252e%252e/admin",
        "/public/%c0%ae%c0%ae/admin",
        "/public/%",
        "/public/%zz/../admin",
    ];
    for target in targets {
        let head = format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let answer = exchange(gw.addr(), head.as_bytes(), Duration::from_secs(20))
            .await
            .expect("answered");
        assert_eq!(
            statuses(&answer),
            vec![400],
            "{target}: {}",
            String::from_utf8_lossy(&answer)
        );
        let text = String::from_utf8_lossy(&answer);
        if text.contains("{\"error\"") {
            assert_eq!(
                json_body(&answer)["error"]["reason"],
                "INVALID_PATH",
                "{target}"
            );
        }
    }
    assert_eq!(
        upstream.count(),
        0,
        "reached the upstream: {:?}",
        upstream
            .requests()
            .iter()
            .map(|r| r.uri.clone())
            .collect::<Vec<_>>()
    );
    // Plain paths still go through.
    get(&gw.url("/public/a.b/..c/%20x"), None, &[])
        .await
        .expect_status(200);
    assert_eq!(upstream.last().uri, "/public/a.b/..c/%20x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_and_foreign_hosts_route_on_the_path_only() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let (_user, _pw, admin_token) = user_with_token(&gw, &["admin"]).await;
    let up_host = upstream.addr().to_string();

    // The authority in the target does not choose the route or the upstream.
    let r = raw_request(
        gw.addr(),
        "GET http://evil.example/admin/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(upstream.count(), 0);

    // A target naming another host than `Host`: since routes choose by
    // host (issue 25), one request naming two is refused, never routed by
    // either (an upstream or cache could read the other one).
    let r = raw_request(
        gw.addr(),
        &format!(
            "GET http://evil.example/admin/x?q=1 HTTP/1.1\r\nHost: other.example\r\n\
             Authorization: Bearer {admin_token}\r\nConnection: close\r\n\r\n"
        ),
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(upstream.count(), 0);
    let r = raw_request(
        gw.addr(),
        &format!(
            "GET http://evil.example/admin/x?q=1 HTTP/1.1\r\nHost: EVIL.example.\r\n\
             Authorization: Bearer {admin_token}\r\nConnection: close\r\n\r\n"
        ),
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    let rec = upstream.last();
    assert_eq!(rec.uri, "/admin/x?q=1");
    assert_eq!(rec.header_all("host"), vec![up_host.clone()]);
    assert_eq!(
        rec.header("x-forwarded-host").as_deref(),
        Some("evil.example")
    );

    // A Host naming another site changes nothing either.
    let r = raw_request(
        gw.addr(),
        "GET /public/y HTTP/1.1\r\nHost: evil.example:8443\r\nConnection: close\r\n\r\n",
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    let rec = upstream.last();
    assert_eq!(rec.header_all("host"), vec![up_host.clone()]);
    assert_eq!(
        rec.header("x-forwarded-host").as_deref(),
        Some("evil.example:8443")
    );

    let before = upstream.count();
    // Two Host headers, or one that is not host[:port]: refused.
    for head in [
        "GET /public/y HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        "GET /public/y HTTP/1.1\r\nHost: evil.example/x\r\nConnection: close\r\n\r\n",
        "GET /public/y HTTP/1.1\r\nHost: user@evil.example\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw_request(gw.addr(), head, b"").await;
        assert_eq!(r.status, 400, "{head}");
        let v: Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(v["error"]["reason"], "INVALID_HOST", "{head}");
    }
    // Authority-form and asterisk-form targets name no path.
    for head in [
        "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    ] {
        let answer = exchange(gw.addr(), head.as_bytes(), Duration::from_secs(20))
            .await
            .expect("answered");
        assert_eq!(statuses(&answer), vec![400], "{head}");
    }
    // A CONNECT with an origin-form target parses; it is still no tunnel
    // request an upstream gets to answer.
    for target in ["/public/y", "http://gw.test/public/y"] {
        let head =
            format!("CONNECT {target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let r = raw_request(gw.addr(), &head, b"").await;
        assert_eq!(r.status, 405, "{head}");
        let v: Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(v["error"]["reason"], "METHOD_NOT_ALLOWED", "{head}");
    }
    assert_eq!(upstream.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_length_and_transfer_encoding_smuggle_nothing() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(public_catch_all(&upstream)).await;
    let smuggled = "GET /admin/secret HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");

    // Both framings: Transfer-Encoding wins, Content-Length is dropped, and
    // the connection closes after one response, so the bytes after the
    // chunked body are never read as a request.
    for (first, second) in [
        (
            format!("Content-Length: {}", body.len()),
            "Transfer-Encoding: chunked".to_owned(),
        ),
        (
            "Transfer-Encoding: chunked".to_owned(),
            format!("Content-Length: {}", body.len()),
        ),
    ] {
        let raw = format!(
            "POST /public/in HTTP/1.1\r\nHost: gw.test\r\n{first}\r\n{second}\r\n\r\n{body}"
        );
        let answer = exchange(gw.addr(), raw.as_bytes(), Duration::from_secs(20))
            .await
            .expect("the connection is closed after one response");
        assert_eq!(
            statuses(&answer),
            vec![200],
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    for rec in &seen {
        assert_eq!(rec.uri, "/public/in");
        assert_eq!(rec.body_len, 0);
        assert!(rec.header_all("content-length").iter().all(|v| v == "0"));
    }

    // Framing that cannot be read one way only: refused by the parser.
    for raw in [
        "POST /public/in HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello",
        "POST /public/in HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5, 40\r\n\r\nhello",
        "POST /public/in HTTP/1.1\r\nHost: gw.test\r\nContent-Length: +5\r\n\r\nhello",
        "POST /public/in HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "POST /public/in HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        "POST /public/in HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "POST /public/in HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let answer = exchange(gw.addr(), raw.as_bytes(), Duration::from_secs(20))
            .await
            .expect("answered");
        assert_eq!(
            statuses(&answer),
            vec![400],
            "{raw:?}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        upstream.count(),
        2,
        "no refused request reached the upstream"
    );
    assert!(upstream.requests().iter().all(|r| !r.uri.contains("admin")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_credentials_are_400_or_401_and_the_gateway_keeps_serving() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let (_user, _pw, token) = user_with_token(&gw, &[]).await;
    let send = |extra: Vec<u8>, target: &str| {
        let mut raw =
            format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n").into_bytes();
        raw.extend_from_slice(&extra);
        raw.extend_from_slice(b"\r\n");
        let addr = gw.addr();
        async move {
            exchange(addr, &raw, Duration::from_secs(20))
                .await
                .expect("answered")
        }
    };
    let dots = ".".repeat(10 * 1024);
    let many_same: Vec<u8> = (0..50)
        .flat_map(|_| b"Authorization: Bearer not-a-jwt\r\n".to_vec())
        .collect();
    let many_different: Vec<u8> = (0..50)
        .flat_map(|i| format!("Authorization: Bearer t{i}\r\n").into_bytes())
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str, u16)> = vec![
        (
            "Bearer alone",
            b"Authorization: Bearer\r\n".to_vec(),
            "/x",
            401,
        ),
        (
            "Bearer and spaces",
            b"Authorization: Bearer    \r\n".to_vec(),
            "/x",
            401,
        ),
        (
            "Basic",
            b"Authorization: Basic dXNlcjpwYXNz\r\n".to_vec(),
            "/x",
            401,
        ),
        (
            "10 KB of dots",
            format!("Authorization: Bearer {dots}\r\n").into_bytes(),
            "/x",
            401,
        ),
        (
            "non-UTF-8",
            b"Authorization: Bearer \xff\xfe\xc3\x28.\x80.\xbf\r\n".to_vec(),
            "/x",
            401,
        ),
        (
            "non-UTF-8 cookie",
            b"Cookie: token=\xff\xfe\r\n".to_vec(),
            "/x",
            401,
        ),
        (
            "three dots",
            b"Authorization: Bearer ...\r\n".to_vec(),
            "/x",
            401,
        ),
        (
            "bad base64",
            b"Authorization: Bearer e30.e30.!!!\r\n".to_vec(),
            "/x",
            401,
        ),
        ("50 Authorization headers", many_same, "/x", 401),
        ("50 different tokens", many_different, "/x", 400),
        ("empty query token", Vec::new(), "/x?token=", 401),
        ("non-UTF-8 query token", Vec::new(), "/x?token=%ff%fe", 401),
        ("empty cookie", b"Cookie: token=\r\n".to_vec(), "/x", 401),
        ("key of garbage", Vec::new(), "/x?accesskey=ag_%00%ff", 401),
    ];
    for (what, extra, target, expected) in cases {
        let answer = send(extra, target).await;
        assert_eq!(
            statuses(&answer),
            vec![expected],
            "{what}: {}",
            String::from_utf8_lossy(&answer)
        );
        let v = json_body(&answer);
        assert!(v["error"]["reason"].is_string(), "{what}: {v}");
    }
    assert_eq!(upstream.count(), 0);
    get(&gw.url("/healthz"), None, &[]).await.expect_status(200);
    get(&gw.url("/x"), Some(&token), &[])
        .await
        .expect_status(200);
    assert!(!gw.logs().contains("panicked"), "{}", gw.logs());
}

// ---------------------------------------------------------------------------
// Tokens (RFC 8725)
// ---------------------------------------------------------------------------

/// A gateway, a user and the claims of a genuine token, with a control: the
/// claims re-signed correctly are accepted.
async fn genuine_claims() -> (Upstream, Gateway, Value) {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let (user, _pw, token) = user_with_token(&gw, &[]).await;
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], user.as_str());
    get(
        &gw.url("/control"),
        Some(&sign_hs256(&claims, gw.secret())),
        &[],
    )
    .await
    .expect_status(200);
    (upstream, gw, claims)
}

async fn refused(gw: &Gateway, upstream: &Upstream, token: &str) {
    let before = upstream.count();
    get(&gw.url("/x"), Some(token), &[])
        .await
        .expect_invalid_token();
    assert_eq!(upstream.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_alg_none_is_refused() {
    let (upstream, gw, claims) = genuine_claims().await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        refused(&gw, &upstream, &unsigned_token(alg, &claims)).await;
    }
    // A none token carrying the genuine signature.
    let genuine = sign_hs256(&claims, gw.secret());
    let signature = genuine.rsplit('.').next().unwrap();
    let forged = format!("{}{signature}", unsigned_token("none", &claims));
    refused(&gw, &upstream, &forged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_with_another_algorithm_is_refused() {
    let (upstream, gw, claims) = genuine_claims().await;
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        refused(&gw, &upstream, &sign_hmac(alg, &claims, gw.secret())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_without_exp_is_refused() {
    let (upstream, gw, mut claims) = genuine_claims().await;
    claims.as_object_mut().unwrap().remove("exp");
    refused(&gw, &upstream, &sign_hs256(&claims, gw.secret())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_from_another_issuer_is_refused() {
    let (upstream, gw, mut claims) = genuine_claims().await;
    for iss in [json!("evil"), json!(""), json!(["authgate"]), Value::Null] {
        claims["iss"] = iss;
        refused(&gw, &upstream, &sign_hs256(&claims, gw.secret())).await;
    }
    claims.as_object_mut().unwrap().remove("iss");
    refused(&gw, &upstream, &sign_hs256(&claims, gw.secret())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_kid_is_never_used_as_a_path() {
    let (upstream, gw, claims) = genuine_claims().await;
    let sign = |kid: &str, secret: &[u8]| {
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .expect("sign")
    };
    // The classic: a kid naming a file whose content the attacker knows.
    for kid in [
        "../../../../../../dev/null",
        "/dev/null",
        "/proc/self/environ",
        "file:///dev/null",
        "http://127.0.0.1:1/key",
        "' OR '1'='1",
    ] {
        refused(&gw, &upstream, &sign(kid, b"")).await;
    }
    // Even with the right secret: HS256 tokens never carry a kid.
    let secret_path = gw.dir().join("jwt.secret").display().to_string();
    refused(&gw, &upstream, &sign(&secret_path, gw.secret())).await;
    refused(&gw, &upstream, &sign("jwt.secret", gw.secret())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_token_and_clears_the_cookie() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let (user, password, _) = user_with_token(&gw, &[]).await;
    let token = login_ok(&gw, &user, &password).await;
    let other = login_ok(&gw, &user, &password).await;
    let cookie = format!("token={token}");

    get(&gw.url("/x"), None, &[("cookie", &cookie)])
        .await
        .expect_status(200);
    let r = request(
        "POST",
        &gw.url("/auth/logout"),
        &[("cookie", &cookie)],
        None,
    )
    .await;
    r.expect_status(200);
    let cleared = r
        .header_all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("token="))
        .expect("the token cookie is cleared");
    assert!(cleared.starts_with("token=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    let before = upstream.count();
    get(&gw.url("/x"), Some(&token), &[])
        .await
        .expect_invalid_token();
    get(&gw.url("/x"), None, &[("cookie", &cookie)])
        .await
        .expect_401("INVALID_CREDENTIALS");
    get(&gw.url(&format!("/x?token={token}")), None, &[])
        .await
        .expect_401("INVALID_CREDENTIALS");
    get(&gw.url("/v1.0/accesskeys"), Some(&token), &[])
        .await
        .expect_invalid_token();
    request(
        "POST",
        &gw.url("/auth/logout"),
        &[("cookie", &cookie)],
        None,
    )
    .await
    .expect_401("INVALID_CREDENTIALS");
    assert_eq!(upstream.count(), before);
    // Only that token.
    get(&gw.url("/x"), Some(&other), &[])
        .await
        .expect_status(200);
}

// ---------------------------------------------------------------------------
// Durability and faults
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_users_keys_and_logouts_survive_kill_9() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::start(&upstream).await;
    let (user, password, _) = user_with_token(&gw, &[]).await;
    let jwt = login_ok(&gw, &user, &password).await;
    let doomed = login_ok(&gw, &user, &password).await;
    let r = post_json(
        &gw.url("/v1.0/accesskeys"),
        Some(&jwt),
        &json!({ "name": "durable", "detail": "", "expire": 3600 }),
    )
    .await;
    r.expect_status(200);
    let key = r.json()["token"].as_str().expect("key").to_owned();
    request(
        "POST",
        &gw.url("/auth/logout"),
        &[("authorization", &format!("Bearer {doomed}"))],
        None,
    )
    .await
    .expect_status(200);
    // Killed right after the last acknowledgement.
    gw.kill9();
    gw.restart().await;

    login_ok(&gw, &user, &password).await;
    get(&gw.url(&format!("/x?accesskey={key}")), None, &[])
        .await
        .expect_status(200);
    get(&gw.url("/x"), Some(&jwt), &[]).await.expect_status(200);
    get(&gw.url("/x"), Some(&doomed), &[])
        .await
        .expect_invalid_token();
}

/// Runs `authgate serve` (through `prelude` when given) and expects it to
/// exit by itself, non-zero, with one readable `error:` line and no panic.
async fn assert_clean_startup_failure(gw: &Gateway, prelude: Option<&str>, expect: &str) {
    let mut command = gw.serve_command(prelude);
    let child = command.spawn().expect("spawn authgate serve");
    let pid = child.id();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"));
    let Ok(output) = tokio::time::timeout(Duration::from_secs(30), output).await else {
        // Kill it, or the runtime would wait for the blocked task forever.
        send_signal(pid, libc::SIGKILL);
        panic!("serve gives up within 30 s instead of hanging");
    };
    let output = output.expect("task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit status: {}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    let line = errors[0].to_ascii_lowercase();
    assert!(line.contains("store"), "{line}");
    assert!(line.contains(&expect.to_ascii_lowercase()), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_store_file_fails_startup_cleanly() {
    let upstream = Upstream::start().await;
    let gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    gw.add_user(&unique("u"), &random_password(), &[]).await;
    let db = gw.dir().join("authgate.db");
    let good = std::fs::read(&db).expect("the store file exists");

    // Not a database at all.
    std::fs::write(&db, pseudo_random_bytes(64 * 1024, 3)).expect("write");
    assert_clean_startup_failure(&gw, None, "not a database").await;

    // A real database cut short.
    let _ = std::fs::remove_file(gw.dir().join("authgate.db-wal"));
    let _ = std::fs::remove_file(gw.dir().join("authgate.db-shm"));
    std::fs::write(&db, &good[..8192]).expect("write");
    assert_clean_startup_failure(&gw, None, "malformed").await;

    // The CLI says the same in one line.
    let out = gw.cli(&["user", "list"], None).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("malformed"), "{stderr}");
}

/// As root, the gateway is run as `nobody` so that file modes bind it.
fn unprivileged_prelude(gw: &Gateway) -> Option<&'static str> {
    if !is_root() {
        return None;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = gw.dir();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    for name in ["authgate.toml", "jwt.secret"] {
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644))
            .expect("chmod file");
    }
    Some("exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$0\" \"$@\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_data_directory_fails_startup_cleanly() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let upstream = Upstream::start().await;
    let gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    // The store moves into a folder of its own, which is made read-only.
    let root = gw.dir().canonicalize().expect("canonical dir");
    let data = root.join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let config = std::fs::read_to_string(gw.config_path()).expect("read config");
    let old = format!("sqlite://{}", root.join("authgate.db").display());
    assert!(config.contains(&old), "{config}");
    let new = format!("sqlite://{}", data.join("authgate.db").display());
    std::fs::write(gw.config_path(), config.replace(&old, &new)).expect("write config");
    let prelude = unprivileged_prelude(&gw);

    // A folder where the store cannot be created.
    mode(&data, 0o555);
    assert_clean_startup_failure(&gw, prelude, "unable to open").await;

    // A folder and a store file that cannot be written.
    mode(&data, 0o755);
    gw.add_user(&unique("u"), &random_password(), &[]).await;
    for name in ["authgate.db-wal", "authgate.db-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    mode(&data.join("authgate.db"), 0o444);
    mode(&data, 0o555);
    assert_clean_startup_failure(&gw, prelude, "readonly").await;
    mode(&data, 0o755);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_at_write_time_gives_503_and_cached_credentials_keep_working() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    let user = unique("u");
    let password = random_password();
    gw.add_user(&user, &password, &[]).await;
    let db_size = std::fs::metadata(gw.dir().join("authgate.db"))
        .expect("store file")
        .len();
    // No file may grow past the store's size plus a few pages: the write-
    // ahead log fills up after a handful of writes, like a full disk.
    // SIGXFSZ is ignored so that the write fails instead of killing. The
    // shared-memory index SQLite creates at start is 32 KiB, so the limit
    // must leave room for it or start-up itself fails.
    let limit_kib = db_size / 1024 + 64;
    gw.spawn_with_prelude(&format!("trap '' XFSZ\nulimit -f {limit_kib}"))
        .await;
    let jwt = login_ok(&gw, &user, &password).await;
    get(&gw.url("/x"), Some(&jwt), &[]).await.expect_status(200);

    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let r = post_json(
            &gw.url("/v1.0/accesskeys"),
            Some(&jwt),
            &json!({ "name": format!("k{i}"), "detail": "x".repeat(2000), "expire": 3600 }),
        )
        .await;
        match r.status {
            200 => acknowledged.push(r.json()["token"].as_str().expect("key").to_owned()),
            503 => {
                r.expect_error(503, "UNAVAILABLE", "STORE_UNAVAILABLE");
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
            other => panic!("a write answered {other}: {}", r.text()),
        }
    }
    assert!(
        refused > 0,
        "writes never failed: the file size limit did not bite"
    );

    // Authenticated proxying keeps working, and so do reads.
    for _ in 0..5 {
        get(&gw.url("/x"), Some(&jwt), &[]).await.expect_status(200);
    }
    get(&gw.url("/v1.0/accesskeys?page_size=1"), Some(&jwt), &[])
        .await
        .expect_status(200);
    get(&gw.url("/healthz"), None, &[]).await.expect_status(200);
    assert!(!gw.logs().contains("panicked"), "{}", gw.logs());

    // Every acknowledged key is still there after a restart without limits.
    gw.kill9();
    gw.spawn().await;
    for key in &acknowledged {
        get(&gw.url(&format!("/x?accesskey={key}")), None, &[])
            .await
            .expect_status(200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_restart_is_recovered_without_restarting_the_gateway() {
    let upstream = Upstream::start().await;
    let addr = upstream.addr();
    let gw = Gateway::start(&upstream).await;
    let (_user, _pw, token) = user_with_token(&gw, &[]).await;
    // Pooled keep-alive connections to the upstream.
    for i in 0..3 {
        get(&gw.url(&format!("/before/{i}")), Some(&token), &[])
            .await
            .expect_status(200);
    }
    upstream.stop();
    drop(upstream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    get(&gw.url("/during"), Some(&token), &[])
        .await
        .expect_error(502, "UNAVAILABLE", "UPSTREAM_UNREACHABLE");

    let restarted = Upstream::start_at(addr).await;
    // The very next requests succeed: stale pooled connections are dropped.
    for i in 0..3 {
        get(&gw.url(&format!("/after/{i}")), Some(&token), &[])
            .await
            .expect_status(200);
    }
    assert_eq!(restarted.count(), 3);
    assert_eq!(restarted.last().uri, "/after/2");
}
