//! Idle HTTP/1 connections are parked: after a second of quiet with no
//! request being answered, the gateway drops hyper's state (and its two
//! 8 KiB buffers) and keeps only the socket. A parked connection must
//! serve its next request as if nothing had happened: same socket, a head
//! begun before parking completed after it, a slow or paused answer never
//! cut short or turned into `Connection: close`, an upgrade still possible,
//! and the idle timeout and shutdown still closing it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longer than the gateway's park delay (1 s of quiet, sampled every
/// quarter second).
const PAST_PARKING: Duration = Duration::from_millis(1700);

/// An upstream answering by path (after `/public`):
/// - `/slow`: 200 after longer than the park delay;
/// - `/pause`: a chunked 200 whose second chunk comes after longer than
///   the park delay;
/// - `/upgrade`: 101, then echoes every byte;
/// - anything else: 200 with the path as the body.
async fn upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    (addr, task)
}

async fn serve(mut stream: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let Some(head) = read_request_head(&mut stream, &mut buf, None).await else {
            return;
        };
        let target = head.split(' ').nth(1).unwrap_or_default();
        let path = target.strip_prefix("/public").unwrap_or(target).to_string();
        let written = match path.as_str() {
            "/pause" => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
                    )
                    .await;
                tokio::time::sleep(PAST_PARKING).await;
                stream.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await
            }
            "/upgrade" => {
                upgrade_and_echo(&mut stream).await;
                return;
            }
            _ => {
                if path == "/slow" {
                    tokio::time::sleep(PAST_PARKING).await;
                }
                answer_with_path(&mut stream, &path).await
            }
        };
        if written.is_err() {
            return;
        }
    }
}

async fn gateway(upstream: SocketAddr, limits_toml: &str) -> Gateway {
    let mut opts = GatewayOptions::new(&format!("http://{upstream}"));
    opts.extra_toml = limits_toml.to_string();
    Gateway::start_with(opts).await
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n")
}

/// One request on `stream`; its status and body.
async fn ask(stream: &mut TcpStream, path: &str) -> (u16, String) {
    let response = raw_exchange(stream, &get(path), b"").await;
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    )
}

/// Waits until the gateway has logged `n` parkings.
async fn parked(gw: &Gateway, n: usize) -> bool {
    gw.wait_for_log("connection parked", n, Duration::from_secs(10))
        .await
}

#[tokio::test]
async fn a_parked_connection_serves_its_next_requests_on_the_same_socket() {
    let (up, _task) = upstream().await;
    let gw = gateway(up, "").await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    for i in 0..3 {
        let path = format!("/public/ok/{i}");
        assert_eq!(ask(&mut stream, &path).await, (200, format!("/ok/{i}")));
        assert!(
            parked(&gw, i + 1).await,
            "parked after request {i}: {}",
            gw.logs()
        );
    }
    // Back to back, nothing parks in between.
    for i in 3..6 {
        let path = format!("/public/ok/{i}");
        assert_eq!(ask(&mut stream, &path).await, (200, format!("/ok/{i}")));
    }
    assert_eq!(gw.log_count("connection parked"), 3);
}

#[tokio::test]
async fn a_head_begun_before_parking_is_completed_after_it() {
    let (up, _task) = upstream().await;
    let gw = gateway(up, "").await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    assert_eq!(ask(&mut stream, "/public/ok/one").await.0, 200);
    let head = get("/public/ok/two");
    let (begun, rest) = head.split_at(20);
    stream.write_all(begun.as_bytes()).await.unwrap();
    assert!(parked(&gw, 1).await);
    let response = raw_exchange(&mut stream, rest, b"").await;
    assert_eq!(
        (response.status, String::from_utf8_lossy(&response.body)),
        (200, "/ok/two".into()),
        "the head's beginning was read again after parking"
    );
    assert!(gw.logs().contains("unparsed=20"), "{}", gw.logs());
}

#[tokio::test]
async fn slow_and_paused_answers_keep_the_connection_alive() {
    let (up, _task) = upstream().await;
    let gw = gateway(up, "").await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    for path in ["/public/slow", "/public/pause"] {
        let response = raw_exchange(&mut stream, &get(path), b"").await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.header("connection"), None, "{path}: {response:?}");
        let body = String::from_utf8_lossy(&response.body).into_owned();
        let expected = if path == "/public/slow" {
            "/slow"
        } else {
            "firstsecond"
        };
        assert_eq!(body, expected);
        // Still open: the next request on the same socket.
        assert_eq!(ask(&mut stream, "/public/ok/after").await.0, 200, "{path}");
    }
    assert_eq!(
        gw.log_count("connection parked"),
        0,
        "no parking while an answer was on its way"
    );
}

#[tokio::test]
async fn a_response_delimited_by_the_close_still_ends_after_a_pause() {
    let (up, _task) = upstream().await;
    let gw = gateway(up, "").await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    // HTTP/1.0 without keep-alive: the body ends when the gateway closes.
    stream
        .write_all(b"GET /public/pause HTTP/1.0\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the gateway closed within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(text.ends_with("firstsecond"), "{text}");
}

#[tokio::test]
async fn a_parked_connection_can_upgrade() {
    let (up, _task) = upstream().await;
    let gw = gateway(up, "").await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    assert_eq!(ask(&mut stream, "/public/ok/first").await.0, 200);
    assert!(parked(&gw, 1).await);
    stream
        .write_all(
            b"GET /public/upgrade HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "closed in the head"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Quiet past the park delay: an upgraded stream is not HTTP any more
    // and is never parked.
    tokio::time::sleep(PAST_PARKING).await;
    stream.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echo))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(&echo, b"ping");
    // The client closing its side ends the tunnel and the gateway's side.
    stream.shutdown().await.unwrap();
    assert!(
        closed_within(&mut stream, Duration::from_secs(10))
            .await
            .is_some()
    );
    assert_eq!(gw.log_count("connection parked"), 1);
}

#[tokio::test]
async fn the_idle_timeout_and_shutdown_close_parked_connections() {
    let (up, _task) = upstream().await;
    let mut gw = gateway(up, "[limits]\nidle_timeout = 3\n").await;
    let mut idle = TcpStream::connect(gw.addr()).await.unwrap();
    assert_eq!(ask(&mut idle, "/public/ok/idle").await.0, 200);
    let mut draining = TcpStream::connect(gw.addr()).await.unwrap();
    assert_eq!(ask(&mut draining, "/public/ok/drain").await.0, 200);
    assert!(parked(&gw, 2).await);
    // Parked at about 1 s, closed at about the idle timeout.
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut idle, Duration::from_secs(10))
            .await
            .is_some()
    );
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_millis(500),
        "closed after {waited:?}"
    );

    let mut parked_again = TcpStream::connect(gw.addr()).await.unwrap();
    assert_eq!(ask(&mut parked_again, "/public/ok/again").await.0, 200);
    assert!(parked(&gw, 3).await);
    gw.sigterm();
    assert!(
        closed_within(&mut parked_again, Duration::from_secs(5))
            .await
            .is_some(),
        "shutdown closes a parked connection at once"
    );
    gw.wait_exit(Duration::from_secs(10)).await;
    drop(draining);
}

#[tokio::test]
async fn a_parked_tls_connection_serves_its_next_request() {
    use common::tls::*;
    use rustls::pki_types::ServerName;
    let (up, _task) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "server");
    let server = ca.server_cert("server");
    let mut opts = GatewayOptions::new(&format!("http://{up}"));
    opts.extra_toml = tls_toml(&server.cert, &server.key, "");
    let gw = Gateway::start_with(opts).await;
    let tcp = TcpStream::connect(gw.https_addr().await).await.unwrap();
    let mut stream =
        tokio_rustls::TlsConnector::from(client_config(&[&ca.cert], None, &["http/1.1"]))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
    for i in 0..2 {
        let response = raw_exchange(&mut stream, &get(&format!("/public/ok/{i}")), b"").await;
        assert_eq!(
            (response.status, String::from_utf8_lossy(&response.body)),
            (200, format!("/ok/{i}").into())
        );
        assert!(parked(&gw, i + 1).await);
    }
}

/// A real client library: Python's `http.client` keeps one connection
/// and raises if the server closed it between requests.
#[tokio::test]
async fn a_python_client_keeps_its_connection_across_parking() {
    let (up, _task) = upstream().await;
    let gw = gateway(up, "").await;
    let script = format!(
        r#"
import http.client, time
conn = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
socks = set()
for i in range(3):
    conn.request("GET", f"/public/ok/{{i}}")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == f"/ok/{{i}}".encode(), r.status
    socks.add(id(conn.sock))
    time.sleep({pause})
print(len(socks))
"#,
        port = gw.addr().port(),
        pause = PAST_PARKING.as_secs_f64(),
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
    })
    .await
    .unwrap()
    .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "one socket"
    );
    assert!(gw.log_count("connection parked") >= 2);
}
