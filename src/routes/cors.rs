//! CORS per route (`[route.cors]`): preflights answered by the gateway
//! without a credential, and the answers to allowed origins (the
//! gateway's own errors included) marked readable for them. Pure: the
//! policy, the preflight answer and the response headers; the pipeline
//! ([`crate::request::service`]) decides when each applies.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{self, Body};

/// Longest `max_age`, seconds (Chromium caps preflights at 2 hours).
pub const MAX_AGE_SECONDS: u64 = 86_400;

/// One route's `[route.cors]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Origins allowed, as browsers send them (`https://app.example.com`),
    /// lowercase; `["*"]`: any (never with credentials).
    pub allow_origins: Vec<String>,
    /// `Access-Control-Allow-Methods` of a preflight's answer.
    pub allow_methods: HeaderValue,
    /// `Access-Control-Allow-Headers` of a preflight's answer (empty: none).
    pub allow_headers: Option<HeaderValue>,
    /// `Access-Control-Allow-Credentials: true` on answers.
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age` of a preflight's answer.
    pub max_age: Option<u64>,
}

impl CorsPolicy {
    /// Whether `origin` may read answers.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.allow_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }

    /// Marks an answer readable by `origin` (allowed): `Access-Control-
    /// Allow-Origin` echoing it, `Vary: Origin` added to what is there, and
    /// `Access-Control-Allow-Credentials` with credentials. An upstream's
    /// own CORS headers are to be [`strip`]ped first.
    pub fn mark(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        let varies_by_origin = headers.get_all(header::VARY).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|name| name.trim().eq_ignore_ascii_case("origin"))
            })
        });
        if !varies_by_origin {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }

    /// The gateway's answer to a preflight from `origin`: 204 with the
    /// allowed methods, headers and max age; `None` for an origin not
    /// listed (the caller answers 403 `CORS_ORIGIN_NOT_ALLOWED`, without
    /// CORS headers).
    pub fn preflight(&self, origin: &HeaderValue) -> Option<Response<Body>> {
        if !self.allows(origin) {
            return None;
        }
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        self.mark(origin, headers);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        if let Some(allow_headers) = &self.allow_headers {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers.clone());
        }
        if let Some(max_age) = self.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(max_age));
        }
        Some(response)
    }
}

/// The CORS response headers an upstream may have set: on a route with
/// `[route.cors]` the gateway's policy alone decides.
const CORS_RESPONSE_HEADERS: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// Removes every CORS response header.
pub fn strip(headers: &mut HeaderMap) {
    for name in &CORS_RESPONSE_HEADERS {
        headers.remove(name);
    }
}

/// A request's `Origin`, when it has exactly one.
pub fn origin<B>(request: &Request<B>) -> Option<&HeaderValue> {
    let mut values = request.headers().get_all(header::ORIGIN).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub fn is_preflight<B>(request: &Request<B>) -> bool {
    request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(credentials: bool) -> CorsPolicy {
        CorsPolicy {
            allow_origins: vec!["https://app.example.com".into()],
            allow_methods: HeaderValue::from_static("GET, POST"),
            allow_headers: Some(HeaderValue::from_static("Authorization, Content-Type")),
            allow_credentials: credentials,
            max_age: Some(600),
        }
    }

    #[test]
    fn preflights_answer_allowed_origins_only() {
        let origin = HeaderValue::from_static("https://app.example.com");
        let response = policy(true).preflight(&origin).unwrap();
        assert_eq!(response.status(), 204);
        let h = response.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-methods"], "GET, POST");
        assert_eq!(
            h["access-control-allow-headers"],
            "Authorization, Content-Type"
        );
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["vary"], "Origin");
        for other in [
            "https://evil.example",
            "https://app.example.com.evil",
            "null",
        ] {
            assert!(
                policy(true)
                    .preflight(&HeaderValue::from_static(other))
                    .is_none()
            );
        }
    }

    #[test]
    fn marking_replaces_the_upstreams_cors_headers_and_merges_vary() {
        let mut headers = HeaderMap::new();
        headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        headers.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("x"),
        );
        headers.insert("vary", HeaderValue::from_static("Accept-Encoding"));
        let origin = HeaderValue::from_static("https://app.example.com");
        strip(&mut headers);
        policy(false).mark(&origin, &mut headers);
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert!(headers.get("access-control-allow-credentials").is_none());
        assert!(headers.get("access-control-expose-headers").is_none());
        let vary: Vec<_> = headers.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        policy(false).mark(&origin, &mut headers);
        assert_eq!(headers.get_all("vary").iter().count(), 2);
    }
}
