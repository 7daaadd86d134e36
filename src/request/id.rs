//! Request ids the gateway mints when the client sent none it keeps
//! (`X-Request-Id`): unique per process without a system call per request.

use http::header::HeaderValue;

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
    use crate::proxy::headers;

    #[test]
    fn request_ids_are_prefix_dash_counter() {
        let id = request_id_from(b"0123456789abcdef", 0x2a);
        assert_eq!(id, "0123456789abcdef-000000000000002a");
        assert!(headers::sane_request_id(&id));
        assert_ne!(new_request_id(), new_request_id());
    }
}
