//! Route table and path policy (pure).
//!
//! Routing and forwarding must see the same path, so paths that could be
//! read two ways (dot segments, encoded separators or unreserved
//! characters, backslashes, empty segments) are refused instead of
//! normalised: the path that was routed is byte-for-byte the path that is
//! forwarded, and means the same to the upstream.

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
    /// Base URL of the upstream; `None` on a route used only by forward
    /// authentication (`/_authgate/verify`): nothing is proxied by it.
    pub upstream: Option<Uri>,
    /// Credential policy.
    pub auth: RouteAuth,
    /// When non-empty, the caller needs at least one of these.
    pub roles: Vec<String>,
    /// Time allowed until the upstream's response head.
    pub timeout: Duration,
    /// The `[[oidc]]` provider browsers without a credential are sent to.
    pub login: Option<std::sync::Arc<str>>,
    /// Requests in flight to this route's upstream: one counter shared by
    /// every route to the same scheme and authority
    /// (`limits.max_upstream_requests`).
    pub in_flight: std::sync::Arc<crate::inflight::InFlight>,
}

impl Route {
    /// Whether `path` falls under this route's prefix.
    pub fn matches(&self, path: &str) -> bool {
        prefix_matches(&self.prefix, path)
    }
}

/// `/api` matches `/api` and `/api/...` but not `/apix`; `/api/` matches
/// everything below it. Bytes compare exactly.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => on_boundary(prefix, rest),
    }
}

/// As [`prefix_matches`], with ASCII letters compared case-insensitively
/// (Express, IIS and others route `/ADMIN` to `/admin`).
pub fn prefix_matches_folded(prefix: &str, path: &str) -> bool {
    match path.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => {
            on_boundary(prefix, &path[prefix.len()..])
        }
        _ => false,
    }
}

fn on_boundary(prefix: &str, rest: &str) -> bool {
    prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')
}

/// What an upstream may drop from a path before routing it: `;parameters`
/// inside a segment (servlet containers), and trailing dots, spaces and
/// tildes of a segment (IIS and Windows file names). Each is one way of
/// reading the same bytes; the route table considers every combination.
#[derive(Debug, Clone, Copy)]
struct Reading {
    params: bool,
    trailing: bool,
}

/// Trailing characters of a segment that Windows-style servers ignore:
/// `.`, `~` and an encoded space.
fn trim_trailing(mut segment: &str) -> &str {
    loop {
        if let Some(rest) = segment.strip_suffix(['.', '~']) {
            segment = rest;
        } else if let Some(rest) = segment.strip_suffix("%20") {
            segment = rest;
        } else {
            return segment;
        }
    }
}

/// `path` as an upstream reading it that way would see it; a segment that
/// ends up empty is dropped (such servers collapse `//`).
fn read_as(path: &str, reading: Reading) -> String {
    let mut out = String::with_capacity(path.len());
    let rest = path.strip_prefix('/').unwrap_or(path);
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let mut name = segment;
        if reading.params {
            name = name.split(';').next().unwrap_or_default();
        }
        if reading.trailing {
            name = trim_trailing(name);
        }
        if name.is_empty() && !segment.is_empty() && !last {
            continue;
        }
        out.push('/');
        out.push_str(name);
    }
    out
}

/// Whether a character [`trim_trailing`] removes ends a segment or the
/// part of one before a `;` (then some reading of the path differs from
/// it). One pass over the bytes: this runs on every request.
fn has_trailing_ignorable(path: &str) -> bool {
    let bytes = path.as_bytes();
    let ends_part = |next: usize| matches!(bytes.get(next), None | Some(b'/' | b';'));
    bytes.iter().enumerate().any(|(i, byte)| match byte {
        b'.' | b'~' => ends_part(i + 1),
        b'0' => i >= 2 && &bytes[i - 2..i] == b"%2" && ends_part(i + 1),
        _ => false,
    })
}

/// Every reading of `path` other than byte for byte that an upstream could
/// act on (see [`RouteTable::route_for`]): without `;parameters`, without
/// trailing `.`, `~` or `%20`, and both. Empty, without allocating, for
/// the usual path that has none of those.
pub fn other_readings(path: &str) -> Vec<String> {
    let params = path.contains(';');
    let trailing = has_trailing_ignorable(path);
    let mut readings: Vec<String> = Vec::new();
    if !params && !trailing {
        return readings;
    }
    for (params_read, trailing_read) in [(true, false), (false, true), (true, true)] {
        if (params_read && !params) || (trailing_read && !trailing) {
            continue;
        }
        let read = read_as(
            path,
            Reading {
                params: params_read,
                trailing: trailing_read,
            },
        );
        if read != path && !readings.contains(&read) {
            readings.push(read);
        }
    }
    readings
}

/// The route a request is forwarded by, and the other routes an upstream
/// could read its path as lying under. The rules of all of them apply:
/// a path that one server reads as `/admin/...` is held to `/admin`'s
/// rules even where the gateway's own match is a laxer route.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    /// The route whose upstream, timeout and label the request takes: the
    /// longest prefix matching with ASCII case ignored.
    pub route: &'a Route,
    /// Other routes that another reading of the path falls under (usually
    /// none; no allocation then).
    pub also: Vec<&'a Route>,
}

impl<'a> RouteMatch<'a> {
    /// Every route whose rules the request must satisfy, the forwarding
    /// route first.
    pub fn routes(&self) -> impl Iterator<Item = &'a Route> + '_ {
        std::iter::once(self.route).chain(self.also.iter().copied())
    }

    /// Whether any of them needs a credential.
    pub fn needs_credential(&self) -> bool {
        self.routes().any(|route| route.auth == RouteAuth::Required)
    }

    fn add(&mut self, route: Option<&'a Route>) {
        if let Some(route) = route
            && !std::ptr::eq(route, self.route)
            && !self.also.iter().any(|seen| std::ptr::eq(*seen, route))
        {
            self.also.push(route);
        }
    }
}

/// Routes sorted longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// No prefix has an upper-case letter: then a path without one matches
    /// the same way with and without case folding (the usual case; one
    /// lookup instead of two).
    lowercase_prefixes: bool,
}

impl RouteTable {
    /// Sorts `routes` so that the longest prefix is tried first.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        let lowercase_prefixes = routes
            .iter()
            .all(|route| !route.prefix.bytes().any(|b| b.is_ascii_uppercase()));
        RouteTable {
            routes,
            lowercase_prefixes,
        }
    }

    /// Takes over `previous`'s in-flight counters for the upstreams both
    /// tables forward to with the same bound, so requests still running on
    /// the old config count against the new one's bound after a reload.
    pub fn adopt_in_flight(&mut self, previous: &RouteTable) {
        for route in &mut self.routes {
            let Some(upstream) = &route.upstream else {
                continue;
            };
            let key = crate::inflight::upstream_key(upstream);
            let old = previous.routes.iter().find(|old| {
                old.upstream
                    .as_ref()
                    .is_some_and(|u| crate::inflight::upstream_key(u) == key)
            });
            if let Some(old) = old
                && old.in_flight.max() == route.in_flight.max()
            {
                route.in_flight = old.in_flight.clone();
            }
        }
    }

    /// The route with the longest prefix matching `path` byte for byte.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.matches(path))
    }

    fn find_folded(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| prefix_matches_folded(&route.prefix, path))
    }

    /// The route for `path` (longest prefix, ASCII case ignored) and every
    /// route that a reading of `path` by an upstream could fall under:
    /// byte for byte (case-sensitive servers), case-folded, without
    /// `;parameters`, without trailing `.`, `~` or `%20`, and each
    /// combination. `None` when no route takes the path as the gateway
    /// reads it; then nothing is forwarded.
    pub fn route_for(&self, path: &str) -> Option<RouteMatch<'_>> {
        let route = self.find_folded(path)?;
        let mut matched = RouteMatch {
            route,
            also: Vec::new(),
        };
        let has_upper = path.bytes().any(|b| b.is_ascii_uppercase());
        if has_upper || !self.lowercase_prefixes {
            matched.add(self.find(path));
        }
        for read in other_readings(path) {
            matched.add(self.find_folded(&read));
            matched.add(self.find(&read));
        }
        Some(matched)
    }

    /// Prefixes that appear more than once, compared ASCII case-insensitively
    /// (they would take the same paths).
    pub fn duplicate_prefixes(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        let mut duplicates: Vec<&str> = self
            .routes
            .iter()
            .filter(|route| !seen.insert(route.prefix.to_ascii_lowercase()))
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

/// A path that passed [`check_path`]. Only [`CheckedPath::new`] makes one,
/// so whatever takes it (the judgement of a request) cannot be handed a
/// path the policy has not seen, and no path is checked twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedPath<'a>(&'a str);

impl<'a> CheckedPath<'a> {
    /// `path`, if [`check_path`] accepts it.
    pub fn new(path: &'a str) -> Result<Self, AbnormalPath> {
        check_path(path).map(|()| CheckedPath(path))
    }

    /// The path.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// Accepts only paths that every server reads the same way, so that the
/// path that was routed is the path the upstream acts on:
///
/// - absolute, without empty segments (`//`; a trailing `/` is fine);
/// - no raw backslash;
/// - percent-escapes well formed, and none of them encoding an unreserved
///   character (`%41`, `%2e`: RFC 3986 says these equal the plain character,
///   so `/%61dmin` would be routed as something other than `/admin` and
///   served as `/admin`), a `/` or `\` (`%2f`, `%5c`), a control character
///   (`%00`, which C servers read as the end of the path) or an overlong
///   UTF-8 form (`%c0%ae`), nor a `%25` that decodes to another escape
///   (`%252e`, read as `.` by servers that decode twice);
/// - no segment that is `.` or `..`, also when followed by `;parameters`
///   (`/..;/`, which servlet containers read as `..`).
pub fn check_path(path: &str) -> Result<(), AbnormalPath> {
    let rest = path.strip_prefix('/').ok_or(AbnormalPath)?;
    if rest.is_empty() {
        return Ok(());
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment.is_empty() && !last {
            return Err(AbnormalPath);
        }
        check_segment(segment)?;
    }
    Ok(())
}

/// Whether a route prefix is made only of characters that have a single
/// spelling in a checked path (unreserved characters and `/`); then no
/// escaped form of a path can route differently from the plain one.
pub fn valid_prefix(prefix: &str) -> bool {
    prefix.starts_with('/') && prefix.bytes().all(|b| is_unreserved(b) || b == b'/')
}

/// Whether no segment of a prefix ends in `.`, `~` (or an encoded space):
/// servers that trim those would take the prefix for a shorter one.
pub fn prefix_reads_one_way(prefix: &str) -> bool {
    !has_trailing_ignorable(prefix)
}

/// RFC 3986 unreserved characters.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn check_segment(segment: &str) -> Result<(), AbnormalPath> {
    let bytes = segment.as_bytes();
    // The segment's name: what comes before `;parameters`, decoded.
    let mut name_end: Option<usize> = None;
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = match bytes[i] {
            b'\\' => return Err(AbnormalPath),
            b'%' => {
                let high = bytes.get(i + 1).and_then(|b| hex_value(*b));
                let low = bytes.get(i + 2).and_then(|b| hex_value(*b));
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(AbnormalPath);
                };
                let byte = high << 4 | low;
                if is_unreserved(byte) || matches!(byte, b'/' | b'\\') || byte.is_ascii_control() {
                    return Err(AbnormalPath);
                }
                // `%25` followed by hex digits decodes to another escape:
                // a server that decodes twice would see a different path.
                let escapes_again = byte == b'%'
                    && bytes.get(i + 3).and_then(|b| hex_value(*b)).is_some()
                    && bytes.get(i + 4).and_then(|b| hex_value(*b)).is_some();
                if escapes_again {
                    return Err(AbnormalPath);
                }
                i += 3;
                byte
            }
            byte => {
                i += 1;
                byte
            }
        };
        // 0xC0 and 0xC1 only ever start overlong (invalid) UTF-8 forms.
        if matches!(decoded.last(), Some(0xC0 | 0xC1)) && (0x80..=0xBF).contains(&byte) {
            return Err(AbnormalPath);
        }
        if byte == b';' && name_end.is_none() {
            name_end = Some(decoded.len());
        }
        decoded.push(byte);
    }
    let name = &decoded[..name_end.unwrap_or(decoded.len())];
    if name == b"." || name == b".." {
        return Err(AbnormalPath);
    }
    Ok(())
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str) -> Route {
        Route {
            prefix: prefix.into(),
            label: prefix.into(),
            upstream: Some("http://127.0.0.1:1".parse().unwrap()),
            auth: RouteAuth::Required,
            roles: vec![],
            timeout: Duration::from_secs(1),
            login: None,
            in_flight: crate::inflight::InFlight::new(1),
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
    fn a_reload_keeps_the_counters_of_the_same_upstreams() {
        let old = RouteTable::new(vec![route("/a"), route("/b")]);
        let held = old.find("/a").unwrap().in_flight.try_enter().unwrap();
        let mut same_bound = RouteTable::new(vec![route("/a")]);
        same_bound.adopt_in_flight(&old);
        assert_eq!(same_bound.find("/a").unwrap().in_flight.current(), 1);
        let mut other_bound = RouteTable::new(vec![Route {
            in_flight: crate::inflight::InFlight::new(5),
            ..route("/a")
        }]);
        other_bound.adopt_in_flight(&old);
        assert_eq!(other_bound.find("/a").unwrap().in_flight.current(), 0);
        drop(held);
    }

    #[test]
    fn duplicates_are_found() {
        let table = RouteTable::new(vec![route("/a"), route("/b"), route("/a")]);
        assert_eq!(table.duplicate_prefixes(), vec!["/a"]);
        let table = RouteTable::new(vec![route("/Admin"), route("/admin")]);
        assert_eq!(table.duplicate_prefixes().len(), 1);
    }

    fn public(prefix: &str) -> Route {
        Route {
            auth: RouteAuth::Public,
            ..route(prefix)
        }
    }

    fn admin(prefix: &str) -> Route {
        Route {
            roles: vec!["admin".into()],
            ..route(prefix)
        }
    }

    /// The prefixes whose rules apply to `path`, forwarding route first.
    fn held_to(table: &RouteTable, path: &str) -> Vec<String> {
        match table.route_for(path) {
            None => vec![],
            Some(matched) => matched.routes().map(|r| r.prefix.clone()).collect(),
        }
    }

    #[test]
    fn other_readings_of_a_path_hold_it_to_their_routes() {
        let table = RouteTable::new(vec![public("/"), admin("/admin")]);
        let cases: &[(&str, &[&str])] = &[
            ("/admin/stats", &["/admin"]),
            ("/public/x", &["/"]),
            ("/adminx/stats", &["/"]),
            // Express and IIS fold case: the route is /admin, and so is the rule.
            ("/ADMIN/stats", &["/admin", "/"]),
            ("/Admin", &["/admin", "/"]),
            // Tomcat drops `;x`, IIS trailing dots and spaces.
            ("/admin;x/stats", &["/", "/admin"]),
            ("/admin;/stats", &["/", "/admin"]),
            ("/admin./stats", &["/", "/admin"]),
            ("/admin.../stats", &["/", "/admin"]),
            ("/admin%20/stats", &["/", "/admin"]),
            ("/admin~/stats", &["/", "/admin"]),
            ("/admin.;x/stats", &["/", "/admin"]),
            ("/ADMIN;x./stats", &["/", "/admin"]),
            // An emptied segment collapses: `/%20/admin` is `/admin` to IIS.
            ("/%20/admin/x", &["/", "/admin"]),
            // Not a reading of /admin: a different name.
            ("/admin.json", &["/"]),
            ("/admin%3Bx/stats", &["/"]),
        ];
        for (path, expected) in cases {
            assert_eq!(held_to(&table, path), *expected, "{path}");
        }
    }

    #[test]
    fn case_sensitive_upstreams_keep_a_protected_catch_all() {
        // `/PUBLIC/x` is the public route to Express, but Flask routes it to
        // its catch-all, which `/` protects: both rules apply.
        let table = RouteTable::new(vec![route("/"), public("/public")]);
        assert_eq!(held_to(&table, "/PUBLIC/x"), ["/public", "/"]);
        assert!(table.route_for("/PUBLIC/x").unwrap().needs_credential());
        assert!(!table.route_for("/public/x").unwrap().needs_credential());
        // Partial readings count: without trimming, Tomcat reads this as
        // /admin/public./y, under /admin, not under /admin/public.
        let table = RouteTable::new(vec![public("/"), admin("/admin"), public("/admin/public")]);
        assert_eq!(
            held_to(&table, "/admin;a/public./y"),
            ["/", "/admin", "/admin/public"]
        );
    }

    #[test]
    fn a_path_no_reading_routes_is_not_routed() {
        let table = RouteTable::new(vec![admin("/admin")]);
        assert!(table.route_for("/other").is_none());
        assert!(table.route_for("/admin;x/stats").is_none());
        assert_eq!(held_to(&table, "/ADMIN/x"), ["/admin"]);
    }

    #[test]
    fn prefixes_must_read_one_way() {
        assert!(prefix_reads_one_way("/api/v1.0"));
        assert!(prefix_reads_one_way("/~user/x"));
        assert!(!prefix_reads_one_way("/api."));
        assert!(!prefix_reads_one_way("/files~/x"));
    }

    #[test]
    fn path_policy() {
        let good = [
            "/",
            "/a",
            "/a/b",
            "/a/b/",
            "/a.b/..c/d..",
            "/a%20b",
            "/.well-known/x",
            "/caf%C3%A9",
            "/a;b=c/d",
            "/a%3Bb",
            "/...",
            "/%25",
            "/100%25zz",
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
            "/%41",
            "/%61dmin",
            "/public/..;/admin",
            "/public/..;x=1/admin",
            "/public/.%3b/admin",
            "/public/..%3B/admin",
            "/admin%00",
            "/admin%0a",
            "/admin%7F",
            "/public/%c0%ae%c0%ae/admin",
            "/public/%C1%9C",
            "/a%",
            "/a%2",
            "/a%zz",
            "/a%2e",
            "/a%7e",
            "/public/%252e%252e/admin",
            "/a%2525",
        ];
        for path in bad {
            assert_eq!(check_path(path), Err(AbnormalPath), "{path}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Lenient percent-decoding, independent of the code under test: an
        /// escape that is not well formed is kept as it is.
        fn decode(bytes: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%'
                    && i + 2 < bytes.len()
                    && let Ok(text) = std::str::from_utf8(&bytes[i + 1..i + 3])
                    && let Ok(byte) = u8::from_str_radix(text, 16)
                {
                    out.push(byte);
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            out
        }

        fn is_dot_segment(decoded: &[u8]) -> bool {
            let name = decoded.split(|b| *b == b';').next().unwrap_or_default();
            name == b"." || name == b".."
        }

        /// Paths built from the pieces attacks are made of.
        fn hostile_path() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("a"),
                Just("admin"),
                Just("."),
                Just(".."),
                Just("%2e"),
                Just("%2E"),
                Just("%2f"),
                Just("%2F"),
                Just("%5c"),
                Just("%5C"),
                Just("\\"),
                Just(";"),
                Just("%3b"),
                Just("%3B"),
                Just("%41"),
                Just("%"),
                Just("%2"),
                Just("%zz"),
                Just("%00"),
                Just("%0a"),
                Just("%20"),
                Just("%25"),
                Just("%252e"),
                Just("%c0"),
                Just("%ae"),
                Just("%c3%a9"),
                Just("~"),
                Just("-"),
                Just("x=1"),
                Just("/"),
            ];
            prop_oneof![
                prop::collection::vec(piece, 0..12)
                    .prop_map(|pieces| format!("/{}", pieces.concat())),
                "/[a-zA-Z0-9%./\\\\;~=-]{0,40}",
            ]
        }

        /// Paths made of prefix-like names and the pieces servers drop.
        fn routable_path() -> impl Strategy<Value = String> {
            let name = prop_oneof![
                Just("a"),
                Just("A"),
                Just("ad"),
                Just("admin"),
                Just("ADMIN"),
                Just("Admin"),
                Just("pub"),
                Just("x-y"),
                Just("v1.0"),
                Just("stats"),
            ];
            let tail = prop_oneof![
                Just(""),
                Just(""),
                Just(";x"),
                Just(";"),
                Just("."),
                Just(".."),
                Just("%20"),
                Just("~"),
                Just(".;x"),
                Just(";x."),
                Just(".%20~"),
            ];
            (prop::collection::vec((name, tail), 1..5), any::<bool>()).prop_map(
                |(segments, slash)| {
                    let mut path: String = segments
                        .iter()
                        .map(|(name, tail)| format!("/{name}{tail}"))
                        .collect();
                    if slash {
                        path.push('/');
                    }
                    path
                },
            )
        }

        /// Paths a well-behaved client sends.
        fn normal_path() -> impl Strategy<Value = String> {
            let segment = "[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,8}(%20|%C3%A9|;v=1)?";
            (prop::collection::vec(segment, 0..6), any::<bool>()).prop_map(|(segments, slash)| {
                let mut path = format!("/{}", segments.join("/"));
                if slash && !segments.is_empty() {
                    path.push('/');
                }
                path
            })
        }

        /// How some real servers read a path before routing it, written
        /// independently of the code under test: Express and IIS fold ASCII
        /// case, Tomcat cuts `;parameters` from each segment, IIS trims
        /// trailing dots, spaces and tildes and collapses what empties.
        fn server_reading(path: &str, fold: bool, params: bool, trim: bool) -> String {
            let decoded_spaces = path.replace("%20", " ");
            let mut segments: Vec<String> = Vec::new();
            let parts: Vec<&str> = decoded_spaces.split('/').skip(1).collect();
            for (index, part) in parts.iter().enumerate() {
                let mut name = part.to_string();
                if params && let Some(cut) = name.find(';') {
                    name.truncate(cut);
                }
                if trim {
                    while name.ends_with(['.', ' ', '~']) {
                        name.pop();
                    }
                    if name.is_empty() && !part.is_empty() && index + 1 < parts.len() {
                        continue;
                    }
                }
                if fold {
                    name = name.to_ascii_lowercase();
                }
                segments.push(name);
            }
            format!("/{}", segments.join("/")).replace(' ', "%20")
        }

        /// The route a server reading paths that way would pick: the
        /// longest prefix whose own reading starts the path's reading on a
        /// segment boundary.
        fn server_route<'a>(
            table: &'a [Route],
            path: &str,
            fold: bool,
            params: bool,
            trim: bool,
        ) -> Option<&'a Route> {
            let read = server_reading(path, fold, params, trim);
            table
                .iter()
                .filter(|route| {
                    let prefix = server_reading(&route.prefix, fold, params, trim);
                    read == prefix
                        || (read.starts_with(&prefix)
                            && (prefix.ends_with('/') || read[prefix.len()..].starts_with('/')))
                })
                .max_by_key(|route| route.prefix.len())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn accepted_paths_have_no_dot_segments_or_decoded_separators(path in hostile_path()) {
                if check_path(&path).is_ok() {
                    let rest = path.strip_prefix('/').expect("accepted paths are absolute");
                    prop_assert!(!path.contains("//"), "{}", path);
                    for segment in rest.split('/') {
                        // Once and twice decoded: a server decoding twice
                        // must not find a dot segment or a separator either.
                        let once = decode(segment.as_bytes());
                        let twice = decode(&once);
                        for decoded in [&once, &twice] {
                            prop_assert!(!is_dot_segment(decoded), "{} has a dot segment", path);
                            prop_assert!(
                                !decoded.iter().any(|b| matches!(b, b'/' | b'\\' | 0)),
                                "{} hides a separator", path
                            );
                        }
                    }
                }
            }

            #[test]
            fn normal_paths_are_accepted(path in normal_path()) {
                prop_assume!(path.split('/').all(|s| s != "." && s != ".."));
                prop_assert_eq!(check_path(&path), Ok(()), "{}", path);
            }

            #[test]
            fn routing_on_the_raw_path_agrees_with_the_decoded_path(
                prefix in "(/[a-z.]{1,4}){1,3}/?",
                path in hostile_path(),
            ) {
                prop_assume!(valid_prefix(&prefix));
                if check_path(&path).is_ok() {
                    let decoded = String::from_utf8_lossy(&decode(path.as_bytes())).into_owned();
                    prop_assert_eq!(
                        prefix_matches(&prefix, &path),
                        prefix_matches(&prefix, &decoded),
                        "{} vs {} (decoded {})", prefix, path, decoded
                    );
                }
            }

            #[test]
            fn every_server_reading_is_held_to_its_route(
                prefixes in prop::collection::vec("(/(a|A|ad|admin|Admin|pub|x-y|v1.0)){1,3}/?", 1..5),
                path in routable_path(),
            ) {
                prop_assume!(check_path(&path).is_ok());
                let mut routes: Vec<Route> = vec![route("/")];
                for prefix in &prefixes {
                    if prefix_reads_one_way(prefix)
                        && !routes.iter().any(|r| r.prefix.eq_ignore_ascii_case(prefix))
                    {
                        routes.push(route(prefix));
                    }
                }
                let table = RouteTable::new(routes.clone());
                let held: Vec<&str> = table
                    .route_for(&path)
                    .map(|matched| matched.routes().map(|r| r.prefix.as_str()).collect())
                    .unwrap_or_default();
                for fold in [false, true] {
                    for params in [false, true] {
                        for trim in [false, true] {
                            if let Some(server) = server_route(&routes, &path, fold, params, trim) {
                                prop_assert!(
                                    held.contains(&server.prefix.as_str()),
                                    "{} read (fold {}, params {}, trim {}) as under {}, held only to {:?}",
                                    path, fold, params, trim, server.prefix, held
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
