//! Sign-in through an external OpenID Provider: the real `oidc-provider`
//! (tests/oidc/provider.mjs, installed by tests/upstreams/setup.sh) on an
//! ephemeral port, the real gateway in front of a recording upstream, and a
//! plain HTTP client that follows redirects with its own cookie jar.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::pyserver::upstreams_dir;
use common::*;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

const CLIENT_SECRET: &str = "test-client-secret-0123456789abcdef";
const PARTNER_SECRET: &str = "partner-client-secret-0123456789ab";
const MAIL_SECRET: &str = "mail-client-secret-0123456789abcdef";

// ---------------------------------------------------------------------------
// The provider
// ---------------------------------------------------------------------------

/// `node provider.mjs`, killed when dropped.
struct OpenIdProvider {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl OpenIdProvider {
    /// Starts the provider on `port` (0: any) signing with key `kid`, with
    /// clients `authgate` and `authgate-partner` redirecting to `gateway_port`.
    fn start(port: u16, kid: &str, gateway_port: u16, accounts: &Value) -> OpenIdProvider {
        let dir = tempfile::tempdir().expect("provider temp dir");
        let provider = OpenIdProvider {
            child: None,
            port,
            dir,
        };
        provider.set_accounts(accounts);
        provider.spawn(port, kid, gateway_port)
    }

    fn spawn(mut self, port: u16, kid: &str, gateway_port: u16) -> OpenIdProvider {
        let install = upstreams_dir().join("oidc");
        assert!(
            install.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed in {}: run `bash tests/upstreams/setup.sh`",
            install.display()
        );
        // The script must sit next to node_modules for ESM resolution; the
        // rename makes parallel tests see either copy whole.
        let script = install.join("provider.mjs");
        let staging = tempfile::NamedTempFile::new_in(&install).expect("staging file");
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/provider.mjs"),
            staging.path(),
        )
        .expect("copy provider.mjs");
        staging.persist(&script).expect("place provider.mjs");
        let client = |id: &str, secret: &str, names: &[&str]| {
            let redirects: Vec<String> = names
                .iter()
                .map(|name| format!("http://127.0.0.1:{gateway_port}/auth/oidc/{name}/callback"))
                .collect();
            json!({
                "client_id": id,
                "client_secret": secret,
                "redirect_uris": redirects,
                "response_types": ["code"],
                "grant_types": ["authorization_code"],
            })
        };
        let settings = json!({
            "port": port,
            "kid": kid,
            "accounts_file": self.dir.path().join("accounts.json"),
            "clients": [
                client("authgate", CLIENT_SECRET, &["corp"]),
                client("authgate-partner", PARTNER_SECRET, &["partner"]),
                client("authgate-mail", MAIL_SECRET, &["mail", "mail-lax"]),
            ],
        });
        let settings_path = self.dir.path().join("settings.json");
        std::fs::write(&settings_path, settings.to_string()).unwrap();
        let mut child = Command::new("node")
            .arg(&script)
            .arg(&settings_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (is Node.js installed?)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("PORT ") {
                    let _ = tx.send(port.trim().parse::<u16>().unwrap_or(0));
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the provider printed no PORT line");
        self.port = port;
        self.child = Some(child);
        self
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_accounts(&self, accounts: &Value) {
        std::fs::write(self.dir.path().join("accounts.json"), accounts.to_string()).unwrap();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The same issuer (same port) with a new signing key.
    fn restart_with_key(mut self, kid: &str, gateway_port: u16) -> OpenIdProvider {
        self.stop();
        let port = self.port;
        self.spawn(port, kid, gateway_port)
    }
}

impl Drop for OpenIdProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Setup {
    provider: OpenIdProvider,
    gateway: Gateway,
    upstream: Upstream,
    gateway_port: u16,
}

fn accounts() -> Value {
    json!({
        "alice": { "groups": ["admin", "dev"] },
        "bob": {},
        "carol": {},
        "dave": {},
        "aud-other": { "misbehave": "aud" },
        "azp-other": { "misbehave": "azp" },
        "expired": { "misbehave": "expired" },
        "wrong-iss": { "misbehave": "iss" },
        "bad name": {},
        // Named by email (providers `mail` and `mail-lax`): the victim, an
        // account claiming her address unverified, and another account
        // (another sub) holding the same address verified.
        "victim": { "email": "victim@example.test", "groups": ["admin"] },
        "mallory": { "email": "victim@example.test", "email_verified": false },
        "mallory-verified": { "email": "victim@example.test" },
        "no-verified-claim": { "email": "nvc@example.test", "email_verified": null },
        "unverified-ok": { "email": "unverified@example.test", "email_verified": false },
    })
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

/// The config the tests run, with `adjust` applied to the gateway's options.
async fn setup_with(adjust: impl Fn(&mut GatewayOptions)) -> Setup {
    let upstream = Upstream::start().await;
    let gateway_port = free_port();
    let provider = OpenIdProvider::start(0, "key-1", gateway_port, &accounts());
    let secret = provider.dir.path().join("client.secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
    let partner_secret = provider.dir.path().join("partner.secret");
    std::fs::write(&partner_secret, PARTNER_SECRET).unwrap();
    let mail_secret = provider.dir.path().join("mail.secret");
    std::fs::write(&mail_secret, MAIL_SECRET).unwrap();
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.listen = format!("127.0.0.1:{gateway_port}");
    opts.extra_toml = format!(
        r#"[[route]]
path_prefix = "/app"
upstream = "{upstream}"
login = "corp"

[[oidc]]
name = "corp"
issuer = "{issuer}"
client_id = "authgate"
client_secret_file = "{secret}"
redirect_url = "http://127.0.0.1:{gateway_port}/auth/oidc/corp/callback"
roles_claim = "groups"

[[oidc]]
name = "partner"
issuer = "{issuer}"
client_id = "authgate-partner"
client_secret_file = "{partner_secret}"
redirect_url = "http://127.0.0.1:{gateway_port}/auth/oidc/partner/callback"

[[oidc]]
name = "mail"
issuer = "{issuer}"
client_id = "authgate-mail"
client_secret_file = "{mail_secret}"
redirect_url = "http://127.0.0.1:{gateway_port}/auth/oidc/mail/callback"
username_claim = "email"
roles_claim = "groups"

[[oidc]]
name = "mail-lax"
issuer = "{issuer}"
client_id = "authgate-mail"
client_secret_file = "{mail_secret}"
redirect_url = "http://127.0.0.1:{gateway_port}/auth/oidc/mail-lax/callback"
username_claim = "email"
allow_unverified_email = true
"#,
        upstream = upstream.url(),
        issuer = provider.issuer(),
        secret = secret.display(),
        partner_secret = partner_secret.display(),
        mail_secret = mail_secret.display(),
    );
    adjust(&mut opts);
    let gateway = Gateway::start_with(opts).await;
    Setup {
        provider,
        gateway,
        upstream,
        gateway_port,
    }
}

// ---------------------------------------------------------------------------
// A browser: no automatic redirects, a cookie jar by host and path
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Cookie {
    host: String,
    path: String,
    name: String,
    value: String,
}

struct Browser {
    http: reqwest::Client,
    jar: Vec<Cookie>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: Vec::new(),
        }
    }

    fn cookie_header(&self, url: &reqwest::Url) -> Option<String> {
        let host = url.authority().to_string();
        let cookies: Vec<String> = self
            .jar
            .iter()
            .filter(|c| c.host == host && url.path().starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!cookies.is_empty()).then(|| cookies.join("; "))
    }

    fn remember(&mut self, url: &reqwest::Url, response: &reqwest::Response) {
        let host = url.authority().to_string();
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let mut parts = text.split(';').map(str::trim);
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let mut path = "/".to_string();
            let mut delete = false;
            for attribute in parts {
                let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
                if key.eq_ignore_ascii_case("path") {
                    path = val.to_string();
                }
                if key.eq_ignore_ascii_case("max-age") && val.parse::<i64>().unwrap_or(1) <= 0 {
                    delete = true;
                }
                if key.eq_ignore_ascii_case("expires") && val.contains("1970") {
                    delete = true;
                }
            }
            self.jar
                .retain(|c| !(c.host == host && c.name == name && c.path == path));
            if !delete {
                self.jar.push(Cookie {
                    host: host.clone(),
                    path,
                    name: name.to_string(),
                    value: value.to_string(),
                });
            }
        }
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.jar
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value.clone())
    }

    fn set_cookie_value(&mut self, name: &str, value: &str) {
        for cookie in self.jar.iter_mut().filter(|c| c.name == name) {
            cookie.value = value.to_string();
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder, url: &str) -> reqwest::Response {
        let parsed = reqwest::Url::parse(url).unwrap();
        let request = match self.cookie_header(&parsed) {
            Some(cookies) => request.header("cookie", cookies),
            None => request,
        };
        let response = request.send().await.unwrap();
        self.remember(&parsed, &response);
        response
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        let request = self.http.get(url).header("accept", "text/html");
        self.send(request, url).await
    }

    async fn post_form(&mut self, url: &str, body: &str) -> reqwest::Response {
        let request = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string());
        self.send(request, url).await
    }
}

fn location(response: &reqwest::Response, base: &str) -> String {
    let value = response
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on {}", response.status()))
        .to_str()
        .unwrap();
    reqwest::Url::parse(base)
        .unwrap()
        .join(value)
        .unwrap()
        .to_string()
}

/// Percent-encodes everything but unreserved characters.
fn encode(value: &str) -> String {
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(value, UNRESERVED).to_string()
}

/// `GET /auth/oidc/<name>/login?rd=...`: the provider's authorization URL.
async fn start_sign_in(browser: &mut Browser, gw: &Gateway, name: &str, rd: &str) -> String {
    let url = gw.url(&format!("/auth/oidc/{name}/login?rd={}", encode(rd)));
    let response = browser.get(&url).await;
    assert_eq!(response.status(), 302, "{}", response.text().await.unwrap());
    let to = location(&response, &url);
    assert!(to.contains("code_challenge_method=S256"), "{to}");
    assert!(to.contains("state=") && to.contains("nonce="), "{to}");
    to
}

/// Follows the provider's pages from `url`, signing in as `account` on its
/// form, until the provider sends the browser to the gateway's callback;
/// that URL, not fetched yet.
async fn authorize(browser: &mut Browser, mut url: String, account: &str) -> String {
    for _ in 0..20 {
        if url.contains("/callback?") && url.contains("/auth/oidc/") {
            return url;
        }
        let response = browser.get(&url).await;
        match response.status().as_u16() {
            302 | 303 => url = location(&response, &url),
            200 if url.contains("/interaction/") => {
                let action = format!("{}/login", url.split('?').next().unwrap());
                let response = browser
                    .post_form(&action, &format!("login={}", encode(account)))
                    .await;
                assert!(
                    matches!(response.status().as_u16(), 302 | 303),
                    "{}",
                    response.status()
                );
                url = location(&response, &action);
            }
            status => panic!(
                "unexpected {status} at {url}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    panic!("too many redirects");
}

/// A whole sign-in; the callback's response.
async fn sign_in(
    browser: &mut Browser,
    gw: &Gateway,
    name: &str,
    account: &str,
    rd: &str,
) -> reqwest::Response {
    let to = start_sign_in(browser, gw, name, rd).await;
    let callback = authorize(browser, to, account).await;
    browser.get(&callback).await
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("HTTP {status} without a JSON error: {text:?}"));
    (status, body["error"].clone())
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn full_sign_in_records_the_user_sets_the_cookie_and_lands_on_rd() {
    let s = setup().await;
    let gw = &s.gateway;
    let mut browser = Browser::new();
    let response = sign_in(&mut browser, gw, "corp", "alice", "/app/x?y=1").await;
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/app/x?y=1");
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let token_cookie = cookies
        .iter()
        .find(|c| c.starts_with("token="))
        .expect("token cookie");
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=604800",
    ] {
        assert!(token_cookie.contains(attribute), "{token_cookie}");
    }
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("authgate_oidc=;") && c.contains("Max-Age=0")),
        "the state cookie is cleared: {cookies:?}"
    );
    let token = browser.cookie("token").unwrap();

    // The landing page, with the cookie, reaches the upstream as alice with
    // the provider's groups as roles.
    let landing = browser.get(&gw.url("/app/x?y=1")).await;
    assert_eq!(landing.status(), 200);
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-auth-user").as_deref(), Some("alice"));
    assert_eq!(seen.header("x-auth-roles").as_deref(), Some("admin,dev"));

    // Provider users may hold access keys.
    let created = reqwest::Client::new()
        .post(gw.url("/v1.0/accesskeys"))
        .bearer_auth(&token)
        .json(&json!({"name": "script", "detail": "", "expire": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let key = created.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let by_key = reqwest::Client::new()
        .get(gw.url(&format!("/app/k?accesskey={key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(by_key.status(), 200);

    // They have no password: password and one-time-key logins fail.
    for password in ["", "x", "alice"] {
        let login = reqwest::Client::new()
            .post(gw.url("/auth/login"))
            .json(&json!({"username": "alice", "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 401, "password {password:?}");
    }
    let otk: Value = reqwest::Client::new()
        .post(gw.url("/auth/onetimekey"))
        .json(&json!({"username": "alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let otk_key = otk["key"].as_str().unwrap();
    // The answer a provider user's empty HA1 would give.
    let answer = md5_hex(&format!("{otk_key}|"));
    let otk_login = reqwest::Client::new()
        .post(gw.url("/auth/onetimekey/login"))
        .json(&json!({"username": "alice", "key": otk_key, "token": answer}))
        .send()
        .await
        .unwrap();
    assert_eq!(otk_login.status(), 401);

    // Nor can an operator give them one.
    let passwd = gw
        .cli(
            &["user", "passwd", "alice", "--password-stdin"],
            Some("new-password\n"),
        )
        .await;
    assert!(!passwd.status.success());
    assert!(
        String::from_utf8_lossy(&passwd.stderr).contains("identity provider corp"),
        "{}",
        String::from_utf8_lossy(&passwd.stderr)
    );

    // Roles are refreshed at every sign-in (one that takes roles away ends
    // earlier tokens: see a_sign_in_that_takes_roles_away_ends_earlier_tokens).
    s.provider
        .set_accounts(&json!({ "alice": { "groups": ["admin", "dev", "ops"] } }));
    let mut again = Browser::new();
    let response = sign_in(&mut again, gw, "corp", "alice", "/app/").await;
    assert_eq!(response.status(), 302);
    let second_token = again.cookie("token").unwrap();
    assert_eq!(
        get(&gw.url("/app/y"), Some(&second_token), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        s.upstream.last().header("x-auth-roles").as_deref(),
        Some("admin,dev,ops")
    );

    // Logout ends the token.
    let logout = reqwest::Client::new()
        .post(gw.url("/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 200);
    assert_eq!(get(&gw.url("/app/z"), Some(&token), &[]).await.status, 401);

    // `user remove` ends the other token and the key.
    let listed = gw.cli_ok(&["user", "list"], None).await;
    assert!(listed.contains("alice"), "{listed}");
    gw.cli_ok(&["user", "remove", "alice"], None).await;
    tokio::time::sleep(PROPAGATION).await;
    assert_eq!(
        get(&gw.url("/app/z"), Some(&second_token), &[])
            .await
            .status,
        401
    );
    let by_key = reqwest::Client::new()
        .get(gw.url(&format!("/app/k?accesskey={key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(by_key.status(), 401);

    // The audit log has the sign-in, by alice of corp, and no token.
    let audit = gw
        .cli_ok(&["audit", "--user", "alice", "--json"], None)
        .await;
    assert!(
        audit
            .lines()
            .any(|line| line.contains("\"event\":\"oidc_login\"")
                && line.contains("\"provider\":\"corp\"")
                && line.contains("\"user\":\"alice\"")),
        "{audit}"
    );
    assert!(!audit.contains(token.as_str()), "{audit}");
}

#[tokio::test]
async fn a_tampered_or_missing_state_is_refused_and_the_code_stays_unused() {
    let s = setup().await;
    let gw = &s.gateway;
    let mut browser = Browser::new();
    let to = start_sign_in(&mut browser, gw, "corp", "/app/").await;
    let callback = authorize(&mut browser, to, "bob").await;
    let sealed = browser.cookie("authgate_oidc").expect("state cookie");

    // Another state in the query.
    let tampered = callback.replacen("state=", "state=x", 1);
    let (status, error) = error_of(browser.get(&tampered).await).await;
    assert_eq!(
        (status, error["reason"].as_str()),
        (401, Some("SIGN_IN_FAILED"))
    );
    assert!(
        error["message"].as_str().unwrap().contains("state"),
        "{error}"
    );

    // A changed cookie (another payload under the old tag).
    let (payload, tag) = sealed.split_once('.').unwrap();
    let mut bytes = payload.as_bytes().to_vec();
    bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
    browser.set_cookie_value(
        "authgate_oidc",
        &format!("{}.{tag}", String::from_utf8(bytes).unwrap()),
    );
    let (status, error) = error_of(browser.get(&callback).await).await;
    assert_eq!(
        (status, error["reason"].as_str()),
        (401, Some("SIGN_IN_FAILED"))
    );

    // No cookie at all (a callback forced on another browser: login CSRF).
    let mut stranger = Browser::new();
    let (status, _) = error_of(stranger.get(&callback).await).await;
    assert_eq!(status, 401);

    // The genuine pair still works: the refusals happened before the code
    // was spent.
    browser.set_cookie_value("authgate_oidc", &sealed);
    let response = browser.get(&callback).await;
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/app/");
}

#[tokio::test]
async fn a_replayed_code_is_refused() {
    let s = setup().await;
    let gw = &s.gateway;
    let mut browser = Browser::new();
    let to = start_sign_in(&mut browser, gw, "corp", "/").await;
    let callback = authorize(&mut browser, to, "bob").await;
    let sealed = browser.cookie("authgate_oidc").unwrap();
    let first = browser.get(&callback).await;
    assert_eq!(first.status(), 302);
    // The code is a credential: the access log shows it redacted.
    let code = reqwest::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = gw.logs();
    assert!(logs.contains("/auth/oidc/corp/callback"), "{logs}");
    assert!(!logs.contains(&code), "the code is logged: {logs}");
    assert!(browser.cookie("authgate_oidc").is_none(), "cleared");

    // The same callback again, without the (cleared) state cookie...
    let (status, _) = error_of(browser.get(&callback).await).await;
    assert_eq!(status, 401);
    // ...and with a copy of it: the provider refuses the spent code.
    let mut replay = Browser::new();
    replay.jar.push(Cookie {
        host: format!("127.0.0.1:{}", s.gateway_port),
        path: "/auth/oidc/corp/".into(),
        name: "authgate_oidc".into(),
        value: sealed,
    });
    let (status, error) = error_of(replay.get(&callback).await).await;
    assert_eq!(
        (status, error["reason"].as_str()),
        (401, Some("SIGN_IN_FAILED"))
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("refused the authorization code"),
        "{error}"
    );
}

#[tokio::test]
async fn id_tokens_with_a_wrong_nonce_audience_issuer_or_expiry_are_refused() {
    let s = setup().await;
    let gw = &s.gateway;

    // An authorization request with the attacker's nonce: the provider puts
    // that nonce into the ID token, which is not this sign-in's.
    let mut browser = Browser::new();
    let to = start_sign_in(&mut browser, gw, "corp", "/").await;
    let mut url = reqwest::Url::parse(&to).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "nonce" {
                "attacker-nonce".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let callback = authorize(&mut browser, url.to_string(), "bob").await;
    let (status, error) = error_of(browser.get(&callback).await).await;
    assert_eq!(
        (status, error["reason"].as_str()),
        (401, Some("SIGN_IN_FAILED"))
    );
    assert!(
        error["message"].as_str().unwrap().contains("nonce"),
        "{error}"
    );

    for (account, says) in [
        ("aud-other", "another client"),
        ("azp-other", "another client"),
        ("expired", "expired"),
        ("wrong-iss", "issuer"),
        ("bad name", "username claim"),
    ] {
        let mut browser = Browser::new();
        let (status, error) = error_of(sign_in(&mut browser, gw, "corp", account, "/").await).await;
        assert_eq!(
            (status, error["reason"].as_str()),
            (401, Some("SIGN_IN_FAILED")),
            "{account}: {error}"
        );
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{account}: {error}"
        );
        assert!(browser.cookie("token").is_none(), "{account}");
    }
    // None of them became a user.
    let listed = gw.cli_ok(&["user", "list"], None).await;
    for account in ["bob", "aud-other", "expired"] {
        assert!(!listed.contains(account), "{account} in {listed}");
    }
}

#[tokio::test]
async fn after_the_provider_replaces_its_signing_key_the_next_sign_in_works() {
    let s = setup().await;
    let gw = &s.gateway;
    let mut browser = Browser::new();
    let response = sign_in(&mut browser, gw, "corp", "bob", "/").await;
    assert_eq!(response.status(), 302);

    // Same issuer, new signing key under a new kid: the ID token straight
    // from the token endpoint makes the gateway fetch the keys at once, with
    // no cool-down since the last fetch.
    let provider = s.provider.restart_with_key("key-2", s.gateway_port);
    let mut next = Browser::new();
    let response = sign_in(&mut next, gw, "corp", "bob", "/app/").await;
    assert_eq!(
        response.status(),
        302,
        "{}",
        response.text().await.unwrap_or_default()
    );
    assert_eq!(response.headers()["location"], "/app/");

    // A new key under the old kid (the provider reused it) is picked up too.
    let provider = provider.restart_with_key("key-2", s.gateway_port);
    let mut again = Browser::new();
    let response = sign_in(&mut again, gw, "corp", "bob", "/app/y").await;
    assert_eq!(
        response.status(),
        302,
        "{}",
        response.text().await.unwrap_or_default()
    );
    assert_eq!(response.headers()["location"], "/app/y");
    drop(provider);
}

#[tokio::test]
async fn off_site_return_paths_land_on_the_root() {
    let s = setup().await;
    let gw = &s.gateway;
    for rd in [
        "//evil.com",
        "https://evil.com",
        "/\\evil.com",
        "%2F%2Fevil.com",
        "/%2F%2Fevil.com",
        "/%5Cevil.com",
        "/\t/evil.com",
        "///evil.com/x",
        "javascript:alert(1)",
    ] {
        let mut browser = Browser::new();
        let response = sign_in(&mut browser, gw, "corp", "dave", rd).await;
        assert_eq!(response.status(), 302, "{rd:?}");
        assert_eq!(response.headers()["location"], "/", "{rd:?}");
    }
    let mut browser = Browser::new();
    let response = sign_in(&mut browser, gw, "corp", "dave", "/app/deep?a=1&b=%2F").await;
    assert_eq!(response.headers()["location"], "/app/deep?a=1&b=%2F");
}

#[tokio::test]
async fn names_held_by_a_local_user_or_another_provider_are_refused() {
    let s = setup().await;
    let gw = &s.gateway;
    gw.add_user("carol", "carol-password", &["admin"]).await;
    let mut browser = Browser::new();
    let (status, error) = error_of(sign_in(&mut browser, gw, "corp", "carol", "/").await).await;
    assert_eq!(status, 403);
    assert_eq!(error["status"], "PERMISSION_DENIED");
    assert_eq!(error["reason"], "ACCOUNT_CONFLICT");
    assert!(browser.cookie("token").is_none());
    // The local carol is untouched and still logs in with her password.
    let login = reqwest::Client::new()
        .post(gw.url("/auth/login"))
        .json(&json!({"username": "carol", "password": "carol-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);

    // dave signs in through corp first; partner cannot take the name.
    let mut browser = Browser::new();
    assert_eq!(
        sign_in(&mut browser, gw, "corp", "dave", "/")
            .await
            .status(),
        302
    );
    let mut other = Browser::new();
    let (status, error) = error_of(sign_in(&mut other, gw, "partner", "dave", "/").await).await;
    assert_eq!(
        (status, error["reason"].as_str()),
        (403, Some("ACCOUNT_CONFLICT"))
    );
    // Through corp again, dave is still dave.
    let mut again = Browser::new();
    assert_eq!(
        sign_in(&mut again, gw, "corp", "dave", "/").await.status(),
        302
    );
}

#[tokio::test]
async fn routes_with_login_send_browsers_to_the_provider_and_api_clients_get_401() {
    let s = setup().await;
    let gw = &s.gateway;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let response = client
        .get(gw.url("/app/x?y=1&z=%2F"))
        .header("accept", browser_accept)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        "/auth/oidc/corp/login?rd=%2Fapp%2Fx%3Fy%3D1%26z%3D%252F"
    );
    for accept in [None, Some("application/json"), Some("*/*")] {
        let mut request = client.get(gw.url("/app/x"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let (status, error) = error_of(request.send().await.unwrap()).await;
        assert_eq!(status, 401, "{accept:?}");
        assert_eq!(error["reason"], "AUTHENTICATION_REQUIRED");
    }
    // A route without `login`: browsers get the 401 too.
    let response = client
        .get(gw.url("/other"))
        .header("accept", browser_accept)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // A wrong credential is not "no credential": 401, not a redirect.
    let response = client
        .get(gw.url("/app/x"))
        .header("accept", browser_accept)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(s.upstream.count(), 0);

    // Following the redirect signs in and comes back to the original target.
    let mut browser = Browser::new();
    let start = browser.get(&gw.url("/app/x?y=1")).await;
    assert_eq!(start.status(), 302);
    let login = location(&start, &gw.url("/app/x?y=1"));
    let to = browser.get(&login).await;
    let callback = authorize(&mut browser, location(&to, &login), "bob").await;
    let done = browser.get(&callback).await;
    assert_eq!(done.headers()["location"], "/app/x?y=1");
    assert_eq!(browser.get(&gw.url("/app/x?y=1")).await.status(), 200);
    assert_eq!(
        s.upstream.last().header("x-auth-user").as_deref(),
        Some("bob")
    );
}

#[tokio::test]
async fn unknown_providers_are_not_found() {
    let s = setup().await;
    let response = reqwest::get(s.gateway.url("/auth/oidc/nope/login?rd=/"))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_sign_in_started_on_one_replica_finishes_on_another_on_postgres() {
    use sqlx::Connection;
    let admin_url = std::env::var("AUTHGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let name = format!("authgate_{}", unique("oidc").replace('-', "_")).to_lowercase();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let db_url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let secret = random_secret_text();
    let s = setup_with(|opts| {
        opts.store_url = Some(db_url.clone());
        opts.secret_text = Some(secret.clone());
    })
    .await;
    // Replica b: the same config (same JWT secret, same client secret and
    // redirect_url) on another port.
    let b_port = free_port();
    let mut b_opts = s.gateway.options().clone();
    b_opts.listen = format!("127.0.0.1:{b_port}");
    let b = Gateway::start_with(b_opts).await;

    let mut browser = Browser::new();
    let to = start_sign_in(&mut browser, &s.gateway, "corp", "/app/r").await;
    let callback = authorize(&mut browser, to, "alice").await;
    let on_b = callback.replace(
        &format!("127.0.0.1:{}", s.gateway_port),
        &format!("127.0.0.1:{b_port}"),
    );
    for cookie in browser.jar.iter_mut().filter(|c| c.name == "authgate_oidc") {
        cookie.host = format!("127.0.0.1:{b_port}");
    }
    let response = browser.get(&on_b).await;
    assert_eq!(response.status(), 302, "{}", response.text().await.unwrap());
    assert_eq!(response.headers()["location"], "/app/r");
    let token = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .unwrap()
                .strip_prefix("token=")
                .map(|rest| rest.split(';').next().unwrap().to_string())
        })
        .expect("token cookie");
    // Recorded in the shared store: the token works on replica a, and the
    // name is held against a local user created later.
    assert_eq!(
        get(&s.gateway.url("/app/r"), Some(&token), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        s.upstream.last().header("x-auth-roles").as_deref(),
        Some("admin,dev")
    );
    // The provider subject binding lives in the shared store too (the
    // PostgreSQL migration): another sub under the victim's name is refused.
    let mut victim = Browser::new();
    assert_eq!(
        sign_in(&mut victim, &s.gateway, "mail", "victim", "/")
            .await
            .status(),
        302
    );
    {
        let mut attacker = Browser::new();
        let (status, error) =
            error_of(sign_in(&mut attacker, &s.gateway, "mail", "mallory-verified", "/").await)
                .await;
        assert_eq!(
            (status, error["reason"].as_str()),
            (403, Some("ACCOUNT_CONFLICT")),
            "{error}"
        );
    }
    let add = s
        .gateway
        .cli(
            &["user", "add", "alice", "--password-stdin"],
            Some("pw-pw-pw-pw\n"),
        )
        .await;
    assert!(!add.status.success());
    drop(b);
    drop(s);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}

/// The `token` cookie a sign-in's callback set.
fn token_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .unwrap()
                .strip_prefix("token=")
                .map(|rest| rest.split(';').next().unwrap().to_string())
        })
        .expect("token cookie")
}

#[tokio::test]
async fn an_unverified_or_rebound_email_cannot_take_over_an_account() {
    let s = setup().await;
    let gw = &s.gateway;
    let mut browser = Browser::new();
    let response = sign_in(&mut browser, gw, "mail", "victim", "/").await;
    assert_eq!(response.status(), 302);
    let victim_token = token_of(&response);

    // Another account at the provider with her address, unverified (or
    // with no email_verified at all): refused before anything is recorded.
    for account in ["mallory", "no-verified-claim", "unverified-ok"] {
        let mut attacker = Browser::new();
        let response = sign_in(&mut attacker, gw, "mail", account, "/").await;
        assert_ne!(response.status(), 302, "{account} signed in");
        let (status, error) = error_of(response).await;
        assert_eq!(status, 403, "{account}: {error}");
        assert_eq!(error["status"], "PERMISSION_DENIED", "{account}");
        assert_eq!(error["reason"], "EMAIL_NOT_VERIFIED", "{account}");
        assert!(attacker.cookie("token").is_none(), "{account}");
    }
    // Another account (another sub) holding the address verified: the name
    // is bound to the victim's sub.
    let mut attacker = Browser::new();
    let (status, error) =
        error_of(sign_in(&mut attacker, gw, "mail", "mallory-verified", "/").await).await;
    assert_eq!(
        (status, error["reason"].as_str()),
        (403, Some("ACCOUNT_CONFLICT")),
        "{error}"
    );
    assert!(attacker.cookie("token").is_none());

    // The victim keeps her roles and her session.
    assert_eq!(
        get(&gw.url("/admin/x"), Some(&victim_token), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        s.upstream.last().header("x-auth-user").as_deref(),
        Some("victim@example.test")
    );
    assert_eq!(
        s.upstream.last().header("x-auth-roles").as_deref(),
        Some("admin")
    );
    assert_eq!(
        s.upstream.last().header("x-auth-provider").as_deref(),
        Some("mail")
    );
    let mut again = Browser::new();
    assert_eq!(
        sign_in(&mut again, gw, "mail", "victim", "/")
            .await
            .status(),
        302
    );

    // allow_unverified_email opts out.
    let mut lax = Browser::new();
    let response = sign_in(&mut lax, gw, "mail-lax", "unverified-ok", "/").await;
    assert_eq!(response.status(), 302);

    // The provider hands the victim's login another sub (an account made
    // again): another account to this gateway, refused.
    let mut reissued = accounts();
    reissued["victim"]["sub"] = json!("victim-reissued");
    s.provider.set_accounts(&reissued);
    let mut browser = Browser::new();
    let (status, error) = error_of(sign_in(&mut browser, gw, "mail", "victim", "/").await).await;
    assert_eq!(
        (status, error["reason"].as_str()),
        (403, Some("ACCOUNT_CONFLICT")),
        "{error}"
    );
    assert_eq!(
        get(&gw.url("/admin/x"), Some(&victim_token), &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_sign_in_that_takes_roles_away_ends_earlier_tokens() {
    let s = setup().await;
    let gw = &s.gateway;
    let mut browser = Browser::new();
    let first = token_of(&sign_in(&mut browser, gw, "corp", "alice", "/").await);
    assert_eq!(
        get(&gw.url("/admin/x"), Some(&first), &[]).await.status,
        200
    );

    // The provider takes `admin` away; alice signs in again.
    let mut accounts = accounts();
    accounts["alice"] = json!({ "groups": ["dev"] });
    s.provider.set_accounts(&accounts);
    let mut browser = Browser::new();
    let second = token_of(&sign_in(&mut browser, gw, "corp", "alice", "/").await);
    let refused = get(&gw.url("/admin/x"), Some(&first), &[]).await;
    assert_eq!(refused.status, 401);
    assert!(refused.headers.contains_key("www-authenticate"));
    get(&gw.url("/app/x"), Some(&first), &[])
        .await
        .expect_401("INVALID_CREDENTIALS");
    get(&gw.url("/admin/x"), Some(&second), &[])
        .await
        .expect_error(403, "PERMISSION_DENIED", "MISSING_ROLE");
    assert_eq!(get(&gw.url("/app/x"), Some(&second), &[]).await.status, 200);
    assert_eq!(
        s.upstream.last().header("x-auth-roles").as_deref(),
        Some("dev")
    );

    // A sign-in that only adds roles leaves earlier tokens alone.
    accounts["alice"] = json!({ "groups": ["dev", "ops"] });
    s.provider.set_accounts(&accounts);
    let mut browser = Browser::new();
    assert_eq!(
        sign_in(&mut browser, gw, "corp", "alice", "/")
            .await
            .status(),
        302
    );
    assert_eq!(get(&gw.url("/app/x"), Some(&second), &[]).await.status, 200);
}

#[tokio::test]
async fn failed_callbacks_carry_www_authenticate() {
    let s = setup().await;
    let gw = &s.gateway;
    let client = reqwest::Client::new();
    for query in ["code=x&state=y", "error=access_denied&state=y", ""] {
        let response = client
            .get(gw.url(&format!("/auth/oidc/corp/callback?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{query}");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string())
                .as_deref(),
            Some(r#"Bearer realm="authgate""#),
            "{query}"
        );
        let (_, error) = error_of(response).await;
        assert_eq!(error["reason"], "SIGN_IN_FAILED", "{query}");
    }
    // A refused ID token (after a real exchange) too.
    let mut browser = Browser::new();
    let response = sign_in(&mut browser, gw, "corp", "expired", "/").await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn return_paths_keep_percent_encoded_spaces() {
    let s = setup().await;
    let gw = &s.gateway;
    for rd in ["/app/x?b=two%20words", "/app/a%20b?q=%20x&r=1"] {
        let mut browser = Browser::new();
        let response = sign_in(&mut browser, gw, "corp", "dave", rd).await;
        assert_eq!(response.status(), 302, "{rd}");
        assert_eq!(response.headers()["location"], rd);
    }
    // A route with `login` sends the browser round with the space intact.
    let mut browser = Browser::new();
    let start = browser.get(&gw.url("/app/x?b=two%20words")).await;
    assert_eq!(start.status(), 302);
    let login = location(&start, &gw.url("/app/x?b=two%20words"));
    let to = browser.get(&login).await;
    let callback = authorize(&mut browser, location(&to, &login), "dave").await;
    let done = browser.get(&callback).await;
    assert_eq!(done.headers()["location"], "/app/x?b=two%20words");
}
