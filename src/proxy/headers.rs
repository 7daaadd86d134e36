//! Pure header rewriting for forwarded requests and relayed responses.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};

use crate::auth::Identity;

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Auth-User`.
pub static X_AUTH_USER: HeaderName = HeaderName::from_static("x-auth-user");
/// `X-Auth-Provider`: `local`, an `[[oidc]]` or a `[[jwt.jwks]]` provider.
pub static X_AUTH_PROVIDER: HeaderName = HeaderName::from_static("x-auth-provider");
/// `X-Auth-Roles`.
pub static X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");
/// `X-Auth-Method`.
pub static X_AUTH_METHOD: HeaderName = HeaderName::from_static("x-auth-method");
/// `X-Auth-Key-Id`.
pub static X_AUTH_KEY_ID: HeaderName = HeaderName::from_static("x-auth-key-id");
/// `X-Client-Cert-Subject`: the verified client certificate's subject.
pub static X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");

/// Whether `name` belongs to one connection and never crosses a proxy (RFC
/// 9110 7.6.1), besides those named by `Connection`: `Connection`,
/// `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, every `Proxy-*`
/// (`Proxy-Connection` among them), `Upgrade`, and `HTTP2-Settings`, which
/// belongs to an `h2c` upgrade of one connection (RFC 7540 section 3.2.1)
/// that the gateway never performs. A match compiles to a switch on the
/// length: one comparison at most for the usual field.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
    ) || name.starts_with("proxy-")
}

/// The one protocol the gateway tunnels after a 101.
const WEBSOCKET: &str = "websocket";

/// Whether the request is a WebSocket opening handshake (RFC 6455 section
/// 4.1), the only upgrade the gateway lets through: an HTTP/1.1 `GET` whose
/// `Upgrade` lists `websocket`, whose `Connection` lists `upgrade`, with one
/// `Sec-WebSocket-Key` that is the base64 of a 16-byte nonce and
/// `Sec-WebSocket-Version: 13`. Every other upgrade (`h2c`, `TLS/1.0`, ...)
/// would open a tunnel in which later requests are never authenticated, so
/// its `Upgrade` header is stripped instead.
pub fn is_websocket_handshake(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    method == Method::GET
        && version == Version::HTTP_11
        && lists_token(headers, &header::UPGRADE, WEBSOCKET)
        && lists_token(headers, &header::CONNECTION, "upgrade")
        && single(headers, &SEC_WEBSOCKET_KEY).is_some_and(is_websocket_key)
        && single(headers, &SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes() == b"13")
}

/// Whether a 101 response switches to WebSocket and nothing else: one
/// `Upgrade` field holding exactly the token `websocket`.
pub fn switches_to_websocket(headers: &HeaderMap) -> bool {
    single(headers, &header::UPGRADE).is_some_and(|value| {
        value
            .to_str()
            .is_ok_and(|text| text.trim().eq_ignore_ascii_case(WEBSOCKET))
    })
}

/// The field's value when it occurs exactly once.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// A `Sec-WebSocket-Key`: base64 (with padding) of exactly 16 bytes.
fn is_websocket_key(value: &HeaderValue) -> bool {
    use base64::Engine;
    let mut nonce = [0u8; 18];
    base64::engine::general_purpose::STANDARD
        .decode_slice(value.as_bytes(), &mut nonce)
        .is_ok_and(|length| length == 16)
}

/// Whether a comma-separated field lists `token`, ASCII case-insensitively.
fn lists_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers: the fixed set, every name listed in
/// `Connection`, every `Proxy-*`, and `Upgrade`. With `websocket` (a
/// checked WebSocket handshake, or its 101), the head then carries exactly
/// `Upgrade: websocket` and `Connection: upgrade`, whatever other protocols
/// the client or upstream listed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, websocket: bool) {
    // One pass over the names instead of a hash lookup per hop-by-hop name;
    // most requests carry none (then `Connection` is absent too, so nothing
    // is collected), and responses usually just `Connection`.
    // Collecting nothing allocates nothing.
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    if !doomed.is_empty() {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            // `keep-alive` and `upgrade` are in the set above already.
            .filter(|token| {
                !token.is_empty()
                    && !token.eq_ignore_ascii_case("keep-alive")
                    && !token.eq_ignore_ascii_case("upgrade")
            })
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .filter(|name| headers.contains_key(name))
            .collect();
        doomed.extend(listed);
        for name in &doomed {
            headers.remove(name);
        }
    }
    if websocket {
        headers.insert(header::UPGRADE, HeaderValue::from_static(WEBSOCKET));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Joins several `Cookie` fields into one, separated by `; `: HTTP/2
/// clients may send one field per cookie (RFC 9113 section 8.2.3), while an
/// HTTP/1.1 server expects a single `Cookie` header (RFC 6265 section 5.4).
/// Joined as bytes: obs-text in one crumb does not keep it apart.
pub fn join_cookie_headers(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.nth(1).is_none() {
        return;
    }
    let parts: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    // Valid values joined by a valid separator make a valid value.
    let Ok(joined) = HeaderValue::from_bytes(&parts.join(&b"; "[..])) else {
        return;
    };
    headers.insert(header::COOKIE, joined);
}

/// Removes every client-sent header that an upstream could take for one
/// the gateway vouches for, under any spelling an upstream folds into the
/// same name: header names are case-insensitive, and WSGI, CGI, PHP-FPM and
/// older Puma turn both `-` and `_` into `_` (`X_Auth_User` and
/// `X-Auth-User` both become `HTTP_X_AUTH_USER`). Removed, with `_` read as
/// `-`, every name in [`RESERVED_REQUEST_HEADERS`]:
/// - identity (`X-Auth-*`, `X-Client-Cert-Subject`): only from the gateway;
/// - every claim about the request's origin, address or method that the
///   gateway does not make itself: the whole `X-Forwarded-*` and
///   `X-Original-*` families, `Forwarded`, the client-address headers,
///   `Front-End-Https`, and the method overrides. An upstream that reads
///   one (Werkzeug's `ProxyFix`, Express's `method-override`) would take
///   the client's word for where the request came from or what it does;
/// - the underscore spellings of the headers the gateway sets
///   ([`GATEWAY_SET_HEADERS`]): after folding an upstream would see two
///   candidates, one chosen by the client. Their hyphenated names stay: the
///   gateway rewrites them itself.
///
/// One pass over the names; nothing is allocated when nothing matches.
pub fn remove_identity_headers(headers: &mut HeaderMap) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if is_reserved_request_header(name.as_str().as_bytes()) {
            doomed.push(name.clone());
        }
    }
    for name in &doomed {
        headers.remove(name);
    }
}

/// A name in [`RESERVED_REQUEST_HEADERS`], compared with `_` read as `-`.
#[derive(Debug, Clone, Copy)]
enum Reserved {
    /// This name.
    Name(&'static str),
    /// Every name starting with this (a family: the next member an
    /// upstream learns to read is covered too).
    Family(&'static str),
}

/// Client-sent request headers that never reach an upstream (lower case;
/// `_` in a client's name is read as `-`). Adding a header the gateway
/// vouches for is one line here.
const RESERVED_REQUEST_HEADERS: [Reserved; 19] = [
    // Identity: set from a verified credential only.
    Reserved::Family("x-auth-"),
    Reserved::Name("x-client-cert-subject"),
    // Origin, scheme, host, port and prefix: the gateway sets
    // X-Forwarded-For/-Proto/-Host (kept under exactly those names).
    Reserved::Family("x-forwarded-"),
    Reserved::Name("x-forwarded"),
    Reserved::Name("forwarded"),
    Reserved::Name("forwarded-for"),
    Reserved::Family("x-original-"),
    Reserved::Name("x-rewrite-url"),
    Reserved::Name("front-end-https"),
    Reserved::Name("x-url-scheme"),
    Reserved::Name("x-scheme"),
    // The client's address.
    Reserved::Name("x-real-ip"),
    Reserved::Name("x-client-ip"),
    Reserved::Name("x-cluster-client-ip"),
    Reserved::Name("true-client-ip"),
    Reserved::Name("cf-connecting-ip"),
    // The method: another reading of it, never judged.
    Reserved::Name("x-http-method-override"),
    Reserved::Name("x-http-method"),
    Reserved::Name("x-method-override"),
];

/// Headers the gateway sets itself on every forwarded request: kept under
/// exactly these names (then rewritten), removed under any other spelling.
const GATEWAY_SET_HEADERS: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// Whether a (lower-case) request header name is one that
/// [`remove_identity_headers`] removes.
fn is_reserved_request_header(name: &[u8]) -> bool {
    if GATEWAY_SET_HEADERS
        .iter()
        .any(|ours| name == ours.as_bytes())
    {
        return false;
    }
    if name.contains(&b'_')
        && GATEWAY_SET_HEADERS
            .iter()
            .any(|ours| folded_eq(name, ours.as_bytes()))
    {
        return true;
    }
    RESERVED_REQUEST_HEADERS
        .iter()
        .any(|reserved| match reserved {
            Reserved::Name(ours) => folded_eq(name, ours.as_bytes()),
            Reserved::Family(ours) => folded_starts_with(name, ours.as_bytes()),
        })
}

/// `name` equals `ours` with each `_` in `name` read as `-`.
fn folded_eq(name: &[u8], ours: &[u8]) -> bool {
    name.len() == ours.len() && folded_starts_with(name, ours)
}

/// `name` starts with `ours` with each `_` in `name` read as `-`.
fn folded_starts_with(name: &[u8], ours: &[u8]) -> bool {
    name.len() >= ours.len()
        && name
            .iter()
            .zip(ours)
            .all(|(&have, &want)| have == want || (have == b'_' && want == b'-'))
}

/// Sets the identity headers for an authenticated caller.
pub fn set_identity_headers(headers: &mut HeaderMap, identity: &Identity) {
    // The values were made where the identity's parts are cached; one that
    // could not be a header value is left out.
    let values = &identity.values;
    if let Some(user) = &values.user {
        headers.insert(X_AUTH_USER.clone(), user.clone());
    }
    // The subject alone is ambiguous across providers; the pair is the caller.
    if let Some(provider) = &values.provider {
        headers.insert(X_AUTH_PROVIDER.clone(), provider.clone());
    }
    if let Some(roles) = &values.roles {
        headers.insert(X_AUTH_ROLES.clone(), roles.clone());
    }
    headers.insert(
        X_AUTH_METHOD.clone(),
        HeaderValue::from_static(identity.method.as_str()),
    );
    if let Some(key_id) = identity.key_id
        && let Ok(value) = HeaderValue::from_str(
            key_id
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        )
    {
        headers.insert(X_AUTH_KEY_ID.clone(), value);
    }
}

/// What an answer to a request that carried a credential varies on.
const CREDENTIAL_VARY: [&str; 2] = ["Authorization", "Cookie"];
/// [`CREDENTIAL_VARY`] as one `Vary` value.
const CREDENTIAL_VARY_JOINED: &str = "Authorization, Cookie";

/// `Cache-Control` directives with which an upstream already decided who may
/// store its answer: left as they are.
const CACHE_DECIDED: [&str; 4] = ["public", "s-maxage", "private", "no-store"];

/// Marks the answer to a request that carried a credential as that
/// caller's, so no shared cache in front (nginx `proxy_cache`, a CDN) hands
/// it to another caller: `Vary: Authorization, Cookie`, merged with the
/// `Vary` already there (`*` already varies on everything), and
/// `Cache-Control: private` added unless the `Cache-Control` there says
/// `public`, `s-maxage`, `private` (unqualified: `private="f"` lets a shared
/// cache keep the rest) or `no-store` (RFC 9111 section 5.2.2). For every
/// answer alike: relayed, 304s, the gateway's own errors and decisions.
pub fn mark_private(headers: &mut HeaderMap) {
    // The usual answer carries neither field: what the merging below
    // makes of nothing, without reading or allocating.
    if !headers.contains_key(header::VARY) && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(
            header::VARY,
            HeaderValue::from_static(CREDENTIAL_VARY_JOINED),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        return;
    }
    let mut vary: Vec<String> = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .collect();
    if !vary.iter().any(|token| token == "*") {
        for wanted in CREDENTIAL_VARY {
            if !vary.iter().any(|token| token.eq_ignore_ascii_case(wanted)) {
                vary.push(wanted.to_owned());
            }
        }
        if let Ok(value) = HeaderValue::from_str(&vary.join(", ")) {
            headers.insert(header::VARY, value);
        }
    }

    let decided = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .any(|value| {
            value.split(',').any(|directive| {
                let directive = directive.trim();
                let name = directive
                    .split_once('=')
                    .map_or(directive, |(n, _)| n.trim());
                CACHE_DECIDED
                    .iter()
                    .any(|decided| name.eq_ignore_ascii_case(decided))
                    && !(name.eq_ignore_ascii_case("private") && directive.contains('='))
            })
        });
    if decided {
        return;
    }
    let existing: Vec<&[u8]> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .map(HeaderValue::as_bytes)
        .filter(|value| !value.trim_ascii().is_empty())
        .collect();
    let mut joined = existing.join(&b", "[..]);
    if !joined.is_empty() {
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(b"private");
    let value =
        HeaderValue::from_bytes(&joined).unwrap_or_else(|_| HeaderValue::from_static("private"));
    headers.insert(header::CACHE_CONTROL, value);
}

/// A `Host` header that is repeated or not a `host[:port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidHost;

/// The authority the client addressed, for routing by host and for
/// `X-Forwarded-Host`: the request target's (absolute form, or HTTP/2
/// `:authority`) without any user info, else the `Host` header; in
/// canonical form (host lowercase, without a trailing dot, and the port as
/// given), so the host the upstream reads is the host the route was chosen
/// by. A target authority and a `Host` naming different hosts are refused:
/// an upstream or a cache reading the other one would see another site
/// than the one routed (RFC 9112 section 3.2.2 lets the target win; one
/// name is safer than a rule). Also refused: a repeated `Host`, and a host
/// that is not a DNS name or an IP literal (see
/// [`crate::routes::canonical_host`]).
pub fn requested_authority(
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, InvalidHost> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(InvalidHost);
    }
    // The common case, one `Host` already canonical and an origin-form
    // target: the checks below would keep it as it is.
    if let Some(value) = host
        && uri.authority().is_none()
        && already_canonical(value.as_bytes())
    {
        return Ok(Some(value.clone()));
    }
    checked_authority(uri, host)
}

/// [`requested_authority`] in full, for the target and the one `Host`
/// (if any).
fn checked_authority(
    uri: &http::Uri,
    host: Option<&HeaderValue>,
) -> Result<Option<HeaderValue>, InvalidHost> {
    let header_value = host.filter(|value| !value.is_empty());
    let from_header = match host {
        None => None,
        Some(value) if value.is_empty() => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| InvalidHost)?;
            if text.contains('@') || http::uri::Authority::try_from(text).is_err() {
                return Err(InvalidHost);
            }
            Some(text)
        }
    };
    let from_target = uri
        .authority()
        .map(|authority| authority.as_str().rsplit('@').next().unwrap_or_default())
        .filter(|host_port| !host_port.is_empty());
    let chosen = match (from_target, from_header) {
        (Some(target), Some(header)) => {
            let same = crate::routes::canonical_host(target)
                .zip(crate::routes::canonical_host(header))
                .is_some_and(|(a, b)| a == b);
            if !same {
                return Err(InvalidHost);
            }
            target
        }
        (Some(target), None) => target,
        (None, Some(header)) => header,
        (None, None) => return Ok(None),
    };
    let host = crate::routes::canonical_host(chosen).ok_or(InvalidHost)?;
    let port = if chosen.starts_with('[') {
        chosen.split_once("]:").map(|(_, port)| port)
    } else {
        chosen.rsplit_once(':').map(|(_, port)| port)
    }
    .filter(|port| !port.is_empty());
    // The usual `Host` is canonical already: kept as it is (no allocation).
    let unchanged = match port {
        Some(port) => chosen.len() == host.len() + 1 + port.len() && chosen.starts_with(&*host),
        None => chosen == host,
    };
    if unchanged
        && from_target.is_none()
        && let Some(value) = header_value
    {
        return Ok(Some(value.clone()));
    }
    let value = match port {
        Some(port) => HeaderValue::from_str(&format!("{host}:{port}")),
        None => HeaderValue::from_str(&host),
    };
    value.map(Some).map_err(|_| InvalidHost)
}

/// Whether a `Host` value is one that [`requested_authority`] keeps as it
/// is: a lower-case name or IPv4 address (letters, digits, `-`, `_`, dots
/// between labels, no trailing dot) and an optional non-empty port of at
/// most 5 digits. One pass, no allocation; anything else (upper case, a
/// trailing dot, an IP literal, an empty port, a bad byte) takes the full
/// checks.
fn already_canonical(value: &[u8]) -> bool {
    let (host, port) = match value.iter().position(|&b| b == b':') {
        Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
        None => (value, None),
    };
    // A leading dot reads as a dot after a dot.
    let mut previous = b'.';
    for &b in host {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
            b'.' if previous != b'.' => {}
            _ => return false,
        }
        previous = b;
    }
    // Not empty, no trailing dot.
    previous != b'.'
        && port.is_none_or(|port| {
            !port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
        })
}

/// Appends the client to `X-Forwarded-For` and sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (the host the client asked for).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(vacant) => {
            vacant.insert(client_ip.clone());
        }
        header::Entry::Occupied(mut occupied) => {
            let mut chain: Vec<&[u8]> = occupied
                .iter()
                .filter(|value| value.to_str().is_ok())
                .map(HeaderValue::as_bytes)
                .collect();
            chain.push(client_ip.as_bytes());
            // Replaces every earlier field with the one joined chain.
            match HeaderValue::from_bytes(&chain.join(&b", "[..])) {
                Ok(value) => {
                    occupied.insert(value);
                }
                Err(_) => {
                    occupied.remove_entry_mult();
                }
            }
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

/// Sets `X-Client-Cert-Subject` from the TLS layer, removing any value the
/// client sent itself.
pub fn set_client_cert_subject(headers: &mut HeaderMap, subject: Option<&str>) {
    headers.remove(&X_CLIENT_CERT_SUBJECT);
    if let Some(value) = subject.and_then(|s| HeaderValue::from_str(s).ok()) {
        headers.insert(X_CLIENT_CERT_SUBJECT.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names() {
        for name in [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "proxy-connection",
            "http2-settings",
            "proxy-authorization",
            "proxy-x",
            "upgrade",
        ] {
            assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["content-length", "host", "tea", "trailers", "x-connection"] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }
    use crate::auth::AuthMethod;
    use std::sync::Arc;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn names(map: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = map.keys().map(|n| n.as_str()).collect();
        names.sort();
        names
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Custom-Hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("proxy-foo", "1"),
            ("accept", "*/*"),
            ("x-end-to-end", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), vec!["accept", "x-end-to-end"]);
        // Each alone, next to an end-to-end field: found without the others.
        for (name, value) in [
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ] {
            let mut h = headers(&[(name, value), ("accept", "*/*")]);
            strip_hop_by_hop(&mut h, false);
            assert_eq!(names(&h), vec!["accept"], "{name}");
        }
        let mut h = headers(&[("connection", "X-Custom-Hop"), ("x-custom-hop", "1")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn websocket_request() -> Vec<(&'static str, &'static str)> {
        vec![
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", KEY),
            ("sec-websocket-version", "13"),
        ]
    }

    #[test]
    fn only_rfc_6455_handshakes_are_websocket_upgrades() {
        let get = Method::GET;
        let h11 = Version::HTTP_11;
        assert!(is_websocket_handshake(
            &get,
            h11,
            &headers(&websocket_request())
        ));
        let with = |name: &'static str, value: &'static str| {
            let mut pairs = websocket_request();
            pairs.retain(|(n, _)| *n != name);
            if !value.is_empty() {
                pairs.push((name, value));
            }
            headers(&pairs)
        };
        for (name, value, upgrades) in [
            ("upgrade", "WebSocket", true),
            ("upgrade", "h2c, websocket", true),
            ("connection", "upgrade", true),
            ("upgrade", "h2c", false),
            ("upgrade", "TLS/1.0", false),
            ("upgrade", "websocket/13", false),
            ("upgrade", "", false),
            ("connection", "keep-alive", false),
            ("connection", "", false),
            ("sec-websocket-key", "", false),
            ("sec-websocket-key", "short", false),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ", false),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZSEh", false),
            ("sec-websocket-key", "not base64 at all!!!!!==", false),
            ("sec-websocket-version", "8", false),
            ("sec-websocket-version", "13, 8", false),
            ("sec-websocket-version", "", false),
        ] {
            assert_eq!(
                is_websocket_handshake(&get, h11, &with(name, value)),
                upgrades,
                "{name}: {value:?}"
            );
        }
        let mut twice = headers(&websocket_request());
        twice.append("sec-websocket-key", HeaderValue::from_static(KEY));
        assert!(!is_websocket_handshake(&get, h11, &twice));
        let ok = headers(&websocket_request());
        assert!(!is_websocket_handshake(&Method::POST, h11, &ok));
        assert!(!is_websocket_handshake(&Method::CONNECT, h11, &ok));
        assert!(!is_websocket_handshake(&get, Version::HTTP_10, &ok));
        assert!(!is_websocket_handshake(&get, Version::HTTP_2, &ok));
    }

    #[test]
    fn upgrades_other_than_websocket_are_stripped() {
        let mut h = headers(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), vec!["accept"]);
        // Not listed in `Connection`: still hop-by-hop.
        let mut h = headers(&[("upgrade", "h2c"), ("http2-settings", "AAMAAABkAAQAAP__")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty());
    }

    #[test]
    fn websocket_upgrades_carry_only_the_websocket_token() {
        let mut h = headers(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c, websocket"),
            ("upgrade", "TLS/1.0"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("sec-websocket-key", KEY),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get_all("upgrade").iter().collect::<Vec<_>>(),
            vec!["websocket"]
        );
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["sec-websocket-key"], KEY);
        assert!(h.get("http2-settings").is_none());
    }

    #[test]
    fn only_a_websocket_101_is_spliced() {
        assert!(switches_to_websocket(&headers(&[("upgrade", "websocket")])));
        assert!(switches_to_websocket(&headers(&[("upgrade", "WebSocket")])));
        for bad in [
            &[("upgrade", "h2c")][..],
            &[("upgrade", "websocket, h2c")][..],
            &[("upgrade", "websocket"), ("upgrade", "h2c")][..],
            &[("upgrade", "")][..],
            &[][..],
        ] {
            assert!(!switches_to_websocket(&headers(bad)), "{bad:?}");
        }
    }

    #[test]
    fn cookie_crumbs_become_one_header() {
        let mut h = headers(&[("cookie", "a=1"), ("cookie", "b=2; c=3")]);
        join_cookie_headers(&mut h);
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, vec!["a=1; b=2; c=3"]);
        let mut h = headers(&[("cookie", "a=1")]);
        join_cookie_headers(&mut h);
        assert_eq!(h["cookie"], "a=1");
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_bytes(b"a=caf\xe9").unwrap());
        h.append("cookie", HeaderValue::from_static("token=x"));
        join_cookie_headers(&mut h);
        let all: Vec<&[u8]> = h.get_all("cookie").iter().map(|v| v.as_bytes()).collect();
        assert_eq!(all, vec![&b"a=caf\xe9; token=x"[..]]);
    }

    #[test]
    fn identity_headers_are_removed_under_every_folded_spelling() {
        let removed = [
            "x-auth-user",
            "X_Auth_User",
            "X-Auth_User",
            "x_auth-user",
            "X_AUTH_ROLES",
            "x-auth-method",
            "X_Auth_Method",
            "x-auth-key-id",
            "X_Auth_Key_Id",
            "X-Auth-Anything",
            "x_auth_",
            "x-client-cert-subject",
            "X_Client_Cert_Subject",
            "X-Client_Cert-Subject",
            "Forwarded",
            "X-Real-IP",
            "X_Real_IP",
            "X-Original-URL",
            "X_Original_URL",
            "X-Rewrite-URL",
            "x_rewrite_url",
            "X_Forwarded_For",
            "X-Forwarded_For",
            "X_Forwarded_Host",
            "X_Forwarded_Proto",
            "X_Forwarded_Port",
            "X_Request_Id",
            "x-request_id",
            // Origin, address and method claims the gateway does not make.
            "X-Forwarded-Port",
            "X-Forwarded-Prefix",
            "X-Forwarded-Server",
            "X-Forwarded-Ssl",
            "X-Forwarded-Scheme",
            "X-Forwarded-Uri",
            "X-Forwarded-Method",
            "X-Forwarded-Protocol",
            "X-Forwarded-Anything-New",
            "x_forwarded_prefix",
            "X-Forwarded",
            "Forwarded-For",
            "Front-End-Https",
            "front_end_https",
            "X-Original-URI",
            "X-Original-Method",
            "X-Original-Forwarded-For",
            "X_Original_Host",
            "x-original-url-x",
            "X-Url-Scheme",
            "X-Scheme",
            "X-Client-IP",
            "X-Cluster-Client-IP",
            "True-Client-IP",
            "CF-Connecting-IP",
            "X-HTTP-Method-Override",
            "X_HTTP_Method_Override",
            "X-HTTP-Method",
            "X-Method-Override",
            "x-method_override",
        ];
        let kept = [
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-request-id",
            "x-authorization",
            "x-auth",
            "x_auth",
            "x-client-cert",
            "x-real-ip-extra",
            "forwarded-by-me",
            "x-forwardedx",
            "x-originalx",
            "x-http-methods",
            "x-requestid",
            "accept",
            "a_b",
            "f",
            "x",
        ];
        for name in removed {
            let mut h = headers(&[(name, "spoofed"), ("accept", "*/*")]);
            remove_identity_headers(&mut h);
            assert_eq!(names(&h), vec!["accept"], "{name} must be removed");
        }
        for name in kept {
            let mut h = headers(&[(name, "v")]);
            remove_identity_headers(&mut h);
            assert_eq!(h.len(), 1, "{name} must be kept");
        }
        // All of them in one head, values repeated: one pass removes all.
        let mut h = HeaderMap::new();
        for name in removed {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            h.append(name.clone(), HeaderValue::from_static("1"));
            h.append(name, HeaderValue::from_static("2"));
        }
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        remove_identity_headers(&mut h);
        assert_eq!(names(&h), vec!["x-forwarded-for"]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any member of a reserved family, in any case and with any
            /// `-` written as `_`, is removed; only the gateway's own
            /// `X-Forwarded-For/-Proto/-Host`, spelled exactly, stay.
            #[test]
            fn no_member_of_a_reserved_family_survives(
                family in prop_oneof![
                    Just("x-forwarded-"),
                    Just("x-original-"),
                    Just("x-auth-"),
                ],
                rest in "[a-z0-9-]{0,12}",
                underscores in any::<u32>(),
            ) {
                let name: String = format!("{family}{rest}")
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if c == '-' && underscores >> (i % 32) & 1 == 1 { '_' } else { c })
                    .collect();
                let mut h = HeaderMap::new();
                h.insert(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_static("spoofed"),
                );
                remove_identity_headers(&mut h);
                let ours = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
                    .contains(&name.as_str());
                prop_assert_eq!(h.is_empty(), !ours, "{}", name);
            }
        }
    }

    #[test]
    fn identity_headers_replace_spoofed_ones() {
        let mut h = headers(&[
            ("x-auth-user", "root"),
            ("x-auth-roles", "admin"),
            ("X-Auth-Anything", "1"),
        ]);
        remove_identity_headers(&mut h);
        assert!(h.is_empty());
        let identity = Identity {
            principal: crate::auth::Principal::Store(crate::auth::StoreUser::for_tests(
                "alice", "corp",
            )),
            roles: Arc::from(vec!["a".to_owned(), "b".to_owned()]),
            method: AuthMethod::AccessKey,
            key_id: Some(uuid::Uuid::from_u128(
                0x0190_0000_0000_7000_8000_0000_0000_002a,
            )),
            token: None,
            scope: None,
            rate_limit: None,
            values: Arc::new(crate::auth::IdentityValues::of(
                "alice",
                "corp",
                &["a".to_owned(), "b".to_owned()],
            )),
        };
        set_identity_headers(&mut h, &identity);
        assert_eq!(h["x-auth-user"], "alice");
        assert_eq!(h["x-auth-provider"], "corp");
        assert_eq!(h["x-auth-roles"], "a,b");
        assert_eq!(h["x-auth-method"], "accesskey");
        assert_eq!(h["x-auth-key-id"], "01900000-0000-7000-8000-00000000002a");

        let mut h = HeaderMap::new();
        let no_roles = Identity {
            principal: crate::auth::Principal::External {
                provider: Arc::from("idp.example"),
                subject: Arc::from("bob"),
            },
            roles: Arc::from(Vec::<String>::new()),
            method: AuthMethod::Jwt,
            key_id: None,
            values: Arc::new(crate::auth::IdentityValues::of("bob", "idp.example", &[])),
            ..identity
        };
        set_identity_headers(&mut h, &no_roles);
        assert_eq!(h["x-auth-roles"], "");
        assert_eq!(h["x-auth-user"], "bob");
        assert_eq!(h["x-auth-provider"], "idp.example");
        assert_eq!(h["x-auth-method"], "jwt");
        assert!(h.get("x-auth-key-id").is_none());
    }

    #[test]
    fn answers_to_credentialed_requests_are_private_and_vary() {
        let marked = |pairs: &[(&str, &str)]| {
            let mut h = headers(pairs);
            mark_private(&mut h);
            (
                h.get_all("vary")
                    .iter()
                    .map(|v| v.to_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
                    .join(" | "),
                h.get_all("cache-control")
                    .iter()
                    .map(|v| v.to_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
                    .join(" | "),
            )
        };
        let pair = |vary: &str, cc: &str| (vary.to_owned(), cc.to_owned());
        let both = "Authorization, Cookie";
        assert_eq!(marked(&[]), pair(both, "private"));
        assert_eq!(
            marked(&[("cache-control", "max-age=60")]),
            pair(both, "max-age=60, private")
        );
        assert_eq!(
            marked(&[
                ("cache-control", "max-age=60"),
                ("cache-control", "must-revalidate")
            ]),
            pair(both, "max-age=60, must-revalidate, private")
        );
        for decided in [
            "public, max-age=60",
            "s-maxage=10",
            "S-MaxAge = 10",
            "private",
            "no-store",
            "max-age=0, Private",
        ] {
            assert_eq!(
                marked(&[("cache-control", decided)]),
                pair(both, decided),
                "{decided}"
            );
        }
        // A qualified private lets shared caches keep the rest.
        assert_eq!(
            marked(&[("cache-control", "private=\"Set-Cookie\", max-age=5")]),
            pair(both, "private=\"Set-Cookie\", max-age=5, private")
        );
        assert_eq!(
            marked(&[("vary", "Accept-Encoding"), ("vary", "origin, cookie")]),
            pair("Accept-Encoding, origin, cookie, Authorization", "private")
        );
        assert_eq!(
            marked(&[("vary", "*"), ("cache-control", "no-store")]),
            pair("*", "no-store")
        );
        assert_eq!(
            marked(&[("vary", "AUTHORIZATION,Cookie")]),
            pair("AUTHORIZATION, Cookie", "private")
        );
    }

    #[test]
    fn forwarded_headers() {
        let mut h = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "evil"),
        ]);
        set_forwarded(
            &mut h,
            &HeaderValue::from_static("127.0.0.1"),
            "https",
            Some(HeaderValue::from_static("api.example.com")),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");

        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &HeaderValue::from_static("::1"), "http", None);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert!(h.get("x-forwarded-host").is_none());
    }

    #[test]
    fn requested_authority_prefers_the_target_and_refuses_bad_hosts() {
        let origin: http::Uri = "/admin".parse().unwrap();
        let absolute: http::Uri = "http://evil.example:81/admin".parse().unwrap();
        let with_user: http::Uri = "http://user:pw@evil.example/admin".parse().unwrap();
        let host = headers(&[("host", "api.example.com:8080")]);
        assert_eq!(
            requested_authority(&origin, &host).unwrap().unwrap(),
            "api.example.com:8080"
        );
        // A target naming another host than `Host`: refused, not chosen.
        assert_eq!(requested_authority(&absolute, &host), Err(InvalidHost));
        let same = headers(&[("host", "EVIL.example.")]);
        assert_eq!(
            requested_authority(&absolute, &same).unwrap().unwrap(),
            "evil.example:81"
        );
        // Canonical: lowercase, no trailing dot, the port kept.
        for (given, canonical) in [
            ("API.Example.COM:8080", "api.example.com:8080"),
            ("api.example.com.", "api.example.com"),
            ("[::1]:443", "[::1]:443"),
            ("[::1]", "[::1]"),
        ] {
            assert_eq!(
                requested_authority(&origin, &headers(&[("host", given)]))
                    .unwrap()
                    .unwrap(),
                canonical
            );
        }
        assert_eq!(
            requested_authority(&with_user, &HeaderMap::new())
                .unwrap()
                .unwrap(),
            "evil.example"
        );
        assert_eq!(requested_authority(&origin, &HeaderMap::new()), Ok(None));
        assert_eq!(
            requested_authority(&origin, &headers(&[("host", "")])),
            Ok(None)
        );
        let twice = headers(&[("host", "a"), ("host", "b")]);
        assert_eq!(requested_authority(&origin, &twice), Err(InvalidHost));
        assert_eq!(requested_authority(&absolute, &twice), Err(InvalidHost));
        for bad in [
            "a b",
            "evil/x",
            "user@evil",
            "evil?x",
            "[::1",
            "a..b",
            "a%2eb",
            ".",
            "a:b",
        ] {
            assert_eq!(
                requested_authority(&origin, &headers(&[("host", bad)])),
                Err(InvalidHost),
                "{bad}"
            );
        }
        for good in ["localhost", "127.0.0.1:8080", "[::1]:443", "a.b-c.example"] {
            assert!(
                requested_authority(&origin, &headers(&[("host", good)])).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn the_canonical_host_shortcut_agrees_with_the_full_checks() {
        // Every string of up to 4 bytes over an alphabet of the bytes that
        // matter, and some longer ones: whatever the shortcut keeps, the
        // full checks keep unchanged too.
        let alphabet = b"aZ0-_.:[]@%1 ";
        let mut cases: Vec<Vec<u8>> = vec![vec![]];
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = cases
                .iter()
                .filter(|case| case.len() == cases.last().map_or(0, Vec::len))
                .flat_map(|case| {
                    alphabet.iter().map(move |&b| {
                        let mut next = case.clone();
                        next.push(b);
                        next
                    })
                })
                .collect();
            cases.extend(longer);
        }
        for extra in [
            "api.example.com",
            "api.example.com:8080",
            "api.example.com:123456",
            "api.example.com.",
            "api..example.com",
            ".api.example.com",
            "a_b-c.example:1",
            "127.0.0.1:65535",
            "127.0.0.1:",
            "127.0.0.1:80:80",
            "Api.example.com",
        ] {
            cases.push(extra.as_bytes().to_vec());
        }
        let origin: http::Uri = "/x".parse().unwrap();
        let mut kept = 0;
        for case in &cases {
            let Ok(value) = HeaderValue::from_bytes(case) else {
                continue;
            };
            if already_canonical(case) {
                kept += 1;
                assert_eq!(
                    checked_authority(&origin, Some(&value)),
                    Ok(Some(value.clone())),
                    "{value:?}"
                );
            }
            // Whichever way, the answer is the full checks' one.
            let mut map = HeaderMap::new();
            map.insert(header::HOST, value.clone());
            assert_eq!(
                requested_authority(&origin, &map),
                checked_authority(&origin, Some(&value)),
                "{value:?}"
            );
        }
        assert!(kept > 1000, "{kept}");
        for slow in ["Api.example.com", "api.example.com.", "[::1]:80", "a:", ""] {
            assert!(!already_canonical(slow.as_bytes()), "{slow}");
        }
    }
}
