//! What a client connection is and knows: where it came from, the
//! certificate subject its TLS handshake verified, its share of the
//! connection budget and the shutdown drain, and the activity counter that
//! the idle timeout watches. No listener, no request handling.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where a request came from.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The peer's IP as a header value, for `X-Forwarded-For`: formatted
    /// once per connection rather than on every request.
    pub ip: HeaderValue,
    /// Whether it came over TLS.
    pub tls: bool,
    /// Subject of the verified client certificate (mTLS), if one was sent.
    pub cert_subject: Option<std::sync::Arc<str>>,
    /// The connection's place under `limits.max_connections`; an upgraded
    /// connection keeps it until the upgraded stream closes.
    pub slot: Option<ConnectionSlot>,
}

/// A share of a connection's slot under `limits.max_connections`, and of
/// its place in the shutdown drain: both are given back when the last share
/// is dropped, so an upgraded connection counts until it closes.
#[derive(Debug, Clone)]
pub struct ConnectionSlot {
    _held: Arc<(
        tokio::sync::OwnedSemaphorePermit,
        Option<tokio::sync::mpsc::Sender<()>>,
    )>,
}

impl ConnectionSlot {
    /// Wraps the permit a connection was accepted with and the sender the
    /// shutdown drain waits on.
    pub fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        drain: Option<tokio::sync::mpsc::Sender<()>>,
    ) -> Self {
        ConnectionSlot {
            _held: Arc::new((permit, drain)),
        }
    }
}

impl ClientInfo {
    /// A client at `addr`, without a certificate or a connection slot.
    pub fn new(addr: SocketAddr, tls: bool) -> Self {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientInfo {
            addr,
            ip,
            tls,
            cert_subject: None,
            slot: None,
        }
    }

    /// The client is at `addr` (a PROXY protocol header said so), not at
    /// the peer's address.
    pub fn set_addr(&mut self, addr: SocketAddr) {
        let slot = self.slot.take();
        *self = ClientInfo {
            slot,
            cert_subject: self.cert_subject.take(),
            ..ClientInfo::new(addr, self.tls)
        };
    }

    /// `X-Forwarded-Proto` value.
    pub fn proto(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// Counts reads and writes that moved bytes on a connection. A counter, not
/// a timestamp: bumping it costs no clock read on the hot path, and
/// [`idle_for`] samples it a few times per timeout instead.
pub(crate) struct Activity {
    moves: AtomicU64,
    /// Set while the connection is being parked (`connection::park`): the
    /// socket outlives the hyper connection that asks to shut it down.
    parking: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            moves: AtomicU64::new(0),
            parking: AtomicBool::new(false),
        }
    }

    /// Whether the connection is being parked.
    pub(crate) fn parking(&self) -> bool {
        self.parking.load(Ordering::Relaxed)
    }

    /// Starts or stops parking.
    pub(crate) fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Ordering::Relaxed);
    }

    fn touch(&self) {
        // One task does the I/O: a plain load and store, no locked add.
        let moves = self.moves.load(Ordering::Relaxed);
        self.moves.store(moves.wrapping_add(1), Ordering::Relaxed);
    }

    pub(crate) fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }
}

/// Completes once no byte has moved for `timeout`, give or take a quarter
/// of it: the counter is sampled every `timeout / 4`.
pub(crate) async fn idle_for(activity: &Activity, timeout: Duration) {
    let period = (timeout / 4).max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = activity.moves();
    let mut quiet = Duration::ZERO;
    loop {
        ticks.tick().await;
        let moves = activity.moves();
        if moves == seen {
            quiet += period;
            if quiet >= timeout {
                return;
            }
        } else {
            seen = moves;
            quiet = Duration::ZERO;
        }
    }
}

/// A stream that records activity, for the idle timeout; while its
/// connection is being parked, shutting it down does nothing.
pub(crate) struct ActivityIo<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> ActivityIo<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        ActivityIo { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ActivityIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ActivityIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.activity.parking() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
