//! Listeners, accept loops, connection tasks and graceful shutdown: binds
//! the plain, TLS and admin listeners, accepts under the connection budget,
//! completes the TLS handshake with the acceptor [`crate::tls`] built, and
//! serves each connection until it closes, idles out or shutdown drains it.
//!
//! Thread-per-core: with `--workers N` each public address is bound N times
//! with `SO_REUSEPORT`, and each socket is served by one worker thread on a
//! current-thread runtime of its own (this thread is worker 0), so the
//! kernel spreads connections over the workers and a connection stays on
//! the thread that accepted it.
//!
//! Each connection runs in its own task under a span with `client.addr`. On
//! shutdown the listeners stop accepting, every connection is asked to
//! finish its in-flight requests and close, and the process waits for them
//! up to the grace period.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::{Instrument, debug, debug_span, info, info_span, warn};

use crate::config::Limits;
use crate::conn::{Activity, ActivityIo, ClientInfo, ConnectionSlot, idle_for};
use crate::gateway::Gateway;
use crate::protocol::{self, Protocol, Rewound};

/// Smallest read buffer hyper accepts; the header limit cannot go below it.
const MIN_HTTP1_BUFFER: usize = 8192;

/// A bound listener, plain or TLS.
pub struct Listener {
    tcp: TcpListener,
    tls: bool,
    /// `server.admin_listen`: serves only the operations endpoints.
    admin: bool,
    /// The same address bound again for each other worker (`SO_REUSEPORT`).
    siblings: Vec<std::net::TcpListener>,
}

impl Listener {
    /// The bound address (the real port when the config said `:0`).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Whether this is the `server.admin_listen` listener.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
}

/// Binds the plain, TLS and admin listeners the config names; the public
/// ones once for each worker ([`crate::workers::count`]).
pub async fn bind(config: &crate::config::ServerConfig) -> Result<Vec<Listener>, ServeError> {
    let workers = crate::workers::count();
    // (address, TLS, admin)
    let wanted = [
        config.listen.map(|addr| (addr, false, false)),
        config.tls.as_ref().map(|tls| (tls.listen, true, false)),
        config.admin_listen.map(|addr| (addr, false, true)),
    ];
    let mut listeners = Vec::new();
    for (addr, tls, admin) in wanted.into_iter().flatten() {
        let bind_error = |source| ServeError::Bind { addr, source };
        if admin || workers == 1 {
            let tcp = TcpListener::bind(addr).await.map_err(bind_error)?;
            let siblings = Vec::new();
            listeners.push(Listener {
                tcp,
                tls,
                admin,
                siblings,
            });
            continue;
        }
        let tcp = bind_shared(addr).map_err(bind_error)?;
        // `:0` picks the port once; the siblings take the same one.
        let bound = tcp.local_addr().map_err(bind_error)?;
        let siblings = (1..workers)
            .map(|_| bind_shared(bound).and_then(TcpListener::into_std))
            .collect::<io::Result<_>>()
            .map_err(bind_error)?;
        listeners.push(Listener {
            tcp,
            tls,
            admin,
            siblings,
        });
    }
    Ok(listeners)
}

/// Listens on `addr` with `SO_REUSEPORT`, so that each worker's socket
/// gets its share of the connections.
fn bind_shared(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What `std` and tokio use for a listener's accept queue.
const LISTEN_BACKLOG: u32 = 1024;

/// The current gateway snapshot; a reload swaps it.
pub type SharedGateway = Arc<ArcSwap<Gateway>>;

/// Serves on `listeners` until `shutdown` completes, then drains.
/// Connection limits and timeouts are those in force at start.
pub async fn serve(
    shared: SharedGateway,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()>,
) {
    // Read, not held: a snapshot held for the server's life would keep the
    // first config's upstream pools (and their health probers) alive after
    // every reload.
    let (limits, grace) = {
        let gateway = shared.load_full();
        (
            gateway.config.limits.clone(),
            gateway.config.server.shutdown_grace,
        )
    };
    let builder = Arc::new(http_builder(&limits));
    let connection_slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection holds a clone of `drain_tx` in its slot (an upgraded
    // connection until the upgraded stream closes); when all are gone the
    // receiver sees the channel close.
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);

    let ctx = AcceptContext {
        shared: shared.clone(),
        builder,
        slots: connection_slots,
        stop: stop_rx.clone(),
        drain: drain_tx.clone(),
        limits: limits.clone(),
    };
    // Worker i (from 1) gets the i-th sibling of every public listener.
    let mut worker_listeners: Vec<Vec<PendingListener>> = Vec::new();
    for mut listener in listeners {
        if listener.admin {
            tokio::spawn(admin_accept_loop(
                listener,
                shared.clone(),
                stop_rx.clone(),
                limits.header_read_timeout,
            ));
            continue;
        }
        for (i, sibling) in std::mem::take(&mut listener.siblings)
            .into_iter()
            .enumerate()
        {
            if worker_listeners.len() <= i {
                worker_listeners.push(Vec::new());
            }
            worker_listeners[i].push(PendingListener {
                tcp: sibling,
                tls: listener.tls,
            });
        }
        tokio::spawn(accept_loop(listener, ctx.clone()));
    }
    let (finished_tx, finished_rx) = watch::channel(false);
    let workers: Vec<_> = worker_listeners
        .into_iter()
        .enumerate()
        .filter_map(|(i, listeners)| {
            spawn_worker(i + 1, listeners, ctx.clone(), finished_rx.clone())
        })
        .collect();
    drop(ctx);
    drop(drain_tx);

    shutdown.await;
    info!(
        grace_seconds = grace.as_secs(),
        "shutting down: no new connections, draining in-flight requests"
    );
    let _ = stop_tx.send(true);
    match tokio::time::timeout(grace, drain_rx.recv()).await {
        Ok(_) => info!("all connections closed"),
        Err(_) => warn!("grace period over; closing the remaining connections"),
    }
    // Audit events queued by the drained requests are stored before the
    // store closes.
    shared.load_full().audit.close().await;
    // The store first: its connections may belong to a worker's runtime.
    shared.load_full().store.close().await;
    let _ = finished_tx.send(true);
    let _ = tokio::task::spawn_blocking(move || {
        for worker in workers {
            let _ = worker.join();
        }
    })
    .await;
}

/// Starts worker `index` on a thread of its own: a current-thread runtime
/// serving `listeners` (std sockets, registered with that runtime there)
/// until `finished`. `None` (logged) if the thread cannot start; its
/// sockets close, and the kernel gives their share to the other workers.
fn spawn_worker(
    index: usize,
    listeners: Vec<PendingListener>,
    ctx: AcceptContext,
    mut finished: watch::Receiver<bool>,
) -> Option<std::thread::JoinHandle<()>> {
    let run = move || {
        crate::workers::enter(index);
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                warn!(worker = index, error = %err, "cannot start a worker's runtime");
                return;
            }
        };
        runtime.block_on(async move {
            for pending in listeners {
                match TcpListener::from_std(pending.tcp) {
                    Ok(tcp) => {
                        let listener = Listener {
                            tcp,
                            tls: pending.tls,
                            admin: false,
                            siblings: Vec::new(),
                        };
                        tokio::spawn(accept_loop(listener, ctx.clone()));
                    }
                    Err(err) => warn!(worker = index, error = %err, "cannot listen on a worker"),
                }
            }
            // The accept loops hold their own clones; this one would keep
            // the shutdown drain waiting.
            drop(ctx);
            let _ = finished.wait_for(|finished| *finished).await;
        });
    };
    std::thread::Builder::new()
        .name(format!("authgate-worker-{index}"))
        .spawn(run)
        .inspect_err(|err| warn!(worker = index, error = %err, "cannot start a worker thread"))
        .ok()
}

/// A public listener's socket for another worker, before that worker's
/// runtime registers it.
struct PendingListener {
    tcp: std::net::TcpListener,
    tls: bool,
}

/// hyper's HTTP/1 and HTTP/2 server settings, built once.
pub(crate) struct HttpBuilders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

fn http_builder(limits: &Limits) -> HttpBuilders {
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

#[derive(Clone)]
struct AcceptContext {
    shared: SharedGateway,
    builder: Arc<HttpBuilders>,
    slots: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
    limits: Limits,
}

async fn accept_loop(listener: Listener, ctx: AcceptContext) {
    let mut stop = ctx.stop.clone();
    loop {
        let Some((permit, stream, peer)) = accept_in_slot(&listener, &ctx.slots, &mut stop).await
        else {
            return;
        };
        // The first request head is due `header_read_timeout` after accept,
        // TLS handshake and protocol detection included: hyper's own header
        // timer starts only once hyper-util has read enough to tell HTTP/1
        // from HTTP/2, so a silent socket would otherwise hold its slot
        // until `idle_timeout`.
        let head_deadline = tokio::time::Instant::now() + ctx.limits.header_read_timeout;
        let _ = stream.set_nodelay(true);
        // A debug span: the access log carries the client address itself,
        // and an info span would cost every idle connection its fields.
        let span = debug_span!("connection", client.addr = %peer, tls = listener.tls);
        let current = ctx.shared.load_full();
        let tls = if listener.tls {
            match current.tls.clone() {
                Some(acceptor) => Some(acceptor),
                None => continue,
            }
        } else {
            None
        };
        // Only listed peers send a PROXY header, and they must.
        let proxied = current
            .config
            .server
            .proxy_protocol
            .iter()
            .any(|net| net.contains(&peer.ip()));
        let metrics = current.metrics.clone();
        drop(current);
        // Shared with the requests of this connection, so that an upgraded
        // connection keeps its slot after hyper lets go of it.
        let slot = ConnectionSlot::new(permit, Some(ctx.drain.clone()));
        let mut task = ConnectionTask {
            shared: ctx.shared.clone(),
            builder: ctx.builder.clone(),
            stop: ctx.stop.clone(),
            idle_timeout: ctx.limits.idle_timeout,
            head_deadline,
            client: ClientInfo {
                slot: Some(slot),
                ..ClientInfo::new(peer, listener.tls)
            },
        };
        // Two kinds of task: a plain connection's task is not sized for
        // the TLS handshake and session it does not have.
        match tls {
            None => spawn_counted(metrics, span, async move {
                let mut stream = stream;
                if proxied && !task.read_proxy_header(&mut stream, peer).await {
                    return;
                }
                task.run(stream, None).await
            }),
            Some(acceptor) => spawn_counted(metrics, span, async move {
                let mut stream = stream;
                if proxied && !task.read_proxy_header(&mut stream, peer).await {
                    return;
                }
                match tokio::time::timeout_at(head_deadline, acceptor.accept(stream)).await {
                    Ok(Ok(mut tls_stream)) => {
                        if tls_stream.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN)
                        {
                            // A tls-alpn-01 validation: the handshake was the
                            // answer; no HTTP on this connection (RFC 8737 3).
                            debug!(client.addr = %peer, "ACME tls-alpn-01 validation handshake");
                            let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls_stream).await;
                            return;
                        }
                        let subject = crate::tls::peer_subject(tls_stream.get_ref().1);
                        task.client.cert_subject = subject.map(Arc::from);
                        let alpn = tls_stream.get_ref().1.alpn_protocol();
                        let protocol = (alpn == Some(b"h2")).then_some(Protocol::Http2);
                        task.run(tls_stream, protocol).await
                    }
                    Ok(Err(err)) => {
                        info!(client.addr = %peer, error = %err, "TLS handshake failed")
                    }
                    Err(_) => info!(client.addr = %peer, "TLS handshake timed out"),
                }
            }),
        }
    }
}

/// Spawns a connection's task under `span`, counted in the open
/// connections gauge while it runs.
fn spawn_counted(
    metrics: Arc<crate::metrics::Metrics>,
    span: tracing::Span,
    connection: impl Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(
        async move {
            metrics.connections(1);
            connection.await;
            metrics.connections(-1);
        }
        .instrument(span),
    );
}

struct ConnectionTask {
    shared: SharedGateway,
    builder: Arc<HttpBuilders>,
    stop: watch::Receiver<bool>,
    idle_timeout: Duration,
    /// When the first request head must be complete.
    head_deadline: tokio::time::Instant,
    client: ClientInfo,
}

impl ConnectionTask {
    /// Reads the PROXY header a listed peer must send first, within the
    /// first head's deadline, and takes the client address it names.
    /// `false`: refused (logged), the connection is to be closed.
    async fn read_proxy_header(&mut self, stream: &mut TcpStream, peer: SocketAddr) -> bool {
        match tokio::time::timeout_at(self.head_deadline, crate::proxy_header::read(stream)).await {
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
    async fn run<S>(mut self, stream: S, known: Option<Protocol>)
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
                    crate::service::handle(gateway, client, request).await,
                )
            })
        });
        match protocol {
            Protocol::Http1 => {
                let connection = self
                    .builder
                    .http1
                    .serve_connection(io, service)
                    .with_upgrades();
                let graceful = http1::UpgradeableConnection::graceful_shutdown;
                self.drive(connection, graceful, &activity, &first_head)
                    .await;
            }
            // Boxed: the rarer protocol's state does not size every
            // HTTP/1 connection's task.
            Protocol::Http2 => {
                let connection = self.builder.http2.serve_connection(io, service);
                let graceful = http2::Connection::graceful_shutdown;
                Box::pin(self.drive(connection, graceful, &activity, &first_head)).await;
            }
        }
    }

    /// Runs `connection` to its end, asking it to finish (`graceful`:
    /// hyper's `graceful_shutdown` of its kind) on shutdown and when idle,
    /// and dropping it when its first head is late.
    async fn drive<C>(
        mut self,
        connection: C,
        graceful: fn(Pin<&mut C>),
        activity: &Activity,
        first_head: &AtomicBool,
    ) where
        C: Future<Output = Result<(), hyper::Error>>,
    {
        let mut connection = pin!(connection);
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

/// Connections the admin listener serves at once; more wait in the backlog.
const ADMIN_MAX_CONNECTIONS: usize = 16;
/// Longest time one admin connection (one request: no keep-alive) may take.
const ADMIN_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The `server.admin_listen` listener: plain HTTP/1.1, one request per
/// connection, only the operations endpoints ([`crate::api::serve_admin`]).
/// It has its own small connection budget, so scrapes and health checks
/// still get through while the public listeners are full, and the public
/// budget is not spent on them.
async fn admin_accept_loop(
    listener: Listener,
    shared: SharedGateway,
    mut stop: watch::Receiver<bool>,
    header_read_timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(false);
    loop {
        let Some((permit, stream, peer)) = accept_in_slot(&listener, &slots, &mut stop).await
        else {
            return;
        };
        let shared = shared.clone();
        let service = service_fn(move |request| {
            let gateway = shared.load_full();
            async move {
                Ok::<_, std::convert::Infallible>(
                    crate::api::serve_admin(request, &gateway, ClientInfo::new(peer, false)).await,
                )
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(
            async move {
                let _permit = permit;
                if tokio::time::timeout(ADMIN_CONNECTION_TIMEOUT, connection)
                    .await
                    .is_err()
                {
                    debug!("admin connection timed out");
                }
            }
            .instrument(info_span!("admin_connection", client.addr = %peer)),
        );
    }
}

/// The next connection on `listener` with a slot of `slots` for it, or
/// `None` once shutdown begins. The connection comes first, then the slot:
/// every worker's accept loop shares the one budget, and a loop that held
/// a slot while waiting for a connection could leave none for a loop whose
/// socket has connections waiting. So each loop holds at most one accepted
/// connection without a slot, and the excess waits in the kernel's backlog
/// instead of exhausting file descriptors.
async fn accept_in_slot(
    listener: &Listener,
    slots: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let (stream, peer) = loop {
        tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
                Ok(accepted) => break accepted,
                Err(err) => {
                    // Out of descriptors or a reset before accept: back off briefly.
                    warn!(error = %err, admin = listener.admin, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(stop) => return None,
        }
    };
    let permit = tokio::select! {
        permit = slots.clone().acquire_owned() => permit.ok()?,
        _ = stopped(stop) => return None,
    };
    Some((permit, stream, peer))
}

/// Completes once shutdown has begun.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received"),
                    _ = int.recv() => info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
