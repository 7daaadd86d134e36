//! Raw HTTP/1.1 over a TCP socket, for heads a client library would
//! rewrite or refuse.

use super::*;

/// A raw response: status, headers (name lowercased) and body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (must end with an empty line) plus `body` and reads one response.
pub async fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    raw_exchange(&mut stream, head, body).await
}

/// Sends `head` plus `body` on an open connection and reads one response
/// (one at a time: bytes after it are not kept).
pub async fn raw_exchange<S>(stream: &mut S, head: &str, body: &[u8]) -> RawResponse
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async {
        // Head.
        let head_end = loop {
            if let Some(pos) = find(&buf, b"\r\n\r\n") {
                break pos + 4;
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before a response head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut rest = buf[head_end..].to_vec();
        let content_length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        let body = if let Some(len) = content_length {
            while rest.len() < len {
                let n = stream.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "connection closed inside the body");
                rest.extend_from_slice(&chunk[..n]);
            }
            rest.truncate(len);
            rest
        } else if chunked {
            while find(&rest, b"0\r\n\r\n").is_none() {
                let n = stream.read(&mut chunk).await.expect("read body");
                if n == 0 {
                    break;
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            dechunk(&rest)
        } else {
            loop {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            rest
        };
        RawResponse {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("raw response within 60 s")
}

/// Sends an upgrade request head and reads the response head; on 101 the
/// stream is handed back for the upgraded protocol.
pub async fn raw_upgrade(addr: SocketAddr, head: &str) -> (u16, Vec<(String, String)>, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut buf = Vec::new();
    let read = async {
        // Byte by byte, so nothing after the head is consumed.
        let mut byte = [0u8; 1];
        while find(&buf, b"\r\n\r\n").is_none() {
            let n = stream.read(&mut byte).await.expect("read");
            assert!(n > 0, "connection closed before a response head");
            buf.push(byte[0]);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("response head within 60 s");
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, stream)
}

/// A raw upstream's side: reads one request head from `stream` (the bytes
/// after it stay in `buf`). `None` when the peer closes first, or when
/// `idle` passes with no byte of a new head.
pub async fn read_request_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    idle: Option<Duration>,
) -> Option<String> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos + 4;
        }
        let read = stream.read(&mut chunk);
        let n = match idle {
            Some(idle) if buf.is_empty() => tokio::time::timeout(idle, read).await.ok()?,
            _ => read.await,
        };
        match n {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    Some(head)
}

/// A raw upstream's side: 200 with `path` as the body.
pub async fn answer_with_path(stream: &mut TcpStream, path: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
        path.len()
    );
    stream.write_all(response.as_bytes()).await
}

/// A raw upstream's side: answers 101 to WebSocket, then echoes every byte
/// (as a tunnel's other end would answer it) until the peer closes.
pub async fn upgrade_and_echo(stream: &mut TcpStream) {
    let _ = stream
        .write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n",
        )
        .await;
    echo_until_closed(stream).await;
}

/// Writes back every byte read from `io` until the peer closes it: the far
/// end of an upgraded (tunnelled) connection.
pub async fn echo_until_closed<S>(io: &mut S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut chunk = [0u8; 4096];
    loop {
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if io.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Waits until the peer closes `stream` (end of stream or an error);
/// how long that took, or `None` if it is still open after `within`.
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(data, b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16)
            .expect("chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[..size.min(data.len())]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}
