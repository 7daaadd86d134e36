//! Forward authentication, `/_authgate/verify[/PATH]`: reads the request
//! that a proxy in front holds (nginx `auth_request`, Traefik
//! `forwardAuth`, Caddy `forward_auth`, Envoy `ext_authz`) out of the
//! verify request, has it judged like a proxied one ([`crate::request::judge`]) and
//! answers 200 with the identity as response headers, or the error.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response};

use crate::auth::Identity;
use crate::body::{self, Body};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::proxy::headers;
use crate::request::context::RequestContext;
use crate::request::judge::{Ending, JudgedRequest, judge};
use crate::routes::CheckedPath;

/// The endpoint's path; whatever follows it is the judged path (Envoy's
/// `path_prefix` form).
pub const VERIFY_PATH: &str = "/_authgate/verify";

/// Traefik's and Caddy's name for the judged method.
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
/// nginx guides' name for the judged method.
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
/// Traefik's and Caddy's name for the judged path and query.
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
/// nginx guides' name for the judged path and query (`$request_uri`).
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// What follows [`VERIFY_PATH`] when `path` is the verify endpoint's:
/// `""` or `/...`; `None` for every other path (`/_authgate/verifyx` too).
pub fn verify_suffix(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(VERIFY_PATH)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Judges the request a verify request describes and answers with the
/// decision. `suffix` is what follows [`VERIFY_PATH`] in its own path.
pub async fn answer<B>(
    gateway: &Gateway,
    request: &Request<B>,
    suffix: &str,
    ctx: &mut RequestContext,
) -> Result<Response<Body>, GatewayError> {
    let own = request.headers();
    let method = judged_method(own, request.method())?;
    let (path, query) = judged_target(own, suffix, request.uri().query())?;
    let host = judged_host(own)?;
    let scheme = single(own, &headers::X_FORWARDED_PROTO).map_err(|_| {
        GatewayError::InvalidArgument("X-Forwarded-Proto is repeated or not plain text")
    })?;
    let judged = JudgedRequest {
        method: &method,
        path,
        query,
        headers: own,
        client_ip: ctx.client_ip(),
        host: host.as_deref(),
        scheme,
        ending: Ending::Answer,
    };
    let permit = judge(gateway, &judged, ctx).await?;
    Ok(decision(permit.identity()))
}

/// The judged host, canonical, as routes match it: `X-Forwarded-Host`
/// (every shipped guide sets it), else the verify request's own `Host`
/// (Envoy's `ext_authz` keeps the original authority). Repeated, a list,
/// or not a host: 400 `INVALID_HOST`, never a guess at one of them, as a
/// proxied request's `Host` would be refused.
pub fn judged_host(headers: &HeaderMap) -> Result<Option<std::borrow::Cow<'_, str>>, GatewayError> {
    let forwarded =
        single(headers, &headers::X_FORWARDED_HOST).map_err(|_| GatewayError::InvalidHost)?;
    let named = match forwarded {
        Some(value) => Some(value),
        None => single(headers, &header::HOST).map_err(|_| GatewayError::InvalidHost)?,
    };
    match named.filter(|value| !value.is_empty()) {
        None => Ok(None),
        Some(value) => crate::routes::canonical_host(value)
            .map(Some)
            .ok_or(GatewayError::InvalidHost),
    }
}

/// The answer to a request that may pass: 200, empty, with the identity
/// headers (none on a public route). Built afresh, so nothing the verify
/// request carried (its own `X-Auth-*` headers) is echoed.
pub fn decision(identity: Option<&Identity>) -> Response<Body> {
    let mut response = Response::new(body::empty());
    let out = response.headers_mut();
    if let Some(identity) = identity {
        headers::set_identity_headers(out, identity);
    }
    // A decision holds for this request only; revocation must reach the
    // next one, so no cache in between may keep it.
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The judged method: `X-Forwarded-Method`, else `X-Original-Method`, else
/// the verify request's own. A repeated header or one that is not a method
/// token is refused (400), never guessed at; both headers with different
/// values are a conflict (400 `CONFLICTING_FORWARDED_HEADERS`): a proxy
/// sets one of them and may pass the other on from its client.
pub fn judged_method(headers: &HeaderMap, own: &Method) -> Result<Method, GatewayError> {
    let refused = || GatewayError::InvalidArgument("the forwarded method is not an HTTP method");
    let forwarded = single(headers, &X_FORWARDED_METHOD).map_err(|_| refused())?;
    let original = single(headers, &X_ORIGINAL_METHOD).map_err(|_| refused())?;
    match agreed(forwarded, original)? {
        None => Ok(own.clone()),
        Some(name) => Method::from_bytes(name.as_bytes()).map_err(|_| refused()),
    }
}

/// The judged path, checked by the path policy, and query:
/// `X-Forwarded-Uri`, else `X-Original-URI` (then the verify request's own
/// query is ignored: Caddy repeats the original query there), else
/// `suffix` with the verify request's own query (an empty suffix judges
/// `/`). Sources that are present must agree byte for byte (both headers,
/// and a header with a non-empty `suffix` and its query), else 400
/// `CONFLICTING_FORWARDED_HEADERS`: whichever source the front proxy
/// sets, a client-sent other one must not change what is judged.
pub fn judged_target<'a>(
    headers: &'a HeaderMap,
    suffix: &'a str,
    own_query: Option<&'a str>,
) -> Result<(CheckedPath<'a>, Option<&'a str>), GatewayError> {
    let forwarded = single(headers, &X_FORWARDED_URI).map_err(|_| GatewayError::InvalidPath)?;
    let original = single(headers, &X_ORIGINAL_URI).map_err(|_| GatewayError::InvalidPath)?;
    let named = agreed(forwarded, original)?;
    if let Some(target) = named
        && !suffix.is_empty()
        && !same_target(target, suffix, own_query)
    {
        return Err(GatewayError::ConflictingForwardedHeaders);
    }
    let (path, query) = match named {
        Some(target) => origin_form(target)?,
        None if suffix.is_empty() => ("/", own_query),
        None => (suffix, own_query),
    };
    let path = CheckedPath::new(path).map_err(|_| GatewayError::InvalidPath)?;
    Ok((path, query))
}

/// The one value two optional sources give; both present and different is
/// a conflict.
fn agreed<'h>(
    first: Option<&'h str>,
    second: Option<&'h str>,
) -> Result<Option<&'h str>, GatewayError> {
    match (first, second) {
        (Some(a), Some(b)) if a != b => Err(GatewayError::ConflictingForwardedHeaders),
        (a, b) => Ok(a.or(b)),
    }
}

/// Whether the request target `target` is `path` with `query`, byte for
/// byte (`/a?` has an empty query, `/a` none).
fn same_target(target: &str, path: &str, query: Option<&str>) -> bool {
    match target.split_once('?') {
        Some((target_path, target_query)) => target_path == path && query == Some(target_query),
        None => target == path && query.is_none(),
    }
}

/// A request target in origin form (RFC 9112 section 3.2.1), split into
/// path and query: it starts with `/`, is visible ASCII only (no space, no
/// control character), has no fragment and parses as a path and query the
/// way the gateway's own request targets do. Anything else (absolute form,
/// `*`, an empty value) is not a path the proxy in front could forward.
fn origin_form(target: &str) -> Result<(&str, Option<&str>), GatewayError> {
    let plain = target.starts_with('/')
        && !target.starts_with("//")
        && target.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
    if !plain {
        return Err(GatewayError::InvalidPath);
    }
    let parsed: PathAndQuery = target.parse().map_err(|_| GatewayError::InvalidPath)?;
    if parsed.as_str() != target {
        return Err(GatewayError::InvalidPath);
    }
    Ok(match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    })
}

/// The one value of header `name`, `None` when absent; `Err` when it is
/// repeated or not visible ASCII (a proxy in front sends it once).
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, ()> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    first.to_str().map(Some).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                // What hyper lets through: obs-text too, but no control
                // characters but tab.
                HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(value.as_bytes()))
                    .unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_endpoint_and_its_suffix() {
        assert_eq!(verify_suffix("/_authgate/verify"), Some(""));
        assert_eq!(verify_suffix("/_authgate/verify/"), Some("/"));
        assert_eq!(verify_suffix("/_authgate/verify/api/x"), Some("/api/x"));
        assert_eq!(verify_suffix("/_authgate/verifyx"), None);
        assert_eq!(verify_suffix("/_authgate/"), None);
        assert_eq!(verify_suffix("/api/_authgate/verify"), None);
    }

    #[test]
    fn method_sources_in_order() {
        let own = Method::GET;
        assert_eq!(judged_method(&headers(&[]), &own).unwrap(), Method::GET);
        let both = headers(&[
            ("x-forwarded-method", "DELETE"),
            ("x-original-method", "DELETE"),
        ]);
        assert_eq!(judged_method(&both, &own).unwrap(), Method::DELETE);
        let original = headers(&[("x-original-method", "PUT")]);
        assert_eq!(judged_method(&original, &own).unwrap(), Method::PUT);
        for bad in [
            headers(&[("x-forwarded-method", "GET POST")]),
            headers(&[("x-forwarded-method", "")]),
            headers(&[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-method", "POST"),
            ]),
            headers(&[("x-original-method", "G(T")]),
        ] {
            assert_eq!(
                judged_method(&bad, &own).unwrap_err().reason(),
                "INVALID_FIELD",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn target_sources_in_order() {
        let judged = |pairs: &[(&str, &str)], suffix: &str, query: Option<&str>| {
            let map = headers(pairs);
            judged_target(&map, suffix, query)
                .map(|(path, query)| (path.as_str().to_owned(), query.map(str::to_owned)))
        };
        let ok = |path: &str, query: Option<&str>| Ok((path.to_owned(), query.map(str::to_owned)));
        // Header forms win, and the verify request's own query is ignored.
        assert_eq!(
            judged(
                &[
                    ("x-forwarded-uri", "/api/x?a=1"),
                    ("x-original-uri", "/api/x?a=1")
                ],
                "",
                Some("token=own")
            ),
            ok("/api/x", Some("a=1"))
        );
        // A header that repeats the suffix form exactly agrees with it.
        assert_eq!(
            judged(&[("x-original-uri", "/api/x?a=1")], "/api/x", Some("a=1")),
            ok("/api/x", Some("a=1"))
        );
        assert_eq!(
            judged(&[("x-original-uri", "/api")], "", Some("token=own")),
            ok("/api", None)
        );
        // Envoy's path_prefix form: the suffix and the own query.
        assert_eq!(
            judged(&[], "/api/y", Some("b=2")),
            ok("/api/y", Some("b=2"))
        );
        assert_eq!(judged(&[], "", None), ok("/", None));
        assert_eq!(
            judged(&[("x-forwarded-uri", "/?")], "", None),
            ok("/", Some(""))
        );
    }

    #[test]
    fn sources_that_disagree_are_a_conflict() {
        let conflict = Err(GatewayError::ConflictingForwardedHeaders);
        for (pairs, suffix, query) in [
            // nginx sets X-Original-URI; the client adds X-Forwarded-Uri.
            (
                &[
                    ("x-forwarded-uri", "/public/x"),
                    ("x-original-uri", "/admin/stats"),
                ][..],
                "",
                None,
            ),
            (
                &[("x-forwarded-uri", "/a?x=1"), ("x-original-uri", "/a?x=2")][..],
                "",
                None,
            ),
            (
                &[("x-forwarded-uri", "/a"), ("x-original-uri", "/a?")][..],
                "",
                None,
            ),
            (
                &[("x-forwarded-uri", "/A"), ("x-original-uri", "/a")][..],
                "",
                None,
            ),
            // The path-prefix form (ingress-nginx, Envoy) and a header.
            (&[("x-forwarded-uri", "/public/x")][..], "/admin", None),
            (&[("x-original-uri", "/public/x")][..], "/admin", None),
            (&[("x-forwarded-uri", "/admin")][..], "/admin", Some("a=1")),
            (
                &[("x-forwarded-uri", "/admin?a=2")][..],
                "/admin",
                Some("a=1"),
            ),
            (&[("x-forwarded-uri", "/admin?a=1")][..], "/admin", None),
            (&[("x-forwarded-uri", "/")][..], "/admin", None),
        ] {
            let map = headers(pairs);
            let got = judged_target(&map, suffix, query).map(|(path, q)| (path.as_str(), q));
            assert_eq!(got.map(|_| ()), conflict, "{pairs:?} {suffix} {query:?}");
        }
        for pairs in [
            &[
                ("x-forwarded-method", "GET"),
                ("x-original-method", "DELETE"),
            ][..],
            &[("x-forwarded-method", "get"), ("x-original-method", "GET")][..],
        ] {
            assert_eq!(
                judged_method(&headers(pairs), &Method::GET),
                conflict.clone().map(|()| Method::GET),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn targets_that_are_not_checked_paths_are_refused() {
        for bad in [
            "",
            "*",
            "api",
            "http://evil.example/api",
            "//evil.example/api",
            "/api#frag",
            "/api/x?a=1#frag",
            "/api x",
            "/api\tx",
            "/api/%01",
            "/api/%2e%2e/admin",
            "/api/../admin",
            "/api/..;/admin",
            "/api//admin",
            "/api\\admin",
            "/caf\u{e9}",
        ] {
            let map = headers(&[("x-forwarded-uri", bad)]);
            assert_eq!(
                judged_target(&map, "", None).unwrap_err(),
                GatewayError::InvalidPath,
                "{bad:?}"
            );
        }
        let twice = headers(&[("x-forwarded-uri", "/a"), ("x-forwarded-uri", "/b")]);
        assert_eq!(
            judged_target(&twice, "", None).unwrap_err(),
            GatewayError::InvalidPath
        );
        // The Envoy form goes through the same path policy.
        assert_eq!(
            judged_target(&headers(&[]), "/a/%2e%2e/b", None).unwrap_err(),
            GatewayError::InvalidPath
        );
    }

    #[test]
    fn decisions_carry_only_the_identity() {
        let public = decision(None);
        assert_eq!(public.status(), http::StatusCode::OK);
        assert!(!public.headers().contains_key(&headers::X_AUTH_USER));
        let identity = Identity {
            principal: crate::auth::Principal::Store(crate::auth::StoreUser::for_tests(
                "alice", "local",
            )),
            roles: vec!["dev".to_owned(), "ops".to_owned()].into(),
            method: crate::auth::AuthMethod::AccessKey,
            key_id: Some(uuid::Uuid::nil()),
            token: None,
            scope: None,
            rate_limit: None,
            values: std::sync::Arc::new(crate::auth::IdentityValues::of(
                "alice",
                "local",
                &["dev".to_owned(), "ops".to_owned()],
            )),
        };
        let allowed = decision(Some(&identity));
        let h = allowed.headers();
        assert_eq!(h[&headers::X_AUTH_USER], "alice");
        assert_eq!(h[&headers::X_AUTH_PROVIDER], "local");
        assert_eq!(h[&headers::X_AUTH_ROLES], "dev,ops");
        assert_eq!(h[&headers::X_AUTH_METHOD], "accesskey");
        assert_eq!(
            h[&headers::X_AUTH_KEY_ID],
            "00000000-0000-0000-0000-000000000000"
        );
    }
}
