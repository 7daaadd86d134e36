//! The real `authgate` binary in a temporary directory: config generation,
//! start and stop, CLI runs, reading its log.

use super::*;

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
    /// `login.max_queued_hashes`; `None`: left out (the default, 64).
    pub login_max_queued_hashes: Option<u32>,
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
    /// Lines added inside `[server]`, each ending with a newline.
    pub server_extra_toml: String,
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
            login_max_queued_hashes: None,
            login_window: 300,
            login_lockout: 300,
            shutdown_grace: 10,
            extra_toml: String::new(),
            store_url: None,
            secret_text: None,
            upstream_extra_toml: String::new(),
            omit_secret_file: false,
            listen: "127.0.0.1:0".to_string(),
            server_extra_toml: String::new(),
        }
    }

    pub fn render(&self, db_url: &str, secret_path: &Path) -> String {
        let mut s = format!(
            r#"[server]
listen = "{listen}"
shutdown_grace = {grace}
{server_extra}
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
            server_extra = self.server_extra_toml,
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
                .into_iter()
                .chain(
                    self.login_max_queued_hashes
                        .map(|n| format!("max_queued_hashes = {n}\n")),
                )
                .collect::<String>(),
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
            // An empty upstream leaves the key out (a verify-only route).
            let upstream = if r.upstream.is_empty() {
                String::new()
            } else {
                format!("upstream = \"{}\"\n", r.upstream)
            };
            s.push_str(&format!(
                "\n[[route]]\npath_prefix = \"{}\"\n{upstream}auth = \"{}\"\nroles = [{}]\n",
                r.path_prefix, r.auth, roles
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
    /// The threads copying the process's stdout and stderr into `log`;
    /// they end when the process's pipes close.
    pumps: Vec<std::thread::JoinHandle<()>>,
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
            pumps: Vec::new(),
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
        self.pumps.retain(|pump| !pump.is_finished());
        self.pumps.push(pump_lines(
            child.stderr.take().expect("stderr"),
            self.log.clone(),
        ));
        self.pumps.push(pump_lines(
            child.stdout.take().expect("stdout"),
            self.log.clone(),
        ));
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
        assert!(
            send_signal(child.id(), libc::SIGTERM),
            "kill(SIGTERM) failed"
        );
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

    /// Stops the gateway with SIGTERM and returns once it has exited and
    /// everything it wrote is in [`Gateway::logs`] (its pipes closed and
    /// read to the end): nothing can be logged after this.
    pub async fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.sigterm();
        let status = self
            .wait_exit(timeout)
            .await
            .unwrap_or_else(|| panic!("the gateway did not exit within {timeout:?} of SIGTERM"));
        let pumps = std::mem::take(&mut self.pumps);
        tokio::task::spawn_blocking(move || {
            for pump in pumps {
                let _ = pump.join();
            }
        })
        .await
        .expect("join the log readers");
        status
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
        let child = self.child.as_ref().expect("gateway not running");
        assert!(send_signal(child.id(), libc::SIGHUP), "kill(SIGHUP) failed");
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

fn pump_lines<R: Read + Send + 'static>(
    reader: R,
    sink: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
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
    })
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
