//! Real front proxies for forward-authentication tests: nginx
//! (`auth_request`) and Caddy (`forward_auth`), each running the guide's
//! own file from `deploy/forward-auth/` with the test's addresses, in a
//! temporary directory, on an ephemeral port. Killed (and reaped) on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::free_port;

/// Where Debian's `nginx-light` and `caddy` put the binaries.
pub const NGINX: &str = "/usr/sbin/nginx";
pub const CADDY: &str = "/usr/bin/caddy";

/// The addresses the guides are written for, replaced by the test's.
const GUIDE_AUTHGATE: &str = "127.0.0.1:8080";
const GUIDE_APP: &str = "127.0.0.1:9000";

/// How long a front proxy may take to listen.
const STARTUP: Duration = Duration::from_secs(20);

/// Which front proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Caddy,
}

/// A running front proxy.
pub struct FrontProxy {
    kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    dir: TempDir,
}

impl Drop for FrontProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FrontProxy {
    /// `http://ADDR` + `path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// The proxy's error log (nginx) or output (Caddy), for failure messages.
    pub fn logs(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("front.log")).unwrap_or_default();
        format!("({:?})\n{log}", self.kind)
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The guide file at `relative` (under `deploy/forward-auth/`) with the
/// test's addresses: each guide address must be there to be replaced.
fn guide_with(relative: &str, replacements: &[(&str, String)]) -> String {
    let path = repo_root().join("deploy/forward-auth").join(relative);
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    for (from, to) in replacements {
        assert!(text.contains(from), "{relative} must contain {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// Starts `kind` in front of `app`, asking `authgate`.
pub async fn start(kind: Kind, authgate: SocketAddr, app: SocketAddr) -> FrontProxy {
    // The port is probed, then bound by the proxy: another process may take
    // it in between, so a failed start is retried on a new port.
    let mut last_log = String::new();
    for _ in 0..5 {
        let dir = tempfile::Builder::new()
            .prefix("authgate-front-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = match kind {
            Kind::Nginx => spawn_nginx(dir.path(), port, authgate, app),
            Kind::Caddy => spawn_caddy(dir.path(), port, authgate, app),
        };
        let mut front = FrontProxy {
            kind,
            addr,
            child,
            dir,
        };
        if wait_listening(&mut front).await {
            return front;
        }
        last_log = front.logs();
    }
    panic!("{kind:?} did not start; last log:\n{last_log}");
}

async fn wait_listening(front: &mut FrontProxy) -> bool {
    let deadline = Instant::now() + STARTUP;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = front.child.try_wait() {
            return false;
        }
        if tokio::net::TcpStream::connect(front.addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The `nginx.conf` around the guide's file: one process in the
/// foreground (no worker outlives a killed master), every path in `dir`.
pub fn nginx_main_conf(dir: &Path, include: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/front.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           include {};\n}}\n",
        include.display()
    )
}

fn spawn_nginx(dir: &Path, port: u16, authgate: SocketAddr, app: SocketAddr) -> Child {
    let site = guide_with(
        "nginx/authgate.conf",
        &[
            (GUIDE_AUTHGATE, authgate.to_string()),
            (GUIDE_APP, app.to_string()),
            (
                "listen 127.0.0.1:8000;",
                format!("listen 127.0.0.1:{port};"),
            ),
        ],
    );
    let include = dir.join("authgate.conf");
    std::fs::write(&include, site).expect("write site conf");
    let main = dir.join("nginx.conf");
    std::fs::write(&main, nginx_main_conf(dir, &include)).expect("write nginx.conf");
    Command::new(NGINX)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("front.log"))
        .arg("-c")
        .arg(&main)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nginx")
}

/// Global options for a test Caddy: no admin endpoint, no HTTPS, no state
/// outside `dir`.
pub const CADDY_TEST_GLOBALS: &str = "{\n\tadmin off\n\tauto_https off\n}\n";

fn spawn_caddy(dir: &Path, port: u16, authgate: SocketAddr, app: SocketAddr) -> Child {
    let site = guide_with(
        "caddy/Caddyfile",
        &[
            (GUIDE_AUTHGATE, authgate.to_string()),
            (GUIDE_APP, app.to_string()),
            (":8000 {", format!("http://127.0.0.1:{port} {{")),
        ],
    );
    let caddyfile = dir.join("Caddyfile");
    std::fs::write(&caddyfile, format!("{CADDY_TEST_GLOBALS}{site}")).expect("write Caddyfile");
    let log = std::fs::File::create(dir.join("front.log")).expect("create caddy log");
    Command::new(CADDY)
        .arg("run")
        .arg("--config")
        .arg(&caddyfile)
        .arg("--adapter")
        .arg("caddyfile")
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env("XDG_DATA_HOME", dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn caddy")
}
