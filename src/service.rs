//! The request pipeline, in one straight line: path check, forward
//! authentication or own endpoints, then the judgement (route, credential,
//! identity, permit; shared with `/_authgate/verify`) and forward. The request's
//! [`RequestContext`] collects what happened; it logs and counts the
//! request once and turns errors into the JSON envelope.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::api::{self, Endpoint};
use crate::body::Body;
use crate::conn::ClientInfo;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::judge::{Ending, JudgedRequest, judge};
use crate::metrics::Outcome;
use crate::proxy::{CredentialWatch, headers};
use crate::request_id::new_request_id;
use crate::routes::CheckedPath;
use crate::verify;

/// Answers one request. Never fails: errors become JSON responses.
pub async fn handle(
    gateway: Arc<Gateway>,
    client: ClientInfo,
    request: Request<Incoming>,
) -> Response<Body> {
    let request_id = request
        .headers()
        .get(&headers::X_REQUEST_ID)
        .filter(|value| headers::sane_request_id(value))
        .cloned()
        .unwrap_or_else(new_request_id);
    let mut ctx = RequestContext::new(request_id, &request, &client);
    let span = ctx.span();
    async move {
        let result = handle_inner(&gateway, client, request, &mut ctx).await;
        ctx.finish(&gateway.metrics, result)
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
    let path = CheckedPath::new(request.uri().path()).map_err(|_| GatewayError::InvalidPath)?;

    if let Some(suffix) = verify::verify_suffix(path.as_str()) {
        ctx.verifying();
        return verify::answer(gateway, &client, &request, suffix, ctx).await;
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
            let address = client_ip(gateway, &client, &request);
            let limits = gateway.ratelimits.check(None, address, path.as_str());
            ctx.rate_limits(limits.await?);
        }
        let api_ctx = api::Context { gateway, client };
        return api::serve(endpoint, request, api_ctx).await;
    }

    let judged = JudgedRequest {
        method: request.method(),
        path,
        query: request.uri().query(),
        headers: request.headers(),
        client_ip: client_ip(gateway, &client, &request),
        host: request
            .headers()
            .get(header::HOST)
            .and_then(|host| host.to_str().ok()),
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
    let result = gateway
        .forwarder
        .forward(permit, request, client, ctx.request_id(), until_revoked)
        .await;
    ctx.upstream_took(upstream_started.elapsed());
    result
}

/// The client's address: the peer, or what a trusted proxy says in
/// `X-Forwarded-For`.
fn client_ip(gateway: &Gateway, client: &ClientInfo, request: &Request<Incoming>) -> IpAddr {
    headers::client_ip(
        client.addr.ip(),
        request.headers(),
        &gateway.config.server.trusted_proxies,
    )
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
