//! The request id (`X-Request-Id`): the client's when it is sane, else one
//! the gateway mints, unique per process without a system call per request.

use http::HeaderMap;
use http::header::HeaderValue;

use crate::proxy::headers::X_REQUEST_ID;

/// The request's id: the client's `X-Request-Id` when it is sane, else a
/// new one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&X_REQUEST_ID)
        .filter(|value| sane_request_id(value))
        .cloned()
        .unwrap_or_else(new_request_id)
}

/// Longest client-sent request id kept.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client-sent `X-Request-Id` is kept: 1 to 128 characters of
/// `A-Z a-z 0-9 - _ . : /`.
pub(crate) fn sane_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=MAX_REQUEST_ID_LEN).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
}

/// A request id: a random per-process prefix and a counter, unique without
/// a system call per request (a UUIDv4 each time cost one `getrandom`).
pub(crate) fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut hex = [0u8; 16];
        // Cannot fail: the output is exactly twice the input.
        let _ = hex::encode_to_slice(crate::auth::random_bytes::<8>(), &mut hex);
        hex
    });
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    request_id_from(prefix, count)
}

/// `<prefix>-<count as 16 hex digits>`, without going through `format!`.
fn request_id_from(prefix: &[u8; 16], count: u64) -> HeaderValue {
    let mut id = [0u8; 33];
    id[..16].copy_from_slice(prefix);
    id[16] = b'-';
    let _ = hex::encode_to_slice(count.to_be_bytes(), &mut id[17..]);
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_prefix_dash_counter() {
        let id = request_id_from(b"0123456789abcdef", 0x2a);
        assert_eq!(id, "0123456789abcdef-000000000000002a");
        assert!(sane_request_id(&id));
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn request_ids() {
        assert!(sane_request_id(&HeaderValue::from_static(
            "abc-123_x.y:z/1"
        )));
        assert!(!sane_request_id(&HeaderValue::from_static("")));
        assert!(!sane_request_id(&HeaderValue::from_static("has space")));
        assert!(!sane_request_id(
            &HeaderValue::from_str(&"a".repeat(129)).unwrap()
        ));
    }
}
