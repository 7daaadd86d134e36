//! One client connection from its first byte to its close: the PROXY
//! header a listed peer sends, protocol detection, hyper serving HTTP/1 or
//! HTTP/2, and the deadlines around it (first head, idle, shutdown).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info};

use super::park::{ConnectionState, InFlight, InFlightBody, PARK_AFTER};
use super::protocol::{self, Protocol, Rewound};
use super::stopped;
use crate::client::{Activity, ActivityIo, ClientInfo, idle_for};
use crate::config::Limits;
use crate::gateway::SharedGateway;

/// Smallest read buffer hyper accepts; the header limit cannot go below it.
const MIN_HTTP1_BUFFER: usize = 8192;

/// How long closing a socket the task took back from hyper may take (a TLS
/// `close_notify` to a client that does not read).
const SHUTDOWN_WRITE: Duration = Duration::from_secs(1);

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
        let state = Arc::new(ConnectionState::default());
        let requests = state.clone();
        let shared = self.shared.clone();
        let client = self.client.clone();
        let service = service_fn(move |request| {
            let in_flight = InFlight::enter(&requests);
            // Each request runs on the snapshot current when it arrived.
            let gateway = shared.load_full();
            let client = client.clone();
            // Boxed: hyper keeps a slot the size of this future for every
            // connection, idle or not; a box puts the large request state
            // on the heap only while a request is in flight.
            Box::pin(async move {
                let response = crate::request::service::handle(gateway, client, request).await;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| InFlightBody::new(body, in_flight)),
                )
            })
        });
        let io = TokioIo::new(stream);
        match protocol {
            Protocol::Http1 => {
                // One hyper connection after another on the socket: each
                // ends when the connection is parked (see `park`).
                let (mut io, mut service) = (io, service);
                // Parking waits for a first request (a head still arriving
                // is the head deadline's to judge).
                let mut park_from = 1;
                loop {
                    let mut connection = self
                        .builder
                        .http1
                        .serve_connection(io, service)
                        .with_upgrades();
                    let graceful = http1::UpgradeableConnection::graceful_shutdown;
                    let ended = self
                        .drive(
                            Pin::new(&mut connection),
                            graceful,
                            &activity,
                            &state,
                            Some(park_from),
                        )
                        .await;
                    activity.set_parking(false);
                    // `None`: upgraded; the upgraded stream has the socket.
                    let (Ended::Parked { clean }, Some(parts)) = (ended, connection.into_parts())
                    else {
                        return;
                    };
                    let mut stream = parts.io.into_inner();
                    if !clean {
                        // hyper closed for a reason of its own and skipped
                        // the shutdown while parking: do it as it would.
                        shut_down(&mut stream).await;
                        return;
                    }
                    let unparsed = parts.read_buf;
                    debug!(unparsed = unparsed.len(), "connection parked");
                    if unparsed.is_empty() {
                        // Empty, but still hyper's whole read buffer.
                        drop(unparsed);
                        if !self.wait_parked(&mut stream).await {
                            return;
                        }
                    } else {
                        // The beginning of a head: back to hyper at once,
                        // to park again only after a request.
                        stream.replay(unparsed);
                    }
                    park_from = state.started() + 1;
                    (io, service) = (TokioIo::new(stream), parts.service);
                }
            }
            // Boxed: the rarer protocol's state does not size every
            // HTTP/1 connection's task.
            Protocol::Http2 => {
                let mut connection = Box::pin(self.builder.http2.serve_connection(io, service));
                let graceful = http2::Connection::graceful_shutdown;
                Box::pin(self.drive(connection.as_mut(), graceful, &activity, &state, None)).await;
            }
        }
    }

    /// Parked: holds only the socket until the client sends again (`true`:
    /// the bytes read are to be read again by the next hyper connection),
    /// or closes it as hyper closes an idle connection on the idle timeout,
    /// on shutdown and when the client closes (`false`).
    async fn wait_parked<S>(&mut self, stream: &mut Rewound<S>) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut first = [0u8; 64];
        // The connection was quiet for about PARK_AFTER before it parked.
        let quiet_left = self.idle_timeout.saturating_sub(PARK_AFTER);
        tokio::select! {
            read = stream.read(&mut first) => match read {
                Ok(n) if n > 0 => {
                    stream.replay(Bytes::copy_from_slice(&first[..n]));
                    return true;
                }
                Ok(_) => {}
                Err(err) => {
                    debug!(error = %err, "parked connection failed");
                    return false;
                }
            },
            _ = tokio::time::sleep(quiet_left) => debug!("closing idle connection"),
            _ = stopped(&mut self.stop) => {}
        }
        shut_down(stream).await;
        false
    }

    /// Runs `connection` to its end, asking it to finish (`graceful`:
    /// hyper's `graceful_shutdown` of its kind) on shutdown and when idle,
    /// and dropping it when its first head is late. With `park_from`, once
    /// that many requests have started, a connection quiet for
    /// [`PARK_AFTER`] with none in flight is asked to finish so that it
    /// can park; without (HTTP/2), no park timer runs.
    async fn drive<C>(
        &mut self,
        mut connection: Pin<&mut C>,
        graceful: fn(Pin<&mut C>),
        activity: &Activity,
        state: &ConnectionState,
        park_from: Option<u64>,
    ) -> Ended
    where
        C: Future<Output = Result<(), hyper::Error>>,
    {
        let mut idle = pin!(idle_for(activity, self.idle_timeout));
        let mut head_due = pin!(tokio::time::sleep_until(self.head_deadline));
        let mut quiet = pin!(idle_for(activity, PARK_AFTER));
        let mut awaiting_head = state.started() == 0;
        let mut closing = false;
        // The activity count when parking began.
        let mut parking: Option<u64> = None;
        loop {
            tokio::select! {
                // The connection first: it is what wakes this task nearly always.
                biased;
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        debug!(error = %err, "connection ended with an error");
                        return Ended::Closed;
                    }
                    return match parking {
                        // Nothing moved: hyper was idle and closed because
                        // it was asked to.
                        Some(moves) if activity.parking() => Ended::Parked {
                            clean: activity.moves() == moves,
                        },
                        _ => Ended::Closed,
                    };
                }
                _ = stopped(&mut self.stop), if !closing => {
                    closing = true;
                    activity.set_parking(false);
                    graceful(connection.as_mut());
                }
                _ = head_due.as_mut(), if awaiting_head => {
                    if state.started() == 0 {
                        // Nothing is in flight: drop the connection rather
                        // than wait for a head that is still trickling in.
                        debug!("no request head within header_read_timeout; closing");
                        return Ended::Closed;
                    }
                    // Later heads: hyper's header timer and the idle timeout.
                    awaiting_head = false;
                }
                _ = idle.as_mut(), if !closing => {
                    debug!("closing idle connection");
                    closing = true;
                    activity.set_parking(false);
                    graceful(connection.as_mut());
                }
                // Conditions on the shared state are checked here, not in
                // the branch's guard: a guard is read only when the select
                // starts, and the service changes that state meanwhile.
                _ = quiet.as_mut(), if park_from.is_some() && !closing && parking.is_none() => {
                    if park_from.is_some_and(|from| state.started() < from) || state.in_flight() {
                        // No request yet (a head still arriving), or a slow
                        // or paused answer: asking hyper to finish now would
                        // close the connection after it.
                        quiet.set(idle_for(activity, PARK_AFTER));
                    } else {
                        parking = Some(activity.moves());
                        activity.set_parking(true);
                        graceful(connection.as_mut());
                    }
                }
            }
        }
    }
}

/// Shuts down a socket the task took back from hyper, as hyper would have,
/// for at most [`SHUTDOWN_WRITE`].
async fn shut_down<S: AsyncWrite + Unpin>(stream: &mut S) {
    let _ = tokio::time::timeout(SHUTDOWN_WRITE, stream.shutdown()).await;
}

/// How [`ConnectionTask::drive`] left a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Closed (or upgraded, or dropped): nothing more to do.
    Closed,
    /// Finished while parking, without shutting the socket down. `clean`:
    /// nothing moved after parking began, so hyper closed only because it
    /// was asked to and the socket can serve the next request.
    Parked { clean: bool },
}
