//! The one-time-key digests of the seed service:
//! `HA1 = md5hex(user:realm:password)` and `answer = md5hex(key|HA1)`.
//!
//! MD5 is what existing clients of this formula compute; it is kept for
//! compatibility, and HA1 is treated like a password hash.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// Lower-case hex MD5 of `data`.
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// `md5hex(user + ":" + realm + ":" + password)`.
pub fn ha1(user: &str, realm: &str, password: &str) -> String {
    md5_hex(format!("{user}:{realm}:{password}").as_bytes())
}

/// `md5hex(key + "|" + ha1)`: what a backend holding HA1 answers.
pub fn onetime_answer(key: &str, ha1: &str) -> String {
    md5_hex(format!("{key}|{ha1}").as_bytes())
}

/// Constant-time comparison of two byte strings.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // md5("") and md5("abc") from RFC 1321.
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            ha1("myuser", "voximplant.com", "mypass"),
            md5_hex(b"myuser:voximplant.com:mypass")
        );
        let ha1 = ha1("myuser", "voximplant.com", "mypass");
        let expected = md5_hex(format!("K1|{ha1}").as_bytes());
        assert_eq!(onetime_answer("K1", &ha1), expected);
        assert_eq!(expected.len(), 32);
    }

    #[test]
    fn comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
