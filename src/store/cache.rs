//! The in-memory credential cache in front of the store, so that the hot
//! path never waits on the store.
//!
//! Entries are positive (what authentication needs) or negative ("no such
//! user/key", kept briefly so random keys cannot hammer the store). Both are
//! bounded by `quick_cache` (CLOCK-Pro eviction). Revocations evict at once
//! in this process; other processes' revocations arrive through the store's
//! change log (see [`crate::store::follow`], which applies it here). Verified JWTs are cached above, by the
//! keys that checked them (`token::cache`); revocations reach those caches
//! through [`TokenRevocations`], so storage names nothing of authentication.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use foldhash::fast::RandomState;
use quick_cache::{Equivalent, Lifecycle, UnitWeighter};
use uuid::Uuid;

use crate::config::CacheConfig;
use crate::scope::{KeyRateLimit, KeyScope};
use crate::store::Change;
use crate::store::last_use::LastUse;
use crate::token::TokenRevocations;

/// An access key's SHA-256, the key of the access-key cache (the same type
/// as `auth::accesskey::KeyHash`, named here so storage needs nothing from
/// authentication).
pub type KeyHash = [u8; 32];

/// What a JWT check needs to know about its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFacts {
    /// Current credential generation.
    pub generation: i64,
    /// `local` or the user's `[[oidc]]` provider.
    pub provider: Arc<str>,
    /// `provider` as the `X-Auth-Provider` value.
    pub provider_value: Option<http::HeaderValue>,
}

impl UserFacts {
    /// The facts of a user as stored.
    pub fn of(user: &crate::store::User) -> UserFacts {
        UserFacts::new(user.generation, user.provider_name())
    }

    /// A user's facts: its credential generation and provider.
    pub fn new(generation: i64, provider: &str) -> UserFacts {
        UserFacts {
            generation,
            provider: Arc::from(provider),
            provider_value: crate::names::header_value(provider),
        }
    }
}

/// What an access-key check needs to know about the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    /// Key id, 16 bytes in place rather than a 36-character string.
    pub key_id: Uuid,
    /// Owner, shared by all of the owner's cached keys.
    pub owner: Arc<KeyOwner>,
    /// Expiry, unix seconds; checked on every request.
    pub expires_at: i64,
    /// The roles requests with this key carry: the owner's, or the key's
    /// own that the owner holds.
    pub roles: Arc<[String]>,
    /// The methods and paths the key is limited to; `None`: any.
    pub scope: Option<Arc<KeyScope>>,
    /// The key's own budget; `None`: none. Cached with the rest, so the
    /// per-key limit needs no store read per request.
    pub rate_limit: Option<KeyRateLimit>,
    /// `roles` as the `X-Auth-Roles` value: the owner's, shared, unless
    /// the key has roles of its own. (The key id's value is formatted per
    /// request: 36 bytes more for every cached key is not worth it.)
    pub roles_value: Option<http::HeaderValue>,
}

/// Who owns an access key. One per user in the cache, however many of the
/// user's keys are cached (see [`CredentialCache::key_owner`]).
#[derive(Debug, PartialEq, Eq)]
pub struct KeyOwner {
    /// Username.
    pub username: Arc<str>,
    /// `local` or the user's `[[oidc]]` provider.
    pub provider: Arc<str>,
    /// The user's roles.
    pub roles: Arc<[String]>,
    /// `username` as the `X-Auth-User` value.
    pub username_value: Option<http::HeaderValue>,
    /// `provider` as the `X-Auth-Provider` value.
    pub provider_value: Option<http::HeaderValue>,
    /// `roles` as the `X-Auth-Roles` value (a key without roles of its own).
    pub roles_value: Option<http::HeaderValue>,
}

/// A cache answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    /// The store said this recently enough: `Some` exists, `None` does not.
    Fresh(Option<T>),
    /// A positive entry past its time to live: ask the store, but fall back
    /// to this when the store is down.
    Stale(T),
    /// Nothing known.
    Missing,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    value: Option<T>,
    stored_at: Instant,
}

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Fresh answers.
    pub hits: AtomicU64,
    /// Store round-trips needed.
    pub misses: AtomicU64,
    /// Entries dropped for room or revocation.
    pub evictions: AtomicU64,
}

/// Counts what the cache evicts during an insert.
#[derive(Debug, Clone, Copy, Default)]
struct CountEvictions;

impl<K, V> Lifecycle<K, V> for CountEvictions {
    type RequestState = u64;

    fn on_evict(&self, evicted: &mut u64, _key: K, _value: V) {
        *evicted += 1;
    }
}

/// A bounded map with positive and negative time to live. Bounded by
/// `quick_cache` (CLOCK-Pro): when full, an insert evicts entries that
/// were not asked for again, so a flood of one-off lookups (random keys)
/// does not push out the credentials in steady use.
struct BoundedMap<K: Eq + Hash, T> {
    map: quick_cache::sync::Cache<K, Entry<T>, UnitWeighter, RandomState, CountEvictions>,
    ttl: Duration,
    negative_ttl: Duration,
}

impl<K: Eq + Hash + Clone, T: Clone> BoundedMap<K, T> {
    fn new(config: &CacheConfig) -> Self {
        BoundedMap {
            map: quick_cache::sync::Cache::with(
                config.max_entries,
                config.max_entries as u64,
                UnitWeighter,
                RandomState::default(),
                CountEvictions,
            ),
            ttl: config.ttl,
            negative_ttl: config.negative_ttl,
        }
    }

    fn get<Q>(&self, key: &Q, now: Instant) -> Lookup<T>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let Some(entry) = self.map.get(key) else {
            return Lookup::Missing;
        };
        let age = now.saturating_duration_since(entry.stored_at);
        match entry.value {
            Some(value) if age < self.ttl => Lookup::Fresh(Some(value)),
            Some(value) => Lookup::Stale(value),
            None if age < self.negative_ttl => Lookup::Fresh(None),
            None => Lookup::Missing,
        }
    }

    /// Inserts, evicting when full. Returns how many were evicted.
    fn insert(&self, key: K, value: Option<T>, now: Instant) -> u64 {
        let mut evicted = 0;
        self.map.insert_with_lifecycle(
            key,
            Entry {
                value,
                stored_at: now,
            },
            &mut evicted,
        );
        evicted
    }
}

/// Users, access keys and revoked token ids, in memory.
pub struct CredentialCache {
    users: BoundedMap<Arc<str>, UserFacts>,
    keys: BoundedMap<KeyHash, KeyFacts>,
    /// The owners of cached keys, one per user.
    owners: DashMap<Arc<str>, Arc<KeyOwner>>,
    /// Bound of `owners`: the cache's entry bound.
    max_owners: usize,
    revoked_tokens: DashMap<String, i64>,
    /// The verified-token caches of the config snapshots still alive, to
    /// empty for a user or a token on revocation.
    token_caches: Mutex<Vec<Weak<dyn TokenRevocations>>>,
    /// Hit, miss and eviction counters.
    pub stats: CacheStats,
    /// Key uses waiting to be written to the store.
    pub last_use: LastUse,
    /// Counts revocations, so that long-lived work done under a credential
    /// (a spliced WebSocket) can check it again when one happens.
    revocations: tokio::sync::watch::Sender<u64>,
}

impl CredentialCache {
    /// An empty cache with the configured bounds.
    pub fn new(config: &CacheConfig) -> Self {
        CredentialCache {
            users: BoundedMap::new(config),
            keys: BoundedMap::new(config),
            owners: DashMap::new(),
            max_owners: config.max_entries,
            revoked_tokens: DashMap::new(),
            token_caches: Mutex::new(Vec::new()),
            stats: CacheStats::default(),
            last_use: LastUse::default(),
            revocations: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Told of every revocation this cache learns of (a key deleted, a
    /// user removed or given a new password, a token logged out), here or
    /// through the change log: whoever holds work done under a credential
    /// checks it again then.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    fn revoked(&self) {
        self.revocations
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    fn count(&self, lookup: &Lookup<impl Sized>) {
        let counter = match lookup {
            Lookup::Fresh(_) => &self.stats.hits,
            Lookup::Stale(_) | Lookup::Missing => &self.stats.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Cached facts about a user.
    pub fn user(&self, username: &str, now: Instant) -> Lookup<UserFacts> {
        let lookup = self.users.get(username, now);
        self.count(&lookup);
        lookup
    }

    /// Remembers what the store said about a user.
    pub fn put_user(&self, username: &str, facts: Option<UserFacts>, now: Instant) {
        let evicted = self.users.insert(Arc::from(username), facts, now);
        self.stats.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    /// The owner record for a key of `username` with `roles`: the one the
    /// user's other cached keys share when the roles are the same, so a
    /// million keys of one user hold one copy of the name and the roles.
    pub fn key_owner(&self, username: &str, provider: &str, roles: Vec<String>) -> Arc<KeyOwner> {
        if let Some(owner) = self.owners.get(username)
            && *owner.roles == *roles
            && *owner.provider == *provider
        {
            return owner.clone();
        }
        let owner = Arc::new(KeyOwner {
            username: Arc::from(username),
            provider: Arc::from(provider),
            username_value: crate::names::header_value(username),
            provider_value: crate::names::header_value(provider),
            roles_value: crate::names::roles_header_value(&roles),
            roles: Arc::from(roles),
        });
        if self.owners.len() >= self.max_owners {
            // Cached keys keep their own owners alive; only sharing is lost.
            self.owners.clear();
        }
        self.owners.insert(owner.username.clone(), owner.clone());
        owner
    }

    /// Cached facts about an access key.
    pub fn key(&self, hash: &KeyHash, now: Instant) -> Lookup<KeyFacts> {
        let lookup = self.keys.get(hash, now);
        self.count(&lookup);
        lookup
    }

    /// [`Self::key`] for a key the store will be asked about only if
    /// `admissible` says so: one not cached that it refuses is `None` and
    /// counts as neither hit nor miss, as no store query follows.
    pub fn admissible_key(
        &self,
        hash: &KeyHash,
        now: Instant,
        admissible: impl FnOnce() -> bool,
    ) -> Option<Lookup<KeyFacts>> {
        let lookup = self.keys.get(hash, now);
        if matches!(lookup, Lookup::Missing) && !admissible() {
            return None;
        }
        self.count(&lookup);
        Some(lookup)
    }

    /// Remembers what the store said about an access key.
    pub fn put_key(&self, hash: KeyHash, facts: Option<KeyFacts>, now: Instant) {
        let evicted = self.keys.insert(hash, facts, now);
        self.stats.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Revocations reach `tokens` from now on (a new config snapshot's
    /// verified-token cache; those of dropped snapshots are let go).
    pub fn watch_token_cache<C: TokenRevocations + 'static>(&self, tokens: &Arc<C>) {
        let mut caches = self
            .token_caches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        caches.retain(|cache| cache.strong_count() > 0);
        let tokens: Weak<dyn TokenRevocations> = Arc::downgrade(tokens) as Weak<C>;
        caches.push(tokens);
    }

    fn each_token_cache(&self, forget: impl Fn(&dyn TokenRevocations)) {
        let caches = self
            .token_caches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for tokens in caches.iter().filter_map(Weak::upgrade) {
            forget(&*tokens);
        }
    }

    /// Forgets a user, every key of theirs and their verified tokens
    /// (removal, password change).
    pub fn forget_user(&self, username: &str) {
        self.each_token_cache(|tokens| tokens.forget_user(username));
        let mut evicted = u64::from(self.users.map.remove(username).is_some());
        self.owners.remove(username);
        let before = self.keys.map.len();
        self.keys.map.retain(|_, entry: &Entry<KeyFacts>| {
            entry
                .value
                .as_ref()
                .is_none_or(|facts| &*facts.owner.username != username)
        });
        evicted += before.saturating_sub(self.keys.map.len()) as u64;
        self.stats.evictions.fetch_add(evicted, Ordering::Relaxed);
        self.revoked();
    }

    /// Forgets one key (revocation).
    pub fn forget_key(&self, hash: &KeyHash) {
        if self.keys.map.remove(hash).is_some() {
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        }
        self.revoked();
    }

    /// Marks a token id revoked until `expires_at`, and drops the token
    /// from the verified-token caches.
    pub fn revoke_token(&self, jti: &str, expires_at: i64) {
        // A logout here comes back through the change log: the second time
        // the token is already out of the caches, so skip their sweep.
        if self
            .revoked_tokens
            .insert(jti.to_owned(), expires_at)
            .is_none()
        {
            self.each_token_cache(|tokens| tokens.forget_token_id(jti));
            self.revoked();
        }
    }

    /// Whether a token id was revoked.
    pub fn token_revoked(&self, jti: &str) -> bool {
        self.revoked_tokens.contains_key(jti)
    }

    /// Drops revocations of tokens that have expired anyway.
    pub fn prune_revoked_tokens(&self, now_unix: i64) {
        self.revoked_tokens
            .retain(|_, expires_at| *expires_at > now_unix);
    }

    /// Applies a change read from the store's change log.
    pub fn apply(&self, change: &Change) {
        match change {
            Change::User(name) => self.forget_user(name),
            Change::Key(hash_hex) => {
                let mut hash = [0u8; 32];
                if hex::decode_to_slice(hash_hex, &mut hash).is_ok() {
                    self.forget_key(&hash);
                }
            }
            Change::Token { jti, expires_at } => self.revoke_token(jti, *expires_at),
        }
    }

    /// Number of cached users and keys (for metrics).
    pub fn sizes(&self) -> (usize, usize) {
        (self.users.map.len(), self.keys.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_entries: usize) -> CacheConfig {
        CacheConfig {
            max_entries,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
        }
    }

    fn facts_of_generation(generation: i64) -> UserFacts {
        UserFacts::new(generation, "local")
    }

    fn facts(user: &str) -> KeyFacts {
        KeyFacts {
            key_id: Uuid::nil(),
            owner: Arc::new(KeyOwner {
                username: Arc::from(user),
                provider: Arc::from("local"),
                roles: Arc::from(vec![]),
                username_value: None,
                provider_value: None,
                roles_value: None,
            }),
            expires_at: 0,
            roles: Arc::from(vec![]),
            scope: None,
            rate_limit: None,
            roles_value: None,
        }
    }

    #[test]
    fn positive_entries_go_stale_and_negative_ones_vanish() {
        let cache = CredentialCache::new(&config(100));
        let t0 = Instant::now();
        cache.put_user("alice", Some(facts_of_generation(1)), t0);
        cache.put_user("ghost", None, t0);
        assert_eq!(
            cache.user("alice", t0 + Duration::from_secs(59)),
            Lookup::Fresh(Some(facts_of_generation(1)))
        );
        assert_eq!(
            cache.user("alice", t0 + Duration::from_secs(61)),
            Lookup::Stale(facts_of_generation(1))
        );
        assert_eq!(
            cache.user("ghost", t0 + Duration::from_secs(4)),
            Lookup::Fresh(None)
        );
        assert_eq!(
            cache.user("ghost", t0 + Duration::from_secs(6)),
            Lookup::Missing
        );
        assert_eq!(cache.user("nobody", t0), Lookup::Missing);
    }

    #[test]
    fn size_is_bounded() {
        let cache = CredentialCache::new(&config(100));
        let now = Instant::now();
        for i in 0..1000u32 {
            let mut hash = [0u8; 32];
            hash[..4].copy_from_slice(&i.to_be_bytes());
            cache.put_key(hash, Some(facts("alice")), now);
        }
        let (_, keys) = cache.sizes();
        assert!(keys <= 100, "{keys}");
        assert!(cache.stats.evictions.load(Ordering::Relaxed) >= 900);
    }

    #[test]
    fn keys_in_use_survive_a_flood_of_one_off_lookups() {
        let cache = CredentialCache::new(&config(1000));
        let now = Instant::now();
        let in_use: Vec<KeyHash> = (0..50u8).map(|i| [i; 32]).collect();
        for hash in &in_use {
            cache.put_key(*hash, Some(facts("alice")), now);
        }
        // Random keys (negative entries) well past the bound, while the
        // keys in use keep being asked for.
        for i in 0..20_000u32 {
            let mut random = [0xff; 32];
            random[..4].copy_from_slice(&i.to_be_bytes());
            cache.put_key(random, None, now);
            let hash = &in_use[i as usize % in_use.len()];
            assert!(
                matches!(cache.key(hash, now), Lookup::Fresh(Some(_))),
                "a key in use was evicted after {i} one-off lookups"
            );
        }
        assert!(cache.sizes().1 <= 1000);
    }

    #[test]
    fn keys_refused_before_the_store_count_as_neither_hit_nor_miss() {
        let cache = CredentialCache::new(&config(100));
        let now = Instant::now();
        let misses = || cache.stats.misses.load(Ordering::Relaxed);
        assert_eq!(cache.admissible_key(&[1; 32], now, || false), None);
        assert_eq!(misses(), 0, "a refused key is no store query");
        assert_eq!(
            cache.admissible_key(&[1; 32], now, || true),
            Some(Lookup::Missing)
        );
        assert_eq!(misses(), 1);
        // A cached key is not asked about again.
        cache.put_key([2; 32], None, now);
        assert_eq!(
            cache.admissible_key(&[2; 32], now, || unreachable!()),
            Some(Lookup::Fresh(None))
        );
    }

    #[test]
    fn forgetting_a_user_drops_their_keys() {
        let cache = CredentialCache::new(&config(100));
        let now = Instant::now();
        cache.put_user("alice", Some(facts_of_generation(1)), now);
        cache.put_key([1; 32], Some(facts("alice")), now);
        cache.put_key([2; 32], Some(facts("bob")), now);
        cache.forget_user("alice");
        assert_eq!(cache.user("alice", now), Lookup::Missing);
        assert_eq!(cache.key(&[1; 32], now), Lookup::Missing);
        assert!(matches!(cache.key(&[2; 32], now), Lookup::Fresh(Some(_))));
        cache.forget_key(&[2; 32]);
        assert_eq!(cache.key(&[2; 32], now), Lookup::Missing);
    }

    #[test]
    fn revoked_tokens_are_pruned_after_expiry() {
        let cache = CredentialCache::new(&config(100));
        cache.revoke_token("j1", 100);
        cache.revoke_token("j2", 300);
        assert!(cache.token_revoked("j1"));
        cache.prune_revoked_tokens(200);
        assert!(!cache.token_revoked("j1"));
        assert!(cache.token_revoked("j2"));
    }
}
