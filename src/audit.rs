//! The audit log: who logged in, who changed which key or user, from where.
//!
//! Events are made here ([`Event::new`] and its builder methods) and written
//! to the store off the request path: [`AuditLog::record`] puts an event on
//! a bounded queue without waiting, and one writer task stores what is
//! queued in batches. On a clean shutdown [`AuditLog::close`] stops taking
//! events and waits (at most [`DRAIN_TIMEOUT`]) until the writer has stored
//! everything queued. When the queue is full (the store is down or slower
//! than the events come) an event is not queued: it is counted in
//! `authgate_audit_events_dropped_total` and written to the process log
//! instead (a warning with every field), so it is never lost silently and
//! the queue never grows past [`QUEUE_CAPACITY`]. The CLI writes its events
//! directly ([`Store::insert_audit`]).
//!
//! No field ever holds a secret: events carry names, ids and addresses.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::clock::unix_now;
use crate::metrics::Metrics;
pub use crate::store::AuditEvent as Event;
use crate::store::Store;

/// Events queued at most; beyond, [`AuditLog::record`] drops and counts.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Events stored in one transaction at most.
const BATCH: usize = 512;
/// How long the writer waits for more events before storing a batch that
/// is not full: a burst becomes one transaction; an event shows in the
/// listing this much later at most (plus the store's time).
const LINGER: Duration = Duration::from_millis(100);
/// Attempts to store one batch before it is counted as dropped.
const STORE_ATTEMPTS: u32 = 3;
/// Wait before storing a batch again after the store failed.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Longest wait in [`AuditLog::close`] for the queue to be stored.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest text kept in a field: names and ids are shorter; anything a
/// client sent (a username tried at login) is cut here.
const MAX_FIELD_CHARS: usize = 256;
/// How often the retention purge runs.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// What happened. The names are the `event` field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A password login succeeded.
    Login,
    /// A password login failed (target: the name tried).
    LoginFailed,
    /// A one-time-key login succeeded.
    OneTimeKeyLogin,
    /// A one-time-key login failed (target: the name tried).
    OneTimeKeyLoginFailed,
    /// Failed logins locked a user or an address out (target: the user, or
    /// `addr:` and the address).
    Lockout,
    /// `authgate login unlock` cleared lockouts (target: the user, the
    /// address, or `*` for all).
    Unlock,
    /// A JWT was revoked by `POST /auth/logout`.
    Logout,
    /// `authgate user passwd`.
    PasswordChanged,
    /// `authgate user add`.
    UserAdded,
    /// `authgate user remove`.
    UserRemoved,
    /// A sign-in through an `[[oidc]]` provider.
    OidcLogin,
    /// An access key was created (target: the key id).
    KeyCreated,
    /// An access key got a new secret.
    KeyRerolled,
    /// An access key was disabled.
    KeyDisabled,
    /// An access key was enabled again.
    KeyEnabled,
    /// An access key was deleted (by id).
    KeyDeleted,
    /// An access key was revoked by its value (`POST /v1.0/accesskeys/revoke`).
    KeyRevokedByValue,
    /// The configuration was reloaded.
    ConfigReloaded,
}

impl Kind {
    /// The `event` field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Login => "login",
            Kind::LoginFailed => "login_failed",
            Kind::OneTimeKeyLogin => "onetimekey_login",
            Kind::OneTimeKeyLoginFailed => "onetimekey_login_failed",
            Kind::Lockout => "lockout",
            Kind::Unlock => "unlock",
            Kind::Logout => "logout",
            Kind::PasswordChanged => "password_changed",
            Kind::UserAdded => "user_added",
            Kind::UserRemoved => "user_removed",
            Kind::OidcLogin => "oidc_login",
            Kind::KeyCreated => "key_created",
            Kind::KeyRerolled => "key_rerolled",
            Kind::KeyDisabled => "key_disabled",
            Kind::KeyEnabled => "key_enabled",
            Kind::KeyDeleted => "key_deleted",
            Kind::KeyRevokedByValue => "key_revoked_by_value",
            Kind::ConfigReloaded => "config_reloaded",
        }
    }
}

/// `text` cut to [`MAX_FIELD_CHARS`] characters.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_FIELD_CHARS) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

impl Event {
    /// A `kind` event happening now, by nobody known, on nothing.
    pub fn new(kind: Kind) -> Event {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            time: unix_now(),
            provider: String::new(),
            user: String::new(),
            address: String::new(),
            event: kind.as_str().to_owned(),
            target: String::new(),
            request_id: String::new(),
        }
    }

    /// Who acted: `user` of `provider`.
    pub fn by(mut self, provider: &str, user: &str) -> Event {
        self.provider = bounded(provider);
        self.user = bounded(user);
        self
    }

    /// The client's address.
    pub fn from(mut self, address: impl std::fmt::Display) -> Event {
        self.address = bounded(&address.to_string());
        self
    }

    /// The user or key acted on.
    pub fn on(mut self, target: &str) -> Event {
        self.target = bounded(target);
        self
    }

    /// The request it happened in (an `X-Request-Id` value).
    pub fn in_request(mut self, request_id: &http::HeaderValue) -> Event {
        self.request_id = bounded(request_id.to_str().unwrap_or_default());
        self
    }
}

/// The queue to the writer task; cheap to clone (every config snapshot
/// shares one).
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    queue: mpsc::Sender<Event>,
    stop: watch::Sender<bool>,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

impl AuditLog {
    /// Starts the writer task on the current runtime, storing into `store`.
    pub fn start(store: Store, metrics: Arc<Metrics>) -> AuditLog {
        let (queue, events) = mpsc::channel(QUEUE_CAPACITY);
        let (stop, stopped) = watch::channel(false);
        let writer = tokio::spawn(write(store, events, stopped, metrics.clone()));
        AuditLog {
            inner: Arc::new(Inner {
                queue,
                stop,
                writer: std::sync::Mutex::new(Some(writer)),
                metrics,
            }),
        }
    }

    /// Queues `event` for the writer without waiting. A full queue, or a
    /// log already closed, drops it: counted, and logged with its fields.
    pub fn record(&self, event: Event) {
        if let Err(err) = self.inner.queue.try_send(event) {
            let (why, event) = match err {
                mpsc::error::TrySendError::Full(event) => ("the audit queue is full", event),
                mpsc::error::TrySendError::Closed(event) => ("the audit log is closed", event),
            };
            self.inner.metrics.audit_dropped(1);
            log_dropped(why, &event);
        }
    }

    /// Stops taking events and waits until the writer has stored every
    /// queued one (at most [`DRAIN_TIMEOUT`]). Later calls return at once.
    pub async fn close(&self) {
        let _ = self.inner.stop.send(true);
        let writer = self
            .inner
            .writer
            .lock()
            .map(|mut writer| writer.take())
            .unwrap_or(None);
        if let Some(writer) = writer
            && tokio::time::timeout(DRAIN_TIMEOUT, writer).await.is_err()
        {
            tracing::warn!(
                timeout_seconds = DRAIN_TIMEOUT.as_secs(),
                "audit events still queued at shutdown were not all stored in time"
            );
        }
    }
}

/// A dropped event in the process log, so that it is not lost silently.
fn log_dropped(why: &str, event: &Event) {
    tracing::warn!(
        audit.event = %event.event,
        audit.provider = %event.provider,
        audit.user = %event.user,
        audit.address = %event.address,
        audit.target = %event.target,
        request_id = %event.request_id,
        "{why}: audit event not stored"
    );
}

/// The writer task: stores what is queued in batches until stopped, then
/// whatever is still queued, and ends.
async fn write(
    store: Store,
    mut events: mpsc::Receiver<Event>,
    mut stopped: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            received = events.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    // Every handle is gone: nothing more can come.
                    break;
                }
                stopping = gather(&mut events, &mut batch, &mut stopped).await;
            }
            // Only ever set to true; an error means every handle is gone.
            _ = stopped.changed() => stopping = true,
        }
        store_batch(&store, &mut batch, &metrics).await;
    }
    // Senders now fail at once; what is queued is still received.
    events.close();
    while events.recv_many(&mut batch, BATCH).await > 0 {
        store_batch(&store, &mut batch, &metrics).await;
    }
}

/// Adds what comes within [`LINGER`] to `batch` (up to [`BATCH`]), so
/// that a burst is stored in one transaction; `true` when stopping was
/// asked meanwhile.
async fn gather(
    events: &mut mpsc::Receiver<Event>,
    batch: &mut Vec<Event>,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let deadline = tokio::time::sleep(LINGER);
    tokio::pin!(deadline);
    while batch.len() < BATCH {
        tokio::select! {
            _ = &mut deadline => return false,
            _ = stopped.changed() => return true,
            received = events.recv_many(batch, BATCH - batch.len()) => {
                if received == 0 {
                    return false;
                }
            }
        }
    }
    false
}

/// Stores `batch` (retrying a failing store a few times) and empties it;
/// a batch the store keeps refusing is counted as dropped and logged.
async fn store_batch(store: &Store, batch: &mut Vec<Event>, metrics: &Metrics) {
    if batch.is_empty() {
        return;
    }
    for attempt in 1..=STORE_ATTEMPTS {
        match store.insert_audit(batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(err) => {
                tracing::warn!(
                    error = %err.detail(),
                    events = batch.len(),
                    attempt,
                    "cannot store audit events"
                );
                if attempt < STORE_ATTEMPTS {
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
    metrics.audit_dropped(batch.len() as u64);
    for event in batch.drain(..) {
        log_dropped("the store refused it", &event);
    }
}

/// Deletes the events older than `keep_days`; logs what it did.
pub async fn purge(store: &Store, keep_days: u32) {
    let before = unix_now() - i64::from(keep_days) * 86_400;
    match store.purge_audit(before).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, keep_days, "old audit events purged"),
        Err(err) => tracing::warn!(error = %err.detail(), "cannot purge old audit events"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreUrl;
    use crate::store::AuditQuery;

    #[test]
    fn fields_are_bounded_and_named() {
        let long = "é".repeat(1000);
        let event = Event::new(Kind::LoginFailed).on(&long).by("local", &long);
        assert_eq!(event.target.chars().count(), MAX_FIELD_CHARS);
        assert_eq!(event.user.chars().count(), MAX_FIELD_CHARS);
        assert_eq!(event.event, "login_failed");
        assert!(uuid::Uuid::parse_str(&event.id).is_ok());
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreUrl::Sqlite(dir.path().join("a.db")))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn close_stores_everything_queued() {
        let (_dir, store) = store().await;
        let metrics = Arc::new(Metrics::default());
        let log = AuditLog::start(store.clone(), metrics.clone());
        for i in 0..2000 {
            log.record(Event::new(Kind::KeyCreated).on(&format!("k{i}")));
        }
        log.close().await;
        let all = AuditQuery {
            limit: 10_000,
            ..AuditQuery::default()
        };
        assert_eq!(store.audit_events(all).await.unwrap().len(), 2000);
        // Closed: a late event is counted, not queued for nobody.
        log.record(Event::new(Kind::KeyCreated));
        assert!(
            metrics
                .render(Default::default(), Default::default())
                .contains("authgate_audit_events_dropped_total 1")
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_growing() {
        let (_dir, store) = store().await;
        let metrics = Arc::new(Metrics::default());
        // A current-thread runtime: the writer cannot run while this test
        // does not yield, so the queue fills.
        let log = AuditLog::start(store.clone(), metrics.clone());
        for _ in 0..QUEUE_CAPACITY + 5 {
            log.record(Event::new(Kind::Login));
        }
        assert!(
            metrics
                .render(Default::default(), Default::default())
                .contains("authgate_audit_events_dropped_total 5"),
            "{}",
            metrics.render(Default::default(), Default::default())
        );
        log.close().await;
        let all = AuditQuery {
            limit: 100_000,
            ..AuditQuery::default()
        };
        assert_eq!(store.audit_events(all).await.unwrap().len(), QUEUE_CAPACITY);
        store.close().await;
    }

    #[tokio::test]
    async fn listing_filters_pages_and_purges() {
        let (_dir, store) = store().await;
        let mut events = Vec::new();
        for (i, (user, target)) in [("alice", ""), ("", "alice"), ("bob", "carol")]
            .into_iter()
            .enumerate()
        {
            let mut event = Event::new(Kind::KeyCreated).by("local", user).on(target);
            event.time = 1000 + i as i64;
            events.push(event);
        }
        store.insert_audit(&events).await.unwrap();
        let query = |since, user, before| AuditQuery {
            since,
            user,
            before,
            limit: 10,
        };
        let newest_first = store.audit_events(query(None, None, None)).await.unwrap();
        let times: Vec<i64> = newest_first.iter().map(|e| e.time).collect();
        assert_eq!(times, [1002, 1001, 1000]);
        let alice = store
            .audit_events(query(None, Some("alice"), None))
            .await
            .unwrap();
        assert_eq!(alice.len(), 2, "acted and acted on");
        let since = store
            .audit_events(query(Some(1001), None, None))
            .await
            .unwrap();
        assert_eq!(since.len(), 2, "since is inclusive");
        let older = store
            .audit_events(query(None, None, Some(&newest_first[0].id)))
            .await
            .unwrap();
        assert_eq!(older, newest_first[1..]);
        assert_eq!(store.purge_audit(1001).await.unwrap(), 1);
        assert_eq!(store.purge_audit(1001).await.unwrap(), 0, "idempotent");
        store.close().await;
    }
}
