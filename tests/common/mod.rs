//! Black-box test harness: a recording upstream, the real `authgate` binary
//! in a temporary directory, and HTTP helpers.
//!
//! Everything binds `127.0.0.1:0` and lives in its own `TempDir`, so tests run
//! in parallel without sharing ports or files.

// Each test file uses a different subset of the harness.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use md5::Md5;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub mod pyserver;
pub mod tls;

/// The gateway binary built by cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// Generous: debug builds hash with argon2 slowly and run migrations on start.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// The contract's bound for a CLI change to reach a running gateway.
pub const PROPAGATION: Duration = Duration::from_secs(3);

/// Bodies larger than this are recorded by length and digest only.
const RECORDED_BODY_CAP: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query exactly as received (origin form).
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
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
        Upstream::serve(listener, delay)
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
        Upstream::serve(listener, Duration::ZERO)
    }

    fn serve(listener: TcpListener, delay: Duration) -> Upstream {
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
                        let mut conn_stopped = stopped.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                upstream_handle(req, recs.clone(), delay)
                            });
                            let builder =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc);
                            tokio::select! {
                                _ = conn => {}
                                _ = conn_stopped.changed() => {}
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
    proto: http::HeaderValue,
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
        let mut io = TokioIo::new(upgraded);
        let mut buf = [0u8; 4096];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
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

// ---------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------

/// One `[[route]]` table.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    pub path_prefix: String,
    pub upstream: String,
    pub auth: String,
    pub roles: Vec<String>,
    pub timeout: Option<u64>,
}

impl RouteSpec {
    pub fn required(prefix: &str, upstream: &str) -> RouteSpec {
        RouteSpec {
            path_prefix: prefix.to_string(),
            upstream: upstream.to_string(),
            auth: "required".to_string(),
            roles: Vec::new(),
            timeout: None,
        }
    }

    pub fn public(prefix: &str, upstream: &str) -> RouteSpec {
        RouteSpec {
            auth: "public".to_string(),
            ..RouteSpec::required(prefix, upstream)
        }
    }

    pub fn roles(mut self, roles: &[&str]) -> RouteSpec {
        self.roles = roles.iter().map(|r| r.to_string()).collect();
        self
    }

    pub fn timeout(mut self, secs: u64) -> RouteSpec {
        self.timeout = Some(secs);
        self
    }
}

/// What goes into the generated config.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    pub routes: Vec<RouteSpec>,
    pub issuer: String,
    pub jwt_ttl: u64,
    pub jwt_leeway: u64,
    pub realm: String,
    pub otk_ttl: u64,
    pub connect_timeout: u64,
    pub upstream_timeout: u64,
    pub login_max_failures: u32,
    /// `login.address_max_failures`.
    pub login_address_max_failures: u32,
    /// `login.max_concurrent_hashes`; `None`: left out (the number of cores).
    pub login_max_concurrent_hashes: Option<u32>,
    pub login_window: u64,
    pub login_lockout: u64,
    pub shutdown_grace: u64,
    /// Appended verbatim at the end of the file. It must start with a table
    /// header (the file otherwise ends inside the last `[[route]]`).
    pub extra_toml: String,
    /// `store.url`; `None`: an SQLite file in the gateway's temp dir.
    pub store_url: Option<String>,
    /// The JWT secret text; `None`: a fresh random one. Replicas share one.
    pub secret_text: Option<String>,
    /// Lines added inside `[upstream]` (e.g. `ca_file = "..."`), each ending
    /// with a newline.
    pub upstream_extra_toml: String,
    /// Leaves `jwt.secret_file` out of the config (asymmetric keys only).
    /// The secret file is still written.
    pub omit_secret_file: bool,
    /// `server.listen` (a fixed port when the config must name its own
    /// address, as an OIDC redirect_url does).
    pub listen: String,
}

impl GatewayOptions {
    /// `/` required, `/public` public, `/admin` needs role `admin`; all to `upstream`.
    pub fn new(upstream: &str) -> GatewayOptions {
        GatewayOptions {
            routes: vec![
                RouteSpec::required("/", upstream),
                RouteSpec::public("/public", upstream),
                RouteSpec::required("/admin", upstream).roles(&["admin"]),
            ],
            issuer: "authgate".to_string(),
            jwt_ttl: 604_800,
            jwt_leeway: 30,
            realm: "voximplant.com".to_string(),
            otk_ttl: 300,
            connect_timeout: 5,
            upstream_timeout: 30,
            // High so that tests with a few failed logins from 127.0.0.1 are
            // not throttled; the throttling test sets its own.
            login_max_failures: 1000,
            login_address_max_failures: 1000,
            login_max_concurrent_hashes: None,
            login_window: 300,
            login_lockout: 300,
            shutdown_grace: 10,
            extra_toml: String::new(),
            store_url: None,
            secret_text: None,
            upstream_extra_toml: String::new(),
            omit_secret_file: false,
            listen: "127.0.0.1:0".to_string(),
        }
    }

    pub fn render(&self, db_url: &str, secret_path: &Path) -> String {
        let mut s = format!(
            r#"[server]
listen = "{listen}"
shutdown_grace = {grace}

[store]
url = "{db_url}"

[jwt]
issuer = "{issuer}"
ttl = {ttl}
leeway = {leeway}
{secret_line}
[onetimekey]
realm = "{realm}"
ttl = {otk_ttl}

[upstream]
connect_timeout = {ct}
timeout = {ut}
{upstream_extra}
[login]
max_failures = {mf}
address_max_failures = {amf}
{hashes_line}window = {lw}
lockout = {ll}
"#,
            listen = self.listen,
            grace = self.shutdown_grace,
            issuer = self.issuer,
            ttl = self.jwt_ttl,
            leeway = self.jwt_leeway,
            secret_line = if self.omit_secret_file {
                String::new()
            } else {
                format!("secret_file = \"{}\"\n", secret_path.display())
            },
            upstream_extra = self.upstream_extra_toml,
            realm = self.realm,
            otk_ttl = self.otk_ttl,
            ct = self.connect_timeout,
            ut = self.upstream_timeout,
            mf = self.login_max_failures,
            amf = self.login_address_max_failures,
            hashes_line = self
                .login_max_concurrent_hashes
                .map(|n| format!("max_concurrent_hashes = {n}\n"))
                .unwrap_or_default(),
            lw = self.login_window,
            ll = self.login_lockout,
        );
        for r in &self.routes {
            let roles = r
                .roles
                .iter()
                .map(|x| format!("\"{x}\""))
                .collect::<Vec<_>>()
                .join(", ");
            s.push_str(&format!(
                "\n[[route]]\npath_prefix = \"{}\"\nupstream = \"{}\"\nauth = \"{}\"\nroles = [{}]\n",
                r.path_prefix, r.upstream, r.auth, roles
            ));
            if let Some(t) = r.timeout {
                s.push_str(&format!("timeout = {t}\n"));
            }
        }
        if !self.extra_toml.is_empty() {
            s.push('\n');
            s.push_str(&self.extra_toml);
            s.push('\n');
        }
        s
    }
}

/// The real `authgate` binary, serving a config in its own temporary directory.
pub struct Gateway {
    dir: TempDir,
    config_path: PathBuf,
    secret: Vec<u8>,
    opts: GatewayOptions,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    cli_log: Arc<Mutex<String>>,
    cli_debug: std::sync::atomic::AtomicBool,
    addr: Option<SocketAddr>,
}

impl Gateway {
    /// Default routes to `upstream`, started and listening.
    pub async fn start(upstream: &Upstream) -> Gateway {
        Gateway::start_with(GatewayOptions::new(&upstream.url())).await
    }

    pub async fn start_with(opts: GatewayOptions) -> Gateway {
        let mut gw = Gateway::prepare(opts);
        gw.spawn().await;
        gw
    }

    /// Writes the secret and the config but starts nothing (for CLI-only use).
    pub fn prepare(opts: GatewayOptions) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("authgate-test-")
            .tempdir()
            .expect("create temp dir");
        let root = dir.path().canonicalize().expect("canonicalize temp dir");
        let secret_path = root.join("jwt.secret");
        let secret = opts.secret_text.clone().unwrap_or_else(random_secret_text);
        std::fs::write(&secret_path, format!("{secret}\n")).expect("write jwt secret");
        let db_url = opts
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", root.join("authgate.db").display()));
        let config_path = root.join("authgate.toml");
        std::fs::write(&config_path, opts.render(&db_url, &secret_path)).expect("write config");
        Gateway {
            dir,
            config_path,
            secret: secret.into_bytes(),
            opts,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            cli_log: Arc::new(Mutex::new(String::new())),
            cli_debug: std::sync::atomic::AtomicBool::new(false),
            addr: None,
        }
    }

    /// Starts `authgate serve` and waits for its `listening on http://` line.
    pub async fn spawn(&mut self) {
        let command = self.serve_command(None);
        self.spawn_command(command).await;
    }

    /// Like [`Gateway::spawn`], but through `bash -c "<prelude>; exec ..."`,
    /// e.g. to set resource limits or drop privileges first.
    pub async fn spawn_with_prelude(&mut self, prelude: &str) {
        let command = self.serve_command(Some(prelude));
        self.spawn_command(command).await;
    }

    /// `authgate serve --config <this config>` in the gateway's directory,
    /// with debug logs; through `bash -c "<prelude>; exec ..."` when given.
    pub fn serve_command(&self, prelude: Option<&str>) -> Command {
        let mut command = match prelude {
            None => Command::new(BIN),
            Some(prelude) => {
                let mut command = Command::new("bash");
                command
                    .arg("-c")
                    .arg(format!("{prelude}\nexec \"$0\" \"$@\""))
                    .arg(BIN);
                command
            }
        };
        command
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .env("AUTHGATE_LOG", "debug")
            .env("NO_COLOR", "1")
            .env_remove("AUTHGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    async fn spawn_command(&mut self, mut command: Command) {
        assert!(self.child.is_none(), "gateway already running");
        let start_offset = {
            let mut log = self.log.lock().unwrap();
            log.push_str("=== authgate serve starting ===\n");
            log.len()
        };
        let mut child = command.spawn().expect("spawn authgate serve");
        pump_lines(child.stderr.take().expect("stderr"), self.log.clone());
        pump_lines(child.stdout.take().expect("stdout"), self.log.clone());
        self.child = Some(child);

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let found = {
                let log = self.log.lock().unwrap();
                parse_listening(&log[start_offset..])
            };
            if let Some(addr) = found {
                self.addr = Some(addr);
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                // Give the reader threads a moment to drain.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "authgate serve exited with {status} before listening; log:\n{}",
                    self.logs()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "authgate serve printed no `listening on http://` line within {:?}; log:\n{}",
                    STARTUP_TIMEOUT,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `http://127.0.0.1:PORT` of the running process.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr.expect("gateway not started"))
    }

    /// `base_url() + path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base_url(), path_and_query)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("gateway not started")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The HS256 key: the secret file's bytes without the trailing newline.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    pub fn options(&self) -> &GatewayOptions {
        &self.opts
    }

    /// Runs CLI commands with `AUTHGATE_LOG=debug` from now on (default: the
    /// CLI's own default level, as an operator would run it).
    pub fn cli_debug_logs(&self, on: bool) {
        self.cli_debug
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Runs `authgate --config <this config> ARGS...`, feeding `stdin` if given.
    pub async fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut full: Vec<String> = vec![
            "--config".to_string(),
            self.config_path.display().to_string(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        let mut envs = Vec::new();
        if self.cli_debug.load(std::sync::atomic::Ordering::SeqCst) {
            envs.push(("AUTHGATE_LOG".to_string(), "debug".to_string()));
        }
        let out = run_bin(self.dir.path(), full, stdin.map(str::to_string), envs).await;
        let mut log = self.cli_log.lock().unwrap();
        log.push_str(&format!("=== authgate {} ===\n", args.join(" ")));
        log.push_str(&String::from_utf8_lossy(&out.stderr));
        out
    }

    /// `cli` that must succeed; returns stdout.
    pub async fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.cli(args, stdin).await;
        assert!(
            out.status.success(),
            "`authgate {}` failed with {}\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("CLI stdout is UTF-8")
    }

    /// `user add NAME --password-stdin [--role R]...`
    pub async fn add_user(&self, name: &str, password: &str, roles: &[&str]) {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        for r in roles {
            args.push("--role");
            args.push(r);
        }
        let out = self.cli_ok(&args, Some(&format!("{password}\n"))).await;
        assert_eq!(
            out.trim(),
            format!("created user {name}"),
            "unexpected `user add` output"
        );
    }

    /// `token issue --user NAME`: the JWT alone.
    pub async fn issue_token(&self, name: &str) -> String {
        let out = self.cli_ok(&["token", "issue", "--user", name], None).await;
        let token = out.trim().to_string();
        assert_eq!(
            token.split('.').count(),
            3,
            "`token issue` must print only a JWT, got {out:?}"
        );
        token
    }

    /// `key create --user NAME`: (id, key).
    pub async fn create_key_cli(&self, user: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["key", "create", "--user", user];
        args.extend_from_slice(extra);
        let out = self.cli_ok(&args, None).await;
        parse_key_create(&out)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 authgate");
            let status = child.wait().expect("reap authgate");
            self.log
                .lock()
                .unwrap()
                .push_str(&format!("=== killed with SIGKILL: {status} ===\n"));
        }
        self.addr = None;
    }

    /// Sends SIGTERM; the process keeps running until it exits on its own.
    pub fn sigterm(&self) {
        let child = self.child.as_ref().expect("gateway not running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: sending a signal to our own child process, which we have not reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// Waits for the process to exit; `None` on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("gateway not running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                self.addr = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A new process on the same directory, config and store.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
        self.spawn().await;
    }

    /// Everything the gateway process(es) wrote to stderr and stdout so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Everything CLI invocations wrote to stderr so far.
    pub fn cli_logs(&self) -> String {
        self.cli_log.lock().unwrap().clone()
    }

    /// How often `needle` occurs in the gateway's log so far.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log.lock().unwrap().matches(needle).count()
    }

    /// Waits until `needle` occurs at least `n` times in the log.
    pub async fn wait_for_log(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_count(needle) >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `https://` listener of the running process, from its
    /// `listening on https://` line (waits for the line to be logged).
    pub async fn https_addr(&self) -> SocketAddr {
        const MARK: &str = "listening on https://";
        const START: &str = "=== authgate serve starting ===";
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = {
                let log = self.log.lock().unwrap();
                let from = log.rfind(START).unwrap_or(0);
                let log = &log[from..];
                log.find(MARK).and_then(|at| {
                    let rest = &log[at + MARK.len()..];
                    let end = rest
                        .find(|c: char| {
                            !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
                        })
                        .unwrap_or(rest.len());
                    rest[..end].parse::<SocketAddr>().ok()
                })
            };
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no `listening on https://` line; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id of the running gateway.
    pub fn pid(&self) -> libc::pid_t {
        let child = self.child.as_ref().expect("gateway not running");
        libc::pid_t::try_from(child.id()).expect("pid fits pid_t")
    }

    /// Sends SIGHUP (reload the config).
    pub fn sighup(&self) {
        let pid = self.pid();
        // SAFETY: sending a signal to our own child process, which we have not reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill(SIGHUP) failed");
    }

    /// `store.url` as written into the config.
    pub fn db_url(&self) -> String {
        self.opts.store_url.clone().unwrap_or_else(|| {
            let root = self
                .dir
                .path()
                .canonicalize()
                .expect("canonicalize temp dir");
            format!("sqlite://{}", root.join("authgate.db").display())
        })
    }

    /// The config `opts` would give, with this gateway's store and secret file.
    pub fn render_config(&self, opts: &GatewayOptions) -> String {
        let root = self
            .dir
            .path()
            .canonicalize()
            .expect("canonicalize temp dir");
        opts.render(&self.db_url(), &root.join("jwt.secret"))
    }

    /// Rewrites the config file from `opts` (store and secret unchanged);
    /// takes effect on `restart` or `sighup`.
    pub fn set_options(&mut self, opts: GatewayOptions) {
        let text = self.render_config(&opts);
        self.write_config(&text);
        self.opts = opts;
    }

    /// Replaces the config file with `text` at once (write, then rename).
    pub fn write_config(&self, text: &str) {
        let tmp = self.config_path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the binary with explicit args (no implicit `--config`), in `cwd`,
/// with `AUTHGATE_LOG` and `AUTHGATE_CONFIG` unset unless `envs` sets them.
pub async fn run_bin(
    cwd: &Path,
    args: Vec<String>,
    stdin: Option<String>,
    envs: Vec<(String, String)>,
) -> Output {
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .current_dir(&cwd)
            .env_remove("AUTHGATE_LOG")
            .env("NO_COLOR", "1")
            .env_remove("AUTHGATE_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        for (k, v) in &envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn authgate CLI");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            // The CLI may exit before reading (bad input); ignore EPIPE.
            let _ = pipe.write_all(input.as_bytes());
        }
        child.wait_with_output().expect("wait for authgate CLI")
    })
    .await
    .expect("CLI task")
}

fn pump_lines<R: Read + Send + 'static>(reader: R, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let mut log = sink.lock().unwrap();
                    log.push_str(&text);
                    if !text.ends_with('\n') {
                        log.push('\n');
                    }
                }
            }
        }
    });
}

fn parse_listening(log: &str) -> Option<SocketAddr> {
    const MARK: &str = "listening on http://";
    let at = log.find(MARK)?;
    let rest = &log[at + MARK.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Parses `id: <uuid>` and `key: ag_...` from `key create` output.
pub fn parse_key_create(out: &str) -> (String, String) {
    let mut id = None;
    let mut key = None;
    for line in out.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.trim().to_string());
        }
        if let Some(v) = line.strip_prefix("key: ") {
            key = Some(v.trim().to_string());
        }
    }
    (
        id.unwrap_or_else(|| panic!("no `id: ` line in {out:?}")),
        key.unwrap_or_else(|| panic!("no `key: ` line in {out:?}")),
    )
}

// ---------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------

/// No redirects, no proxies, no cookie store (cookies are set by hand).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("build reqwest client")
}

/// A fully read response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub async fn from(resp: reqwest::Response) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("read response body").to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}, body {:?}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// Asserts the status, printing the body when it differs.
    pub fn expect_status(&self, status: u16) -> &Resp {
        assert_eq!(
            self.status,
            status,
            "expected HTTP {status}, got {} with body {:?}",
            self.status,
            self.text()
        );
        self
    }

    /// Asserts the contract's error envelope, exactly, and returns it.
    pub fn expect_error(&self, http: u16, status: &str, reason: &str) -> Value {
        self.expect_status(http);
        let v = self.json();
        let obj = v.as_object().expect("error body is an object");
        assert_eq!(
            obj.keys().collect::<Vec<_>>(),
            vec!["error"],
            "envelope must hold only `error`: {v}"
        );
        let err = v["error"].as_object().expect("`error` is an object");
        let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            vec!["message", "reason", "request_id", "status"],
            "error object keys: {v}"
        );
        assert_eq!(v["error"]["status"], status, "error.status in {v}");
        assert_eq!(v["error"]["reason"], reason, "error.reason in {v}");
        let message = v["error"]["message"].as_str().expect("message is a string");
        assert!(!message.trim().is_empty(), "empty error.message in {v}");
        let rid = v["error"]["request_id"]
            .as_str()
            .expect("request_id is a string");
        assert!(!rid.is_empty(), "empty error.request_id in {v}");
        assert_eq!(
            self.header("x-request-id").as_deref(),
            Some(rid),
            "X-Request-Id header must match error.request_id"
        );
        v
    }

    /// Asserts a 401 with `WWW-Authenticate: Bearer realm="authgate"...`.
    pub fn expect_401(&self, reason: &str) -> Value {
        let v = self.expect_error(401, "UNAUTHENTICATED", reason);
        let www = self
            .header("www-authenticate")
            .expect("401 must carry WWW-Authenticate");
        assert!(
            www.starts_with(r#"Bearer realm="authgate""#),
            "WWW-Authenticate: {www}"
        );
        v
    }

    /// A 401 for a presented-but-bad credential: `error="invalid_token"` too.
    pub fn expect_invalid_token(&self) -> Value {
        let v = self.expect_401("INVALID_CREDENTIALS");
        let www = self.header("www-authenticate").unwrap();
        assert!(
            www.contains(r#"error="invalid_token""#),
            "WWW-Authenticate for a bad token must carry error=\"invalid_token\": {www}"
        );
        v
    }
}

/// GET with optional `Authorization: Bearer` and extra headers.
pub async fn get(url: &str, bearer: Option<&str>, headers: &[(&str, &str)]) -> Resp {
    let mut req = client().get(url);
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Resp::from(req.send().await.expect("send GET")).await
}

/// POST a JSON value with optional Bearer.
pub async fn post_json(url: &str, bearer: Option<&str>, body: &Value) -> Resp {
    let mut req = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    Resp::from(req.send().await.expect("send POST")).await
}

/// POST raw bytes as `application/json`.
pub async fn post_raw(url: &str, body: &str) -> Resp {
    let req = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    Resp::from(req.send().await.expect("send POST")).await
}

/// A request with any method, JSON body and headers.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    json_body: Option<&Value>,
) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = json_body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    Resp::from(req.send().await.expect("send request")).await
}

/// `POST /auth/login`.
pub async fn login(gw: &Gateway, user: &str, password: &str) -> Resp {
    post_json(
        &gw.url("/auth/login"),
        None,
        &json!({ "username": user, "password": password }),
    )
    .await
}

/// `POST /auth/login` that must succeed; returns the token.
pub async fn login_ok(gw: &Gateway, user: &str, password: &str) -> String {
    let r = login(gw, user, password).await;
    r.expect_status(200);
    let v = r.json();
    assert_eq!(v["username"], user);
    v["token"].as_str().expect("token is a string").to_string()
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub async fn poll_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1, for headers a client library might rewrite
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Secrets, tokens, digests
// ---------------------------------------------------------------------------

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("getrandom");
    buf
}

/// 48 random bytes written as text (base64url, 64 characters).
pub fn random_secret_text() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(48))
}

/// A unique, recognisable name for users, keys, passwords.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(random_bytes(6)))
}

pub fn random_password() -> String {
    format!("Pw-{}", URL_SAFE_NO_PAD.encode(random_bytes(18)))
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn md5_hex(data: &str) -> String {
    hex::encode(Md5::digest(data.as_bytes()))
}

/// The one-time-key answer, computed independently of the gateway:
/// md5hex(key + "|" + md5hex(user + ":" + realm + ":" + password)).
pub fn otk_answer(key: &str, user: &str, realm: &str, password: &str) -> String {
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    md5_hex(&format!("{key}|{ha1}"))
}

/// The JWT's header and payload, decoded without verification.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let h = it.next().expect("JWT header");
    let p = it.next().expect("JWT payload");
    let dec = |s: &str| -> Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .expect("JWT segment is base64url");
        serde_json::from_slice(&bytes).expect("JWT segment is JSON")
    };
    (dec(h), dec(p))
}

pub fn jwt_claims(token: &str) -> Value {
    jwt_parts(token).1
}

/// Signs `claims` with `alg` (HMAC family) and `secret`.
pub fn sign_hmac(alg: jsonwebtoken::Algorithm, claims: &Value, secret: &[u8]) -> String {
    let header = jsonwebtoken::Header::new(alg);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign JWT")
}

pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    sign_hmac(jsonwebtoken::Algorithm::HS256, claims, secret)
}

/// `claims` under a raw JSON `header` (kept byte for byte, so it may hold
/// members `jsonwebtoken::Header` cannot express), correctly signed with
/// `key` and `alg`.
pub fn sign_raw_header(
    header: &str,
    claims: &Value,
    key: &jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign test token");
    format!("{message}.{signature}")
}

/// `crit` members (with the rest of a header after them) that must make a
/// correctly signed token fail: RFC 7515 §4.1.11, no extension is understood.
pub const CRIT_MEMBERS: [&str; 6] = [
    r#""crit":["x-unknown"],"x-unknown":true"#,
    r#""crit":["exp"]"#,
    r#""crit":[]"#,
    r#""crit":"x-unknown""#,
    r#""crit":null"#,
    r#""crit":["x-unknown"]"#,
];

/// `{"alg": alg_name, "typ":"JWT"}.payload.` with an empty signature.
pub fn unsigned_token(alg_name: &str, claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(json!({ "alg": alg_name, "typ": "JWT" }).to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{h}.{p}.")
}

/// Changes one character in the middle of the signature (not the last one,
/// whose low bits may be padding).
pub fn tamper_signature(token: &str) -> String {
    let (rest, sig) = token.rsplit_once('.').expect("JWT has a signature");
    let mut chars: Vec<char> = sig.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    format!("{rest}.{}", chars.into_iter().collect::<String>())
}

/// Splits an `X-Auth-Roles` value into a sorted list (empty value → empty list).
pub fn roles_of(value: &str) -> Vec<String> {
    let mut v: Vec<String> = value
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    v
}

/// Deterministic pseudo-random bytes (xorshift), cheap to make in bulk.
pub fn pseudo_random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Writes `text` as a config file named `name` in `dir`; returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("create parent dir");
    }
    std::fs::write(&p, text).expect("write file");
    p
}

/// Output as text: stdout and stderr joined, for messages.
pub fn out_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, checked by shape and ranges.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(99);
    if !(digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    if !((1..=12).contains(&num(5..7))
        && (1..=31).contains(&num(8..10))
        && num(11..13) < 24
        && num(14..16) < 60
        && num(17..19) <= 60)
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        "Z" | "z" => true,
        off => {
            let o = off.as_bytes();
            o.len() == 6
                && matches!(o[0], b'+' | b'-')
                && o[1..3].iter().all(u8::is_ascii_digit)
                && o[3] == b':'
                && o[4..6].iter().all(u8::is_ascii_digit)
        }
    }
}

/// RFC 3339 in UTC (`Z` or `+00:00`).
pub fn is_rfc3339_utc(s: &str) -> bool {
    is_rfc3339(s) && (s.ends_with('Z') || s.ends_with('z') || s.ends_with("+00:00"))
}
