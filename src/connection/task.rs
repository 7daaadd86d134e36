//! One client connection from its first byte to its close: the PROXY
//! header a listed peer sends, protocol detection, hyper serving HTTP/1 or
//! HTTP/2, and the deadlines around it (first head, idle, shutdown).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info};

use super::protocol::{self, Protocol, Rewound};
use super::stopped;
use crate::client::{Activity, ActivityIo, ClientInfo, idle_for};
use crate::config::Limits;
use crate::gateway::SharedGateway;

/// Smallest read buffer hyper accepts; the header limit cannot go below it.
const MIN_HTTP1_BUFFER: usize = 8192;

/// hyper's HTTP/1 and HTTP/2 server settings, built once.
pub(super) struct HttpBuilders {
    pub(super) http1: http1::Builder,
    pub(super) http2: http2::Builder<TokioExecutor>,
}

pub(super) fn http_builder(limits: &Limits) -> HttpBuilders {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HTTP1_BUFFER));
    // hyper keeps the default number of header slots on the stack and
    // allocates for any other; set it only when it differs.
    if limits.max_headers != crate::config::DEFAULT_MAX_HEADERS {
        http1.max_headers(limits.max_headers);
    }
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(Some(limits.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(20));
    HttpBuilders { http1, http2 }
}

pub(super) struct ConnectionTask {
    pub(super) shared: SharedGateway,
    pub(super) builder: Arc<HttpBuilders>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) idle_timeout: Duration,
    /// When the first request head must be complete.
    pub(super) head_deadline: tokio::time::Instant,
    pub(super) client: ClientInfo,
}

impl ConnectionTask {
    /// Reads the PROXY header a listed peer must send first, within the
    /// first head's deadline, and takes the client address it names.
    /// `false`: refused (logged), the connection is to be closed.
    pub(super) async fn read_proxy_header(
        &mut self,
        stream: &mut TcpStream,
        peer: SocketAddr,
    ) -> bool {
        match tokio::time::timeout_at(
            self.head_deadline,
            crate::connection::proxy_protocol::read(stream),
        )
        .await
        {
            Ok(Ok(Some(client))) => {
                self.client.set_addr(client);
                true
            }
            Ok(Ok(None)) => true,
            Ok(Err(err)) => {
                info!(peer = %peer, error = %err, "PROXY protocol header refused; connection closed");
                false
            }
            Err(_) => {
                info!(peer = %peer, "no PROXY protocol header within header_read_timeout; connection closed");
                false
            }
        }
    }

    /// Serves one connection until it closes, goes idle, misses its first
    /// request head's deadline, or shutdown asks it to finish. `known` is
    /// the protocol TLS negotiated; without one the first bytes tell.
    pub(super) async fn run<S>(mut self, stream: S, known: Option<Protocol>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let stream = ActivityIo::new(stream, activity.clone());
        let (protocol, stream) = match known {
            Some(protocol) => (protocol, Rewound::untouched(stream)),
            None => {
                let sniffed = tokio::select! {
                    sniffed = protocol::sniff(stream) => sniffed,
                    _ = tokio::time::sleep_until(self.head_deadline) => {
                        debug!("no request head within header_read_timeout; closing");
                        return;
                    }
                    _ = stopped(&mut self.stop) => return,
                };
                match sniffed {
                    Ok(sniffed) => sniffed,
                    Err(err) => {
                        debug!(error = %err, "connection ended before its first request");
                        return;
                    }
                }
            }
        };
        let io = TokioIo::new(stream);
        let shared = self.shared.clone();
        let client = self.client.clone();
        // Set when hyper hands over the first complete request head.
        let first_head = Arc::new(AtomicBool::new(false));
        let head_seen = first_head.clone();
        let service = service_fn(move |request| {
            head_seen.store(true, Ordering::Relaxed);
            // Each request runs on the snapshot current when it arrived.
            let gateway = shared.load_full();
            let client = client.clone();
            // Boxed: hyper keeps a slot the size of this future for every
            // connection, idle or not; a box puts the large request state
            // on the heap only while a request is in flight.
            Box::pin(async move {
                Ok::<_, std::convert::Infallible>(
                    crate::request::service::handle(gateway, client, request).await,
                )
            })
        });
        // The connection is pinned here and lent to `drive`: an argument
        // moved into a pinned local would be held twice in the task.
        match protocol {
            Protocol::Http1 => {
                let connection = pin!(
                    self.builder
                        .http1
                        .serve_connection(io, service)
                        .with_upgrades()
                );
                let graceful = http1::UpgradeableConnection::graceful_shutdown;
                self.drive(connection, graceful, &activity, &first_head)
                    .await;
            }
            // Boxed: the rarer protocol's state does not size every
            // HTTP/1 connection's task.
            Protocol::Http2 => {
                let mut connection = Box::pin(self.builder.http2.serve_connection(io, service));
                let graceful = http2::Connection::graceful_shutdown;
                Box::pin(self.drive(connection.as_mut(), graceful, &activity, &first_head)).await;
            }
        }
    }

    /// Runs `connection` to its end, asking it to finish (`graceful`:
    /// hyper's `graceful_shutdown` of its kind) on shutdown and when idle,
    /// and dropping it when its first head is late.
    async fn drive<C>(
        &mut self,
        mut connection: Pin<&mut C>,
        graceful: fn(Pin<&mut C>),
        activity: &Activity,
        first_head: &AtomicBool,
    ) where
        C: Future<Output = Result<(), hyper::Error>>,
    {
        let mut idle = pin!(idle_for(activity, self.idle_timeout));
        let mut head_due = pin!(tokio::time::sleep_until(self.head_deadline));
        let mut awaiting_head = true;
        let mut closing = false;
        loop {
            tokio::select! {
                // The connection first: it is what wakes this task nearly always.
                biased;
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        debug!(error = %err, "connection ended with an error");
                    }
                    return;
                }
                _ = stopped(&mut self.stop), if !closing => {
                    closing = true;
                    graceful(connection.as_mut());
                }
                _ = head_due.as_mut(), if awaiting_head => {
                    if !first_head.load(Ordering::Relaxed) {
                        // Nothing is in flight: drop the connection rather
                        // than wait for a head that is still trickling in.
                        debug!("no request head within header_read_timeout; closing");
                        return;
                    }
                    // Later heads: hyper's header timer and the idle timeout.
                    awaiting_head = false;
                }
                _ = idle.as_mut(), if !closing => {
                    debug!("closing idle connection");
                    closing = true;
                    graceful(connection.as_mut());
                }
            }
        }
    }
}
