//! Forwarding to upstreams: a pooled client for each worker thread, built
//! once, and the request and response rewriting around it.

pub mod assertion;
pub mod connections;
pub mod headers;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::{Instrument, debug, info, warn};

use crate::auth::extract::{Sources, strip_credential_headers, strip_credential_query};
use crate::auth::{Identity, Permit};
use crate::body::{self, Body};
use crate::client::{Activity, ActivityIo, ClientInfo, ConnectionSlot, idle_for};
use crate::config::{Limits, UpstreamConfig};
use crate::error::GatewayError;
use crate::proxy::assertion::Assertions;
use crate::proxy::connections::{Connections, LeasedBody, UpstreamError};
use crate::routes::{PrefixRewrite, Route};
use crate::telemetry::RequestTrace;
use crate::tls::{self, TlsError};

/// Resolves when the credential a WebSocket was opened with stops working
/// (see [`crate::auth::Authenticator::until_revoked`]); the tunnel closes then.
pub type CredentialWatch = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What the request layer read of a request once, passed on as it was read.
pub struct ReadOnce<'a> {
    /// The [`headers::requested_authority`] the route was chosen by, for
    /// `X-Forwarded-Host`.
    pub forwarded_host: Option<HeaderValue>,
    /// The request's id, for `X-Request-Id` both ways.
    pub request_id: &'a HeaderValue,
}

/// The pooled upstream clients, for `http://` and `https://` upstreams.
pub struct Forwarder {
    /// One per worker ([`crate::workers`]): a pooled connection's task runs
    /// on the worker that opened it, so a request handed to another
    /// worker's connection would cross threads twice.
    clients: Box<[Connections]>,
    max_body_bytes: Option<u64>,
    idle_timeout: Duration,
    /// `[assertion]`: signs `X-Auth-Assertion` for authenticated requests.
    assertions: Option<Assertions>,
    /// Where credentials may be, so that all of them are stripped.
    sources: Sources,
}

impl Forwarder {
    /// Builds the client once: connect timeout, idle timeout with a pool
    /// timer (without one idle connections are never reaped), idle cap, and
    /// rustls for `https://` upstreams with the system's CA roots plus
    /// `upstream.ca_file`, and `upstream.client_cert` when set. Request
    /// bodies are capped at `limits.max_proxy_body_bytes`, and upgraded
    /// connections close after `limits.idle_timeout` without traffic.
    pub fn try_new(
        config: &UpstreamConfig,
        limits: &Limits,
        assertions: Option<Assertions>,
    ) -> Result<Self, TlsError> {
        let tls = tls::upstream_config(config)?;
        let clients = (0..crate::workers::count())
            .map(|_| {
                Connections::new(
                    connector(config, tls.clone()),
                    config.pool_idle_timeout,
                    config.pool_max_idle_per_host,
                )
            })
            .collect();
        Ok(Forwarder {
            clients,
            max_body_bytes: limits.max_proxy_body_bytes,
            idle_timeout: limits.idle_timeout,
            assertions,
            sources: Sources::default(),
        })
    }

    /// Strips the credentials of `sources` (the configured access-key
    /// header) instead of the defaults.
    pub fn with_credential_sources(mut self, sources: Sources) -> Self {
        self.sources = sources;
        self
    }

    /// The current worker's client.
    fn client(&self) -> &Connections {
        let worker = crate::workers::current();
        &self.clients[worker.min(self.clients.len() - 1)]
    }

    /// Forwards a checked request to its permit's route's upstream and relays the
    /// response head; bodies stream both ways. With `trace` every attempt
    /// is a span of its own, whose `traceparent` the upstream receives.
    ///
    /// A body over `limits.max_proxy_body_bytes` is refused with 413: at
    /// once when its `Content-Length` says so (the upstream sees nothing),
    /// else when the limit is crossed while streaming (the upstream sees the
    /// head and a truncated body, then the connection closes, so it never
    /// gets a complete request). A body the client cannot deliver (a
    /// malformed chunked encoding) is refused with 400 the same way.
    ///
    /// Only a checked WebSocket handshake is upgraded: every other upgrade
    /// token is stripped before forwarding, and a 101 that the gateway did
    /// not ask for, or that switches to anything but WebSocket, is a 502
    /// and never spliced. A spliced WebSocket is closed when `until_revoked`
    /// resolves.
    ///
    /// Beyond `limits.max_upstream_requests` in flight to the route's
    /// upstream the answer is 503 at once; a request counts until its
    /// response body ends, a WebSocket tunnel until it closes.
    pub async fn forward(
        &self,
        permit: Permit<'_>,
        mut request: Request<Incoming>,
        client: ClientInfo,
        read: ReadOnce<'_>,
        until_revoked: Option<CredentialWatch>,
        mut trace: Option<&mut RequestTrace>,
    ) -> Result<Response<Body>, GatewayError> {
        let ReadOnce {
            forwarded_host,
            request_id,
        } = read;
        let websocket =
            headers::is_websocket_handshake(request.method(), request.version(), request.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
        let route = permit.route();
        // The judgement refuses these already; a verify-only route never
        // forwards, whatever called this.
        let mut upstream = route.upstream.as_ref().ok_or(GatewayError::NoRoute)?;
        let worker = crate::workers::current();
        // A pool's member in turn, and that member's bound.
        let mut member = None;
        if let Some(pool) = &route.pool {
            let picked = pool
                .pick(worker, Instant::now(), None)
                .ok_or(GatewayError::UpstreamUnreachable)?;
            upstream = &pool.members()[picked].uri;
            member = Some(picked);
        }
        let counter = match (&route.pool, member) {
            (Some(pool), Some(picked)) => &pool.members()[picked].in_flight,
            _ => &route.in_flight,
        };
        let mut in_flight = Some(counter.try_enter().ok_or(GatewayError::UpstreamBusy)?);
        let (mut parts, incoming) = request.into_parts();
        if route.rewrite != PrefixRewrite::Keep {
            parts.uri = rewritten_uri(route, &parts.uri)?;
        }
        if let Some(limit) = self.max_body_bytes
            && declared_length(&parts.headers).is_some_and(|length| length > limit)
        {
            return Err(GatewayError::BodyTooLarge);
        }
        // A request without a body that could not connect may go to
        // another member once: nothing of it reached an upstream. One with
        // a body never is (the body may have been sent in part).
        let retry_head = (route
            .pool
            .as_ref()
            .is_some_and(|pool| pool.members().len() > 1)
            && incoming.is_end_stream())
        .then(|| (copy_head(&parts), forwarded_host.clone()));
        self.head_for(
            &mut parts,
            upstream,
            forwarded_host,
            &permit,
            &client,
            request_id,
        )?;

        let (body, fault) = CappedBody::new(incoming, self.max_body_bytes);
        let mut attempt = self
            .attempt(
                parts,
                body,
                upstream,
                route.timeout,
                trace.as_deref_mut(),
                0,
            )
            .await;
        if let (Some(pool), Some(picked)) = (&route.pool, member) {
            let failed = !matches!(attempt, Ok(Ok(_))) && fault.get().is_none();
            if failed {
                pool.failed(worker, picked, Instant::now());
            } else {
                pool.succeeded(worker, picked);
            }
            let connect_failed = matches!(&attempt, Ok(Err(err)) if err.is_connect());
            if connect_failed
                && let Some((mut head, forwarded_host)) = retry_head
                && let Some(other) = pool.pick(worker, Instant::now(), Some(picked))
            {
                let retry_upstream = &pool.members()[other].uri;
                warn!(upstream = %upstream, retry = %retry_upstream, "upstream refused the connection; trying another once");
                // The bound of the member tried now.
                in_flight = Some(
                    pool.members()[other]
                        .in_flight
                        .try_enter()
                        .ok_or(GatewayError::UpstreamBusy)?,
                );
                upstream = retry_upstream;
                self.head_for(
                    &mut head,
                    upstream,
                    forwarded_host,
                    &permit,
                    &client,
                    request_id,
                )?;
                attempt = self
                    .attempt(head, CappedBody::empty(), upstream, route.timeout, trace, 1)
                    .await;
                if matches!(attempt, Ok(Ok(_))) {
                    pool.succeeded(worker, other);
                } else {
                    pool.failed(worker, other, Instant::now());
                }
            }
        }
        let mut response = match attempt {
            Err(_elapsed) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(err)) => match fault.get() {
                Some(BodyFault::OverLimit) => return Err(GatewayError::BodyTooLarge),
                Some(BodyFault::Malformed) => return Err(GatewayError::InvalidBody),
                None => {
                    warn!(%upstream, connect = err.is_connect(), error = %err, "upstream request failed");
                    return Err(GatewayError::UpstreamUnreachable);
                }
            },
            Ok(Ok(response)) => response,
        };

        // A tunnel is opened only for a WebSocket handshake the gateway
        // checked and forwarded, and only to WebSocket: after any other 101
        // the bytes that follow would reach the upstream unauthenticated.
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let Some(client_upgrade) =
                client_upgrade.filter(|_| headers::switches_to_websocket(response.headers()))
            else {
                warn!(
                    %upstream,
                    asked = websocket,
                    "upstream switched protocols unasked or not to WebSocket; refused, not tunnelled"
                );
                return Err(GatewayError::UpstreamInvalidResponse);
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let tunnel = splice(
                client_upgrade,
                upstream_upgrade,
                self.idle_timeout,
                client.slot,
                until_revoked,
            );
            tokio::spawn(
                crate::inflight::holding(in_flight.take(), tunnel)
                    .instrument(tracing::Span::current()),
            );
        }
        let (mut parts, incoming) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, switching);
        parts
            .headers
            .insert(headers::X_REQUEST_ID.clone(), request_id.clone());
        let body = crate::inflight::InFlightBody::new(incoming, in_flight);
        Ok(Response::from_parts(parts, body::boxed(body)))
    }
}

/// What one attempt at an upstream came to: the response, the upstream's
/// failure, or the route's timeout.
type Attempted = Result<Result<Response<LeasedBody>, UpstreamError>, tokio::time::error::Elapsed>;

impl Forwarder {
    /// Sends a rewritten head and `body` to `upstream` within `timeout`;
    /// with `trace`, as a span of its own (`resend`: attempts before it)
    /// whose `traceparent` the upstream receives.
    async fn attempt(
        &self,
        mut head: Parts,
        body: CappedBody,
        upstream: &Uri,
        timeout: Duration,
        mut trace: Option<&mut RequestTrace>,
        resend: u32,
    ) -> Attempted {
        let traced = trace.as_deref_mut().map(|trace| {
            trace.attempt(
                &mut head.headers,
                &head.method,
                upstream,
                head.uri.path(),
                resend,
            )
        });
        let outbound = Request::from_parts(head, body);
        let attempt = tokio::time::timeout(timeout, self.client().send(upstream, outbound)).await;
        if let (Some(trace), Some(traced)) = (trace, traced) {
            trace.attempt_ended(traced, attempt_result(&attempt));
        }
        attempt
    }

    /// The head `upstream` receives: rewritten ([`rewrite_head`], every
    /// credential source stripped) and, with `[assertion]`, the signed
    /// identity assertion for it.
    fn head_for(
        &self,
        parts: &mut Parts,
        upstream: &Uri,
        forwarded_host: Option<HeaderValue>,
        permit: &Permit<'_>,
        client: &ClientInfo,
        request_id: &HeaderValue,
    ) -> Result<(), GatewayError> {
        rewrite_head(
            parts,
            upstream,
            forwarded_host,
            permit.identity(),
            client,
            request_id,
            &self.sources,
        )?;
        if let (Some(assertions), Some(identity)) = (&self.assertions, permit.identity()) {
            // Fail closed: an upstream that expects assertions must never
            // see an authenticated request without one.
            let assertion = assertions
                .header_for(
                    identity,
                    permit.route(),
                    &parts.method,
                    parts.uri.path(),
                    request_id,
                    crate::clock::unix_now(),
                )
                .ok_or(GatewayError::Internal)?;
            parts
                .headers
                .insert(crate::proxy::assertion::X_AUTH_ASSERTION.clone(), assertion);
        }
        Ok(())
    }
}

/// Rewrites a request head for the upstream, in place: the upstream URI
/// (its authority, its path prefix, the request path unchanged and the
/// query without credentials), HTTP/1.1, no hop-by-hop headers (and no
/// `Upgrade` but `websocket` on a checked WebSocket handshake), no
/// credential, one `Cookie` header, no client-sent identity headers, the identity of
/// `identity` (none on public routes), `X-Forwarded-*` (`X-Forwarded-Host`:
/// `forwarded_host`, the [`headers::requested_authority`] the route was
/// chosen by), the client certificate subject, the request id, and `Host`
/// set to the upstream's authority. Pure: no I/O, so it can be tested and
/// fuzzed on its own.
pub fn rewrite_head(
    parts: &mut Parts,
    upstream: &Uri,
    forwarded_host: Option<HeaderValue>,
    identity: Option<&Identity>,
    client: &ClientInfo,
    request_id: &HeaderValue,
    sources: &Sources,
) -> Result<(), GatewayError> {
    let websocket = headers::is_websocket_handshake(&parts.method, parts.version, &parts.headers);
    parts.uri = upstream_uri(upstream, &parts.uri)?;
    parts.version = Version::HTTP_11;

    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h, websocket);
    strip_credential_headers(h, sources);
    headers::join_cookie_headers(h);
    headers::remove_identity_headers(h);
    if let Some(identity) = identity {
        headers::set_identity_headers(h, identity);
    }
    headers::set_forwarded(h, &client.ip, client.proto(), forwarded_host);
    headers::set_client_cert_subject(h, client.cert_subject.as_deref());
    h.insert(headers::X_REQUEST_ID.clone(), request_id.clone());
    match upstream
        .authority()
        .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
    {
        Some(host) => {
            h.insert(header::HOST, host);
        }
        None => {
            h.remove(header::HOST);
        }
    }
    Ok(())
}

/// An upstream attempt's result for its span: the response status, or
/// the semantic conventions' `error.type`.
fn attempt_result(attempt: &Attempted) -> Result<StatusCode, &'static str> {
    match attempt {
        Ok(Ok(response)) => Ok(response.status()),
        Ok(Err(err)) if err.is_connect() => Err("connect"),
        Ok(Err(_)) => Err("request"),
        Err(_elapsed) => Err("timeout"),
    }
}

/// The `Content-Length` the client declared (hyper has already refused
/// conflicting or malformed ones).
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}

/// Why a request body stopped on its way to the upstream, when the fault
/// was the client's: the gateway answers for it (413, 400) instead of
/// blaming the upstream (502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// More than `limits.max_proxy_body_bytes` came.
    OverLimit,
    /// The client's body could not be read: a malformed chunked encoding,
    /// or the connection ended inside the body.
    Malformed,
}

/// Shared between a [`CappedBody`] and the request that sent it.
#[derive(Debug, Default)]
pub struct BodyFaultFlag(AtomicU8);

impl BodyFaultFlag {
    const NONE: u8 = 0;
    const OVER_LIMIT: u8 = 1;
    const MALFORMED: u8 = 2;

    fn set(&self, fault: BodyFault) {
        let value = match fault {
            BodyFault::OverLimit => Self::OVER_LIMIT,
            BodyFault::Malformed => Self::MALFORMED,
        };
        self.0.store(value, Ordering::Release);
    }

    /// The fault, if the body stopped because of one.
    pub fn get(&self) -> Option<BodyFault> {
        match self.0.load(Ordering::Acquire) {
            Self::NONE => None,
            Self::OVER_LIMIT => Some(BodyFault::OverLimit),
            _ => Some(BodyFault::Malformed),
        }
    }
}

/// A request body streamed to the upstream that fails, and flags why, once
/// more than its limit has passed or the client's body cannot be read;
/// nothing is buffered.
pub struct CappedBody {
    /// `None`: an empty body (a retried request without one).
    inner: Option<Incoming>,
    remaining: u64,
    fault: Arc<BodyFaultFlag>,
}

/// The body went over `limits.max_proxy_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is over limits.max_proxy_body_bytes")]
pub struct BodyOverLimit;

impl CappedBody {
    /// `inner` capped at `limit` bytes (`None`: no cap), and the flag that
    /// tells whether and why it stopped early.
    pub fn new(inner: Incoming, limit: Option<u64>) -> (Self, Arc<BodyFaultFlag>) {
        let fault = Arc::new(BodyFaultFlag::default());
        let body = CappedBody {
            inner: Some(inner),
            remaining: limit.unwrap_or(u64::MAX),
            fault: fault.clone(),
        };
        (body, fault)
    }
}

impl CappedBody {
    /// An empty body.
    pub fn empty() -> Self {
        CappedBody {
            inner: None,
            remaining: 0,
            fault: Arc::new(BodyFaultFlag::default()),
        }
    }
}

/// A copy of a request head as the client sent it (method, target,
/// version, fields), for sending it again elsewhere; extensions are not
/// copied (nothing after the first attempt reads them).
fn copy_head(parts: &Parts) -> Parts {
    let mut copy = Request::new(()).into_parts().0;
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

impl HttpBody for CappedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(err))) => {
                self.fault.set(BodyFault::Malformed);
                return Poll::Ready(Some(Err(err.into())));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let length = u64::try_from(data.len()).unwrap_or(u64::MAX);
            if length > self.remaining {
                self.fault.set(BodyFault::OverLimit);
                return Poll::Ready(Some(Err(BodyOverLimit.into())));
            }
            self.remaining -= length;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

/// A pooled HTTP(S) client with the upstream settings, for any body type.
pub fn pooled_client<B>(
    config: &UpstreamConfig,
) -> Result<Client<HttpsConnector<HttpConnector>, B>, TlsError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    Ok(client_with(config, tls::upstream_config(config)?))
}

/// [`pooled_client`] with rustls settings already built.
fn client_with<B>(
    config: &UpstreamConfig,
    tls: rustls::ClientConfig,
) -> Client<HttpsConnector<HttpConnector>, B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .build(connector(config, tls))
}

/// Opens plain or TLS connections to upstreams: the connect timeout,
/// `TCP_NODELAY`, and rustls with `tls` for `https://`.
fn connector(config: &UpstreamConfig, tls: rustls::ClientConfig) -> HttpsConnector<HttpConnector> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector)
}

/// The copy buffer of each direction of an upgraded connection. tokio's
/// default is 8 KiB, zeroed, so an idle WebSocket would hold 16 KiB of
/// resident buffers; WebSocket frames are small, and a larger message
/// just takes more reads.
const SPLICE_BUFFER_BYTES: usize = 4096;

/// Joins both sides of an upgraded connection until either closes or no
/// byte has moved for `idle_timeout`, or until the credential it was opened
/// with stops working. Holds the client connection's slot under
/// `limits.max_connections` until then.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    idle_timeout: Duration,
    slot: Option<ConnectionSlot>,
    until_revoked: Option<CredentialWatch>,
) {
    let _slot = slot;
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let activity = Arc::new(Activity::new());
            let mut client = ActivityIo::new(TokioIo::new(client), activity.clone());
            let mut upstream = TokioIo::new(upstream);
            let copy = tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut upstream,
                SPLICE_BUFFER_BYTES,
                SPLICE_BUFFER_BYTES,
            );
            tokio::select! {
                result = copy => match result {
                    Ok((up, down)) => debug!(
                        bytes.up = up,
                        bytes.down = down,
                        "upgraded connection closed"
                    ),
                    Err(err) => debug!(error = %err, "upgraded connection ended with an error"),
                },
                _ = idle_for(&activity, idle_timeout) => debug!("closing idle upgraded connection"),
                () = revoked(until_revoked) => {
                    info!("closing upgraded connection: its credential stopped working");
                }
            }
        }
        Err(err) => debug!(error = %err, "upgrade did not complete"),
    }
}

/// Resolves when `watch` does; never without one (a public route's tunnel).
async fn revoked(watch: Option<CredentialWatch>) {
    match watch {
        Some(watch) => watch.await,
        None => std::future::pending().await,
    }
}

/// `uri` with its path's prefix stripped or replaced as `route` says, its
/// authority and query kept (the authority is still the client's, for
/// `X-Forwarded-Host`). The rewritten path passes the path policy again.
fn rewritten_uri(route: &Route, uri: &Uri) -> Result<Uri, GatewayError> {
    let path = route
        .upstream_path(uri.path())
        .ok_or(GatewayError::InvalidPath)?;
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.into_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(path_and_query).map_err(|_| GatewayError::InvalidPath)?);
    Uri::from_parts(parts).map_err(|_| GatewayError::Internal)
}

/// The target sent upstream, in origin form: the upstream's own path
/// prefix (if any) followed by the request path, and the query without
/// credentials. The upstream's scheme and authority say where it goes.
fn upstream_uri(upstream: &Uri, request: &Uri) -> Result<Uri, GatewayError> {
    let base = upstream.path().trim_end_matches('/');
    let path = request.path();
    let query = request.query().and_then(strip_credential_query);
    let mut path_and_query =
        String::with_capacity(base.len() + path.len() + 1 + query.as_ref().map_or(0, |q| q.len()));
    path_and_query.push_str(base);
    path_and_query.push_str(path);
    if let Some(query) = query {
        path_and_query.push('?');
        path_and_query.push_str(&query);
    }
    let path_and_query =
        PathAndQuery::try_from(path_and_query).map_err(|_| GatewayError::InvalidPath)?;
    Ok(Uri::from(path_and_query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uris() {
        let cases = [
            (
                "http://127.0.0.1:9000",
                "/a/b?x=1&token=t&y=2",
                "/a/b?x=1&y=2",
            ),
            ("http://127.0.0.1:9000/", "/a?token=t", "/a"),
            ("http://up:80/base/", "/a/b", "/base/a/b"),
            ("http://up/base", "/?q=%20", "/base/?q=%20"),
            ("http://up", "/x?accesskey=k", "/x"),
        ];
        for (upstream, request, expected) in cases {
            let uri = upstream_uri(&upstream.parse().unwrap(), &request.parse().unwrap()).unwrap();
            assert_eq!(uri.to_string(), expected, "{upstream} + {request}");
        }
    }

    #[test]
    fn rewritten_heads_carry_no_credential_and_the_upstream_host() {
        let request = Request::builder()
            .uri("http://evil.example/admin/x?a=1&token=secret&b=2")
            .header("host", "Evil.Example.")
            .header("authorization", "Bearer secret")
            .header("cookie", "token=secret; theme=dark")
            .header("x-auth-user", "root")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        let client = ClientInfo::new("192.0.2.1:5000".parse().unwrap(), true);
        let upstream: Uri = "http://127.0.0.1:9000/base".parse().unwrap();
        let id = HeaderValue::from_static("req-1");
        // The service reads the authority once, for routing; the same
        // value is forwarded.
        let forwarded_host = headers::requested_authority(&parts.uri, &parts.headers).unwrap();
        rewrite_head(
            &mut parts,
            &upstream,
            forwarded_host,
            None,
            &client,
            &id,
            &Sources::default(),
        )
        .unwrap();
        assert_eq!(parts.uri.to_string(), "/base/admin/x?a=1&b=2");
        let h = &parts.headers;
        assert_eq!(h["host"], "127.0.0.1:9000");
        assert_eq!(h["x-forwarded-host"], "evil.example");
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["cookie"], "theme=dark");
        assert_eq!(h["x-request-id"], "req-1");
        for gone in ["authorization", "x-auth-user", "connection", "x-hop"] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        // (Two `Host` fields, or a target naming another host than `Host`,
        // are refused by `requested_authority` before any rewriting: see
        // its tests in `headers`.)
    }
}
