//! Access-key scopes (pure): what a key narrowed at creation may do, the
//! rules its fields are checked against, and whether a request's method
//! and path lie inside it.
//!
//! A scope is an allow-list, so a path is inside only when every reading an
//! upstream could make of it is (byte for byte, without `;parameters`,
//! without trailing `.`, `~` or `%20`; see [`crate::routes::other_readings`]).
//! Prefixes match on segment boundaries and byte for byte: `/API/x` is
//! outside a key limited to `/api/`, since a case-sensitive upstream may
//! serve something else there.

use crate::routes::{
    check_path, other_readings, prefix_matches, prefix_reads_one_way, valid_prefix,
};

/// Most methods a key may list.
pub const MAX_METHODS: usize = 16;
/// Most path prefixes a key may list.
pub const MAX_PATH_PREFIXES: usize = 32;
/// Longest method name accepted.
const MAX_METHOD_LEN: usize = 32;
/// Longest path prefix accepted.
const MAX_PREFIX_LEN: usize = 256;

/// What a key was narrowed to when it was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyScope {
    /// The key's roles; `None`: the key follows its owner's roles.
    pub roles: Option<Vec<String>>,
    /// Methods allowed; empty: all.
    pub methods: Vec<String>,
    /// Path prefixes allowed; empty: all.
    pub path_prefixes: Vec<String>,
}

/// A key's own budget, fixed when the key is made (like its scope): a
/// GCRA bucket of `burst` requests refilled at `rate` per second, drawn
/// from the configured `[ratelimit]` store. Built only through
/// `auth::accesskey::check_rate_limit` or read back from the store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyRateLimit {
    /// Sustained requests per second (finite, above 0).
    pub rate: f64,
    /// Bucket size, at least 1.
    pub burst: u32,
}

// `rate` is never NaN (checked at creation), so equality is total.
impl Eq for KeyRateLimit {}

impl KeyScope {
    /// Whether the key may be used for any method and path.
    pub fn any_request(&self) -> bool {
        self.methods.is_empty() && self.path_prefixes.is_empty()
    }

    /// Whether `method` and every reading of `path` lie inside the scope.
    pub fn allows(&self, method: &str, path: &str) -> bool {
        self.allows_method(method) && self.allows_path(path)
    }

    /// Whether `method` lies inside the scope's methods.
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }

    /// Whether every other reading of the method ([`other_method_readings`])
    /// lies inside the scope's methods too.
    pub fn allows_method_readings(&self, readings: &[String]) -> bool {
        self.methods.is_empty() || readings.iter().all(|m| self.allows_method(m))
    }

    fn allows_path(&self, path: &str) -> bool {
        if self.path_prefixes.is_empty() {
            return true;
        }
        let covered = |reading: &str| {
            self.path_prefixes
                .iter()
                .any(|prefix| prefix_matches(prefix, reading))
        };
        covered(path) && other_readings(path).iter().all(|reading| covered(reading))
    }

    /// The roles a request with this key carries: the key's own roles that
    /// its owner still holds, or the owner's when the key lists none.
    pub fn effective_roles(&self, owner_roles: &[String]) -> Vec<String> {
        match &self.roles {
            None => owner_roles.to_vec(),
            Some(roles) => roles
                .iter()
                .filter(|role| owner_roles.contains(role))
                .cloned()
                .collect(),
        }
    }
}

/// Whether a method name is one a key may list: 1 to 32 of `A-Z`, `-`
/// and `_`, upper case (methods are case-sensitive; `get` is not `GET`).
pub fn valid_method(method: &str) -> bool {
    (1..=MAX_METHOD_LEN).contains(&method.len())
        && method
            .bytes()
            .all(|b| b.is_ascii_uppercase() || matches!(b, b'-' | b'_'))
}

/// The query parameter that method-override middleware reads as the
/// request's method (Express's `method-override('_method')`, Rails and
/// Laravel forms).
pub const METHOD_PARAM: &str = "_method";

/// Headers that method-override middleware reads as the request's method.
/// The gateway removes them before forwarding; a proxy in front
/// (forward authentication) may pass them on.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Every other method an upstream could read a request as, upper-cased as
/// method-override middleware does: each value of the `_method` query
/// parameter (its name percent-decoded), and each comma-separated item of
/// the method-override headers in `headers` (pass them only where they
/// reach the upstream). Empty readings are none.
pub fn other_method_readings(
    query: Option<&str>,
    headers: Option<&http::HeaderMap>,
) -> Vec<String> {
    let mut readings: Vec<String> = Vec::new();
    let mut add = |reading: &str| {
        let reading = reading.trim();
        if !reading.is_empty() {
            readings.push(reading.to_ascii_uppercase());
        }
    };
    if let Some(query) = query {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if name.trim() == METHOD_PARAM {
                add(&value);
            }
        }
    }
    for value in headers.into_iter().flat_map(|headers| {
        METHOD_OVERRIDE_HEADERS
            .iter()
            .flat_map(move |name| headers.get_all(*name).iter())
    }) {
        // Bytes that are not UTF-8 become U+FFFD: a reading no scope lists.
        let text = String::from_utf8_lossy(value.as_bytes());
        text.split(',').for_each(&mut add);
    }
    readings
}

/// Most roles a key may list.
pub const MAX_ROLES: usize = 64;

/// Why a scope given to `key create` or `POST /v1.0/accesskeys` is refused,
/// if it is (whether the owner holds the roles is the store's check).
pub fn check_fields(scope: &KeyScope) -> Result<(), &'static str> {
    if let Some(roles) = &scope.roles {
        if roles.len() > MAX_ROLES {
            return Err("a key may list at most 64 roles");
        }
        if !roles.iter().all(|role| crate::names::valid_role(role)) {
            return Err("roles must be 1 to 64 of A-Z a-z 0-9 . _ : -");
        }
    }
    if scope.methods.len() > MAX_METHODS {
        return Err("a key may list at most 16 methods");
    }
    if !scope.methods.iter().all(|method| valid_method(method)) {
        return Err("methods must be upper-case method names such as GET or POST");
    }
    if scope.path_prefixes.len() > MAX_PATH_PREFIXES {
        return Err("a key may list at most 32 path prefixes");
    }
    match scope.path_prefixes.iter().find_map(|p| prefix_problem(p)) {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

/// Why a path prefix cannot be part of a key's scope, if it cannot: the
/// rules of route prefixes (one spelling only, no segment that servers
/// would trim), since the same readings apply.
pub fn prefix_problem(prefix: &str) -> Option<&'static str> {
    if !prefix.starts_with('/') || prefix.len() > MAX_PREFIX_LEN {
        return Some("each path prefix must start with '/' and be at most 256 characters");
    }
    if check_path(prefix).is_err() {
        return Some(
            "each path prefix must be a normal path (no dot segments, empty segments or encoded separators)",
        );
    }
    if !valid_prefix(prefix) {
        return Some("path prefixes may contain only A-Z a-z 0-9 - . _ ~ and /");
    }
    if !prefix_reads_one_way(prefix) {
        return Some("no segment of a path prefix may end in '.' or '~'");
    }
    None
}

#[cfg(test)]
mod method_reading_tests {
    use super::*;

    #[test]
    fn the_method_override_readings() {
        assert!(other_method_readings(None, None).is_empty());
        assert!(other_method_readings(Some("a=1&b=2"), None).is_empty());
        assert_eq!(
            other_method_readings(Some("a=1&_method=delete"), None),
            vec!["DELETE"]
        );
        assert_eq!(
            other_method_readings(Some("%5Fmethod=PUT&_method=patch&_method="), None),
            vec!["PUT", "PATCH"]
        );
        assert!(other_method_readings(Some("x_method=PUT&_methods=PUT"), None).is_empty());
        let mut headers = http::HeaderMap::new();
        headers.append("x-http-method-override", "delete, put".parse().unwrap());
        headers.append("x-method-override", "PATCH".parse().unwrap());
        headers.append("x-http-method", "MOVE".parse().unwrap());
        let mut all = other_method_readings(Some("_method=TRACE"), Some(&headers));
        all.sort();
        assert_eq!(all, vec!["DELETE", "MOVE", "PATCH", "PUT", "TRACE"]);
        assert!(other_method_readings(None, Some(&http::HeaderMap::new())).is_empty());
    }

    #[test]
    fn a_key_scoped_by_method_must_allow_every_reading() {
        let scope = KeyScope {
            methods: vec!["GET".into(), "POST".into()],
            ..KeyScope::default()
        };
        assert!(scope.allows_method_readings(&[]));
        assert!(scope.allows_method_readings(&["POST".into()]));
        assert!(!scope.allows_method_readings(&["DELETE".into()]));
        assert!(!scope.allows_method_readings(&["GET".into(), "PUT".into()]));
        assert!(KeyScope::default().allows_method_readings(&["DELETE".into()]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(methods: &[&str], prefixes: &[&str]) -> KeyScope {
        KeyScope {
            roles: None,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn methods_and_prefixes() {
        let any = scope(&[], &[]);
        assert!(any.any_request());
        assert!(any.allows("DELETE", "/admin"));
        let read = scope(&["GET", "HEAD"], &[]);
        assert!(read.allows("GET", "/x"));
        assert!(!read.allows("POST", "/x"));
        assert!(!read.allows("get", "/x"));
        let public = scope(&[], &["/public/", "/api"]);
        for inside in [
            "/public/",
            "/public/a",
            "/api",
            "/api/",
            "/api/v1;x=1",
            "/public/a.",
        ] {
            assert!(public.allows("GET", inside), "{inside}");
        }
        for outside in [
            "/",
            "/public",
            "/apix",
            "/admin",
            "/API/x",
            "/Public/a",
            "/api;x/",
            "/API;x/",
            "/public;x/",
            "/api./",
            "/api~",
            "/api%20/x",
            "/admin;/public/",
        ] {
            assert!(!public.allows("GET", outside), "{outside}");
        }
    }

    #[test]
    fn roles_follow_the_owner_or_narrow_it() {
        let owner = vec!["admin".to_owned(), "ops".to_owned()];
        let follows = KeyScope::default();
        assert_eq!(follows.effective_roles(&owner), owner);
        let narrowed = KeyScope {
            roles: Some(vec!["ops".into(), "gone".into()]),
            ..KeyScope::default()
        };
        // A role the owner lost since is not carried.
        assert_eq!(narrowed.effective_roles(&owner), vec!["ops".to_owned()]);
        let none = KeyScope {
            roles: Some(vec![]),
            ..KeyScope::default()
        };
        assert!(none.effective_roles(&owner).is_empty());
    }

    #[test]
    fn field_rules() {
        for good in ["GET", "M-SEARCH", "PROPFIND"] {
            assert!(valid_method(good), "{good}");
        }
        for bad in ["", "get", "GET ", "G,T", "GÉT", &"A".repeat(33)] {
            assert!(!valid_method(bad), "{bad}");
        }
        for good in ["/", "/api", "/api/", "/a-b_c.d/e"] {
            assert_eq!(prefix_problem(good), None, "{good}");
        }
        for bad in [
            "api", "/a//b", "/a/../b", "/a;b", "/a%2fb", "/api.", "/a~/b", "/a b",
        ] {
            assert!(prefix_problem(bad).is_some(), "{bad}");
        }
    }
}
