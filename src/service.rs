//! The request pipeline, in one straight line: path check, own endpoints,
//! route, credential, identity, permit, forward. The request's
//! [`RequestContext`] collects what happened; it logs and counts the
//! request once and turns errors into the JSON envelope.

use std::sync::Arc;
use std::time::Instant;

use http::header;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::api::{self, Endpoint};
use crate::auth::{Identity, authorize};
use crate::body::Body;
use crate::conn::ClientInfo;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::metrics::Outcome;
use crate::proxy::headers;
use crate::request_id::new_request_id;
use crate::routes::check_path;

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
    // HTTP/1 heads with more fields are refused by the parser already (a
    // bare 431); HTTP/2 has no count limit of its own.
    if request.headers().len() > gateway.config.limits.max_headers {
        return Err(GatewayError::HeadersTooLarge);
    }
    let path = request.uri().path();
    check_path(path).map_err(|_| GatewayError::InvalidPath)?;

    if let Some(endpoint) = Endpoint::for_path(path) {
        ctx.route(Arc::from(endpoint.name()), endpoint.name());
        ctx.served(Outcome::Own);
        let api_ctx = api::Context { gateway, client };
        return api::serve(endpoint, request, api_ctx).await;
    }

    let matched = gateway
        .config
        .routes
        .route_for(path)
        .ok_or(GatewayError::NoRoute)?;
    ctx.route(matched.route.label.clone(), matched.route.prefix.as_str());

    let identity = if matched.needs_credential() {
        let identity = authenticate(gateway, &request).await?;
        ctx.caller(&identity);
        ctx.served(Outcome::Authenticated);
        Some(identity)
    } else {
        None
    };
    let permit = authorize(&matched, identity)?;

    let upstream_started = Instant::now();
    let result = gateway
        .forwarder
        .forward(permit, request, client, ctx.request_id())
        .await;
    ctx.upstream_took(upstream_started.elapsed());
    result
}

/// The identity behind the request's one credential.
async fn authenticate(
    gateway: &Gateway,
    request: &Request<Incoming>,
) -> Result<Identity, GatewayError> {
    gateway
        .auth
        .authenticate_request(request.headers(), request.uri().query())
        .await
}
