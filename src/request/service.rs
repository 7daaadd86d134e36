//! The request pipeline, in one straight line: path check, forward
//! authentication or own endpoints, then the judgement (route, credential,
//! identity, permit; shared with `/_authgate/verify`) and forward. The request's
//! [`RequestContext`] collects what happened; it logs and counts the
//! request once and turns errors into the JSON envelope.

use std::sync::Arc;
use std::time::Instant;

use http::header;
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::api::{self, Endpoint};
use crate::auth::extract::{carries_credential, query_carries_credential};
use crate::body::Body;
use crate::client::ClientInfo;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::metrics::Outcome;
use crate::proxy::{CredentialWatch, ReadOnce, headers};
use crate::request::context::RequestContext;
use crate::request::id::new_request_id;
use crate::request::judge::{Ending, JudgedRequest, judge};
use crate::request::verify;
use crate::routes::CheckedPath;
use crate::routes::cors;

/// Answers one request. Never fails: errors become JSON responses.
pub async fn handle(
    gateway: Arc<Gateway>,
    client: ClientInfo,
    request: Request<Incoming>,
) -> Response<Body> {
    let mut ctx = RequestContext::new(
        &request,
        &client,
        &gateway.config.server.trusted_proxies,
        gateway.telemetry.as_ref(),
    );
    // Whatever the answer (relayed, 304, an error of ours, a decision, a
    // 101), it is this caller's alone when a credential came with it. A
    // verify answer judges one held request, whose credential may be in
    // the judged query: always the caller's.
    let credential = carries_credential(
        request.headers(),
        request.uri().query(),
        gateway.auth.sources(),
    ) || verify::verify_suffix(request.uri().path()).is_some();
    let span = ctx.span();
    let over_tls = client.tls;
    async move {
        let cors = cors_policy(&gateway, &request);
        let preflight = cors.is_some() && cors::is_preflight(&request);
        let result = match &cors {
            // Answered here, before any credential: a browser sends none
            // with a preflight.
            Some((policy, origin)) if preflight => policy
                .preflight(origin)
                .ok_or(GatewayError::CorsOriginNotAllowed),
            _ => handle_inner(&gateway, client, request, &mut ctx).await,
        };
        let mut response = ctx.finish(&gateway.metrics, result);
        if let Some((policy, origin)) = &cors {
            // On a route with `[route.cors]` the gateway's policy alone
            // says who may read: the upstream's CORS headers go.
            if !preflight {
                cors::strip(response.headers_mut());
            }
            if policy.allows(origin) {
                policy.mark(origin, response.headers_mut());
            }
        }
        if over_tls
            && let Some(hsts) = gateway
                .config
                .server
                .tls
                .as_ref()
                .and_then(|tls| tls.hsts.as_ref())
        {
            // The operator's policy, whatever the upstream said.
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        if credential {
            headers::mark_private(response.headers_mut());
        }
        response
    }
    .instrument(span)
    .await
}

async fn handle_inner(
    gateway: &Gateway,
    client: ClientInfo,
    request: Request<Incoming>,
    ctx: &mut RequestContext,
) -> Result<Response<Body>, GatewayError> {
    // RFC 9112 section 3.2: a server must answer 400 to an HTTP/1.1 request
    // without `Host`. HTTP/1.0 may omit it; HTTP/2 carries `:authority`.
    if request.version() == Version::HTTP_11 && !request.headers().contains_key(header::HOST) {
        return Err(GatewayError::InvalidHost);
    }
    // ACME's http-01 validation, before routes and credentials: the CA
    // knows neither.
    if !client.tls
        && let Some(token) = request
            .uri()
            .path()
            .strip_prefix(crate::tls::acme::HTTP01_PREFIX)
    {
        ctx.route(Arc::from("acme_challenge"), "acme_challenge");
        ctx.served(Outcome::Own);
        return Ok(acme_challenge(gateway, token).await);
    }
    // HTTP/1 heads with more fields are refused by the parser already (a
    // bare 431); HTTP/2 has no count limit of its own.
    if request.headers().len() > gateway.config.limits.max_headers {
        return Err(GatewayError::HeadersTooLarge);
    }
    if !client.tls
        && gateway.config.server.redirect_https
        && !stays_on_plain_http(request.uri().path())
    {
        return https_redirect(gateway, &request);
    }
    let path = CheckedPath::new(request.uri().path()).map_err(|_| GatewayError::InvalidPath)?;
    // Refused on every path, public ones and the gateway's own included:
    // the operator wants no secret in any URL a log in front keeps.
    if !gateway.config.server.credentials_in_query
        && request.uri().query().is_some_and(query_carries_credential)
    {
        return Err(GatewayError::CredentialInQuery);
    }

    if let Some(suffix) = verify::verify_suffix(path.as_str()) {
        ctx.verifying();
        return verify::answer(gateway, &request, suffix, ctx).await;
    }
    if let Some(endpoint) = Endpoint::for_path(path.as_str()) {
        ctx.route(Arc::from(endpoint.name()), endpoint.name());
        ctx.served(Outcome::Own);
        // Login and key endpoints count against address rules (no
        // identity is known yet); health, metrics and the admin page do not.
        if !gateway.ratelimits.is_empty()
            && !matches!(
                endpoint,
                Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics | Endpoint::Reserved
            )
        {
            let limits = gateway
                .ratelimits
                .check(None, ctx.client_ip(), path.as_str());
            ctx.rate_limits(limits.await?);
        }
        let api_ctx = api::Context {
            gateway,
            client,
            address: ctx.client_ip(),
            request_id: ctx.request_id().clone(),
        };
        return api::serve(endpoint, request, api_ctx).await;
    }

    // No tunnels: the gateway is no forward proxy, and an upstream that
    // answered a CONNECT (hyper takes one with an origin-form target too)
    // would carry bytes nobody authenticated.
    if request.method() == Method::CONNECT {
        return Err(GatewayError::MethodNotAllowed);
    }

    // Routes are chosen by the host the upstream is told about
    // (`X-Forwarded-Host` is set from the same value).
    let authority = headers::requested_authority(request.uri(), request.headers())
        .map_err(|_| GatewayError::InvalidHost)?;
    let host = authority
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .and_then(crate::routes::canonical_host);
    let judged = JudgedRequest {
        method: request.method(),
        path,
        query: request.uri().query(),
        headers: request.headers(),
        client_ip: ctx.client_ip(),
        host: host.as_deref(),
        scheme: Some(client.proto()),
        ending: Ending::Forward,
    };
    let permit = judge(gateway, &judged, ctx).await?;

    // A WebSocket outlives its request: it is closed when the credential it
    // was opened with stops working.
    let until_revoked = (permit.identity().is_some()
        && headers::is_websocket_handshake(request.method(), request.version(), request.headers()))
    .then(|| {
        Box::pin(
            gateway
                .auth
                .until_revoked(request.headers(), request.uri().query()),
        ) as CredentialWatch
    });
    let upstream_started = Instant::now();
    let (request_id, trace) = ctx.forwarding();
    let result = gateway
        .forwarder
        .forward(
            permit,
            request,
            client,
            ReadOnce {
                forwarded_host: authority,
                request_id,
            },
            until_revoked,
            trace,
        )
        .await;
    ctx.upstream_took(upstream_started.elapsed());
    result
}

/// Answers a request on the `server.admin_listen` listener: `/metrics`,
/// `/healthz` and `/readyz`, and 404 for every other path (nothing there is
/// authenticated, so nothing else may be reachable). Every answer carries a
/// fresh request id.
pub async fn handle_admin(
    gateway: &Gateway,
    client: ClientInfo,
    request: Request<Incoming>,
) -> Response<Body> {
    let request_id = new_request_id();
    let result = api::operations(&request, gateway, client, request_id.clone()).await;
    let mut response = result.unwrap_or_else(|err| {
        tracing::debug!(reason = err.reason(), "admin listener refused a request");
        err.into_response(request_id.to_str().unwrap_or_default())
    });
    response
        .headers_mut()
        .insert(headers::X_REQUEST_ID.clone(), request_id);
    response
}

/// The `[route.cors]` of the route a request with an `Origin` goes to (by
/// host and path, whatever its method), and that origin. `None` without
/// an `Origin`, without such a route, or for a host or path that will be
/// refused anyway.
fn cors_policy<'g, B>(
    gateway: &'g Gateway,
    request: &Request<B>,
) -> Option<(&'g cors::CorsPolicy, http::HeaderValue)> {
    let origin = cors::origin(request)?.clone();
    let authority = headers::requested_authority(request.uri(), request.headers()).ok()?;
    let host = authority
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .and_then(crate::routes::canonical_host);
    let path = CheckedPath::new(request.uri().path()).ok()?;
    let policy = gateway
        .config
        .routes
        .cors_for(host.as_deref(), path.as_str())?;
    Some((policy, origin))
}

/// The answer to an http-01 validation request: the key authorization of
/// a challenge in progress (`text/plain`), or 404.
async fn acme_challenge(gateway: &Gateway, token: &str) -> Response<Body> {
    let answer = match &gateway.acme {
        Some(acme) => acme.http01_answer(token).await,
        None => None,
    };
    match answer {
        Some(answer) => {
            let mut response = Response::new(crate::body::full(answer));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            response
        }
        None => {
            let mut response = Response::new(crate::body::empty());
            *response.status_mut() = http::StatusCode::NOT_FOUND;
            response
        }
    }
}

/// Paths the plain listener serves even with `server.redirect_https`:
/// ACME's http-01 validation (it must be plain HTTP), health checks, and
/// forward authentication (a proxy in front asks over plain HTTP).
fn stays_on_plain_http(path: &str) -> bool {
    path.starts_with(crate::tls::acme::HTTP01_PREFIX)
        || path == "/healthz"
        || path == "/readyz"
        || verify::verify_suffix(path).is_some()
}

/// 308 to the same host, path and query over `https` (the TLS listener's
/// port unless 443). Only the host of `Host` is used (no user info, no
/// port); a request without a usable one is 400.
fn https_redirect(
    gateway: &Gateway,
    request: &Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let tls_port = gateway
        .config
        .server
        .tls
        .as_ref()
        .map_or(443, |tls| tls.listen.port());
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |target| target.as_str());
    let location =
        https_location(host, tls_port, path_and_query).ok_or(GatewayError::InvalidHost)?;
    let mut response = Response::new(crate::body::empty());
    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// `https://HOST[:PORT]PATH_AND_QUERY` from a `Host` value: its host only.
fn https_location(
    host: Option<&str>,
    tls_port: u16,
    path_and_query: &str,
) -> Option<http::HeaderValue> {
    let authority: http::uri::Authority = host?.parse().ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let port = if tls_port == 443 {
        String::new()
    } else {
        format!(":{tls_port}")
    };
    http::HeaderValue::try_from(format!(
        "https://{}{port}{path_and_query}",
        authority.host()
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_locations_keep_host_path_and_query_only() {
        let at = |host, port, target| {
            https_location(host, port, target).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            at(Some("api.example.com:8080"), 8443, "/a/b?c=d%20e").as_deref(),
            Some("https://api.example.com:8443/a/b?c=d%20e")
        );
        assert_eq!(
            at(Some("api.example.com"), 443, "/").as_deref(),
            Some("https://api.example.com/")
        );
        assert_eq!(
            at(Some("[::1]:80"), 443, "/x").as_deref(),
            Some("https://[::1]/x")
        );
        for bad in [
            None,
            Some(""),
            Some("evil.test@api.example.com"),
            Some("a b"),
            Some("/x"),
        ] {
            assert_eq!(at(bad, 443, "/"), None, "{bad:?}");
        }
    }

    #[test]
    fn acme_health_and_verify_stay_on_plain_http() {
        for path in [
            "/.well-known/acme-challenge/abc",
            "/healthz",
            "/readyz",
            "/_authgate/verify",
            "/_authgate/verify/api",
        ] {
            assert!(stays_on_plain_http(path), "{path}");
        }
        for path in [
            "/",
            "/healthz/x",
            "/.well-known/acme-challenge",
            "/api",
            "/_authgate/",
        ] {
            assert!(!stays_on_plain_http(path), "{path}");
        }
    }
}
