//! One request's facts, gathered along the pipeline (request id, route,
//! who the caller is, time spent upstream) and reported once, at the end:
//! the access log line and the request metrics both come from
//! [`RequestContext::finish`], denials with their reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Response;
use http::header::HeaderValue;
use tracing::info;

use crate::auth::Identity;
use crate::body::Body;
use crate::error::GatewayError;
use crate::metrics::{Metrics, Outcome};
use crate::proxy::headers;
use crate::ratelimit::RateLimitAnswer;

/// What is known about a request so far.
#[derive(Debug)]
pub struct RequestContext {
    request_id: HeaderValue,
    started: Instant,
    route: Option<Arc<str>>,
    outcome: Outcome,
    upstream: Option<Duration>,
    /// A forward-authentication decision rather than a proxied request.
    verifying: bool,
    rate_limits: RateLimitAnswer,
}

impl RequestContext {
    /// A request that arrived now, with `request_id`.
    pub fn new(request_id: HeaderValue) -> Self {
        RequestContext {
            request_id,
            started: Instant::now(),
            route: None,
            outcome: Outcome::Public,
            upstream: None,
            verifying: false,
            rate_limits: RateLimitAnswer::default(),
        }
    }

    /// The request's id.
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The request is served by `label` (a route prefix or an own
    /// endpoint's name); `shown` goes into the request span.
    pub fn route(&mut self, label: Arc<str>, shown: &str) {
        tracing::Span::current().record("route", shown);
        self.route = Some(label);
    }

    /// The caller proved to be `identity`.
    pub fn caller(&mut self, identity: &Identity) {
        let span = tracing::Span::current();
        span.record("auth.method", identity.method.as_str());
        span.record("auth.user", &*identity.user);
    }

    /// The request asks `/_authgate/verify` for a decision: it is counted
    /// as one (by the judged route) and as a request of the endpoint.
    pub fn verifying(&mut self) {
        self.verifying = true;
    }

    /// How the request was served, unless it fails after all.
    pub fn served(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }

    /// The rate-limit rules that counted the request: their headers go on
    /// the answer, whatever it is.
    pub fn rate_limits(&mut self, answer: RateLimitAnswer) {
        self.rate_limits = answer;
    }

    /// The upstream took `elapsed` to answer (or fail).
    pub fn upstream_took(&mut self, elapsed: Duration) {
        self.upstream = Some(elapsed);
    }

    /// Turns the pipeline's result into the response, and counts and logs
    /// the request: once, whatever happened.
    pub fn finish(
        mut self,
        metrics: &Metrics,
        result: Result<Response<Body>, GatewayError>,
    ) -> Response<Body> {
        let mut response = match result {
            Ok(response) => response,
            Err(err) => {
                self.outcome = Outcome::Rejected(err.reason());
                if self.upstream.is_some()
                    && let Some(kind) = upstream_failure(&err)
                {
                    metrics.upstream_error(kind);
                }
                err.into_response(self.request_id.to_str().unwrap_or_default())
            }
        };
        self.rate_limits.add_headers(response.headers_mut());
        response
            .headers_mut()
            .insert(headers::X_REQUEST_ID.clone(), self.request_id);
        if let Some(upstream) = self.upstream {
            metrics.upstream(upstream);
        }
        let elapsed = self.started.elapsed();
        let mut route = self.route.unwrap_or_else(|| Arc::from("none"));
        let (outcome, reason) = self.outcome.label();
        if self.verifying {
            metrics.verify_decision(route, self.outcome);
            route = Arc::from(VERIFY_ROUTE_LABEL);
        }
        metrics.request(route, self.outcome, elapsed);
        info!(
            http.status = response.status().as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            outcome,
            reason,
            "access"
        );
        response
    }
}

/// The `route` label of verify requests in `authgate_requests_total`.
const VERIFY_ROUTE_LABEL: &str = "verify";

/// The upstream failure an error stands for, as counted in
/// `authgate_upstream_errors_total`.
fn upstream_failure(err: &GatewayError) -> Option<&'static str> {
    match err {
        GatewayError::UpstreamTimeout => Some("timeout"),
        GatewayError::UpstreamUnreachable => Some("unreachable"),
        GatewayError::UpstreamInvalidResponse => Some("invalid_response"),
        _ => None,
    }
}
