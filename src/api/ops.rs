//! Operations endpoints: health, readiness, metrics and the JWK set.

use std::sync::atomic::Ordering;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::{Context, json};
use crate::body::{self, Body};
use crate::error::GatewayError;

/// `GET /healthz`: the process is up.
pub fn healthz() -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: the store answers.
pub async fn readyz(ctx: &Context<'_>) -> Result<Response<Body>, GatewayError> {
    ctx.gateway.store.ping().await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "status": "ready" }),
    ))
}

/// The certificate resolver's counters (zero without TLS).
fn tls_figures(gateway: &crate::gateway::Gateway) -> crate::metrics::TlsFigures {
    gateway
        .certificates
        .as_ref()
        .map(|certificates| crate::metrics::TlsFigures {
            reloads: certificates.reloads.load(Ordering::Relaxed),
            reload_failures: certificates.reload_failures.load(Ordering::Relaxed),
        })
        .unwrap_or_default()
}

/// `GET /metrics`: Prometheus text format.
pub fn metrics(ctx: &Context<'_>) -> Response<Body> {
    let gateway = ctx.gateway;
    let (users, keys) = gateway.cache.sizes();
    let stats = &gateway.cache.stats;
    let text = gateway.metrics.render(
        crate::metrics::CacheFigures {
            hits: stats.hits.load(Ordering::Relaxed),
            misses: stats.misses.load(Ordering::Relaxed),
            evictions: stats.evictions.load(Ordering::Relaxed),
            users,
            keys,
            tokens: gateway.auth.token_cache().len(),
        },
        tls_figures(gateway),
    );
    let mut text = text;
    let pools: Vec<(&str, &crate::pool::UpstreamPool)> = gateway
        .config
        .routes
        .pools()
        .into_iter()
        .map(|(label, pool)| (label, &**pool))
        .collect();
    crate::pool::render_metrics(&pools, std::time::Instant::now(), &mut text);
    let mut response = Response::new(body::full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

/// `GET /.well-known/jwks.json`: the public verification keys. HS256
/// secrets are never published, so with HS256 alone the set is empty.
pub fn jwks(ctx: &Context<'_>) -> Response<Body> {
    let mut response = json(StatusCode::OK, &ctx.gateway.auth.jwt().jwks());
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
