//! The `server.admin_listen` listener: the operations endpoints only, on a
//! budget of its own.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, debug, info_span};

use super::listen::{Listener, accept_in_slot};
use crate::client::ClientInfo;
use crate::gateway::SharedGateway;

/// Connections the admin listener serves at once; more wait in the backlog.
const ADMIN_MAX_CONNECTIONS: usize = 16;
/// Longest time one admin connection (one request: no keep-alive) may take.
const ADMIN_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The `server.admin_listen` listener: plain HTTP/1.1, one request per
/// connection, only the operations endpoints ([`crate::request::service::handle_admin`]).
/// It has its own small connection budget, so scrapes and health checks
/// still get through while the public listeners are full, and the public
/// budget is not spent on them.
pub(super) async fn admin_accept_loop(
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
                    crate::request::service::handle_admin(
                        &gateway,
                        ClientInfo::new(peer, false),
                        request,
                    )
                    .await,
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
