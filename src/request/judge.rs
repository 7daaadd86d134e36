//! The one judgement of a request, shared by the proxied pipeline and by
//! forward authentication (`/_authgate/verify`): route (with every reading
//! of the path), credential, identity, permit. Both callers hand in a
//! [`JudgedRequest`] whose path already passed the path policy; only what
//! they do with the [`Permit`] differs (forward it, or answer with it).

use std::net::IpAddr;

use http::{HeaderMap, Method};

use crate::auth::extract::carries_credential;
use crate::auth::{Permit, authorize, check_scope};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::metrics::Outcome;
use crate::oidc;
use crate::request::context::RequestContext;
use crate::routes::{CheckedPath, RouteMiss};
use crate::scope::other_method_readings;

/// What becomes of a permit: the request is forwarded by its route, or
/// only answered (forward authentication: another proxy forwards it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Proxied to the route's upstream: a route without one takes no
    /// request (404 `NO_ROUTE`, before any credential is looked at).
    Forward,
    /// Answered with the decision; routes without an upstream count.
    Answer,
}

/// The request being judged: the proxied request itself, or the one that
/// a proxy in front holds, as its verify request describes it.
#[derive(Debug)]
pub struct JudgedRequest<'a> {
    /// Its method (access-key scopes judge it).
    pub method: &'a Method,
    /// Its path, checked by the path policy.
    pub path: CheckedPath<'a>,
    /// Its query: one of the credential's sources.
    pub query: Option<&'a str>,
    /// The headers holding the credential (`Authorization`, `Cookie`).
    pub headers: &'a HeaderMap,
    /// The client's address (trusted proxies' `X-Forwarded-For` followed),
    /// for rate limits by address.
    pub client_ip: IpAddr,
    /// The host it was sent to, canonical ([`crate::routes::canonical_host`]):
    /// routes are chosen by it. `None` when the request named none.
    pub host: Option<&'a str>,
    /// `http` or `https` as the client used it, if known.
    pub scheme: Option<&'a str>,
    /// What becomes of the permit.
    pub ending: Ending,
}

/// Judges `request`: the route its path is taken by (and every route an
/// upstream could read it under), the caller behind its one credential
/// when any of those routes needs one, and the permit for them. Errors are
/// exactly what the request is refused with, whichever the ending.
pub async fn judge<'g>(
    gateway: &'g Gateway,
    request: &JudgedRequest<'_>,
    ctx: &mut RequestContext,
) -> Result<Permit<'g>, GatewayError> {
    let path = request.path.as_str();
    // The judged query of a verify request comes from a header: refused
    // here too, whether or not the route needs a credential.
    if !gateway.config.server.credentials_in_query
        && request
            .query
            .is_some_and(crate::auth::extract::query_carries_credential)
    {
        return Err(GatewayError::CredentialInQuery);
    }
    let matched = gateway
        .config
        .routes
        .route_for(request.host, request.method, path)
        .map_err(|miss| match miss {
            RouteMiss::NoRoute => GatewayError::NoRoute,
            RouteMiss::AmbiguousPath => GatewayError::InvalidPath,
            RouteMiss::WrongMethod(allow) => GatewayError::RouteMethodNotAllowed {
                allow: allow_header(&allow),
            },
        })?;
    if request.ending == Ending::Forward && matched.route.upstream.is_none() {
        return Err(GatewayError::NoRoute);
    }
    ctx.route(matched.route.label.clone(), matched.route.prefix.as_str());

    // An optional route looks at a credential only when one was given: a
    // bad one is refused like anywhere else, none forwards no identity.
    let optional_given = matched.takes_optional_credential()
        && carries_credential(request.headers, request.query, gateway.auth.sources());
    let identity = if matched.needs_credential() || optional_given {
        let authenticated = gateway
            .auth
            .authenticate_request(request.headers, request.query)
            .await;
        let identity = match authenticated {
            Err(GatewayError::AuthenticationRequired) => {
                return Err(oidc::sign_in_required(
                    matched.route,
                    request.headers,
                    path,
                    request.query,
                )
                .unwrap_or(GatewayError::AuthenticationRequired));
            }
            other => other?,
        };
        ctx.caller(&identity);
        ctx.served(Outcome::Authenticated);
        Some(identity)
    } else {
        None
    };
    let permit = authorize(&matched, identity)?;
    // The access key's scope and the rate limits need the judged method,
    // path and client address: here, so both endings apply them.
    check_scope(permit.identity(), request.method, path)?;
    // Another reading of the method (`?_method=`, and on verify the
    // override headers the proxy in front passes on) must be allowed too.
    if let Some(scope) = permit
        .identity()
        .and_then(|identity| identity.scope.as_deref())
        && !scope.methods.is_empty()
    {
        let headers = (request.ending == Ending::Answer).then_some(request.headers);
        let readings = other_method_readings(request.query, headers);
        if !scope.allows_method_readings(&readings) {
            return Err(GatewayError::OutOfScope);
        }
    }
    if gateway.ratelimits.may_apply(permit.identity()) {
        let limits = gateway
            .ratelimits
            .check(permit.identity(), request.client_ip, path);
        ctx.rate_limits(limits.await?);
    }
    Ok(permit)
}

/// `Allow` for a 405: the methods the path's routes take, comma-separated
/// (RFC 9110 section 10.2.1).
fn allow_header(methods: &[Method]) -> http::HeaderValue {
    let joined = methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    http::HeaderValue::from_str(&joined).unwrap_or_else(|_| http::HeaderValue::from_static(""))
}
