//! Header hygiene (issue 22 items 4, 9, 10 and 11) against the real
//! components that read the headers:
//! - Express 5 with the `method-override` npm package: a key scoped to GET
//!   and POST must not run Express's DELETE handler;
//! - Werkzeug's `ProxyFix` under Werkzeug's WSGI server (Flask): client-sent
//!   `X-Forwarded-Port` / `-Prefix` & co. must not shape the URLs it builds,
//!   and a `Cookie` header with a non-ASCII byte must hide no `token`
//!   cookie from the gateway (Werkzeug parses it all the same);
//! - nginx `proxy_cache` in front of the gateway: one caller's answer is
//!   never served to another.
//!
//! The servers come from `tests/upstreams/setup.sh` and Debian's
//! nginx-light (`.ci/run`).

mod common;
#[path = "forward_auth/front.rs"]
#[allow(dead_code)]
mod front;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pyserver::{PyServer, upstreams_dir, venv_program};
use common::*;
use serde_json::Value;

/// Express with `method-override`, straight on an ephemeral port.
async fn express() -> PyServer {
    let modules = upstreams_dir().join("node/node_modules");
    assert!(
        modules.join("method-override").is_dir(),
        "run `bash tests/upstreams/setup.sh` first ({} lacks method-override)",
        modules.display()
    );
    PyServer::start(
        Path::new("node"),
        &["express_method_override.js", "{port}"],
        &[("NODE_PATH", modules.to_str().expect("UTF-8 path"))],
    )
    .await
}

/// Werkzeug's server running a Flask app behind `ProxyFix`.
async fn werkzeug() -> Option<PyServer> {
    let python = venv_program("python")?;
    Some(PyServer::start(&python, &["werkzeug_proxyfix.py", "{port}"], &[]).await)
}

fn key_cookie(key: &str) -> String {
    format!("accesskey={key}")
}

// ---------------------------------------------------------------------------
// Item 4: method override
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_get_post_key_never_runs_expresss_delete_handler_through_method_override() {
    let app = express().await;
    let gw = Gateway::start_with(GatewayOptions::new(&app.url())).await;
    gw.add_user("alice", &random_password(), &["dev"]).await;
    let (_, get_post) = gw
        .create_key_cli("alice", &["--method", "GET", "--method", "POST"])
        .await;
    let (_, with_delete) = gw
        .create_key_cli(
            "alice",
            &["--method", "GET", "--method", "POST", "--method", "DELETE"],
        )
        .await;
    let overrides = [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ];

    // Straight to Express, each override turns the POST into a DELETE: the
    // middleware really reads them.
    let direct = format!("{}/things/1", app.url());
    for name in overrides {
        let r = request("POST", &direct, &[(name, "DELETE")], None).await;
        assert_eq!(r.json()["handler"], "DELETE", "{name} straight to Express");
    }
    let r = request("POST", &format!("{direct}?_method=DELETE"), &[], None).await;
    assert_eq!(r.json()["handler"], "DELETE");

    // Through the gateway the override headers are gone: Express runs POST.
    let cookie = key_cookie(&get_post);
    for name in overrides {
        for spelling in [name.to_owned(), name.replace('-', "_")] {
            let r = request(
                "POST",
                &gw.url("/things/1"),
                &[(spelling.as_str(), "DELETE"), ("cookie", &cookie)],
                None,
            )
            .await;
            r.expect_status(200);
            assert_eq!(r.json()["handler"], "POST", "{spelling} reached Express");
            assert_eq!(r.json()["user"], "alice");
        }
    }
    // `?_method=` is another reading of the method: the key must allow it.
    for query in [
        "_method=DELETE",
        "_method=delete",
        "%5Fmethod=DELETE",
        "a=1&_method=PUT",
    ] {
        request(
            "POST",
            &gw.url(&format!("/things/1?{query}")),
            &[("cookie", &cookie)],
            None,
        )
        .await
        .expect_error(403, "PERMISSION_DENIED", "OUT_OF_SCOPE");
    }
    let r = request(
        "POST",
        &gw.url("/things/1?_method=POST"),
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(r.json()["handler"], "POST");
    // A key that may DELETE may do it this way too.
    let r = request(
        "POST",
        &gw.url("/things/1?_method=DELETE"),
        &[("cookie", &key_cookie(&with_delete))],
        None,
    )
    .await;
    r.expect_status(200);
    assert_eq!(r.json()["handler"], "DELETE");
}

// ---------------------------------------------------------------------------
// Item 10: origin headers and Werkzeug's ProxyFix
// ---------------------------------------------------------------------------

/// Every client claim about where the request came from or went to.
const HOSTILE_ORIGIN: [(&str, &str); 12] = [
    ("x-forwarded-port", "31337"),
    ("x-forwarded-prefix", "/evil"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-server", "evil.example"),
    ("x-forwarded-ssl", "on"),
    ("x-forwarded-scheme", "https"),
    ("x_forwarded_port", "31337"),
    ("forwarded", "for=6.6.6.6;host=evil.example;proto=https"),
    ("x-real-ip", "6.6.6.6"),
    ("front-end-https", "on"),
];

#[tokio::test]
async fn client_forwarded_port_and_prefix_never_reach_werkzeug_proxyfix() {
    let Some(app) = werkzeug().await else { return };
    let gw = Gateway::start_with(GatewayOptions::new(&app.url())).await;
    gw.add_user("alice", &random_password(), &["dev"]).await;
    let alice = gw.issue_token("alice").await;

    // Straight, ProxyFix believes them: the component really reads them.
    let r = get(&format!("{}/public/x", app.url()), None, &HOSTILE_ORIGIN).await;
    let direct = r.json();
    assert!(
        direct["url"].as_str().is_some_and(|u| u.contains(":31337")),
        "{direct}"
    );
    assert_eq!(direct["script_root"], "/evil");

    let here = gw.addr().to_string();
    for (path, bearer) in [("/public/x", None), ("/api/x", Some(alice.as_str()))] {
        let r = get(&gw.url(path), bearer, &HOSTILE_ORIGIN).await;
        r.expect_status(200);
        let seen = r.json();
        assert_eq!(
            seen["url"],
            Value::from(format!("http://{here}{path}")),
            "{path}: {seen}"
        );
        assert_eq!(seen["host"], Value::from(here.clone()), "{seen}");
        assert_eq!(seen["script_root"], "", "{seen}");
        assert_eq!(
            seen["link"],
            Value::from(format!("http://{here}/next")),
            "{seen}"
        );
        assert_eq!(seen["remote_addr"], "127.0.0.1", "{seen}");
    }
}

// ---------------------------------------------------------------------------
// Item 9: cookies read as bytes, with Werkzeug reading them too
// ---------------------------------------------------------------------------

/// A `Cookie` header with one obs-text byte (Latin-1 é) before `token=`.
fn cookie_with_obs_text(token: &str) -> reqwest::header::HeaderValue {
    let mut bytes = b"theme=caf\xe9; token=".to_vec();
    bytes.extend_from_slice(token.as_bytes());
    bytes.extend_from_slice(b"; lang=en");
    reqwest::header::HeaderValue::from_bytes(&bytes).expect("obs-text is a valid value")
}

async fn with_cookie(
    url: &str,
    cookie: reqwest::header::HeaderValue,
    bearer: Option<&str>,
) -> Resp {
    let mut req = client().get(url).header(reqwest::header::COOKIE, cookie);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    Resp::from(req.send().await.expect("send")).await
}

#[tokio::test]
async fn a_non_ascii_cookie_byte_hides_no_token_cookie_from_the_gateway() {
    let Some(app) = werkzeug().await else { return };
    let gw = Gateway::start_with(GatewayOptions::new(&app.url())).await;
    gw.add_user("alice", &random_password(), &["dev"]).await;
    gw.add_user("root", &random_password(), &["admin"]).await;
    let alice = gw.issue_token("alice").await;
    let root = gw.issue_token("root").await;

    // Straight, Werkzeug parses the token cookie out of that header.
    let r = with_cookie(
        &format!("{}/x", app.url()),
        cookie_with_obs_text(&alice),
        None,
    )
    .await;
    assert_eq!(r.json()["cookies"]["token"], Value::from(alice.clone()));

    // The cookie is a credential: alone it authenticates, and it is stripped
    // while the other cookies go on.
    let r = with_cookie(&gw.url("/x"), cookie_with_obs_text(&alice), None).await;
    r.expect_status(200);
    let seen = r.json();
    assert_eq!(seen["user"], "alice", "{seen}");
    assert!(seen["cookies"].get("token").is_none(), "{seen}");
    assert_eq!(seen["cookies"]["lang"], "en", "{seen}");
    assert!(seen["cookies"].get("theme").is_some(), "{seen}");
    // On a public route too: stripped.
    let r = with_cookie(&gw.url("/public/x"), cookie_with_obs_text(&alice), None).await;
    r.expect_status(200);
    assert!(r.json()["cookies"].get("token").is_none(), "{}", r.text());
    // Beside another credential it is a conflict.
    with_cookie(&gw.url("/x"), cookie_with_obs_text(&alice), Some(&root))
        .await
        .expect_error(400, "INVALID_ARGUMENT", "CONFLICTING_CREDENTIALS");
    // The same token twice is one credential.
    let r = with_cookie(&gw.url("/x"), cookie_with_obs_text(&alice), Some(&alice)).await;
    r.expect_status(200);
    assert!(r.json()["cookies"].get("token").is_none(), "{}", r.text());
}

// ---------------------------------------------------------------------------
// Item 11: a shared cache in front
// ---------------------------------------------------------------------------

/// How long nginx may take to listen.
const NGINX_STARTUP: Duration = Duration::from_secs(20);

/// nginx with `proxy_cache` in front of the gateway, caching every 200 for
/// ten minutes (the shape of a common "cache the API" setup); killed on drop.
struct CachingNginx {
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for CachingNginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl CachingNginx {
    async fn start(gateway: SocketAddr) -> CachingNginx {
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("authgate-cache-")
                .tempdir()
                .expect("temp dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("probe port")
                .port();
            let d = dir.path().display();
            let site = format!(
                "proxy_cache_path {d}/cache levels=1:2 keys_zone=shared:1m;\n\
                 server {{\n  listen 127.0.0.1:{port};\n  location / {{\n\
                 \x20   proxy_pass http://{gateway};\n\
                 \x20   proxy_cache shared;\n\
                 \x20   proxy_cache_valid 200 10m;\n\
                 \x20   add_header X-Cache-Status $upstream_cache_status always;\n  }}\n}}\n"
            );
            let include = dir.path().join("site.conf");
            std::fs::write(&include, site).expect("write site");
            let main = dir.path().join("nginx.conf");
            std::fs::write(&main, front::nginx_main_conf(dir.path(), &include))
                .expect("write conf");
            let child = Command::new(front::NGINX)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("front.log"))
                .arg("-c")
                .arg(&main)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nginx");
            let mut nginx = CachingNginx {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                child,
                dir,
            };
            let deadline = Instant::now() + NGINX_STARTUP;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = nginx.child.try_wait() {
                    break;
                }
                if tokio::net::TcpStream::connect(nginx.addr).await.is_ok() {
                    return nginx;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = nginx.child.kill();
        }
        panic!("nginx with proxy_cache did not start");
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("front.log")).unwrap_or_default()
    }
}

fn is_private_and_varies(r: &Resp) -> bool {
    let vary = r.header_all("vary").join(",").to_ascii_lowercase();
    let cache_control = r.header_all("cache-control").join(",").to_ascii_lowercase();
    vary.contains("authorization")
        && vary.contains("cookie")
        && (cache_control.contains("private") || cache_control.contains("no-store"))
}

#[tokio::test]
async fn nginx_proxy_cache_in_front_never_hands_one_callers_answer_to_another() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(GatewayOptions::new(&upstream.url())).await;
    gw.add_user("alice", &random_password(), &["dev"]).await;
    let alice = gw.issue_token("alice").await;
    let nginx = CachingNginx::start(gw.addr()).await;

    // Bearer and the token cookie, each followed by an anonymous
    // request for the same URL through the cache.
    let cookie = format!("token={alice}");
    for (path, bearer, headers) in [
        ("/data", Some(alice.as_str()), vec![]),
        ("/cookie-data", None, vec![("cookie", cookie.as_str())]),
    ] {
        let r = get(&nginx.url(path), bearer, &headers).await;
        assert_eq!(r.status, 200, "{}", nginx.logs());
        let before = upstream.count();
        let anonymous = get(&nginx.url(path), None, &[]).await;
        assert_eq!(
            anonymous.status,
            401,
            "{path}: the cache served alice's answer to an anonymous client (X-Cache-Status {:?})",
            anonymous.header("x-cache-status")
        );
        assert_eq!(upstream.count(), before);
        assert!(is_private_and_varies(&r), "{path}: {:?}", r.headers);
    }

    // Every answer to a request with a credential says so, the gateway's
    // own errors and verify decisions too.
    let bad = get(&gw.url("/data"), Some("not-a-token"), &[]).await;
    assert_eq!(bad.status, 401);
    assert!(is_private_and_varies(&bad), "{:?}", bad.headers);
    let verify = get(&gw.url("/_authgate/verify/data"), Some(&alice), &[]).await;
    verify.expect_status(200);
    assert!(is_private_and_varies(&verify), "{:?}", verify.headers);
    assert_eq!(verify.header("cache-control").as_deref(), Some("no-store"));
    // A verify refusal whose credential is in the judged query.
    let judged_query = request(
        "GET",
        &gw.url("/_authgate/verify"),
        &[("x-forwarded-uri", "/data?token=not-a-token")],
        None,
    )
    .await;
    assert_eq!(judged_query.status, 401);
    assert!(
        is_private_and_varies(&judged_query),
        "{:?}",
        judged_query.headers
    );
    // Anonymous answers on public routes are shared as before.
    let public = get(&gw.url("/public/p"), None, &[]).await;
    assert!(public.header("vary").is_none(), "{:?}", public.headers);
}
