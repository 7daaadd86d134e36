//! The gateway's shared state, built once at start, and its background
//! work: following the store's change log and sweeping expired rows.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::auth::jwt::JwtKeys;
use crate::auth::throttle::LoginThrottle;
use crate::auth::{Authenticator, unix_now};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Forwarder;
use crate::store::cache::CredentialCache;
use crate::store::{Change, Store, StoreError};

/// How long change-log entries are kept for other processes to read.
pub const CHANGE_LOG_KEEP_SECS: i64 = 24 * 3600;
/// How often expired one-time keys, revocations and old changes are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

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
            auth: Authenticator::new(JwtKeys::new(&config.jwt), store.clone(), cache.clone()),
            throttle: LoginThrottle::new(&config.login),
            forwarder: Forwarder::new(&config.upstream),
            metrics: Metrics::default(),
            store,
            cache,
            config,
        });
        tokio::spawn(follow_changes(Arc::downgrade(&gateway), last_change));
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

/// Polls the change log so revocations made by other processes (the CLI,
/// other replicas) reach this cache within `store.poll_interval_ms`.
async fn follow_changes(gateway: Weak<Gateway>, mut last: i64) {
    loop {
        let Some(interval) = gateway.upgrade().map(|g| g.config.store.poll_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        match gateway.store.changes_since(last).await {
            Ok(changes) => {
                for (id, change) in changes {
                    debug!(?change, "applying change from the store");
                    gateway.apply(&change);
                    last = id;
                }
            }
            Err(err) => debug!(error = %err, "cannot read the change log; will retry"),
        }
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
