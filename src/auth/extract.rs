//! Which credential a request carries, and how to remove it before
//! forwarding. Pure functions over the request head.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Query parameter and cookie carrying a JWT.
pub const TOKEN_PARAM: &str = "token";
/// Query parameter and cookie carrying an access key.
pub const ACCESSKEY_PARAM: &str = "accesskey";
/// What a Bearer value that is an access key starts with (anything else
/// after `Bearer` is a JWT). The same as [`crate::auth::accesskey::KEY_PREFIX`].
pub const BEARER_KEY_PREFIX: &str = "ag_";
/// The default `[accesskeys] header`.
pub const DEFAULT_KEY_HEADER: &str = "x-api-key";

/// Where a request's credential may be, as configured: the header that
/// carries access keys (`[accesskeys] header`, `None` when turned off) and
/// whether the query may carry one (`[server] credentials_in_query`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The access-key header (lower case, as `HeaderMap` keeps names).
    pub key_header: Option<HeaderName>,
    /// Whether `?token=` and `?accesskey=` are accepted.
    pub query: bool,
}

impl Default for Sources {
    /// `X-API-Key` and credentials in the query, as the seed service.
    fn default() -> Self {
        Sources {
            key_header: Some(HeaderName::from_static(DEFAULT_KEY_HEADER)),
            query: true,
        }
    }
}

/// What kind of secret a credential is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A JWT (Bearer header, `?token=`, cookie `token`).
    Jwt,
    /// An access key (`?accesskey=`, cookie `accesskey`, Bearer `ag_...`,
    /// the `[accesskeys] header`).
    AccessKey,
}

/// The one credential a request carries.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential<'a> {
    /// JWT or access key.
    pub kind: CredentialKind,
    /// The secret itself (never log it).
    pub secret: Cow<'a, str>,
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why no single credential could be taken from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractError {
    /// Two different credentials.
    Conflicting,
    /// A credential is present but unusable (empty, not UTF-8, or an
    /// `Authorization` scheme other than Bearer with nothing else given).
    Malformed,
    /// A credential in the query where `[server] credentials_in_query` is
    /// off.
    InQuery,
}

/// Finds the request's credential. `Ok(None)` when there is none.
///
/// The same secret sent in several places is one credential; different
/// secrets are a conflict. An `Authorization` header with another scheme
/// (e.g. Basic) is not ours: it is ignored when another credential is
/// present, and makes the request malformed when it is the only one.
/// `Bearer ag_...` and the `sources.key_header` carry access keys; with
/// `sources.query` off, any credential parameter in the query is refused
/// (whatever else the request carries).
pub fn extract<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    sources: &Sources,
) -> Result<Option<Credential<'a>>, ExtractError> {
    if !sources.query && query.is_some_and(|query| query.split('&').any(names_credential)) {
        return Err(ExtractError::InQuery);
    }
    let mut found: Option<Credential<'a>> = None;
    let mut foreign_authorization = false;
    let mut add = |candidate: Credential<'a>| -> Result<(), ExtractError> {
        if candidate.secret.is_empty() {
            return Err(ExtractError::Malformed);
        }
        match &found {
            Some(existing) if *existing != candidate => Err(ExtractError::Conflicting),
            Some(_) => Ok(()),
            None => {
                found = Some(candidate);
                Ok(())
            }
        }
    };

    for value in headers.get_all(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| ExtractError::Malformed)?;
        match bearer_token(value) {
            Some(token) => add(Credential {
                kind: bearer_kind(token),
                secret: Cow::Borrowed(token),
            })?,
            None => foreign_authorization = true,
        }
    }

    if let Some(name) = &sources.key_header {
        for value in headers.get_all(name) {
            let value = value.to_str().map_err(|_| ExtractError::Malformed)?;
            add(Credential {
                kind: CredentialKind::AccessKey,
                secret: Cow::Borrowed(value.trim()),
            })?;
        }
    }

    if let Some(query) = query {
        for piece in query.split('&').filter(|piece| names_credential(piece)) {
            let Some((name, value)) = query_pair(piece) else {
                continue;
            };
            if let Some(kind) = kind_of_name(&name) {
                add(Credential {
                    kind,
                    secret: value,
                })?;
            }
        }
    }

    for (name, value) in request_cookies(headers) {
        if let Some(kind) = kind_of_cookie(name) {
            // Ours, whatever else the header holds; a secret that is not
            // UTF-8 is no credential of ours, but still one the client sent.
            let value = std::str::from_utf8(value).map_err(|_| ExtractError::Malformed)?;
            add(Credential {
                kind,
                secret: Cow::Borrowed(value),
            })?;
        }
    }

    match found {
        None if foreign_authorization => Err(ExtractError::Malformed),
        found => Ok(found),
    }
}

/// Whether the request carries anything that could be a credential: an
/// `Authorization` header of any scheme, a `token` or `accesskey` cookie
/// (read as bytes), the access-key header under any spelling an upstream
/// could fold into it, or a credential query parameter. Its answer then
/// depends on who asked (see [`crate::proxy::headers::mark_private`]).
pub fn carries_credential(headers: &HeaderMap, query: Option<&str>, sources: &Sources) -> bool {
    headers.contains_key(header::AUTHORIZATION)
        || request_cookies(headers).any(|(name, _)| kind_of_cookie(name).is_some())
        || sources
            .key_header
            .as_ref()
            .is_some_and(|ours| headers.keys().any(|name| folds_to(name, ours)))
        || query.is_some_and(|query| query.split('&').any(names_credential))
}

/// Whether `query` holds a `token` or `accesskey` parameter (under any
/// encoding of its name).
pub fn query_carries_credential(query: &str) -> bool {
    query.split('&').any(names_credential)
}

/// What a Bearer value is: an access key when it starts with `ag_`, a JWT
/// otherwise (a JWT's header is base64url JSON and starts with `eyJ`).
pub fn bearer_kind(token: &str) -> CredentialKind {
    if token.starts_with(BEARER_KEY_PREFIX) {
        CredentialKind::AccessKey
    } else {
        CredentialKind::Jwt
    }
}

/// Whether header `name` is `ours` as an upstream could read it: the same
/// name with any `_` read as `-` (names are lower case in a `HeaderMap`).
/// Werkzeug, PHP and CGI fold `X_API_Key` into `X-API-Key`.
fn folds_to(name: &HeaderName, ours: &HeaderName) -> bool {
    let (name, ours) = (name.as_str().as_bytes(), ours.as_str().as_bytes());
    name.len() == ours.len()
        && name
            .iter()
            .zip(ours)
            .all(|(&have, &want)| have == want || (have == b'_' && want == b'-'))
}

/// Whether a `name=value` query piece names a credential, by its decoded
/// name; the value is not decoded, and a name without `%` or `+` is not
/// decoded either.
fn names_credential(piece: &str) -> bool {
    let name = piece.split_once('=').map_or(piece, |(name, _)| name);
    if !name.contains(['%', '+']) {
        return kind_of_name(name).is_some();
    }
    form_urlencoded::parse(name.as_bytes())
        .next()
        .is_some_and(|(name, _)| kind_of_name(&name).is_some())
}

/// A `name=value` query piece, decoded as `application/x-www-form-urlencoded`.
/// A piece without `%` or `+` decodes to itself: split without the
/// decoder (an access key in the query is such a piece).
fn query_pair(piece: &str) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
    if piece.is_empty() {
        return None;
    }
    if !piece.contains(['%', '+']) {
        let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
        return Some((Cow::Borrowed(name), Cow::Borrowed(value)));
    }
    form_urlencoded::parse(piece.as_bytes()).next()
}

/// [`kind_of_name`] for a cookie name read as bytes.
fn kind_of_cookie(name: &[u8]) -> Option<CredentialKind> {
    std::str::from_utf8(name).ok().and_then(kind_of_name)
}

fn kind_of_name(name: &str) -> Option<CredentialKind> {
    match name {
        TOKEN_PARAM => Some(CredentialKind::Jwt),
        ACCESSKEY_PARAM => Some(CredentialKind::AccessKey),
        _ => None,
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive), or `None` for
/// another scheme. `Some("")` for a Bearer header without a token.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// `(name, value)` of every cookie in every `Cookie` header, read as bytes
/// (RFC 6265 section 5.4 pairs split at `;`, names and values trimmed, one
/// pair of double quotes around a value removed). A byte that is not UTF-8
/// (obs-text) anywhere in the header must not hide the other cookies in it:
/// upstreams (Werkzeug, Express) read them all the same.
pub fn request_cookies(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let (name, value) = split_cookie_pair(pair)?;
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            Some((name, value))
        })
}

/// A `name=value` cookie pair's trimmed name and value; `None` without `=`.
fn split_cookie_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = pair.iter().position(|&b| b == b'=')?;
    Some((pair[..at].trim_ascii(), pair[at + 1..].trim_ascii()))
}

/// Removes every credential of ours from the headers: Bearer
/// `Authorization` headers, the `token`/`accesskey` cookies and the
/// access-key header under every spelling an upstream could fold into it
/// (`X_API_Key`), whether or not it was read. Other `Authorization`
/// schemes and other cookies are kept as they were.
pub fn strip_credential_headers(headers: &mut HeaderMap, sources: &Sources) {
    if let Some(ours) = &sources.key_header {
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| folds_to(name, ours))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    }
    if headers.contains_key(header::AUTHORIZATION) {
        let kept: Vec<HeaderValue> = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter(|value| {
                value
                    .to_str()
                    .map(|text| bearer_token(text).is_none())
                    .unwrap_or(false)
            })
            .cloned()
            .collect();
        headers.remove(header::AUTHORIZATION);
        for value in kept {
            headers.append(header::AUTHORIZATION, value);
        }
    }
    if headers.contains_key(header::COOKIE) {
        let kept: Vec<HeaderValue> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(strip_cookie_value)
            .collect();
        headers.remove(header::COOKIE);
        for value in kept {
            headers.append(header::COOKIE, value);
        }
    }
}

/// One `Cookie` header without the credential cookies; `None` when nothing
/// is left. Read as bytes like [`request_cookies`]: the other cookies are
/// kept byte for byte, obs-text included.
fn strip_cookie_value(value: &HeaderValue) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    let is_credential = |pair: &[u8]| {
        split_cookie_pair(pair).is_some_and(|(name, _)| kind_of_cookie(name).is_some())
    };
    if !bytes.split(|&b| b == b';').any(is_credential) {
        return Some(value.clone());
    }
    let kept: Vec<&[u8]> = bytes
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty() && !is_credential(pair))
        .collect();
    if kept.is_empty() {
        return None;
    }
    // Every byte kept came from a valid header value, and `; ` is valid.
    HeaderValue::from_bytes(&kept.join(&b"; "[..])).ok()
}

/// The query without `token` and `accesskey` parameters, every other byte in
/// its original order; `None` when nothing is left.
pub fn strip_credential_query(query: &str) -> Option<Cow<'_, str>> {
    if !query.split('&').any(names_credential) {
        return (!query.is_empty()).then_some(Cow::Borrowed(query));
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|piece| !names_credential(piece))
        .collect();
    if kept.iter().all(|piece| piece.is_empty()) {
        None
    } else {
        Some(Cow::Owned(kept.join("&")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode_as_the_form_decoder_does() {
        for piece in [
            "accesskey=ag_abc-DEF_123",
            "accesskey",
            "accesskey=",
            "=v",
            "token=a=b",
            "access%6Bey=x%20y",
            "accesskey=a+b",
            "to+ken=%E2%82%AC",
            "accesskey=%zz",
            "accesskey=ÉTÉ;x",
        ] {
            assert_eq!(
                query_pair(piece),
                form_urlencoded::parse(piece.as_bytes()).next(),
                "{piece}"
            );
        }
        assert_eq!(query_pair(""), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn jwt(secret: &str) -> Credential<'_> {
        Credential {
            kind: CredentialKind::Jwt,
            secret: Cow::Borrowed(secret),
        }
    }

    #[test]
    fn finds_each_source() {
        let h = headers(&[("authorization", "Bearer abc.def.ghi")]);
        assert_eq!(
            extract(&h, None, &Sources::default()),
            Ok(Some(jwt("abc.def.ghi")))
        );
        let h = headers(&[("authorization", "bearer   abc")]);
        assert_eq!(extract(&h, None, &Sources::default()), Ok(Some(jwt("abc"))));
        let empty = HeaderMap::new();
        assert_eq!(
            extract(&empty, Some("a=1&token=abc&b=2"), &Sources::default()),
            Ok(Some(jwt("abc")))
        );
        let found = extract(&empty, Some("accesskey=ag_x"), &Sources::default())
            .unwrap()
            .unwrap();
        assert_eq!(found.kind, CredentialKind::AccessKey);
        assert_eq!(found.secret, "ag_x");
        let h = headers(&[("cookie", "theme=dark; token=abc; lang=en")]);
        assert_eq!(extract(&h, None, &Sources::default()), Ok(Some(jwt("abc"))));
        let h = headers(&[("cookie", "accesskey=\"ag_q\"")]);
        assert_eq!(
            extract(&h, None, &Sources::default())
                .unwrap()
                .unwrap()
                .secret,
            "ag_q"
        );
    }

    #[test]
    fn nothing_is_none() {
        let h = headers(&[("cookie", "theme=dark"), ("x-other", "1")]);
        assert_eq!(
            extract(&h, Some("a=1&tokens=2&xtoken=3"), &Sources::default()),
            Ok(None)
        );
    }

    #[test]
    fn the_same_secret_twice_is_one_credential() {
        let h = headers(&[("authorization", "Bearer abc"), ("cookie", "token=abc")]);
        assert_eq!(
            extract(&h, Some("token=abc"), &Sources::default()),
            Ok(Some(jwt("abc")))
        );
    }

    #[test]
    fn different_secrets_conflict() {
        let h = headers(&[("authorization", "Bearer abc")]);
        assert_eq!(
            extract(&h, Some("token=xyz"), &Sources::default()),
            Err(ExtractError::Conflicting)
        );
        assert_eq!(
            extract(&h, Some("accesskey=abc"), &Sources::default()),
            Err(ExtractError::Conflicting)
        );
        let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(
            extract(&h, None, &Sources::default()),
            Err(ExtractError::Conflicting)
        );
        let h = headers(&[("cookie", "token=a; accesskey=b")]);
        assert_eq!(
            extract(&h, None, &Sources::default()),
            Err(ExtractError::Conflicting)
        );
    }

    #[test]
    fn malformed_credentials() {
        for value in ["Bearer", "Bearer    ", "Basic dXNlcjpwYXNz", "Token abc"] {
            let h = headers(&[("authorization", value)]);
            assert_eq!(
                extract(&h, None, &Sources::default()),
                Err(ExtractError::Malformed),
                "{value}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        );
        assert_eq!(
            extract(&h, None, &Sources::default()),
            Err(ExtractError::Malformed)
        );
        assert_eq!(
            extract(&HeaderMap::new(), Some("token="), &Sources::default()),
            Err(ExtractError::Malformed)
        );
    }

    fn key(secret: &str) -> Credential<'_> {
        Credential {
            kind: CredentialKind::AccessKey,
            secret: Cow::Borrowed(secret),
        }
    }

    #[test]
    fn keys_come_as_bearer_and_in_the_key_header() {
        let d = Sources::default();
        let h = headers(&[("authorization", "Bearer ag_abc")]);
        assert_eq!(extract(&h, None, &d), Ok(Some(key("ag_abc"))));
        // Anything else after Bearer is a JWT, `AG_` and `eyJ` included.
        let h = headers(&[("authorization", "Bearer AG_abc")]);
        assert_eq!(extract(&h, None, &d), Ok(Some(jwt("AG_abc"))));
        let h = headers(&[("X-API-Key", "ag_abc")]);
        assert_eq!(extract(&h, None, &d), Ok(Some(key("ag_abc"))));
        // The same key in every place is one credential.
        let h = headers(&[
            ("authorization", "Bearer ag_abc"),
            ("x-api-key", "ag_abc"),
            ("cookie", "accesskey=ag_abc"),
        ]);
        assert_eq!(
            extract(&h, Some("accesskey=ag_abc"), &d),
            Ok(Some(key("ag_abc")))
        );
        // A key in a header and another in the query: a conflict.
        let h = headers(&[("x-api-key", "ag_abc")]);
        assert_eq!(
            extract(&h, Some("accesskey=ag_xyz"), &d),
            Err(ExtractError::Conflicting)
        );
        let h = headers(&[("authorization", "Bearer ag_abc")]);
        assert_eq!(
            extract(&h, Some("accesskey=ag_xyz"), &d),
            Err(ExtractError::Conflicting)
        );
        // The same secret as a key and as a JWT is two credentials.
        assert_eq!(
            extract(&h, Some("token=ag_abc"), &d),
            Err(ExtractError::Conflicting)
        );
        let h = headers(&[("x-api-key", "ag_a"), ("x-api-key", "ag_b")]);
        assert_eq!(extract(&h, None, &d), Err(ExtractError::Conflicting));
        let h = headers(&[("x-api-key", "ag_abc"), ("authorization", "Bearer eyJ.x.y")]);
        assert_eq!(extract(&h, None, &d), Err(ExtractError::Conflicting));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_bytes(b"ag_\xff").unwrap());
        assert_eq!(extract(&h, None, &d), Err(ExtractError::Malformed));
        let h = headers(&[("x-api-key", "")]);
        assert_eq!(extract(&h, None, &d), Err(ExtractError::Malformed));
    }

    #[test]
    fn the_key_header_can_be_renamed_or_turned_off() {
        let renamed = Sources {
            key_header: Some(HeaderName::from_static("apikey")),
            query: true,
        };
        let off = Sources {
            key_header: None,
            query: true,
        };
        let h = headers(&[("apikey", "ag_abc"), ("x-api-key", "ag_other")]);
        assert_eq!(extract(&h, None, &renamed), Ok(Some(key("ag_abc"))));
        assert_eq!(extract(&h, None, &off), Ok(None));
        let mut stripped = h.clone();
        strip_credential_headers(&mut stripped, &renamed);
        assert!(stripped.get("apikey").is_none());
        assert!(stripped.get("x-api-key").is_some());
        assert!(!carries_credential(&h, None, &off));
        assert!(carries_credential(&h, None, &renamed));
    }

    #[test]
    fn the_key_header_is_stripped_under_every_folded_spelling() {
        let d = Sources::default();
        let mut h = headers(&[
            ("x-api-key", "ag_abc"),
            ("x_api_key", "ag_other"),
            ("x-api_key", "ag_third"),
            ("x-api-keys", "kept"),
            ("authorization", "Bearer ag_abc"),
        ]);
        // Only the name itself is read; the folded ones are still the
        // client's own and never reach an upstream.
        assert_eq!(extract(&h, None, &d), Ok(Some(key("ag_abc"))));
        assert!(carries_credential(
            &headers(&[("x_api_key", "ag_q")]),
            None,
            &d
        ));
        strip_credential_headers(&mut h, &d);
        let left: Vec<&str> = h.keys().map(|name| name.as_str()).collect();
        assert_eq!(left, vec!["x-api-keys"]);
    }

    #[test]
    fn credentials_in_the_query_can_be_refused() {
        let no_query = Sources {
            query: false,
            ..Sources::default()
        };
        for query in ["token=abc", "a=1&accesskey=ag_x", "%74oken=x", "accesskey="] {
            assert_eq!(
                extract(&HeaderMap::new(), Some(query), &no_query),
                Err(ExtractError::InQuery),
                "{query}"
            );
        }
        // Whatever else the request carries.
        let h = headers(&[("x-api-key", "ag_abc")]);
        assert_eq!(
            extract(&h, Some("accesskey=ag_abc"), &no_query),
            Err(ExtractError::InQuery)
        );
        assert_eq!(
            extract(&h, Some("a=1&tokens=2"), &no_query),
            Ok(Some(key("ag_abc")))
        );
    }

    #[test]
    fn foreign_scheme_is_ignored_beside_our_credential() {
        let h = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(
            extract(&h, Some("token=abc"), &Sources::default()),
            Ok(Some(jwt("abc")))
        );
    }

    #[test]
    fn query_rewriting_keeps_the_rest_byte_for_byte() {
        let cases = [
            ("token=abc", None),
            ("accesskey=ag_1", None),
            ("b=2&token=abc&a=1&b=3", Some("b=2&a=1&b=3")),
            ("x=%20y&token=abc", Some("x=%20y")),
            ("token=abc&z=a+b&&w", Some("z=a+b&&w")),
            ("to%6Ben=abc&keep=1", Some("keep=1")),
            ("a=1&b=2", Some("a=1&b=2")),
            ("tokenx=1", Some("tokenx=1")),
            ("", None),
        ];
        for (query, expected) in cases {
            assert_eq!(
                strip_credential_query(query).as_deref(),
                expected,
                "{query}"
            );
        }
    }

    #[test]
    fn header_stripping_keeps_other_cookies_and_schemes() {
        let mut h = headers(&[
            ("authorization", "Bearer abc"),
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("cookie", "theme=dark; token=abc; lang=en"),
            ("cookie", "accesskey=ag_1"),
        ]);
        strip_credential_headers(&mut h, &Sources::default());
        let auth: Vec<_> = h.get_all(header::AUTHORIZATION).iter().collect();
        assert_eq!(auth, vec!["Basic dXNlcjpwYXNz"]);
        let cookies: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, vec!["theme=dark; lang=en"]);

        let mut h = headers(&[("cookie", "token=abc")]);
        strip_credential_headers(&mut h, &Sources::default());
        assert!(h.get(header::COOKIE).is_none());
    }

    fn raw_cookie(bytes: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_bytes(bytes).unwrap());
        h
    }

    #[test]
    fn what_carries_a_credential() {
        assert!(!carries_credential(
            &HeaderMap::new(),
            None,
            &Sources::default()
        ));
        assert!(!carries_credential(
            &headers(&[("cookie", "theme=dark; mytoken=x")]),
            Some("a=1&tokens=2"),
            &Sources::default()
        ));
        assert!(carries_credential(
            &headers(&[("authorization", "Basic dXNlcjpwYXNz")]),
            None,
            &Sources::default()
        ));
        assert!(carries_credential(
            &raw_cookie(b"a=\xe9; token=x"),
            None,
            &Sources::default()
        ));
        assert!(carries_credential(
            &HeaderMap::new(),
            Some("a=1&to%6Ben=x"),
            &Sources::default()
        ));
        assert!(carries_credential(
            &HeaderMap::new(),
            Some("accesskey=ag_x"),
            &Sources::default()
        ));
    }

    #[test]
    fn cookies_are_read_as_bytes_whatever_else_the_header_holds() {
        // One obs-text byte (Latin-1 é) in another cookie used to hide the
        // whole header from extraction and from stripping.
        let h = raw_cookie(b"theme=caf\xe9; token=abc; lang=en");
        assert_eq!(extract(&h, None, &Sources::default()), Ok(Some(jwt("abc"))));
        assert_eq!(
            extract(&h, Some("token=other"), &Sources::default()),
            Err(ExtractError::Conflicting)
        );
        let mut h = raw_cookie(b"theme=caf\xe9; token=abc; lang=\xff");
        strip_credential_headers(&mut h, &Sources::default());
        assert_eq!(h[header::COOKIE].as_bytes(), b"theme=caf\xe9; lang=\xff");
        let mut h = raw_cookie(b"\x80=1;accesskey=ag_x");
        assert_eq!(
            extract(&h, None, &Sources::default()).map(|c| c.map(|c| c.kind)),
            Ok(Some(CredentialKind::AccessKey))
        );
        strip_credential_headers(&mut h, &Sources::default());
        assert_eq!(h[header::COOKIE].as_bytes(), b"\x80=1");
        // A credential cookie whose value is not UTF-8 is malformed, and
        // still stripped.
        let mut h = raw_cookie(b"a=1; token=\xe9\xe9");
        assert_eq!(
            extract(&h, None, &Sources::default()),
            Err(ExtractError::Malformed)
        );
        strip_credential_headers(&mut h, &Sources::default());
        assert_eq!(h[header::COOKIE].as_bytes(), b"a=1");
        // Untouched when there is nothing of ours: the same bytes.
        let mut h = raw_cookie(b"theme=caf\xe9;x=\"q\"");
        strip_credential_headers(&mut h, &Sources::default());
        assert_eq!(h[header::COOKIE].as_bytes(), b"theme=caf\xe9;x=\"q\"");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Where a credential can be placed.
        #[derive(Debug, Clone, Copy)]
        enum Place {
            Bearer,
            QueryToken,
            QueryAccessKey,
            CookieToken,
            CookieAccessKey,
            KeyHeader,
        }

        fn place() -> impl Strategy<Value = Place> {
            prop_oneof![
                Just(Place::Bearer),
                Just(Place::QueryToken),
                Just(Place::QueryAccessKey),
                Just(Place::CookieToken),
                Just(Place::CookieAccessKey),
                Just(Place::KeyHeader),
            ]
        }

        /// Secrets that need no escaping anywhere; some shaped like keys.
        fn secret() -> impl Strategy<Value = String> {
            "(ag_)?[A-Za-z0-9._-]{1,12}"
        }

        /// Query pieces and cookies that are not credentials.
        fn noise() -> impl Strategy<Value = (Vec<String>, Vec<String>)> {
            let piece = "[a-z0-9=%+._~-]{1,10}".prop_filter("not a credential name", |piece| {
                form_urlencoded::parse(piece.as_bytes())
                    .next()
                    .is_none_or(|(name, _)| kind_of_name(&name).is_none())
            });
            let cookie = "[a-z]{1,6}=[a-z0-9]{0,6}".prop_filter("not a credential cookie", |c| {
                !c.starts_with("token=") && !c.starts_with("accesskey=")
            });
            (
                prop::collection::vec(piece, 0..5),
                prop::collection::vec(cookie, 0..4),
            )
        }

        fn build(
            placed: &[(Place, String)],
            noise_query: &[String],
            noise_cookies: &[String],
        ) -> (HeaderMap, String) {
            let mut headers = HeaderMap::new();
            let mut query: Vec<String> = noise_query.to_vec();
            let mut cookies: Vec<String> = noise_cookies.to_vec();
            for (place, secret) in placed {
                match place {
                    Place::Bearer => {
                        headers.append(
                            header::AUTHORIZATION,
                            HeaderValue::from_str(&format!("Bearer {secret}")).unwrap(),
                        );
                    }
                    Place::QueryToken => query.push(format!("token={secret}")),
                    Place::QueryAccessKey => query.push(format!("accesskey={secret}")),
                    Place::CookieToken => cookies.push(format!("token={secret}")),
                    Place::CookieAccessKey => cookies.push(format!("accesskey={secret}")),
                    Place::KeyHeader => {
                        headers.append(DEFAULT_KEY_HEADER, HeaderValue::from_str(secret).unwrap());
                    }
                }
            }
            if !cookies.is_empty() {
                headers.append(
                    header::COOKIE,
                    HeaderValue::from_str(&cookies.join("; ")).unwrap(),
                );
            }
            headers.append(header::ACCEPT, HeaderValue::from_static("*/*"));
            (headers, query.join("&"))
        }

        fn kind_of(place: Place, secret: &str) -> CredentialKind {
            match place {
                Place::Bearer => bearer_kind(secret),
                Place::QueryToken | Place::CookieToken => CredentialKind::Jwt,
                Place::QueryAccessKey | Place::CookieAccessKey | Place::KeyHeader => {
                    CredentialKind::AccessKey
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// The shortcut that decodes only names agrees with decoding the
            /// whole piece (`%74oken`, `+token`, `token%3D`...).
            #[test]
            fn credential_names_match_a_full_decode(
                piece in "\\+?(t|%74)(o|%6[fF])ken(=|%3[dD]|\\+)?[a-z0-9=]{0,3}\
                    |(a|%61)ccesskey(=|%3[dD]|\\+)?[a-z=]{0,3}|[a-z0-9=%+]{0,8}",
            ) {
                let full = form_urlencoded::parse(piece.as_bytes())
                    .next()
                    .is_some_and(|(name, _)| kind_of_name(&name).is_some());
                prop_assert_eq!(names_credential(&piece), full);
            }

            #[test]
            fn extraction_never_panics_on_arbitrary_input(
                values in prop::collection::vec(
                    (prop_oneof![Just("authorization"), Just("cookie"), Just("x-api-key"), Just("x-other")],
                     prop::collection::vec(any::<u8>(), 0..40)),
                    0..6,
                ),
                query in any::<String>(),
            ) {
                let mut headers = HeaderMap::new();
                for (name, bytes) in values {
                    if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                        headers.append(name, value);
                    }
                }
                let found = extract(&headers, Some(&query), &Sources::default());
                if let Ok(Some(credential)) = found {
                    prop_assert!(!credential.secret.is_empty());
                }
                let _ = strip_credential_query(&query);
                strip_credential_headers(&mut headers, &Sources::default());
                prop_assert!(extract(&headers, None, &Sources::default()).is_ok_and(|c| c.is_none())
                    || headers.get_all(header::AUTHORIZATION).iter().next().is_some());
            }

            #[test]
            fn extraction_finds_exactly_what_is_there(
                placed in prop::collection::vec((place(), secret()), 0..4),
                (noise_query, noise_cookies) in noise(),
            ) {
                let (headers, query) = build(&placed, &noise_query, &noise_cookies);
                let query = (!query.is_empty()).then_some(query.as_str());
                let mut distinct: Vec<(CredentialKind, &str)> = placed
                    .iter()
                    .map(|(place, secret)| (kind_of(*place, secret), secret.as_str()))
                    .collect();
                distinct.sort_by_key(|(kind, secret)| (*kind == CredentialKind::Jwt, *secret));
                distinct.dedup();
                let found = extract(&headers, query, &Sources::default());
                match distinct.as_slice() {
                    [] => prop_assert_eq!(found, Ok(None)),
                    [(kind, secret)] => {
                        let credential = found.expect("one credential").expect("found");
                        prop_assert_eq!(credential.kind, *kind);
                        prop_assert_eq!(credential.secret.as_ref(), *secret);
                    }
                    _ => prop_assert_eq!(found, Err(ExtractError::Conflicting)),
                }
            }

            #[test]
            fn stripping_removes_every_credential_and_keeps_the_rest_in_order(
                placed in prop::collection::vec((place(), secret()), 0..4),
                (noise_query, noise_cookies) in noise(),
                order in any::<u64>(),
            ) {
                // Credentials interleaved with the other pieces.
                let (mut headers, _) = build(&placed, &[], &noise_cookies);
                let mut pieces: Vec<(bool, String)> =
                    noise_query.iter().map(|p| (false, p.clone())).collect();
                for (i, (place, secret)) in placed.iter().enumerate() {
                    let piece = match place {
                        Place::QueryToken => format!("token={secret}"),
                        Place::QueryAccessKey => format!("accesskey={secret}"),
                        _ => continue,
                    };
                    let at = usize::try_from(order.rotate_left(i as u32 * 7) % (pieces.len() as u64 + 1)).unwrap();
                    pieces.insert(at, (true, piece));
                }
                let query = pieces.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>().join("&");
                let kept: Vec<&str> = pieces.iter().filter(|(c, _)| !c).map(|(_, p)| p.as_str()).collect();
                let expected = (!kept.is_empty()).then(|| kept.join("&"));
                prop_assert_eq!(strip_credential_query(&query).map(Cow::into_owned), expected);

                strip_credential_headers(&mut headers, &Sources::default());
                prop_assert_eq!(extract(&headers, None, &Sources::default()), Ok(None));
                let cookies: Vec<String> = request_cookies(&headers)
                    .map(|(name, value)| format!(
                        "{}={}",
                        String::from_utf8_lossy(name),
                        String::from_utf8_lossy(value)
                    ))
                    .collect();
                prop_assert_eq!(cookies, noise_cookies);
                prop_assert_eq!(&headers[header::ACCEPT], "*/*");
            }
        }
    }
}
