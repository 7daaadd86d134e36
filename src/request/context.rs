//! One request's facts, gathered along the pipeline (request id, route,
//! who the caller is, time spent upstream) and reported once, at the end:
//! the access log line and the request metrics both come from
//! [`RequestContext::finish`], denials with their reason.
//!
//! The access line is a record handed to [`crate::logging`], which formats
//! and writes it off the request path. The request's span is a debug span:
//! at the default level it costs nothing, and the access line carries its
//! fields itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::HeaderValue;
use http::{Method, Request, Response, Uri};
use tracing::{Span, debug_span, field};

use crate::auth::Identity;
use crate::body::Body;
use crate::client::ClientInfo;
use crate::error::GatewayError;
use crate::logging::{self, access::AccessRecord};
use crate::metrics::{Metrics, Outcome};
use crate::proxy::headers;
use crate::ratelimit::RateLimitAnswer;
use crate::request::address::client_address;
use crate::request::id::request_id;
use crate::telemetry::{RequestTrace, Telemetry};

/// What is known about a request so far.
#[derive(Debug)]
pub struct RequestContext {
    request_id: HeaderValue,
    started: Instant,
    method: Method,
    uri: Uri,
    client: SocketAddr,
    /// The client's address as counted: the peer, or what trusted proxies say.
    client_ip: IpAddr,
    tls: bool,
    route: Option<Arc<str>>,
    caller: Option<(&'static str, Arc<str>)>,
    outcome: Outcome,
    upstream: Option<Duration>,
    /// A forward-authentication decision rather than a proxied request.
    verifying: bool,
    rate_limits: RateLimitAnswer,
    span: Span,
    /// With `[telemetry]`: the request's OpenTelemetry trace.
    trace: Option<Box<RequestTrace>>,
}

impl RequestContext {
    /// `request`, arriving now from `client`; its id and the client's
    /// address (`X-Forwarded-For` believed only from `trusted_proxies`)
    /// are read here, once. Traced with `telemetry` when there is one.
    pub fn new<B>(
        request: &Request<B>,
        client: &ClientInfo,
        trusted_proxies: &[ipnet::IpNet],
        telemetry: Option<&Arc<Telemetry>>,
    ) -> Self {
        let request_id = request_id(request.headers());
        let client_ip = client_address(client.addr.ip(), request.headers(), trusted_proxies);
        let span = debug_span!(
            "request",
            request.id = request_id.to_str().unwrap_or_default(),
            http.method = %request.method(),
            http.target = %crate::logging::redact::redact_target(request.uri()),
            route = field::Empty,
            auth.method = field::Empty,
            auth.user = field::Empty,
        );
        RequestContext {
            request_id,
            started: Instant::now(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            client: client.addr,
            client_ip,
            tls: client.tls,
            route: None,
            caller: None,
            outcome: Outcome::Public,
            upstream: None,
            verifying: false,
            rate_limits: RateLimitAnswer::default(),
            span,
            trace: telemetry
                .map(|telemetry| telemetry.begin(request, client_ip, client.addr.ip(), client.tls)),
        }
    }

    /// The request's span, for the pipeline to run in.
    pub fn span(&self) -> Span {
        self.span.clone()
    }

    /// The request's id.
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The request's id and, with `[telemetry]`, its trace: what
    /// forwarding needs.
    pub fn forwarding(&mut self) -> (&HeaderValue, Option<&mut RequestTrace>) {
        (&self.request_id, self.trace.as_deref_mut())
    }

    /// The client's address as rate limits and throttles count it.
    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    /// The request is served by `label` (a route prefix or an own
    /// endpoint's name); `shown` goes into the request span.
    pub fn route(&mut self, label: Arc<str>, shown: &str) {
        if !self.span.is_disabled() {
            self.span.record("route", shown);
        }
        if let Some(trace) = &mut self.trace {
            // Routes are shown by their path prefix, own endpoints by name.
            trace.route(&label, shown.starts_with('/').then_some(shown));
        }
        self.route = Some(label);
    }

    /// The caller proved to be `identity`.
    pub fn caller(&mut self, identity: &Identity) {
        let method = identity.method.as_str();
        if !self.span.is_disabled() {
            self.span.record("auth.method", method);
            self.span.record("auth.user", &**identity.user());
        }
        if let Some(trace) = &mut self.trace {
            trace.auth_method(method);
        }
        self.caller = Some((method, identity.user().clone()));
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
            .insert(headers::X_REQUEST_ID.clone(), self.request_id.clone());
        if let Some(upstream) = self.upstream {
            metrics.upstream(upstream);
        }
        let elapsed = self.started.elapsed();
        let (outcome, reason) = self.outcome.label();
        let status = response.status().as_u16();
        let route = self.route.clone();
        if let Some(trace) = self.trace.take() {
            trace.finish(response.status(), outcome, reason);
        }
        logging::access(|| AccessRecord {
            time: SystemTime::now(),
            client: self.client,
            tls: self.tls,
            request_id: self.request_id,
            method: self.method,
            uri: self.uri,
            route,
            caller: self.caller,
            status,
            latency: elapsed,
            outcome,
            reason,
        });
        let mut route = self.route.unwrap_or_else(|| Arc::from("none"));
        if self.verifying {
            metrics.verify_decision(route, self.outcome);
            route = Arc::from(VERIFY_ROUTE_LABEL);
        }
        metrics.request(route, self.outcome, elapsed);
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
