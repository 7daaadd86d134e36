//! authgate: an authenticating reverse proxy.
//!
//! It takes a credential from each request (a JWT or an access key), checks
//! it, and forwards the request upstream with the caller's identity in
//! headers, or answers with a JSON error. It also serves the login and
//! access-key endpoints itself. See the README for the whole picture.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod error;
pub mod gateway;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod service;
pub mod store;

use std::future::Future;

pub use config::Config;
pub use error::GatewayError;
pub use gateway::Gateway;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be opened or migrated.
    #[error("cannot open the store: {0}")]
    Store(#[from] store::StoreError),
    /// A listener or TLS could not be set up.
    #[error(transparent)]
    Serve(#[from] server::ServeError),
}

/// Runs the gateway with `config` until `shutdown` completes, then drains.
/// Logs `listening on <scheme>://<addr>` for every listener once bound.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let listeners = server::bind(&config.server).await?;
    let gateway = Gateway::start(config).await?;
    for listener in &listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("listening on {}://{addr}", listener.scheme());
        }
    }
    server::serve(gateway, listeners, shutdown).await;
    Ok(())
}
