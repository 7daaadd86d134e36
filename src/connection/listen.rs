//! The listeners: the plain, TLS and admin addresses bound at start (the
//! public ones once per worker with `SO_REUSEPORT`), and accepting under a
//! connection budget.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::warn;

use super::stopped;

/// A bound listener, plain or TLS.
pub struct Listener {
    pub(super) tcp: TcpListener,
    pub(super) tls: bool,
    /// `server.admin_listen`: serves only the operations endpoints.
    pub(super) admin: bool,
    /// The same address bound again for each other worker (`SO_REUSEPORT`).
    pub(super) siblings: Vec<std::net::TcpListener>,
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

/// The next connection on `listener` with a slot of `slots` for it, or
/// `None` once shutdown begins. The connection comes first, then the slot:
/// every worker's accept loop shares the one budget, and a loop that held
/// a slot while waiting for a connection could leave none for a loop whose
/// socket has connections waiting. So each loop holds at most one accepted
/// connection without a slot, and the excess waits in the kernel's backlog
/// instead of exhausting file descriptors.
pub(super) async fn accept_in_slot(
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
