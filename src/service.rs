//! The request pipeline, in one straight line: path check, own endpoints,
//! route, credential, identity, permit, forward. The outer function logs
//! once and turns errors into the JSON envelope.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tracing::{Instrument, field, info, info_span};

use crate::api::{self, Endpoint};
use crate::auth::extract;
use crate::auth::{Identity, authorize};
use crate::body::Body;
use crate::conn::ClientInfo;
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
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(&headers::X_REQUEST_ID)
        .filter(|value| headers::sane_request_id(value))
        .cloned()
        .unwrap_or_else(new_request_id);
    let span = info_span!(
        "request",
        request.id = request_id.to_str().unwrap_or_default(),
        http.method = %request.method(),
        http.target = %extract::redact_target(request.uri()),
        route = field::Empty,
        auth.method = field::Empty,
        auth.user = field::Empty,
    );
    async move {
        let mut route_name: Option<Arc<str>> = None;
        let result = handle_inner(&gateway, client, request, &request_id, &mut route_name).await;
        let (mut response, outcome) = match result {
            Ok((response, outcome)) => (response, outcome),
            Err(err) => {
                let reason = err.reason();
                let id = request_id.to_str().unwrap_or_default();
                (err.into_response(id), Outcome::Rejected(reason))
            }
        };
        response
            .headers_mut()
            .insert(headers::X_REQUEST_ID.clone(), request_id.clone());
        let elapsed = started.elapsed();
        let route_name = route_name.unwrap_or_else(|| Arc::from("none"));
        gateway.metrics.request(route_name, outcome, elapsed);
        info!(
            http.status = response.status().as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "access"
        );
        response
    }
    .instrument(span)
    .await
}

async fn handle_inner(
    gateway: &Gateway,
    client: ClientInfo,
    request: Request<Incoming>,
    request_id: &HeaderValue,
    route_name: &mut Option<Arc<str>>,
) -> Result<(Response<Body>, Outcome), GatewayError> {
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
        *route_name = Some(Arc::from(endpoint.name()));
        tracing::Span::current().record("route", endpoint.name());
        let ctx = api::Context { gateway, client };
        let response = api::serve(endpoint, request, ctx).await?;
        return Ok((response, Outcome::Own));
    }

    let matched = gateway
        .config
        .routes
        .route_for(path)
        .ok_or(GatewayError::NoRoute)?;
    let route = matched.route;
    *route_name = Some(route.label.clone());
    tracing::Span::current().record("route", route.prefix.as_str());

    let identity = if matched.needs_credential() {
        Some(authenticate(gateway, &request).await?)
    } else {
        None
    };
    let outcome = if identity.is_some() {
        Outcome::Authenticated
    } else {
        Outcome::Public
    };
    let permit = authorize(&matched, identity)?;

    let upstream_started = Instant::now();
    let result = gateway
        .forwarder
        .forward(permit, route, request, client, request_id)
        .await;
    gateway.metrics.upstream(upstream_started.elapsed());
    match &result {
        Err(GatewayError::UpstreamTimeout) => gateway.metrics.upstream_error("timeout"),
        Err(GatewayError::UpstreamUnreachable) => gateway.metrics.upstream_error("unreachable"),
        Err(GatewayError::UpstreamInvalidResponse) => {
            gateway.metrics.upstream_error("invalid_response")
        }
        _ => {}
    }
    Ok((result?, outcome))
}

/// The identity behind the request's one credential.
async fn authenticate(
    gateway: &Gateway,
    request: &Request<Incoming>,
) -> Result<Identity, GatewayError> {
    let identity = gateway
        .auth
        .authenticate_request(request.headers(), request.uri().query())
        .await?;
    let span = tracing::Span::current();
    span.record("auth.method", identity.method.as_str());
    span.record("auth.user", &*identity.user);
    Ok(identity)
}
