//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the
//! `traceparent` a client sends is continued only when it is well formed;
//! `tracestate` comes along only with such a `traceparent`, and only when
//! it is a well-formed list within [`MAX_TRACESTATE_BYTES`].

use std::cell::Cell;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` passed along (the length every vendor must
/// propagate, W3C Trace Context section 3.3.1.5); a longer one is dropped.
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// Most list members of a `tracestate` (section 3.3.1.1).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The sampled bit of `trace-flags`.
const SAMPLED: u8 = 0x01;

/// A valid `traceparent`: whose trace and which span the client's caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, not all zero.
    pub span_id: [u8; 8],
    /// The caller sampled its trace.
    pub sampled: bool,
}

impl TraceParent {
    /// The request's `traceparent` if it has exactly one and it is well
    /// formed; anything else is no parent (a new trace starts).
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceParent> {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        TraceParent::parse(value.as_bytes())
    }

    /// Parses `version-traceid-parentid-flags` (lowercase hex). Version
    /// `00` is exactly 55 bytes; a later version may add fields after a
    /// `-`, and is read as `00`; version `ff` is invalid.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < 55 {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        if version == 0xff || (version == 0 && value.len() != 55) {
            return None;
        }
        if value.len() > 55 && value[55] != b'-' {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, byte) in span_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            sampled: flags & SAMPLED != 0,
        })
    }

    /// `00-<trace id>-<span id>-<flags>`.
    pub fn header_value(&self) -> HeaderValue {
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        hex_into(&self.trace_id, &mut text[3..35]);
        text[35] = b'-';
        hex_into(&self.span_id, &mut text[36..52]);
        text[52] = b'-';
        hex_into(&[u8::from(self.sampled)], &mut text[53..55]);
        // Hex digits and dashes only: always a valid header value.
        HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The request's `tracestate` (its field lines joined with `,`) when it is
/// a well-formed list of at most [`MAX_TRACESTATE_BYTES`]; else `None`,
/// and nothing is passed along.
pub fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(&TRACESTATE).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return valid_tracestate(first.as_bytes()).then(|| first.clone());
    };
    let mut joined = Vec::with_capacity(MAX_TRACESTATE_BYTES);
    for value in [first, second].into_iter().chain(values) {
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(value.as_bytes());
        if joined.len() > MAX_TRACESTATE_BYTES {
            return None;
        }
    }
    if !valid_tracestate(&joined) {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// `list-member *( OWS "," OWS list-member )`, empty members allowed,
/// each `key=value` with the spec's characters, within the bounds.
fn valid_tracestate(value: &[u8]) -> bool {
    if value.len() > MAX_TRACESTATE_BYTES {
        return false;
    }
    let mut members = 0;
    for member in value.split(|&b| b == b',') {
        let member = member.trim_ascii();
        if member.is_empty() {
            continue;
        }
        members += 1;
        if members > MAX_TRACESTATE_MEMBERS {
            return false;
        }
        let Some(eq) = member.iter().position(|&b| b == b'=') else {
            return false;
        };
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        if !valid_key(key) || !valid_value(value) {
            return false;
        }
    }
    true
}

/// `simple-key` or `tenant-id@system-id`: lowercase letters, digits and
/// `_ - * /`, starting with a letter or digit; at most 256 bytes.
fn valid_key(key: &[u8]) -> bool {
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(b);
    let (tenant, system) = match key.iter().position(|&b| b == b'@') {
        Some(at) => (&key[..at], Some(&key[at + 1..])),
        None => (key, None),
    };
    let part_ok = |part: &[u8], max: usize| {
        !part.is_empty()
            && part.len() <= max
            && (part[0].is_ascii_lowercase() || part[0].is_ascii_digit())
            && part.iter().all(allowed)
    };
    match system {
        None => part_ok(tenant, 256),
        Some(system) => part_ok(tenant, 241) && part_ok(system, 14),
    }
}

/// Printable ASCII but `,` and `=`, not ending in a space; 1 to 256 bytes.
fn valid_value(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value.last() != Some(&b' ')
        && value
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

thread_local! {
    /// splitmix64 state, seeded from the operating system once per thread.
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Ids need to be unique, not secret: the time will do.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return nanos as u64;
    }
    u64::from_ne_bytes(bytes)
}

/// A random non-zero 64-bit number: trace and span ids need to be unique,
/// not unguessable, so no system call per id.
fn next_u64() -> u64 {
    RNG.with(|state| {
        loop {
            let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(next);
            let mut z = next;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    })
}

/// A new span id.
pub fn new_span_id() -> [u8; 8] {
    next_u64().to_be_bytes()
}

/// A new trace id.
pub fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&next_u64().to_be_bytes());
    id[8..].copy_from_slice(&next_u64().to_be_bytes());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn well_formed_traceparents_are_read_and_written_back() {
        let parent = TraceParent::parse(GOOD.as_bytes()).unwrap();
        assert!(parent.sampled);
        assert_eq!(parent.header_value(), GOOD);
        let unsampled = TraceParent::parse(
            &GOOD.as_bytes()[..53]
                .iter()
                .chain(b"00")
                .copied()
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(!unsampled.sampled);
        // A later version with more fields is read as version 00.
        let future = format!("cc{}-what-ever", &GOOD[2..]);
        assert_eq!(
            TraceParent::parse(future.as_bytes()).unwrap().trace_id,
            parent.trace_id
        );
    }

    #[test]
    fn malformed_traceparents_are_no_parent() {
        for bad in [
            "",
            "00",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad:?}");
        }
        let mut two = HeaderMap::new();
        two.append(&TRACEPARENT, HeaderValue::from_static(GOOD));
        two.append(&TRACEPARENT, HeaderValue::from_static(GOOD));
        assert_eq!(TraceParent::from_headers(&two), None);
    }

    #[test]
    fn tracestate_is_passed_only_when_well_formed_and_bounded() {
        let of = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(&TRACESTATE, HeaderValue::from_str(value).unwrap());
            }
            tracestate(&headers).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            of(&["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]).as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        assert_eq!(
            of(&["a=1", "tenant@sys=2"]).as_deref(),
            Some("a=1,tenant@sys=2")
        );
        assert_eq!(of(&[]), None);
        for bad in [
            "novalue", "UPPER=1", "a=1,b", "a=x,y=", "a=b=c", "@x=1", "a=\tb",
        ] {
            assert_eq!(of(&[bad]), None, "{bad:?}");
        }
        let long = (0..60)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(of(&[&long]), None, "too many members");
        let big = format!("k={}", "v".repeat(256));
        assert_eq!(of(&[&big, &big]), None, "over 512 bytes joined");
    }

    #[test]
    fn ids_are_non_zero_and_differ() {
        let (a, b) = (new_trace_id(), new_trace_id());
        assert_ne!(a, b);
        assert_ne!(a, [0; 16]);
        assert_ne!(new_span_id(), [0; 8]);
    }
}
