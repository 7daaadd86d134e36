//! The connection side: everything between a socket and a request.
//!
//! [`listen`] binds the listeners, [`serve`] runs the accept loops on the
//! worker threads ([`crate::workers`]) and drains on shutdown, [`task`]
//! drives one connection (PROXY header via [`proxy_protocol`], protocol
//! detection via [`protocol`], TLS with the acceptor [`crate::tls`] built)
//! and hands each request to [`crate::request::service`]; [`admin`] serves
//! the operations listener. What a connection knows about its peer is
//! [`crate::client::ClientInfo`], which the layers below read.

pub mod admin;
pub mod listen;
pub mod park;
pub mod protocol;
pub mod proxy_protocol;
pub mod serve;
pub mod task;

pub use listen::{Listener, ServeError, bind};
pub use serve::serve;

/// Completes once shutdown has begun.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    let _ = stop.wait_for(|stopped| *stopped).await;
}
