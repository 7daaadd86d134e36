//! The first request head is due `limits.header_read_timeout` after accept,
//! TLS handshake and HTTP/1-or-HTTP/2 detection included: silent and
//! trickling connections give their slot under `limits.max_connections`
//! back at that deadline, not after `limits.idle_timeout`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// header_read_timeout in these tests, in seconds.
const HEAD_TIMEOUT: u64 = 1;

/// A gateway with a plain and a TLS listener, `max_connections` slots,
/// a one-second head deadline and the default 60 s idle timeout; and the
/// CA that signed its certificate.
async fn gateway(upstream: &Upstream, max_connections: usize) -> (Gateway, tempfile::TempDir, Ca) {
    let dir = tempfile::tempdir().expect("certs dir");
    let ca = Ca::new(dir.path(), "server");
    let server = ca.server_cert("server");
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = format!(
        "{}\n[limits]\nmax_connections = {max_connections}\nheader_read_timeout = {HEAD_TIMEOUT}\n\
         idle_timeout = 60\n",
        tls_toml(&server.cert, &server.key, "")
    );
    (Gateway::start_with(opts).await, dir, ca)
}

/// A TLS connection to `addr` whose handshake has completed.
async fn tls_connected(addr: SocketAddr, ca: &Ca) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(client_config(&[&ca.cert], None, &["http/1.1"]))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_plain_and_tls_connections_free_their_slots_at_the_head_deadline() {
    let upstream = Upstream::start().await;
    let (gw, _dir, ca) = gateway(&upstream, 3).await;
    let https = gw.https_addr().await;
    let started = Instant::now();

    // More silent connections than slots, of every kind: TLS after the
    // handshake (waiting in protocol detection), TLS without a ClientHello,
    // and plain TCP that never sends a byte.
    let mut tls_silent = Vec::new();
    for _ in 0..2 {
        tls_silent.push(tls_connected(https, &ca).await);
    }
    let mut tcp_silent = Vec::new();
    for _ in 0..2 {
        tcp_silent.push(TcpStream::connect(https).await.expect("connect"));
    }
    for _ in 0..3 {
        tcp_silent.push(TcpStream::connect(gw.addr()).await.expect("connect"));
    }

    // Every slot is held now; /healthz gets one once the deadlines free
    // them: the silent connections are accepted in waves of three, each
    // dropped one head deadline after its accept.
    let addr = gw.addr();
    let health = tokio::spawn(async move {
        raw_request(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
            b"",
        )
        .await
        .status
    });
    let bound = Duration::from_secs(3 * HEAD_TIMEOUT + 4);
    let status = tokio::time::timeout(bound, health)
        .await
        .unwrap_or_else(|_| panic!("/healthz still waits for a slot after {bound:?}"))
        .expect("task");
    assert_eq!(status, 200);

    for (i, stream) in tls_silent.iter_mut().enumerate() {
        closed_within(stream, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("silent TLS connection {i} is still open"));
    }
    for (i, stream) in tcp_silent.iter_mut().enumerate() {
        closed_within(stream, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("silent connection {i} is still open"));
    }
    let took = started.elapsed();
    assert!(took < bound + Duration::from_secs(2), "took {took:?}");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_trickled_a_byte_at_a_time_are_cut_at_the_head_deadline() {
    let upstream = Upstream::start().await;
    let (gw, _dir, ca) = gateway(&upstream, 100).await;
    let https = gw.https_addr().await;

    // The HTTP/2 preface, one byte every 200 ms: each byte is activity,
    // and hyper's own header timer has not started while the gateway
    // (src/connection/protocol.rs) still reads the first bytes to tell HTTP/1 from
    // HTTP/2.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let cases: Vec<(&str, Box<dyn AsyncReadWrite>)> = vec![
        (
            "plain",
            Box::new(TcpStream::connect(gw.addr()).await.expect("connect")),
        ),
        ("TLS", Box::new(tls_connected(https, &ca).await)),
    ];
    for (what, stream) in cases {
        let (mut read, mut write) = tokio::io::split(stream);
        let trickle = tokio::spawn(async move {
            for byte in &preface[..preface.len() - 1] {
                if write.write_all(&[*byte]).await.is_err() || write.flush().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let took = closed_within(&mut read, Duration::from_secs(8))
            .await
            .unwrap_or_else(|| panic!("{what}: a trickled preface held its connection"));
        assert!(
            took < Duration::from_secs(HEAD_TIMEOUT + 2),
            "{what}: closed after {took:?}"
        );
        trickle.abort();
    }

    // An HTTP/1 head over TLS, a byte at a time.
    let stream = tls_connected(https, &ca).await;
    let (mut read, mut write) = tokio::io::split(stream);
    let trickle = tokio::spawn(async move {
        for byte in
            b"GET /public/x HTTP/1.1\r\nHost: gw.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if write.write_all(&[*byte]).await.is_err() || write.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let took = closed_within(&mut read, Duration::from_secs(8))
        .await
        .expect("a trickled HTTP/1 head over TLS is cut off");
    assert!(
        took < Duration::from_secs(HEAD_TIMEOUT + 2),
        "closed after {took:?}"
    );
    trickle.abort();
    assert_eq!(upstream.count(), 0);
    get(&gw.url("/healthz"), None, &[]).await.expect_status(200);
}

/// Both halves of a plain or TLS stream, boxed.
trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncReadWrite for T {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_outlives_the_head_deadline() {
    // The deadline covers the first head only: a slow upstream answer,
    // and a second request on the same connection, are not cut by it.
    let upstream = Upstream::start_with_delay(Duration::from_secs(3)).await;
    let (gw, _dir, ca) = gateway(&upstream, 100).await;
    let https = gw.https_addr().await;

    let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
    stream
        .write_all(b"GET /public/slow HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut byte))
            .await
            .expect("an answer within 20 s")
            .expect("read");
        assert!(n > 0, "closed while the request was in flight");
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() >= Duration::from_secs(3));

    let https_response = https_request(
        https,
        "localhost",
        client_config(&[&ca.cert], None, &["h2"]),
        &Req::get("/public/slow-h2"),
    )
    .await
    .expect("an HTTP/2 request answered after the head deadline");
    assert_eq!(https_response.status, 200);
}
