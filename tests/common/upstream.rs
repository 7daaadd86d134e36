//! The recording upstream: a real HTTP server (HTTP/1.1 and h2c, plain or
//! TLS) that records every request it receives and answers 200.

use super::*;

use tokio_rustls::TlsAcceptor;

/// Bodies larger than this are recorded by length and digest only.
const RECORDED_BODY_CAP: usize = 1 << 20;

/// Test-only header the TLS upstream adds to each recorded request: the
/// subject of the client certificate the gateway presented, or `none`.
pub const SAW_CLIENT_CERT: &str = "x-test-upstream-client-cert";

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query exactly as received (origin form).
    pub uri: String,
    pub version: ::http::Version,
    pub headers: ::http::HeaderMap,
    pub body_len: usize,
    pub body_sha256: String,
    /// The body, or its first `RECORDED_BODY_CAP` bytes.
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.uri
            .split_once('?')
            .map_or(self.uri.as_str(), |(p, _)| p)
    }

    pub fn query(&self) -> Option<&str> {
        self.uri.split_once('?').map(|(_, q)| q)
    }

    /// First value of a header, lossily decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers.contains_key(name)
    }

    /// All cookie pairs over all `Cookie` headers, trimmed, in order.
    pub fn cookies(&self) -> Vec<String> {
        self.header_all("cookie")
            .iter()
            .flat_map(|h| h.split(';'))
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    }

    /// Whether `needle` occurs in the request line, any header value or the body.
    pub fn contains_anywhere(&self, needle: &str) -> bool {
        if self.uri.contains(needle) {
            return true;
        }
        if self
            .headers
            .iter()
            .any(|(_, v)| String::from_utf8_lossy(v.as_bytes()).contains(needle))
        {
            return true;
        }
        String::from_utf8_lossy(&self.body).contains(needle)
    }

    /// Header names as received (lowercase), for diagnostics.
    pub fn header_names(&self) -> Vec<String> {
        self.headers
            .keys()
            .map(|k| k.as_str().to_string())
            .collect()
    }
}

/// A real HTTP server (HTTP/1.1 and h2c) on an ephemeral port that records
/// every request and answers 200 with a small JSON body.
pub struct Upstream {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Recorded>>>,
    stop: watch::Sender<bool>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Upstream::start_with_delay(Duration::ZERO).await
    }

    /// Answers only after `delay` (the request is recorded on arrival).
    pub async fn start_with_delay(delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream on 127.0.0.1:0");
        Upstream::serve_on(listener, delay, None)
    }

    /// A new upstream on `addr` (e.g. the address of one that was stopped:
    /// an upstream restart); retries the bind for a few seconds.
    pub async fn start_at(addr: SocketAddr) -> Upstream {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(err) if Instant::now() > deadline => panic!("bind upstream on {addr}: {err}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        Upstream::serve_on(listener, Duration::ZERO, None)
    }

    /// Like [`Upstream::start`], but every connection is TLS with `config`;
    /// each recorded request carries [`SAW_CLIENT_CERT`]. Its `url()` says
    /// `http://`; build `https://localhost:PORT` from `addr()`.
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS upstream on 127.0.0.1:0");
        Upstream::serve_on(listener, Duration::ZERO, Some(TlsAcceptor::from(config)))
    }

    /// The one accept loop, plain or TLS.
    fn serve_on(listener: TcpListener, delay: Duration, tls: Option<TlsAcceptor>) -> Upstream {
        let addr = listener.local_addr().expect("upstream local addr");
        let records = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(false);
        let recs = records.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let recs = recs.clone();
                        let tls = tls.clone();
                        let conn_stopped = stopped.clone();
                        tokio::spawn(async move {
                            match tls {
                                None => serve_connection(stream, recs, delay, None, conn_stopped).await,
                                Some(acceptor) => {
                                    let Ok(stream) = acceptor.accept(stream).await else {
                                        return;
                                    };
                                    let subject = client_cert_subject(stream.get_ref().1);
                                    serve_connection(stream, recs, delay, Some(subject), conn_stopped)
                                        .await
                                }
                            }
                        });
                    }
                }
            }
        });
        Upstream {
            addr,
            records,
            stop,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.records.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// The most recent request; panics when there is none.
    pub fn last(&self) -> Recorded {
        self.records
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }

    /// Waits until at least `n` requests were recorded.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.count() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.count() >= n
    }

    /// Closes the listener and every open connection.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Serves one connection until it ends or the upstream stops; with
/// `client_cert`, every request is recorded with [`SAW_CLIENT_CERT`] set to it.
async fn serve_connection<I>(
    io: I,
    records: Arc<Mutex<Vec<Recorded>>>,
    delay: Duration,
    client_cert: Option<String>,
    mut stopped: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if let Some(value) = client_cert
            .as_deref()
            .and_then(|subject| ::http::HeaderValue::from_str(subject).ok())
        {
            req.headers_mut().insert(SAW_CLIENT_CERT, value);
        }
        upstream_handle(req, records.clone(), delay)
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::select! {
        _ = conn => {}
        _ = stopped.changed() => {}
    }
}

/// The subject of the certificate the client presented, or `none`.
fn client_cert_subject(session: &rustls::ServerConnection) -> String {
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| x509_parser::parse_x509_certificate(cert.as_ref()).ok())
        .map(|(_, cert)| cert.subject().to_string())
        .unwrap_or_else(|| "none".to_string())
}

async fn upstream_handle(
    req: Request<Incoming>,
    records: Arc<Mutex<Vec<Recorded>>>,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if let Some(proto) = req.headers().get(hyper::header::UPGRADE).cloned() {
        return Ok(upstream_upgrade(req, records, proto));
    }
    let (parts, mut body) = req.into_parts();
    let uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| parts.uri.to_string());
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            len += data.len();
            if kept.len() < RECORDED_BODY_CAP {
                let room = RECORDED_BODY_CAP - kept.len();
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
    }
    records.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        uri: uri.clone(),
        version: parts.version,
        headers: parts.headers,
        body_len: len,
        body_sha256: hex::encode(hasher.finalize()),
        body: kept,
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let body = json!({ "upstream": "ok", "uri": uri }).to_string();
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("x-upstream", "recorder")
        .body(Full::new(Bytes::from(body)))
        .expect("build upstream response"))
}

/// Accepts an `Upgrade` with 101 and then echoes every byte back.
fn upstream_upgrade(
    mut req: Request<Incoming>,
    records: Arc<Mutex<Vec<Recorded>>>,
    proto: ::http::HeaderValue,
) -> Response<Full<Bytes>> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let uri = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_default();
    records.lock().unwrap().push(Recorded {
        method: req.method().to_string(),
        uri,
        version: req.version(),
        headers: req.headers().clone(),
        body_len: 0,
        body_sha256: sha256_hex(b""),
        body: Vec::new(),
    });
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        echo_until_closed(&mut TokioIo::new(upgraded)).await;
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", proto)
        .body(Full::new(Bytes::new()))
        .expect("build 101 response")
}

/// A URL on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe port");
    let port = listener.local_addr().expect("probe addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}
