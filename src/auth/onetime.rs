//! One-time keys (`POST /auth/onetimekey`): who gets one and how many are
//! kept. The HTTP handler reads the request and answers; this decides.
//!
//! Every key counts against the asking address (`onetimekey.max_per_address`);
//! only keys for local users are stored, so names that are no user take no
//! room in the table real users share, and a user's older keys are dropped
//! only among those asked from the same address. Users of an external
//! provider have no HA1: their keys could never succeed, so they are
//! treated as unknown names.

use crate::names::valid_username;
use crate::store::onetimekeys::NewOneTimeKey;
use crate::store::{Store, StoreError};

/// Outstanding one-time keys kept per user and asking address; older ones
/// are dropped.
const ONETIME_KEYS_PER_USER: usize = 5;
/// Outstanding one-time keys of local users kept in all; beyond, issuing
/// is refused (one address holds at most `onetimekey.max_per_address`).
const ONETIME_KEYS_TOTAL: i64 = 100_000;
/// Random bytes in a one-time key (128 bits).
const ONETIME_KEY_BYTES: usize = 16;

/// A one-time key asked for.
#[derive(Debug, Clone, Copy)]
pub struct OneTimeRequest<'a> {
    /// The name given (any text; only a local user's key is stored).
    pub username: &'a str,
    /// The asking address, as the throttle names it
    /// ([`crate::auth::throttle::address_subject`]).
    pub address: &'a str,
    /// Seconds the key lives (`onetimekey.ttl`).
    pub ttl_secs: u64,
    /// Keys outstanding per address (`onetimekey.max_per_address`).
    pub max_per_address: usize,
}

/// What became of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum OneTimeIssue {
    /// The key, shown once (the same answer for unknown names).
    Issued(String),
    /// The table of outstanding keys is full even after a sweep; a key
    /// may fit again once the oldest expire.
    StoreFull,
    /// The address holds its most outstanding keys; one expires in
    /// `retry_after` seconds.
    AddressFull {
        /// Seconds until the address's oldest key expires.
        retry_after: u64,
    },
}

/// Issues a one-time key for `request` under the policy above.
pub async fn issue(
    store: &Store,
    request: OneTimeRequest<'_>,
    now: i64,
) -> Result<OneTimeIssue, StoreError> {
    let local_user = valid_username(request.username)
        && store
            .user(request.username)
            .await?
            .is_some_and(|user| user.provider.is_none());
    if local_user && store.onetime_key_count().await? >= ONETIME_KEYS_TOTAL {
        store.sweep_expired(now).await?;
        if store.onetime_key_count().await? >= ONETIME_KEYS_TOTAL {
            return Ok(OneTimeIssue::StoreFull);
        }
    }
    let key = hex::encode(super::random_bytes::<ONETIME_KEY_BYTES>());
    let key_hash = hex::encode(super::accesskey::hash(&key));
    let new = NewOneTimeKey {
        key_hash_hex: &key_hash,
        username: local_user.then_some(request.username),
        address: request.address,
        expires_at: now.saturating_add(i64::try_from(request.ttl_secs).unwrap_or(i64::MAX)),
        max_per_user: ONETIME_KEYS_PER_USER,
        max_per_address: request.max_per_address,
    };
    Ok(match store.put_onetime_key(new, now).await? {
        Ok(()) => OneTimeIssue::Issued(key),
        Err(full) => OneTimeIssue::AddressFull {
            retry_after: full.retry_after,
        },
    })
}
