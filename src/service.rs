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
use crate::auth::extract::carries_credential;
use crate::body::Body;
use crate::conn::ClientInfo;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::judge::{Ending, JudgedRequest, judge};
use crate::metrics::Outcome;
use crate::proxy::headers;
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
    // Whatever the answer (relayed, 304, an error of ours, a decision, a
    // 101), it is this caller's alone when a credential came with it. A
    // verify answer judges one held request, whose credential may be in
    // the judged query: always the caller's.
    let credential = carries_credential(request.headers(), request.uri().query())
        || verify::verify_suffix(request.uri().path()).is_some();
    let span = ctx.span();
    async move {
        let result = handle_inner(&gateway, client, request, &mut ctx).await;
        let mut response = ctx.finish(&gateway.metrics, result);
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

    let upstream_started = Instant::now();
    let result = gateway
        .forwarder
        .forward(permit, request, client, ctx.request_id())
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
