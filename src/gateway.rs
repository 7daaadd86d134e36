//! The gateway's shared state, built once at start, and its background
//! work: following the store's change log and sweeping expired rows.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::auth::throttle::LoginThrottle;
use crate::auth::{Authenticator, unix_now};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Forwarder;
use crate::store::cache::CredentialCache;
use crate::store::{CHANGES_CHANNEL, Change, Store, StoreError};

/// How long change-log entries are kept for other processes to read.
pub const CHANGE_LOG_KEEP_SECS: i64 = 24 * 3600;
/// How often expired one-time keys, revocations and old changes are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Pause before the change listener reconnects.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Everything a request needs, shared by all connections.
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
    /// Counters for `/metrics`.
    pub metrics: Metrics,
}

impl Gateway {
    /// Opens the store, loads revocations and starts the background tasks.
    pub async fn start(config: Config) -> Result<Arc<Gateway>, StoreError> {
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
        let gateway = Arc::new(Gateway {
            auth: Authenticator::new(config.jwt.keys.clone(), store.clone(), cache.clone()),
            throttle: LoginThrottle::new(store.clone(), &config.login),
            forwarder: Forwarder::new(&config.upstream),
            metrics: Metrics::default(),
            store,
            cache,
            config,
        });
        let wake = Arc::new(Notify::new());
        if let Some(url) = gateway.store.postgres_url() {
            tokio::spawn(listen_for_changes(
                url.to_owned(),
                Arc::downgrade(&gateway),
                wake.clone(),
            ));
        }
        tokio::spawn(follow_changes(Arc::downgrade(&gateway), last_change, wake));
        tokio::spawn(sweep(Arc::downgrade(&gateway)));
        Ok(gateway)
    }

    /// Applies one change to the cache.
    pub fn apply(&self, change: &Change) {
        match change {
            Change::User(name) => self.cache.forget_user(name),
            Change::Key(hash_hex) => {
                let mut hash = [0u8; 32];
                if hex::decode_to_slice(hash_hex, &mut hash).is_ok() {
                    self.cache.forget_key(&hash);
                }
            }
            Change::Token { jti, expires_at } => self.cache.revoke_token(jti, *expires_at),
        }
    }
}

/// Reads the change log so revocations made by other processes (the CLI,
/// other replicas) reach this cache: at every `store.poll_interval_ms`, and
/// at once when PostgreSQL announces a change.
async fn follow_changes(gateway: Weak<Gateway>, last: i64, wake: Arc<Notify>) {
    let mut cursor = ChangeCursor::new(last);
    loop {
        let Some(interval) = gateway.upgrade().map(|g| g.config.store.poll_interval) else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
        }
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        match gateway.store.changes_since(cursor.query_from()).await {
            Ok(changes) => {
                for (id, change) in changes {
                    if cursor.first_sight(id) {
                        debug!(?change, "applying change from the store");
                        gateway.apply(&change);
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
async fn listen_for_changes(url: String, gateway: Weak<Gateway>, wake: Arc<Notify>) {
    loop {
        if gateway.upgrade().is_none() {
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
                        if gateway.upgrade().is_none() {
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

/// Sweeps expired rows and cache entries.
async fn sweep(gateway: Weak<Gateway>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        let now = unix_now();
        gateway.cache.prune_revoked_tokens(now);
        match gateway.store.sweep(now, now - CHANGE_LOG_KEEP_SECS).await {
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
