//! Parking idle HTTP/1 connections: giving hyper's buffers back while a
//! keep-alive connection waits for its next request.
//!
//! hyper holds a read and a write buffer of 8 KiB each for an HTTP/1
//! connection's whole life, idle or not; that is most of an idle
//! connection's memory. After [`PARK_AFTER`] with no byte moved and no
//! request in flight, the connection task asks hyper to finish (an idle
//! hyper connection then closes at once and writes nothing, and the
//! socket's wrapper, `client::ActivityIo`, keeps the socket open under it),
//! takes the socket back with the bytes hyper had read but not parsed, and
//! waits for the next byte holding only the socket. The next request gets
//! a new hyper connection on the same socket. nginx and HAProxy free their
//! buffers on idle keep-alive connections in the same way.
//!
//! The close is the connection's only if nothing moved between the request
//! to finish and hyper's end: hyper closing for a reason of its own (a
//! response delimited by the close, `Connection: close`, a body still
//! being sent when parking began) always writes first, and then the
//! socket is shut down as hyper would have.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// How long an HTTP/1 connection stays quiet, with no request in flight,
/// before its hyper state is dropped. Long enough that a client sending
/// requests back to back never pays for a new hyper connection; short
/// enough that most of an idle connection's life is spent parked.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// What a connection's task and its service share. One task drives
/// both, so the counters are plain loads and stores.
#[derive(Debug, Default)]
pub struct ConnectionState {
    /// Requests hyper has handed to the service.
    started: AtomicU64,
    /// Requests whose response has not been sent whole.
    in_flight: AtomicU32,
}

impl ConnectionState {
    /// Requests hyper has handed to the service so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Whether a request is being answered.
    pub fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
}

/// A request from hyper handing it to the service until its response's
/// body ends (or either is dropped): the connection does not park while
/// one is held.
pub struct InFlight(Arc<ConnectionState>);

impl InFlight {
    /// Counts a request that hyper just handed over.
    pub fn enter(state: &Arc<ConnectionState>) -> InFlight {
        let started = state.started.load(Ordering::Relaxed);
        state
            .started
            .store(started.wrapping_add(1), Ordering::Relaxed);
        let in_flight = state.in_flight.load(Ordering::Relaxed);
        state
            .in_flight
            .store(in_flight.saturating_add(1), Ordering::Relaxed);
        InFlight(state.clone())
    }
}

/// A response body that holds its request's [`InFlight`] until hyper has
/// taken its last frame: a response still being sent is in flight, however
/// long its upstream pauses.
pub struct InFlightBody {
    body: crate::body::Body,
    _in_flight: InFlight,
}

impl InFlightBody {
    /// `body`, in flight until it ends or is dropped.
    pub fn new(body: crate::body::Body, in_flight: InFlight) -> Self {
        InFlightBody {
            body,
            _in_flight: in_flight,
        }
    }
}

impl hyper::body::Body for InFlightBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let in_flight = self.0.in_flight.load(Ordering::Relaxed);
        self.0
            .in_flight
            .store(in_flight.saturating_sub(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_in_flight_are_counted_until_dropped() {
        let state = Arc::new(ConnectionState::default());
        assert!(!state.in_flight());
        let first = InFlight::enter(&state);
        let second = InFlight::enter(&state);
        assert!(state.in_flight());
        assert_eq!(state.started(), 2);
        drop(first);
        assert!(state.in_flight());
        drop(second);
        assert!(!state.in_flight());
        assert_eq!(state.started(), 2);
    }
}
