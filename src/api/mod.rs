//! The gateway's own endpoints. Paths here are fixed by the contract and
//! are matched before any route.

mod accesskeys;
mod admin;
mod login;
mod oidc;
mod ops;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::auth::Identity;

use crate::body::{self, Body};
use crate::client::ClientInfo;
use crate::error::GatewayError;
use crate::gateway::Gateway;

/// One of the gateway's own endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/auth/login`
    Login,
    /// `/auth/logout`
    Logout,
    /// `/auth/onetimekey`
    OneTimeKey,
    /// `/auth/onetimekey/login`
    OneTimeKeyLogin,
    /// `/v1.0/accesskeys`
    AccessKeys,
    /// `/v1.0/accesskeys/{id}`
    AccessKey(String),
    /// `/v1.0/accesskeys/{id}/reroll`
    RerollKey(String),
    /// `/v1.0/accesskeys/revoke`
    RevokeKey,
    /// `/.well-known/jwks.json`
    Jwks,
    /// `/healthz`
    Healthz,
    /// `/readyz`
    Readyz,
    /// `/metrics`
    Metrics,
    /// `/auth/oidc/{name}/login`
    OidcLogin(String),
    /// `/auth/oidc/{name}/callback`
    OidcCallback(String),
    /// `/_authgate` and everything below it.
    Reserved,
}

impl Endpoint {
    /// The endpoint serving `path`, if the gateway serves it itself.
    pub fn for_path(path: &str) -> Option<Endpoint> {
        let endpoint = match path {
            "/auth/login" => Endpoint::Login,
            "/auth/logout" => Endpoint::Logout,
            "/auth/onetimekey" => Endpoint::OneTimeKey,
            "/auth/onetimekey/login" => Endpoint::OneTimeKeyLogin,
            "/v1.0/accesskeys" | "/v1.0/accesskeys/" => Endpoint::AccessKeys,
            "/v1.0/accesskeys/revoke" => Endpoint::RevokeKey,
            "/.well-known/jwks.json" => Endpoint::Jwks,
            "/healthz" => Endpoint::Healthz,
            "/readyz" => Endpoint::Readyz,
            "/metrics" => Endpoint::Metrics,
            "/_authgate" => Endpoint::Reserved,
            _ => {
                if let Some(id) = path.strip_prefix("/v1.0/accesskeys/") {
                    match id.strip_suffix("/reroll") {
                        Some(id) => Endpoint::RerollKey(id.to_owned()),
                        None => Endpoint::AccessKey(id.to_owned()),
                    }
                } else if let Some((name, action)) = path
                    .strip_prefix("/auth/oidc/")
                    .and_then(|rest| rest.split_once('/'))
                {
                    match action {
                        "login" => Endpoint::OidcLogin(name.to_owned()),
                        "callback" => Endpoint::OidcCallback(name.to_owned()),
                        _ => return None,
                    }
                } else if path.starts_with(crate::config::RESERVED_PREFIX) {
                    Endpoint::Reserved
                } else {
                    return None;
                }
            }
        };
        Some(endpoint)
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Login => "login",
            Endpoint::Logout => "logout",
            Endpoint::OneTimeKey => "onetimekey",
            Endpoint::OneTimeKeyLogin => "onetimekey_login",
            Endpoint::AccessKeys | Endpoint::AccessKey(_) | Endpoint::RerollKey(_) => "accesskeys",
            Endpoint::RevokeKey => "accesskeys_revoke",
            Endpoint::Jwks => "jwks",
            Endpoint::Healthz => "healthz",
            Endpoint::Readyz => "readyz",
            Endpoint::Metrics => "metrics",
            Endpoint::OidcLogin(_) => "oidc_login",
            Endpoint::OidcCallback(_) => "oidc_callback",
            Endpoint::Reserved => "reserved",
        }
    }
}

/// What an endpoint gets besides the request.
pub struct Context<'a> {
    /// Shared state.
    pub gateway: &'a Gateway,
    /// The caller's connection.
    pub client: ClientInfo,
    /// The caller's address as throttles and limits count it
    /// ([`crate::request::context::RequestContext::client_ip`]).
    pub address: std::net::IpAddr,
}

/// Serves one of the gateway's own endpoints.
pub async fn serve(
    endpoint: Endpoint,
    request: Request<Incoming>,
    ctx: Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let method = request.method().clone();
    match (endpoint, method) {
        (Endpoint::Login, Method::POST) => login::login(request, &ctx).await,
        (Endpoint::Logout, Method::POST) => login::logout(request, &ctx).await,
        (Endpoint::OneTimeKey, Method::POST) => login::issue_onetime_key(request, &ctx).await,
        (Endpoint::OneTimeKeyLogin, Method::POST) => login::onetime_key_login(request, &ctx).await,
        (Endpoint::AccessKeys, Method::GET) => accesskeys::list(request, &ctx).await,
        (Endpoint::AccessKeys, Method::POST) => accesskeys::create(request, &ctx).await,
        (Endpoint::AccessKey(id), Method::GET) => accesskeys::get(request, &ctx, &id).await,
        (Endpoint::AccessKey(id), Method::PUT) => accesskeys::update(request, &ctx, &id).await,
        (Endpoint::AccessKey(id), Method::DELETE) => accesskeys::delete(request, &ctx, &id).await,
        (Endpoint::RerollKey(id), Method::POST) => accesskeys::reroll(request, &ctx, &id).await,
        (Endpoint::RevokeKey, Method::POST) => accesskeys::revoke(request, &ctx).await,
        (Endpoint::Jwks, Method::GET | Method::HEAD) => Ok(ops::jwks(&ctx)),
        (Endpoint::Healthz, Method::GET | Method::HEAD) => Ok(ops::healthz()),
        (Endpoint::Readyz, Method::GET | Method::HEAD) => ops::readyz(&ctx).await,
        // With `server.admin_listen` set, metrics are served only there.
        (Endpoint::Metrics, _) if ctx.gateway.config.server.admin_listen.is_some() => {
            Err(GatewayError::NotFound)
        }
        (Endpoint::Metrics, Method::GET) => Ok(ops::metrics(&ctx)),
        (Endpoint::OidcLogin(name), Method::GET) => oidc::login(request, &ctx, &name).await,
        (Endpoint::OidcCallback(name), Method::GET) => oidc::callback(request, &ctx, &name).await,
        (Endpoint::Reserved, _) => admin::serve(request, &ctx).await,
        _ => Err(GatewayError::MethodNotAllowed),
    }
}

/// The operations endpoints (health, readiness, metrics) as the
/// `server.admin_listen` listener serves them: nothing else there.
pub async fn operations(
    request: &Request<Incoming>,
    gateway: &Gateway,
    client: ClientInfo,
) -> Result<Response<Body>, GatewayError> {
    // Nothing there is throttled by address: the peer is enough.
    let address = client.addr.ip();
    let ctx = Context {
        gateway,
        client,
        address,
    };
    match (Endpoint::for_path(request.uri().path()), request.method()) {
        (Some(Endpoint::Healthz), &Method::GET | &Method::HEAD) => Ok(ops::healthz()),
        (Some(Endpoint::Readyz), &Method::GET | &Method::HEAD) => ops::readyz(&ctx).await,
        (Some(Endpoint::Metrics), &Method::GET) => Ok(ops::metrics(&ctx)),
        (Some(Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics), _) => {
            Err(GatewayError::MethodNotAllowed)
        }
        _ => Err(GatewayError::NotFound),
    }
}

/// The caller of an own endpoint, authenticated like a proxied request.
async fn caller(request: &Request<Incoming>, ctx: &Context<'_>) -> Result<Identity, GatewayError> {
    let identity = ctx
        .gateway
        .auth
        .authenticate_request(request.headers(), request.uri().query())
        .await?;
    // A key limited to other paths or methods cannot read keys either.
    crate::auth::check_scope(Some(&identity), request.method(), request.uri().path())?;
    // Nor can a key past its own budget (each read is a store query).
    if identity.rate_limit.is_some() {
        ctx.gateway.ratelimits.check_key(&identity).await?;
    }
    Ok(identity)
}

/// Whether `Content-Type` declares JSON: the media type `application/json`
/// (any case, parameters such as `charset` allowed). Anything else, and a
/// missing header, is refused: `text/plain`, `application/x-www-form-urlencoded`
/// and `multipart/form-data` are what a cross-site HTML form can send without
/// a CORS preflight, so accepting them would allow login CSRF.
fn is_json_content_type(headers: &http::HeaderMap) -> bool {
    // A repeated header counts only when every copy says JSON (some clients
    // send the same value twice); any other mix is refused.
    let mut values = headers.get_all(header::CONTENT_TYPE).iter().peekable();
    values.peek().is_some()
        && values.all(|value| {
            value.to_str().is_ok_and(|text| {
                let essence = text.split(';').next().unwrap_or("");
                essence
                    .trim_matches([' ', '\t'])
                    .eq_ignore_ascii_case("application/json")
            })
        })
}

/// Reads a JSON body of at most `limits.max_body_bytes`; the body must be
/// declared `application/json` (415 otherwise), before anything is read.
async fn read_json<T: DeserializeOwned>(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<T, GatewayError> {
    if !is_json_content_type(request.headers()) {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let limit = ctx.gateway.config.limits.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(GatewayError::BodyTooLarge);
    }
    let bytes: Bytes = Limited::new(request.into_body(), limit)
        .collect()
        .await
        .map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                GatewayError::BodyTooLarge
            } else {
                GatewayError::InvalidJson("the body could not be read".into())
            }
        })?
        .to_bytes();
    parse_json(&bytes)
}

/// Parses JSON; the error names the position and, for missing or unknown
/// fields, the field, but never echoes a value (it could be a password).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(bytes).map_err(|err| {
        let text = err.to_string();
        let detail = if text.starts_with("missing field") || text.starts_with("unknown field") {
            text
        } else {
            let what = match err.classify() {
                serde_json::error::Category::Data => "a field has the wrong type",
                serde_json::error::Category::Eof => "the body ends too early",
                _ => "syntax error",
            };
            format!("{what} at line {} column {}", err.line(), err.column())
        };
        GatewayError::InvalidJson(detail)
    })
}

/// A JSON response that is never cached.
fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_paths() {
        assert_eq!(Endpoint::for_path("/auth/login"), Some(Endpoint::Login));
        assert_eq!(
            Endpoint::for_path("/v1.0/accesskeys/abc"),
            Some(Endpoint::AccessKey("abc".into()))
        );
        assert_eq!(Endpoint::for_path("/_authgate/"), Some(Endpoint::Reserved));
        assert_eq!(Endpoint::for_path("/_authgate"), Some(Endpoint::Reserved));
        assert_eq!(Endpoint::for_path("/auth/login/x"), None);
        assert_eq!(Endpoint::for_path("/api"), None);
        assert_eq!(
            Endpoint::for_path("/auth/oidc/corp/login"),
            Some(Endpoint::OidcLogin("corp".into()))
        );
        assert_eq!(
            Endpoint::for_path("/auth/oidc/corp/callback"),
            Some(Endpoint::OidcCallback("corp".into()))
        );
        assert_eq!(Endpoint::for_path("/auth/oidc/corp/other"), None);
        assert_eq!(Endpoint::for_path("/auth/oidc/corp"), None);
    }

    #[test]
    fn json_errors_never_echo_values() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Login {
            username: String,
            password: String,
        }
        let err = parse_json::<Login>(br#"{"username":"a","password":12345678}"#).unwrap_err();
        assert!(!err.to_string().contains("12345678"), "{err}");
        let err = parse_json::<Login>(br#"{"username":"a"}"#).unwrap_err();
        assert!(err.to_string().contains("password"), "{err}");
        let err = parse_json::<Login>(b"{not json").unwrap_err();
        assert_eq!(err.reason(), "INVALID_JSON");
    }

    #[test]
    fn only_application_json_is_json() {
        let with = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for value in values {
                headers.append(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            }
            is_json_content_type(&headers)
        };
        for good in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            " application/json ",
        ] {
            assert!(with(&[good]), "{good}");
        }
        for bad in [
            "",
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json-seq",
            "application/jsonx",
            "application/problem+json",
            "text/json",
            "application/json, text/plain",
        ] {
            assert!(!with(&[bad]), "{bad}");
        }
        assert!(!with(&[]));
        assert!(!with(&["application/json", "text/plain"]));
        assert!(!with(&["text/plain", "application/json"]));
        assert!(with(&[
            "application/json",
            "application/json; charset=utf-8"
        ]));
    }
}
