//! Where a browser is sent around an OIDC sign-in, as pure functions: the
//! return path after sign-in (this gateway's own paths only, never an
//! open redirect), whether a request comes from a browser that wants HTML,
//! and the sign-in address a route with `login` sends such a browser to.

use http::HeaderMap;
use http::header::ACCEPT;
use http::uri::PathAndQuery;

/// Where a browser lands when `rd` is missing or refused.
pub const DEFAULT_RETURN: &str = "/";

/// The path to send the browser to after sign-in: `rd` when it is a path
/// on this gateway, else `/`.
///
/// Refused, because some browser would leave the site: anything not
/// starting with exactly one `/` (`//evil.com` and `https://evil.com`), a
/// backslash anywhere (browsers read `/\evil.com` as `//evil.com`), control
/// characters and spaces (browsers drop tabs and newlines, so `/\t/evil.com`
/// is `//evil.com`), non-ASCII, and a value whose percent-decoding, with
/// the tabs and newlines a browser drops taken out, starts with `//` or
/// `/\` (in case some hop decodes it once more). Encoded bytes further on
/// (`?b=two%20words`) are the path's and query's own and are kept: only
/// the start decides where a browser goes.
pub fn safe_return_path(rd: Option<&str>) -> String {
    match rd {
        Some(rd) if is_local_path(rd) => rd.to_owned(),
        _ => DEFAULT_RETURN.to_owned(),
    }
}

fn is_local_path(rd: &str) -> bool {
    let starts_local =
        |text: &[u8]| text.first() == Some(&b'/') && !matches!(text.get(1), Some(b'/' | b'\\'));
    if rd.len() > 2048
        || !starts_local(rd.as_bytes())
        || rd.bytes().any(|b| b == b'\\' || !(0x21..0x7f).contains(&b))
    {
        return false;
    }
    // What a URL parser would see after one more decoding: tab, CR and LF
    // removed anywhere (WHATWG URL), so `/%09/evil.com` is `//evil.com`.
    let decoded: Vec<u8> = percent_encoding::percent_decode(rd.as_bytes())
        .filter(|b| !matches!(b, b'\t' | b'\n' | b'\r'))
        .collect();
    if !starts_local(&decoded) {
        return false;
    }
    rd.parse::<PathAndQuery>().is_ok()
}

/// Whether an `Accept` header names `text/html` (browsers' navigations do;
/// API clients and `fetch` normally do not).
pub fn accepts_html(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',').any(|range| {
                range
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("text/html")
            })
        })
    })
}

/// `/auth/oidc/<provider>/login?rd=<path and query>`, `rd` URL-encoded.
pub fn login_location(provider: &str, path_and_query: &str) -> String {
    let rd: String = form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
    format!("/auth/oidc/{provider}/login?rd={rd}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_on_this_gateway_are_returned_to() {
        for good in [
            "/",
            "/app",
            "/app/x?y=1&z=%2F",
            "/_authgate/",
            "/a//b",
            "/%2e%2e/x",
            "/app?b=two%20words",
            "/app/a%20b?q=%20x%20&r=%0A",
            "/a%5Cb",
        ] {
            assert_eq!(safe_return_path(Some(good)), good, "{good}");
        }
        for bad in [
            "",
            "//evil.com",
            "///evil.com",
            "https://evil.com",
            "http:/evil.com",
            "javascript:alert(1)",
            "/\\evil.com",
            "\\\\evil.com",
            "/a\\b",
            "/%2Fevil.com",
            "/%2fevil.com",
            "/%5Cevil.com",
            "/%5cevil.com",
            "%2F%2Fevil.com",
            "/\t/evil.com",
            "/\n/evil.com",
            "/%09/evil.com",
            "/%0A%2Fevil.com",
            "/%0d%5cevil.com",
            "/ /evil.com",
            "/é",
            "evil.com",
            "./x",
        ] {
            assert_eq!(safe_return_path(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_return_path(None), "/");
        assert_eq!(
            safe_return_path(Some(&format!("/{}", "a".repeat(3000)))),
            "/"
        );
    }

    #[test]
    fn browsers_are_told_apart_by_accept() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, value.parse().unwrap());
            accepts_html(&headers)
        };
        assert!(with(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(with("Text/HTML"));
        assert!(with("application/json, text/html;q=0.1"));
        assert!(!with("application/json"));
        assert!(!with("*/*"));
        assert!(!with("text/htmlx"));
        assert!(!accepts_html(&HeaderMap::new()));
    }

    #[test]
    fn the_login_location_carries_the_original_target() {
        assert_eq!(
            login_location("corp", "/app/x?y=1&z=2"),
            "/auth/oidc/corp/login?rd=%2Fapp%2Fx%3Fy%3D1%26z%3D2"
        );
    }
}
