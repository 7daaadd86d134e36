//! Access keys: their format and their issue, shared by the API and the
//! CLI. The store keeps only the SHA-256 of a key and its first characters.
//!
//! A key is `ag_`, 43 base64url characters (256 random bits) and, in keys
//! made since issue 24, 6 base62 characters of the CRC-32 of everything
//! before them (GitHub's token format is the model). The checksum lets a
//! mistyped or made-up key be refused without a store lookup, and lets a
//! secret scanner tell our keys from random strings:
//! `ag_[A-Za-z0-9_-]{43}[A-Za-z0-9]{6}` whose last 6 characters check.
//! Keys made before carry no checksum and keep working.

use sha2::{Digest, Sha256};

use crate::scope::KeyScope;
use crate::store::{AccessKey, NewKey, Store, StoreError};

/// Every key starts with this.
pub const KEY_PREFIX: &str = "ag_";
/// Characters of a key kept to tell keys apart (`ag_` + 8).
pub const TOKEN_PREFIX_CHARS: usize = 11;
/// Random bytes in a key.
const KEY_RANDOM_BYTES: usize = 32;
/// Base64url characters the random bytes take.
const KEY_RANDOM_CHARS: usize = 43;
/// Base62 characters of the checksum (62^6 > 2^32).
const CHECKSUM_CHARS: usize = 6;
/// Length of a key made before checksums: `ag_` + 43.
const LEGACY_KEY_CHARS: usize = KEY_PREFIX.len() + KEY_RANDOM_CHARS;
/// Length of a key with a checksum.
pub const KEY_CHARS: usize = LEGACY_KEY_CHARS + CHECKSUM_CHARS;
/// Base62 digits, in order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Keys longer than this are refused before hashing.
pub const MAX_KEY_BYTES: usize = 256;
/// The longest lifetime a key may be given: ten years.
pub const MAX_EXPIRE_SECS: i64 = 10 * 366 * 86_400;

/// The SHA-256 of a key: what the store and the cache know it by.
pub type KeyHash = [u8; 32];

/// A fresh random key, with its checksum.
pub fn generate() -> String {
    let mut key = format!("{KEY_PREFIX}{}", super::random_token(KEY_RANDOM_BYTES));
    let checksum = checksum(key.as_bytes());
    key.push_str(&checksum);
    key
}

/// The checksum of a key's body (`ag_` and the random part): its CRC-32
/// (IEEE, as zlib and PNG) in 6 base62 digits, most significant first.
fn checksum(body: &[u8]) -> String {
    let mut value = u64::from(crc32(body));
    let mut digits = [b'0'; CHECKSUM_CHARS];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits.iter().map(|&d| char::from(d)).collect()
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320). Bitwise: a key
/// is 46 bytes, so a table would buy nothing measurable.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
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

/// A fresh secret for an existing key: the key itself (shown once), its
/// hex hash and its shown prefix.
pub fn fresh_secret() -> (String, String, String) {
    let key = generate();
    let hash_hex = hex::encode(hash(&key));
    let prefix = token_prefix(&key).to_owned();
    (key, hash_hex, prefix)
}

/// Longest grace a reroll may give the replaced secret: a week.
pub const MAX_REROLL_GRACE_SECS: i64 = 7 * 86_400;

/// Whether `key` may be a key of ours, so that it is worth a store lookup:
/// a key with a checksum that checks, or a key of the shape made before
/// checksums (`ag_` and 32 or more base64url characters, other than the
/// checksummed length). Anything else is refused without a lookup.
pub fn well_formed(key: &str) -> bool {
    if key.len() > MAX_KEY_BYTES {
        return false;
    }
    let Some(rest) = key.strip_prefix(KEY_PREFIX) else {
        return false;
    };
    if rest.len() < 32
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return false;
    }
    if key.len() != KEY_CHARS {
        // Made before checksums: nothing to check but the shape.
        return true;
    }
    checksum_matches(key)
}

/// Whether a key of the checksummed length ends in the checksum of the
/// rest. Compared as bytes: the checksum is public, no secret leaks by
/// timing.
fn checksum_matches(key: &str) -> bool {
    let (body, sum) = key.as_bytes().split_at(LEGACY_KEY_CHARS);
    checksum(body).as_bytes() == sum
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
        assert_eq!(a.len(), 3 + 43 + 6);
        assert_eq!(a.len(), KEY_CHARS);
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
    fn crc32_known_vectors() {
        // The CRC-32 check value (RFC 1952's CRC, as zlib computes it).
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(checksum(b"123456789"), "3jZRME");
        assert_eq!(checksum(b""), "000000");
    }

    #[test]
    fn a_mistyped_key_fails_its_checksum() {
        let key = generate();
        assert!(well_formed(&key));
        // Every single-character change in the body or the checksum.
        for at in KEY_PREFIX.len()..key.len() {
            let mut bytes = key.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let typo = String::from_utf8(bytes).unwrap();
            assert!(!well_formed(&typo), "{at}");
        }
        // Two neighbours swapped.
        let mut bytes = key.clone().into_bytes();
        let at = (4..key.len() - 1)
            .find(|&i| bytes[i] != bytes[i + 1])
            .unwrap();
        bytes.swap(at, at + 1);
        assert!(!well_formed(&String::from_utf8(bytes).unwrap()));
        // Made up at the checksummed length.
        assert!(!well_formed(&format!("ag_{}", "A".repeat(49))));
    }

    #[test]
    fn keys_made_before_checksums_still_pass() {
        // What `generate` made before: ag_ + 43 base64url characters.
        let legacy = format!("ag_{}", super::super::random_token(KEY_RANDOM_BYTES));
        assert_eq!(legacy.len(), LEGACY_KEY_CHARS);
        assert!(well_formed(&legacy));
    }

    #[test]
    fn hash_is_sha256() {
        assert_eq!(
            hex::encode(hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
