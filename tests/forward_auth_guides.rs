//! The forward-authentication guides' files (`deploy/forward-auth/`) are
//! valid for the software they are written for: the nginx file passes
//! `nginx -t` (in a temporary prefix), the Caddyfile `caddy validate`, and
//! every YAML file parses and wires authgate the way the guide says (the
//! verify endpoint, the four identity headers, the credential removed).
//! tests/forward_auth.rs runs the nginx and Caddy files for real; the
//! authgate config there passes check-config in tests/deploy_files.rs.

mod common;
#[path = "forward_auth/front.rs"]
#[allow(dead_code)]
mod front;

use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value as Yaml;

const IDENTITY_HEADERS: [&str; 4] = [
    "x-auth-user",
    "x-auth-roles",
    "x-auth-method",
    "x-auth-key-id",
];

/// The names authgate reads the judged request from: every guide sets or
/// clears each of them itself, or sends only an allow-list without them.
const JUDGED_HEADERS: [&str; 4] = [
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-original-uri",
    "x-original-method",
];

/// Whether `text` has a line `directive <name> ...` for `name`, any case.
fn has_directive(text: &str, directive: &str, name: &str) -> bool {
    text.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(directive)
            && words
                .next()
                .is_some_and(|word| word.eq_ignore_ascii_case(name))
    })
}

fn guide(relative: &str) -> PathBuf {
    front::repo_root()
        .join("deploy/forward-auth")
        .join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(guide(relative)).unwrap_or_else(|err| panic!("{relative}: {err}"))
}

fn documents(relative: &str) -> Vec<Yaml> {
    let text = read(relative);
    serde_norway::Deserializer::from_str(&text)
        .map(Yaml::deserialize)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|err| panic!("{relative}: YAML parse error: {err}"))
}

fn document<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|doc| doc.get("kind").and_then(Yaml::as_str) == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} document"))
}

/// Every string in a YAML value, lowercased, for "does it name X" checks.
fn strings(value: &Yaml, out: &mut Vec<String>) {
    match value {
        Yaml::String(text) => out.push(text.to_ascii_lowercase()),
        Yaml::Sequence(items) => items.iter().for_each(|item| strings(item, out)),
        Yaml::Mapping(map) => map.iter().for_each(|(key, item)| {
            strings(key, out);
            strings(item, out);
        }),
        Yaml::Tagged(tagged) => strings(&tagged.value, out),
        _ => {}
    }
}

fn names_every_identity_header(value: &Yaml, what: &str) {
    let mut all = Vec::new();
    strings(value, &mut all);
    for header in IDENTITY_HEADERS {
        assert!(all.iter().any(|s| s == header), "{what} must name {header}");
    }
}

fn at<'a>(value: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(value, |value, key| {
        value
            .get(key)
            .unwrap_or_else(|| panic!("missing {key} in path {path:?}"))
    })
}

#[test]
fn nginx_guide_passes_nginx_t() {
    let dir = tempfile::tempdir().expect("temp dir");
    let include = guide("nginx/authgate.conf");
    let main = dir.path().join("nginx.conf");
    std::fs::write(&main, front::nginx_main_conf(dir.path(), &include)).unwrap();
    let out = Command::new(front::NGINX)
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("front.log"))
        .arg("-c")
        .arg(&main)
        .output()
        .expect("run nginx -t");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx -t failed:\n{text}");
    assert!(text.contains("test is successful"), "{text}");
    let conf = read("nginx/authgate.conf");
    for needle in [
        "auth_request /_authgate_verify;",
        "proxy_pass http://authgate/_authgate/verify;",
        "proxy_set_header X-Original-URI $request_uri;",
        "proxy_set_header Authorization \"\";",
        "auth_request_set $authgate_key_id $upstream_http_x_auth_key_id;",
    ] {
        assert!(conf.contains(needle), "nginx guide lacks {needle:?}");
    }
    // The verify location sets or clears every judged header itself.
    let verify = conf
        .split("location = /_authgate_verify {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("the verify location");
    for name in JUDGED_HEADERS {
        assert!(
            has_directive(verify, "proxy_set_header", name),
            "the nginx verify location neither sets nor clears {name}"
        );
    }
}

#[test]
fn caddy_guide_passes_caddy_validate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let caddyfile = dir.path().join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!("{}{}", front::CADDY_TEST_GLOBALS, read("caddy/Caddyfile")),
    )
    .unwrap();
    let out = Command::new(front::CADDY)
        .arg("validate")
        .arg("--config")
        .arg(&caddyfile)
        .arg("--adapter")
        .arg("caddyfile")
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .expect("run caddy validate");
    assert!(
        out.status.success(),
        "caddy validate failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = read("caddy/Caddyfile");
    assert!(text.contains("forward_auth 127.0.0.1:8080"));
    assert!(text.contains("uri /_authgate/verify"));
    assert!(text.contains("request_header -Authorization"));
    // forward_auth sets X-Forwarded-Method and -Uri itself; the others are
    // removed from what it sends.
    for name in ["x-original-uri", "x-original-method"] {
        assert!(
            has_directive(&text, "header_up", &format!("-{name}")),
            "the Caddyfile does not clear {name}"
        );
    }
}

#[test]
fn ingress_nginx_guide_annotations() {
    let docs = documents("ingress-nginx/ingress.yaml");
    let ingress = document(&docs, "Ingress");
    let annotations = at(ingress, &["metadata", "annotations"]);
    let get = |key: &str| {
        annotations
            .get(format!("nginx.ingress.kubernetes.io/{key}"))
            .and_then(Yaml::as_str)
            .unwrap_or_else(|| panic!("annotation {key}"))
    };
    assert!(get("auth-url").contains("/_authgate/verify$request_uri"));
    let copied: Vec<String> = get("auth-response-headers")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    assert_eq!(copied, IDENTITY_HEADERS);
    assert!(get("configuration-snippet").contains("proxy_set_header Authorization \"\";"));
    // The controller sets X-Original-Method; the auth location clears the rest.
    for name in ["x-forwarded-uri", "x-forwarded-method", "x-original-uri"] {
        assert!(
            has_directive(get("auth-snippet"), "proxy_set_header", name),
            "auth-snippet does not clear {name}"
        );
    }
}

#[test]
fn traefik_guide_static_dynamic_and_crd() {
    let static_conf = &documents("traefik/traefik.yml")[0];
    assert!(
        at(static_conf, &["providers", "file", "filename"])
            .as_str()
            .is_some()
    );
    let dynamic = &documents("traefik/dynamic.yml")[0];
    let forward = at(dynamic, &["http", "middlewares", "authgate", "forwardAuth"]);
    assert!(
        at(forward, &["address"])
            .as_str()
            .is_some_and(|a| a.ends_with("/_authgate/verify"))
    );
    assert_eq!(at(forward, &["trustForwardHeader"]).as_bool(), Some(false));
    names_every_identity_header(at(forward, &["authResponseHeaders"]), "forwardAuth");
    let strip = at(
        dynamic,
        &[
            "http",
            "middlewares",
            "strip-credential",
            "headers",
            "customRequestHeaders",
        ],
    );
    assert_eq!(at(strip, &["Authorization"]).as_str(), Some(""));
    // forwardAuth sets X-Forwarded-Method and -Uri; the X-Original-* are
    // removed before it.
    let judged = at(
        dynamic,
        &[
            "http",
            "middlewares",
            "strip-judged-headers",
            "headers",
            "customRequestHeaders",
        ],
    );
    for name in ["X-Original-URI", "X-Original-Method"] {
        assert_eq!(at(judged, &[name]).as_str(), Some(""), "{name}");
    }
    let router = at(dynamic, &["http", "routers", "hello", "middlewares"]);
    let order: Vec<&str> = router
        .as_sequence()
        .expect("middlewares")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(
        order,
        ["strip-judged-headers", "authgate", "strip-credential"],
        "the judged headers go before the check, the credential after it"
    );

    let crds = documents("traefik/kubernetes.yaml");
    let middlewares: Vec<&Yaml> = crds
        .iter()
        .filter(|doc| doc.get("kind").and_then(Yaml::as_str) == Some("Middleware"))
        .collect();
    assert_eq!(middlewares.len(), 3);
    for doc in &crds {
        assert_eq!(
            doc.get("apiVersion").and_then(Yaml::as_str),
            Some("traefik.io/v1alpha1")
        );
    }
    let forward = at(middlewares[0], &["spec", "forwardAuth"]);
    names_every_identity_header(at(forward, &["authResponseHeaders"]), "Middleware");
    let judged = at(middlewares[1], &["spec", "headers", "customRequestHeaders"]);
    for name in ["X-Original-URI", "X-Original-Method"] {
        assert_eq!(at(judged, &[name]).as_str(), Some(""), "{name}");
    }
    let route = at(document(&crds, "IngressRoute"), &["spec", "routes"]);
    let order: Vec<&str> = at(&route[0], &["middlewares"])
        .as_sequence()
        .expect("middlewares")
        .iter()
        .filter_map(|m| m.get("name").and_then(Yaml::as_str))
        .collect();
    assert_eq!(
        order,
        ["strip-judged-headers", "authgate", "strip-credential"]
    );
    document(&crds, "IngressRoute");
}

#[test]
fn envoy_guide_ext_authz_http_service() {
    let envoy = &documents("envoy/envoy.yaml")[0];
    let mut all = Vec::new();
    strings(envoy, &mut all);
    assert!(all.iter().any(|s| s == "/_authgate/verify"), "path_prefix");
    assert!(
        all.iter().any(|s| s.ends_with("ext_authz.v3.extauthz")),
        "ext_authz filter"
    );
    let listener = &at(envoy, &["static_resources", "listeners"])[0];
    let hcm = &at(listener, &["filter_chains"])[0]["filters"][0]["typed_config"];
    let filters = at(hcm, &["http_filters"])
        .as_sequence()
        .expect("http_filters");
    let names: Vec<&str> = filters
        .iter()
        .filter_map(|f| f.get("name").and_then(Yaml::as_str))
        .collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.header_mutation",
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.header_mutation",
            "envoy.filters.http.router"
        ],
        "identity headers dropped before the check, the credential after it"
    );
    let service = at(&filters[1], &["typed_config", "http_service"]);
    assert_eq!(
        at(service, &["path_prefix"]).as_str(),
        Some("/_authgate/verify")
    );
    names_every_identity_header(
        at(
            service,
            &["authorization_response", "allowed_upstream_headers"],
        ),
        "allowed_upstream_headers",
    );
    names_every_identity_header(&filters[0], "the first header_mutation");
    // Only an allow-list of client headers reaches authgate, without any
    // judged header: the judged request is path_prefix + the path.
    let mut allowed = Vec::new();
    strings(
        at(service, &["authorization_request", "allowed_headers"]),
        &mut allowed,
    );
    assert!(allowed.iter().any(|h| h == "authorization"));
    for name in JUDGED_HEADERS {
        assert!(!allowed.iter().any(|h| h == name), "{name} is sent");
    }
}

#[test]
fn istio_guide_extension_provider_and_custom_policy() {
    let docs = documents("istio/meshconfig.yaml");
    let mesh_text = at(document(&docs, "ConfigMap"), &["data", "mesh"])
        .as_str()
        .expect("mesh is text");
    let mesh: Yaml = serde_norway::from_str(mesh_text).expect("mesh parses as YAML");
    let provider = &at(&mesh, &["extensionProviders"])[0];
    assert_eq!(at(provider, &["name"]).as_str(), Some("authgate"));
    let http = at(provider, &["envoyExtAuthzHttp"]);
    assert_eq!(
        at(http, &["pathPrefix"]).as_str(),
        Some("/_authgate/verify")
    );
    names_every_identity_header(
        at(http, &["headersToUpstreamOnAllow"]),
        "headersToUpstreamOnAllow",
    );
    let mut included = Vec::new();
    strings(at(http, &["includeRequestHeadersInCheck"]), &mut included);
    assert!(included.iter().any(|h| h == "authorization"));
    for name in JUDGED_HEADERS {
        assert!(!included.iter().any(|h| h == name), "{name} is sent");
    }

    let docs = documents("istio/authorizationpolicy.yaml");
    let policy = document(&docs, "AuthorizationPolicy");
    assert_eq!(at(policy, &["spec", "action"]).as_str(), Some("CUSTOM"));
    assert_eq!(
        at(policy, &["spec", "provider", "name"]).as_str(),
        Some("authgate")
    );
    names_every_identity_header(document(&docs, "EnvoyFilter"), "EnvoyFilter");
}
