//! Short-lived values the gateway hands a browser and must get back
//! unchanged (the OIDC sign-in's state, nonce and PKCE verifier): JSON,
//! base64url, and an HMAC-SHA256 tag under a key derived with HKDF from
//! secrets every replica shares, so the callback may reach any replica.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{hkdf, hmac};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Longest sealed value accepted (a cookie is at most 4 KiB anyway).
const MAX_SEALED_BYTES: usize = 4096;
/// HKDF salt: fixes what the derived keys are for.
const SALT: &[u8] = b"authgate sealed browser state v1";

/// Secret bytes keys are derived from (the JWT signing secret or private
/// key). Never printed.
#[derive(Clone)]
pub struct RootSecret(Vec<u8>);

impl RootSecret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        RootSecret(bytes)
    }
}

impl std::fmt::Debug for RootSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootSecret(..)")
    }
}

/// Why a sealed value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealRejection {
    /// Not `payload.tag`, not base64url, too long, or not the expected JSON.
    #[error("malformed")]
    Malformed,
    /// The tag does not match: changed, or sealed under another key.
    #[error("bad signature")]
    BadSignature,
    /// Past its expiry.
    #[error("expired")]
    Expired,
}

/// Seals and opens values under one derived key.
pub struct Sealer {
    key: hmac::Key,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

#[derive(Serialize, serde::Deserialize)]
struct Envelope<T> {
    exp: i64,
    v: T,
}

impl Sealer {
    /// The key for `purpose` (e.g. `oidc:corp`), from the root secret and
    /// `extra` secret bytes (e.g. the provider's client secret).
    pub fn derive(root: &RootSecret, extra: &[u8], purpose: &str) -> Self {
        let mut ikm = Vec::with_capacity(root.0.len() + extra.len() + 8);
        ikm.extend_from_slice(&(root.0.len() as u64).to_be_bytes());
        ikm.extend_from_slice(&root.0);
        ikm.extend_from_slice(extra);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(&ikm);
        let info = [purpose.as_bytes()];
        let key = match prk.expand(&info, hmac::HMAC_SHA256) {
            Ok(okm) => hmac::Key::from(okm),
            // Only an output longer than 255 hash lengths fails; one key
            // length never does. Fall back to the PRK-keyed HMAC anyway.
            Err(_) => hmac::Key::new(hmac::HMAC_SHA256, &ikm),
        };
        Sealer { key }
    }

    /// `value`, readable by [`Sealer::open`] until `expires_at` (unix seconds).
    pub fn seal<T: Serialize>(&self, value: &T, expires_at: i64) -> String {
        let json = serde_json::to_vec(&Envelope {
            exp: expires_at,
            v: value,
        })
        .unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The value sealed in `sealed`, if the tag is right and it has not expired.
    pub fn open<T: DeserializeOwned>(&self, sealed: &str, now: i64) -> Result<T, SealRejection> {
        if sealed.len() > MAX_SEALED_BYTES {
            return Err(SealRejection::Malformed);
        }
        let (payload, tag) = sealed.split_once('.').ok_or(SealRejection::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| SealRejection::Malformed)?;
        // ring compares in constant time.
        hmac::verify(&self.key, payload.as_bytes(), &tag)
            .map_err(|_| SealRejection::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| SealRejection::Malformed)?;
        let envelope: Envelope<T> =
            serde_json::from_slice(&json).map_err(|_| SealRejection::Malformed)?;
        if envelope.exp <= now {
            return Err(SealRejection::Expired);
        }
        Ok(envelope.v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(purpose: &str) -> Sealer {
        Sealer::derive(
            &RootSecret::new(b"root-secret-root-secret-root-sec".to_vec()),
            b"client-secret",
            purpose,
        )
    }

    #[test]
    fn round_trip_until_expiry() {
        let s = sealer("oidc:corp");
        let sealed = s.seal(&("state", 7), 100);
        assert_eq!(
            s.open::<(String, i32)>(&sealed, 99),
            Ok(("state".into(), 7))
        );
        assert_eq!(
            s.open::<(String, i32)>(&sealed, 100),
            Err(SealRejection::Expired)
        );
    }

    #[test]
    fn changed_or_foreign_values_are_refused() {
        let s = sealer("oidc:corp");
        let sealed = s.seal(&"abc", 100);
        let (payload, tag) = sealed.split_once('.').unwrap();
        let other_payload = URL_SAFE_NO_PAD.encode(br#"{"exp":100,"v":"abd"}"#);
        assert_eq!(
            s.open::<String>(&format!("{other_payload}.{tag}"), 0),
            Err(SealRejection::BadSignature)
        );
        let mut flipped = tag.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            s.open::<String>(&format!("{payload}.{flipped}"), 0),
            Err(SealRejection::BadSignature)
        );
        assert_eq!(
            sealer("oidc:other").open::<String>(&sealed, 0),
            Err(SealRejection::BadSignature),
            "another provider's key"
        );
        let other_client = Sealer::derive(
            &RootSecret::new(b"root-secret-root-secret-root-sec".to_vec()),
            b"another-secret",
            "oidc:corp",
        );
        assert_eq!(
            other_client.open::<String>(&sealed, 0),
            Err(SealRejection::BadSignature)
        );
        for bad in ["", "no-dot", "a.b.c", "!!.!!", &"a".repeat(5000)] {
            assert!(s.open::<String>(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_root_secret_is_never_printed() {
        let root = RootSecret::new(b"very-secret".to_vec());
        assert!(!format!("{root:?}").contains("very"));
        assert!(!format!("{:?}", sealer("x")).contains("secret"));
    }
}
