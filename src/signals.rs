//! Process signals: SIGTERM and SIGINT begin a graceful shutdown; SIGHUP
//! reloads the config file ([`crate::gateway::reload`]).

use std::path::PathBuf;
use std::sync::Weak;

use arc_swap::ArcSwap;
use tracing::info;

use crate::gateway::Gateway;

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

/// Reloads the config on every SIGHUP.
pub async fn reload_on_hangup(path: PathBuf, shared: Weak<ArcSwap<Gateway>>) {
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
                move || crate::gateway::reload(&path, &shared)
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
