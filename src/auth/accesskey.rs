//! Access key format: `ag_` + 43 base64url characters (256 random bits).
//! The store keeps only the SHA-256 of a key and its first characters.

use sha2::{Digest, Sha256};

/// Every key starts with this.
pub const KEY_PREFIX: &str = "ag_";
/// Characters of a key kept to tell keys apart (`ag_` + 8).
pub const TOKEN_PREFIX_CHARS: usize = 11;
/// Random bytes in a key.
const KEY_RANDOM_BYTES: usize = 32;
/// Keys longer than this are refused before hashing.
pub const MAX_KEY_BYTES: usize = 256;

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
