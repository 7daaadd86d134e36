//! The PROXY protocol behind real HAProxy (`send-proxy` and
//! `send-proxy-v2`, plain and TLS): the carried client address is the one
//! the upstream, the access log and rate limits see; it is required from the
//! listed peers and never believed from anyone else (contract, "Edge TLS").
//!
//! Loopback has a whole /8: clients connect from 127.0.0.2 and 127.0.0.3,
//! HAProxy (the only listed peer) from 127.0.0.1.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// HAProxy in TCP mode on three ephemeral ports: v1 and v2 to the plain
/// listener, v2 to the TLS listener. Killed on drop.
struct Haproxy {
    child: Child,
    v1: SocketAddr,
    v2: SocketAddr,
    v2_tls: SocketAddr,
    _dir: TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `None` (skipped) outside CI when HAProxy is not installed.
async fn haproxy(plain: SocketAddr, tls: SocketAddr) -> Option<Haproxy> {
    if !Path::new(HAPROXY).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{HAPROXY} is missing (.ci/run installs haproxy)"
        );
        eprintln!("skipped: {HAPROXY} is missing");
        return None;
    }
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let ports = [free_port(), free_port(), free_port()];
        let config = format!(
            "global\n  maxconn 200\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             listen v1\n  bind 127.0.0.1:{}\n  server gw {plain} send-proxy\n\
             listen v2\n  bind 127.0.0.1:{}\n  server gw {plain} send-proxy-v2\n\
             listen v2tls\n  bind 127.0.0.1:{}\n  server gw {tls} send-proxy-v2\n",
            ports[0], ports[1], ports[2]
        );
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let child = Command::new(HAPROXY)
            .args(["-db", "-f"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let mut proxy = Haproxy {
            child,
            v1: SocketAddr::from(([127, 0, 0, 1], ports[0])),
            v2: SocketAddr::from(([127, 0, 0, 1], ports[1])),
            v2_tls: SocketAddr::from(([127, 0, 0, 1], ports[2])),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if proxy.child.try_wait().ok().flatten().is_some() {
                break;
            }
            let mut listening = true;
            for addr in [proxy.v1, proxy.v2, proxy.v2_tls] {
                listening &= tokio::net::TcpStream::connect(addr).await.is_ok();
            }
            if listening {
                return Some(proxy);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = proxy.child.kill();
    }
    panic!("haproxy did not start");
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    socket.connect(to).await.expect("connect")
}

/// Sends `head` (a whole request head) on `stream` and reads until it
/// closes or 10 s pass: what came back.
async fn exchange(stream: &mut tokio::net::TcpStream, head: &[u8]) -> String {
    let _ = stream.write_all(head).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

const GET: &[u8] = b"GET /public/pp HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n";

/// A gateway that takes PROXY headers from 127.0.0.1 only, plain and TLS.
async fn gateway(upstream: &Upstream, server: &CertKey) -> Gateway {
    let mut opts = GatewayOptions::new(&upstream.url());
    // A one-second head deadline: a slow PROXY header counts against it.
    opts.extra_toml = format!(
        "{}[limits]\nheader_read_timeout = 1\n",
        tls_toml(&server.cert, &server.key, "")
    );
    let mut gw = Gateway::prepare(opts);
    let text = gw.render_config(gw.options()).replacen(
        "[server]\n",
        "[server]\nproxy_protocol = [\"127.0.0.1/32\"]\n",
        1,
    );
    gw.write_config(&text);
    gw.spawn().await;
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_v1_and_v2_carry_the_client_address_plain_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "pp");
    let server = ca.server_cert("server");
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, &server).await;
    let https = gw.https_addr().await;
    let Some(front) = haproxy(gw.addr(), https).await else {
        return;
    };

    for (via, from) in [(front.v1, [127, 0, 0, 2]), (front.v2, [127, 0, 0, 3])] {
        let mut stream = connect_from(from, via).await;
        let answer = exchange(&mut stream, GET).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "via {via}: {answer}");
        let seen = upstream.last();
        assert_eq!(
            seen.header("x-forwarded-for").as_deref(),
            Some(IpAddr::from(from).to_string().as_str()),
            "the client behind HAProxy, not HAProxy"
        );
    }

    // TLS behind the PROXY header: the handshake follows it untouched.
    let tcp = connect_from([127, 0, 0, 4], front.v2_tls).await;
    let config = client_config(&[&ca.cert], None, &["http/1.1"]);
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS through HAProxy");
    let mut tls = tls;
    tls.write_all(GET).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        upstream.last().header("x-forwarded-for").as_deref(),
        Some("127.0.0.4")
    );
    assert!(
        gw.wait_for_log("127.0.0.4", 1, Duration::from_secs(5))
            .await,
        "the access log names the carried client; logs:\n{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_is_required_from_listed_peers_and_never_believed_from_others() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "pp2");
    let server = ca.server_cert("server");
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, &server).await;

    // An unlisted peer's PROXY line is no header: hyper refuses it as a
    // request line, and the forged address reaches nothing.
    let mut forged = connect_from([127, 0, 0, 2], gw.addr()).await;
    let mut spoof = b"PROXY TCP4 6.6.6.6 127.0.0.1 1234 80\r\n".to_vec();
    spoof.extend_from_slice(GET);
    let answer = exchange(&mut forged, &spoof).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // A listed peer without a header, or with a malformed one: closed
    // without an answer.
    for head in [
        GET.to_vec(),
        [&b"PROXY TCP4 6.6.6.6 nonsense\r\n"[..], GET].concat(),
        [&b"PROXY TCP4 "[..], &[b'1'; 200][..]].concat(),
    ] {
        let mut listed = connect_from([127, 0, 0, 1], gw.addr()).await;
        let answer = exchange(&mut listed, &head).await;
        assert_eq!(
            answer, "",
            "a listed peer's connection is closed unanswered"
        );
    }
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");
    assert!(
        !upstream
            .requests()
            .iter()
            .any(|r| r.contains_anywhere("6.6.6.6"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_proxy_header_counts_against_the_head_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "pp3");
    let server = ca.server_cert("server");
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, &server).await;

    let started = Instant::now();
    let mut slow = connect_from([127, 0, 0, 1], gw.addr()).await;
    slow.write_all(b"PROXY TCP4 192.0.2.1 ").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is closed, not left waiting");
    assert!(rest.is_empty(), "closed unanswered");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed at the one-second head deadline, took {:?}",
        started.elapsed()
    );
}
