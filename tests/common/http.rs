//! HTTP helpers over reqwest: one-shot requests, fully read responses,
//! logins and polling.

use super::*;

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
