//! Route table and path policy (pure).
//!
//! Routing and forwarding must see the same path, so paths that could be
//! read two ways (dot segments, encoded separators or unreserved
//! characters, backslashes, empty segments) are refused instead of
//! normalised: the path that was routed is byte-for-byte the path that is
//! forwarded, and means the same to the upstream.

pub mod cors;

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use http::{Method, Uri};

/// Whether a route needs a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAuth {
    /// A valid credential is required (and roles, if listed).
    Required,
    /// Forwarded without credentials and without identity headers.
    Public,
    /// Identity headers when a good credential is given, none without one;
    /// a bad credential is refused (401).
    Optional,
}

/// A `hosts` entry of a route, lowercase, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// One name: `api.example.com`.
    Exact(String),
    /// `*.example.com`, stored as `example.com`: every name ending in
    /// `.example.com`, not `example.com` itself.
    Wildcard(String),
}

/// What becomes of the matched prefix on the way to the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixRewrite {
    /// The path is forwarded as it came.
    Keep,
    /// `strip_prefix = true`: `/api/x` is sent as `/x`, `/api` as `/`.
    Strip,
    /// `rewrite_prefix`: the prefix is replaced by this (no trailing `/`,
    /// so `/api/x` with `"/v2"` is `/v2/x`; `""` means `"/"`).
    Replace(String),
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
    /// The hosts it takes; empty: every host.
    pub hosts: Vec<HostPattern>,
    /// The methods it takes; `None`: every method.
    pub methods: Option<Vec<Method>>,
    /// What the upstream gets instead of the matched prefix.
    pub rewrite: PrefixRewrite,
    /// Requests in flight to this route's upstream: one counter shared by
    /// every route to the same scheme and authority
    /// (`limits.max_upstream_requests`).
    pub in_flight: std::sync::Arc<crate::inflight::InFlight>,
    /// `aud` of identity assertions for this route, instead of
    /// `[assertion] audience`.
    pub assertion_audience: Option<std::sync::Arc<str>>,
    /// With `upstreams`: the pool the request's upstream is picked from
    /// (`upstream` is then its first member, and `in_flight` its counter).
    pub pool: Option<std::sync::Arc<crate::pool::UpstreamPool>>,
    /// `[route.cors]`, if any.
    pub cors: Option<std::sync::Arc<crate::routes::cors::CorsPolicy>>,
}

impl Route {
    /// Whether `path` falls under this route's prefix.
    pub fn matches(&self, path: &str) -> bool {
        prefix_matches(&self.prefix, path)
    }

    /// Whether the route takes requests with `method`.
    pub fn takes(&self, method: &Method) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|methods| methods.contains(method))
    }

    /// The path the upstream gets for `path`, which this route matched
    /// (ASCII case ignored): the prefix stripped or replaced as configured.
    /// `path` passed the path policy and the prefix ends on a segment
    /// boundary, so what follows it is whole segments with no `..`, `%2e`,
    /// `;`-dot or empty segment: nothing can climb out of the replacement.
    /// The result is checked again all the same; `None` if it fails.
    pub fn upstream_path<'p>(&self, path: &'p str) -> Option<Cow<'p, str>> {
        let replacement = match &self.rewrite {
            PrefixRewrite::Keep => return Some(Cow::Borrowed(path)),
            PrefixRewrite::Strip => "",
            PrefixRewrite::Replace(replacement) => replacement.as_str(),
        };
        let rest = path.get(self.prefix.len()..)?;
        let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
        out.push_str(replacement);
        if self.prefix.ends_with('/') {
            out.push('/');
        }
        out.push_str(rest);
        if out.is_empty() {
            out.push('/');
        }
        check_path(&out).ok()?;
        Some(Cow::Owned(out))
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

    /// Whether the forwarding route takes a credential when one is given
    /// (`auth = "optional"`).
    pub fn takes_optional_credential(&self) -> bool {
        self.route.auth == RouteAuth::Optional
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

/// Routes of one host level, sorted longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct PrefixTable {
    routes: Vec<Route>,
    /// No prefix has an upper-case letter: then a path without one matches
    /// the same way with and without case folding (the usual case; one
    /// lookup instead of two).
    lowercase_prefixes: bool,
}

/// What one host level makes of a request.
#[derive(Debug)]
pub enum LevelMatch<'a> {
    /// A route takes it.
    Routed(RouteMatch<'a>),
    /// Routes of the level match its path, none of them its method: the
    /// methods they take.
    WrongMethod(Vec<Method>),
    /// The gateway's reading of the path matches no route of the level,
    /// but another reading of it does: refused rather than sent to a
    /// laxer level (an upstream of this host could read it as its own).
    OnlyAnotherReading,
    /// No route of the level has anything to do with the path.
    None,
}

impl PrefixTable {
    /// Sorts `routes` so that the longest prefix is tried first.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        let lowercase_prefixes = routes
            .iter()
            .all(|route| !route.prefix.bytes().any(|b| b.is_ascii_uppercase()));
        PrefixTable {
            routes,
            lowercase_prefixes,
        }
    }

    /// The route with the longest prefix matching `path` byte for byte.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.matches(path))
    }

    fn find_for(&self, path: &str, method: &Method) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| route.takes(method) && route.matches(path))
    }

    fn find_folded(&self, path: &str, method: Option<&Method>) -> Option<&Route> {
        self.routes.iter().find(|route| {
            method.is_none_or(|method| route.takes(method))
                && prefix_matches_folded(&route.prefix, path)
        })
    }

    /// [`Self::route_for_method`] for a route table whose routes take
    /// every method.
    pub fn route_for(&self, path: &str) -> Option<RouteMatch<'_>> {
        match self.route_for_method(path, &Method::GET) {
            LevelMatch::Routed(matched) => Some(matched),
            _ => None,
        }
    }

    /// The route for `path` and `method` (longest prefix, ASCII case
    /// ignored, among routes taking the method) and every route taking the
    /// method that a reading of `path` by an upstream could fall under:
    /// byte for byte (case-sensitive servers), case-folded, without
    /// `;parameters`, without trailing `.`, `~` or `%20`, and each
    /// combination.
    pub fn route_for_method(&self, path: &str, method: &Method) -> LevelMatch<'_> {
        let Some(route) = self.find_folded(path, Some(method)) else {
            return self.miss(path);
        };
        let mut matched = RouteMatch {
            route,
            also: Vec::new(),
        };
        let has_upper = path.bytes().any(|b| b.is_ascii_uppercase());
        if has_upper || !self.lowercase_prefixes {
            matched.add(self.find_for(path, method));
        }
        for read in other_readings(path) {
            matched.add(self.find_folded(&read, Some(method)));
            matched.add(self.find_for(&read, method));
        }
        LevelMatch::Routed(matched)
    }

    /// Why no route of the level takes the request (off the hot path).
    fn miss(&self, path: &str) -> LevelMatch<'_> {
        if self.find_folded(path, None).is_some() {
            let mut allow: Vec<Method> = Vec::new();
            for route in &self.routes {
                if prefix_matches_folded(&route.prefix, path)
                    && let Some(methods) = &route.methods
                {
                    for method in methods {
                        if !allow.contains(method) {
                            allow.push(method.clone());
                        }
                    }
                }
            }
            return LevelMatch::WrongMethod(allow);
        }
        if other_readings(path)
            .iter()
            .any(|read| self.find_folded(read, None).is_some())
        {
            return LevelMatch::OnlyAnotherReading;
        }
        LevelMatch::None
    }

    /// Pairs of routes that could both take one request: the same prefix
    /// (ASCII case ignored) and a method in common.
    pub fn conflicts(&self) -> Vec<(&Route, &Route)> {
        let mut found = Vec::new();
        for (i, first) in self.routes.iter().enumerate() {
            for second in &self.routes[i + 1..] {
                let overlap = match (&first.methods, &second.methods) {
                    (Some(a), Some(b)) => a.iter().any(|method| b.contains(method)),
                    _ => true,
                };
                if overlap && first.prefix.eq_ignore_ascii_case(&second.prefix) {
                    found.push((first, second));
                }
            }
        }
        found
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

/// Why no route takes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMiss {
    /// No route of any level matches the path.
    NoRoute,
    /// Routes match the path but not the method: the methods they take.
    WrongMethod(Vec<Method>),
    /// Only another reading of the path than the gateway's falls under a
    /// route of the chosen host level.
    AmbiguousPath,
}

/// The route table of one config: a [`PrefixTable`] per exact host and per
/// wildcard suffix, and one for routes without `hosts`, built once. A
/// request's host picks its level by hash lookups (no scan over hosts).
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    exact: HashMap<String, PrefixTable>,
    /// By the suffix after `*.`.
    wildcard: HashMap<String, PrefixTable>,
    any_host: PrefixTable,
    /// Every route once, in config order.
    all: Vec<Route>,
    /// Some route has `[route.cors]`.
    any_cors: bool,
}

impl RouteTable {
    /// Puts each route into the level of each of its hosts (routes without
    /// `hosts` into the level for every host).
    pub fn new(routes: Vec<Route>) -> Self {
        let mut exact: HashMap<String, Vec<Route>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<Route>> = HashMap::new();
        let mut any_host = Vec::new();
        for route in &routes {
            if route.hosts.is_empty() {
                any_host.push(route.clone());
            }
            for host in &route.hosts {
                match host {
                    HostPattern::Exact(name) => exact.entry(name.clone()),
                    HostPattern::Wildcard(suffix) => wildcard.entry(suffix.clone()),
                }
                .or_default()
                .push(route.clone());
            }
        }
        let level = |(key, routes): (String, Vec<Route>)| (key, PrefixTable::new(routes));
        RouteTable {
            exact: exact.into_iter().map(level).collect(),
            wildcard: wildcard.into_iter().map(level).collect(),
            any_host: PrefixTable::new(any_host),
            any_cors: routes.iter().any(|route| route.cors.is_some()),
            all: routes,
        }
    }

    /// The host levels for `host` (canonical: see [`canonical_host`]), most
    /// specific first: the exact name, the wildcards from the longest
    /// suffix, then routes without `hosts`.
    fn levels<'t: 'h, 'h>(
        &'t self,
        host: Option<&'h str>,
    ) -> impl Iterator<Item = &'t PrefixTable> + 'h {
        let exact = host.and_then(|host| self.exact.get(host));
        let wildcards = host
            .filter(|_| !self.wildcard.is_empty())
            .into_iter()
            .flat_map(|host| {
                host.match_indices('.')
                    .filter_map(|(dot, _)| self.wildcard.get(&host[dot + 1..]))
            });
        exact
            .into_iter()
            .chain(wildcards)
            .chain(std::iter::once(&self.any_host))
    }

    /// The route for a request: the most specific host level that has any
    /// route for its path, then the longest prefix among that level's
    /// routes taking `method`, with every route of the level that another
    /// reading of the path falls under. `host` is canonical
    /// ([`canonical_host`]); `None` when the request named none.
    pub fn route_for(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
    ) -> Result<RouteMatch<'_>, RouteMiss> {
        for level in self.levels(host) {
            match level.route_for_method(path, method) {
                LevelMatch::Routed(matched) => return Ok(matched),
                LevelMatch::WrongMethod(allow) => return Err(RouteMiss::WrongMethod(allow)),
                LevelMatch::OnlyAnotherReading => return Err(RouteMiss::AmbiguousPath),
                LevelMatch::None => {}
            }
        }
        Err(RouteMiss::NoRoute)
    }

    /// Takes over `previous`'s in-flight counters for the upstreams both
    /// tables forward to with the same bound, so requests still running on
    /// the old config count against the new one's bound after a reload.
    /// Every copy of a route (one per host level it is in) gets the same.
    pub fn adopt_in_flight(&mut self, previous: &RouteTable) {
        // The old counter for an upstream with the same bound, whether a
        // route's own or a pool member's.
        let old_counter = |uri: &Uri, max: usize| {
            let key = crate::inflight::upstream_key(uri);
            previous.all.iter().find_map(|old| {
                let own = old
                    .upstream
                    .as_ref()
                    .filter(|u| crate::inflight::upstream_key(u) == key)
                    .map(|_| &old.in_flight);
                let member = old.pool.as_ref().and_then(|pool| {
                    pool.members()
                        .iter()
                        .find(|m| crate::inflight::upstream_key(&m.uri) == key)
                        .map(|m| &m.in_flight)
                });
                own.or(member).filter(|c| c.max() == max).cloned()
            })
        };
        // Copies of one route (one per host level) keep sharing one pool.
        let mut pools: Vec<(
            *const crate::pool::UpstreamPool,
            std::sync::Arc<crate::pool::UpstreamPool>,
        )> = Vec::new();
        let levels = self
            .exact
            .values_mut()
            .chain(self.wildcard.values_mut())
            .chain(std::iter::once(&mut self.any_host))
            .flat_map(|level| level.routes.iter_mut());
        for route in self.all.iter_mut().chain(levels) {
            let Some(upstream) = &route.upstream else {
                continue;
            };
            let key = crate::inflight::upstream_key(upstream);
            let old = previous.all.iter().find(|old| {
                old.upstream
                    .as_ref()
                    .is_some_and(|u| crate::inflight::upstream_key(u) == key)
            });
            if let Some(old) = old
                && old.in_flight.max() == route.in_flight.max()
            {
                route.in_flight = old.in_flight.clone();
            }
            if let Some(pool) = &route.pool {
                let ptr = std::sync::Arc::as_ptr(pool);
                let adopted = match pools.iter().find(|(seen, _)| *seen == ptr) {
                    Some((_, adopted)) => adopted.clone(),
                    None => {
                        let adopted = std::sync::Arc::new(pool.with_counters(|member| {
                            old_counter(&member.uri, member.in_flight.max())
                                .unwrap_or_else(|| member.in_flight.clone())
                        }));
                        pools.push((ptr, adopted.clone()));
                        adopted
                    }
                };
                route.pool = Some(adopted);
            }
        }
    }

    /// The distinct pools of the table, each with a route's prefix as its
    /// label (for metrics).
    pub fn pools(&self) -> Vec<(&str, &std::sync::Arc<crate::pool::UpstreamPool>)> {
        let mut seen: Vec<(&str, &std::sync::Arc<crate::pool::UpstreamPool>)> = Vec::new();
        for route in &self.all {
            if let Some(pool) = &route.pool
                && !seen.iter().any(|(_, p)| std::sync::Arc::ptr_eq(p, pool))
            {
                seen.push((route.label.as_ref(), pool));
            }
        }
        seen
    }

    /// The route a request to `host` and `path` would take by its host
    /// level and longest prefix, whatever its method (a CORS preflight is
    /// matched so); `None` without one, or when the table has no
    /// `[route.cors]` at all (then nothing is looked up).
    pub fn cors_for(
        &self,
        host: Option<&str>,
        path: &str,
    ) -> Option<&crate::routes::cors::CorsPolicy> {
        if !self.any_cors {
            return None;
        }
        self.levels(host)
            .find_map(|level| level.find_folded(path, None))
            .and_then(|route| route.cors.as_deref())
    }

    /// Pairs of routes that could both take one request (same host
    /// pattern, same prefix ignoring ASCII case, a method in common).
    pub fn conflicts(&self) -> Vec<(&Route, &Route)> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .chain(std::iter::once(&self.any_host))
            .flat_map(PrefixTable::conflicts)
            .collect()
    }

    /// All routes, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.all.iter()
    }
}

/// A request's host as routes match it: the host of a `host[:port]`
/// without the port, ASCII lowercase, without one trailing dot (DNS reads
/// `api.example.com.` as `api.example.com`; routing it elsewhere would let
/// a dot dodge the host's routes). Allocates only when there is an
/// upper-case letter. `None` for a value that is not a host this gateway
/// routes by: empty, with user info, or with a character outside
/// letters, digits, `-`, `.`, `_` (a bracketed IPv6 literal is kept).
pub fn canonical_host(authority: &str) -> Option<Cow<'_, str>> {
    let host = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (literal, after) = authority.split_at(end + 1);
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        let inner = &literal[1..literal.len() - 1];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        literal
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if port.is_some_and(|port| !valid_port(port)) {
            return None;
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        let name_ok = !host.is_empty()
            && !host.starts_with('.')
            && !host.contains("..")
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !name_ok {
            return None;
        }
        host
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

/// Digits only (an empty port is allowed by RFC 3986 and means the default).
fn valid_port(port: &str) -> bool {
    port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
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
    use super::PrefixTable as RouteTable;
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
            hosts: vec![],
            methods: None,
            rewrite: PrefixRewrite::Keep,
            in_flight: crate::inflight::InFlight::new(1),
            assertion_audience: None,
            pool: None,
            cors: None,
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
        let find = |table: &super::RouteTable, host: Option<&str>| {
            let matched = table.route_for(host, &Method::GET, "/a").unwrap();
            matched.route.in_flight.current()
        };
        let old = super::RouteTable::new(vec![route("/a"), route("/b")]);
        let old_route = old.route_for(None, &Method::GET, "/a").unwrap().route;
        let held = old_route.in_flight.try_enter().unwrap();
        let mut same_bound = super::RouteTable::new(vec![route("/a")]);
        same_bound.adopt_in_flight(&old);
        assert_eq!(find(&same_bound, None), 1);
        // A route on a host level is adopted too (each copy of it).
        let mut on_host =
            super::RouteTable::new(vec![on_hosts(route("/a"), &["x.test", "*.y.test"])]);
        on_host.adopt_in_flight(&old);
        assert_eq!(find(&on_host, Some("x.test")), 1);
        assert_eq!(find(&on_host, Some("z.y.test")), 1);
        assert_eq!(on_host.iter().next().unwrap().in_flight.current(), 1);
        let mut other_bound = super::RouteTable::new(vec![Route {
            in_flight: crate::inflight::InFlight::new(5),
            ..route("/a")
        }]);
        other_bound.adopt_in_flight(&old);
        assert_eq!(find(&other_bound, None), 0);
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

    fn on_hosts(mut route: Route, hosts: &[&str]) -> Route {
        route.hosts = hosts
            .iter()
            .map(|host| match host.strip_prefix("*.") {
                Some(suffix) => HostPattern::Wildcard(suffix.into()),
                None => HostPattern::Exact((*host).into()),
            })
            .collect();
        route.label = format!("{}{}", hosts.join(","), route.prefix).into();
        route
    }

    fn with_methods(mut route: Route, methods: &[&str]) -> Route {
        route.methods = Some(
            methods
                .iter()
                .map(|m| Method::from_bytes(m.as_bytes()).unwrap())
                .collect(),
        );
        route.label = format!("{}{}", methods.join(","), route.label).into();
        route
    }

    /// The label of the route a request takes, or why none does.
    fn chosen(table: &super::RouteTable, host: &str, method: &str, path: &str) -> String {
        let host = canonical_host(host).unwrap();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        match table.route_for(Some(&host), &method, path) {
            Ok(matched) => matched.route.label.to_string(),
            Err(RouteMiss::WrongMethod(allow)) => format!(
                "405 {}",
                allow
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Err(miss) => format!("{miss:?}"),
        }
    }

    #[test]
    fn host_levels_exact_then_wildcard_then_any() {
        let table = super::RouteTable::new(vec![
            route("/"),
            on_hosts(route("/"), &["api.a.test"]),
            on_hosts(route("/"), &["*.a.test"]),
            on_hosts(route("/deep"), &["*.b.a.test"]),
            on_hosts(route("/only"), &["only.test"]),
        ]);
        let cases = [
            ("api.a.test", "/x", "api.a.test/"),
            ("API.A.TEST", "/x", "api.a.test/"),
            ("api.a.test.", "/x", "api.a.test/"),
            ("api.a.test:8443", "/x", "api.a.test/"),
            ("other.a.test", "/x", "*.a.test/"),
            // The wildcard is for names below a.test, not a.test itself.
            ("a.test", "/x", "/"),
            ("x.y.a.test", "/x", "*.a.test/"),
            // The longest wildcard suffix is the more specific level; a
            // level without a route for the path gives way to the next.
            ("x.b.a.test", "/deep/1", "*.b.a.test/deep"),
            ("x.b.a.test", "/x", "*.a.test/"),
            ("only.test", "/only", "only.test/only"),
            ("only.test", "/x", "/"),
            ("ab.test", "/x", "/"),
            ("[::1]:80", "/x", "/"),
            ("127.0.0.1", "/x", "/"),
        ];
        for (host, path, expected) in cases {
            assert_eq!(chosen(&table, host, "GET", path), expected, "{host} {path}");
        }
        let no_default = super::RouteTable::new(vec![on_hosts(route("/"), &["api.a.test"])]);
        assert_eq!(chosen(&no_default, "other.test", "GET", "/"), "NoRoute");
        assert!(no_default.route_for(None, &Method::GET, "/").is_err());
    }

    #[test]
    fn methods_pick_among_a_levels_routes_and_405_lists_theirs() {
        let table = super::RouteTable::new(vec![
            with_methods(route("/api"), &["GET", "HEAD"]),
            with_methods(route("/api"), &["POST"]),
            with_methods(route("/read"), &["GET"]),
            with_methods(on_hosts(route("/x"), &["h.test"]), &["PUT"]),
            route("/x"),
        ]);
        assert_eq!(chosen(&table, "a", "GET", "/api/1"), "GET,HEAD/api");
        assert_eq!(chosen(&table, "a", "POST", "/api/1"), "POST/api");
        assert_eq!(chosen(&table, "a", "DELETE", "/api/1"), "405 GET,HEAD,POST");
        assert_eq!(chosen(&table, "a", "POST", "/read"), "405 GET");
        // The host's level has a route for the path: its methods decide,
        // a laxer level is not consulted.
        assert_eq!(chosen(&table, "h.test", "PUT", "/x"), "PUTh.test/x");
        assert_eq!(chosen(&table, "h.test", "GET", "/x"), "405 PUT");
        assert_eq!(chosen(&table, "other", "GET", "/x"), "/x");
    }

    #[test]
    fn the_stricter_route_rule_holds_per_host() {
        let table = super::RouteTable::new(vec![
            public("/"),
            on_hosts(public("/"), &["api.test"]),
            on_hosts(admin("/admin"), &["api.test"]),
        ]);
        let host = Some("api.test");
        let matched = table.route_for(host, &Method::GET, "/ADMIN/x").unwrap();
        assert!(matched.routes().any(|r| !r.roles.is_empty()));
        let matched = table.route_for(host, &Method::GET, "/admin;x/y").unwrap();
        assert!(matched.routes().any(|r| !r.roles.is_empty()));
        // Another host has no /admin: its rules are its own.
        let matched = table
            .route_for(Some("www.test"), &Method::GET, "/admin;x/y")
            .unwrap();
        assert!(!matched.needs_credential());
        // A level whose only route is under another reading of the path
        // refuses it rather than giving it to a laxer level.
        let table =
            super::RouteTable::new(vec![public("/"), on_hosts(admin("/admin"), &["api.test"])]);
        assert_eq!(
            table
                .route_for(host, &Method::GET, "/admin./x")
                .unwrap_err(),
            RouteMiss::AmbiguousPath
        );
        assert_eq!(
            table
                .route_for(host, &Method::GET, "/admin;x/y")
                .unwrap_err(),
            RouteMiss::AmbiguousPath
        );
        assert!(table.route_for(host, &Method::GET, "/other").is_ok());
    }

    #[test]
    fn conflicts_need_the_same_host_prefix_and_a_method() {
        let conflicts = |routes: Vec<Route>| super::RouteTable::new(routes).conflicts().len();
        assert_eq!(conflicts(vec![route("/a"), route("/A")]), 1);
        assert_eq!(
            conflicts(vec![on_hosts(route("/a"), &["x.test"]), route("/a")]),
            0
        );
        assert_eq!(
            conflicts(vec![
                on_hosts(route("/a"), &["x.test", "y.test"]),
                on_hosts(route("/a"), &["y.test"])
            ]),
            1
        );
        assert_eq!(
            conflicts(vec![
                with_methods(route("/a"), &["GET"]),
                with_methods(route("/a"), &["POST"])
            ]),
            0
        );
        assert_eq!(
            conflicts(vec![with_methods(route("/a"), &["GET"]), route("/a")]),
            1
        );
    }

    fn rewritten(prefix: &str, rewrite: PrefixRewrite) -> Route {
        Route {
            rewrite,
            ..route(prefix)
        }
    }

    #[test]
    fn prefixes_are_stripped_or_replaced_on_the_matched_reading() {
        let strip = rewritten("/api", PrefixRewrite::Strip);
        let v2 = rewritten("/api", PrefixRewrite::Replace("/v2".into()));
        let root = rewritten("/api", PrefixRewrite::Replace(String::new()));
        let slashed = rewritten("/api/", PrefixRewrite::Replace("/v2".into()));
        let cases = [
            (&strip, "/api", "/"),
            (&strip, "/api/", "/"),
            (&strip, "/api/x/y", "/x/y"),
            (&strip, "/API/x", "/x"),
            (&v2, "/api", "/v2"),
            (&v2, "/api/", "/v2/"),
            (&v2, "/api/x", "/v2/x"),
            (&v2, "/Api/x;p=1", "/v2/x;p=1"),
            (&root, "/api/x", "/x"),
            (&slashed, "/api/x", "/v2/x"),
            (&slashed, "/api/", "/v2/"),
        ];
        for (route, path, expected) in cases {
            assert_eq!(route.upstream_path(path).unwrap(), expected, "{path}");
        }
        let keep = route("/api");
        assert!(matches!(
            keep.upstream_path("/api/x"),
            Some(Cow::Borrowed("/api/x"))
        ));
    }

    #[test]
    fn request_hosts_are_canonical_or_refused() {
        let good = [
            ("API.Example.com", "api.example.com"),
            ("api.example.com.", "api.example.com"),
            ("api.example.com:8080", "api.example.com"),
            ("api.example.com.:8080", "api.example.com"),
            ("[::1]:8080", "[::1]"),
            ("[FE80::1]", "[fe80::1]"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("under_score", "under_score"),
        ];
        for (given, expected) in good {
            assert_eq!(canonical_host(given).as_deref(), Some(expected), "{given}");
        }
        for bad in [
            "", ".", "..", "a..b", ".a", "a%2eb", "a b", "a:b", "a:123456", "[::1", "[]", "[::1]x",
            "user@a", "a/b", "a,b",
        ] {
            assert_eq!(canonical_host(bad), None, "{bad}");
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
            fn rewritten_paths_never_climb_out_of_the_replacement(
                prefix in "(/(a|A|api|v1.0|x-y)){1,3}/?",
                replacement in "(/(v2|b|c[.]d)){0,2}",
                strip in any::<bool>(),
                path in hostile_path(),
            ) {
                prop_assume!(valid_prefix(&prefix) && prefix_reads_one_way(&prefix));
                let rewrite = if strip {
                    PrefixRewrite::Strip
                } else {
                    PrefixRewrite::Replace(replacement.clone())
                };
                let route = rewritten(&prefix, rewrite);
                let base = if strip { "" } else { replacement.as_str() };
                let path = format!("{prefix}{path}");
                if check_path(&path).is_ok() && prefix_matches_folded(&prefix, &path) {
                    let sent = route.upstream_path(&path);
                    prop_assert!(sent.is_some(), "{} refused after rewriting", path);
                    let sent = sent.unwrap_or_default();
                    prop_assert_eq!(check_path(&sent), Ok(()), "{} sent as {}", path, sent);
                    // Under the replacement on a segment boundary, and the
                    // rest of the path byte for byte.
                    prop_assert!(
                        sent == base || sent == "/" && base.is_empty() || prefix_matches(&format!("{base}/"), &sent),
                        "{} sent as {}", path, sent
                    );
                    let rest = &path[prefix.len()..];
                    prop_assert!(sent.ends_with(rest), "{} sent as {}", path, sent);
                    // A server decoding it once finds no segment climbing out.
                    let decoded = decode(sent.as_bytes());
                    prop_assert!(
                        !decoded.split(|b| *b == b'/').any(is_dot_segment),
                        "{} sent as {}", path, sent
                    );
                }
            }

            #[test]
            fn each_host_is_routed_by_its_own_level_alone(
                hosts in prop::collection::vec(prop_oneof![Just("a.test"), Just("*.a.test"), Just("b.a.test"), Just("")], 1..6),
                prefixes in prop::collection::vec("(/(a|A|admin|pub)){1,2}", 1..6),
                request_host in prop_oneof![Just("a.test"), Just("B.a.test."), Just("c.a.test"), Just("x.test")],
                path in routable_path(),
            ) {
                prop_assume!(check_path(&path).is_ok());
                let routes: Vec<Route> = hosts
                    .iter()
                    .zip(&prefixes)
                    .enumerate()
                    .map(|(i, (host, prefix))| {
                        let mut r = if host.is_empty() { route(prefix) } else { on_hosts(route(prefix), &[host]) };
                        r.label = format!("{i}").into();
                        r
                    })
                    .collect();
                let table = super::super::RouteTable::new(routes.clone());
                let canonical = canonical_host(request_host).unwrap();
                // Independently: the levels this host belongs to, most
                // specific first, each with the routes of exactly that level.
                let levels: Vec<Vec<Route>> = {
                    let host = canonical.as_ref();
                    let exact: Vec<Route> = routes.iter().filter(|r| r.hosts.contains(&HostPattern::Exact(host.into()))).cloned().collect();
                    let wild: Vec<Route> = routes.iter().filter(|r| r.hosts.iter().any(|h| matches!(h, HostPattern::Wildcard(s) if host.ends_with(&format!(".{s}"))))).cloned().collect();
                    let any: Vec<Route> = routes.iter().filter(|r| r.hosts.is_empty()).cloned().collect();
                    vec![exact, wild, any]
                };
                let expected_level = levels
                    .into_iter()
                    .map(RouteTable::new)
                    .find(|level| !matches!(level.route_for_method(&path, &Method::GET), LevelMatch::None));
                let got = table.route_for(Some(&canonical), &Method::GET, &path);
                match expected_level {
                    None => prop_assert_eq!(got.err(), Some(RouteMiss::NoRoute)),
                    Some(level) => match level.route_for_method(&path, &Method::GET) {
                        LevelMatch::Routed(expected) => {
                            let got = got.expect("routed");
                            let want: Vec<&str> = expected.routes().map(|r| &*r.label).collect();
                            let have: Vec<&str> = got.routes().map(|r| &*r.label).collect();
                            prop_assert_eq!(have, want);
                        }
                        _ => prop_assert_eq!(got.err(), Some(RouteMiss::AmbiguousPath)),
                    },
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
