//! A spliced WebSocket outlives the request that opened it: when its
//! credential stops working (key revoked, user removed, password changed,
//! token logged out) the gateway closes it within 5 seconds (contract, "Who
//! a caller is"), and leaves every other tunnel open. The upstream is a real
//! WebSocket server (Node's `ws` package, `tests/upstreams/ws_echo.js`); the
//! client is tungstenite.

mod common;

use std::time::{Duration, Instant};

use common::pyserver::{PyServer, upstreams_dir};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{WebSocketStream, client_async};

/// The contract's bound for closing a tunnel after a revocation.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// The `ws` echo server; `None` (skipped) outside CI when the setup script
/// has not installed it.
async fn ws_upstream() -> Option<PyServer> {
    let modules = upstreams_dir().join("node/node_modules");
    if !modules.join("ws").is_dir() {
        let hint = "the ws package is missing: run `bash tests/upstreams/setup.sh` first";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{hint}");
        eprintln!("skipped: {hint}");
        return None;
    }
    let node_path = modules.to_string_lossy().into_owned();
    Some(
        PyServer::start(
            std::path::Path::new("node"),
            &["ws_echo.js", "{port}"],
            &[("NODE_PATH", &node_path)],
        )
        .await,
    )
}

type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket through the gateway to `path_and_query`, with an
/// optional Bearer token.
async fn open(gw: &Gateway, path_and_query: &str, bearer: Option<&str>) -> Ws {
    let mut request = format!("ws://{}{path_and_query}", gw.addr())
        .into_client_request()
        .unwrap();
    if let Some(token) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut ws, response) =
        tokio::time::timeout(Duration::from_secs(30), client_async(request, stream))
            .await
            .expect("handshake within 30 s")
            .expect("the gateway lets the WebSocket through");
    assert_eq!(response.status(), 101);
    echoes(&mut ws, "hello").await;
    ws
}

/// Sends `text` and waits for the echo.
async fn echoes(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send a frame");
    let echoed = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("an echo within 30 s")
        .expect("the tunnel is open")
        .expect("a valid frame");
    assert_eq!(echoed, Message::text(text));
}

/// Waits for the tunnel to end, from `since`, within [`CLOSE_WITHIN`].
async fn closed_within_bound(ws: &mut Ws, since: Instant, what: &str) {
    let deadline = since + CLOSE_WITHIN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("{what}: the WebSocket was still open {CLOSE_WITHIN:?} later"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return,
            // Anything else in flight is not a close; keep reading.
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_access_key_closes_its_websocket_and_no_other() {
    let Some(upstream) = ws_upstream().await else {
        return;
    };
    let gw = Gateway::start_with(GatewayOptions::new(&upstream.url())).await;
    let user = unique("wsk");
    gw.add_user(&user, &random_password(), &[]).await;
    let (revoked_id, revoked_key) = gw.create_key_cli(&user, &[]).await;
    let (_, kept_key) = gw.create_key_cli(&user, &[]).await;
    let mut doomed = open(&gw, &format!("/chat?accesskey={revoked_key}"), None).await;
    let mut kept = open(&gw, &format!("/chat?accesskey={kept_key}"), None).await;

    // Revoked by another process (the CLI): the change log carries it.
    gw.cli_ok(&["key", "revoke", &revoked_id], None).await;
    let revoked_at = Instant::now();
    closed_within_bound(&mut doomed, revoked_at, "after `key revoke`").await;
    echoes(&mut kept, "the other key's tunnel stays open").await;
    get(
        &gw.url(&format!("/chat?accesskey={revoked_key}")),
        None,
        &[],
    )
    .await
    .expect_status(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_the_websocket_opened_with_that_token() {
    let Some(upstream) = ws_upstream().await else {
        return;
    };
    let gw = Gateway::start_with(GatewayOptions::new(&upstream.url())).await;
    let user = unique("wsl");
    let password = random_password();
    gw.add_user(&user, &password, &[]).await;
    let leaving = login_ok(&gw, &user, &password).await;
    let staying = login_ok(&gw, &user, &password).await;
    let mut doomed = open(&gw, "/chat", Some(&leaving)).await;
    let mut kept = open(&gw, "/chat", Some(&staying)).await;

    // Revoked in this process: the cache learns of it at once.
    post_json(&gw.url("/auth/logout"), Some(&leaving), &json!({}))
        .await
        .expect_status(200);
    let revoked_at = Instant::now();
    closed_within_bound(&mut doomed, revoked_at, "after /auth/logout").await;
    echoes(&mut kept, "the other token's tunnel stays open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_or_removal_closes_the_users_websockets() {
    let Some(upstream) = ws_upstream().await else {
        return;
    };
    let gw = Gateway::start_with(GatewayOptions::new(&upstream.url())).await;
    let (changed, removed, bystander) = (unique("wsp"), unique("wsr"), unique("wsb"));
    for user in [&changed, &removed, &bystander] {
        gw.add_user(user, &random_password(), &[]).await;
    }
    let mut changed_ws = open(&gw, "/chat", Some(&gw.issue_token(&changed).await)).await;
    let (_, removed_key) = gw.create_key_cli(&removed, &[]).await;
    let mut removed_jwt_ws = open(&gw, "/chat", Some(&gw.issue_token(&removed).await)).await;
    let mut removed_key_ws = open(&gw, &format!("/chat?accesskey={removed_key}"), None).await;
    let mut bystander_ws = open(&gw, "/chat", Some(&gw.issue_token(&bystander).await)).await;

    gw.cli_ok(
        &["user", "passwd", &changed, "--password-stdin"],
        Some(&format!("{}\n", random_password())),
    )
    .await;
    let changed_at = Instant::now();
    closed_within_bound(&mut changed_ws, changed_at, "after `user passwd`").await;

    gw.cli_ok(&["user", "remove", &removed], None).await;
    let removed_at = Instant::now();
    closed_within_bound(&mut removed_jwt_ws, removed_at, "JWT after `user remove`").await;
    closed_within_bound(&mut removed_key_ws, removed_at, "key after `user remove`").await;

    echoes(&mut bystander_ws, "another user's tunnel stays open").await;
}
