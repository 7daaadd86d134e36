//! Configuration: raw TOML structs, validated into one [`Config`].
//!
//! Only [`Config::load`] touches the disk (the config file and the files it
//! names); [`Config::from_toml`] does the rest so it can be tested in memory.
//! Validation collects every problem instead of stopping at the first, so
//! `check-config` can print them all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;
use serde::Deserialize;

use std::sync::Arc;

pub mod ratelimit;

use crate::routes::{Route, RouteAuth, RouteTable};
use crate::token::jwks::JwksSource;
use crate::token::jwt::{JwtKeys, KeySpec, parse_algorithm, valid_kid};

/// Paths the gateway serves itself under this prefix; routes may not use it.
pub const RESERVED_PREFIX: &str = "/_authgate/";
/// Shortest HS256 secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// Default most header fields per request (hyper's own default, which keeps
/// its parser's header array on the stack).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Largest `limits.max_headers` accepted.
const MAX_MAX_HEADERS: u64 = 1000;
/// Largest `limits.max_proxy_body_bytes` accepted (1 TiB).
const MAX_PROXY_BODY_BYTES: u64 = 1 << 40;
/// Highest `login.max_concurrent_hashes` (19 MiB each: 20 GiB at this bound).
const MAX_CONCURRENT_HASHES: u64 = 1024;

/// A config that could not be loaded: every problem found, one line each.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct ConfigError {
    /// `<key>: <problem>` lines.
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: String) -> Self {
        ConfigError {
            problems: vec![problem],
        }
    }
}

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listeners and shutdown.
    pub server: ServerConfig,
    /// Where users and keys live.
    pub store: StoreConfig,
    /// Token issuing and checking.
    pub jwt: JwtConfig,
    /// One-time-key login.
    pub onetimekey: OneTimeKeyConfig,
    /// Request limits and timeouts on the client side.
    pub limits: Limits,
    /// Upstream connection defaults.
    pub upstream: UpstreamConfig,
    /// Throttling of failed logins.
    pub login: LoginConfig,
    /// The credential caches.
    pub cache: CacheConfig,
    /// Routes, longest prefix first.
    pub routes: RouteTable,
    /// Rate limits (`[ratelimit]`).
    pub ratelimit: ratelimit::RateLimitConfig,
    /// External OpenID Connect providers for browser sign-in.
    pub oidc: Vec<OidcProviderConfig>,
}

/// One `[[oidc]]` provider, validated.
#[derive(Debug, Clone)]
pub struct OidcProviderConfig {
    /// `[a-z0-9-]+`, used in paths and on the sign-in page.
    pub name: String,
    /// Discovery at `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// This gateway's client id at the provider.
    pub client_id: String,
    /// The client secret (never printed), for the token request.
    client_secret_text: SecretText,
    /// Where the provider sends the browser back.
    pub redirect_url: String,
    /// Scopes asked for.
    pub scopes: Vec<String>,
    /// Claim holding the authgate user name.
    pub username_claim: String,
    /// Dotted claim path holding the roles; `None`: no roles.
    pub roles_claim: Option<String>,
    /// Extra CA roots for the provider's TLS.
    pub ca_file: Option<PathBuf>,
    /// The key sealing the sign-in state cookie, derived from the JWT
    /// signing secret and the client secret (the same on every replica).
    pub sealer: Arc<crate::token::state::Sealer>,
}

impl OidcProviderConfig {
    /// The client secret, for the token request only.
    pub fn client_secret_text(&self) -> &str {
        &self.client_secret_text.0
    }
}

/// Text that must never be printed.
#[derive(Clone)]
struct SecretText(String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}

/// Listeners and shutdown behaviour.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Plain HTTP listener (HTTP/1.1 and h2c).
    pub listen: Option<SocketAddr>,
    /// HTTPS listener.
    pub tls: Option<TlsConfig>,
    /// `server.admin_listen` (optional, no default): a plain HTTP listener
    /// serving only `/metrics`, `/healthz` and `/readyz`. When set,
    /// `/metrics` is 404 on the other listeners (the health checks stay
    /// there too), so it can be kept off the public port.
    pub admin_listen: Option<SocketAddr>,
    /// How long in-flight requests may run after SIGTERM.
    pub shutdown_grace: Duration,
    /// Proxies whose `X-Forwarded-For` is believed when finding the client
    /// address (for login throttling).
    pub trusted_proxies: Vec<IpNet>,
}

/// The HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (`true`) or only checked
    /// when one is sent.
    pub client_cert_required: bool,
}

/// Which store backs users and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite file, created on first start.
    Sqlite(PathBuf),
    /// A PostgreSQL server shared by several replicas.
    Postgres(String),
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Backend and location.
    pub url: StoreUrl,
    /// How often the gateway looks for revocations made by other processes.
    pub poll_interval: Duration,
}

/// JWT settings.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `iss` of issued tokens, and the only issuer accepted.
    pub issuer: String,
    /// Lifetime of issued tokens.
    pub ttl: Duration,
    /// Clock skew accepted on `exp`, `nbf` and `iat`, in seconds.
    pub leeway: u64,
    /// The signing and verification keys, loaded and checked.
    pub keys: Arc<JwtKeys>,
    /// External identity providers whose JWK sets verify their tokens.
    pub external: Vec<JwksSource>,
    /// The signing secret (HS256) or signer's private key, for keys derived
    /// from it (the OIDC state cookie's).
    pub derive_root: crate::token::state::RootSecret,
}

/// One-time-key login settings.
#[derive(Debug, Clone)]
pub struct OneTimeKeyConfig {
    /// Realm inside HA1 = md5(user:realm:password).
    pub realm: String,
    /// How long an issued key stays usable.
    pub ttl: Duration,
}

/// Client-side limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Most header fields in one request head.
    pub max_headers: usize,
    /// Largest body of the gateway's own JSON endpoints.
    pub max_body_bytes: usize,
    /// Largest body forwarded to an upstream; `None`: unlimited (streamed).
    pub max_proxy_body_bytes: Option<u64>,
    /// Time allowed to receive a request head.
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may sit idle.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

/// Upstream connection defaults.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Time allowed to open a connection (→ 502).
    pub connect_timeout: Duration,
    /// Time allowed until the response head (→ 504).
    pub timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per upstream.
    pub pool_max_idle_per_host: usize,
    /// Extra CA certificates (PEM) trusted for `https://` upstreams, besides
    /// the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key (PEM) presented to `https://`
    /// upstreams that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Throttling of failed logins and the bound on password hashing.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    /// Failed attempts per user within `window` before lockout (default 5).
    pub max_failures: u32,
    /// Failed attempts per client address within `window` before lockout
    /// (default 50: many users may share one address behind NAT or a proxy).
    pub address_max_failures: u32,
    /// Password hashes computed at once (`login.max_concurrent_hashes`;
    /// 0 in the file, the default, means the number of cores). Logins
    /// beyond it are answered 503 with `Retry-After` at once: each argon2id
    /// hash holds 19 MiB while it runs.
    pub max_concurrent_hashes: usize,
    /// Window over which failures are counted.
    pub window: Duration,
    /// How long a locked-out user or address is refused.
    pub lockout: Duration,
}

/// Credential cache settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Most entries held per cache.
    pub max_entries: usize,
    /// How long a positive entry is trusted before it is checked again.
    pub ttl: Duration,
    /// How long a "no such key/user" answer is remembered.
    pub negative_ttl: Duration,
}

// ---- raw TOML ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    jwt: RawJwt,
    #[serde(default)]
    onetimekey: RawOneTimeKey,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    login: RawLogin,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    ratelimit: ratelimit::RawRateLimit,
    #[serde(default)]
    oidc: Vec<RawOidc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    name: String,
    issuer: String,
    client_id: String,
    client_secret_file: PathBuf,
    redirect_url: String,
    #[serde(default = "defaults::oidc_scopes")]
    scopes: Vec<String>,
    #[serde(default = "defaults::oidc_username_claim")]
    username_claim: String,
    roles_claim: Option<String>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    tls: Option<RawTls>,
    #[serde(default = "defaults::shutdown_grace")]
    shutdown_grace: u64,
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    listen: String,
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_auth: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default = "defaults::store_url")]
    url: String,
    #[serde(default = "defaults::poll_interval_ms")]
    poll_interval_ms: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            url: defaults::store_url(),
            poll_interval_ms: defaults::poll_interval_ms(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtKey {
    kid: String,
    algorithm: String,
    private_key: Option<PathBuf>,
    public_key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwks {
    url: String,
    issuer: String,
    audience: Option<String>,
    #[serde(default = "defaults::roles_claim")]
    roles_claim: String,
    #[serde(default = "defaults::jwks_refresh")]
    refresh: u64,
    #[serde(default = "defaults::jwks_min_refresh")]
    min_refresh: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    #[serde(default)]
    keys: Vec<RawJwtKey>,
    #[serde(default)]
    jwks: Vec<RawJwks>,
    #[serde(default = "defaults::issuer")]
    issuer: String,
    #[serde(default = "defaults::jwt_ttl")]
    ttl: u64,
    #[serde(default = "defaults::leeway")]
    leeway: u64,
    secret_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOneTimeKey {
    #[serde(default = "defaults::realm")]
    realm: String,
    #[serde(default = "defaults::otk_ttl")]
    ttl: u64,
}

impl Default for RawOneTimeKey {
    fn default() -> Self {
        RawOneTimeKey {
            realm: defaults::realm(),
            ttl: defaults::otk_ttl(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "defaults::max_header_bytes")]
    max_header_bytes: u64,
    #[serde(default = "defaults::max_headers")]
    max_headers: u64,
    #[serde(default = "defaults::max_body_bytes")]
    max_body_bytes: u64,
    max_proxy_body_bytes: Option<u64>,
    #[serde(default = "defaults::header_read_timeout")]
    header_read_timeout: u64,
    #[serde(default = "defaults::idle_timeout")]
    idle_timeout: u64,
    #[serde(default = "defaults::max_connections")]
    max_connections: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_header_bytes: defaults::max_header_bytes(),
            max_headers: defaults::max_headers(),
            max_body_bytes: defaults::max_body_bytes(),
            max_proxy_body_bytes: None,
            header_read_timeout: defaults::header_read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_connections: defaults::max_connections(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    #[serde(default = "defaults::connect_timeout")]
    connect_timeout: u64,
    #[serde(default = "defaults::upstream_timeout")]
    timeout: u64,
    #[serde(default = "defaults::pool_idle_timeout")]
    pool_idle_timeout: u64,
    #[serde(default = "defaults::pool_max_idle_per_host")]
    pool_max_idle_per_host: u64,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            connect_timeout: defaults::connect_timeout(),
            timeout: defaults::upstream_timeout(),
            pool_idle_timeout: defaults::pool_idle_timeout(),
            pool_max_idle_per_host: defaults::pool_max_idle_per_host(),
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogin {
    #[serde(default = "defaults::max_failures")]
    max_failures: u64,
    #[serde(default = "defaults::address_max_failures")]
    address_max_failures: u64,
    #[serde(default)]
    max_concurrent_hashes: u64,
    #[serde(default = "defaults::login_window")]
    window: u64,
    #[serde(default = "defaults::lockout")]
    lockout: u64,
}

impl Default for RawLogin {
    fn default() -> Self {
        RawLogin {
            max_failures: defaults::max_failures(),
            address_max_failures: defaults::address_max_failures(),
            max_concurrent_hashes: 0,
            window: defaults::login_window(),
            lockout: defaults::lockout(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default = "defaults::cache_max_entries")]
    max_entries: u64,
    #[serde(default = "defaults::cache_ttl")]
    ttl: u64,
    #[serde(default = "defaults::cache_negative_ttl")]
    negative_ttl: u64,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_entries: defaults::cache_max_entries(),
            ttl: defaults::cache_ttl(),
            negative_ttl: defaults::cache_negative_ttl(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path_prefix: String,
    upstream: Option<String>,
    #[serde(default = "defaults::route_auth")]
    auth: String,
    #[serde(default)]
    roles: Vec<String>,
    timeout: Option<u64>,
    login: Option<String>,
}

/// Default values, documented in the README's configuration reference.
mod defaults {
    pub fn oidc_scopes() -> Vec<String> {
        ["openid", "email", "profile"].map(String::from).to_vec()
    }
    pub fn oidc_username_claim() -> String {
        "sub".into()
    }
    pub fn shutdown_grace() -> u64 {
        30
    }
    pub fn store_url() -> String {
        "sqlite://data/authgate.db".into()
    }
    pub fn poll_interval_ms() -> u64 {
        1000
    }
    pub fn issuer() -> String {
        "authgate".into()
    }
    pub fn jwt_ttl() -> u64 {
        7 * 24 * 3600
    }
    pub fn leeway() -> u64 {
        30
    }
    pub fn realm() -> String {
        "voximplant.com".into()
    }
    pub fn otk_ttl() -> u64 {
        300
    }
    pub fn max_header_bytes() -> u64 {
        16 * 1024
    }
    pub fn max_headers() -> u64 {
        crate::config::DEFAULT_MAX_HEADERS as u64
    }
    pub fn max_body_bytes() -> u64 {
        64 * 1024
    }
    pub fn header_read_timeout() -> u64 {
        10
    }
    pub fn idle_timeout() -> u64 {
        60
    }
    pub fn max_connections() -> u64 {
        10_000
    }
    pub fn connect_timeout() -> u64 {
        5
    }
    pub fn upstream_timeout() -> u64 {
        30
    }
    pub fn pool_idle_timeout() -> u64 {
        90
    }
    pub fn pool_max_idle_per_host() -> u64 {
        64
    }
    pub fn max_failures() -> u64 {
        5
    }
    pub fn address_max_failures() -> u64 {
        50
    }
    pub fn login_window() -> u64 {
        300
    }
    pub fn lockout() -> u64 {
        300
    }
    pub fn cache_max_entries() -> u64 {
        1_000_000
    }
    pub fn cache_ttl() -> u64 {
        300
    }
    pub fn cache_negative_ttl() -> u64 {
        5
    }
    pub fn roles_claim() -> String {
        "roles".into()
    }
    pub fn jwks_refresh() -> u64 {
        300
    }
    pub fn jwks_min_refresh() -> u64 {
        30
    }
    pub fn route_auth() -> String {
        "required".into()
    }
}

/// Collects problems while validating.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, key: &str, problem: impl std::fmt::Display) {
        self.0.push(format!("{key}: {problem}"));
    }

    /// A number of seconds that must lie in `min..=max`.
    fn seconds(&mut self, key: &str, value: u64, min: u64, max: u64) -> Duration {
        if value < min || value > max {
            self.add(
                key,
                format_args!("must be between {min} and {max} seconds, got {value}"),
            );
        }
        Duration::from_secs(value.clamp(min, max))
    }

    /// A count that must lie in `min..=max`.
    fn count(&mut self, key: &str, value: u64, min: u64, max: u64) -> usize {
        if value < min || value > max {
            self.add(
                key,
                format_args!("must be between {min} and {max}, got {value}"),
            );
        }
        usize::try_from(value.clamp(min, max)).unwrap_or(usize::MAX)
    }

    fn socket_addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.add(key, format_args!("{value:?} is not an IP:port address"));
                None
            }
        }
    }

    fn readable_file(&mut self, key: &str, path: &Path) {
        if let Err(err) = std::fs::File::open(path) {
            self.add(key, format_args!("cannot read {}: {err}", path.display()));
        }
    }
}

impl Config {
    /// Reads and validates the config at `path`, and every file it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::one(format!("config: cannot read {}: {err}", path.display()))
        })?;
        Config::from_toml(&text)
    }

    /// Parses and validates config text; files it names are read relative to
    /// the working directory.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let syntax = |err: &dyn std::fmt::Display| {
            ConfigError::one(format!("config: {}", err.to_string().trim_end()))
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|err| syntax(&err))?;
        let mut problems = Problems::default();
        unknown_keys(&mut table, "", "", &mut problems);
        // Without unknown keys the text is parsed again so that type errors
        // keep their line and column; with them, the rest of the config is
        // still checked (without those keys), so every problem is listed.
        let raw: Result<RawConfig, String> = if problems.0.is_empty() {
            toml::from_str(text).map_err(|err| err.to_string())
        } else {
            toml::Value::Table(table)
                .try_into()
                .map_err(|err: toml::de::Error| err.to_string())
        };
        let raw = match raw {
            Ok(raw) => raw,
            Err(err) => {
                problems.0.push(format!("config: {}", err.trim_end()));
                return Err(ConfigError {
                    problems: problems.0,
                });
            }
        };
        match validate(raw, &mut problems) {
            Some(config) if problems.0.is_empty() => Ok(config),
            _ => Err(ConfigError {
                problems: problems.0,
            }),
        }
    }
}

/// The keys a table of the config may hold, by its dotted path (array
/// elements share their array's path), read from the serde field list of
/// its raw struct. `None` for a path not listed here: its keys are then
/// checked by serde when the config is deserialized.
fn known_keys(path: &str) -> Option<Vec<String>> {
    match path {
        "" => Some(fields_of::<RawConfig>()),
        "server" => Some(fields_of::<RawServer>()),
        "server.tls" => Some(fields_of::<RawTls>()),
        "store" => Some(fields_of::<RawStore>()),
        "jwt" => Some(fields_of::<RawJwt>()),
        "jwt.keys" => Some(fields_of::<RawJwtKey>()),
        "jwt.jwks" => Some(fields_of::<RawJwks>()),
        "onetimekey" => Some(fields_of::<RawOneTimeKey>()),
        "limits" => Some(fields_of::<RawLimits>()),
        "upstream" => Some(fields_of::<RawUpstream>()),
        "login" => Some(fields_of::<RawLogin>()),
        "cache" => Some(fields_of::<RawCache>()),
        "route" => Some(fields_of::<RawRoute>()),
        "oidc" => Some(fields_of::<RawOidc>()),
        "ratelimit" => Some(fields_of::<ratelimit::RawRateLimit>()),
        "ratelimit.rule" => Some(fields_of::<ratelimit::RawRule>()),
        _ => None,
    }
}

/// The field names of a `deny_unknown_fields` struct, from the error serde
/// gives for a key that cannot be one of them.
fn fields_of<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let mut probe = toml::Table::new();
    probe.insert("\u{0}probe".into(), toml::Value::Boolean(true));
    let Err(err) = toml::Value::Table(probe).try_into::<T>() else {
        return Vec::new();
    };
    let text = err.to_string();
    let Some(expected) = text.split_once("expected").map(|(_, rest)| rest) else {
        return Vec::new();
    };
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Reports and removes every key of `table` (and of the tables below it)
/// that the config does not know, one problem per key with its full dotted
/// path (array elements by 0-based index, as other problems name them) and,
/// when a known key at that level is close, a suggestion.
fn unknown_keys(table: &mut toml::Table, path: &str, shown: &str, p: &mut Problems) {
    let Some(known) = known_keys(path) else {
        return;
    };
    let join = |base: &str, key: &str| {
        if base.is_empty() {
            key.to_owned()
        } else {
            format!("{base}.{key}")
        }
    };
    let mut unknown = Vec::new();
    for (key, value) in table.iter_mut() {
        if !known.iter().any(|k| k == key) {
            unknown.push(key.clone());
            continue;
        }
        let child_path = join(path, key);
        let child_shown = join(shown, key);
        match value {
            toml::Value::Table(child) => unknown_keys(child, &child_path, &child_shown, p),
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let toml::Value::Table(child) = item {
                        let shown = format!("{child_shown}[{i}]");
                        unknown_keys(child, &child_path, &shown, p);
                    }
                }
            }
            _ => {}
        }
    }
    for key in unknown {
        table.remove(&key);
        let full = join(shown, &key);
        match closest(&key, &known) {
            Some(near) => p.add(
                &full,
                format_args!("unknown key (did you mean {}?)", join(shown, near)),
            ),
            None => p.add(&full, "unknown key"),
        }
    }
}

/// The known key nearest to `key` by edit distance (case-insensitive),
/// when it is close enough to be a typo: at most a third of the longer
/// name's characters (at least one) differ.
fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let key_lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&key_lower, k), k))
        .filter(|(d, k)| *d <= (key.chars().count().max(k.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn validate(raw: RawConfig, p: &mut Problems) -> Option<Config> {
    let server = validate_server(raw.server, p);
    let store = validate_store(raw.store, p);
    let jwt = validate_jwt(raw.jwt, p);

    let onetimekey = OneTimeKeyConfig {
        ttl: p.seconds("onetimekey.ttl", raw.onetimekey.ttl, 10, 3600),
        realm: raw.onetimekey.realm,
    };
    if onetimekey.realm.is_empty() || onetimekey.realm.contains(':') {
        p.add("onetimekey.realm", "must be non-empty and contain no ':'");
    }

    let limits = Limits {
        max_header_bytes: p.count(
            "limits.max_header_bytes",
            raw.limits.max_header_bytes,
            1024,
            1 << 20,
        ),
        max_headers: p.count(
            "limits.max_headers",
            raw.limits.max_headers,
            8,
            MAX_MAX_HEADERS,
        ),
        max_body_bytes: p.count(
            "limits.max_body_bytes",
            raw.limits.max_body_bytes,
            1024,
            16 << 20,
        ),
        max_proxy_body_bytes: raw.limits.max_proxy_body_bytes.map(|bytes| {
            if !(1..=MAX_PROXY_BODY_BYTES).contains(&bytes) {
                p.add(
                    "limits.max_proxy_body_bytes",
                    format_args!(
                        "must be between 1 and {MAX_PROXY_BODY_BYTES} (leave it out for no limit), got {bytes}"
                    ),
                );
            }
            bytes.clamp(1, MAX_PROXY_BODY_BYTES)
        }),
        header_read_timeout: p.seconds(
            "limits.header_read_timeout",
            raw.limits.header_read_timeout,
            1,
            300,
        ),
        idle_timeout: p.seconds("limits.idle_timeout", raw.limits.idle_timeout, 1, 3600),
        max_connections: p.count(
            "limits.max_connections",
            raw.limits.max_connections,
            1,
            1_000_000,
        ),
    };

    let upstream = UpstreamConfig {
        ca_file: raw.upstream.ca_file.clone(),
        client_cert: match (&raw.upstream.client_cert, &raw.upstream.client_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                p.add(
                    "upstream.client_cert",
                    "client_cert and client_key go together",
                );
                None
            }
        },
        connect_timeout: p.seconds(
            "upstream.connect_timeout",
            raw.upstream.connect_timeout,
            1,
            300,
        ),
        timeout: p.seconds("upstream.timeout", raw.upstream.timeout, 1, 3600),
        pool_idle_timeout: p.seconds(
            "upstream.pool_idle_timeout",
            raw.upstream.pool_idle_timeout,
            1,
            3600,
        ),
        pool_max_idle_per_host: p.count(
            "upstream.pool_max_idle_per_host",
            raw.upstream.pool_max_idle_per_host,
            0,
            10_000,
        ),
    };
    for (key, path) in [
        ("upstream.ca_file", &raw.upstream.ca_file),
        ("upstream.client_cert", &raw.upstream.client_cert),
        ("upstream.client_key", &raw.upstream.client_key),
    ] {
        if let Some(path) = path {
            p.readable_file(key, path);
        }
    }

    let login = LoginConfig {
        max_failures: u32::try_from(p.count("login.max_failures", raw.login.max_failures, 1, 1000))
            .unwrap_or(u32::MAX),
        address_max_failures: u32::try_from(p.count(
            "login.address_max_failures",
            raw.login.address_max_failures,
            1,
            1_000_000,
        ))
        .unwrap_or(u32::MAX),
        max_concurrent_hashes: match p.count(
            "login.max_concurrent_hashes",
            raw.login.max_concurrent_hashes,
            0,
            MAX_CONCURRENT_HASHES,
        ) {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        },
        window: p.seconds("login.window", raw.login.window, 1, 86_400),
        lockout: p.seconds("login.lockout", raw.login.lockout, 1, 86_400),
    };

    let cache = CacheConfig {
        max_entries: p.count("cache.max_entries", raw.cache.max_entries, 100, 100_000_000),
        ttl: p.seconds("cache.ttl", raw.cache.ttl, 1, 86_400),
        negative_ttl: p.seconds("cache.negative_ttl", raw.cache.negative_ttl, 1, 3600),
    };

    // Without valid JWT keys the config fails anyway; the providers are
    // still checked so every problem is listed.
    let no_root = crate::token::state::RootSecret::new(Vec::new());
    let root = jwt.as_ref().map_or(&no_root, |jwt| &jwt.derive_root);
    let oidc = validate_oidc(raw.oidc, root, p);
    let routes = validate_routes(raw.route, &upstream, p);
    for route in routes.iter() {
        if let Some(login) = &route.login
            && !oidc.iter().any(|provider| provider.name == **login)
        {
            p.add(
                "route.login",
                format_args!(
                    "{login:?} (route {:?}) names no [[oidc]] provider",
                    route.prefix
                ),
            );
        }
    }
    let ratelimit = ratelimit::validate(raw.ratelimit, p);

    Some(Config {
        server,
        store,
        jwt: jwt?,
        onetimekey,
        limits,
        upstream,
        login,
        cache,
        routes,
        oidc,
        ratelimit,
    })
}

/// `[[oidc]]`: names unique and path-safe, URLs absolute, files readable.
fn validate_oidc(
    raw: Vec<RawOidc>,
    root: &crate::token::state::RootSecret,
    p: &mut Problems,
) -> Vec<OidcProviderConfig> {
    let mut providers: Vec<OidcProviderConfig> = Vec::with_capacity(raw.len());
    for (index, provider) in raw.into_iter().enumerate() {
        let at = format!("oidc[{index}]");
        let name_ok = (1..=32).contains(&provider.name.len())
            && provider
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            p.add(
                &format!("{at}.name"),
                format_args!("{:?} must be 1 to 32 of a-z 0-9 -", provider.name),
            );
        }
        if providers.iter().any(|other| other.name == provider.name) {
            p.add(&format!("{at}.name"), "two providers with the same name");
        }
        for (key, url) in [
            ("issuer", &provider.issuer),
            ("redirect_url", &provider.redirect_url),
        ] {
            let ok = url.parse::<Uri>().is_ok_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
            });
            if !ok {
                p.add(
                    &format!("{at}.{key}"),
                    format_args!("{url:?} is not an http(s) URL"),
                );
            }
        }
        if provider.client_id.is_empty() {
            p.add(&format!("{at}.client_id"), "must not be empty");
        }
        if !provider.scopes.iter().any(|scope| scope == "openid") {
            p.add(&format!("{at}.scopes"), "must include \"openid\"");
        }
        if provider.username_claim.is_empty() {
            p.add(&format!("{at}.username_claim"), "must not be empty");
        }
        if let Some(path) = &provider.ca_file {
            p.readable_file(&format!("{at}.ca_file"), path);
        }
        let secret = match std::fs::read_to_string(&provider.client_secret_file) {
            Ok(text) => {
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text).to_owned();
                if text.is_empty() {
                    p.add(&format!("{at}.client_secret_file"), "the file is empty");
                }
                text
            }
            Err(err) => {
                p.add(
                    &format!("{at}.client_secret_file"),
                    format_args!(
                        "cannot read {}: {err}",
                        provider.client_secret_file.display()
                    ),
                );
                String::new()
            }
        };
        let sealer = crate::token::state::Sealer::derive(
            root,
            secret.as_bytes(),
            &format!("oidc:{}", provider.name),
        );
        providers.push(OidcProviderConfig {
            client_secret_text: SecretText(secret),
            name: provider.name,
            issuer: provider.issuer,
            client_id: provider.client_id,
            redirect_url: provider.redirect_url,
            scopes: provider.scopes,
            username_claim: provider.username_claim,
            roles_claim: provider.roles_claim.filter(|claim| !claim.is_empty()),
            ca_file: provider.ca_file,
            sealer: Arc::new(sealer),
        });
    }
    providers
}

fn validate_server(raw: RawServer, p: &mut Problems) -> ServerConfig {
    let listen = raw
        .listen
        .as_deref()
        .and_then(|value| p.socket_addr("server.listen", value));
    let tls = raw.tls.and_then(|tls| {
        p.readable_file("server.tls.cert", &tls.cert);
        p.readable_file("server.tls.key", &tls.key);
        if let Some(ca) = &tls.client_ca {
            p.readable_file("server.tls.client_ca", ca);
        }
        let client_cert_required = match (tls.client_auth.as_deref(), &tls.client_ca) {
            (None | Some("required"), _) => true,
            (Some("optional"), _) => false,
            (Some(other), _) => {
                p.add(
                    "server.tls.client_auth",
                    format_args!("{other:?} must be \"required\" or \"optional\""),
                );
                true
            }
        };
        if tls.client_auth.is_some() && tls.client_ca.is_none() {
            p.add("server.tls.client_auth", "needs server.tls.client_ca");
        }
        let listen = p.socket_addr("server.tls.listen", &tls.listen)?;
        Some(TlsConfig {
            listen,
            cert: tls.cert,
            key: tls.key,
            client_ca: tls.client_ca,
            client_cert_required,
        })
    });
    if raw.listen.is_none() && tls.is_none() {
        p.add(
            "server.listen",
            "set server.listen or [server.tls] (or both)",
        );
    }
    let mut trusted_proxies = Vec::with_capacity(raw.trusted_proxies.len());
    for entry in &raw.trusted_proxies {
        let parsed = entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => p.add(
                "server.trusted_proxies",
                format_args!("{entry:?} is not an IP address or CIDR range"),
            ),
        }
    }
    let admin_listen = validate_admin_listen(raw.admin_listen.as_deref(), listen, &tls, p);
    ServerConfig {
        trusted_proxies,
        listen,
        admin_listen,
        tls,
        shutdown_grace: p.seconds("server.shutdown_grace", raw.shutdown_grace, 0, 3600),
    }
}

/// `server.admin_listen`: an address that cannot collide with the other
/// listeners (the same port on the same or a wildcard address; port 0 asks
/// for a fresh port each time and so never collides).
fn validate_admin_listen(
    raw: Option<&str>,
    listen: Option<SocketAddr>,
    tls: &Option<TlsConfig>,
    p: &mut Problems,
) -> Option<SocketAddr> {
    let admin = p.socket_addr("server.admin_listen", raw?)?;
    let collides = |other: SocketAddr| {
        admin.port() != 0
            && admin.port() == other.port()
            && (admin.ip() == other.ip()
                || admin.ip().is_unspecified()
                || other.ip().is_unspecified())
    };
    for (key, other) in [
        ("server.listen", listen),
        ("server.tls.listen", tls.as_ref().map(|t| t.listen)),
    ] {
        if let Some(other) = other.filter(|other| collides(*other)) {
            p.add(
                "server.admin_listen",
                format_args!("{admin} is the address of {key} ({other}); use another port"),
            );
            return None;
        }
    }
    Some(admin)
}

fn validate_store(raw: RawStore, p: &mut Problems) -> StoreConfig {
    let url = match parse_store_url(&raw.url) {
        Ok(url) => url,
        Err(problem) => {
            p.add("store.url", problem);
            StoreUrl::Sqlite(PathBuf::from("data/authgate.db"))
        }
    };
    let poll_ms = p.count("store.poll_interval_ms", raw.poll_interval_ms, 50, 2_000);
    StoreConfig {
        url,
        poll_interval: Duration::from_millis(poll_ms as u64),
    }
}

/// `sqlite://relative/path`, `sqlite:///absolute/path`, or `postgres://...`.
pub fn parse_store_url(url: &str) -> Result<StoreUrl, String> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err("an SQLite store needs a file path, e.g. sqlite://data/authgate.db".into());
        }
        return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(StoreUrl::Postgres(url.to_owned()));
    }
    Err("must start with sqlite:// or postgres://".into())
}

fn validate_jwt(raw: RawJwt, p: &mut Problems) -> Option<JwtConfig> {
    let problems_before = p.0.len();
    if raw.issuer.is_empty() {
        p.add("jwt.issuer", "must not be empty");
    }
    let secret = raw
        .secret_file
        .as_ref()
        .and_then(|path| read_secret(path, p));
    if raw.secret_file.is_none() && raw.keys.is_empty() {
        p.add("jwt.secret_file", "set secret_file (HS256) or [[jwt.keys]]");
    }
    let mut specs = Vec::with_capacity(raw.keys.len());
    for (index, key) in raw.keys.iter().enumerate() {
        let at = format!("jwt.keys[{index}]");
        if !valid_kid(&key.kid) {
            p.add(&format!("{at}.kid"), "must be 1 to 64 of A-Z a-z 0-9 . _ -");
        }
        let Some(algorithm) = parse_algorithm(&key.algorithm) else {
            p.add(
                &format!("{at}.algorithm"),
                format_args!("{:?} must be RS256, ES256 or EdDSA", key.algorithm),
            );
            continue;
        };
        let read = |field: &str, path: &Path, p: &mut Problems| match std::fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                p.add(
                    &format!("{at}.{field}"),
                    format_args!("cannot read {}: {err}", path.display()),
                );
                None
            }
        };
        let public_pem = read("public_key", &key.public_key, p);
        let private_pem = match &key.private_key {
            Some(path) => match read("private_key", path, p) {
                Some(bytes) => Some(bytes),
                None => continue,
            },
            None => None,
        };
        if let Some(public_pem) = public_pem {
            specs.push(KeySpec {
                kid: key.kid.clone(),
                algorithm,
                private_pem,
                public_pem,
            });
        }
    }
    let mut external = Vec::with_capacity(raw.jwks.len());
    for (index, source) in raw.jwks.into_iter().enumerate() {
        let at = format!("jwt.jwks[{index}]");
        let url = match source.url.parse::<Uri>() {
            Ok(url)
                if matches!(url.scheme_str(), Some("http" | "https"))
                    && url.authority().is_some() =>
            {
                url
            }
            _ => {
                p.add(
                    &format!("{at}.url"),
                    format_args!("{:?} is not an http(s) URL", source.url),
                );
                continue;
            }
        };
        if source.issuer.is_empty() || source.issuer == raw.issuer {
            p.add(
                &format!("{at}.issuer"),
                "must be set and differ from jwt.issuer",
            );
        }
        if external
            .iter()
            .any(|e: &JwksSource| e.issuer == source.issuer)
        {
            p.add(
                &format!("{at}.issuer"),
                "two providers with the same issuer",
            );
        }
        external.push(JwksSource {
            url,
            issuer: source.issuer,
            audience: source.audience,
            roles_claim: source.roles_claim,
            refresh: p.seconds(&format!("{at}.refresh"), source.refresh, 10, 86_400),
            min_refresh: p.seconds(&format!("{at}.min_refresh"), source.min_refresh, 1, 3600),
        });
    }
    let ttl = p.seconds("jwt.ttl", raw.ttl, 60, 366 * 86_400);
    let leeway = p.seconds("jwt.leeway", raw.leeway, 0, 600).as_secs();
    if p.0.len() > problems_before {
        return None;
    }
    // Every replica has the same signing material: keys derived from it
    // are shared without another secret to distribute.
    let derive_root = crate::token::state::RootSecret::new(
        secret
            .clone()
            .or_else(|| specs.iter().find_map(|spec| spec.private_pem.clone()))
            .unwrap_or_default(),
    );
    match JwtKeys::try_new(&raw.issuer, ttl, leeway, secret.as_deref(), &specs) {
        Ok(keys) => Some(JwtConfig {
            issuer: raw.issuer,
            ttl,
            leeway,
            keys: Arc::new(keys),
            external,
            derive_root,
        }),
        Err(problem) => {
            p.add("jwt.keys", problem);
            None
        }
    }
}

/// The HS256 secret: the file's bytes, one trailing newline stripped.
fn read_secret(path: &Path, p: &mut Problems) -> Option<Vec<u8>> {
    let mut bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            p.add(
                "jwt.secret_file",
                format_args!("cannot read {}: {err}", path.display()),
            );
            return None;
        }
    };
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.len() < MIN_SECRET_BYTES {
        p.add(
            "jwt.secret_file",
            format_args!(
                "the secret has {} bytes; at least {MIN_SECRET_BYTES} are required",
                bytes.len()
            ),
        );
        return None;
    }
    Some(bytes)
}

fn validate_routes(raw: Vec<RawRoute>, upstream: &UpstreamConfig, p: &mut Problems) -> RouteTable {
    let mut routes = Vec::with_capacity(raw.len());
    for (index, route) in raw.into_iter().enumerate() {
        let key = format!("route[{index}]");
        let prefix = route.path_prefix;
        if !prefix.starts_with('/') {
            p.add(
                &format!("{key}.path_prefix"),
                format_args!("{prefix:?} must start with '/'"),
            );
        }
        if prefix.starts_with(RESERVED_PREFIX) || prefix == RESERVED_PREFIX.trim_end_matches('/') {
            p.add(
                &format!("{key}.path_prefix"),
                format_args!("{RESERVED_PREFIX} is reserved for the gateway's own pages"),
            );
        }
        if crate::routes::check_path(&prefix).is_err() {
            p.add(
                &format!("{key}.path_prefix"),
                "must be a normal path (no dot segments, empty segments or encoded separators)",
            );
        } else if !crate::routes::valid_prefix(&prefix) {
            p.add(
                &format!("{key}.path_prefix"),
                "may contain only A-Z a-z 0-9 - . _ ~ and /, so that no escaped spelling of a path routes elsewhere",
            );
        }
        if !crate::routes::prefix_reads_one_way(&prefix) {
            p.add(
                &format!("{key}.path_prefix"),
                "no segment may end in '.' or '~': servers that trim them would read another path",
            );
        }
        let auth = match route.auth.as_str() {
            "required" => RouteAuth::Required,
            "public" => RouteAuth::Public,
            other => {
                p.add(
                    &format!("{key}.auth"),
                    format_args!("{other:?} must be \"required\" or \"public\""),
                );
                RouteAuth::Required
            }
        };
        if auth == RouteAuth::Public && !route.roles.is_empty() {
            p.add(
                &format!("{key}.roles"),
                "a public route cannot require roles",
            );
        }
        for role in &route.roles {
            if !crate::names::valid_role(role) {
                p.add(
                    &format!("{key}.roles"),
                    format_args!("{role:?} is not a valid role name"),
                );
            }
        }
        let timeout = match route.timeout {
            Some(seconds) => p.seconds(&format!("{key}.timeout"), seconds, 1, 3600),
            None => upstream.timeout,
        };
        // A route without `upstream` serves only forward authentication.
        match route.upstream.as_deref().map(parse_upstream).transpose() {
            Ok(upstream) => routes.push(Route {
                label: prefix.as_str().into(),
                prefix,
                upstream,
                auth,
                roles: route.roles,
                timeout,
                login: route.login.map(Arc::from),
            }),
            Err(problem) => p.add(&format!("{key}.upstream"), problem),
        }
    }
    let table = RouteTable::new(routes);
    for duplicate in table.duplicate_prefixes() {
        p.add(
            "route",
            format_args!("path_prefix {duplicate:?} appears more than once (prefixes compare ignoring ASCII case)"),
        );
    }
    table
}

/// An upstream base URL: `http://host:port` with an optional path prefix.
fn parse_upstream(value: &str) -> Result<Uri, String> {
    let uri: Uri = value
        .parse()
        .map_err(|_| format!("{value:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {}
        _ => return Err(format!("{value:?} must start with http:// or https://")),
    }
    if uri.authority().is_none() {
        return Err(format!("{value:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{value:?} must not have a query string"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn secret_file() -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "0123456789abcdef0123456789abcdef-secret").unwrap();
        file
    }

    fn minimal(secret: &Path, extra: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[jwt]\nsecret_file = {:?}\n{extra}",
            secret.display().to_string()
        )
    }

    fn oidc_section(name: &str, secret: &Path) -> String {
        format!(
            "[[oidc]]\nname = \"{name}\"\nissuer = \"https://idp.example.com\"\nclient_id = \"authgate\"\n\
             client_secret_file = {:?}\nredirect_url = \"https://gw.example.com/auth/oidc/{name}/callback\"\n",
            secret.display().to_string()
        )
    }

    #[test]
    fn oidc_providers_get_defaults_and_routes_must_name_one() {
        let secret = secret_file();
        let route = |login: &str| {
            format!(
                "[[route]]\npath_prefix = \"/app\"\nupstream = \"http://127.0.0.1:9\"\nlogin = \"{login}\"\n"
            )
        };
        let text = minimal(
            secret.path(),
            &format!("{}{}", route("corp"), oidc_section("corp", secret.path())),
        );
        let config = Config::from_toml(&text).unwrap();
        let corp = &config.oidc[0];
        assert_eq!(corp.scopes, ["openid", "email", "profile"]);
        assert_eq!(corp.username_claim, "sub");
        assert_eq!(corp.roles_claim, None);
        assert_eq!(
            corp.client_secret_text(),
            "0123456789abcdef0123456789abcdef-secret",
            "one trailing newline stripped"
        );
        assert!(!format!("{config:?}").contains("0123456789abcdef0123456789abcdef-secret"));
        assert_eq!(
            config
                .routes
                .iter()
                .find(|r| r.prefix == "/app")
                .unwrap()
                .login
                .as_deref(),
            Some("corp")
        );

        let text = minimal(
            secret.path(),
            &format!("{}{}", route("nope"), oidc_section("corp", secret.path())),
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{:?}", err.problems);
        assert!(
            err.problems[0].starts_with("route.login: \"nope\""),
            "{:?}",
            err.problems
        );

        let text = minimal(
            secret.path(),
            &format!(
                "{}{}",
                oidc_section("Bad/Name", secret.path()),
                oidc_section("corp", Path::new("/nonexistent/oidc.secret"))
            ),
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert!(
            err.problems.iter().any(|p| p.starts_with("oidc[0].name: ")),
            "{:?}",
            err.problems
        );
        assert!(
            err.problems
                .iter()
                .any(|p| p.starts_with("oidc[1].client_secret_file: cannot read")),
            "{:?}",
            err.problems
        );
    }

    #[test]
    fn every_unknown_key_is_one_problem_with_a_suggestion() {
        let secret = secret_file();
        let text = format!(
            "lmits = 1\n[server]\nlisten = \"127.0.0.1:0\"\nlisen = \"x\"\n\
             [server.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"c\"\nkey = \"k\"\ncrt = \"c\"\n\
             [jwt]\nsecret_file = {:?}\nzzzzzz = 1\n\
             [[route]]\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\n\
             [[route]]\npath_prefx = \"/b\"\nupstream = \"http://127.0.0.1:9\"\nAuth = \"public\"\n",
            secret.path().display().to_string()
        );
        let err = Config::from_toml(&text).unwrap_err();
        let mut problems = err.problems.clone();
        problems.retain(|p| p.contains("unknown key"));
        problems.sort();
        assert_eq!(
            problems,
            vec![
                "jwt.zzzzzz: unknown key",
                "lmits: unknown key (did you mean limits?)",
                "route[1].Auth: unknown key (did you mean route[1].auth?)",
                "route[1].path_prefx: unknown key (did you mean route[1].path_prefix?)",
                "server.lisen: unknown key (did you mean server.listen?)",
                "server.tls.crt: unknown key (did you mean server.tls.cert?)",
            ],
            "{:?}",
            err.problems
        );
    }

    #[test]
    fn known_keys_come_from_the_raw_structs() {
        for path in [
            "",
            "server",
            "server.tls",
            "store",
            "jwt",
            "jwt.keys",
            "jwt.jwks",
            "onetimekey",
            "limits",
            "upstream",
            "login",
            "cache",
            "route",
            "oidc",
            "ratelimit",
            "ratelimit.rule",
        ] {
            let keys = known_keys(path).unwrap();
            assert!(!keys.is_empty(), "{path:?}");
        }
        assert!(
            known_keys("server")
                .unwrap()
                .contains(&"admin_listen".to_owned())
        );
        assert_eq!(edit_distance("crt", "cert"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(closest("x", &["key".to_owned()]), None);
    }

    #[test]
    fn admin_listen_must_not_collide_with_another_listener() {
        let secret = secret_file();
        let with = |listen: &str, admin: &str| {
            let text = format!(
                "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\n[jwt]\nsecret_file = {:?}\n",
                secret.path().display().to_string()
            );
            Config::from_toml(&text).map(|c| c.server.admin_listen)
        };
        assert_eq!(
            with("127.0.0.1:8080", "127.0.0.1:9901").unwrap(),
            Some("127.0.0.1:9901".parse().unwrap())
        );
        // Port 0 is a fresh port each time; another address on the port is fine.
        assert!(with("127.0.0.1:0", "127.0.0.1:0").is_ok());
        assert!(with("127.0.0.1:8080", "127.0.0.2:8080").is_ok());
        for (listen, admin) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:8080", "0.0.0.0:8080"),
            ("[::]:8080", "127.0.0.1:8080"),
        ] {
            let err = with(listen, admin).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{:?}", err.problems);
            assert!(
                err.problems[0].starts_with("server.admin_listen: ")
                    && err.problems[0].contains("server.listen"),
                "{:?}",
                err.problems
            );
        }
        let err = with("127.0.0.1:8080", "metrics").unwrap_err();
        assert!(err.problems[0].starts_with("server.admin_listen: "));
        assert_eq!(
            Config::from_toml(&minimal(secret.path(), ""))
                .unwrap()
                .server
                .admin_listen,
            None
        );
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let secret = secret_file();
        let config = Config::from_toml(&minimal(secret.path(), "")).unwrap();
        assert_eq!(config.jwt.ttl, Duration::from_secs(604_800));
        assert_eq!(config.jwt.leeway, 30);
        assert_eq!(config.jwt.issuer, "authgate");
        assert_eq!(config.onetimekey.realm, "voximplant.com");
        assert_eq!(config.onetimekey.ttl, Duration::from_secs(300));
        assert_eq!(config.limits.max_header_bytes, 16384);
        assert_eq!(config.limits.max_body_bytes, 65536);
        assert_eq!(config.upstream.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.upstream.timeout, Duration::from_secs(30));
        assert_eq!(config.login.max_failures, 5);
        assert_eq!(
            config.store.url,
            StoreUrl::Sqlite("data/authgate.db".into())
        );
        // One trailing newline stripped, the rest kept: a token signed with
        // exactly those bytes verifies.
        let claims = serde_json::json!({
            "sub": "a", "iss": "authgate", "iat": 1, "nbf": 1,
            "exp": i64::MAX / 2, "jti": "j", "gen": 1
        });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef-secret"),
        )
        .unwrap();
        assert!(config.jwt.keys.verify(&token, 2).is_ok());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let secret = secret_file();
        let err = Config::from_toml(&minimal(secret.path(), "[limits]\nmax_header_byte = 1\n"))
            .unwrap_err();
        assert!(err.to_string().contains("max_header_byte"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let secret = secret_file();
        let text = minimal(
            secret.path(),
            "[onetimekey]\nttl = 0\n[[route]]\npath_prefix = \"api\"\nupstream = \"ftp://x\"\nauth = \"maybe\"\n",
        );
        let err = Config::from_toml(&text).unwrap_err();
        let all = err.problems.join("\n");
        for key in [
            "onetimekey.ttl",
            "route[0].path_prefix",
            "route[0].upstream",
            "route[0].auth",
        ] {
            assert!(all.contains(key), "missing {key} in:\n{all}");
        }
    }

    #[test]
    fn short_or_missing_secrets_are_refused() {
        let mut short = tempfile::NamedTempFile::new().unwrap();
        writeln!(short, "too-short").unwrap();
        let err = Config::from_toml(&minimal(short.path(), "")).unwrap_err();
        assert!(err.to_string().contains("at least 32"), "{err}");
        let err = Config::from_toml(&minimal(Path::new("/nonexistent/secret"), "")).unwrap_err();
        assert!(err.to_string().contains("jwt.secret_file"), "{err}");
    }

    #[test]
    fn reserved_prefix_and_duplicates_are_refused() {
        let secret = secret_file();
        let text = minimal(
            secret.path(),
            "[[route]]\npath_prefix = \"/_authgate/x\"\nupstream = \"http://127.0.0.1:1\"\n\
             [[route]]\npath_prefix = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n\
             [[route]]\npath_prefix = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n",
        );
        let all = Config::from_toml(&text).unwrap_err().problems.join("\n");
        assert!(all.contains("reserved"), "{all}");
        assert!(all.contains("more than once"), "{all}");
    }

    #[test]
    fn request_limits() {
        let secret = secret_file();
        let config = Config::from_toml(&minimal(secret.path(), "")).unwrap();
        assert_eq!(config.limits.max_headers, 100);
        assert_eq!(config.limits.max_proxy_body_bytes, None);
        let config = Config::from_toml(&minimal(
            secret.path(),
            "[limits]\nmax_headers = 50\nmax_proxy_body_bytes = 1048576\n",
        ))
        .unwrap();
        assert_eq!(config.limits.max_headers, 50);
        assert_eq!(config.limits.max_proxy_body_bytes, Some(1 << 20));
        let err = Config::from_toml(&minimal(
            secret.path(),
            "[limits]\nmax_headers = 2\nmax_proxy_body_bytes = 0\n",
        ))
        .unwrap_err();
        let all = err.problems.join("\n");
        assert!(all.contains("limits.max_headers"), "{all}");
        assert!(all.contains("limits.max_proxy_body_bytes"), "{all}");
    }

    #[test]
    fn route_prefixes_have_one_spelling() {
        let secret = secret_file();
        for good in ["/", "/api", "/v1.0/x_y-z~a/", "/~user"] {
            let text = minimal(
                secret.path(),
                &format!("[[route]]\npath_prefix = {good:?}\nupstream = \"http://127.0.0.1:1\"\n"),
            );
            assert!(Config::from_toml(&text).is_ok(), "{good}");
        }
        // A segment ending in `.` or `~` is another path to servers that
        // trim them.
        for bad in ["/a:b", "/a%20b", "/a;b", "/a@b", "/v1.0/x_y-z~/", "/api."] {
            let text = minimal(
                secret.path(),
                &format!("[[route]]\npath_prefix = {bad:?}\nupstream = \"http://127.0.0.1:1\"\n"),
            );
            let all = Config::from_toml(&text).unwrap_err().problems.join("\n");
            assert!(all.contains("route[0].path_prefix"), "{bad}: {all}");
        }
    }

    #[test]
    fn store_urls() {
        assert_eq!(
            parse_store_url("sqlite:///var/lib/authgate/a.db").unwrap(),
            StoreUrl::Sqlite("/var/lib/authgate/a.db".into())
        );
        assert_eq!(
            parse_store_url("sqlite://data/a.db").unwrap(),
            StoreUrl::Sqlite("data/a.db".into())
        );
        assert!(matches!(
            parse_store_url("postgres://localhost/test").unwrap(),
            StoreUrl::Postgres(_)
        ));
        assert!(parse_store_url("mysql://x").is_err());
        assert!(parse_store_url("sqlite://").is_err());
    }

    #[test]
    fn login_thresholds_and_hash_bound() {
        let secret = secret_file();
        let config = Config::from_toml(&minimal(secret.path(), "")).unwrap();
        assert_eq!(config.login.max_failures, 5);
        assert_eq!(config.login.address_max_failures, 50);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(config.login.max_concurrent_hashes, cores, "0 = the cores");
        let text = minimal(
            secret.path(),
            "[login]\nmax_failures = 3\naddress_max_failures = 7\nmax_concurrent_hashes = 1\n",
        );
        let config = Config::from_toml(&text).unwrap();
        assert_eq!(
            (
                config.login.max_failures,
                config.login.address_max_failures,
                config.login.max_concurrent_hashes
            ),
            (3, 7, 1)
        );
        for (bad, key) in [
            ("address_max_failures = 0", "login.address_max_failures"),
            (
                "max_concurrent_hashes = 5000",
                "login.max_concurrent_hashes",
            ),
        ] {
            let text = minimal(secret.path(), &format!("[login]\n{bad}\n"));
            let all = Config::from_toml(&text).unwrap_err().problems.join("\n");
            assert!(all.contains(key), "{bad}: {all}");
        }
    }
}
