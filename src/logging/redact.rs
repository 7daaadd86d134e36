//! Secrets out of log lines: a request target (or any text bound for a
//! log) with every credential-shaped value replaced by `REDACTED`. The
//! access log, the request span and the error log all go through here.

use std::borrow::Cow;

use crate::auth::extract::{ACCESSKEY_PARAM, TOKEN_PARAM};

/// The request target (path and query) for logs, with everything that
/// could be a secret replaced by `REDACTED`; see [`redact_secrets`].
pub fn redact_target(uri: &http::Uri) -> Cow<'_, str> {
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    redact_secrets(target)
}

/// Parameter names whose values are redacted wherever they appear (query,
/// or `;name=value` path parameters), compared after percent- and
/// `+`-decoding, trimmed and in any case: ours and the common names other
/// software uses for credentials (`code`: an OAuth authorization code, as
/// on `/auth/oidc/{name}/callback`).
const SECRET_PARAMS: [&str; 15] = [
    TOKEN_PARAM,
    ACCESSKEY_PARAM,
    "access_key",
    "access_token",
    "id_token",
    "refresh_token",
    "jwt",
    "api_key",
    "apikey",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "code",
];

/// Longest decoded parameter name compared against [`SECRET_PARAMS`].
const MAX_SECRET_PARAM_BYTES: usize = 32;

/// Base64url characters after `ag_` that make a run access-key shaped.
const ACCESSKEY_SHAPE_MIN: usize = 32;

/// `text` (a request target, or any string bound for a log) with secrets
/// replaced by `REDACTED`, wherever they are:
///
/// - the value of a credential parameter ([`SECRET_PARAMS`]) in the query
///   or in a `;name=value` path parameter, whatever the name's encoding;
/// - any JWT-shaped run: `eyJ` starting three base64url parts joined by
///   dots (the last may be empty), as a path segment, under any parameter
///   name, or inside a value;
/// - any access-key-shaped run: `ag_` and 32 or more base64url characters,
///   not preceded by a base64url character.
///
/// Percent-encoded characters count as what they decode to, so `%65yJ...`
/// is found too. One pass over the bytes; it borrows `text` and allocates
/// only when something is redacted.
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut in_query = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let found = match b {
            b'?' | b'&' | b';' => {
                in_query |= b == b'?';
                secret_param_value(bytes, i + 1, in_query)
            }
            b'e' | b'%' => jwt_shape(bytes, i).map(|end| (i, end)),
            b'a' if i == 0 || !is_base64url(bytes[i - 1]) => {
                accesskey_shape(bytes, i).map(|end| (i, end))
            }
            _ => None,
        };
        match found {
            Some((start, end)) => {
                let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
                buf.push_str(&text[copied..start]);
                buf.push_str("REDACTED");
                copied = end;
                i = end.max(i + 1);
            }
            None => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut buf) => {
            buf.push_str(&text[copied..]);
            Cow::Owned(buf)
        }
    }
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The byte at `i`, percent-decoded, and how many bytes it took.
fn decoded_at(bytes: &[u8], i: usize) -> Option<(u8, usize)> {
    let b = *bytes.get(i)?;
    if b == b'%' {
        let hex = |c: u8| (c as char).to_digit(16);
        if let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).and_then(|c| hex(*c)),
            bytes.get(i + 2).and_then(|c| hex(*c)),
        ) {
            return Some(((hi * 16 + lo) as u8, 3));
        }
    }
    Some((b, 1))
}

/// The end of the run of (decoded) base64url characters from `i`.
fn base64url_run(bytes: &[u8], mut i: usize) -> (usize, usize) {
    let mut count = 0;
    while let Some((c, n)) = decoded_at(bytes, i) {
        if !is_base64url(c) {
            break;
        }
        i += n;
        count += 1;
    }
    (i, count)
}

/// The end of a JWT-shaped run starting at `i`.
fn jwt_shape(bytes: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for want in *b"eyJ" {
        let (c, n) = decoded_at(bytes, j)?;
        if c != want {
            return None;
        }
        j += n;
    }
    let (mut j, _) = base64url_run(bytes, j);
    for part in 0..2 {
        let (c, n) = decoded_at(bytes, j)?;
        if c != b'.' {
            return None;
        }
        let (end, count) = base64url_run(bytes, j + n);
        // The payload must not be empty; the signature may be (alg none).
        if part == 0 && count == 0 {
            return None;
        }
        j = end;
    }
    // Further dot-joined parts belong to the run too (a JWE has five, and
    // a lookalike before the real token must not leave its signature out).
    while let Some((b'.', n)) = decoded_at(bytes, j) {
        j = base64url_run(bytes, j + n).0;
    }
    Some(j)
}

/// The end of an access-key-shaped run starting at `i`.
fn accesskey_shape(bytes: &[u8], i: usize) -> Option<usize> {
    if !bytes[i..].starts_with(b"ag_") {
        return None;
    }
    let (end, count) = base64url_run(bytes, i + 3);
    (count >= ACCESSKEY_SHAPE_MIN).then_some(end)
}

/// When the parameter starting at `i` has a credential name, the byte range
/// of its value. A value ends at `&` or `;` in the query, and also at `/`
/// or `?` in a path parameter.
fn secret_param_value(bytes: &[u8], i: usize, in_query: bool) -> Option<(usize, usize)> {
    let mut name = [0u8; MAX_SECRET_PARAM_BYTES];
    let mut len = 0;
    let mut j = i;
    loop {
        let (c, n) = decoded_at(bytes, j)?;
        if n == 1 && matches!(c, b'=' | b'&' | b';' | b'/' | b'?' | b'#') {
            break;
        }
        let c = if n == 1 && c == b'+' { b' ' } else { c };
        *name.get_mut(len)? = c.to_ascii_lowercase();
        len += 1;
        j += n;
    }
    if bytes[j] != b'=' {
        return None;
    }
    let name = name[..len].trim_ascii();
    if !SECRET_PARAMS.iter().any(|known| known.as_bytes() == name) {
        return None;
    }
    let start = j + 1;
    let end = bytes[start..]
        .iter()
        .position(|&b| b == b'&' || b == b';' || (!in_query && (b == b'/' || b == b'?')))
        .map_or(bytes.len(), |k| start + k);
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_targets_are_redacted() {
        let cases = [
            ("/a", "/a"),
            ("/a?x=1", "/a?x=1"),
            (
                "/a?x=1&token=secret.jwt.value&y=2",
                "/a?x=1&token=REDACTED&y=2",
            ),
            ("/a?accesskey=ag_secret", "/a?accesskey=REDACTED"),
            ("/a?to%6Ben=secret", "/a?to%6Ben=REDACTED"),
        ];
        for (target, expected) in cases {
            let uri: http::Uri = target.parse().unwrap();
            assert_eq!(redact_target(&uri), expected);
        }
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
    const KEY: &str = "ag_AbCdEfGhIjKlMnOpQrStUvWxYz012345-_";

    #[test]
    fn token_shapes_are_redacted_wherever_they_are() {
        let cases = [
            (format!("/x;token={JWT}"), "/x;token=REDACTED".to_owned()),
            (
                format!("/x;token={JWT}/more"),
                "/x;token=REDACTED/more".to_owned(),
            ),
            (format!("/a?token+={JWT}"), "/a?token+=REDACTED".to_owned()),
            (format!("/a?x={JWT}&y=2"), "/a?x=REDACTED&y=2".to_owned()),
            (format!("/a/{JWT}/b"), "/a/REDACTED/b".to_owned()),
            (format!("/a/{KEY}"), "/a/REDACTED".to_owned()),
            (format!("/a?k={KEY}"), "/a?k=REDACTED".to_owned()),
            (
                format!("/a?note=Bearer%20{JWT}"),
                "/a?note=Bearer%20REDACTED".to_owned(),
            ),
            (format!("/a?TOKEN={KEY}"), "/a?TOKEN=REDACTED".to_owned()),
            (
                "/a?access_token=short".to_owned(),
                "/a?access_token=REDACTED".to_owned(),
            ),
            (
                "/a;jsessionid=1;password=hunter2/b".to_owned(),
                "/a;jsessionid=1;password=REDACTED/b".to_owned(),
            ),
            (
                "/a?%20token%20=x&b=1".to_owned(),
                "/a?%20token%20=REDACTED&b=1".to_owned(),
            ),
            // Percent-encoded token characters count as themselves.
            (
                "/a/%65yJhbGc%2EeyJzdWIi.sig".to_owned(),
                "/a/REDACTED".to_owned(),
            ),
            // An unsigned token (empty signature).
            (
                "/a/eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_owned(),
                "/a/REDACTED".to_owned(),
            ),
            (format!("/{JWT}?{KEY}"), "/REDACTED?REDACTED".to_owned()),
            // A lookalike just before the token takes the whole run with it.
            (format!("/eyJab.{JWT}"), "/REDACTED".to_owned()),
        ];
        for (target, expected) in cases {
            let uri: http::Uri = target.parse().unwrap();
            assert_eq!(redact_target(&uri), expected, "{target}");
            assert!(!redact_target(&uri).contains("c2lnbmF0dXJl"), "{target}");
        }
    }

    #[test]
    fn ordinary_targets_are_borrowed_untouched() {
        for target in [
            "/",
            "/api/v1/users/eyJ",
            "/eyJhbGci.only-two-parts",
            "/eyJ..x",
            "/flag_AbCdEfGhIjKlMnOpQrStUvWxYz012345",
            "/ag_short",
            "/a?tokens=x&my_token=y&eyJ=1",
            "/a?x=1&y=%2",
            "/a;v=1/b?q=eyJx.eyJ",
            "/%",
        ] {
            let uri: http::Uri = target.parse().unwrap();
            let redacted = redact_target(&uri);
            assert!(matches!(redacted, Cow::Borrowed(_)), "{target}: {redacted}");
            assert_eq!(redacted, target);
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn token_shapes_never_reach_a_log(
            before in "[ -~]{0,24}",
            after in "[ -~]{0,24}",
            secret in "[A-Za-z0-9_-]{8,40}",
            key in any::<bool>(),
        ) {
            let token = if key {
                format!("ag_{secret}{}", "k".repeat(32))
            } else {
                format!("eyJ{secret}.eyJ{secret}.{secret}SIG")
            };
            let text = format!("{before}{token}{after}");
            let redacted = redact_secrets(&text);
            let tail = if key { &token[3..] } else { &token[token.len() - secret.len() - 3..] };
            // An access key needs a boundary on its left.
            if !key || !before.bytes().last().is_some_and(is_base64url) {
                prop_assert!(!redacted.contains(tail), "{} -> {}", text, redacted);
            }
        }
        }
    }
}
