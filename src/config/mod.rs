//! Configuration: the validated [`Config`] the gateway runs with, and how
//! it is made: the file's text (`raw`) is checked for unknown keys (`keys`)
//! and validated (`validate`), every problem collected instead of stopping
//! at the first, so `check-config` can print them all. The disk is read in
//! two places only: [`Config::load`] reads the config file, and [`Disk`],
//! behind the [`Files`] seam, the files it names; [`Config::from_toml_in`]
//! with files in memory touches no disk.

mod env;
mod keys;
pub mod ratelimit;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::routes::RouteTable;
use crate::token::jwks::JwksSource;
use crate::token::jwt::JwtKeys;

use keys::*;
use raw::*;

pub use validate::parse_store_url;
use validate::*;

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

/// Highest `login.max_queued_hashes`: a queued login holds only its
/// connection and its small request body, not a hash's memory.
const MAX_QUEUED_HASHES: u64 = 100_000;

/// Highest `limits.max_streams_per_connection` (h2's own ceiling is 2^31-1;
/// beyond a few thousand one client holds a worker's share alone).
const MAX_STREAMS_PER_CONNECTION: u64 = 10_000;

/// Highest `onetimekey.max_per_address`.
const MAX_ONETIME_KEYS_PER_ADDRESS: u64 = 10_000;

/// Highest `audit.keep_days` (about a hundred years).
const MAX_AUDIT_KEEP_DAYS: i64 = 36_500;

/// Highest `accesskeys.max_per_user`.
const MAX_KEYS_PER_USER: u64 = 1_000_000;

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
    /// Access-key bounds (`[accesskeys]`).
    pub accesskeys: AccessKeysConfig,
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
    /// `[assertion]`: a signed identity assertion on every authenticated
    /// proxied request.
    pub assertion: Option<AssertionConfig>,
    /// `[audit]`: the audit log's retention.
    pub audit: AuditConfig,
    /// `[telemetry]`: OpenTelemetry traces over OTLP/HTTP.
    pub telemetry: Option<TelemetryConfig>,
}

/// `[audit]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    /// Days an audit event is kept (`audit.keep_days`, default 90).
    pub keep_days: u32,
}

/// `[telemetry]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Where spans are POSTed: `otlp_endpoint` with `/v1/traces` appended.
    pub traces_url: http::Uri,
    /// `service.name` of the exported resource.
    pub service_name: Arc<str>,
    /// Share of new traces sampled, `0.0..=1.0`; a client's valid
    /// `traceparent` decides for its own trace.
    pub sample_ratio: f64,
}

/// `[assertion]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionConfig {
    /// `aud` unless the route names its own.
    pub audience: Arc<str>,
    /// Lifetime of an assertion.
    pub ttl: Duration,
    /// What an assertion is bound to.
    pub bind: AssertionBinding,
}

/// What an assertion is good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionBinding {
    /// The caller and the route: reusable for part of its life.
    Identity,
    /// Also this request's method, path and id (`htm`, `htu`, `jti`).
    Request,
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
    /// With `username_claim = "email"`: accept an email the provider has
    /// not verified (`email_verified` not `true`).
    pub allow_unverified_email: bool,
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
    /// Peers that must open each connection with a PROXY protocol header
    /// (v1 or v2), whose client address is then the connection's.
    pub proxy_protocol: Vec<IpNet>,
    /// Whether the plain listener answers 308 to `https://` (ACME's
    /// http-01 path, health checks and forward auth excepted).
    pub redirect_https: bool,
    /// `server.credentials_in_query` (default `true`): whether `?token=`
    /// and `?accesskey=` are accepted; when `false` they are refused with
    /// 400 `CREDENTIAL_IN_QUERY` everywhere.
    pub credentials_in_query: bool,
}

/// The HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// The certificate for handshakes no other one is chosen for (`cert`
    /// and `key`); without one such handshakes fail.
    pub default: Option<CertificateConfig>,
    /// `[[server.tls.certificates]]`, chosen by SNI, first listed first.
    pub certificates: Vec<CertificateConfig>,
    /// `Strict-Transport-Security` for answers on the HTTPS listener.
    pub hsts: Option<http::HeaderValue>,
    /// `[server.tls.acme]`: certificates ordered and renewed automatically.
    pub acme: Option<AcmeConfig>,
    /// CA certificates (PEM) that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (`true`) or only checked
    /// when one is sent.
    pub client_cert_required: bool,
}

/// `[server.tls.acme]`: an ACME (RFC 8555) account and the certificate it
/// orders for `domains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The directory URL (`https://`).
    pub directory: String,
    /// The names the certificate is for: DNS names, no wildcards.
    pub domains: Vec<String>,
    /// `mailto:` contacts given to the CA when the account is made.
    pub contact: Vec<String>,
    /// How the CA checks that the names are ours.
    pub challenge: AcmeChallenge,
    /// Where the account key and certificates are kept across restarts.
    pub cache_dir: PathBuf,
    /// Extra PEM roots trusted for the directory (a private or test CA).
    pub ca_file: Option<PathBuf>,
}

/// The ACME challenge type answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// RFC 8737: a certificate for the name on the TLS listener, ALPN
    /// `acme-tls/1`.
    TlsAlpn01,
    /// RFC 8555 section 8.3: `/.well-known/acme-challenge/<token>` on the
    /// plain listener.
    Http01,
}

/// A certificate and key file pair, and the names it is served for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    /// Names (`api.example.com`, `*.example.com`); empty: the
    /// certificate's own DNS names.
    pub names: Vec<ServedName>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A name a certificate is served for: `api.example.com`, or a wildcard
/// covering exactly one label (`*.example.com`, kept as its parent).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServedName {
    /// One host name, lowercase.
    Exact(String),
    /// Any one label followed by this parent domain, lowercase.
    Wildcard(String),
}

impl ServedName {
    /// Parses a DNS name as a certificate's SAN or the config names it:
    /// letters, digits, `-` and `.`, labels of 1 to 63 characters, a
    /// wildcard only as a whole leftmost label with at least two labels
    /// after it. Case is folded.
    pub fn parse(name: &str) -> Result<ServedName, &'static str> {
        let lower = name.to_ascii_lowercase();
        let (wildcard, host) = match lower.strip_prefix("*.") {
            Some(parent) => (true, parent),
            None => (false, lower.as_str()),
        };
        if host.is_empty() || host.len() > 253 {
            return Err("is not a DNS name");
        }
        let labels_ok = host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !labels_ok {
            return Err(
                "is not a DNS name (letters, digits, '-' and '.'; a wildcard only as a whole first label)",
            );
        }
        if wildcard {
            if !host.contains('.') {
                return Err("is a wildcard over a top-level domain");
            }
            return Ok(ServedName::Wildcard(host.to_owned()));
        }
        Ok(ServedName::Exact(host.to_owned()))
    }
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
    /// One-time keys outstanding per client address (IPv6 per /64).
    pub max_per_address: usize,
}

/// Access-key bounds.
#[derive(Debug, Clone)]
pub struct AccessKeysConfig {
    /// Unexpired keys one user may hold (`accesskeys.max_per_user`).
    pub max_per_user: usize,
    /// The request header that carries an access key (`accesskeys.header`,
    /// default `X-API-Key`); `None` when set to `""`.
    pub header: Option<http::HeaderName>,
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
    /// Proxied requests in flight to one upstream at once, HTTP/2 streams
    /// and open WebSocket tunnels included; beyond, 503 `UPSTREAM_BUSY`.
    pub max_upstream_requests: usize,
    /// HTTP/2 streams open at once on one client connection.
    pub max_streams_per_connection: u32,
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
    /// 0 in the file, the default, means the number of cores): each
    /// argon2id hash holds 19 MiB while it runs. Logins beyond it wait in
    /// the queue (`max_queued_hashes`).
    pub max_concurrent_hashes: usize,
    /// Logins that wait for a hashing slot (at most
    /// [`crate::auth::password::HASH_QUEUE_WAIT`]) when every slot is
    /// taken; beyond, 503 `LOGIN_BUSY` at once (`login.max_queued_hashes`).
    pub max_queued_hashes: usize,
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

/// Where validation reads the files a config names (secrets, keys,
/// certificates): the one seam between the config and the disk.
pub trait Files {
    /// The bytes of the file at `path`.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// The files on disk, relative paths against the working directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

impl Config {
    /// Settings that are valid but probably not what the operator wants,
    /// one sentence each (`check-config` prints them; they do not fail it).
    pub fn warnings(&self) -> Vec<String> {
        self.jwt
            .external
            .iter()
            .enumerate()
            .filter(|(_, source)| source.audience.is_none())
            .map(|(index, source)| {
                format!(
                    "warning: jwt.jwks[{index}] ({:?}) has no audience: any token its issuer made for any client is accepted; set audience",
                    source.name
                )
            })
            .collect()
    }

    /// Reads and validates the config at `path`, and every file it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::one(format!("config: cannot read {}: {err}", path.display()))
        })?;
        Config::from_toml(&text)
    }

    /// Parses and validates config text; files it names are read from the
    /// disk, relative to the working directory.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_in(text, &Disk)
    }

    /// Parses and validates config text, reading the files it names from
    /// `files` only: with files in memory, no disk is touched.
    pub fn from_toml_in(text: &str, files: &dyn Files) -> Result<Config, ConfigError> {
        Config::from_toml_with(text, files, &|name| std::env::var(name).ok())
    }

    /// [`Config::from_toml_in`] with environment variables (`${VAR}` in
    /// string values) read through `env`.
    pub fn from_toml_with(
        text: &str,
        files: &dyn Files,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let syntax = |err: &dyn std::fmt::Display| {
            ConfigError::one(format!("config: {}", err.to_string().trim_end()))
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|err| syntax(&err))?;
        let mut problems = Problems::new(files);
        let uses_env = text.contains("${");
        if uses_env {
            env::expand_table(&mut table, env, &mut problems.0);
        }
        unknown_keys(&mut table, "", "", &mut problems);
        // Without unknown keys or variables the text is parsed again so that
        // type errors keep their line and column; otherwise the table is
        // used (values expanded, unknown keys left out), so every problem is
        // listed.
        let raw: Result<RawConfig, String> = if problems.0.is_empty() && !uses_env {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_one_label_wildcards() {
        assert_eq!(
            ServedName::parse("API.Example.com"),
            Ok(ServedName::Exact("api.example.com".into()))
        );
        assert_eq!(
            ServedName::parse("*.example.com"),
            Ok(ServedName::Wildcard("example.com".into()))
        );
        for bad in [
            "", "*", "*.com", "a.*.com", "a*.b.com", "a..b", ".a.b", "a.b.", "-a.b", "a-.b",
            "a b.c", "a_b.c", "é.com", "**.a.b",
        ] {
            assert!(ServedName::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(ServedName::parse(&format!("{}.com", "a".repeat(64))).is_err());
    }

    use std::io::Write;

    fn secret_file() -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "0123456789abcdef0123456789abcdef-secret").unwrap();
        file
    }

    /// Files held in memory.
    struct InMemory(std::collections::HashMap<PathBuf, Vec<u8>>);

    impl Files for InMemory {
        fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            self.0
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        }
    }

    #[test]
    fn the_files_a_config_names_are_read_through_the_seam_only() {
        let secret = b"0123456789abcdef0123456789abcdef-secret\n".to_vec();
        let files = InMemory([(PathBuf::from("/nowhere/jwt.secret"), secret)].into());
        let config = Config::from_toml_in(&minimal(Path::new("/nowhere/jwt.secret"), ""), &files)
            .expect("a config whose secret exists only in memory");
        assert_eq!(config.jwt.issuer, "authgate");
        let err = Config::from_toml_in(&minimal(Path::new("/nowhere/other"), ""), &files)
            .expect_err("a secret the seam does not have");
        assert!(
            err.problems
                .iter()
                .any(|p| p.starts_with("jwt.secret_file: cannot read /nowhere/other")),
            "{:?}",
            err.problems
        );
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

    fn jwks_section(name: Option<&str>, issuer: &str, audience: bool) -> String {
        let name = name.map_or(String::new(), |name| format!("name = \"{name}\"\n"));
        let audience = if audience { "audience = \"api\"\n" } else { "" };
        format!(
            "[[jwt.jwks]]\n{name}url = \"https://idp.example.com/jwks\"\nissuer = \"{issuer}\"\n{audience}"
        )
    }

    #[test]
    fn jwks_providers_are_named_distinctly_and_warned_about_without_audience() {
        let secret = secret_file();
        let config = Config::from_toml(&minimal(
            secret.path(),
            &format!(
                "{}{}",
                jwks_section(None, "https://Keycloak.Example.com/realms/main", true),
                jwks_section(Some("partner"), "partner-idp", false)
            ),
        ))
        .unwrap();
        let names: Vec<&str> = config
            .jwt
            .external
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["keycloak.example.com", "partner"]);
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("jwt.jwks[1]") && warnings[0].contains("audience"));

        for (extra, at) in [
            (
                jwks_section(Some("local"), "https://a.example", true),
                "jwt.jwks[0].name",
            ),
            (jwks_section(None, "no-host", true), "jwt.jwks[0].name"),
            (
                jwks_section(Some("a/b"), "https://a.example", true),
                "jwt.jwks[0].name",
            ),
            (
                format!(
                    "{}{}",
                    jwks_section(Some("same"), "https://a.example", true),
                    jwks_section(Some("same"), "https://b.example", true)
                ),
                "jwt.jwks[1].name",
            ),
            (
                format!(
                    "{}{}",
                    jwks_section(Some("corp"), "https://a.example", true),
                    oidc_section("corp", secret.path())
                ),
                "jwt.jwks.name",
            ),
            (oidc_section("local", secret.path()), "oidc[0].name"),
        ] {
            let err = Config::from_toml(&minimal(secret.path(), &extra)).expect_err(&extra);
            assert!(
                err.problems.iter().any(|p| p.starts_with(at)),
                "{at}: {:?}",
                err.problems
            );
        }
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
            "accesskeys",
            "limits",
            "upstream",
            "login",
            "cache",
            "route",
            "oidc",
            "ratelimit",
            "ratelimit.rule",
            "audit",
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
    fn the_key_header_and_credentials_in_query() {
        let secret = secret_file();
        let config = Config::from_toml(&minimal(secret.path(), "")).unwrap();
        assert_eq!(
            config.accesskeys.header.as_ref().map(|h| h.as_str()),
            Some("x-api-key")
        );
        assert!(config.server.credentials_in_query);
        let text = minimal(secret.path(), "[accesskeys]\nheader = \"\"\n")
            .replace("listen = ", "credentials_in_query = false\nlisten = ");
        let config = Config::from_toml(&text).unwrap();
        assert_eq!(config.accesskeys.header, None);
        assert!(!config.server.credentials_in_query);
        for bad in [
            "Authorization",
            "cookie",
            "X-Forwarded-For",
            "X_Auth_User",
            "x-request-id",
            "Transfer-Encoding",
            "bad header",
        ] {
            let extra = format!("[accesskeys]\nheader = {bad:?}\n");
            let err = Config::from_toml(&minimal(secret.path(), &extra)).expect_err(bad);
            assert!(
                err.problems
                    .iter()
                    .any(|p| p.starts_with("accesskeys.header")),
                "{bad}: {:?}",
                err.problems
            );
        }
        let err = Config::from_toml(&minimal(secret.path(), "[accesskeys]\nheadr = \"a\"\n"))
            .expect_err("unknown key");
        assert!(
            err.problems.iter().any(|p| p.contains("accesskeys.headr")),
            "{:?}",
            err.problems
        );
    }

    #[test]
    fn acme_is_validated_key_by_key() {
        let secret = secret_file();
        let acme = |keys: &str| {
            minimal(
                secret.path(),
                &format!("[server.tls]\nlisten = \"127.0.0.1:0\"\n[server.tls.acme]\n{keys}"),
            )
        };
        // ACME alone is enough for the TLS listener; defaults filled in.
        let config = Config::from_toml(&acme(
            "directory = \"https://ca.test/dir\"\ndomains = [\"GW.example.com\", \"gw.example.com\"]\n",
        ))
        .unwrap();
        let tls = config.server.tls.unwrap();
        assert!(tls.default.is_none());
        let acme_config = tls.acme.unwrap();
        assert_eq!(acme_config.domains, ["gw.example.com"]);
        assert_eq!(acme_config.challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(acme_config.cache_dir, Path::new("data/acme"));

        let cases = [
            (
                "domains = [\"gw.example.com\"]\n",
                "server.tls.acme.directory: is required",
            ),
            (
                "directory = \"https://ca.test/dir\"\n",
                "server.tls.acme.domains: is required",
            ),
            (
                "directory = \"ftp://ca.test/dir\"\ndomains = [\"a.example.com\"]\n",
                "server.tls.acme.directory: \"ftp://ca.test/dir\" is not an https:// URL",
            ),
            (
                "directory = \"https://ca.test/dir\"\ndomains = [\"127.0.0.1\"]\n",
                "server.tls.acme.domains: \"127.0.0.1\" is not a DNS name",
            ),
            (
                "directory = \"https://ca.test/dir\"\ndomains = [\"localhost\"]\n",
                "server.tls.acme.domains: \"localhost\" is not a DNS name",
            ),
            (
                "directory = \"https://ca.test/dir\"\ndomains = [\"a_b.example.com\"]\n",
                "server.tls.acme.domains: \"a_b.example.com\" is not a DNS name",
            ),
            (
                "directory = \"https://ca.test/dir\"\ndomains = [\"*.example.com\"]\n",
                "server.tls.acme.domains: \"*.example.com\": wildcards need dns-01",
            ),
            (
                "directory = \"https://ca.test/dir\"\ndomains = [\"a.example.com\"]\ncontact = [\"mailto:\"]\n",
                "server.tls.acme.contact: \"mailto:\" is not a mailto:ADDRESS",
            ),
            (
                "directory = \"https://ca.test/dir\"\ndomains = [\"a.example.com\"]\nchallenge = \"dns-01\"\n",
                "server.tls.acme.challenge: \"dns-01\" must be \"tls-alpn-01\" or \"http-01\"",
            ),
            (
                "directory = \"https://ca.test/dir\"\ndomains = [\"a.example.com\"]\ncache_dir = \"\"\n",
                "server.tls.acme.cache_dir: must not be empty",
            ),
            (
                "directory = \"https://ca.test/dir\"\ndomains = [\"a.example.com\"]\nca_file = \"/nonexistent/ca.pem\"\n",
                "server.tls.acme.ca_file: cannot read /nonexistent/ca.pem",
            ),
        ];
        for (keys, expected) in cases {
            let err = Config::from_toml(&acme(keys)).unwrap_err();
            assert!(
                err.problems.iter().any(|p| p.starts_with(expected)),
                "{keys}: {:?}",
                err.problems
            );
        }

        // http-01 is answered on the plain listener, which must exist.
        let text = format!(
            "[server.tls]\nlisten = \"127.0.0.1:0\"\n[server.tls.acme]\n\
             directory = \"https://ca.test/dir\"\ndomains = [\"a.example.com\"]\nchallenge = \"http-01\"\n\
             [jwt]\nsecret_file = {:?}\n",
            secret.path().display().to_string()
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(
            err.problems,
            [
                "server.tls.acme.challenge: http-01 is answered on the plain listener: set server.listen"
            ]
        );

        // Without ACME or certificates the TLS listener has nothing to serve.
        let text = minimal(secret.path(), "[server.tls]\nlisten = \"127.0.0.1:0\"\n");
        let err = Config::from_toml(&text).unwrap_err();
        assert!(
            err.problems.iter().any(|p| p.contains("[server.tls.acme]")),
            "{:?}",
            err.problems
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

    /// The problems of a config with one `[[route]]` holding `keys` (and
    /// `path_prefix`, `upstream` unless given).
    fn route_problems(keys: &str) -> Vec<String> {
        let secret = secret_file();
        let mut route = String::from("[[route]]\n");
        if !keys.contains("path_prefix") {
            route.push_str("path_prefix = \"/api\"\n");
        }
        if !keys.contains("upstream") {
            route.push_str("upstream = \"http://127.0.0.1:1\"\n");
        }
        // `upstream_none` (not a key): leave `upstream` out.
        route.push_str(&keys.replace("upstream_none = 1\n", ""));
        match Config::from_toml(&minimal(secret.path(), &route)) {
            Ok(_) => Vec::new(),
            Err(err) => err.problems,
        }
    }

    #[test]
    fn routing_keys_are_accepted() {
        let problems = route_problems(
            "hosts = [\"API.example.com\", \"*.example.com\", \"api.example.com.\"]\n\
             methods = [\"GET\", \"HEAD\", \"PROPFIND\"]\nrewrite_prefix = \"/v2\"\n\
             auth = \"optional\"\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(route_problems("hosts = []\nstrip_prefix = true\n").is_empty());
        let cors = "[route.cors]\nallow_origins = [\"https://app.example.com\", \"http://localhost:3000\"]\n\
                    allow_methods = [\"GET\", \"POST\"]\nallow_headers = [\"Authorization\", \"Content-Type\"]\n\
                    allow_credentials = true\nmax_age = 600\n";
        assert!(
            route_problems(cors).is_empty(),
            "{:?}",
            route_problems(cors)
        );
        assert!(route_problems("[route.cors]\nallow_origins = [\"*\"]\n").is_empty());
        assert!(
            route_problems(
                "upstreams = [\"http://127.0.0.1:2\", \"https://a.test\"]\nupstream_none = 1\n\
                 health_check = { path = \"/healthz\", interval = 5 }\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn each_bad_routing_key_is_one_problem() {
        let cases = [
            ("hosts = [\"a*b.test\"]\n", "route[0].hosts"),
            ("hosts = [\"*\"]\n", "route[0].hosts"),
            ("hosts = [\"*.*.test\"]\n", "route[0].hosts"),
            ("hosts = [\"https://a.test\"]\n", "route[0].hosts"),
            ("hosts = [\"a.test:8080\"]\n", "route[0].hosts"),
            ("hosts = [\"\"]\n", "route[0].hosts"),
            ("hosts = [\"a.test/x\"]\n", "route[0].hosts"),
            ("methods = [\"get\"]\n", "route[0].methods"),
            ("methods = [\"Get\"]\n", "route[0].methods"),
            ("methods = []\n", "route[0].methods"),
            (
                "strip_prefix = true\nrewrite_prefix = \"/v2\"\n",
                "route[0].rewrite_prefix",
            ),
            ("rewrite_prefix = \"v2\"\n", "route[0].rewrite_prefix"),
            ("rewrite_prefix = \"/v2/../x\"\n", "route[0].rewrite_prefix"),
            ("rewrite_prefix = \"/v%2e\"\n", "route[0].rewrite_prefix"),
            ("rewrite_prefix = \"/a//b\"\n", "route[0].rewrite_prefix"),
            ("auth = \"optional\"\nroles = [\"ops\"]\n", "route[0].auth"),
            ("auth = \"optional\"\nlogin = \"corp\"\n", "route[0].auth"),
            (
                "upstreams = [\"http://127.0.0.1:2\"]\nupstream = \"http://127.0.0.1:1\"\n",
                "route[0].upstreams",
            ),
            ("upstreams = []\nupstream_none = 1\n", "route[0].upstreams"),
            (
                "upstreams = [\"http://127.0.0.1:2\", \"ftp://x\"]\nupstream_none = 1\n",
                "route[0].upstreams",
            ),
            (
                "upstreams = [\"http://127.0.0.1:2\"]\nupstream_none = 1\n\
                 health_check = { path = \"healthz\", interval = 5 }\n",
                "route[0].health_check.path",
            ),
            (
                "upstreams = [\"http://127.0.0.1:2\"]\nupstream_none = 1\n\
                 health_check = { path = \"/a/../healthz\", interval = 5 }\n",
                "route[0].health_check.path",
            ),
            (
                "upstreams = [\"http://127.0.0.1:2\"]\nupstream_none = 1\n\
                 health_check = { path = \"/healthz\", interval = 0 }\n",
                "route[0].health_check.interval",
            ),
            (
                "health_check = { path = \"/healthz\", interval = 5 }\n",
                "route[0].health_check",
            ),
            (
                "[route.cors]\nallow_origins = [\"*\"]\nallow_credentials = true\n",
                "route[0].cors.allow_origins",
            ),
            (
                "[route.cors]\nallow_origins = [\"app.example.com\"]\n",
                "route[0].cors.allow_origins",
            ),
            (
                "[route.cors]\nallow_origins = [\"https://app.example.com/x\"]\n",
                "route[0].cors.allow_origins",
            ),
            (
                "[route.cors]\nallow_origins = [\"https://a.test\"]\nallow_methods = [\"post\"]\n",
                "route[0].cors.allow_methods",
            ),
            (
                "[route.cors]\nallow_origins = [\"https://a.test\"]\nallow_headers = [\"a b\"]\n",
                "route[0].cors.allow_headers",
            ),
            (
                "[route.cors]\nallow_origins = [\"https://a.test\"]\nmax_age = 100000\n",
                "route[0].cors.max_age",
            ),
            (
                "[route.cors]\nallow_origins = []\n",
                "route[0].cors.allow_origins",
            ),
        ];
        for (keys, key) in cases {
            let problems = route_problems(keys);
            let routing: Vec<&String> = problems
                .iter()
                .filter(|problem| !problem.contains("names no [[oidc]]"))
                .collect();
            assert_eq!(routing.len(), 1, "{keys}: {problems:?}");
            assert!(routing[0].contains(key), "{keys}: {problems:?}");
        }
    }

    #[test]
    fn routes_that_could_take_one_request_are_refused() {
        let secret = secret_file();
        let problems = |routes: &str| match Config::from_toml(&minimal(secret.path(), routes)) {
            Ok(_) => Vec::new(),
            Err(err) => err.problems,
        };
        let route = |keys: &str| {
            format!("[[route]]\npath_prefix = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n{keys}")
        };
        // Different hosts, or methods without one in common: fine.
        let apart = [
            (route("hosts = [\"x.test\"]\n"), route("")),
            (
                route("hosts = [\"*.x.test\"]\n"),
                route("hosts = [\"x.test\"]\n"),
            ),
            (
                route("methods = [\"GET\"]\n"),
                route("methods = [\"POST\"]\n"),
            ),
        ];
        for (first, second) in apart {
            let found = problems(&format!("{first}{second}"));
            assert!(found.is_empty(), "{first}{second}: {found:?}");
        }
        let together = [
            (route(""), route("")),
            (
                route("hosts = [\"X.test\"]\n"),
                route("hosts = [\"y.test\", \"x.test.\"]\n"),
            ),
            (
                route("methods = [\"GET\", \"PUT\"]\n"),
                route("methods = [\"PUT\"]\n"),
            ),
            (route("methods = [\"GET\"]\n"), route("")),
        ];
        for (first, second) in together {
            let found = problems(&format!("{first}{second}"));
            assert_eq!(found.len(), 1, "{first}{second}: {found:?}");
            assert!(found[0].contains("more than once"), "{found:?}");
        }
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

    #[test]
    fn bounds_have_the_contract_defaults_and_ranges() {
        let secret = secret_file();
        let config = Config::from_toml(&minimal(secret.path(), "")).unwrap();
        assert_eq!(config.limits.max_upstream_requests, 1024);
        assert_eq!(config.limits.max_streams_per_connection, 100);
        assert_eq!(config.accesskeys.max_per_user, 100);
        assert_eq!(config.onetimekey.max_per_address, 10);
        assert_eq!(config.login.max_queued_hashes, 64);
        let text = minimal(
            secret.path(),
            "[limits]\nmax_upstream_requests = 3\nmax_streams_per_connection = 4\n\
             [accesskeys]\nmax_per_user = 5\n[onetimekey]\nmax_per_address = 6\n\
             [login]\nmax_queued_hashes = 0\n",
        );
        let config = Config::from_toml(&text).unwrap();
        assert_eq!(
            (
                config.limits.max_upstream_requests,
                config.limits.max_streams_per_connection,
                config.accesskeys.max_per_user,
                config.onetimekey.max_per_address,
                config.login.max_queued_hashes,
            ),
            (3, 4, 5, 6, 0)
        );
        for (bad, key) in [
            (
                "[limits]\nmax_upstream_requests = 0",
                "limits.max_upstream_requests",
            ),
            (
                "[limits]\nmax_streams_per_connection = 0",
                "limits.max_streams_per_connection",
            ),
            ("[accesskeys]\nmax_per_user = 0", "accesskeys.max_per_user"),
            ("[audit]\nkeep_days = 0", "audit.keep_days"),
            ("[audit]\nkeep_days = -5", "audit.keep_days"),
            ("[audit]\nkeep_days = 36501", "audit.keep_days"),
            ("[audit]\nkeep_dayz = 5", "audit.keep_dayz"),
            (
                "[onetimekey]\nmax_per_address = 0",
                "onetimekey.max_per_address",
            ),
            (
                "[login]\nmax_queued_hashes = 1000000",
                "login.max_queued_hashes",
            ),
            ("[accesskeys]\nmax_per_usr = 5", "accesskeys.max_per_usr"),
        ] {
            let text = minimal(secret.path(), &format!("{bad}\n"));
            let all = Config::from_toml(&text).unwrap_err().problems.join("\n");
            assert!(all.contains(key), "{bad}: {all}");
        }
    }

    #[test]
    fn routes_to_one_upstream_share_one_in_flight_counter() {
        let secret = secret_file();
        let text = minimal(
            secret.path(),
            "[[route]]\npath_prefix = \"/a\"\nupstream = \"http://127.0.0.1:7/x\"\n\
             [[route]]\npath_prefix = \"/b\"\nupstream = \"HTTP://127.0.0.1:7/y\"\n\
             [[route]]\npath_prefix = \"/c\"\nupstream = \"http://127.0.0.1:8\"\n",
        );
        let config = Config::from_toml(&text).unwrap();
        let counter = |prefix: &str| {
            let path = format!("{prefix}/z");
            let route = config
                .routes
                .route_for(None, &http::Method::GET, &path)
                .unwrap()
                .route;
            Arc::as_ptr(&route.in_flight)
        };
        assert_eq!(counter("/a"), counter("/b"), "one server, one bound");
        assert_ne!(counter("/a"), counter("/c"));
    }

    #[test]
    fn a_route_on_several_hosts_keeps_one_in_flight_counter() {
        let secret = secret_file();
        let text = minimal(
            secret.path(),
            "[[route]]\npath_prefix = \"/a\"\nupstream = \"http://127.0.0.1:7\"\n\
             hosts = [\"x.test\", \"*.y.test\"]\n\
             [[route]]\npath_prefix = \"/a\"\nupstream = \"http://127.0.0.1:7\"\n",
        );
        let config = Config::from_toml(&text).unwrap();
        let counter = |host: Option<&str>| {
            let route = config
                .routes
                .route_for(host, &http::Method::GET, "/a")
                .unwrap()
                .route;
            Arc::as_ptr(&route.in_flight)
        };
        assert_eq!(counter(Some("x.test")), counter(Some("z.y.test")));
        assert_eq!(
            counter(Some("x.test")),
            counter(None),
            "one server, one bound"
        );
    }
}
