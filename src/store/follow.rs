//! Following the store from a running gateway: the change log, read at
//! every poll and at once when PostgreSQL announces a change, evicts what
//! other processes (the CLI, other replicas) revoked from this process's
//! cache; access-key uses noted on the request path are written in
//! batches; and a sweep deletes expired rows.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tracing::{debug, info};

use super::cache::CredentialCache;
use super::last_use;
use super::{CHANGES_CHANNEL, Store, StoreError};
use crate::clock::unix_now;

/// How long change-log entries are kept for other processes to read.
pub const CHANGE_LOG_KEEP_SECS: i64 = 24 * 3600;
/// How often expired one-time keys, revocations and old changes are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Pause before the change listener reconnects.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Starts following `store` into `cache` (every `poll_interval`, and on
/// each PostgreSQL announcement) and sweeping it. The tasks end when the
/// cache is dropped.
pub async fn start(
    store: &Store,
    cache: &Arc<CredentialCache>,
    poll_interval: Duration,
) -> Result<(), StoreError> {
    let last_change = store.last_change_id().await?;
    let wake = Arc::new(Notify::new());
    if let Some(url) = store.postgres_url() {
        tokio::spawn(listen_for_changes(
            url.to_owned(),
            Arc::downgrade(cache),
            wake.clone(),
        ));
    }
    tokio::spawn(follow_changes(
        store.clone(),
        Arc::downgrade(cache),
        poll_interval,
        last_change,
        wake,
    ));
    tokio::spawn(sweep(store.clone(), Arc::downgrade(cache)));
    tokio::spawn(write_key_uses(store.clone(), Arc::downgrade(cache)));
    Ok(())
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
        let counts = cache.last_use.take_counts();
        if uses.is_empty() && counts.is_empty() {
            continue;
        }
        match store.record_key_uses(&uses, &counts).await {
            Ok(rows) => cache.last_use.written(rows),
            Err(err) => {
                debug!(error = %err, "cannot record access-key uses; will retry");
                cache.last_use.put_back(uses);
                cache.last_use.put_back_counts(counts);
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
        match store.sweep_expired(now).await {
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
