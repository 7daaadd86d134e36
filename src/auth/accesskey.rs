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
//!
//! The rules a key's fields are held to (expiry, name and detail, scope,
//! rate limit, a reroll's grace) are written here once, for the API and
//! the CLI alike: each check answers a [`FieldProblem`] naming the field.

use sha2::{Digest, Sha256};

use crate::scope::{KeyRateLimit, KeyScope};
use crate::store::{AccessKey, NewKey, Store, StoreError};
use crate::text::{MAX_DETAIL_CHARS, MAX_NAME_CHARS, TextProblem, check_label};

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
    checksum_digits(body)
        .iter()
        .map(|&d| char::from(d))
        .collect()
}

/// [`checksum`] as bytes, without allocating.
fn checksum_digits(body: &[u8]) -> [u8; CHECKSUM_CHARS] {
    let mut value = u64::from(crc32(body));
    let mut digits = [b'0'; CHECKSUM_CHARS];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), a byte at a time
/// from a table built at compile time: checked on every request with a
/// key, where the bitwise form cost 8 rounds a byte.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc = (crc >> 8) ^ CRC32_TABLE[usize::from((crc as u8) ^ byte)];
    }
    !crc
}

/// The CRC-32 of each byte value, for [`crc32`].
const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = index as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
};

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
    /// The key's own budget (checked by the caller with
    /// [`check_rate_limit`]); `None`: none.
    pub rate_limit: Option<KeyRateLimit>,
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
        rate_limit: request.rate_limit,
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

/// A field of a key that a caller gave, for [`FieldProblem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField {
    /// `name`.
    Name,
    /// `detail`.
    Detail,
    /// `expire`.
    Expire,
    /// `roles`, `methods` or `path_prefixes`.
    Scope,
    /// `rate_limit`, `rate_limit.rate` or `rate_limit.burst`.
    RateLimit,
    /// A reroll's `grace`.
    Grace,
}

impl KeyField {
    /// The `authgate key` flag that gives this field.
    pub fn cli_flag(self) -> &'static str {
        match self {
            KeyField::Name => "--name",
            KeyField::Detail => "--detail",
            KeyField::Expire => "--expire",
            KeyField::Scope => "--role/--method/--path",
            KeyField::RateLimit => "--rate/--burst",
            KeyField::Grace => "--grace",
        }
    }
}

/// Why a key's field is refused: the field, and a message that names it
/// (as the API's JSON calls it) and never repeats the value given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldProblem {
    /// The field refused.
    pub field: KeyField,
    /// One line for the caller.
    pub message: &'static str,
}

const fn problem(field: KeyField, message: &'static str) -> FieldProblem {
    FieldProblem { field, message }
}

const EXPIRE_RANGE: &str = "expire must be a whole number of seconds from 1 to ten years";
const NAME_TOO_LONG: &str = "name is longer than 256 characters";
const DETAIL_TOO_LONG: &str = "detail is longer than 4096 characters";
const GRACE_RANGE: &str = "grace must be a whole number of seconds from 0 to 604800";
const RATE_RANGE: &str =
    "rate_limit.rate must be a number of requests per second from 0.0001 to 1000000";
const BURST_RANGE: &str = "rate_limit.burst must be a whole number from 1 to 1000000";

/// Slowest rate a key may be given, per second (about one request in
/// three hours); anything slower is as good as a disabled key, and the
/// time one request takes to come back must stay a sane duration.
pub const MIN_KEY_RATE: f64 = 0.0001;
/// Fastest rate a key may be given, per second (as `[[ratelimit.rule]]`).
pub const MAX_KEY_RATE: f64 = 1_000_000.0;
/// Largest burst a key may be given (as `[[ratelimit.rule]]`).
pub const MAX_KEY_BURST: u64 = 1_000_000;

/// A key's lifetime in seconds, 1 to [`MAX_EXPIRE_SECS`]; `None` stands for
/// a value that is no whole number (or does not fit).
pub fn check_expire(secs: Option<i64>) -> Result<i64, FieldProblem> {
    secs.filter(|secs| (1..=MAX_EXPIRE_SECS).contains(secs))
        .ok_or(problem(KeyField::Expire, EXPIRE_RANGE))
}

/// A key's name and detail: bounded, with no control or bidirectional
/// formatting characters (they forge rows and repaint terminals where
/// keys are listed).
pub fn check_labels(name: &str, detail: &str) -> Result<(), FieldProblem> {
    check_label(name, MAX_NAME_CHARS).map_err(|text| {
        problem(
            KeyField::Name,
            match text {
                TextProblem::TooLong => NAME_TOO_LONG,
                TextProblem::Control => "name must not contain control characters",
                TextProblem::Bidi => "name must not contain bidirectional formatting characters",
            },
        )
    })?;
    check_label(detail, MAX_DETAIL_CHARS).map_err(|text| {
        problem(
            KeyField::Detail,
            match text {
                TextProblem::TooLong => DETAIL_TOO_LONG,
                TextProblem::Control => "detail must not contain control characters",
                TextProblem::Bidi => "detail must not contain bidirectional formatting characters",
            },
        )
    })
}

/// A key's scope fields (whether the owner holds the roles is the
/// store's check, at commit).
pub fn check_scope(scope: &KeyScope) -> Result<(), FieldProblem> {
    crate::scope::check_fields(scope).map_err(|message| problem(KeyField::Scope, message))
}

/// A key's own budget: `rate` requests per second ([`MIN_KEY_RATE`] to
/// [`MAX_KEY_RATE`]) and a burst of 1 to [`MAX_KEY_BURST`]. `None` stands
/// for a value that is no number (a rate) or no whole number (a burst).
pub fn check_rate_limit(
    rate: Option<f64>,
    burst: Option<u64>,
) -> Result<KeyRateLimit, FieldProblem> {
    let rate = rate
        .filter(|rate| rate.is_finite() && (MIN_KEY_RATE..=MAX_KEY_RATE).contains(rate))
        .ok_or(problem(KeyField::RateLimit, RATE_RANGE))?;
    let burst = burst
        .filter(|burst| (1..=MAX_KEY_BURST).contains(burst))
        .and_then(|burst| u32::try_from(burst).ok())
        .ok_or(problem(KeyField::RateLimit, BURST_RANGE))?;
    Ok(KeyRateLimit { rate, burst })
}

/// A reroll's grace in seconds, 0 to [`MAX_REROLL_GRACE_SECS`]; `None`
/// stands for a value that is no whole number.
pub fn check_grace(secs: Option<i64>) -> Result<i64, FieldProblem> {
    secs.filter(|secs| (0..=MAX_REROLL_GRACE_SECS).contains(secs))
        .ok_or(problem(KeyField::Grace, GRACE_RANGE))
}

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
    checksum_digits(body) == sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_state_the_limits_they_check() {
        assert!(NAME_TOO_LONG.contains(&MAX_NAME_CHARS.to_string()));
        assert!(DETAIL_TOO_LONG.contains(&MAX_DETAIL_CHARS.to_string()));
        assert!(GRACE_RANGE.contains(&MAX_REROLL_GRACE_SECS.to_string()));
        assert!(BURST_RANGE.contains(&MAX_KEY_BURST.to_string()));
        assert!(RATE_RANGE.contains(&format!("{MIN_KEY_RATE} to {MAX_KEY_RATE}")));
        assert_eq!(MAX_EXPIRE_SECS / 86_400, 3660, "ten years");
    }

    #[test]
    fn rate_limits_are_positive_finite_and_bounded() {
        let ok = check_rate_limit(Some(2.5), Some(10)).unwrap();
        assert_eq!((ok.rate, ok.burst), (2.5, 10));
        assert!(check_rate_limit(Some(MIN_KEY_RATE), Some(1)).is_ok());
        assert!(check_rate_limit(Some(MAX_KEY_RATE), Some(MAX_KEY_BURST)).is_ok());
        for rate in [
            None,
            Some(0.0),
            Some(-1.0),
            Some(-0.0),
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(1e-300),
            Some(MAX_KEY_RATE * 2.0),
        ] {
            let refused = check_rate_limit(rate, Some(1)).unwrap_err();
            assert_eq!(refused.field, KeyField::RateLimit);
            assert!(refused.message.starts_with("rate_limit.rate"), "{rate:?}");
        }
        for burst in [None, Some(0), Some(MAX_KEY_BURST + 1), Some(u64::MAX)] {
            let refused = check_rate_limit(Some(1.0), burst).unwrap_err();
            assert!(refused.message.starts_with("rate_limit.burst"), "{burst:?}");
        }
    }

    #[test]
    fn expiry_grace_and_labels_are_checked_once_for_api_and_cli() {
        assert_eq!(check_expire(Some(1)), Ok(1));
        assert!(check_expire(Some(0)).is_err());
        assert!(check_expire(Some(MAX_EXPIRE_SECS + 1)).is_err());
        assert!(check_expire(None).is_err());
        assert_eq!(check_grace(Some(0)), Ok(0));
        assert_eq!(check_grace(Some(604_800)), Ok(604_800));
        assert!(check_grace(Some(-1)).is_err());
        assert!(check_grace(Some(604_801)).is_err());
        assert_eq!(
            check_labels(&"n".repeat(257), "").unwrap_err().field,
            KeyField::Name
        );
        assert_eq!(
            check_labels("ok", "\u{202e}").unwrap_err().field,
            KeyField::Detail
        );
        assert!(check_labels(&"n".repeat(256), &"d".repeat(4096)).is_ok());
    }

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
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
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
