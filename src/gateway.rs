//! The gateway's shared state, built once at start, and its background
//! work: following the store's change log and sweeping expired rows.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::RunError;
use crate::auth::password::HashLimiter;
use crate::auth::throttle::LoginThrottle;
use crate::auth::{Authenticator, unix_now};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Forwarder;
use crate::ratelimit::RateLimits;
use crate::store::cache::CredentialCache;
use crate::store::{CHANGES_CHANNEL, Store, last_use};
use crate::tls::{self, TlsError};
use crate::token::jwks::JwksProvider;
use tokio_rustls::TlsAcceptor;

/// How long change-log entries are kept for other processes to read.
pub const CHANGE_LOG_KEEP_SECS: i64 = 24 * 3600;
/// How often expired one-time keys, revocations and old changes are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Pause before the change listener reconnects.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Everything a request needs: one snapshot of the configuration and what
/// is built from it, plus the long-lived parts (store, cache, metrics)
/// that every snapshot shares. A reload makes a new snapshot; requests
/// finish on the snapshot they started with.
pub struct Gateway {
    /// The validated config.
    pub config: Config,
    /// Users, keys and revocations.
    pub store: Store,
    /// The in-memory cache in front of the store.
    pub cache: Arc<CredentialCache>,
    /// Credential checking.
    pub auth: Authenticator,
    /// Failed-login throttling.
    pub throttle: LoginThrottle,
    /// The pooled upstream client.
    pub forwarder: Forwarder,
    /// TLS for the HTTPS listener, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The rate-limit rules and their buckets.
    pub ratelimits: RateLimits,
}

/// Why a new config was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The change needs a restart (listeners or store).
    #[error("{0} cannot change without a restart")]
    NeedsRestart(&'static str),
    /// The certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl Gateway {
    /// Opens the store, loads revocations and starts the background tasks.
    pub async fn start(config: Config) -> Result<Arc<Gateway>, RunError> {
        let store = Store::open(&config.store.url).await?;
        let cache = Arc::new(CredentialCache::new(&config.cache));
        for (jti, expires_at) in store.revoked_tokens(unix_now()).await? {
            cache.revoke_token(&jti, expires_at);
        }
        let other_realm = store
            .users_with_other_realm(&config.onetimekey.realm)
            .await?;
        if other_realm > 0 {
            warn!(
                users = other_realm,
                realm = %config.onetimekey.realm,
                "some users' one-time-key digests were made with another realm; their one-time-key logins need a password reset"
            );
        }
        let last_change = store.last_change_id().await?;
        let wake = Arc::new(Notify::new());
        if let Some(url) = store.postgres_url() {
            tokio::spawn(listen_for_changes(
                url.to_owned(),
                Arc::downgrade(&cache),
                wake.clone(),
            ));
        }
        tokio::spawn(follow_changes(
            store.clone(),
            Arc::downgrade(&cache),
            config.store.poll_interval,
            last_change,
            wake,
        ));
        tokio::spawn(sweep(store.clone(), Arc::downgrade(&cache)));
        tokio::spawn(write_key_uses(store.clone(), Arc::downgrade(&cache)));
        let hashes = HashLimiter::new(config.login.max_concurrent_hashes);
        let metrics = Arc::new(Metrics::default());
        let gateway = Gateway::assemble(config, store, cache, metrics, hashes, None)?;
        Ok(Arc::new(gateway))
    }

    fn assemble(
        config: Config,
        store: Store,
        cache: Arc<CredentialCache>,
        metrics: Arc<Metrics>,
        hashes: HashLimiter,
        previous_limits: Option<&RateLimits>,
    ) -> Result<Gateway, TlsError> {
        let tls = config.server.tls.as_ref().map(tls::acceptor).transpose()?;
        let mut providers = Vec::with_capacity(config.jwt.external.len());
        if !config.jwt.external.is_empty() {
            // One client, and one load of the system's CA roots, for all.
            let client = crate::proxy::pooled_client(&config.upstream)?;
            for source in &config.jwt.external {
                let provider = JwksProvider::new(source.clone(), client.clone(), config.jwt.leeway);
                provider.spawn_refresh();
                providers.push(provider);
            }
        }
        cache.watch_token_cache(config.jwt.keys.token_cache());
        Ok(Gateway {
            auth: Authenticator::new(
                config.jwt.keys.clone(),
                providers,
                store.clone(),
                cache.clone(),
            ),
            throttle: LoginThrottle::new(store.clone(), &config.login, hashes),
            forwarder: Forwarder::try_new(&config.upstream, &config.limits)?,
            ratelimits: RateLimits::new(&config.ratelimit, metrics.clone(), previous_limits),
            tls,
            metrics,
            store,
            cache,
            config,
        })
    }

    /// A snapshot with `config` that shares this one's store, cache and
    /// metrics. Listeners and the store cannot change this way.
    pub fn reconfigure(&self, config: Config) -> Result<Gateway, ReloadError> {
        let old = &self.config.server;
        let new = &config.server;
        if old.listen != new.listen
            || old.admin_listen != new.admin_listen
            || old.tls.as_ref().map(|t| t.listen) != new.tls.as_ref().map(|t| t.listen)
        {
            return Err(ReloadError::NeedsRestart("the listen addresses"));
        }
        if self.config.store.url != config.store.url {
            return Err(ReloadError::NeedsRestart("store.url"));
        }
        // The same hashing slots while the bound stays: requests still
        // running on the old snapshot count against the new one's bound.
        let hashes =
            if config.login.max_concurrent_hashes == self.config.login.max_concurrent_hashes {
                self.throttle.hashes().clone()
            } else {
                HashLimiter::new(config.login.max_concurrent_hashes)
            };
        Ok(Gateway::assemble(
            config,
            self.store.clone(),
            self.cache.clone(),
            self.metrics.clone(),
            hashes,
            Some(&self.ratelimits),
        )?)
    }
}

/// Reads the change log so revocations made by other processes (the CLI,
/// other replicas) reach this cache: at every `store.poll_interval_ms`, and
/// at once when PostgreSQL announces a change.
async fn follow_changes(
    store: Store,
    cache: Weak<CredentialCache>,
    interval: Duration,
    last: i64,
    wake: Arc<Notify>,
) {
    let mut cursor = ChangeCursor::new(last);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
        }
        let Some(cache) = cache.upgrade() else {
            return;
        };
        match store.changes_since(cursor.query_from()).await {
            Ok(changes) => {
                for (id, change) in changes {
                    if cursor.first_sight(id) {
                        debug!(?change, "applying change from the store");
                        cache.apply(&change);
                    }
                }
            }
            Err(err) => debug!(error = %err, "cannot read the change log; will retry"),
        }
    }
}

/// Change ids seen lately. PostgreSQL sequence values can commit out of
/// order, so each poll looks back [`Self::LOOKBACK`] ids below the highest
/// seen and skips those already applied.
struct ChangeCursor {
    highest: i64,
    /// Ids at or below this were in force before the process started.
    start: i64,
    seen: BTreeSet<i64>,
}

impl ChangeCursor {
    const LOOKBACK: i64 = 1000;

    fn new(highest: i64) -> Self {
        ChangeCursor {
            highest,
            start: highest,
            seen: BTreeSet::new(),
        }
    }

    fn floor(&self) -> i64 {
        self.highest.saturating_sub(Self::LOOKBACK).max(self.start)
    }

    fn query_from(&self) -> i64 {
        self.floor()
    }

    /// Whether `id` is new; remembers it.
    fn first_sight(&mut self, id: i64) -> bool {
        if id <= self.floor() || !self.seen.insert(id) {
            return false;
        }
        self.highest = self.highest.max(id);
        let floor = self.floor();
        self.seen = self.seen.split_off(&floor);
        true
    }
}

/// Wakes [`follow_changes`] whenever PostgreSQL announces a change.
/// Reconnects by itself; announcements missed meanwhile are covered by the
/// poll.
async fn listen_for_changes(url: String, cache: Weak<CredentialCache>, wake: Arc<Notify>) {
    loop {
        if cache.upgrade().is_none() {
            return;
        }
        match PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen(CHANGES_CHANNEL).await {
                Err(err) => debug!(error = %err, "LISTEN failed; will retry"),
                Ok(()) => {
                    debug!("listening for store changes");
                    loop {
                        match listener.try_recv().await {
                            // `None`: the connection dropped and changes may
                            // have been missed; read the log anyway.
                            Ok(_) => wake.notify_one(),
                            Err(err) => {
                                debug!(error = %err, "change listener lost the store; will retry");
                                break;
                            }
                        }
                        if cache.upgrade().is_none() {
                            return;
                        }
                    }
                }
            },
            Err(err) => debug!(error = %err, "cannot connect the change listener; will retry"),
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

/// Writes the access-key uses noted on the request path, in one
/// transaction every [`last_use::FLUSH_INTERVAL`]; a failed batch is put
/// back for the next.
async fn write_key_uses(store: Store, cache: Weak<CredentialCache>) {
    loop {
        tokio::time::sleep(last_use::FLUSH_INTERVAL).await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        let uses = cache.last_use.take(unix_now());
        if uses.is_empty() {
            continue;
        }
        match store.record_key_uses(&uses).await {
            Ok(rows) => cache.last_use.written(rows),
            Err(err) => {
                debug!(error = %err, "cannot record access-key uses; will retry");
                cache.last_use.put_back(uses);
            }
        }
    }
}

/// Sweeps expired rows and cache entries.
async fn sweep(store: Store, cache: Weak<CredentialCache>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        let now = unix_now();
        cache.prune_revoked_tokens(now);
        match store.sweep(now, now - CHANGE_LOG_KEEP_SECS).await {
            Ok(()) => debug!("swept expired one-time keys and revocations"),
            Err(err) => info!(error = %err, "sweep failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_applies_each_change_once_even_out_of_order() {
        let mut cursor = ChangeCursor::new(10);
        assert_eq!(cursor.query_from(), 10);
        assert!(!cursor.first_sight(10), "in force before start");
        assert!(cursor.first_sight(12));
        assert!(!cursor.first_sight(12));
        // 11 commits after 12: still applied, once.
        assert!(cursor.first_sight(11));
        assert!(!cursor.first_sight(11));
        assert!(cursor.first_sight(5000));
        assert_eq!(cursor.query_from(), 4000);
        assert!(!cursor.first_sight(3000), "below the look-back window");
        assert!(cursor.seen.len() <= 1001);
    }
}
