//! Connections to upstreams: for each worker, idle HTTP/1.1 connections
//! kept per upstream, each a hyper `client::conn::http1` sender whose
//! connection task runs on the worker that opened it.
//!
//! In place of hyper-util's pooled client, which per request checks a
//! connection out under a SipHash'd key, re-checks its readiness and
//! spawns a task that puts it back: here a request takes the newest idle
//! sender of its upstream (a short linear search: upstreams are the
//! configured ones) and the response body hands it back when it ends.
//! hyper still parses and writes every byte.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Uri};
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;
use tracing::debug;

use super::CappedBody;

type Sender = SendRequest<CappedBody>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an upstream attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection: refused, unreachable, timed out connecting, or the
    /// TLS handshake failed. Nothing of the request was sent.
    #[error("connecting: {0}")]
    Connect(BoxError),
    /// The HTTP/1.1 exchange failed after the connection was open.
    #[error("{0}")]
    Request(hyper::Error),
}

impl UpstreamError {
    /// Whether the attempt failed before any byte of the request left, so
    /// that another upstream may be tried.
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
}

/// One worker's idle connections, by upstream.
pub struct Connections {
    connector: HttpsConnector<HttpConnector>,
    handshake: http1::Builder,
    idle: Arc<IdlePool>,
}

/// The idle senders of each upstream that has had one. Upstreams are only
/// ever added (they come from the configuration, and a reload builds new
/// pools), so an upstream's index stays valid.
struct IdlePool {
    state: Mutex<IdleState>,
    idle_timeout: Duration,
    max_idle_per_upstream: usize,
}

#[derive(Default)]
struct IdleState {
    upstreams: Vec<IdleUpstream>,
    /// Whether a task is sweeping expired connections.
    sweeping: bool,
}

struct IdleUpstream {
    https: bool,
    authority: Authority,
    /// Oldest first: the newest is taken, the oldest expire and are dropped
    /// when the upstream has too many.
    senders: VecDeque<IdleSender>,
}

struct IdleSender {
    sender: Sender,
    since: Instant,
}

/// A sender on loan for one exchange: it goes back to its upstream's idle
/// connections when the response has ended, and is closed otherwise.
pub struct Lease {
    sender: Sender,
    upstream: usize,
    pool: Weak<IdlePool>,
}

impl Connections {
    /// `connector` opens connections (plain or TLS, with its own connect
    /// timeout); idle ones are closed after `idle_timeout`, and at most
    /// `max_idle_per_upstream` are kept for each upstream.
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        idle_timeout: Duration,
        max_idle_per_upstream: usize,
    ) -> Self {
        Connections {
            connector,
            handshake: http1::Builder::new(),
            idle: Arc::new(IdlePool {
                state: Mutex::new(IdleState::default()),
                idle_timeout,
                max_idle_per_upstream,
            }),
        }
    }

    /// Sends `request` to `upstream` (its scheme and authority) on an idle
    /// connection, or a new one; the request's URI is sent in origin form.
    /// A request an idle connection closed under before taking it is sent
    /// again on another: none of it left. The lease goes with the response
    /// body ([`LeasedBody`]).
    pub async fn send(
        &self,
        upstream: &Uri,
        mut request: Request<CappedBody>,
    ) -> Result<Response<LeasedBody>, UpstreamError> {
        origin_form(request.uri_mut());
        // After a 101, or a 2xx to CONNECT, the connection is no longer
        // HTTP: it is never lent again.
        let connect = request.method() == http::Method::CONNECT;
        let https = upstream.scheme() == Some(&http::uri::Scheme::HTTPS);
        let authority = upstream
            .authority()
            .ok_or_else(|| UpstreamError::Connect("the upstream URI has no authority".into()))?;
        let (upstream_index, mut taken) = self.idle.checkout(https, authority);
        loop {
            let (mut sender, reused) = match taken {
                Some(sender) => (sender, true),
                // Boxed: a connection's setup (the TLS stream among it)
                // would otherwise size every request's future, which hyper
                // moves on each request.
                None => (Box::pin(self.connect(upstream)).await?, false),
            };
            if reused && sender.ready().await.is_err() {
                taken = self.idle.take(upstream_index);
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    let upgraded = status == http::StatusCode::SWITCHING_PROTOCOLS
                        || (connect && status.is_success());
                    let lease = (!upgraded).then(|| Lease {
                        sender,
                        upstream: upstream_index,
                        pool: Arc::downgrade(&self.idle),
                    });
                    return Ok(response.map(|body| LeasedBody::new(body, lease)));
                }
                Err(mut failed) => match failed.take_message() {
                    // An idle connection the upstream closed as the
                    // request came: it never left, so it may go again.
                    Some(unsent) if reused => {
                        request = unsent;
                        taken = self.idle.take(upstream_index);
                    }
                    _ => return Err(UpstreamError::Request(failed.into_error())),
                },
            }
        }
    }

    /// A new connection to `upstream`, its task spawned on this worker.
    async fn connect(&self, upstream: &Uri) -> Result<Sender, UpstreamError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(UpstreamError::Connect)?;
        let io = connector
            .call(upstream.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        let (sender, connection) = self
            .handshake
            .handshake(io)
            .await
            .map_err(UpstreamError::Request)?;
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

impl IdlePool {
    fn lock(&self) -> MutexGuard<'_, IdleState> {
        // A panic while holding it leaves only idle senders behind.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The index of `https`, `authority`'s idle list (added if new) and
    /// its newest usable sender, under one lock.
    fn checkout(&self, https: bool, authority: &Authority) -> (usize, Option<Sender>) {
        let mut state = self.lock();
        let index = match state
            .upstreams
            .iter()
            .position(|idle| idle.https == https && idle.authority == *authority)
        {
            Some(index) => index,
            None => {
                state.upstreams.push(IdleUpstream {
                    https,
                    authority: authority.clone(),
                    senders: VecDeque::new(),
                });
                state.upstreams.len() - 1
            }
        };
        let sender = self.newest_usable(&mut state.upstreams[index].senders);
        (index, sender)
    }

    /// The newest idle sender of an upstream that is not closed and has
    /// not been idle too long.
    fn take(&self, upstream: usize) -> Option<Sender> {
        let mut state = self.lock();
        let senders = &mut state.upstreams.get_mut(upstream)?.senders;
        self.newest_usable(senders)
    }

    /// Pops senders newest first, dropping the closed and expired ones on
    /// the way, until a usable one.
    fn newest_usable(&self, senders: &mut VecDeque<IdleSender>) -> Option<Sender> {
        let now = Instant::now();
        while let Some(idle) = senders.pop_back() {
            if !idle.sender.is_closed() && now.duration_since(idle.since) < self.idle_timeout {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Keeps `sender` for the next request to its upstream, dropping the
    /// upstream's oldest beyond the cap, and makes sure a sweep will close
    /// it once it has been idle too long.
    fn put(self: &Arc<Self>, upstream: usize, sender: Sender) {
        if sender.is_closed() || self.max_idle_per_upstream == 0 {
            return;
        }
        let mut state = self.lock();
        let Some(idle) = state.upstreams.get_mut(upstream) else {
            return;
        };
        if idle.senders.len() >= self.max_idle_per_upstream {
            idle.senders.pop_front();
        }
        idle.senders.push_back(IdleSender {
            sender,
            since: Instant::now(),
        });
        if !state.sweeping {
            // Outside a runtime (a body dropped at shutdown) nothing sweeps;
            // expired senders are still skipped when taken.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                state.sweeping = true;
                runtime.spawn(sweep(Arc::downgrade(self)));
            }
        }
    }

    /// Drops the senders idle for longer than the timeout, closing their
    /// connections; whether any are left.
    fn drop_expired(&self, now: Instant) -> bool {
        let mut state = self.lock();
        let mut left = false;
        for idle in &mut state.upstreams {
            while idle.senders.front().is_some_and(|oldest| {
                oldest.sender.is_closed() || now.duration_since(oldest.since) >= self.idle_timeout
            }) {
                idle.senders.pop_front();
            }
            left |= !idle.senders.is_empty();
        }
        if !left {
            state.sweeping = false;
        }
        left
    }
}

/// Closes expired idle connections every idle timeout while there are
/// any; ends with the pool (a reload).
async fn sweep(pool: Weak<IdlePool>) {
    loop {
        let Some(period) = pool.upgrade().map(|pool| pool.idle_timeout) else {
            return;
        };
        tokio::time::sleep(period.max(Duration::from_millis(100))).await;
        match pool.upgrade() {
            Some(pool) if pool.drop_expired(Instant::now()) => {}
            _ => return,
        }
    }
}

impl Lease {
    fn give_back(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put(self.upstream, self.sender);
        }
    }
}

/// A response body from an upstream, holding the connection's lease until
/// it ends: then the connection is idle and goes back for the next request.
/// Dropped before its end, or ended by an error, it closes the connection.
pub struct LeasedBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl LeasedBody {
    fn new(inner: Incoming, lease: Option<Lease>) -> Self {
        let mut body = LeasedBody { inner, lease };
        // No body (HEAD, 204, 304, an empty length): idle already.
        if body.inner.is_end_stream() {
            body.give_back();
        }
        body
    }

    fn give_back(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.give_back();
        }
    }
}

impl HttpBody for LeasedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `uri` as an HTTP/1.1 origin-form target: its path and query only (the
/// upstream's authority goes in `Host`).
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    *uri = match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => Uri::from(path.clone()),
        _ => Uri::default(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_sent_in_origin_form() {
        for (uri, expected) in [
            ("http://up:8080/a/b?x=1", "/a/b?x=1"),
            ("http://up:8080", "/"),
            ("https://up/", "/"),
            ("/already?q", "/already?q"),
        ] {
            let mut uri: Uri = uri.parse().unwrap();
            origin_form(&mut uri);
            assert_eq!(uri.to_string(), expected);
            assert!(uri.authority().is_none() && uri.scheme().is_none());
        }
    }
}
