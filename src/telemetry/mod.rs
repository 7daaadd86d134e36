//! OpenTelemetry traces (`[telemetry]`): one server span per request and a
//! client span per upstream attempt, with OpenTelemetry's HTTP semantic
//! conventions plus `authgate.*` attributes, exported as OTLP/HTTP
//! protobuf (the official `opentelemetry-proto` messages) off the request
//! path ([`export`]). W3C `traceparent` is continued from the client when
//! it is well formed and passed to the upstream with the gateway's own
//! span ([`propagation`]).
//!
//! No attribute holds a credential: the path is recorded without its
//! query, and no header value is recorded but the `Host`'s host and port.
//! Without `[telemetry]` nothing here runs: the request context holds
//! `None` and no span is built.

mod export;
pub mod propagation;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

use crate::config::TelemetryConfig;
use crate::metrics::Metrics;

pub use export::{EXPORT_TIMEOUT, MAX_BATCH_SPANS, QUEUE_REQUESTS, TraceClient};
pub use propagation::{TRACEPARENT, TRACESTATE, TraceParent};

/// Longest `url.path` recorded; a longer path is cut (at a character
/// boundary) so one request cannot make a span of the URI's size.
const MAX_PATH_BYTES: usize = 1024;

/// The longest a clean shutdown waits for the spans still queued.
pub const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

/// Longest `server.address` recorded.
const MAX_HOST_BYTES: usize = 255;

/// The tracer of one configuration: the sampler and the export queue.
#[derive(Debug)]
pub struct Telemetry {
    sampler: Sampler,
    queue: export::Queue,
}

/// Samples new traces at a ratio, by their id: the same id, the same
/// decision.
#[derive(Debug, Clone, Copy)]
struct Sampler {
    /// Ids whose low 64 bits are below this are sampled.
    threshold: u64,
    /// Ratio 1: every id (the threshold cannot say it).
    always: bool,
}

impl Sampler {
    fn new(ratio: f64) -> Self {
        let ratio = ratio.clamp(0.0, 1.0);
        Sampler {
            // A saturating float-to-int conversion.
            threshold: (ratio * u64::MAX as f64) as u64,
            always: ratio >= 1.0,
        }
    }

    fn samples(self, trace_id: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        self.always || u64::from_be_bytes(low) < self.threshold
    }
}

impl Telemetry {
    /// Starts exporting to `config.traces_url` with `client`; dropped and
    /// exported spans are counted in `metrics`. Needs a Tokio runtime.
    pub fn start(
        config: &TelemetryConfig,
        client: TraceClient,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let resource = Resource {
            attributes: vec![
                text("service.name", &config.service_name),
                text("telemetry.sdk.name", "authgate"),
                text("telemetry.sdk.language", "rust"),
                text("service.version", env!("CARGO_PKG_VERSION")),
            ],
            ..Default::default()
        };
        Arc::new(Telemetry {
            sampler: Sampler::new(config.sample_ratio),
            queue: export::Queue::start(config.traces_url.clone(), resource, client, metrics),
        })
    }

    /// Sends the spans queued so far, waiting at most `limit`: at
    /// shutdown, so that the last requests' spans are not lost.
    pub async fn flush(&self, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, self.queue.flush()).await;
    }

    /// Starts `request`'s server span, arriving from `peer` (over TLS or
    /// not) for `client` (the peer, or the address a trusted proxy gave in
    /// `X-Forwarded-For`): the client's trace when its `traceparent` is well formed
    /// (sampled as it says), else a new one (sampled at the ratio).
    pub fn begin<B>(
        self: &Arc<Self>,
        request: &Request<B>,
        client: IpAddr,
        peer: IpAddr,
        tls: bool,
    ) -> Box<RequestTrace> {
        let started = Instant::now();
        let start_nanos = unix_nanos();
        let headers = request.headers();
        let (trace_id, parent, sampled, tracestate) = match TraceParent::from_headers(headers) {
            Some(parent) => (
                parent.trace_id,
                Some(parent.span_id),
                parent.sampled,
                propagation::tracestate(headers),
            ),
            None => {
                let trace_id = propagation::new_trace_id();
                (trace_id, None, self.sampler.samples(&trace_id), None)
            }
        };
        let span_id = propagation::new_span_id();
        let method = method_name(request.method());
        let span = sampled.then(|| {
            let uri = request.uri();
            let mut attributes = Vec::with_capacity(16);
            attributes.push(text("http.request.method", method));
            attributes.push(text("url.path", cut(uri.path(), MAX_PATH_BYTES)));
            attributes.push(text("url.scheme", if tls { "https" } else { "http" }));
            if let Some((host, port)) = server_address(uri, headers) {
                attributes.push(text("server.address", cut(host, MAX_HOST_BYTES)));
                if let Some(port) = port {
                    attributes.push(int("server.port", i64::from(port)));
                }
            }
            attributes.push(text(
                "network.protocol.version",
                protocol_version(request.version()),
            ));
            attributes.push(text("client.address", &client.to_string()));
            attributes.push(text("network.peer.address", &peer.to_string()));
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: parent.map(|id| id.to_vec()).unwrap_or_default(),
                trace_state: tracestate
                    .as_ref()
                    .and_then(|state| state.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                flags: SPAN_FLAGS | parent.map_or(0, |_| REMOTE_PARENT),
                kind: SpanKind::Server as i32,
                start_time_unix_nano: start_nanos,
                attributes,
                ..Default::default()
            }
        });
        Box::new(RequestTrace {
            telemetry: self.clone(),
            method,
            trace_id,
            span_id,
            sampled,
            tracestate,
            started,
            start_nanos,
            span,
            route: None,
            auth_method: None,
            attempts: Vec::new(),
        })
    }
}

/// `SpanFlags`: whether the parent is known to be local or remote is known.
const SPAN_FLAGS: u32 = 0x100;
/// `SpanFlags`: the parent is remote.
const REMOTE_PARENT: u32 = 0x200;

/// One request's trace: its ids, and its span while it is recorded.
#[derive(Debug)]
pub struct RequestTrace {
    telemetry: Arc<Telemetry>,
    /// `http.request.method`, the start of the span's name.
    method: &'static str,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
    tracestate: Option<HeaderValue>,
    started: Instant,
    start_nanos: u64,
    /// `None`: not sampled (ids are still propagated).
    span: Option<Span>,
    /// `(authgate.route, http.route)`.
    route: Option<(Box<str>, Option<Box<str>>)>,
    auth_method: Option<&'static str>,
    attempts: Vec<Span>,
}

/// An upstream attempt under way.
#[derive(Debug)]
pub struct Attempt {
    span: Option<Span>,
}

impl RequestTrace {
    fn now_nanos(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.start_nanos.saturating_add(elapsed)
    }

    /// The request goes to route `label`; `prefix` is the route's path
    /// prefix (`http.route`), `None` for the gateway's own endpoints.
    pub fn route(&mut self, label: &str, prefix: Option<&str>) {
        if self.span.is_some() {
            self.route = Some((label.into(), prefix.map(Into::into)));
        }
    }

    /// The caller authenticated with `method` (`jwt`, `accesskey`, ...).
    pub fn auth_method(&mut self, method: &'static str) {
        self.auth_method = Some(method);
    }

    /// An attempt to send `method` for `path` to `upstream` (`resend`: how
    /// many were made before it): `traceparent` in `headers` is replaced with the
    /// attempt's own span (and `tracestate` with the client's checked one,
    /// or none), so the upstream continues this trace.
    pub fn attempt(
        &mut self,
        headers: &mut HeaderMap,
        method: &Method,
        upstream: &Uri,
        path: &str,
        resend: u32,
    ) -> Attempt {
        let span_id = propagation::new_span_id();
        let parent = TraceParent {
            trace_id: self.trace_id,
            span_id,
            sampled: self.sampled,
        };
        headers.insert(TRACEPARENT.clone(), parent.header_value());
        match &self.tracestate {
            Some(state) => headers.insert(TRACESTATE.clone(), state.clone()),
            None => headers.remove(&TRACESTATE),
        };
        if self.span.is_none() {
            return Attempt { span: None };
        }
        let mut attributes = Vec::with_capacity(8);
        let method = method_name(method);
        attributes.push(text("http.request.method", method));
        if let Some(authority) = upstream.authority() {
            attributes.push(text("server.address", authority.host()));
            let port = authority.port_u16().unwrap_or(match upstream.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            attributes.push(int("server.port", i64::from(port)));
            attributes.push(text(
                "url.full",
                &format!(
                    "{}://{}{}",
                    upstream.scheme_str().unwrap_or("http"),
                    authority,
                    cut(path, MAX_PATH_BYTES)
                ),
            ));
        }
        if resend > 0 {
            attributes.push(int("http.request.resend_count", i64::from(resend)));
        }
        Attempt {
            span: Some(Span {
                trace_id: self.trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: self.span_id.to_vec(),
                trace_state: self
                    .tracestate
                    .as_ref()
                    .and_then(|state| state.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                flags: SPAN_FLAGS,
                name: method.to_owned(),
                kind: SpanKind::Client as i32,
                start_time_unix_nano: self.now_nanos(),
                attributes,
                ..Default::default()
            }),
        }
    }

    /// `attempt` got a response head with `Ok(status)`, or failed with
    /// `Err(error.type)` (`timeout`, `connect`, ...).
    pub fn attempt_ended(&mut self, attempt: Attempt, result: Result<StatusCode, &'static str>) {
        let Some(mut span) = attempt.span else {
            return;
        };
        span.end_time_unix_nano = self.now_nanos();
        match result {
            Ok(status) => {
                span.attributes
                    .push(int("http.response.status_code", i64::from(status.as_u16())));
                if status.is_client_error() || status.is_server_error() {
                    span.attributes.push(text("error.type", status.as_str()));
                    span.status = Some(error_status());
                }
            }
            Err(kind) => {
                span.attributes.push(text("error.type", kind));
                span.status = Some(error_status());
            }
        }
        self.attempts.push(span);
    }

    /// Ends the server span with the answer's `status`, how the request
    /// ended (`outcome`, `reason`), and queues it with its attempts.
    pub fn finish(mut self: Box<Self>, status: StatusCode, outcome: &str, reason: &str) {
        let end = self.now_nanos();
        let Some(mut span) = self.span.take() else {
            return;
        };
        span.end_time_unix_nano = end;
        span.attributes
            .push(int("http.response.status_code", i64::from(status.as_u16())));
        span.name = self.method.to_owned();
        if let Some((label, prefix)) = self.route.take() {
            if let Some(prefix) = prefix {
                span.name.push(' ');
                span.name.push_str(&prefix);
                span.attributes.push(text("http.route", &prefix));
            }
            span.attributes.push(text("authgate.route", &label));
        }
        if let Some(method) = self.auth_method {
            span.attributes.push(text("authgate.auth.method", method));
        }
        span.attributes.push(text("authgate.outcome", outcome));
        if !reason.is_empty() {
            span.attributes.push(text("authgate.reason", reason));
        }
        if status.is_server_error() {
            span.attributes.push(text("error.type", status.as_str()));
            span.status = Some(error_status());
        }
        let mut spans = std::mem::take(&mut self.attempts);
        spans.push(span);
        self.telemetry.queue.push(spans);
    }
}

fn error_status() -> Status {
    Status {
        code: SpanStatusCode::Error as i32,
        message: String::new(),
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// A known method's name, else `_OTHER` (semantic conventions): a client
/// cannot put text of its own there.
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// The host and port the client asked for: the target's authority, else
/// `Host`.
fn server_address<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<(&'a str, Option<u16>)> {
    if let Some(authority) = uri.authority() {
        return Some((authority.host(), authority.port_u16()));
    }
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let authority: http::uri::Authority = host.parse().ok()?;
    // `Authority::host` borrows the parsed copy: find the same text in `host`.
    let start = host.find(authority.host())?;
    Some((
        &host[start..start + authority.host().len()],
        authority.port_u16(),
    ))
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_samples_new_traces_by_id() {
        let at = |ratio: f64| {
            let sampler = Sampler::new(ratio);
            (0..10_000)
                .filter(|_| sampler.samples(&propagation::new_trace_id()))
                .count()
        };
        assert_eq!(at(0.0), 0);
        assert_eq!(at(1.0), 10_000);
        let half = at(0.5);
        assert!((4_500..5_500).contains(&half), "{half}");
    }

    #[test]
    fn cuts_at_character_boundaries() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcdef", 3), "abc");
        assert_eq!(cut("aé", 2), "a");
    }

    #[test]
    fn server_address_from_target_or_host() {
        let headers = |host: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::HOST, HeaderValue::from_str(host).unwrap());
            h
        };
        let origin: Uri = "/x".parse().unwrap();
        assert_eq!(
            server_address(&origin, &headers("api.example:8443")),
            Some(("api.example", Some(8443)))
        );
        assert_eq!(
            server_address(&origin, &headers("[::1]")),
            Some(("[::1]", None))
        );
        let absolute: Uri = "http://a.example:81/x".parse().unwrap();
        assert_eq!(
            server_address(&absolute, &headers("b")),
            Some(("a.example", Some(81)))
        );
        assert_eq!(server_address(&origin, &HeaderMap::new()), None);
    }
}
