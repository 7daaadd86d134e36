//! The bound on proxied requests in flight to one upstream
//! (`limits.max_upstream_requests`): one atomic counter per upstream, built
//! with the config and shared by every route to that upstream and by every
//! worker, so a stalled upstream holds at most that many upstream
//! connections and the others are still served.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// Requests in flight to one upstream, and how many may be.
#[derive(Debug)]
pub struct InFlight {
    count: AtomicUsize,
    max: usize,
}

impl InFlight {
    /// A counter for one upstream that admits `max` requests at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(InFlight {
            count: AtomicUsize::new(0),
            max,
        })
    }

    /// Counts a request in, or `None` when `max` are in flight already.
    /// No lock and no allocation: one compare-and-swap and a reference.
    pub fn try_enter(self: &Arc<Self>) -> Option<InFlightGuard> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        Some(InFlightGuard(self.clone()))
    }

    /// Requests in flight now.
    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// What makes two upstream URLs one server: scheme and authority, case
/// aside (the path prefix is the route's business).
pub fn upstream_key(upstream: &http::Uri) -> String {
    format!(
        "{}://{}",
        upstream.scheme_str().unwrap_or(""),
        upstream.authority().map_or("", |a| a.as_str())
    )
    .to_ascii_lowercase()
}

/// One request's place under the bound, given back when dropped.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `future` holding `guard` (a WebSocket splice holds its upstream
/// connection until it closes).
pub async fn holding<F: Future>(guard: Option<InFlightGuard>, future: F) -> F::Output {
    let _guard = guard;
    future.await
}

/// An upstream response body that holds the request's place until its last
/// frame (or an error): the upstream connection is busy until then.
#[derive(Debug)]
pub struct InFlightBody<B> {
    inner: B,
    guard: Option<InFlightGuard>,
}

impl<B> InFlightBody<B> {
    /// `inner`, holding `guard` until it ends.
    pub fn new(inner: B, guard: Option<InFlightGuard>) -> Self {
        InFlightBody { inner, guard }
    }
}

impl<B> HttpBody for InFlightBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.guard = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn the_bound_admits_max_and_frees_on_drop() {
        let bound = InFlight::new(2);
        let a = bound.try_enter().unwrap();
        let b = bound.try_enter().unwrap();
        assert!(bound.try_enter().is_none(), "beyond the bound");
        drop(a);
        let c = bound.try_enter().unwrap();
        assert_eq!(bound.current(), 2);
        drop((b, c));
        assert_eq!(bound.current(), 0);
    }

    #[tokio::test]
    async fn a_body_holds_its_place_until_its_last_frame() {
        let bound = InFlight::new(1);
        let body = InFlightBody::new(Full::new(Bytes::from_static(b"hi")), bound.try_enter());
        assert_eq!(bound.current(), 1);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, "hi");
        assert_eq!(bound.current(), 0);

        let body = InFlightBody::new(Full::new(Bytes::new()), bound.try_enter());
        assert!(bound.try_enter().is_none());
        drop(body);
        assert_eq!(
            bound.current(),
            0,
            "a body dropped unread gives its place back"
        );
    }

    #[tokio::test]
    async fn a_splice_holds_its_place_while_it_runs() {
        let bound = InFlight::new(1);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(holding(bound.try_enter(), async move {
            let _ = rx.await;
        }));
        tokio::task::yield_now().await;
        assert!(bound.try_enter().is_none(), "the tunnel is counted");
        tx.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(bound.current(), 0);
    }
}
