//! Serving: one accept loop per listener on every worker thread, each
//! accepted connection handed to a [`ConnectionTask`] under the connection
//! budget, and graceful shutdown.
//!
//! Thread-per-core: with `--workers N` each public address is bound N times
//! with `SO_REUSEPORT` ([`super::listen`]), and each socket is served by one
//! worker thread on a current-thread runtime of its own (this thread is
//! worker 0), so the kernel spreads connections over the workers and a
//! connection stays on the thread that accepted it.
//!
//! Each connection runs in its own task under a span with `client.addr`. On
//! shutdown the listeners stop accepting, every connection is asked to
//! finish its in-flight requests and close, and the process waits for them
//! up to the grace period.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{Instrument, debug, debug_span, info, warn};

use super::admin::admin_accept_loop;
use super::listen::{Listener, accept_in_slot};
use super::protocol::Protocol;
use super::task::{ConnectionTask, HttpBuilders, http_builder};
use crate::client::{ClientInfo, ConnectionSlot};
use crate::config::Limits;
use crate::gateway::SharedGateway;

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
        // timer starts only once hyper has the connection, after
        // `protocol::sniff` has read enough to tell HTTP/1 from HTTP/2, so a
        // silent socket would otherwise hold its slot until `idle_timeout`.
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
