//! Route table and path policy (pure).
//!
//! Routing and forwarding must see the same path, so paths that could be
//! read two ways (dot segments, encoded separators, backslashes, empty
//! segments) are refused instead of normalised: the path that was routed is
//! byte-for-byte the path that is forwarded.

use std::time::Duration;

use http::Uri;

/// Whether a route needs a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAuth {
    /// A valid credential is required (and roles, if listed).
    Required,
    /// Forwarded without credentials and without identity headers.
    Public,
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path prefix, matched on segment boundaries.
    pub prefix: String,
    /// The prefix, shared, as the route's label in metrics.
    pub label: std::sync::Arc<str>,
    /// Base URL of the upstream.
    pub upstream: Uri,
    /// Credential policy.
    pub auth: RouteAuth,
    /// When non-empty, the caller needs at least one of these.
    pub roles: Vec<String>,
    /// Time allowed until the upstream's response head.
    pub timeout: Duration,
}

impl Route {
    /// Whether `path` falls under this route's prefix.
    pub fn matches(&self, path: &str) -> bool {
        prefix_matches(&self.prefix, path)
    }
}

/// `/api` matches `/api` and `/api/...` but not `/apix`; `/api/` matches
/// everything below it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// Routes sorted longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Sorts `routes` so that the longest prefix is tried first.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        RouteTable { routes }
    }

    /// The route with the longest prefix matching `path`.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.matches(path))
    }

    /// Prefixes that appear more than once.
    pub fn duplicate_prefixes(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        let mut duplicates: Vec<&str> = self
            .routes
            .iter()
            .filter(|route| !seen.insert(route.prefix.as_str()))
            .map(|route| route.prefix.as_str())
            .collect();
        duplicates.dedup();
        duplicates
    }

    /// All routes, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbnormalPath;

/// Accepts only paths in normal form: absolute, no `.`/`..` segments (raw or
/// percent-encoded), no empty segments, no backslash, no encoded `/` or `\`.
pub fn check_path(path: &str) -> Result<(), AbnormalPath> {
    if !path.starts_with('/') {
        return Err(AbnormalPath);
    }
    if path.len() > 1 && path.contains("//") {
        return Err(AbnormalPath);
    }
    let lower = path.to_ascii_lowercase();
    if path.contains('\\') || lower.contains("%2f") || lower.contains("%5c") {
        return Err(AbnormalPath);
    }
    for segment in lower.split('/').skip(1) {
        let decoded_dots = segment.replace("%2e", ".");
        if decoded_dots == "." || decoded_dots == ".." {
            return Err(AbnormalPath);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str) -> Route {
        Route {
            prefix: prefix.into(),
            label: prefix.into(),
            upstream: "http://127.0.0.1:1".parse().unwrap(),
            auth: RouteAuth::Required,
            roles: vec![],
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn prefix_matching_respects_segments() {
        let cases = [
            ("/", "/", true),
            ("/", "/anything/below", true),
            ("/api", "/api", true),
            ("/api", "/api/", true),
            ("/api", "/api/v1", true),
            ("/api", "/apix", false),
            ("/api", "/ap", false),
            ("/api/", "/api/x", true),
            ("/api/", "/api", false),
        ];
        for (prefix, path, expected) in cases {
            assert_eq!(prefix_matches(prefix, path), expected, "{prefix} vs {path}");
        }
    }

    #[test]
    fn longest_prefix_wins_whatever_the_order() {
        let table = RouteTable::new(vec![route("/"), route("/public/deep"), route("/public")]);
        assert_eq!(table.find("/public/deep/x").unwrap().prefix, "/public/deep");
        assert_eq!(table.find("/public/x").unwrap().prefix, "/public");
        assert_eq!(table.find("/publicity").unwrap().prefix, "/");
        let empty = RouteTable::new(vec![route("/api")]);
        assert!(empty.find("/other").is_none());
    }

    #[test]
    fn duplicates_are_found() {
        let table = RouteTable::new(vec![route("/a"), route("/b"), route("/a")]);
        assert_eq!(table.duplicate_prefixes(), vec!["/a"]);
    }

    #[test]
    fn path_policy() {
        let good = [
            "/",
            "/a",
            "/a/b",
            "/a/b/",
            "/a.b/..c/d..",
            "/%41",
            "/a%20b",
            "/.well-known/x",
        ];
        for path in good {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
        let bad = [
            "",
            "a",
            "/public/../admin",
            "/public/./admin",
            "/..",
            "/public/%2e%2e/admin",
            "/public/%2E%2e/admin",
            "/public/.%2e/admin",
            "/public%2fadmin",
            "/public%2Fadmin",
            "/public\\admin",
            "/public%5cadmin",
            "//admin",
            "/public//admin",
        ];
        for path in bad {
            assert_eq!(check_path(path), Err(AbnormalPath), "{path}");
        }
    }
}
