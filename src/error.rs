//! The gateway's one error type for the request path, its HTTP status and the
//! JSON envelope of the contract:
//! `{"error":{"status","reason","message","request_id"}}`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body};

/// Everything that can go wrong while the gateway answers a request.
///
/// Messages are fixed sentences: they never carry a token, a key, a password
/// or an internal detail (5xx messages say only what failed, not why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The request body is not the JSON the endpoint expects.
    #[error("the request body is not valid JSON for this endpoint: {0}")]
    InvalidJson(String),
    /// A field of an otherwise valid request is out of range or malformed.
    #[error("{0}")]
    InvalidArgument(&'static str),
    /// An access key's `name` is too long or holds control or bidirectional
    /// formatting characters.
    #[error("{0}")]
    InvalidName(&'static str),
    /// An access key's `detail` is too long or holds control or
    /// bidirectional formatting characters.
    #[error("{0}")]
    InvalidDetail(&'static str),
    /// A resource id in the path is not a UUID.
    #[error("the id is not a valid UUID")]
    InvalidId,
    /// The request path has dot segments, encoded separators or empty segments.
    #[error(
        "the request path is not in normal form (dot segments, encoded separators, backslashes and empty segments are refused)"
    )]
    InvalidPath,
    /// The `Host` header is missing from an HTTP/1.1 request (RFC 9112
    /// section 3.2), repeated, or not a `host[:port]`.
    #[error("the Host header is missing, repeated or not a valid host[:port]")]
    InvalidHost,
    /// A proxied request's body could not be read: a malformed chunked
    /// encoding (e.g. a bad chunk-size line) or a body cut short.
    #[error("the request body is malformed (bad chunked encoding) or ended early")]
    InvalidBody,
    /// A credential in the query (`?token=`, `?accesskey=`) where
    /// `[server] credentials_in_query = false`.
    #[error(
        "credentials in the query string are turned off here; send the key in a header (Authorization: Bearer, X-API-Key) or a cookie"
    )]
    CredentialInQuery,
    /// Two different credentials came with one request.
    #[error("the request carries two different credentials; send exactly one")]
    ConflictingCredentials,
    /// A verify request names the judged method or path in two places that
    /// disagree (`X-Forwarded-Uri` vs `X-Original-URI` or the path after
    /// `/_authgate/verify`, `X-Forwarded-Method` vs `X-Original-Method`):
    /// one of them may be the client's own header, passed on by the proxy.
    #[error(
        "the forwarded method or path is given twice with different values (X-Forwarded-* vs X-Original-* or the verify path)"
    )]
    ConflictingForwardedHeaders,
    /// No credential came with a request that needs one.
    #[error(
        "this route requires a credential: a Bearer token or access key, the access-key header, ?token=, ?accesskey= or the token/accesskey cookie"
    )]
    AuthenticationRequired,
    /// A credential came but is wrong, malformed, expired, revoked or badly signed.
    #[error("{message}")]
    InvalidCredentials {
        /// The fixed sentence shown to the client.
        message: &'static str,
        /// Whether a token was presented (adds `error="invalid_token"`).
        token_given: bool,
    },
    /// The caller lacks every role the route asks for.
    #[error("the caller has none of the roles this route requires")]
    MissingRole,
    /// An access key was to be narrowed to a role its owner does not hold.
    #[error("an access key can only be given roles its owner holds")]
    RoleNotHeld,
    /// An access key was used outside the methods or paths it is limited to.
    #[error("this access key is not allowed this method or path")]
    OutOfScope,
    /// A `[[ratelimit.rule]]` refused the request.
    #[error("too many requests; try again later")]
    RateLimited {
        /// The rule's name (`details.limited_by`).
        rule: std::sync::Arc<str>,
        /// Whole seconds until a request may succeed again, at least 1.
        retry_after: u64,
        /// The `RateLimit-Policy` value of the rules checked.
        policy: HeaderValue,
        /// The `RateLimit` value.
        state: HeaderValue,
    },
    /// The shared rate-limit store cannot be reached and
    /// `ratelimit.on_store_error = "deny"`.
    #[error("the rate-limit store is unavailable; try again shortly")]
    RateLimitUnavailable,
    /// A CORS preflight from an origin the route's `[route.cors]` does not
    /// list.
    #[error("this origin may not call this API from a browser")]
    CorsOriginNotAllowed,
    /// An access key tried to create, change or delete access keys.
    #[error("access keys cannot manage access keys; use a JWT from /auth/login")]
    AccessKeyNotAllowed,
    /// No route matches the path.
    #[error("no route matches this path")]
    NoRoute,
    /// The addressed resource does not exist (or is not the caller's).
    #[error("the resource does not exist")]
    NotFound,
    /// The method is not served on this gateway path.
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    /// Routes match the path, none of them the method (`Allow` lists
    /// theirs); answered before credentials are looked at.
    #[error("no route takes this method on this path")]
    RouteMethodNotAllowed {
        /// The methods the path's routes take.
        allow: HeaderValue,
    },
    /// A body of the gateway's own endpoints is over the limit.
    #[error("the request body is larger than this endpoint accepts")]
    BodyTooLarge,
    /// A JSON endpoint got a body that is not declared `application/json`
    /// (an HTML form cannot send that type cross-site without a preflight).
    #[error("this endpoint accepts only Content-Type: application/json")]
    UnsupportedMediaType,
    /// The request head is over the limit.
    #[error("the request headers are larger than the gateway accepts")]
    HeadersTooLarge,
    /// Too many failed logins for a user or client address.
    #[error("too many failed attempts; try again later")]
    TooManyAttempts {
        /// Seconds until the lockout lifts.
        retry_after: u64,
    },
    /// Every password-hashing slot is taken (`login.max_concurrent_hashes`).
    #[error("the gateway is checking as many passwords as it can at once; try again shortly")]
    LoginBusy {
        /// Seconds to wait before trying again.
        retry_after: u64,
    },
    /// The client address holds `onetimekey.max_per_address` outstanding
    /// one-time keys already.
    #[error("this address holds as many one-time keys as it may; try again later")]
    OneTimeKeysPerAddress {
        /// Seconds until its oldest outstanding key expires, at least 1.
        retry_after: u64,
    },
    /// The user holds `accesskeys.max_per_user` unexpired access keys already.
    #[error("this user holds as many access keys as it may; delete one first")]
    KeyLimitReached,
    /// `limits.max_upstream_requests` requests are in flight to this
    /// route's upstream already.
    #[error(
        "the upstream service has as many requests in flight as the gateway allows; try again shortly"
    )]
    UpstreamBusy,
    /// A resource already exists (e.g. a user of that name).
    #[error("{0}")]
    Conflict(&'static str),
    /// No credential, on a route whose browsers sign in through an OIDC
    /// provider: answered with 302 to `location`, the provider's sign-in.
    #[error("sign in first: this route signs browsers in through an identity provider")]
    SignInRequired {
        /// `/auth/oidc/<provider>/login?rd=<the request's path and query>`.
        location: String,
    },
    /// An OIDC sign-in was refused: its state, the code or the ID token.
    #[error("{0}")]
    SignInFailed(&'static str),
    /// The name a provider gives belongs to a local user, another provider
    /// or another account of the same provider (another `sub`).
    #[error("that user name belongs to a local user or another identity provider")]
    AccountConflict,
    /// A caller from a `[[jwt.jwks]]` provider asked for something only a
    /// user in the store has (access keys): external identities own nothing.
    #[error("only users of this gateway (local or signed in through [[oidc]]) have access keys")]
    StoreUserRequired,
    /// The provider names the user by an email address it has not verified.
    #[error("the identity provider has not verified this email address")]
    EmailNotVerified,
    /// An OIDC provider could not be reached or answered nonsense.
    #[error("the identity provider could not be reached")]
    ProviderUnavailable,
    /// The upstream could not be reached.
    #[error("the upstream service could not be reached")]
    UpstreamUnreachable,
    /// The upstream sent a response the gateway refuses to relay: a 101
    /// switching protocols that the gateway did not ask for, or to anything
    /// other than WebSocket.
    #[error("the upstream service sent a response the gateway does not relay")]
    UpstreamInvalidResponse,
    /// The upstream did not answer in time.
    #[error("the upstream service did not answer in time")]
    UpstreamTimeout,
    /// The store is unreachable or failed.
    #[error("the credential store is unavailable; try again shortly")]
    StoreUnavailable,
    /// A bug or an unexpected failure inside the gateway.
    #[error("internal error")]
    Internal,
}

/// `Retry-After` of a 503 `UPSTREAM_BUSY`: in-flight requests to a healthy
/// upstream finish within seconds.
pub const UPSTREAM_BUSY_RETRY_AFTER_SECS: u64 = 1;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-09).
pub const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-09).
pub const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// An HTTP status with the envelope's canonical `status` name (the seed
/// service's codes): several reasons share one class.
#[derive(Debug, Clone, Copy)]
struct Class(StatusCode, &'static str);

const SIGN_IN: Class = Class(StatusCode::FOUND, "UNAUTHENTICATED");
const BAD_REQUEST: Class = Class(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
const UNAUTHENTICATED: Class = Class(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
const FORBIDDEN: Class = Class(StatusCode::FORBIDDEN, "PERMISSION_DENIED");
const NOT_FOUND: Class = Class(StatusCode::NOT_FOUND, "NOT_FOUND");
const METHOD_NOT_ALLOWED: Class = Class(StatusCode::METHOD_NOT_ALLOWED, "UNIMPLEMENTED");
/// The contract's class for a method no route of a path takes.
const ROUTE_METHOD_NOT_ALLOWED: Class = Class(StatusCode::METHOD_NOT_ALLOWED, "INVALID_ARGUMENT");
const CONFLICT: Class = Class(StatusCode::CONFLICT, "ALREADY_EXISTS");
const TOO_LARGE: Class = Class(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_ARGUMENT");
const MEDIA_TYPE: Class = Class(StatusCode::UNSUPPORTED_MEDIA_TYPE, "INVALID_ARGUMENT");
const HEADERS_TOO_LARGE: Class = Class(
    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    "INVALID_ARGUMENT",
);
const TOO_MANY: Class = Class(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");
const BAD_GATEWAY: Class = Class(StatusCode::BAD_GATEWAY, "UNAVAILABLE");
const GATEWAY_TIMEOUT: Class = Class(StatusCode::GATEWAY_TIMEOUT, "UNAVAILABLE");
const UNAVAILABLE: Class = Class(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
const INTERNAL: Class = Class(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL");

impl GatewayError {
    /// The one table: each variant's class and reason.
    fn class_and_reason(&self) -> (Class, &'static str) {
        use GatewayError::*;
        match self {
            InvalidJson(_) => (BAD_REQUEST, "INVALID_JSON"),
            InvalidArgument(_) => (BAD_REQUEST, "INVALID_FIELD"),
            InvalidName(_) => (BAD_REQUEST, "INVALID_NAME"),
            InvalidDetail(_) => (BAD_REQUEST, "INVALID_DETAIL"),
            InvalidId => (BAD_REQUEST, "INVALID_ID"),
            InvalidPath => (BAD_REQUEST, "INVALID_PATH"),
            InvalidHost => (BAD_REQUEST, "INVALID_HOST"),
            InvalidBody => (BAD_REQUEST, "INVALID_BODY"),
            ConflictingCredentials => (BAD_REQUEST, "CONFLICTING_CREDENTIALS"),
            CredentialInQuery => (BAD_REQUEST, "CREDENTIAL_IN_QUERY"),
            ConflictingForwardedHeaders => (BAD_REQUEST, "CONFLICTING_FORWARDED_HEADERS"),
            AuthenticationRequired => (UNAUTHENTICATED, "AUTHENTICATION_REQUIRED"),
            InvalidCredentials { .. } => (UNAUTHENTICATED, "INVALID_CREDENTIALS"),
            MissingRole => (FORBIDDEN, "MISSING_ROLE"),
            RoleNotHeld => (BAD_REQUEST, "ROLE_NOT_HELD"),
            OutOfScope => (FORBIDDEN, "OUT_OF_SCOPE"),
            RateLimited { .. } => (TOO_MANY, "RATE_LIMITED"),
            RateLimitUnavailable => (UNAVAILABLE, "RATE_LIMIT_STORE_UNAVAILABLE"),
            AccessKeyNotAllowed => (FORBIDDEN, "ACCESSKEY_NOT_ALLOWED"),
            CorsOriginNotAllowed => (FORBIDDEN, "CORS_ORIGIN_NOT_ALLOWED"),
            NoRoute => (NOT_FOUND, "NO_ROUTE"),
            NotFound => (NOT_FOUND, "RESOURCE_NOT_FOUND"),
            MethodNotAllowed => (METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            RouteMethodNotAllowed { .. } => (ROUTE_METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            Conflict(_) => (CONFLICT, "ALREADY_EXISTS"),
            BodyTooLarge => (TOO_LARGE, "BODY_TOO_LARGE"),
            UnsupportedMediaType => (MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"),
            HeadersTooLarge => (HEADERS_TOO_LARGE, "HEADERS_TOO_LARGE"),
            TooManyAttempts { .. } => (TOO_MANY, "TOO_MANY_ATTEMPTS"),
            OneTimeKeysPerAddress { .. } => (TOO_MANY, "RATE_LIMITED"),
            KeyLimitReached => (TOO_MANY, "KEY_LIMIT_REACHED"),
            SignInRequired { .. } => (SIGN_IN, "SIGN_IN_REQUIRED"),
            SignInFailed(_) => (UNAUTHENTICATED, "SIGN_IN_FAILED"),
            AccountConflict => (FORBIDDEN, "ACCOUNT_CONFLICT"),
            StoreUserRequired => (FORBIDDEN, "STORE_USER_REQUIRED"),
            EmailNotVerified => (FORBIDDEN, "EMAIL_NOT_VERIFIED"),
            ProviderUnavailable => (BAD_GATEWAY, "PROVIDER_UNREACHABLE"),
            UpstreamUnreachable => (BAD_GATEWAY, "UPSTREAM_UNREACHABLE"),
            UpstreamInvalidResponse => (BAD_GATEWAY, "UPSTREAM_INVALID_RESPONSE"),
            UpstreamTimeout => (GATEWAY_TIMEOUT, "UPSTREAM_TIMEOUT"),
            UpstreamBusy => (UNAVAILABLE, "UPSTREAM_BUSY"),
            StoreUnavailable => (UNAVAILABLE, "STORE_UNAVAILABLE"),
            LoginBusy { .. } => (UNAVAILABLE, "LOGIN_BUSY"),
            Internal => (INTERNAL, "INTERNAL_ERROR"),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status_code(&self) -> StatusCode {
        self.class_and_reason().0.0
    }

    /// The envelope's `status` field (the seed service's canonical codes).
    pub fn status_name(&self) -> &'static str {
        self.class_and_reason().0.1
    }

    /// The envelope's `reason` field: a stable machine-readable cause.
    pub fn reason(&self) -> &'static str {
        self.class_and_reason().1
    }

    /// Shorthand for a wrong, malformed, expired or revoked credential.
    pub fn invalid(message: &'static str) -> Self {
        GatewayError::InvalidCredentials {
            message,
            token_given: true,
        }
    }

    /// The JSON envelope, without the response around it.
    pub fn envelope(&self, request_id: &str) -> serde_json::Value {
        if let GatewayError::RateLimited { rule, .. } = self {
            return serde_json::json!({
                "error": {
                    "status": self.status_name(),
                    "reason": self.reason(),
                    "message": self.to_string(),
                    "request_id": request_id,
                    "details": { "limited_by": &**rule },
                }
            });
        }
        serde_json::json!({
            "error": {
                "status": self.status_name(),
                "reason": self.reason(),
                "message": self.to_string(),
                "request_id": request_id,
            }
        })
    }

    /// The complete HTTP response for this error.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let payload = Bytes::from(self.envelope(request_id).to_string());
        let mut response = Response::new(body::full(payload));
        *response.status_mut() = self.status_code();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Every 401 carries a challenge (RFC 9110 section 15.5.2), whichever
        // variant it is: decided by the status, not by a list of variants.
        if self.status_code() == StatusCode::UNAUTHORIZED {
            let value = match &self {
                GatewayError::InvalidCredentials {
                    token_given: true, ..
                } => r#"Bearer realm="authgate", error="invalid_token""#,
                _ => r#"Bearer realm="authgate""#,
            };
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        match &self {
            GatewayError::SignInRequired { location } => {
                if let Ok(value) = HeaderValue::from_str(location) {
                    headers.insert(header::LOCATION, value);
                }
            }
            GatewayError::TooManyAttempts { retry_after }
            | GatewayError::LoginBusy { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            GatewayError::OneTimeKeysPerAddress { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from((*retry_after).max(1)),
                );
            }
            GatewayError::UpstreamBusy => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UPSTREAM_BUSY_RETRY_AFTER_SECS),
                );
            }
            GatewayError::RateLimited {
                retry_after,
                policy,
                state,
                ..
            } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from((*retry_after).max(1)),
                );
                headers.insert(RATELIMIT_POLICY, policy.clone());
                headers.insert(RATELIMIT, state.clone());
            }
            GatewayError::RateLimitUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            GatewayError::RouteMethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, allow.clone());
            }
            _ => {}
        }
        response
    }
}

impl From<crate::store::StoreError> for GatewayError {
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match err {
            StoreError::NotFound => GatewayError::NotFound,
            StoreError::AlreadyExists => GatewayError::Conflict("that name is already taken"),
            StoreError::RoleNotHeld(_) => GatewayError::RoleNotHeld,
            StoreError::KeyLimitReached => GatewayError::KeyLimitReached,
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "store unavailable");
                GatewayError::StoreUnavailable
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_the_contract_table() {
        let cases = [
            (
                GatewayError::InvalidJson("x".into()),
                400,
                "INVALID_ARGUMENT",
                "INVALID_JSON",
            ),
            (
                GatewayError::InvalidName("n"),
                400,
                "INVALID_ARGUMENT",
                "INVALID_NAME",
            ),
            (
                GatewayError::InvalidDetail("d"),
                400,
                "INVALID_ARGUMENT",
                "INVALID_DETAIL",
            ),
            (
                GatewayError::InvalidId,
                400,
                "INVALID_ARGUMENT",
                "INVALID_ID",
            ),
            (
                GatewayError::InvalidPath,
                400,
                "INVALID_ARGUMENT",
                "INVALID_PATH",
            ),
            (
                GatewayError::InvalidHost,
                400,
                "INVALID_ARGUMENT",
                "INVALID_HOST",
            ),
            (
                GatewayError::InvalidBody,
                400,
                "INVALID_ARGUMENT",
                "INVALID_BODY",
            ),
            (
                GatewayError::ConflictingCredentials,
                400,
                "INVALID_ARGUMENT",
                "CONFLICTING_CREDENTIALS",
            ),
            (
                GatewayError::CredentialInQuery,
                400,
                "INVALID_ARGUMENT",
                "CREDENTIAL_IN_QUERY",
            ),
            (
                GatewayError::ConflictingForwardedHeaders,
                400,
                "INVALID_ARGUMENT",
                "CONFLICTING_FORWARDED_HEADERS",
            ),
            (
                GatewayError::AuthenticationRequired,
                401,
                "UNAUTHENTICATED",
                "AUTHENTICATION_REQUIRED",
            ),
            (
                GatewayError::invalid("bad"),
                401,
                "UNAUTHENTICATED",
                "INVALID_CREDENTIALS",
            ),
            (
                GatewayError::MissingRole,
                403,
                "PERMISSION_DENIED",
                "MISSING_ROLE",
            ),
            (
                GatewayError::AccessKeyNotAllowed,
                403,
                "PERMISSION_DENIED",
                "ACCESSKEY_NOT_ALLOWED",
            ),
            (GatewayError::NoRoute, 404, "NOT_FOUND", "NO_ROUTE"),
            (
                GatewayError::CorsOriginNotAllowed,
                403,
                "PERMISSION_DENIED",
                "CORS_ORIGIN_NOT_ALLOWED",
            ),
            (
                GatewayError::RouteMethodNotAllowed {
                    allow: HeaderValue::from_static("GET"),
                },
                405,
                "INVALID_ARGUMENT",
                "METHOD_NOT_ALLOWED",
            ),
            (
                GatewayError::SignInRequired {
                    location: "/auth/oidc/corp/login?rd=%2F".into(),
                },
                302,
                "UNAUTHENTICATED",
                "SIGN_IN_REQUIRED",
            ),
            (
                GatewayError::SignInFailed("s"),
                401,
                "UNAUTHENTICATED",
                "SIGN_IN_FAILED",
            ),
            (
                GatewayError::AccountConflict,
                403,
                "PERMISSION_DENIED",
                "ACCOUNT_CONFLICT",
            ),
            (
                GatewayError::StoreUserRequired,
                403,
                "PERMISSION_DENIED",
                "STORE_USER_REQUIRED",
            ),
            (
                GatewayError::EmailNotVerified,
                403,
                "PERMISSION_DENIED",
                "EMAIL_NOT_VERIFIED",
            ),
            (
                GatewayError::ProviderUnavailable,
                502,
                "UNAVAILABLE",
                "PROVIDER_UNREACHABLE",
            ),
            (
                GatewayError::RoleNotHeld,
                400,
                "INVALID_ARGUMENT",
                "ROLE_NOT_HELD",
            ),
            (
                GatewayError::OutOfScope,
                403,
                "PERMISSION_DENIED",
                "OUT_OF_SCOPE",
            ),
            (rate_limited(), 429, "RESOURCE_EXHAUSTED", "RATE_LIMITED"),
            (
                GatewayError::NotFound,
                404,
                "NOT_FOUND",
                "RESOURCE_NOT_FOUND",
            ),
            (
                GatewayError::BodyTooLarge,
                413,
                "INVALID_ARGUMENT",
                "BODY_TOO_LARGE",
            ),
            (
                GatewayError::UnsupportedMediaType,
                415,
                "INVALID_ARGUMENT",
                "UNSUPPORTED_MEDIA_TYPE",
            ),
            (
                GatewayError::HeadersTooLarge,
                431,
                "INVALID_ARGUMENT",
                "HEADERS_TOO_LARGE",
            ),
            (
                GatewayError::TooManyAttempts { retry_after: 3 },
                429,
                "RESOURCE_EXHAUSTED",
                "TOO_MANY_ATTEMPTS",
            ),
            (
                GatewayError::UpstreamUnreachable,
                502,
                "UNAVAILABLE",
                "UPSTREAM_UNREACHABLE",
            ),
            (
                GatewayError::UpstreamInvalidResponse,
                502,
                "UNAVAILABLE",
                "UPSTREAM_INVALID_RESPONSE",
            ),
            (
                GatewayError::UpstreamTimeout,
                504,
                "UNAVAILABLE",
                "UPSTREAM_TIMEOUT",
            ),
            (
                GatewayError::StoreUnavailable,
                503,
                "UNAVAILABLE",
                "STORE_UNAVAILABLE",
            ),
            (
                GatewayError::LoginBusy { retry_after: 1 },
                503,
                "UNAVAILABLE",
                "LOGIN_BUSY",
            ),
            (
                GatewayError::UpstreamBusy,
                503,
                "UNAVAILABLE",
                "UPSTREAM_BUSY",
            ),
            (
                GatewayError::KeyLimitReached,
                429,
                "RESOURCE_EXHAUSTED",
                "KEY_LIMIT_REACHED",
            ),
            (
                GatewayError::OneTimeKeysPerAddress { retry_after: 9 },
                429,
                "RESOURCE_EXHAUSTED",
                "RATE_LIMITED",
            ),
        ];
        for (err, status, name, reason) in cases {
            assert_eq!(err.status_code().as_u16(), status, "{err:?}");
            assert_eq!(err.status_name(), name, "{err:?}");
            assert_eq!(err.reason(), reason, "{err:?}");
            // Every 401 carries a challenge, whichever variant makes it.
            let challenged = err
                .clone()
                .into_response("r")
                .headers()
                .contains_key(header::WWW_AUTHENTICATE);
            assert_eq!(challenged, status == 401, "{err:?}");
        }
    }

    fn rate_limited() -> GatewayError {
        GatewayError::RateLimited {
            rule: "per-user".into(),
            retry_after: 2,
            policy: HeaderValue::from_static(r#""per-user";q=2;w=1"#),
            state: HeaderValue::from_static(r#""per-user";r=0;t=1"#),
        }
    }

    #[test]
    fn rate_limited_names_the_rule_and_carries_the_headers() {
        let value = rate_limited().envelope("r");
        assert_eq!(value["error"]["details"]["limited_by"], "per-user");
        assert_eq!(value["error"]["reason"], "RATE_LIMITED");
        let response = rate_limited().into_response("r");
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            response.headers()[RATELIMIT_POLICY],
            r#""per-user";q=2;w=1"#
        );
        assert_eq!(response.headers()[RATELIMIT], r#""per-user";r=0;t=1"#);
    }

    #[test]
    fn the_bounds_tell_when_to_come_back() {
        let busy = GatewayError::UpstreamBusy.into_response("r");
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        let otk = GatewayError::OneTimeKeysPerAddress { retry_after: 0 }.into_response("r");
        assert_eq!(
            otk.headers()[header::RETRY_AFTER],
            "1",
            "at least one second"
        );
    }

    #[test]
    fn envelope_has_the_four_fields() {
        let value = GatewayError::NoRoute.envelope("req-1");
        let inner = &value["error"];
        assert_eq!(inner["status"], "NOT_FOUND");
        assert_eq!(inner["reason"], "NO_ROUTE");
        assert_eq!(inner["request_id"], "req-1");
        assert!(inner["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    #[test]
    fn unauthenticated_responses_carry_www_authenticate() {
        let response = GatewayError::AuthenticationRequired.into_response("r");
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="authgate""#
        );
        let response = GatewayError::invalid("expired").into_response("r");
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="authgate", error="invalid_token""#
        );
        let response = GatewayError::SignInFailed("the ID token has expired").into_response("r");
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="authgate""#
        );
        let response = GatewayError::TooManyAttempts { retry_after: 7 }.into_response("r");
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let response = GatewayError::LoginBusy { retry_after: 1 }.into_response("r");
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
