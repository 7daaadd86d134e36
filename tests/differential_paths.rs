//! Route confusion, differentially: the same tricky paths sent straight to
//! real upstream servers (Express from npm, Flask from PyPI, embedded
//! Tomcat from Debian) and through the gateway in front of each. Whatever
//! handler an upstream routes a path to, the gateway must have held the
//! request to the rules the operator set for that handler's prefix.
//! (Also when the upstream is mounted under another prefix: `strip_prefix`
//! and `rewrite_prefix` setups below.)
//!
//! The servers come from `tests/upstreams/setup.sh` (run by
//! `scripts/test.sh`); without them this test fails and says how to get
//! them.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::pyserver::upstreams_dir;
use common::*;

/// One real upstream server, killed on drop.
struct RealUpstream {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    /// Scratch space the server may write to, removed with it.
    _scratch: tempfile::TempDir,
}

impl Drop for RealUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn app_file(name: &str) -> String {
    format!("{}/tests/upstreams/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Starts `command`, which prints `PORT <n>` once it listens.
async fn start(name: &'static str, command: Command) -> RealUpstream {
    let scratch = tempfile::tempdir().expect("scratch dir");
    start_in(name, command, scratch).await
}

/// As [`start`], with `scratch` kept (and removed) with the server.
async fn start_in(
    name: &'static str,
    mut command: Command,
    scratch: tempfile::TempDir,
) -> RealUpstream {
    let dir = upstreams_dir();
    let setup_hint = format!(
        "run `bash tests/upstreams/setup.sh` (it installs into {})",
        dir.display()
    );
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start the {name} upstream ({err}); {setup_hint}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    // Reads the port, then keeps draining so the server never blocks on a
    // full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("PORT ") {
                let _ = port_tx.send(port.trim().parse::<u16>().ok());
            }
        }
    });
    let port = tokio::task::spawn_blocking(move || port_rx.recv_timeout(Duration::from_secs(60)))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let mut upstream = RealUpstream {
        name,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        child,
        _scratch: scratch,
    };
    match port {
        Some(port) => upstream.addr.set_port(port),
        None => panic!("the {name} upstream did not start; {setup_hint}"),
    }
    upstream
}

async fn express() -> RealUpstream {
    let mut command = Command::new("node");
    command
        .arg(app_file("express_app.js"))
        .env("NODE_PATH", upstreams_dir().join("node/node_modules"));
    start("express", command).await
}

async fn flask() -> RealUpstream {
    let mut command = Command::new(upstreams_dir().join("venv/bin/python"));
    command.arg(app_file("flask_app.py"));
    start("flask", command).await
}

async fn tomcat() -> RealUpstream {
    let classpath = format!(
        "/usr/share/java/tomcat10-embed-core.jar:/usr/share/java/jakarta-annotation-api.jar:{}",
        upstreams_dir().join("tomcat").display()
    );
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut command = Command::new("java");
    command
        .args(["-Xmx128m", "-cp", &classpath, "TomcatApp"])
        .arg(scratch.path());
    start_in("tomcat", command, scratch).await
}

/// Paths built from the ways a server may read a segment: case, path
/// parameters, trailing dots, spaces and tildes, encodings, collapsed and
/// dot segments, for both the protected and the public prefix.
fn tricky_paths() -> Vec<String> {
    let mut paths = Vec::new();
    for name in ["admin", "public"] {
        let upper = name.to_ascii_uppercase();
        let title = format!("{}{}", &upper[..1], &name[1..]);
        let variants = [
            name.to_string(),
            upper.clone(),
            title,
            format!("{name};x"),
            format!("{name};"),
            format!("{name};jsessionid=1"),
            format!("{upper};x"),
            format!("{name}."),
            format!("{name}.."),
            format!("{name}%20"),
            format!("{name}~"),
            format!("{name}.;x"),
            format!("{name};x."),
            format!("{upper}.%20~"),
            format!("{name}%3bx"),
            format!("{name}%2e"),
            format!("{name}.json"),
            format!("%{:02x}{}", name.as_bytes()[0], &name[1..]),
            format!("%20/{name}"),
            format!("./{name}"),
            format!("/{name}"),
            format!("x/../{name}"),
            format!("x/..;/{name}"),
        ];
        for variant in variants {
            for suffix in ["", "/", "/stats", "/stats;x", "/stats/"] {
                paths.push(format!("/{variant}{suffix}"));
            }
        }
    }
    paths.push("/public/..;/admin/stats".to_string());
    paths.push("/public/%2e%2e/admin/stats".to_string());
    paths
}

/// Which handler served `path` when sent to `addr`: `None` when the
/// answer did not come from the upstream's handlers (a refusal).
async fn handler_at(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, Option<String>) {
    let authorization = bearer
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n");
    let response = raw_request(addr, &head, b"").await;
    let handler = response.header("x-upstream-handler").map(str::to_string);
    (response.status, handler)
}

/// A route table to put in front of an upstream, and which handlers each
/// kind of caller may reach through it.
struct Setup {
    label: &'static str,
    routes: fn(&str) -> Vec<RouteSpec>,
    /// More `[[route]]` tables (rewritten routes), in TOML.
    rewritten: fn(&str) -> String,
    /// What the gateway's paths start with: each tricky path is sent as
    /// `mount` followed by it, and a rewritten route hands it to the
    /// upstream without `mount`.
    mount: &'static str,
    /// Handlers reachable with no credential, as a user, as an admin.
    allowed: [&'static [&'static str]; 3],
}

/// No rewritten routes.
fn none(_: &str) -> String {
    String::new()
}

const SETUPS: [Setup; 4] = [
    Setup {
        label: "/ public, /admin needs role admin",
        rewritten: none,
        mount: "",
        routes: |upstream| {
            vec![
                RouteSpec::public("/", upstream),
                RouteSpec::required("/admin", upstream).roles(&["admin"]),
            ]
        },
        allowed: [
            &["root", "public"],
            &["root", "public"],
            &["root", "public", "admin"],
        ],
    },
    Setup {
        label: "/ required, /public public, /admin needs role admin",
        rewritten: none,
        mount: "",
        routes: |upstream| {
            vec![
                RouteSpec::required("/", upstream),
                RouteSpec::public("/public", upstream),
                RouteSpec::required("/admin", upstream).roles(&["admin"]),
            ]
        },
        allowed: [
            &["public"],
            &["root", "public"],
            &["root", "public", "admin"],
        ],
    },
    // The upstream mounted under /svc: the prefix stripped for it, and
    // its /admin held to the admin role as /svc/admin (rewritten to /admin).
    Setup {
        label: "/svc public (strip_prefix), /svc/admin needs role admin (rewrite_prefix /admin)",
        routes: |_| Vec::new(),
        rewritten: |upstream| {
            format!(
                "\n[[route]]\npath_prefix = \"/svc\"\nupstream = \"{upstream}\"\nauth = \"public\"\nstrip_prefix = true\n\
                 \n[[route]]\npath_prefix = \"/svc/admin\"\nupstream = \"{upstream}\"\nroles = [\"admin\"]\nrewrite_prefix = \"/admin\"\n"
            )
        },
        mount: "/svc",
        allowed: [
            &["root", "public"],
            &["root", "public"],
            &["root", "public", "admin"],
        ],
    },
    // The same with rewrite_prefix: /v1/x reaches the upstream as /x and
    // /v1/admin/x as /admin/x.
    Setup {
        label: "/v1 required (rewrite_prefix /), /v1/admin needs role admin (rewrite_prefix /admin)",
        routes: |_| Vec::new(),
        rewritten: |upstream| {
            format!(
                "\n[[route]]\npath_prefix = \"/v1\"\nupstream = \"{upstream}\"\nrewrite_prefix = \"/\"\n\
                 \n[[route]]\npath_prefix = \"/v1/admin\"\nupstream = \"{upstream}\"\nroles = [\"admin\"]\nrewrite_prefix = \"/admin\"\n"
            )
        },
        mount: "/v1",
        allowed: [&[], &["root", "public"], &["root", "public", "admin"]],
    },
];

async fn check_upstream(upstream: RealUpstream) {
    let url = format!("http://{}", upstream.addr);
    let paths = tricky_paths();

    // What the upstream itself makes of each path.
    let mut direct = Vec::new();
    for path in &paths {
        direct.push(handler_at(upstream.addr, path, None).await.1);
    }
    let read_as_admin: Vec<&String> = paths
        .iter()
        .zip(&direct)
        .filter(|(path, handler)| {
            handler.as_deref() == Some("admin")
                && !path.starts_with("/admin/")
                && **path != "/admin"
        })
        .map(|(path, _)| path)
        .collect();
    eprintln!(
        "{}: {} tricky paths, read as /admin by the upstream: {read_as_admin:?}",
        upstream.name,
        paths.len()
    );

    let mut failures = Vec::new();
    for setup in &SETUPS {
        let mut opts = GatewayOptions::new(&url);
        opts.routes = (setup.routes)(&url);
        opts.extra_toml = (setup.rewritten)(&url);
        let gw = Gateway::start_with(opts).await;
        gw.add_user("differential-user", "password-1234", &[]).await;
        gw.add_user("differential-admin", "password-1234", &["admin"])
            .await;
        let user = gw.issue_token("differential-user").await;
        let admin = gw.issue_token("differential-admin").await;
        let callers = [
            ("no credential", None),
            ("user", Some(user.as_str())),
            ("admin", Some(admin.as_str())),
        ];
        for (path, direct_handler) in paths.iter().zip(&direct) {
            let path = &format!("{}{path}", setup.mount);
            for (level, (caller, bearer)) in callers.iter().enumerate() {
                let (status, handler) = handler_at(gw.addr(), path, *bearer).await;
                let Some(handler) = handler else {
                    // Refused by the gateway (or by the upstream with no
                    // handler): nothing reached a handler.
                    continue;
                };
                if !setup.allowed[level].contains(&handler.as_str()) {
                    failures.push(format!(
                        "{}: [{}] {caller} reached the {handler} handler with {path} (status {status}; direct: {direct_handler:?})",
                        upstream.name, setup.label
                    ));
                }
            }
        }
        // Held, not broken: an admin still reaches /admin through the
        // spellings this upstream reads as /admin (or gets a clear 400).
        for path in &read_as_admin {
            let path = &format!("{}{path}", setup.mount);
            let (status, handler) = handler_at(gw.addr(), path, Some(&admin)).await;
            if !(handler.as_deref() == Some("admin") || status == 400) {
                failures.push(format!(
                    "{}: [{}] admin got {status} {handler:?} for {path}",
                    upstream.name, setup.label
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn express_routes_nothing_protected_past_the_gateway() {
    let upstream = express().await;
    check_upstream(upstream).await;
}

#[tokio::test]
async fn flask_routes_nothing_protected_past_the_gateway() {
    let upstream = flask().await;
    check_upstream(upstream).await;
}

#[tokio::test]
async fn tomcat_routes_nothing_protected_past_the_gateway() {
    let upstream = tomcat().await;
    check_upstream(upstream).await;
}

/// The differential test above is only as good as the upstreams' own
/// readings: Express must fold case and Tomcat must drop `;parameters`,
/// or the test proves nothing.
#[tokio::test]
async fn the_upstreams_really_read_paths_differently() {
    let express = express().await;
    assert_eq!(
        handler_at(express.addr, "/ADMIN/stats", None)
            .await
            .1
            .as_deref(),
        Some("admin")
    );
    let tomcat = tomcat().await;
    assert_eq!(
        handler_at(tomcat.addr, "/admin;x/stats", None)
            .await
            .1
            .as_deref(),
        Some("admin")
    );
    let flask = flask().await;
    assert_eq!(
        handler_at(flask.addr, "/PUBLIC/x", None).await.1.as_deref(),
        Some("root")
    );
}
