//! Access keys: their format (`ag_` + 43 base64url characters, 256 random
//! bits) and their issue, shared by the API and the CLI. The store keeps
//! only the SHA-256 of a key and its first characters.

use sha2::{Digest, Sha256};

use crate::scope::KeyScope;
use crate::store::{AccessKey, NewKey, Store, StoreError};

/// Every key starts with this.
pub const KEY_PREFIX: &str = "ag_";
/// Characters of a key kept to tell keys apart (`ag_` + 8).
pub const TOKEN_PREFIX_CHARS: usize = 11;
/// Random bytes in a key.
const KEY_RANDOM_BYTES: usize = 32;
/// Keys longer than this are refused before hashing.
pub const MAX_KEY_BYTES: usize = 256;
/// The longest lifetime a key may be given: ten years.
pub const MAX_EXPIRE_SECS: i64 = 10 * 366 * 86_400;

/// The SHA-256 of a key: what the store and the cache know it by.
pub type KeyHash = [u8; 32];

/// A fresh random key.
pub fn generate() -> String {
    format!("{KEY_PREFIX}{}", super::random_token(KEY_RANDOM_BYTES))
}

/// SHA-256 of the key's bytes.
pub fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// The shown prefix of a key.
pub fn token_prefix(key: &str) -> &str {
    key.get(..TOKEN_PREFIX_CHARS).unwrap_or(key)
}

/// What a new key is for, as its owner asked.
#[derive(Debug, Clone, Copy)]
pub struct KeyRequest<'a> {
    /// The user the key acts as: a user in the store, never an external
    /// provider's subject (which owns nothing here).
    pub owner: &'a super::StoreUser,
    /// Free text, checked by the caller.
    pub name: &'a str,
    /// Free text, checked by the caller.
    pub detail: &'a str,
    /// Seconds from `now` until it expires, 1 to [`MAX_EXPIRE_SECS`].
    pub expires_in: i64,
    /// What the key is narrowed to (fields checked by the caller; the
    /// owner's roles are checked by the store, at commit).
    pub scope: &'a KeyScope,
    /// Unexpired keys the owner may hold, this one included
    /// (`accesskeys.max_per_user`; checked by the store, at commit).
    pub max_per_user: usize,
}

/// A key made and stored: its record, and the key itself (shown once).
#[derive(Debug)]
pub struct IssuedKey {
    /// As stored.
    pub stored: AccessKey,
    /// The key; never stored.
    pub key: String,
}

/// Makes a fresh key for `request` and stores its hash; `NotFound` when
/// the owner does not exist, `RoleNotHeld` when the scope lists a role the
/// owner does not hold, `KeyLimitReached` when the owner holds
/// `max_per_user` unexpired keys already.
pub async fn issue(
    store: &Store,
    request: KeyRequest<'_>,
    now: i64,
) -> Result<IssuedKey, StoreError> {
    let key = generate();
    let token_hash_hex = hex::encode(hash(&key));
    let new = NewKey {
        username: request.owner.name(),
        name: request.name,
        detail: request.detail,
        token_hash_hex: &token_hash_hex,
        token_prefix: token_prefix(&key),
        tm_expire: now.saturating_add(request.expires_in),
        scope: request.scope,
        max_per_user: request.max_per_user,
    };
    let stored = store.create_key(new, now).await?;
    Ok(IssuedKey { stored, key })
}

/// Whether `key` has the shape of a key; anything else is refused without
/// a store lookup.
pub fn well_formed(key: &str) -> bool {
    key.len() <= MAX_KEY_BYTES
        && key.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
            rest.len() >= 32
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with("ag_"));
        assert_eq!(a.len(), 3 + 43);
        assert!(well_formed(&a), "{a}");
        assert_eq!(token_prefix(&a).len(), 11);
        assert!(a.starts_with(token_prefix(&a)));
    }

    #[test]
    fn shapes() {
        assert!(!well_formed("ag_short"));
        assert!(!well_formed(&format!("xx_{}", "a".repeat(40))));
        assert!(!well_formed(&format!("ag_{}", "a!".repeat(20))));
        assert!(!well_formed(&format!("ag_{}", "a".repeat(400))));
        assert!(well_formed(&format!("ag_{}", "a".repeat(32))));
    }

    #[test]
    fn hash_is_sha256() {
        assert_eq!(
            hex::encode(hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
