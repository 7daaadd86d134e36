//! Upgrade tunnels, spoofed identity under folded header names, and
//! malformed request framing, each against real upstream servers:
//! hypercorn (answers `Upgrade: h2c` with 101 and speaks HTTP/2 after it),
//! gunicorn with `--header-map dangerous` and the standard library's
//! wsgiref (both fold `_` into `-` as CGI does), the recording upstream of
//! the harness (answers any `Upgrade` with 101) and a raw upstream that
//! answers everything with 101.
//!
//! hypercorn and gunicorn come from `bash tests/upstreams/setup.sh`; under
//! CI (`CI=true`) a missing server fails the test.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pyserver::*;
use common::tls::{Req, h2c_request};
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A valid `Sec-WebSocket-Key` (RFC 6455's example nonce).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// What an h2c upgrade asks for (RFC 7540 section 3.2), minus the line ends.
const H2C_HEADERS: &str =
    "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n";

/// Reads until the peer closes or `within` passes; whatever came.
async fn read_for(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let _ = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    buf
}

/// The gateway's JSON error in a raw response: `(status, reason)`.
fn error_of(response: &RawResponse) -> (String, String) {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or_else(|err| {
        panic!(
            "not a JSON error ({err}): {}",
            String::from_utf8_lossy(&response.body)
        )
    });
    (
        body["error"]["status"].as_str().unwrap_or_default().into(),
        body["error"]["reason"].as_str().unwrap_or_default().into(),
    )
}

/// One HTTP/2 frame (RFC 9113 section 4.1).
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("small frame");
    let mut frame = length.to_be_bytes()[1..].to_vec();
    frame.push(kind);
    frame.push(flags);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// What a client whose h2c upgrade succeeded sends next (RFC 7540 section
/// 3.2): the connection preface, SETTINGS, and a GET for `path` on stream 3
/// (stream 1 is the upgraded request), its fields as HPACK literals.
fn h2_tunnel_request(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "tunnel.test"),
    ] {
        // Literal header field without indexing, new name, no Huffman.
        block.push(0x00);
        block.push(u8::try_from(name.len()).expect("short name"));
        block.extend_from_slice(name.as_bytes());
        block.push(u8::try_from(value.len()).expect("short value"));
        block.extend_from_slice(value.as_bytes());
    }
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(h2_frame(0x4, 0x0, 0, b""));
    // HEADERS with END_STREAM | END_HEADERS.
    bytes.extend(h2_frame(0x1, 0x5, 3, &block));
    bytes
}

/// One request hypercorn served: path, HTTP version, headers.
type Served = (String, String, Vec<(String, String)>);

/// hypercorn serving `tests/upstreams/asgi_record.py`, which writes one
/// JSON line per request it serves to a file.
struct Hypercorn {
    server: PyServer,
    records: tempfile::NamedTempFile,
}

impl Hypercorn {
    async fn start() -> Option<Hypercorn> {
        let program = venv_program("hypercorn")?;
        let records = tempfile::NamedTempFile::new().expect("record file");
        let record_path = records.path().to_str().expect("utf-8 path").to_owned();
        let server = PyServer::start(
            &program,
            &["--bind", "127.0.0.1:{port}", "asgi_record:app"],
            &[("RECORD_FILE", &record_path)],
        )
        .await;
        Some(Hypercorn { server, records })
    }

    /// Every request served so far: `(path, http_version, headers)`.
    fn served(&self) -> Vec<Served> {
        let text = std::fs::read_to_string(self.records.path()).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|record| {
                let headers = record["headers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|pair| {
                        Some((pair[0].as_str()?.to_owned(), pair[1].as_str()?.to_owned()))
                    })
                    .collect();
                (
                    record["path"].as_str().unwrap_or_default().to_owned(),
                    record["http_version"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    headers,
                )
            })
            .collect()
    }

    fn served_paths(&self) -> Vec<String> {
        self.served().into_iter().map(|(path, _, _)| path).collect()
    }
}

/// Sends an h2c upgrade for `path` (with `extra` header lines) and then, on
/// the same socket, the HTTP/2 request for `/admin/secret` that a tunnel
/// would carry. Returns the status of the upgrade request's response and
/// every byte that came after its head.
async fn h2c_attempt(addr: SocketAddr, path: &str, extra: &str) -> (u16, Vec<u8>) {
    let head = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n{extra}{H2C_HEADERS}\r\n");
    let (status, _headers, mut stream) = raw_upgrade(addr, &head).await;
    let _ = stream.write_all(&h2_tunnel_request("/admin/secret")).await;
    let after = read_for(&mut stream, Duration::from_secs(3)).await;
    (status, after)
}

/// Routes to `upstream`: `/public` public, `/private` for any user,
/// `/admin` for role `admin`; nothing else.
fn three_routes(upstream: &str) -> GatewayOptions {
    let mut opts = GatewayOptions::new(upstream);
    opts.routes = vec![
        RouteSpec::public("/public", upstream),
        RouteSpec::required("/private", upstream),
        RouteSpec::required("/admin", upstream).roles(&["admin"]),
    ];
    opts
}

// ---------------------------------------------------------------------------
// Upgrade tunnels
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_to_hypercorn_opens_no_tunnel_on_a_public_route() {
    let Some(hypercorn) = Hypercorn::start().await else {
        return;
    };
    // Without a gateway in front the attack works: 101, then HTTP/2 on the
    // same socket reaches the protected handler.
    let (status, after) = h2c_attempt(hypercorn.server.addr(), "/public/direct", "").await;
    assert_eq!(status, 101, "hypercorn upgrades h2c when asked directly");
    assert!(String::from_utf8_lossy(&after).contains("served /admin/secret over HTTP/2"));
    assert_eq!(
        hypercorn.served_paths(),
        vec!["/public/direct", "/admin/secret"]
    );

    let gw = Gateway::start_with(three_routes(&hypercorn.server.url())).await;
    let (status, after) = h2c_attempt(gw.addr(), "/public/x", "").await;
    let served = hypercorn.served();
    let tunnelled: Vec<_> = served[2..]
        .iter()
        .filter(|(path, _, _)| path == "/admin/secret")
        .collect();
    assert!(
        tunnelled.is_empty(),
        "a request inside an h2c tunnel reached the upstream unauthenticated: {tunnelled:?}"
    );
    assert_eq!(
        status, 200,
        "the upgrade is not performed; the GET is answered"
    );
    assert!(!String::from_utf8_lossy(&after).contains("/admin/secret"));
    let (path, version, headers) = &served[2];
    assert_eq!((path.as_str(), version.as_str()), ("/public/x", "1.1"));
    for (name, _) in headers {
        assert!(
            !["upgrade", "http2-settings", "connection"].contains(&name.as_str()),
            "{name} reached the upstream: {headers:?}"
        );
    }
    assert_eq!(served.len(), 3, "{served:?}");

    // The next request on the same connection goes through the gateway's
    // checks like any other: without a credential, 401.
    let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
    let pipelined = format!(
        "GET /public/y HTTP/1.1\r\nHost: gw.test\r\n{H2C_HEADERS}\r\n\
         GET /admin/secret HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(pipelined.as_bytes()).await.expect("write");
    let raw = read_for(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(
        statuses(&raw),
        vec![200, 401],
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let admin_hits = hypercorn
        .served_paths()
        .iter()
        .filter(|path| *path == "/admin/secret")
        .count();
    assert_eq!(
        admin_hits, 1,
        "only the direct request reached /admin/secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_with_a_valid_credential_opens_no_tunnel_past_the_role_check() {
    let Some(hypercorn) = Hypercorn::start().await else {
        return;
    };
    let gw = Gateway::start_with(three_routes(&hypercorn.server.url())).await;
    let user = unique("h2c");
    gw.add_user(&user, &random_password(), &["staff"]).await;
    let token = gw.issue_token(&user).await;
    let auth = format!("Authorization: Bearer {token}\r\n");

    let (status, after) = h2c_attempt(gw.addr(), "/private/x", &auth).await;
    assert!(
        !hypercorn
            .served_paths()
            .contains(&"/admin/secret".to_owned()),
        "a request inside an h2c tunnel skipped the role check: {:?}",
        hypercorn.served()
    );
    assert_eq!(status, 200);
    assert!(!String::from_utf8_lossy(&after).contains("/admin/secret"));
    let served = hypercorn.served();
    assert_eq!(served.len(), 1, "{served:?}");
    let (path, version, headers) = &served[0];
    assert_eq!((path.as_str(), version.as_str()), ("/private/x", "1.1"));
    assert!(headers.contains(&("x-auth-user".to_owned(), user.clone())));
    assert!(
        !headers
            .iter()
            .any(|(name, _)| name == "upgrade" || name == "http2-settings"),
        "{headers:?}"
    );

    // The same user's next request on the connection is still role-checked.
    let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
    let pipelined = format!(
        "GET /private/y HTTP/1.1\r\nHost: gw.test\r\n{auth}{H2C_HEADERS}\r\n\
         GET /admin/secret HTTP/1.1\r\nHost: gw.test\r\n{auth}Connection: close\r\n\r\n"
    );
    stream.write_all(pipelined.as_bytes()).await.expect("write");
    let raw = read_for(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(
        statuses(&raw),
        vec![200, 403],
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(
        !hypercorn
            .served_paths()
            .contains(&"/admin/secret".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_rfc_6455_handshakes_are_upgraded_and_only_to_websocket() {
    // The recording upstream answers any `Upgrade` with 101 and echoes.
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(three_routes(&upstream.url())).await;
    let ws = |method: &str, version: &str, upgrade: &str, key: bool, ws_version: &str| {
        let mut head = format!(
            "{method} /public/ws HTTP/{version}\r\nHost: gw.test\r\nConnection: Upgrade\r\n"
        );
        if !upgrade.is_empty() {
            head.push_str(&format!("Upgrade: {upgrade}\r\n"));
        }
        if key {
            head.push_str(&format!("Sec-WebSocket-Key: {WS_KEY}\r\n"));
        }
        if !ws_version.is_empty() {
            head.push_str(&format!("Sec-WebSocket-Version: {ws_version}\r\n"));
        }
        if method == "POST" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        head
    };

    // A real handshake listing other protocols too: only `websocket` is
    // forwarded, and the tunnel works.
    let (status, headers, mut stream) =
        raw_upgrade(gw.addr(), &ws("GET", "1.1", "websocket, h2c", true, "13")).await;
    assert_eq!(status, 101, "{headers:?}");
    let seen = upstream.last();
    assert_eq!(seen.header_all("upgrade"), vec!["websocket"]);
    assert_eq!(seen.header("connection").as_deref(), Some("upgrade"));
    stream.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echo))
        .await
        .expect("echo within 10 s")
        .expect("echo");
    assert_eq!(&echo, b"ping");
    drop(stream);

    let refused = [
        ("h2c", ws("GET", "1.1", "h2c", false, "")),
        (
            "h2c with settings",
            format!("GET /public/ws HTTP/1.1\r\nHost: gw.test\r\n{H2C_HEADERS}\r\n"),
        ),
        ("TLS/1.0", ws("GET", "1.1", "TLS/1.0", false, "")),
        ("custom", ws("GET", "1.1", "my-protocol/2", true, "13")),
        ("no key", ws("GET", "1.1", "websocket", false, "13")),
        ("version 8", ws("GET", "1.1", "websocket", true, "8")),
        ("no version", ws("GET", "1.1", "websocket", true, "")),
        ("POST", ws("POST", "1.1", "websocket", true, "13")),
        ("HTTP/1.0", ws("GET", "1.0", "websocket", true, "13")),
        (
            "bad key",
            ws("GET", "1.1", "websocket", false, "13")
                .replace("\r\n\r\n", "\r\nSec-WebSocket-Key: c2hvcnQ=\r\n\r\n"),
        ),
    ];
    for (what, head) in refused {
        let before = upstream.count();
        let (status, headers, _stream) = raw_upgrade(gw.addr(), &head).await;
        assert_eq!(status, 200, "{what}: {headers:?}");
        assert!(
            upstream
                .wait_for_count(before + 1, Duration::from_secs(5))
                .await
        );
        let seen = upstream.last();
        for gone in ["upgrade", "http2-settings", "sec-websocket-key-x"] {
            assert!(!seen.has_header(gone), "{what}: {gone} was forwarded");
        }
        assert!(
            !headers.iter().any(|(name, _)| name == "upgrade"),
            "{what}: {headers:?}"
        );
    }
}

/// An upstream that answers every request head with 101 switching to
/// `protocol`, then echoes every byte prefixed with `TUNNEL:`.
struct Always101 {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Always101 {
    async fn start(protocol: &'static str) -> Always101 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => head.push(byte[0]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let answer = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                         Upgrade: {protocol}\r\n\r\n"
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut chunk = [0u8; 4096];
                    loop {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                let mut echo = b"TUNNEL:".to_vec();
                                echo.extend_from_slice(&chunk[..n]);
                                if stream.write_all(&echo).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Always101 { addr, heads }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn count(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_the_gateway_did_not_ask_for_is_a_502_and_never_spliced() {
    let h2c = Always101::start("h2c").await;
    let gw = Gateway::start_with(three_routes(&h2c.url())).await;
    let websocket_head = format!(
        "GET /public/ws HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let cases = [
        (
            "plain GET",
            "GET /public/x HTTP/1.1\r\nHost: gw.test\r\n\r\n".to_owned(),
        ),
        (
            "h2c upgrade",
            format!("GET /public/x HTTP/1.1\r\nHost: gw.test\r\n{H2C_HEADERS}\r\n"),
        ),
        ("WebSocket answered with h2c", websocket_head.clone()),
    ];
    for (what, head) in cases {
        let before = h2c.count();
        let (status, _headers, mut stream) = raw_upgrade(gw.addr(), &head).await;
        assert_eq!(status, 502, "{what}");
        assert_eq!(h2c.count(), before + 1, "{what}: the upstream was asked");
        // Bytes after the refusal never reach the upstream's socket.
        let _ = stream.write_all(b"hello tunnel\r\n\r\n").await;
        let after = read_for(&mut stream, Duration::from_secs(2)).await;
        assert!(
            !String::from_utf8_lossy(&after).contains("TUNNEL:"),
            "{what}: spliced: {}",
            String::from_utf8_lossy(&after)
        );
    }
    let response = raw_request(
        gw.addr(),
        "GET /public/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
        b"",
    )
    .await;
    assert_eq!(response.status, 502);
    assert_eq!(
        error_of(&response),
        ("UNAVAILABLE".into(), "UPSTREAM_INVALID_RESPONSE".into())
    );
    assert!(
        gw.wait_for_log("not tunnelled", 1, Duration::from_secs(5))
            .await
    );

    // The same upstream switching to WebSocket when asked is spliced: the
    // refusals above are the gateway's, not the raw upstream's doing.
    let websocket = Always101::start("websocket").await;
    let gw = Gateway::start_with(three_routes(&websocket.url())).await;
    let (status, _headers, mut stream) = raw_upgrade(gw.addr(), &websocket_head).await;
    assert_eq!(status, 101);
    stream.write_all(b"hi").await.expect("write");
    let mut echo = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echo))
        .await
        .expect("echo within 10 s")
        .expect("echo");
    assert_eq!(&echo, b"TUNNEL:hi");
}

// ---------------------------------------------------------------------------
// Identity header aliases
// ---------------------------------------------------------------------------

/// Spoofed identity and forwarding headers, each under a spelling that an
/// upstream folding `_` into `-` reads as one the gateway vouches for.
const SPOOFED: [(&str, &str); 17] = [
    ("X_Auth_User", "root"),
    ("X-Auth_User", "root"),
    ("x_auth-user", "root"),
    ("X_Auth_Roles", "admin"),
    ("X_Auth_Method", "accesskey"),
    ("X_Auth_Key_Id", "00000000-0000-0000-0000-000000000000"),
    ("X_Auth_Anything", "1"),
    ("X_Client_Cert_Subject", "CN=root"),
    ("X_Forwarded_For", "6.6.6.6"),
    ("X_Forwarded_Host", "evil.example"),
    ("X_Forwarded_Proto", "https"),
    ("X_Request_Id", "spoofed-id"),
    ("Forwarded", "for=6.6.6.6;proto=https"),
    ("X-Real-IP", "6.6.6.6"),
    ("X_Real_IP", "6.6.6.6"),
    ("X-Original-URL", "/admin/secret"),
    ("X_Rewrite_URL", "/admin/secret"),
];

/// The environ keys that must never come from the client.
const NEVER_FROM_CLIENT: [&str; 7] = [
    "HTTP_X_AUTH_KEY_ID",
    "HTTP_X_AUTH_ANYTHING",
    "HTTP_X_CLIENT_CERT_SUBJECT",
    "HTTP_FORWARDED",
    "HTTP_X_REAL_IP",
    "HTTP_X_ORIGINAL_URL",
    "HTTP_X_REWRITE_URL",
];

/// Checks what a folding WSGI server at `url` shows its app: directly it
/// takes `X_Auth_User` for `X-Auth-User`; through the gateway the app sees
/// only the gateway's identity and forwarding headers.
async fn assert_no_spoofed_identity(server: &str, url: &str) {
    let direct = get(&format!("{url}/direct"), None, &[("X_Auth_User", "root")]).await;
    assert_eq!(
        direct.json()["HTTP_X_AUTH_USER"],
        "root",
        "{server} folds X_Auth_User into HTTP_X_AUTH_USER"
    );

    let gw = Gateway::start_with(three_routes(url)).await;
    let user = unique("wsgi");
    gw.add_user(&user, &random_password(), &["staff"]).await;
    let token = gw.issue_token(&user).await;

    let resp = get(&gw.url("/private/env"), Some(&token), &SPOOFED).await;
    resp.expect_status(200);
    let environ = resp.json();
    let request_id = resp.header("x-request-id").expect("request id");
    assert_eq!(
        environ["HTTP_X_AUTH_USER"],
        user.as_str(),
        "{server}: {environ}"
    );
    assert_eq!(environ["HTTP_X_AUTH_ROLES"], "staff", "{server}: {environ}");
    assert_eq!(environ["HTTP_X_AUTH_METHOD"], "jwt", "{server}: {environ}");
    assert_eq!(
        environ["HTTP_X_FORWARDED_FOR"], "127.0.0.1",
        "{server}: {environ}"
    );
    assert_eq!(
        environ["HTTP_X_FORWARDED_PROTO"], "http",
        "{server}: {environ}"
    );
    assert_eq!(
        environ["HTTP_X_FORWARDED_HOST"],
        gw.addr().to_string().as_str(),
        "{server}: {environ}"
    );
    assert_eq!(
        environ["HTTP_X_REQUEST_ID"],
        request_id.as_str(),
        "{server}: {environ}"
    );
    for key in NEVER_FROM_CLIENT {
        assert!(environ.get(key).is_none(), "{server}: {key} in {environ}");
    }

    // A public route forwards no identity at all.
    let resp = get(&gw.url("/public/env"), None, &SPOOFED).await;
    resp.expect_status(200);
    let environ = resp.json();
    let keys: Vec<&String> = environ.as_object().expect("object").keys().collect();
    for key in &keys {
        assert!(
            !key.starts_with("HTTP_X_AUTH_"),
            "{server}: {key} in {environ}"
        );
    }
    for key in NEVER_FROM_CLIENT {
        assert!(environ.get(key).is_none(), "{server}: {key} in {environ}");
    }
    assert_eq!(
        environ["HTTP_X_FORWARDED_FOR"], "127.0.0.1",
        "{server}: {environ}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_aliases_never_reach_gunicorn_with_folding() {
    let Some(gunicorn) = venv_program("gunicorn") else {
        return;
    };
    let server = PyServer::start(
        &gunicorn,
        &[
            "--bind",
            "127.0.0.1:{port}",
            "--workers",
            "1",
            "--header-map",
            "dangerous",
            "wsgi_environ:app",
        ],
        &[],
    )
    .await;
    assert_no_spoofed_identity("gunicorn --header-map dangerous", &server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_aliases_never_reach_wsgiref() {
    // The standard library's WSGI server folds underscores by default.
    let python = std::path::Path::new("python3");
    let server = PyServer::start(python, &["wsgi_environ.py", "{port}"], &[]).await;
    assert_no_spoofed_identity("wsgiref", &server.url()).await;
}

// ---------------------------------------------------------------------------
// Request framing: chunked bodies and Host
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_400_not_502() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(three_routes(&upstream.url())).await;
    let head = "POST /public/upload HTTP/1.1\r\nHost: gw.test\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    for (what, body) in [
        ("bad chunk size", &b"zz\r\nhello\r\n0\r\n\r\n"[..]),
        ("negative chunk size", b"-5\r\nhello\r\n0\r\n\r\n"),
        (
            "chunk size overflow",
            b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("no CRLF after the data", b"5\r\nhelloXX0\r\n\r\n"),
    ] {
        let response = raw_request(gw.addr(), head, body).await;
        assert_eq!(
            response.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(
            error_of(&response),
            ("INVALID_ARGUMENT".into(), "INVALID_BODY".into()),
            "{what}"
        );
    }
    assert_eq!(
        upstream.count(),
        0,
        "no complete request reached the upstream"
    );

    let response = raw_request(gw.addr(), head, b"5\r\nhello\r\n0\r\n\r\n").await;
    assert_eq!(response.status, 200);
    assert_eq!(upstream.last().body, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_1_without_host_is_400_and_http_1_0_and_http_2_are_served() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(three_routes(&upstream.url())).await;
    for head in [
        "GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET http://gw.test/public/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "POST /auth/login HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ] {
        let response = raw_request(gw.addr(), head, b"").await;
        assert_eq!(response.status, 400, "{head:?}");
        assert_eq!(
            error_of(&response),
            ("INVALID_ARGUMENT".into(), "INVALID_HOST".into()),
            "{head:?}"
        );
    }
    assert_eq!(upstream.count(), 0);

    let response = raw_request(gw.addr(), "GET /public/old HTTP/1.0\r\n\r\n", b"").await;
    assert_eq!(response.status, 200, "HTTP/1.0 may omit Host");
    assert_eq!(upstream.last().path(), "/public/old");
    let response = raw_request(
        gw.addr(),
        "GET /public/new HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    // HTTP/2 names the authority in `:authority`, not `Host`.
    let h2 = h2c_request(gw.addr(), &Req::get("/public/h2"))
        .await
        .expect("h2c request");
    assert_eq!(h2.status, 200);
    assert_eq!(upstream.last().path(), "/public/h2");
}
