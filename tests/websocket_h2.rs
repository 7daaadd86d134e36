//! WebSocket upgrades through the gateway to a real WebSocket echo server,
//! and HTTP/2 from clients (h2c with prior knowledge, h2 over TLS by ALPN)
//! proxied to an HTTP/1.1 upstream.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::tls::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

/// One WebSocket handshake as the upstream received it.
#[derive(Clone, Debug)]
struct Handshake {
    uri: String,
    headers: http::HeaderMap,
}

impl Handshake {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// A WebSocket server that echoes every text and binary message.
struct WsEcho {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
}

impl WsEcho {
    async fn start() -> WsEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let recs = handshakes.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recs = recs.clone();
                tokio::spawn(async move {
                    // The callback's error type is tungstenite's, not ours.
                    #[allow(clippy::result_large_err)]
                    let record = move |req: &WsRequest, resp: WsResponse| {
                        recs.lock().unwrap().push(Handshake {
                            uri: req.uri().to_string(),
                            headers: req.headers().clone(),
                        });
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await
                    else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        WsEcho { addr, handshakes }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

async fn ws_gateway(echo: &WsEcho) -> (Gateway, String, String) {
    let gw = Gateway::start_with(GatewayOptions::new(&echo.url())).await;
    let user = unique("ws");
    gw.add_user(&user, &random_password(), &["chat"]).await;
    let token = gw.issue_token(&user).await;
    (gw, user, token)
}

/// Opens a WebSocket to `path_and_query` on `stream` (already connected to
/// the gateway at `authority`), with an optional Bearer token.
async fn ws_connect<S>(
    stream: S,
    authority: &str,
    scheme: &str,
    path_and_query: &str,
    bearer: Option<&str>,
) -> Result<WebSocketStream<S>, tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("{scheme}://{authority}{path_and_query}")
        .into_client_request()
        .unwrap();
    if let Some(t) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let (ws, response) =
        tokio::time::timeout(Duration::from_secs(30), client_async(request, stream))
            .await
            .expect("WebSocket handshake within 30 s")?;
    assert_eq!(response.status(), 101);
    Ok(ws)
}

/// Text, binary, ping and close round-trip through the gateway.
async fn round_trip<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let next = async |ws: &mut WebSocketStream<S>| -> Message {
        tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a frame within 30 s")
            .expect("the socket stays open")
            .expect("a valid frame")
    };
    for i in 0..20 {
        let text = format!("message {i}: {}", "é".repeat(i * 37));
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next(ws).await, Message::text(text));
    }
    for (len, seed) in [
        (1usize, 1u64),
        (125, 2),
        (126, 3),
        (65_536, 4),
        (300_000, 5),
    ] {
        let data = pseudo_random_bytes(len, seed);
        ws.send(Message::binary(data.clone())).await.unwrap();
        let echoed = next(ws).await;
        assert_eq!(
            echoed.into_data().as_ref(),
            &data[..],
            "binary frame of {len} bytes"
        );
    }
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    match next(ws).await {
        Message::Pong(p) => assert_eq!(p.as_ref(), b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    ws.close(None).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("close within 30 s")
    {
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
        Some(Ok(other)) => panic!("expected the close echo, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_round_trip_with_a_valid_credential() {
    let echo = WsEcho::start().await;
    let (gw, user, token) = ws_gateway(&echo).await;

    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    let mut ws = ws_connect(
        stream,
        &gw.addr().to_string(),
        "ws",
        "/chat/room?name=blue",
        Some(&token),
    )
    .await
    .expect("an authenticated upgrade is spliced to the upstream");
    round_trip(&mut ws).await;

    let hs = echo.handshakes();
    assert_eq!(hs.len(), 1);
    let h = &hs[0];
    assert_eq!(h.uri, "/chat/room?name=blue");
    assert_eq!(h.header("x-auth-user"), Some(user.clone()));
    assert_eq!(h.header("x-auth-method").as_deref(), Some("jwt"));
    assert_eq!(h.header("x-auth-roles").as_deref(), Some("chat"));
    assert_eq!(
        h.header("upgrade")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Some("websocket")
    );
    assert!(h.header("sec-websocket-key").is_some());
    assert!(
        h.header("authorization").is_none(),
        "the credential was forwarded"
    );

    // The browser way: the token in the query, removed before forwarding.
    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    let mut ws = ws_connect(
        stream,
        &gw.addr().to_string(),
        "ws",
        &format!("/chat/room?token={token}&name=green"),
        None,
    )
    .await
    .expect("an upgrade with ?token=");
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("hi"),
        "echo through a query-authenticated socket"
    );
    let hs = echo.handshakes();
    assert_eq!(hs.len(), 2);
    assert_eq!(hs[1].uri, "/chat/room?name=green");
    assert_eq!(hs[1].header("x-auth-user"), Some(user));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_websocket_upgrade_gets_401_and_never_reaches_the_upstream() {
    let echo = WsEcho::start().await;
    let (gw, _user, token) = ws_gateway(&echo).await;
    let cases = [
        ("no credential", None),
        ("a tampered token", Some(tamper_signature(&token))),
        ("garbage", Some("not-a-token".to_string())),
    ];
    for (what, bearer) in cases {
        let stream = TcpStream::connect(gw.addr()).await.unwrap();
        match ws_connect(
            stream,
            &gw.addr().to_string(),
            "ws",
            "/chat/room",
            bearer.as_deref(),
        )
        .await
        {
            Ok(_) => panic!("{what}: the upgrade succeeded"),
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{what}");
                let body = response.body().clone().unwrap_or_default();
                let v: serde_json::Value = serde_json::from_slice(&body)
                    .unwrap_or_else(|e| panic!("{what}: 401 body is not JSON ({e})"));
                assert_eq!(v["error"]["status"], "UNAUTHENTICATED", "{what}: {v}");
            }
            Err(other) => panic!("{what}: expected an HTTP 401, got {other}"),
        }
    }
    // The same with a raw request, to see the status line and the header.
    let (status, headers, _stream) = raw_upgrade(
        gw.addr(),
        "GET /chat/room HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer")),
        "{headers:?}"
    );
    // A 401 answer means nothing was forwarded (a forwarded upgrade would
    // have been answered by the echo server with 101).
    assert!(
        echo.handshakes().is_empty(),
        "an unauthenticated upgrade reached the upstream: {:?}",
        echo.handshakes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "server");
    let server = ca.server_cert("server");
    let echo = WsEcho::start().await;
    let mut opts = GatewayOptions::new(&echo.url());
    opts.extra_toml = tls_toml(&server.cert, &server.key, "");
    let gw = Gateway::start_with(opts).await;
    let https = gw.https_addr().await;
    let user = unique("wss");
    gw.add_user(&user, &random_password(), &[]).await;
    let token = gw.issue_token(&user).await;

    // WebSocket needs HTTP/1.1 (no extended CONNECT over h2 here).
    let config = client_config(&[&ca.cert], None, &["http/1.1"]);
    let tcp = TcpStream::connect(https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake");
    let authority = format!("localhost:{}", https.port());
    let mut ws = ws_connect(tls, &authority, "wss", "/secure/chat", Some(&token))
        .await
        .expect("wss upgrade");
    round_trip(&mut ws).await;
    let hs = echo.handshakes();
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].header("x-auth-user"), Some(user));
    assert_eq!(hs[0].header("x-forwarded-proto").as_deref(), Some("https"));
}

/// The upstream saw an HTTP/1.1 request with the identity headers.
fn assert_identity_forwarded(rec: &Recorded, user: &str, proto: &str) {
    assert_eq!(
        rec.version,
        http::Version::HTTP_11,
        "upstream speaks HTTP/1.1"
    );
    assert_eq!(rec.header("x-auth-user").as_deref(), Some(user));
    assert_eq!(rec.header("x-auth-method").as_deref(), Some("jwt"));
    assert_eq!(
        roles_of(&rec.header("x-auth-roles").unwrap_or_default()),
        vec!["ops", "reader"]
    );
    assert_eq!(rec.header("x-forwarded-proto").as_deref(), Some(proto));
    assert!(rec.has_header("x-request-id"));
    assert!(rec.has_header("x-forwarded-for"));
    assert_eq!(rec.header("x-custom").as_deref(), Some("kept"));
    assert!(!rec.has_header("authorization"));
    assert!(
        !rec.has_header("x-auth-spoof"),
        "client-sent X-Auth-* headers are removed"
    );
}

async fn h2_user(gw: &Gateway) -> (String, String) {
    let user = unique("h2");
    gw.add_user(&user, &random_password(), &["reader", "ops"])
        .await;
    let token = gw.issue_token(&user).await;
    (user, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_is_proxied_to_an_http_1_1_upstream() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let (user, token) = h2_user(&gw).await;

    let r = h2c_request(
        gw.addr(),
        &Req::get("/h2c/path?x=1&token=ignored-not")
            .bearer(&token)
            .header("x-custom", "kept")
            .header("x-auth-spoof", "admin"),
    )
    .await;
    // `token` in the query conflicts with the header credential: that is
    // the gateway's 400, and it must come back over HTTP/2 too.
    let r = r.expect("h2c request");
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["reason"], "CONFLICTING_CREDENTIALS");

    let r = h2c_request(
        gw.addr(),
        &Req::get("/h2c/path?x=1")
            .bearer(&token)
            .header("x-custom", "kept")
            .header("x-auth-spoof", "admin"),
    )
    .await
    .expect("h2c request");
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["upstream"], "ok");
    assert!(r.header("x-request-id").is_some());
    let rec = upstream.last();
    assert_eq!(rec.uri, "/h2c/path?x=1");
    assert_identity_forwarded(&rec, &user, "http");
    assert_eq!(rec.header("x-forwarded-host"), Some(gw.addr().to_string()));

    // A streamed request body arrives whole.
    let body = pseudo_random_bytes(300_000, 42);
    let r = h2c_request(
        gw.addr(),
        &Req::post("/h2c/upload", &body)
            .bearer(&token)
            .header("x-custom", "kept")
            .header("content-type", "application/octet-stream"),
    )
    .await
    .expect("h2c upload");
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = upstream.last();
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.body_len, body.len());
    assert_eq!(rec.body_sha256, sha256_hex(&body));
    assert_identity_forwarded(&rec, &user, "http");

    // The gateway's own endpoints and errors over h2c.
    let seen = upstream.count();
    let r = h2c_request(gw.addr(), &Req::get("/h2c/path"))
        .await
        .expect("h2c without credential");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["reason"], "AUTHENTICATION_REQUIRED");
    assert!(r.header("www-authenticate").is_some());
    let r = h2c_request(gw.addr(), &Req::get("/healthz"))
        .await
        .expect("h2c healthz");
    assert_eq!(r.status, 200);
    assert_eq!(upstream.count(), seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_streams_share_one_connection() {
    let upstream = Upstream::start_with_delay(Duration::from_millis(200)).await;
    let gw = Gateway::start(&upstream).await;
    let (user, token) = h2_user(&gw).await;

    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut sender = sender.clone();
        let req = http::Request::builder()
            .version(http::Version::HTTP_2)
            .uri(format!("http://{}/multiplexed/{i}", gw.addr()))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let resp = sender.send_request(req).await.expect("stream");
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // 20 requests of 200 ms each on one connection: concurrent streams.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "20 streams took {:?}: not multiplexed",
        started.elapsed()
    );
    assert_eq!(upstream.count(), 20);
    for rec in upstream.requests() {
        assert_eq!(rec.header("x-auth-user").as_deref(), Some(user.as_str()));
        assert_eq!(rec.version, http::Version::HTTP_11);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_is_proxied_to_an_http_1_1_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "server");
    let server = ca.server_cert("server");
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = tls_toml(&server.cert, &server.key, "");
    let gw = Gateway::start_with(opts).await;
    let https = gw.https_addr().await;
    let (user, token) = h2_user(&gw).await;
    let config = client_config(&[&ca.cert], None, &["h2", "http/1.1"]);

    let r = https_request(
        https,
        "localhost",
        config.clone(),
        &Req::get("/h2/path?y=2")
            .bearer(&token)
            .header("x-custom", "kept")
            .header("x-auth-spoof", "admin"),
    )
    .await
    .expect("h2 request");
    assert_eq!(r.tls.as_ref().unwrap().alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = upstream.last();
    assert_eq!(rec.uri, "/h2/path?y=2");
    assert_identity_forwarded(&rec, &user, "https");
    assert_eq!(
        rec.header("x-forwarded-host"),
        Some(format!("localhost:{}", https.port()))
    );

    let body = pseudo_random_bytes(200_000, 7);
    let r = https_request(
        https,
        "localhost",
        config.clone(),
        &Req::post("/h2/upload", &body)
            .bearer(&token)
            .header("x-custom", "kept"),
    )
    .await
    .expect("h2 upload");
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = upstream.last();
    assert_eq!(rec.body_sha256, sha256_hex(&body));
    assert_identity_forwarded(&rec, &user, "https");

    // Login over h2 works too, and its token is accepted over h2.
    let password = random_password();
    let other = unique("h2login");
    gw.add_user(&other, &password, &[]).await;
    let r = https_request(
        https,
        "localhost",
        config.clone(),
        &Req::post(
            "/auth/login",
            serde_json::json!({ "username": other, "password": password })
                .to_string()
                .as_bytes(),
        )
        .header("content-type", "application/json"),
    )
    .await
    .expect("login over h2");
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = r.json()["token"].as_str().unwrap().to_string();
    let r = https_request(
        https,
        "localhost",
        config,
        &Req::get("/after-login").bearer(&fresh),
    )
    .await
    .expect("h2 with the login token");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.last().header("x-auth-user"), Some(other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_open_websocket_for_the_grace_period() {
    let echo = WsEcho::start().await;
    let mut opts = GatewayOptions::new(&echo.url());
    opts.shutdown_grace = 3;
    let mut gw = Gateway::start_with(opts).await;
    let user = unique("drain");
    gw.add_user(&user, &random_password(), &[]).await;
    let token = gw.issue_token(&user).await;
    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    let mut ws = ws_connect(stream, &gw.addr().to_string(), "ws", "/drain", Some(&token))
        .await
        .expect("upgrade");
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    let signalled = std::time::Instant::now();
    gw.sigterm();
    assert!(
        gw.wait_for_log("SIGTERM received", 1, Duration::from_secs(5))
            .await,
        "{}",
        gw.logs()
    );
    // Within the grace period the open socket keeps working.
    let during = async {
        ws.send(Message::text("during the drain")).await?;
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(m)) => m.map(Some),
            _ => Ok(None),
        }
    }
    .await;
    let status = gw.wait_exit(Duration::from_secs(15)).await;
    let exited_after = signalled.elapsed();
    assert!(
        matches!(&during, Ok(Some(m)) if *m == Message::text("during the drain")),
        "an open WebSocket was cut at SIGTERM instead of drained: {during:?} (gateway exited after {exited_after:?})"
    );
    let status = status.expect("the gateway exits after the grace period");
    assert!(status.success(), "exit status {status}");
    assert!(
        exited_after >= Duration::from_secs(2) && exited_after < Duration::from_secs(10),
        "exited {exited_after:?} after SIGTERM with shutdown_grace = 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_cookie_crumbs_reach_an_http_1_1_upstream_as_one_cookie_header() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let (user, token) = h2_user(&gw).await;
    // HTTP/2 clients may split Cookie into one field per cookie (RFC 9113
    // 8.2.3); towards HTTP/1.1 they must be joined with "; ".
    let r = h2c_request(
        gw.addr(),
        &Req::get("/crumbs")
            .header("cookie", "theme=dark")
            .header("cookie", &format!("token={token}"))
            .header("cookie", "lang=en"),
    )
    .await
    .expect("h2c request with cookie crumbs");
    assert_eq!(r.status, 200, "the token cookie among crumbs: {}", r.text());
    let rec = upstream.last();
    assert_eq!(rec.header("x-auth-user"), Some(user));
    assert_eq!(
        rec.header_all("cookie"),
        vec!["theme=dark; lang=en".to_string()],
        "the upstream must get one Cookie header without the credential"
    );
}
