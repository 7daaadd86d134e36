//! Connections to the upstream: kept idle and reused, never lent while a
//! response is still on them, replaced when the upstream closes them,
//! closed after `upstream.pool_idle_timeout`, and at most
//! `upstream.pool_max_idle_per_host` of them kept. The upstream here writes
//! its responses on the socket, so each test decides what a connection
//! carries and counts the connections it sees.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the raw upstream does, by request path (after `/public`):
/// - `/ok/...`: 200 with the path as the body;
/// - `/head` (HEAD): 200 with `Content-Length: 10` and no body;
/// - `/empty`: 204;
/// - `/smuggle`: a 2-byte response followed, in the same write, by a
///   second response nobody asked for;
/// - `/endless`: a head promising a megabyte, then 16 bytes every 20 ms
///   until the connection closes;
/// - `/close`: 200 with `Connection: close`, then closes;
/// - `/wait`: 200 after 300 ms;
/// - `/upgrade`: 101 to WebSocket, then echoes every byte until closed.
///
/// With `close_idle_after`, a connection idle that long after a response
/// is closed by the upstream.
struct RawUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Connections that ended: the gateway closed them, or the upstream did.
    ended: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    async fn start(close_idle_after: Option<Duration>) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let (a, e) = (accepted.clone(), ended.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let e = e.clone();
                tokio::spawn(async move {
                    serve_connection(stream, close_idle_after).await;
                    e.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        RawUpstream {
            addr,
            accepted,
            ended,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    /// Waits until `ended` reaches `n`; whether it did within `within`.
    async fn ended_reaches(&self, n: usize, within: Duration) -> bool {
        poll_until(within, || async { self.ended() >= n }).await
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves requests (heads only: these tests send no bodies) until the
/// gateway closes the connection, a response says it closes, or it has
/// been idle for `close_idle_after`.
async fn serve_connection(mut stream: TcpStream, close_idle_after: Option<Duration>) {
    let mut buf = Vec::new();
    loop {
        let Some(head) = read_request_head(&mut stream, &mut buf, close_idle_after).await else {
            return;
        };
        let mut words = head.split(' ');
        let method = words.next().unwrap_or_default().to_string();
        let target = words.next().unwrap_or_default().to_string();
        let path = target
            .strip_prefix("/public")
            .unwrap_or(&target)
            .to_string();
        let written = match path.as_str() {
            "/head" if method == "HEAD" => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
                    .await
            }
            "/empty" => stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await,
            "/smuggle" => {
                stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
                          HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
                    )
                    .await
            }
            "/endless" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                    .await;
                while stream.write_all(&[b'x'; 16]).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return;
            }
            "/upgrade" => {
                upgrade_and_echo(&mut stream).await;
                return;
            }
            "/close" => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nclose",
                    )
                    .await;
                return;
            }
            _ => {
                if path == "/wait" {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                answer_with_path(&mut stream, &path).await
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// A gateway with one worker (one set of idle connections) in front of
/// `upstream`, with `upstream_toml` inside `[upstream]`.
async fn gateway(upstream: &RawUpstream, upstream_toml: &str) -> Gateway {
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.upstream_extra_toml = upstream_toml.to_string();
    let mut gw = Gateway::prepare(opts);
    gw.spawn_with_prelude("export AUTHGATE_WORKERS=1").await;
    gw
}

/// One request on a connection of its own; its status and body.
async fn fetch(gw: &Gateway, method: &str, path: &str) -> (u16, String) {
    fetch_at(gw.addr(), method, path).await
}

async fn fetch_at(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let head = format!("{method} {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    if method == "HEAD" {
        // No body follows, whatever Content-Length says: read to the close.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
        return (status, body.unwrap_or_default());
    }
    let response = raw_request(addr, &head, b"").await;
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    )
}

#[tokio::test]
async fn idle_connections_are_reused() {
    let upstream = RawUpstream::start(None).await;
    let gw = gateway(&upstream, "").await;
    for i in 0..5 {
        let path = format!("/public/ok/{i}");
        assert_eq!(fetch(&gw, "GET", &path).await, (200, format!("/ok/{i}")));
    }
    assert_eq!(
        upstream.accepted(),
        1,
        "five requests in turn, one connection"
    );
}

#[tokio::test]
async fn responses_without_a_body_leave_the_connection_reusable() {
    let upstream = RawUpstream::start(None).await;
    let gw = gateway(&upstream, "").await;
    assert_eq!(fetch(&gw, "HEAD", "/public/head").await.0, 200);
    assert_eq!(
        fetch(&gw, "GET", "/public/empty").await,
        (204, String::new())
    );
    assert_eq!(fetch(&gw, "HEAD", "/public/head").await.0, 200);
    assert_eq!(
        fetch(&gw, "GET", "/public/ok/after").await,
        (200, "/ok/after".to_string())
    );
    assert_eq!(upstream.accepted(), 1);
}

/// Bytes an upstream sends after a response are never read as the answer
/// to the next request (response splitting into another client's request).
#[tokio::test]
async fn bytes_after_a_response_never_answer_another_request() {
    let upstream = RawUpstream::start(None).await;
    let gw = gateway(&upstream, "").await;
    assert_eq!(
        fetch(&gw, "GET", "/public/smuggle").await,
        (200, "ok".to_string())
    );
    for i in 0..3 {
        let (status, body) = fetch(&gw, "GET", &format!("/public/ok/{i}")).await;
        assert_eq!((status, body.as_str()), (200, format!("/ok/{i}").as_str()));
    }
}

/// A client that leaves in the middle of a response body: that connection
/// is closed, never lent to the next request with the rest still coming.
#[tokio::test]
async fn a_connection_with_a_response_still_on_it_is_never_reused() {
    let upstream = RawUpstream::start(None).await;
    let gw = gateway(&upstream, "").await;
    let mut client = TcpStream::connect(gw.addr()).await.unwrap();
    client
        .write_all(b"GET /public/endless HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"xxxx") {
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the gateway closed before the body began");
        seen.extend_from_slice(&chunk[..n]);
    }
    drop(client);
    for i in 0..3 {
        let (status, body) = fetch(&gw, "GET", &format!("/public/ok/{i}")).await;
        assert_eq!((status, body.as_str()), (200, format!("/ok/{i}").as_str()));
    }
    assert!(
        upstream.ended_reaches(1, Duration::from_secs(5)).await,
        "the connection of the abandoned response was closed"
    );
    assert_eq!(upstream.accepted(), 2);
}

/// An upstream that closes idle connections (as most servers do after
/// their keep-alive timeout), or closes after a response: the next request
/// goes on a new connection and succeeds.
#[tokio::test]
async fn connections_the_upstream_closed_are_replaced() {
    let upstream = RawUpstream::start(Some(Duration::from_millis(100))).await;
    let gw = gateway(&upstream, "").await;
    for i in 0..3 {
        let path = format!("/public/ok/{i}");
        assert_eq!(fetch(&gw, "GET", &path).await, (200, format!("/ok/{i}")));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(upstream.accepted(), 3);
    assert_eq!(
        fetch(&gw, "GET", "/public/close").await,
        (200, "close".into())
    );
    assert_eq!(
        fetch(&gw, "GET", "/public/ok/next").await,
        (200, "/ok/next".to_string())
    );
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let upstream = RawUpstream::start(None).await;
    let gw = gateway(&upstream, "pool_idle_timeout = 1\n").await;
    assert_eq!(fetch(&gw, "GET", "/public/ok/1").await.0, 200);
    assert_eq!(upstream.ended(), 0);
    assert!(
        upstream.ended_reaches(1, Duration::from_secs(5)).await,
        "the gateway closed its idle connection after upstream.pool_idle_timeout"
    );
    // And opens a new one for the next request.
    assert_eq!(fetch(&gw, "GET", "/public/ok/2").await.0, 200);
    assert_eq!(upstream.accepted(), 2);
}

#[tokio::test]
async fn at_most_pool_max_idle_per_host_connections_stay_open() {
    let upstream = RawUpstream::start(None).await;
    let gw = gateway(&upstream, "pool_max_idle_per_host = 1\n").await;
    // Three at once need three connections.
    let addr = gw.addr();
    let at_once: Vec<_> = (0..3)
        .map(|_| tokio::spawn(fetch_at(addr, "GET", "/public/wait")))
        .collect();
    for request in at_once {
        assert_eq!(request.await.unwrap(), (200, "/wait".to_string()));
    }
    assert_eq!(upstream.accepted(), 3);
    assert!(
        upstream.ended_reaches(2, Duration::from_secs(5)).await,
        "two of three closed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upstream.ended(), 2, "one kept");
    assert_eq!(fetch(&gw, "GET", "/public/ok/kept").await.0, 200);
    assert_eq!(upstream.accepted(), 3, "the kept one was reused");
}

/// A connection switched to WebSocket is the tunnel's alone: the next
/// request opens a new one instead of being written into the tunnel.
#[tokio::test]
async fn an_upgraded_connection_is_never_lent_again() {
    let upstream = RawUpstream::start(None).await;
    let gw = gateway(&upstream, "").await;
    let head = "GET /public/upgrade HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n\
                Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (status, headers, mut tunnel) = raw_upgrade(gw.addr(), head).await;
    assert_eq!(status, 101, "{headers:?}");
    tunnel.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), tunnel.read_exact(&mut echo))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(&echo, b"ping");
    for i in 0..3 {
        let (status, body) = fetch(&gw, "GET", &format!("/public/ok/{i}")).await;
        assert_eq!((status, body.as_str()), (200, format!("/ok/{i}").as_str()));
    }
    assert_eq!(
        upstream.accepted(),
        2,
        "the tunnel's and one for the requests"
    );
    drop(tunnel);
}
