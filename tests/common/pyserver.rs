//! Real Python upstream servers installed by `tests/upstreams/setup.sh`
//! (hypercorn, gunicorn) or shipped with Python (wsgiref), run as child
//! processes on an ephemeral port for one test.

use super::*;

/// Where `tests/upstreams/setup.sh` installs: `$AUTHGATE_UPSTREAMS`, else
/// `target/upstreams/` in the checkout.
pub fn upstreams_dir() -> PathBuf {
    match std::env::var_os("AUTHGATE_UPSTREAMS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/upstreams"),
    }
}

/// The apps the servers load (`tests/upstreams/*.py`).
pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstreams")
}

/// A program of the upstreams' virtual environment. Missing: the test
/// fails under CI (`CI=true`), which must have run the setup script, and is
/// skipped (`None`, with a note) elsewhere.
pub fn venv_program(name: &str) -> Option<PathBuf> {
    let path = upstreams_dir().join("venv/bin").join(name);
    if path.is_file() {
        return Some(path);
    }
    let hint = format!(
        "{} is missing: run `bash tests/upstreams/setup.sh` first",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{hint}");
    }
    eprintln!("skipped: {hint}");
    None
}

/// A Python server process; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct PyServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl PyServer {
    /// Starts `program args...` in [`apps_dir`] with `envs`, where `{port}`
    /// in an argument is a free port, and waits until it accepts
    /// connections. Its output goes to a log shown if it fails to start.
    pub async fn start(program: &Path, args: &[&str], envs: &[(&str, &str)]) -> PyServer {
        let dir = tempfile::Builder::new()
            .prefix("authgate-pyserver-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("server.log");
        let port = free_port();
        let args: Vec<String> = args
            .iter()
            .map(|arg| arg.replace("{port}", &port.to_string()))
            .collect();
        let out = std::fs::File::create(&log).expect("server log");
        let mut command = Command::new(program);
        command
            .args(&args)
            .current_dir(apps_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out);
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", program.display()));
        let mut server = PyServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(server.addr).await.is_ok() {
                return server;
            }
            let exited = server.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{} did not start ({exited:?}); log:\n{}",
                program.display(),
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the server printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        // SIGTERM first: gunicorn's master then stops its workers too.
        send_signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
