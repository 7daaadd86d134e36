//! authgate: an authenticating reverse proxy.
//!
//! It takes a credential from each request (a JWT or an access key), checks
//! it, and forwards the request upstream with the caller's identity in
//! headers, or answers with a JSON error. It also serves the login and
//! access-key endpoints itself. docs/architecture.md draws the modules and
//! the path of a request through them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod body;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod connection;
pub mod error;
pub mod gateway;
pub mod inflight;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod oidc;
pub mod pool;
pub mod proxy;
pub mod ratelimit;
pub mod request;
pub mod routes;
pub mod scope;
pub mod signals;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod token;
pub mod workers;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use config::Config;
pub use error::GatewayError;
pub use gateway::Gateway;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store, the caches or TLS could not be set up.
    #[error(transparent)]
    Start(#[from] gateway::StartError),
    /// A listener could not be bound.
    #[error(transparent)]
    Serve(#[from] connection::ServeError),
}

/// Runs the gateway with `config` until `shutdown` completes, then drains.
/// Logs `listening on <scheme>://<addr>` for every listener once bound. With
/// `config_path`, SIGHUP reloads the config from there: a valid new config
/// takes effect for new requests, an invalid one is logged and ignored.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let listeners = connection::bind(&config.server).await?;
    let gateway = Gateway::start(config).await?;
    let shared: gateway::SharedGateway = Arc::new(ArcSwap::new(gateway));
    let current = shared.clone();
    if let Some(path) = config_path {
        tokio::spawn(signals::reload_on_hangup(path, Arc::downgrade(&shared)));
    }
    tokio::spawn(gateway::purge_audit(Arc::downgrade(&shared)));
    for listener in &listeners {
        if let Ok(addr) = listener.local_addr() {
            if listener.is_admin() {
                tracing::info!("admin endpoints (metrics, healthz, readyz) on http://{addr}");
            } else {
                tracing::info!("listening on {}://{addr}", listener.scheme());
            }
        }
    }
    connection::serve(shared, listeners, shutdown).await;
    // The last requests' spans go out before the process ends.
    if let Some(telemetry) = &current.load().telemetry {
        telemetry.flush(telemetry::SHUTDOWN_FLUSH).await;
    }
    Ok(())
}
