//! Bounds on what one client can make the gateway hold (issue 22): requests
//! in flight to one upstream and HTTP/2 streams per connection, one-time
//! keys per client address, access keys per user (API and CLI, SQLite and
//! PostgreSQL, sequential and concurrent), and logins waiting for a
//! password-hashing slot.
//!
//! Everything runs against the real gateway binary; the upstreams are the
//! harness's recording HTTP servers (one of them answering only after a
//! minute: a stalled upstream), the HTTP/2 client is hyper's, and the
//! PostgreSQL tests use the machine's server (127.0.0.1:5432, trust auth;
//! `AUTHGATE_TEST_PG` overrides the admin URL), each in its own database.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::net::TcpStream;

/// How long the stalled upstream takes to answer: longer than any test.
const STALL: Duration = Duration::from_secs(600);
/// Generous bound for "at once" on a loaded 2-core machine: a refusal that
/// waited for the stalled upstream would take [`STALL`].
const AT_ONCE: Duration = Duration::from_secs(20);

/// Inserts `lines` at the top of `[table]` in the gateway's config file
/// (for tables the harness writes itself).
fn add_table_keys(gw: &Gateway, table: &str, lines: &str) {
    let header = format!("[{table}]\n");
    let text = std::fs::read_to_string(gw.config_path()).expect("read config");
    assert!(text.contains(&header), "the config has no [{table}]");
    let text = text.replacen(&header, &format!("{header}{lines}\n"), 1);
    std::fs::write(gw.config_path(), text).expect("write config");
}

// ---------------------------------------------------------------------------
// HTTP/2 fan-out: requests in flight per upstream, streams per connection
// ---------------------------------------------------------------------------

/// An h2c (prior knowledge) connection to the gateway, driven in the
/// background; dropping every sender closes it.
async fn h2c_connect(addr: SocketAddr) -> SendRequest<Empty<bytes::Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    sender
}

/// One GET on an HTTP/2 connection: status, `Retry-After` and body.
async fn h2_get(
    mut sender: SendRequest<Empty<bytes::Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, Option<String>, Vec<u8>), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let request = hyper::Request::builder()
        .uri(format!("http://{addr}{path}"))
        .body(Empty::new())
        .expect("request");
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok((status, retry_after, body))
}

/// `/stalled` to an upstream that answers only after [`STALL`], `/healthy`
/// to one that answers at once; both public.
fn fan_out_options(stalled: &Upstream, healthy: &Upstream, limits: &str) -> GatewayOptions {
    let mut opts = GatewayOptions::new(&healthy.url());
    opts.routes = vec![
        RouteSpec::public("/stalled", &stalled.url()),
        RouteSpec::public("/healthy", &healthy.url()),
    ];
    opts.upstream_timeout = 3600;
    opts.extra_toml = format!("[limits]\n{limits}");
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_to_a_stalled_upstream_are_capped_and_the_rest_get_503_upstream_busy_at_once() {
    let stalled = Upstream::start_with_delay(STALL).await;
    let healthy = Upstream::start().await;
    let gw = Gateway::start_with(fan_out_options(
        &stalled,
        &healthy,
        "max_upstream_requests = 6\n",
    ))
    .await;
    let addr = gw.addr();

    // Two h2c connections, eight streams each, all to the stalled upstream.
    let mut streams = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..2 {
        let sender = h2c_connect(addr).await;
        for _ in 0..8 {
            let sender = sender.clone();
            streams.push(tokio::spawn(async move {
                let started = Instant::now();
                let answer = h2_get(sender, addr, "/stalled/x").await;
                (answer, started.elapsed())
            }));
        }
        senders.push(sender);
    }

    // Six reach the upstream and stay there; the other ten are refused.
    assert!(
        stalled.wait_for_count(6, AT_ONCE).await,
        "six streams must reach the stalled upstream, saw {}",
        stalled.count()
    );
    let deadline = Instant::now() + AT_ONCE;
    while streams.iter().filter(|s| s.is_finished()).count() < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (finished, waiting): (Vec<_>, Vec<_>) = streams.into_iter().partition(|s| s.is_finished());
    assert_eq!(
        (finished.len(), waiting.len()),
        (10, 6),
        "16 streams, 6 in flight: 10 answered at once, 6 still waiting"
    );
    for stream in finished {
        let (answer, took) = stream.await.expect("stream task");
        let (status, retry_after, body) = answer.expect("an answer");
        assert_eq!(
            status,
            503,
            "beyond the bound: {}",
            String::from_utf8_lossy(&body)
        );
        let v: Value = serde_json::from_slice(&body).expect("JSON error body");
        assert_eq!(v["error"]["status"], "UNAVAILABLE", "{v}");
        assert_eq!(v["error"]["reason"], "UPSTREAM_BUSY", "{v}");
        let retry: u64 = retry_after
            .expect("503 UPSTREAM_BUSY carries Retry-After")
            .parse()
            .expect("Retry-After is seconds");
        assert!(retry >= 1, "Retry-After {retry}");
        assert!(took < AT_ONCE, "refused at once, not after {took:?}");
    }
    assert_eq!(stalled.count(), 6, "no more than six ever reached it");

    // A new client on another route (another upstream) is served.
    let r = get(&gw.url("/healthy/ok"), None, &[]).await;
    r.expect_status(200);
    let fresh = h2c_connect(addr).await;
    let (status, _, _) = h2_get(fresh, addr, "/healthy/h2").await.expect("answer");
    assert_eq!(status, 200, "a new HTTP/2 client on a healthy route");

    // Closing the clients gives their places back.
    for stream in &waiting {
        stream.abort();
    }
    drop(senders);
    let freed = poll_until(Duration::from_secs(60), || async {
        let probe = h2c_connect(addr).await;
        // Admitted now means it waits for the stalled upstream.
        tokio::time::timeout(
            Duration::from_secs(2),
            h2_get(probe, addr, "/stalled/probe"),
        )
        .await
        .is_err()
    })
    .await;
    assert!(freed, "the places of closed streams must be given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_concurrent_streams_per_connection_are_capped() {
    let stalled = Upstream::start_with_delay(STALL).await;
    let healthy = Upstream::start().await;
    let gw = Gateway::start_with(fan_out_options(
        &stalled,
        &healthy,
        "max_streams_per_connection = 4\n",
    ))
    .await;
    let addr = gw.addr();

    // Ten streams on one connection: the server's SETTINGS allow four open
    // at once, so only four reach the upstream.
    let sender = h2c_connect(addr).await;
    let mut streams = Vec::new();
    for _ in 0..10 {
        let sender = sender.clone();
        streams.push(tokio::spawn(h2_get(sender, addr, "/stalled/s")));
    }
    assert!(
        stalled.wait_for_count(4, AT_ONCE).await,
        "four streams must be open, saw {}",
        stalled.count()
    );
    // Give the other six every chance to get through if they could.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stalled.count(),
        4,
        "one connection holds at most max_streams_per_connection streams"
    );

    // Another connection has its own four.
    let other = h2c_connect(addr).await;
    let mut more = Vec::new();
    for _ in 0..4 {
        more.push(tokio::spawn(h2_get(other.clone(), addr, "/stalled/t")));
    }
    assert!(
        stalled.wait_for_count(8, AT_ONCE).await,
        "a second connection opens its own streams, saw {}",
        stalled.count()
    );
    for task in streams.into_iter().chain(more) {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_holds_its_upstream_place_until_it_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.routes = vec![RouteSpec::public("/", &upstream.url())];
    opts.extra_toml = "[limits]\nmax_upstream_requests = 1\n".to_string();
    let gw = Gateway::start_with(opts).await;
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        gw.addr().port()
    );
    let (status, headers, mut tunnel) = raw_upgrade(gw.addr(), &head).await;
    assert_eq!(status, 101, "headers: {headers:?}");
    tunnel.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(AT_ONCE, tunnel.read_exact(&mut echo))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&echo, b"ping");

    // The tunnel is the one request the upstream may have in flight.
    let r = get(&gw.url("/plain"), None, &[]).await;
    r.expect_error(503, "UNAVAILABLE", "UPSTREAM_BUSY");
    assert!(r.header("retry-after").is_some(), "503 carries Retry-After");

    // Closed, it gives the place back.
    drop(tunnel);
    let served = poll_until(AT_ONCE, || async {
        get(&gw.url("/plain"), None, &[]).await.status == 200
    })
    .await;
    assert!(served, "the place of a closed tunnel must be given back");
}

// ---------------------------------------------------------------------------
// One-time keys per client address
// ---------------------------------------------------------------------------

/// `POST /auth/onetimekey` as a client at `address` (through the trusted
/// proxy 127.0.0.1).
async fn otk_from(gw: &Gateway, address: &str, user: &str) -> Resp {
    let resp = client()
        .post(gw.url("/auth/onetimekey"))
        .header("x-forwarded-for", address)
        .json(&json!({ "username": user }))
        .send()
        .await
        .expect("request");
    Resp::from(resp).await
}

async fn otk_login_from(gw: &Gateway, address: &str, user: &str, key: &str, token: &str) -> Resp {
    let resp = client()
        .post(gw.url("/auth/onetimekey/login"))
        .header("x-forwarded-for", address)
        .json(&json!({ "username": user, "key": key, "token": token }))
        .send()
        .await
        .expect("request");
    Resp::from(resp).await
}

/// Outstanding one-time keys of real users, as the store counts them.
async fn stored_onetime_keys(gw: &Gateway) -> i64 {
    let mut db = sqlx::SqliteConnection::connect(&gw.db_url())
        .await
        .expect("open the gateway's SQLite store");
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM onetime_keys")
        .fetch_one(&mut db)
        .await
        .expect("count");
    n
}

fn expect_address_limited(r: &Resp) {
    r.expect_error(429, "RESOURCE_EXHAUSTED", "RATE_LIMITED");
    let retry: u64 = r
        .header("retry-after")
        .expect("429 carries Retry-After")
        .parse()
        .expect("Retry-After is seconds");
    assert!((1..=300).contains(&retry), "Retry-After {retry}");
}

async fn otk_gateway() -> (Upstream, Gateway) {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    add_table_keys(&gw, "server", "trusted_proxies = [\"127.0.0.1/32\"]");
    gw.spawn().await;
    (upstream, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_can_neither_evict_another_addresses_key_nor_fill_the_table() {
    let (_upstream, gw) = otk_gateway().await;
    let victim = unique("victim");
    let password = random_password();
    gw.add_user(&victim, &password, &[]).await;
    const VICTIM: &str = "203.0.113.7";
    const ATTACKER: &str = "198.51.100.9";

    let r = otk_from(&gw, VICTIM, &victim).await;
    r.expect_status(200);
    let victim_key = r.json()["key"].as_str().unwrap().to_string();

    // The attacker asks seven keys for the victim's name (a user keeps
    // five per address: the attacker's own two oldest go, not the
    // victim's), then keys for names that are no user until its address
    // holds ten.
    for _ in 0..7 {
        otk_from(&gw, ATTACKER, &victim).await.expect_status(200);
    }
    for _ in 0..5 {
        otk_from(&gw, ATTACKER, &unique("nobody"))
            .await
            .expect_status(200);
    }
    expect_address_limited(&otk_from(&gw, ATTACKER, &unique("nobody")).await);
    expect_address_limited(&otk_from(&gw, ATTACKER, &victim).await);

    // Other addresses are still served, and the victim's key still works.
    otk_from(&gw, "192.0.2.1", &victim).await.expect_status(200);
    let answer = otk_answer(&victim_key, &victim, "voximplant.com", &password);
    otk_login_from(&gw, VICTIM, &victim, &victim_key, &answer)
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_for_unknown_names_count_against_the_address_but_take_no_room() {
    let (_upstream, gw) = otk_gateway().await;
    let user = unique("real");
    gw.add_user(&user, &random_password(), &[]).await;
    otk_from(&gw, "203.0.113.50", &user)
        .await
        .expect_status(200);
    assert_eq!(stored_onetime_keys(&gw).await, 1);

    // Five addresses, ten unknown names each: all answered like real ones
    // (a key), none stored.
    for a in 1..=5 {
        let address = format!("198.51.100.{a}");
        for _ in 0..10 {
            let r = otk_from(&gw, &address, &unique("ghost")).await;
            r.expect_status(200);
            assert!(r.json()["key"].is_string(), "{}", r.text());
        }
        expect_address_limited(&otk_from(&gw, &address, &unique("ghost")).await);
    }
    assert_eq!(
        stored_onetime_keys(&gw).await,
        1,
        "keys for unknown names take no room in the shared table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_bounded_per_64() {
    let (_upstream, gw) = otk_gateway().await;
    for i in 0..10 {
        // Ten hosts of one /64.
        let address = format!("2001:db8:1:2::{:x}", i + 1);
        otk_from(&gw, &address, &unique("v6"))
            .await
            .expect_status(200);
    }
    expect_address_limited(&otk_from(&gw, "2001:db8:1:2:ffff::1", &unique("v6")).await);
    otk_from(&gw, "2001:db8:1:3::1", &unique("v6"))
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_key_gives_its_place_back() {
    let (_upstream, gw) = otk_gateway().await;
    let user = unique("agent");
    let password = random_password();
    gw.add_user(&user, &password, &[]).await;
    const DESK: &str = "203.0.113.99";
    // Fifteen logins in a row from one address, each with a fresh key.
    for _ in 0..15 {
        let r = otk_from(&gw, DESK, &user).await;
        r.expect_status(200);
        let key = r.json()["key"].as_str().unwrap().to_string();
        let answer = otk_answer(&key, &user, "voximplant.com", &password);
        otk_login_from(&gw, DESK, &user, &key, &answer)
            .await
            .expect_status(200);
    }
}

/// 40 one-time-key requests at once from each of three addresses, spread
/// over `gateways`: exactly the bound (10) get a key at each address.
async fn concurrent_otk_requests(gateways: &[&Gateway]) {
    const ADDRESSES: [&str; 3] = ["198.51.100.77", "198.51.100.78", "198.51.100.79"];
    let mut tasks = Vec::new();
    for i in 0..120 {
        let url = gateways[i % gateways.len()].url("/auth/onetimekey");
        let address = ADDRESSES[i % ADDRESSES.len()];
        tasks.push(tokio::spawn(async move {
            let resp = client()
                .post(url)
                .header("x-forwarded-for", address)
                .json(&json!({ "username": unique("rush") }))
                .send()
                .await
                .expect("request");
            (address, Resp::from(resp).await)
        }));
    }
    let mut issued = std::collections::BTreeMap::new();
    for task in tasks {
        let (address, r) = task.await.expect("task");
        match r.status {
            200 => *issued.entry(address).or_insert(0) += 1,
            _ => expect_address_limited(&r),
        }
    }
    for address in ADDRESSES {
        assert_eq!(
            issued.get(address),
            Some(&10),
            "40 requests at once from {address}, bound 10: {issued:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_one_time_key_requests_cannot_overshoot_the_address_bound() {
    let (_upstream, gw) = otk_gateway().await;
    concurrent_otk_requests(&[&gw]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_cannot_overshoot_the_address_bound_on_postgres() {
    let db = TestDatabase::create().await;
    let upstream = Upstream::start().await;
    let secret = random_secret_text();
    let replica = || async {
        let mut opts = GatewayOptions::new(&upstream.url());
        opts.store_url = Some(db.url());
        opts.secret_text = Some(secret.clone());
        let mut gw = Gateway::prepare(opts);
        add_table_keys(&gw, "server", "trusted_proxies = [\"127.0.0.1/32\"]");
        gw.spawn().await;
        gw
    };
    let a = replica().await;
    let b = replica().await;
    concurrent_otk_requests(&[&a, &b]).await;
}

// ---------------------------------------------------------------------------
// Access keys per user
// ---------------------------------------------------------------------------

const KEY_LIMIT: usize = 3;

fn admin_pg_url() -> String {
    std::env::var("AUTHGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh PostgreSQL database, dropped at the end of the test.
struct TestDatabase {
    name: String,
}

impl TestDatabase {
    async fn create() -> TestDatabase {
        let name = format!("authgate_{}", unique("b").replace('-', "_")).to_lowercase();
        let mut admin = sqlx::PgConnection::connect(&admin_pg_url())
            .await
            .expect("PostgreSQL must be running on 127.0.0.1:5432");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        TestDatabase { name }
    }

    fn url(&self) -> String {
        let base = admin_pg_url();
        let (server, _db) = base.rsplit_once('/').expect("admin URL has a database");
        format!("{server}/{}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_pg_url()).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                });
            }
        })
        .join();
    }
}

/// Gateway options with `accesskeys.max_per_user = KEY_LIMIT` on `store_url`
/// (`None`: SQLite in the temp dir) and `secret` shared by replicas.
fn key_options(upstream: &Upstream, store_url: Option<String>, secret: &str) -> GatewayOptions {
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.store_url = store_url;
    opts.secret_text = Some(secret.to_string());
    opts.extra_toml = format!("[accesskeys]\nmax_per_user = {KEY_LIMIT}\n");
    opts
}

async fn create_key_api(gw: &Gateway, jwt: &str, expire: i64) -> Resp {
    post_json(
        &gw.url("/v1.0/accesskeys"),
        Some(jwt),
        &json!({ "name": "k", "detail": "", "expire": expire }),
    )
    .await
}

/// `key create` through the CLI: `Ok(id)` or `Err(stderr)`.
async fn create_key_cli(gw: &Gateway, user: &str) -> Result<String, String> {
    let out = gw
        .cli(
            &[
                "key", "create", "--user", user, "--name", "cli", "--expire", "3600",
            ],
            None,
        )
        .await;
    if out.status.success() {
        Ok(parse_key_create(&String::from_utf8_lossy(&out.stdout)).0)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn live_keys(gw: &Gateway, jwt: &str) -> usize {
    let r = get(&gw.url("/v1.0/accesskeys"), Some(jwt), &[]).await;
    r.expect_status(200);
    let v = r.json();
    v["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no key list in {v}"))
        .len()
}

fn expect_key_limit(r: &Resp) {
    r.expect_error(429, "RESOURCE_EXHAUSTED", "KEY_LIMIT_REACHED");
}

/// Sequential creation over the API and the CLI up to the bound, refusals
/// beyond it, room again after a delete, and expired keys not counted.
async fn sequential_key_creation(gw: &Gateway) {
    let user = unique("keyholder");
    gw.add_user(&user, &random_password(), &[]).await;
    let jwt = gw.issue_token(&user).await;

    // A short-lived key does not hold a place for long. It lives long
    // enough (10 s) for the next four creations to see it even on a loaded
    // machine, where a 1 s key expired too early and made this test flaky.
    create_key_api(gw, &jwt, 10).await.expect_status(200);
    let first = create_key_api(gw, &jwt, 3600).await;
    first.expect_status(200);
    create_key_cli(gw, &user)
        .await
        .expect("the CLI creates a key");
    // The short-lived key still counts: the user holds three.
    expect_key_limit(&create_key_api(gw, &jwt, 3600).await);
    let err = create_key_cli(gw, &user)
        .await
        .expect_err("beyond the bound");
    assert!(err.contains("KEY_LIMIT_REACHED"), "CLI says why: {err}");

    // Once it has expired, its place is free again.
    let freed = poll_until(Duration::from_secs(40), || async {
        create_key_api(gw, &jwt, 3600).await.status == 200
    })
    .await;
    assert!(freed, "an expired key must not count");
    expect_key_limit(&create_key_api(gw, &jwt, 3600).await);

    // Deleting a key makes room.
    let id = first.json()["id"].as_str().unwrap().to_string();
    let auth = format!("Bearer {jwt}");
    let deleted = request(
        "DELETE",
        &gw.url(&format!("/v1.0/accesskeys/{id}")),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert!(
        matches!(deleted.status, 200 | 204),
        "delete: {}",
        deleted.text()
    );
    create_key_cli(gw, &user)
        .await
        .expect("room after a delete");
    let err = create_key_cli(gw, &user).await.expect_err("full again");
    assert!(err.contains("KEY_LIMIT_REACHED"), "{err}");
}

/// Many creations at once, over the API (spread over `gateways`) and the
/// CLI: exactly the bound succeeds.
async fn concurrent_key_creation(gateways: &[&Gateway]) {
    let user = unique("racer");
    gateways[0].add_user(&user, &random_password(), &[]).await;
    let jwt = gateways[0].issue_token(&user).await;
    let mut api = Vec::new();
    for i in 0..24 {
        let url = gateways[i % gateways.len()].url("/v1.0/accesskeys");
        let jwt = jwt.clone();
        api.push(tokio::spawn(async move {
            post_json(
                &url,
                Some(&jwt),
                &json!({ "name": format!("race-{i}"), "detail": "", "expire": 3600 }),
            )
            .await
        }));
    }
    let cli = (0..6).map(|_| create_key_cli(gateways[0], &user));
    let cli_results = futures_util::future::join_all(cli).await;
    let mut created = 0;
    for task in api {
        let r = task.await.expect("API task");
        match r.status {
            200 => created += 1,
            429 => expect_key_limit(&r),
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    for result in cli_results {
        match result {
            Ok(_) => created += 1,
            Err(err) => assert!(err.contains("KEY_LIMIT_REACHED"), "{err}"),
        }
    }
    assert_eq!(
        created, KEY_LIMIT,
        "30 creations at once, bound {KEY_LIMIT}"
    );
    assert_eq!(live_keys(gateways[0], &jwt).await, KEY_LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_per_user_are_bounded_on_sqlite_sequentially_and_concurrently() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(key_options(&upstream, None, &random_secret_text())).await;
    sequential_key_creation(&gw).await;
    concurrent_key_creation(&[&gw]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_per_user_are_bounded_on_postgres_across_two_replicas() {
    let db = TestDatabase::create().await;
    let upstream = Upstream::start().await;
    let secret = random_secret_text();
    let a = Gateway::start_with(key_options(&upstream, Some(db.url()), &secret)).await;
    let b = Gateway::start_with(key_options(&upstream, Some(db.url()), &secret)).await;
    sequential_key_creation(&a).await;
    concurrent_key_creation(&[&a, &b]).await;
}

// ---------------------------------------------------------------------------
// Logins under a burst
// ---------------------------------------------------------------------------

/// Fires every `(username, password)` login at once.
async fn login_burst(gw: &Gateway, attempts: &[(String, String)]) -> Vec<Resp> {
    let tasks: Vec<_> = attempts
        .iter()
        .cloned()
        .map(|(user, password)| {
            let url = gw.url("/auth/login");
            tokio::spawn(async move {
                post_json(
                    &url,
                    None,
                    &json!({ "username": user, "password": password }),
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("login task"));
    }
    answers
}

/// `n` users with their passwords, added four at a time.
async fn users(gw: &Gateway, n: usize) -> Vec<(String, String)> {
    let people: Vec<(String, String)> = (0..n)
        .map(|_| (unique("agent"), random_password()))
        .collect();
    for chunk in people.chunks(4) {
        futures_util::future::join_all(
            chunk
                .iter()
                .map(|(user, password)| gw.add_user(user, password, &[])),
        )
        .await;
    }
    people
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_32_correct_logins_all_succeed_with_the_default_config() {
    let upstream = Upstream::start().await;
    // The harness's defaults, with the login bounds left at theirs.
    let gw = Gateway::start_with(GatewayOptions::new(&upstream.url())).await;
    let people = users(&gw, 32).await;
    let answers = login_burst(&gw, &people).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    for ((user, _), r) in people.iter().zip(&answers) {
        assert_eq!(
            r.status,
            200,
            "every login of a burst of 32 must succeed ({statuses:?}): {}",
            r.text()
        );
        assert_eq!(r.json()["username"], user.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_beyond_the_queue_get_503_login_busy_with_retry_after() {
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.login_max_concurrent_hashes = Some(1);
    opts.login_max_queued_hashes = Some(2);
    let gw = Gateway::start_with(opts).await;
    let people = users(&gw, 4).await;
    // 64 at once: one hashing, two waiting, the rest refused.
    let attempts: Vec<(String, String)> = (0..64).map(|i| people[i % 4].clone()).collect();
    let answers = login_burst(&gw, &attempts).await;
    let mut busy = 0;
    let mut ok = 0;
    for r in &answers {
        match r.status {
            200 => ok += 1,
            503 => {
                r.expect_error(503, "UNAVAILABLE", "LOGIN_BUSY");
                let retry: u64 = r
                    .header("retry-after")
                    .expect("503 carries Retry-After")
                    .parse()
                    .expect("Retry-After is seconds");
                assert!(retry >= 1, "Retry-After {retry}");
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(ok >= 3, "the slot and the queue are served: {ok} of 64");
    assert!(
        busy > 0,
        "beyond one slot and a queue of two, logins are refused"
    );
    // The queue drains: one at a time, logins succeed again.
    login_ok(&gw, &people[0].0, &people[0].1).await;
}
