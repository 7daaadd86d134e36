//! `X-Auth-Assertion` (contract, "Identity for the upstream"): verified by
//! the documentation's own snippets running as real upstreams, PyJWT
//! (`docs/assertions/verify_assertion.py`) and Node's `jose`
//! (`docs/assertions/verify-assertion.mjs`), against the gateway's JWKS.

mod common;

use std::path::{Path, PathBuf};

use common::pyserver::{PyServer, upstreams_dir, venv_program};
use common::tls::jwt_key_pair;
use common::*;
use serde_json::Value;

fn docs(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/assertions")
        .join(file)
}

/// The two verifying upstreams, told where the gateway's JWKS is; `None`
/// (skipped) outside CI when the setup script has not installed them.
async fn verifiers(gateway_port: u16) -> Option<(PyServer, PyServer)> {
    let python = venv_program("python")?;
    let node_dir = upstreams_dir().join("node");
    if !node_dir.join("node_modules/jose").is_dir() {
        let hint = "jose is missing: run `bash tests/upstreams/setup.sh` first";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{hint}");
        eprintln!("skipped: {hint}");
        return None;
    }
    let jwks = format!("http://127.0.0.1:{gateway_port}/.well-known/jwks.json");
    let env = [
        ("AUTHGATE_JWKS_URL", jwks.as_str()),
        ("AUTHGATE_AUDIENCE", "orders-api"),
        ("AUTHGATE_ISSUER", "authgate"),
    ];
    let py_file = docs("verify_assertion.py");
    let py = PyServer::start(&python, &[py_file.to_str().unwrap(), "{port}"], &env).await;
    // An ES module finds `jose` only in a node_modules beside or above it.
    let mjs = node_dir.join("verify-assertion.mjs");
    std::fs::copy(docs("verify-assertion.mjs"), &mjs).expect("copy the Node snippet");
    let node = PyServer::start(Path::new("node"), &[mjs.to_str().unwrap(), "{port}"], &env).await;
    Some((py, node))
}

/// A gateway on `port` signing with an ES256 key, with `[assertion]`
/// (`assertion_extra` inside it) and routes to the verifiers and to a
/// recording upstream; and the folder of its key files.
async fn gateway(
    port: u16,
    py: &PyServer,
    node: &PyServer,
    recorder: &Upstream,
    assertion_extra: &str,
) -> (Gateway, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = jwt_key_pair(keys.path(), "signer", "ES256");
    let mut opts = GatewayOptions::new(&recorder.url());
    opts.listen = format!("127.0.0.1:{port}");
    opts.routes = vec![
        RouteSpec::required("/py", &py.url()),
        RouteSpec::required("/node", &node.url()),
        RouteSpec::required("/rec", &recorder.url()),
        RouteSpec::public("/public", &py.url()),
    ];
    opts.extra_toml = format!(
        "[[route]]\npath_prefix = \"/other\"\nupstream = \"{}\"\nauth = \"required\"\n\
         assertion_audience = \"billing-api\"\n\
         [[jwt.keys]]\nkid = \"gw-1\"\nalgorithm = \"ES256\"\nprivate_key = \"{}\"\npublic_key = \"{}\"\n\
         [assertion]\naudience = \"orders-api\"\n{assertion_extra}",
        py.url(),
        private.display(),
        public.display()
    );
    // The CLI reads the key files too: they live as long as the gateway.
    (Gateway::start_with(opts).await, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_node_upstreams_verify_assertions_and_nothing_else_passes_for_one() {
    let port = free_port();
    let Some((py, node)) = verifiers(port).await else {
        return;
    };
    let recorder = Upstream::start().await;
    let (gw, _keys) = gateway(port, &py, &node, &recorder, "").await;
    let user = unique("asr");
    gw.add_user(&user, &random_password(), &["ops"]).await;
    let token = gw.issue_token(&user).await;

    for path in ["/py/orders", "/node/orders"] {
        let answer = get(&gw.url(path), Some(&token), &[]).await;
        answer.expect_status(200);
        let claims = &answer.json()["claims"];
        assert_eq!(claims["sub"], Value::from(user.as_str()), "{path}");
        assert_eq!(claims["provider"], "local", "{path}");
        assert_eq!(claims["roles"], serde_json::json!(["ops"]), "{path}");
        assert_eq!(claims["aud"], "orders-api", "{path}");
        assert!(claims.get("htm").is_none(), "identity binding only");
    }

    // Another route's audience is refused by this upstream.
    let other = get(&gw.url("/other/x"), Some(&token), &[]).await;
    assert_eq!(other.status, 401, "{}", other.text());

    // A public route forwards no assertion, and a client-sent one never
    // reaches the upstream.
    get(&gw.url("/rec/x"), Some(&token), &[])
        .await
        .expect_status(200);
    let real = recorder
        .last()
        .header("x-auth-assertion")
        .expect("an assertion");
    let public = get(
        &gw.url("/public/x"),
        None,
        &[
            ("X-Auth-Assertion", real.as_str()),
            ("X_Auth_Assertion", real.as_str()),
        ],
    )
    .await;
    assert_eq!(public.status, 401);
    assert_eq!(public.json()["error"], "no X-Auth-Assertion");

    // An assertion is no login token (its `typ`), and a login token is no
    // assertion.
    get(&gw.url("/rec/x"), Some(&real), &[])
        .await
        .expect_status(401);
    let direct = get(
        &format!("{}/orders", py.url()),
        None,
        &[("X-Auth-Assertion", token.as_str())],
    )
    .await;
    assert_eq!(direct.status, 401, "{}", direct.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_binding_names_method_path_and_request_id() {
    let port = free_port();
    let Some((py, node)) = verifiers(port).await else {
        return;
    };
    let recorder = Upstream::start().await;
    let (gw, _keys) = gateway(port, &py, &node, &recorder, "bind = \"request\"\n").await;
    let user = unique("asb");
    gw.add_user(&user, &random_password(), &[]).await;
    let token = gw.issue_token(&user).await;

    for path in ["/py/orders/7", "/node/orders/7"] {
        let answer = get(
            &gw.url(&format!("{path}?page=2")),
            Some(&token),
            &[("X-Request-Id", "req-assertion-1")],
        )
        .await;
        answer.expect_status(200);
        let claims = &answer.json()["claims"];
        assert_eq!(claims["htm"], "GET");
        assert_eq!(
            claims["htu"],
            Value::from(path),
            "the path as forwarded, no query"
        );
        assert_eq!(claims["jti"], "req-assertion-1");
    }

    // Captured on the way to one request, no good for another.
    get(
        &gw.url("/rec/orders/7"),
        Some(&token),
        &[("X-Request-Id", "req-captured")],
    )
    .await
    .expect_status(200);
    let captured = recorder
        .last()
        .header("x-auth-assertion")
        .expect("an assertion");
    let replays = [
        ("DELETE", "/rec/orders/7", "req-captured", "another method"),
        ("GET", "/rec/orders/8", "req-captured", "another path"),
        ("GET", "/rec/orders/7", "req-other", "another request"),
    ];
    for (method, path, request_id, why) in replays {
        let replay = request(
            method,
            &format!("{}{path}", py.url()),
            &[
                ("X-Auth-Assertion", captured.as_str()),
                ("X-Request-Id", request_id),
            ],
            None,
        )
        .await;
        assert_eq!(replay.status, 401, "{method} {path}");
        assert!(
            replay.text().contains(why) || replay.text().contains("audience"),
            "{}",
            replay.text()
        );
    }
}

#[tokio::test]
async fn an_assertion_needs_an_asymmetric_signing_key() {
    let mut opts = GatewayOptions::new("http://127.0.0.1:9");
    opts.extra_toml = "[assertion]\naudience = \"orders-api\"\n".into();
    let gw = Gateway::prepare(opts);
    let out = gw.cli(&["check-config"], None).await;
    let text = out_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("assertion: needs an asymmetric signing key"),
        "{text}"
    );
}
