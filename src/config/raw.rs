//! The config file as serde reads it: one struct per table, every key
//! with its default, nothing checked yet.

use std::path::PathBuf;

use serde::Deserialize;

use super::ratelimit;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) store: RawStore,
    pub(super) jwt: RawJwt,
    #[serde(default)]
    pub(super) onetimekey: RawOneTimeKey,
    #[serde(default)]
    pub(super) accesskeys: RawAccessKeys,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) login: RawLogin,
    #[serde(default)]
    pub(super) cache: RawCache,
    #[serde(default)]
    pub(super) route: Vec<RawRoute>,
    #[serde(default)]
    pub(super) ratelimit: ratelimit::RawRateLimit,
    #[serde(default)]
    pub(super) oidc: Vec<RawOidc>,
    pub(super) assertion: Option<RawAssertion>,
    #[serde(default)]
    pub(super) audit: RawAudit,
    pub(super) telemetry: Option<RawTelemetry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    /// Signed, so that 0 and a negative number are refused naming the key
    /// rather than by serde's type error.
    #[serde(default = "defaults::audit_keep_days")]
    pub(super) keep_days: i64,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            keep_days: defaults::audit_keep_days(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    pub(super) otlp_endpoint: Option<String>,
    #[serde(default = "defaults::telemetry_service_name")]
    pub(super) service_name: String,
    #[serde(default = "defaults::telemetry_sample_ratio")]
    pub(super) sample_ratio: RawRatio,
}

/// A ratio as TOML writes it: `1` as well as `1.0`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub(super) enum RawRatio {
    Integer(i64),
    Float(f64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAssertion {
    pub(super) audience: Option<String>,
    #[serde(default = "defaults::assertion_ttl")]
    pub(super) ttl: u64,
    #[serde(default = "defaults::assertion_bind")]
    pub(super) bind: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    pub(super) name: String,
    pub(super) issuer: String,
    pub(super) client_id: String,
    pub(super) client_secret_file: PathBuf,
    pub(super) redirect_url: String,
    #[serde(default = "defaults::oidc_scopes")]
    pub(super) scopes: Vec<String>,
    #[serde(default = "defaults::oidc_username_claim")]
    pub(super) username_claim: String,
    pub(super) roles_claim: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) allow_unverified_email: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) admin_listen: Option<String>,
    pub(super) tls: Option<RawTls>,
    #[serde(default = "defaults::shutdown_grace")]
    pub(super) shutdown_grace: u64,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    #[serde(default)]
    pub(super) proxy_protocol: Vec<String>,
    #[serde(default)]
    pub(super) redirect_https: bool,
    #[serde(default = "defaults::credentials_in_query")]
    pub(super) credentials_in_query: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) listen: String,
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    #[serde(default)]
    pub(super) certificates: Vec<RawTlsCertificate>,
    pub(super) client_ca: Option<PathBuf>,
    pub(super) client_auth: Option<String>,
    pub(super) hsts: Option<String>,
    pub(super) acme: Option<RawAcme>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTlsCertificate {
    #[serde(default)]
    pub(super) names: Vec<String>,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

/// `[server.tls.acme]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    pub(super) directory: Option<String>,
    #[serde(default)]
    pub(super) domains: Vec<String>,
    #[serde(default)]
    pub(super) contact: Vec<String>,
    #[serde(default = "defaults::acme_challenge")]
    pub(super) challenge: String,
    #[serde(default = "defaults::acme_cache_dir")]
    pub(super) cache_dir: PathBuf,
    pub(super) ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(default = "defaults::store_url")]
    pub(super) url: String,
    #[serde(default = "defaults::poll_interval_ms")]
    pub(super) poll_interval_ms: u64,
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
pub(super) struct RawJwtKey {
    pub(super) kid: String,
    pub(super) algorithm: String,
    pub(super) private_key: Option<PathBuf>,
    pub(super) public_key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwks {
    pub(super) name: Option<String>,
    pub(super) url: String,
    pub(super) issuer: String,
    pub(super) audience: Option<String>,
    #[serde(default = "defaults::roles_claim")]
    pub(super) roles_claim: String,
    #[serde(default = "defaults::jwks_refresh")]
    pub(super) refresh: u64,
    #[serde(default = "defaults::jwks_min_refresh")]
    pub(super) min_refresh: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwt {
    #[serde(default)]
    pub(super) keys: Vec<RawJwtKey>,
    #[serde(default)]
    pub(super) jwks: Vec<RawJwks>,
    #[serde(default = "defaults::issuer")]
    pub(super) issuer: String,
    #[serde(default = "defaults::jwt_ttl")]
    pub(super) ttl: u64,
    #[serde(default = "defaults::leeway")]
    pub(super) leeway: u64,
    pub(super) secret_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOneTimeKey {
    #[serde(default = "defaults::realm")]
    pub(super) realm: String,
    #[serde(default = "defaults::otk_ttl")]
    pub(super) ttl: u64,
    #[serde(default = "defaults::otk_max_per_address")]
    pub(super) max_per_address: u64,
}

impl Default for RawOneTimeKey {
    fn default() -> Self {
        RawOneTimeKey {
            realm: defaults::realm(),
            ttl: defaults::otk_ttl(),
            max_per_address: defaults::otk_max_per_address(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessKeys {
    #[serde(default = "defaults::keys_max_per_user")]
    pub(super) max_per_user: u64,
    #[serde(default = "defaults::key_header")]
    pub(super) header: String,
}

impl Default for RawAccessKeys {
    fn default() -> Self {
        RawAccessKeys {
            max_per_user: defaults::keys_max_per_user(),
            header: defaults::key_header(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default = "defaults::max_header_bytes")]
    pub(super) max_header_bytes: u64,
    #[serde(default = "defaults::max_headers")]
    pub(super) max_headers: u64,
    #[serde(default = "defaults::max_body_bytes")]
    pub(super) max_body_bytes: u64,
    pub(super) max_proxy_body_bytes: Option<u64>,
    #[serde(default = "defaults::header_read_timeout")]
    pub(super) header_read_timeout: u64,
    #[serde(default = "defaults::idle_timeout")]
    pub(super) idle_timeout: u64,
    #[serde(default = "defaults::max_connections")]
    pub(super) max_connections: u64,
    #[serde(default = "defaults::max_upstream_requests")]
    pub(super) max_upstream_requests: u64,
    #[serde(default = "defaults::max_streams_per_connection")]
    pub(super) max_streams_per_connection: u64,
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
            max_upstream_requests: defaults::max_upstream_requests(),
            max_streams_per_connection: defaults::max_streams_per_connection(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    #[serde(default = "defaults::connect_timeout")]
    pub(super) connect_timeout: u64,
    #[serde(default = "defaults::upstream_timeout")]
    pub(super) timeout: u64,
    #[serde(default = "defaults::pool_idle_timeout")]
    pub(super) pool_idle_timeout: u64,
    #[serde(default = "defaults::pool_max_idle_per_host")]
    pub(super) pool_max_idle_per_host: u64,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) client_cert: Option<PathBuf>,
    pub(super) client_key: Option<PathBuf>,
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
pub(super) struct RawLogin {
    #[serde(default = "defaults::max_failures")]
    pub(super) max_failures: u64,
    #[serde(default = "defaults::address_max_failures")]
    pub(super) address_max_failures: u64,
    #[serde(default)]
    pub(super) max_concurrent_hashes: u64,
    #[serde(default = "defaults::max_queued_hashes")]
    pub(super) max_queued_hashes: u64,
    #[serde(default = "defaults::login_window")]
    pub(super) window: u64,
    #[serde(default = "defaults::lockout")]
    pub(super) lockout: u64,
}

impl Default for RawLogin {
    fn default() -> Self {
        RawLogin {
            max_failures: defaults::max_failures(),
            address_max_failures: defaults::address_max_failures(),
            max_concurrent_hashes: 0,
            max_queued_hashes: defaults::max_queued_hashes(),
            window: defaults::login_window(),
            lockout: defaults::lockout(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    #[serde(default = "defaults::cache_max_entries")]
    pub(super) max_entries: u64,
    #[serde(default = "defaults::cache_ttl")]
    pub(super) ttl: u64,
    #[serde(default = "defaults::cache_negative_ttl")]
    pub(super) negative_ttl: u64,
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
pub(super) struct RawRoute {
    pub(super) path_prefix: String,
    pub(super) upstream: Option<String>,
    #[serde(default = "defaults::route_auth")]
    pub(super) auth: String,
    #[serde(default)]
    pub(super) roles: Vec<String>,
    pub(super) timeout: Option<u64>,
    pub(super) login: Option<String>,
    pub(super) assertion_audience: Option<String>,
    #[serde(default)]
    pub(super) hosts: Vec<String>,
    pub(super) methods: Option<Vec<String>>,
    #[serde(default)]
    pub(super) strip_prefix: bool,
    pub(super) rewrite_prefix: Option<String>,
    pub(super) upstreams: Option<Vec<String>>,
    pub(super) health_check: Option<RawHealthCheck>,
    pub(super) cors: Option<RawCors>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    pub(super) allow_origins: Vec<String>,
    #[serde(default)]
    pub(super) allow_methods: Vec<String>,
    #[serde(default)]
    pub(super) allow_headers: Vec<String>,
    #[serde(default)]
    pub(super) allow_credentials: bool,
    pub(super) max_age: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    pub(super) path: String,
    pub(super) interval: u64,
}

/// Default values, documented in docs/configuration.md.
pub(super) mod defaults {
    pub fn oidc_scopes() -> Vec<String> {
        ["openid", "email", "profile"].map(String::from).to_vec()
    }
    pub fn oidc_username_claim() -> String {
        "sub".into()
    }
    pub fn key_header() -> String {
        "X-API-Key".into()
    }
    pub fn credentials_in_query() -> bool {
        true
    }
    pub fn shutdown_grace() -> u64 {
        30
    }
    pub fn acme_challenge() -> String {
        "tls-alpn-01".into()
    }
    pub fn acme_cache_dir() -> std::path::PathBuf {
        "data/acme".into()
    }
    pub fn assertion_ttl() -> u64 {
        30
    }
    pub fn telemetry_service_name() -> String {
        "authgate".into()
    }
    pub fn telemetry_sample_ratio() -> super::RawRatio {
        super::RawRatio::Float(1.0)
    }
    pub fn assertion_bind() -> String {
        "identity".into()
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
    pub fn max_upstream_requests() -> u64 {
        1024
    }
    pub fn max_streams_per_connection() -> u64 {
        100
    }
    pub fn max_queued_hashes() -> u64 {
        64
    }
    pub fn otk_max_per_address() -> u64 {
        10
    }
    pub fn audit_keep_days() -> i64 {
        90
    }
    pub fn keys_max_per_user() -> u64 {
        100
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
