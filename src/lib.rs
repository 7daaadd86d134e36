//! authgate: an authenticating reverse proxy.
//!
//! It takes a credential from each request (a JWT or an access key), checks
//! it, and forwards the request upstream with the caller's identity in
//! headers, or answers with a JSON error. It also serves the login and
//! access-key endpoints itself. See the README for the whole picture.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod assertion;
pub mod auth;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod context;
pub mod cors;
pub mod error;
pub mod gateway;
pub mod inflight;
pub mod judge;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod oidc;
pub mod pool;
pub mod protocol;
pub mod proxy;
pub mod proxy_header;
pub mod ratelimit;
pub mod request_id;
pub mod routes;
pub mod scope;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod token;
pub mod verify;
pub mod workers;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

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
    Serve(#[from] server::ServeError),
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
    let listeners = server::bind(&config.server).await?;
    let gateway = Gateway::start(config).await?;
    let shared: server::SharedGateway = Arc::new(ArcSwap::new(gateway));
    let current = shared.clone();
    if let Some(path) = config_path {
        tokio::spawn(reload_on_hangup(path, Arc::downgrade(&shared)));
    }
    for listener in &listeners {
        if let Ok(addr) = listener.local_addr() {
            if listener.is_admin() {
                tracing::info!("admin endpoints (metrics, healthz, readyz) on http://{addr}");
            } else {
                tracing::info!("listening on {}://{addr}", listener.scheme());
            }
        }
    }
    server::serve(shared, listeners, shutdown).await;
    // The last requests' spans go out before the process ends.
    if let Some(telemetry) = &current.load().telemetry {
        telemetry.flush(telemetry::SHUTDOWN_FLUSH).await;
    }
    Ok(())
}

/// Reloads the config on every SIGHUP.
async fn reload_on_hangup(path: PathBuf, shared: Weak<ArcSwap<Gateway>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload needs a restart");
            return;
        };
        while hangups.recv().await.is_some() {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            // Reading files, loading CA roots and checking keys block:
            // not on a thread that serves requests.
            let reloaded = tokio::task::spawn_blocking({
                let path = path.clone();
                move || reload(&path, &shared)
            })
            .await;
            match reloaded {
                Ok(Ok(())) => tracing::info!(config = %path.display(), "configuration reloaded"),
                Ok(Err(err)) => tracing::error!(
                    config = %path.display(),
                    error = %err,
                    "reload refused; the previous configuration stays in force"
                ),
                Err(err) => tracing::error!(
                    config = %path.display(),
                    error = %err,
                    "reload failed; the previous configuration stays in force"
                ),
            }
        }
    }
}

/// Validates the config at `path` and swaps it in.
pub fn reload(path: &Path, shared: &server::SharedGateway) -> Result<(), gateway::ReloadError> {
    let config =
        Config::load(path).map_err(|err| gateway::ReloadError::Invalid(err.problems.join("; ")))?;
    let current = shared.load_full();
    let next = current.reconfigure(config)?;
    shared.store(Arc::new(next));
    current.metrics.reloads();
    Ok(())
}
