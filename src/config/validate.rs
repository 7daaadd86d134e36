//! Validation: from the raw tables to the typed [`Config`](super::Config),
//! every problem collected with its key. The files the config names are
//! read through the [`Files`](super::Files) seam, never from the disk
//! directly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Uri};
use ipnet::IpNet;

use crate::inflight::InFlight;
use crate::routes::{HostPattern, PrefixRewrite, Route, RouteAuth, RouteTable};
use crate::token::jwks::JwksSource;
use crate::token::jwt::{JwtKeys, KeySpec, parse_algorithm, valid_kid};

use super::raw::*;
use super::*;

/// Collects problems while validating, and reads the files the config
/// names through `files`.
pub(super) struct Problems<'f>(pub(super) Vec<String>, &'f dyn Files);

impl<'f> Problems<'f> {
    /// No problems yet; files read from `files`.
    pub(super) fn new(files: &'f dyn Files) -> Self {
        Problems(Vec::new(), files)
    }

    /// The bytes of the file at `path`, named by `key`; `None` and a
    /// problem when it cannot be read.
    pub(super) fn read(&mut self, key: &str, path: &Path) -> Option<Vec<u8>> {
        match self.1.read(path) {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                self.add(key, format_args!("cannot read {}: {err}", path.display()));
                None
            }
        }
    }

    pub(super) fn add(&mut self, key: &str, problem: impl std::fmt::Display) {
        self.0.push(format!("{key}: {problem}"));
    }

    /// A number of seconds that must lie in `min..=max`.
    pub(super) fn seconds(&mut self, key: &str, value: u64, min: u64, max: u64) -> Duration {
        if value < min || value > max {
            self.add(
                key,
                format_args!("must be between {min} and {max} seconds, got {value}"),
            );
        }
        Duration::from_secs(value.clamp(min, max))
    }

    /// A count that must lie in `min..=max`.
    pub(super) fn count(&mut self, key: &str, value: u64, min: u64, max: u64) -> usize {
        if value < min || value > max {
            self.add(
                key,
                format_args!("must be between {min} and {max}, got {value}"),
            );
        }
        usize::try_from(value.clamp(min, max)).unwrap_or(usize::MAX)
    }

    pub(super) fn socket_addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.add(key, format_args!("{value:?} is not an IP:port address"));
                None
            }
        }
    }

    pub(super) fn readable_file(&mut self, key: &str, path: &Path) {
        self.read(key, path);
    }
}

pub(super) fn validate(raw: RawConfig, p: &mut Problems) -> Option<Config> {
    let server = validate_server(raw.server, p);
    let store = validate_store(raw.store, p);
    let jwt = validate_jwt(raw.jwt, p);

    let onetimekey = OneTimeKeyConfig {
        ttl: p.seconds("onetimekey.ttl", raw.onetimekey.ttl, 10, 3600),
        realm: raw.onetimekey.realm,
        max_per_address: p.count(
            "onetimekey.max_per_address",
            raw.onetimekey.max_per_address,
            1,
            MAX_ONETIME_KEYS_PER_ADDRESS,
        ),
    };
    let accesskeys = AccessKeysConfig {
        max_per_user: p.count(
            "accesskeys.max_per_user",
            raw.accesskeys.max_per_user,
            1,
            MAX_KEYS_PER_USER,
        ),
        header: key_header(&raw.accesskeys.header, p),
    };
    let audit = AuditConfig {
        keep_days: audit_keep_days(raw.audit.keep_days, p),
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
        max_upstream_requests: p.count(
            "limits.max_upstream_requests",
            raw.limits.max_upstream_requests,
            1,
            1_000_000,
        ),
        max_streams_per_connection: u32::try_from(p.count(
            "limits.max_streams_per_connection",
            raw.limits.max_streams_per_connection,
            1,
            MAX_STREAMS_PER_CONNECTION,
        ))
        .unwrap_or(u32::MAX),
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
        max_queued_hashes: p.count(
            "login.max_queued_hashes",
            raw.login.max_queued_hashes,
            0,
            MAX_QUEUED_HASHES,
        ),
        window: p.seconds("login.window", raw.login.window, 1, 86_400),
        lockout: p.seconds("login.lockout", raw.login.lockout, 1, 86_400),
    };

    let cache = CacheConfig {
        max_entries: p.count("cache.max_entries", raw.cache.max_entries, 100, 100_000_000),
        ttl: p.seconds("cache.ttl", raw.cache.ttl, 1, 86_400),
        negative_ttl: p.seconds("cache.negative_ttl", raw.cache.negative_ttl, 1, 3600),
    };

    let oidc = validate_oidc(raw.oidc, p);
    // (provider, subject) is who a caller is: two providers of one name
    // would make two callers one.
    if let Some(jwt) = &jwt {
        for source in &jwt.external {
            if oidc.iter().any(|provider| provider.name == source.name) {
                p.add(
                    "jwt.jwks.name",
                    format_args!(
                        "{:?} is also the name of an [[oidc]] provider; give the [[jwt.jwks]] provider another name",
                        source.name
                    ),
                );
            }
        }
    }
    let routes = validate_routes(raw.route, &upstream, limits.max_upstream_requests, p);
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
    let assertion = raw.assertion.and_then(|raw| {
        if let Some(jwt) = &jwt
            && !jwt.keys.signs_asymmetrically()
        {
            p.add(
                "assertion",
                "needs an asymmetric signing key ([[jwt.keys]] with a private_key): upstreams verify assertions with the public JWKS, and an HS256 secret would let every upstream mint them",
            );
        }
        let bind = match raw.bind.as_str() {
            "identity" => AssertionBinding::Identity,
            "request" => AssertionBinding::Request,
            other => {
                p.add(
                    "assertion.bind",
                    format_args!("{other:?} must be \"identity\" or \"request\""),
                );
                AssertionBinding::Identity
            }
        };
        let ttl = p.seconds("assertion.ttl", raw.ttl, 1, 300);
        match raw.audience {
            Some(audience) if !audience.is_empty() => Some(AssertionConfig {
                audience: Arc::from(audience),
                ttl,
                bind,
            }),
            _ => {
                p.add("assertion.audience", "is required (the default `aud`; routes may set assertion_audience)");
                None
            }
        }
    });
    for route in routes.iter() {
        if route.assertion_audience.is_some() && assertion.is_none() {
            p.add(
                "route.assertion_audience",
                format_args!(
                    "route {:?} sets it, but there is no [assertion] table",
                    route.prefix
                ),
            );
        }
    }

    let telemetry = raw.telemetry.and_then(|raw| validate_telemetry(raw, p));

    Some(Config {
        assertion,
        audit,
        telemetry,
        server,
        store,
        jwt: jwt?,
        onetimekey,
        accesskeys,
        limits,
        upstream,
        login,
        cache,
        routes,
        oidc,
        ratelimit,
    })
}

/// `[telemetry]`: an `http`/`https` base URL without user info, query or
/// fragment (spans go to `<base>/v1/traces`), and a ratio in `0..=1`.
fn validate_telemetry(raw: RawTelemetry, p: &mut Problems) -> Option<TelemetryConfig> {
    let sample_ratio = match raw.sample_ratio {
        RawRatio::Integer(n) if (0..=1).contains(&n) => n as f64,
        RawRatio::Float(r) if (0.0..=1.0).contains(&r) => r,
        RawRatio::Integer(n) => {
            p.add(
                "telemetry.sample_ratio",
                format_args!("must be between 0 and 1, got {n}"),
            );
            1.0
        }
        RawRatio::Float(r) => {
            p.add(
                "telemetry.sample_ratio",
                format_args!("must be between 0 and 1, got {r}"),
            );
            1.0
        }
    };
    if raw.service_name.is_empty()
        || raw.service_name.len() > 255
        || raw.service_name.chars().any(char::is_control)
    {
        p.add(
            "telemetry.service_name",
            "must be 1 to 255 characters without control characters",
        );
    }
    let Some(endpoint) = raw.otlp_endpoint else {
        p.add(
            "telemetry.otlp_endpoint",
            "is required (the collector's OTLP/HTTP base URL, e.g. \"http://127.0.0.1:4318\")",
        );
        return None;
    };
    let Some(traces_url) = traces_url(&endpoint) else {
        p.add(
            "telemetry.otlp_endpoint",
            // Not echoed: it may carry user info.
            "must be an http:// or https:// base URL with a host and without user info, query or fragment",
        );
        return None;
    };
    Some(TelemetryConfig {
        traces_url,
        service_name: Arc::from(raw.service_name),
        sample_ratio,
    })
}

/// `<base>/v1/traces` for an OTLP/HTTP base URL, if it is one.
fn traces_url(base: &str) -> Option<http::Uri> {
    if base.contains(['?', '#', '@']) || base.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let uri: http::Uri = base.parse().ok()?;
    let scheme = uri.scheme_str()?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = uri.authority()?;
    if authority.host().is_empty() {
        return None;
    }
    let path = uri.path().trim_end_matches('/');
    format!("{scheme}://{authority}{path}/v1/traces")
        .parse()
        .ok()
}

/// A `[[jwt.jwks]]` provider's name: what `X-Auth-Provider` and rate-limit
/// subjects carry, so never `local` and never a character that could join
/// it to a subject (`/`, `,`).
fn valid_provider_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != crate::names::LOCAL_PROVIDER
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// `[[oidc]]`: names unique and path-safe, URLs absolute, files readable.
pub(super) fn validate_oidc(raw: Vec<RawOidc>, p: &mut Problems) -> Vec<OidcProviderConfig> {
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
        if provider.name == crate::names::LOCAL_PROVIDER {
            p.add(
                &format!("{at}.name"),
                "\"local\" is the provider of local users",
            );
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
        let key = format!("{at}.client_secret_file");
        let secret = match p
            .read(&key, &provider.client_secret_file)
            .map(String::from_utf8)
        {
            Some(Ok(text)) => {
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text).to_owned();
                if text.is_empty() {
                    p.add(&key, "the file is empty");
                }
                text
            }
            Some(Err(_)) => {
                p.add(&key, "the secret is not UTF-8 text");
                String::new()
            }
            None => String::new(),
        };
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
            allow_unverified_email: provider.allow_unverified_email,
        });
    }
    providers
}

pub(super) fn validate_server(raw: RawServer, p: &mut Problems) -> ServerConfig {
    let listen = raw
        .listen
        .as_deref()
        .and_then(|value| p.socket_addr("server.listen", value));
    let plain_listener = raw.listen.is_some();
    let tls = raw.tls.and_then(|tls| {
        let acme = tls.acme.map(|acme| validate_acme(acme, plain_listener, p));
        let default = match (tls.cert, tls.key) {
            (Some(cert), Some(key)) => {
                p.readable_file("server.tls.cert", &cert);
                p.readable_file("server.tls.key", &key);
                Some(CertificateConfig {
                    names: Vec::new(),
                    cert,
                    key,
                })
            }
            (None, None) => None,
            (Some(_), None) => {
                p.add("server.tls.key", "is needed with server.tls.cert");
                None
            }
            (None, Some(_)) => {
                p.add("server.tls.cert", "is needed with server.tls.key");
                None
            }
        };
        if default.is_none() && tls.certificates.is_empty() && acme.is_none() {
            p.add(
                "server.tls",
                "needs cert and key, [[server.tls.certificates]] or [server.tls.acme]",
            );
        }
        let mut certificates = Vec::with_capacity(tls.certificates.len());
        for (index, listed) in tls.certificates.into_iter().enumerate() {
            let key = format!("server.tls.certificates[{index}]");
            p.readable_file(&format!("{key}.cert"), &listed.cert);
            p.readable_file(&format!("{key}.key"), &listed.key);
            let mut names = Vec::with_capacity(listed.names.len());
            for name in &listed.names {
                match ServedName::parse(name) {
                    Ok(served) => names.push(served),
                    Err(why) => p.add(&format!("{key}.names"), format_args!("{name:?} {why}")),
                }
            }
            certificates.push(CertificateConfig {
                names,
                cert: listed.cert,
                key: listed.key,
            });
        }
        let hsts = tls.hsts.and_then(|value| match http::HeaderValue::from_str(&value) {
            Ok(header) if value.to_ascii_lowercase().contains("max-age=") => Some(header),
            _ => {
                p.add(
                    "server.tls.hsts",
                    format_args!("{value:?} is not a Strict-Transport-Security value (max-age=SECONDS[; includeSubDomains][; preload])"),
                );
                None
            }
        });
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
            default,
            certificates,
            hsts,
            acme: acme.flatten(),
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
    let trusted_proxies = ip_ranges("server.trusted_proxies", &raw.trusted_proxies, p);
    let proxy_protocol = ip_ranges("server.proxy_protocol", &raw.proxy_protocol, p);
    if raw.redirect_https {
        match (&tls, listen) {
            (None, _) | (_, None) => p.add(
                "server.redirect_https",
                "needs both server.listen and [server.tls]",
            ),
            // The redirect names the port; port 0 is known only once bound.
            (Some(tls), _) if tls.listen.port() == 0 => p.add(
                "server.redirect_https",
                "needs a fixed server.tls.listen port to redirect to",
            ),
            _ => {}
        }
    }
    let admin_listen = validate_admin_listen(raw.admin_listen.as_deref(), listen, &tls, p);
    ServerConfig {
        trusted_proxies,
        proxy_protocol,
        redirect_https: raw.redirect_https,
        credentials_in_query: raw.credentials_in_query,
        listen,
        admin_listen,
        tls,
        shutdown_grace: p.seconds("server.shutdown_grace", raw.shutdown_grace, 0, 3600),
    }
}

/// Headers that cannot carry access keys: read as something else, or
/// hop-by-hop, or set by the gateway (lower case, `-` for `_`).
const KEY_HEADER_TAKEN: [&str; 16] = [
    "authorization",
    "cookie",
    "host",
    "content-type",
    "content-length",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// Families of headers the gateway removes before anything reads them
/// (identity, forwarding; the whole list is `RESERVED_REQUEST_HEADERS` in
/// `proxy::headers`, which `config` must not import).
const KEY_HEADER_TAKEN_FAMILIES: [&str; 7] = [
    "x-auth-",
    "x-forwarded",
    "forwarded",
    "x-original-",
    "x-real-ip",
    "x-client-",
    "x-http-method",
];

/// `audit.keep_days`: a whole number of days from 1 (0 would purge every
/// event as it is written; a negative number means nothing).
fn audit_keep_days(days: i64, p: &mut Problems) -> u32 {
    if !(1..=MAX_AUDIT_KEEP_DAYS).contains(&days) {
        p.add(
            "audit.keep_days",
            format_args!("must be a number of days from 1 to {MAX_AUDIT_KEEP_DAYS}, got {days}"),
        );
    }
    u32::try_from(days.clamp(1, MAX_AUDIT_KEEP_DAYS)).unwrap_or(1)
}

/// `accesskeys.header`: `None` for `""`; otherwise a header name that is
/// not one the gateway reads or sets for something else (a key header named
/// `Authorization` or `Cookie` would make every JWT or cookie a key; one
/// named like an identity or forwarding header is removed before it could
/// be read).
fn key_header(name: &str, p: &mut Problems) -> Option<http::HeaderName> {
    if name.is_empty() {
        return None;
    }
    let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
        p.add("accesskeys.header", "must be a header name or \"\"");
        return None;
    };
    let folded = header.as_str().replace('_', "-");
    let taken = KEY_HEADER_TAKEN.contains(&folded.as_str())
        || KEY_HEADER_TAKEN_FAMILIES
            .iter()
            .any(|family| folded.starts_with(family));
    if taken {
        p.add(
            "accesskeys.header",
            format_args!("{name:?} is a header the gateway reads or sets for something else"),
        );
        return None;
    }
    Some(header)
}

/// `[server.tls.acme]`: every key checked; `None` when one is wrong.
/// `plain_listener`: whether `server.listen` is set (http-01 needs it).
pub(super) fn validate_acme(
    raw: RawAcme,
    plain_listener: bool,
    p: &mut Problems,
) -> Option<AcmeConfig> {
    let before = p.0.len();
    let directory = match raw.directory {
        None => {
            p.add(
                "server.tls.acme.directory",
                "is required (the CA's directory URL)",
            );
            String::new()
        }
        Some(url) => {
            match url.parse::<Uri>() {
                Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {}
                _ => p.add(
                    "server.tls.acme.directory",
                    format_args!("{url:?} is not an https:// URL"),
                ),
            }
            url
        }
    };
    if raw.domains.is_empty() {
        p.add(
            "server.tls.acme.domains",
            "is required: the names to order a certificate for",
        );
    }
    let mut domains: Vec<String> = Vec::with_capacity(raw.domains.len());
    for domain in &raw.domains {
        let lower = domain.to_ascii_lowercase();
        if lower.starts_with("*.") {
            p.add(
                "server.tls.acme.domains",
                format_args!("{domain:?}: wildcards need dns-01, which authgate does not answer"),
            );
        } else if !valid_dns_name(&lower) {
            p.add(
                "server.tls.acme.domains",
                format_args!("{domain:?} is not a DNS name"),
            );
        } else if !domains.contains(&lower) {
            domains.push(lower);
        }
    }
    for contact in &raw.contact {
        let address = contact.strip_prefix("mailto:").unwrap_or("");
        if !address.contains('@') || address.chars().any(|c| c.is_whitespace() || c == ',') {
            p.add(
                "server.tls.acme.contact",
                format_args!("{contact:?} is not a mailto:ADDRESS"),
            );
        }
    }
    let challenge = match raw.challenge.as_str() {
        "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
        "http-01" => {
            if !plain_listener {
                p.add(
                    "server.tls.acme.challenge",
                    "http-01 is answered on the plain listener: set server.listen",
                );
            }
            AcmeChallenge::Http01
        }
        other => {
            p.add(
                "server.tls.acme.challenge",
                format_args!("{other:?} must be \"tls-alpn-01\" or \"http-01\""),
            );
            AcmeChallenge::TlsAlpn01
        }
    };
    if raw.cache_dir.as_os_str().is_empty() {
        p.add("server.tls.acme.cache_dir", "must not be empty");
    }
    if let Some(ca) = &raw.ca_file {
        p.readable_file("server.tls.acme.ca_file", ca);
    }
    (p.0.len() == before).then_some(AcmeConfig {
        directory,
        domains,
        contact: raw.contact,
        challenge,
        cache_dir: raw.cache_dir,
        ca_file: raw.ca_file,
    })
}

/// A DNS name a public CA can issue for: dot-separated labels of
/// `a-z 0-9 -` (1 to 63 each, no leading or trailing hyphen), at least two
/// labels, 253 characters at most, not an IP address.
pub(super) fn valid_dns_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && name.parse::<std::net::IpAddr>().is_err()
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A list of IP addresses and CIDR ranges under `key`.
fn ip_ranges(key: &str, entries: &[String], p: &mut Problems) -> Vec<IpNet> {
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in entries {
        let parsed = entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => ranges.push(net),
            Err(_) => p.add(
                key,
                format_args!("{entry:?} is not an IP address or CIDR range"),
            ),
        }
    }
    ranges
}

/// `server.admin_listen`: an address that cannot collide with the other
/// listeners (the same port on the same or a wildcard address; port 0 asks
/// for a fresh port each time and so never collides).
pub(super) fn validate_admin_listen(
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

pub(super) fn validate_store(raw: RawStore, p: &mut Problems) -> StoreConfig {
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

pub(super) fn validate_jwt(raw: RawJwt, p: &mut Problems) -> Option<JwtConfig> {
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
        let read =
            |field: &str, path: &Path, p: &mut Problems| p.read(&format!("{at}.{field}"), path);
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
        let name = match source.name {
            Some(name) => name,
            None => source
                .issuer
                .parse::<Uri>()
                .ok()
                // Only a URL's host: a bare "name" parses as an authority.
                .filter(|issuer| issuer.scheme().is_some())
                .and_then(|issuer| issuer.host().map(str::to_ascii_lowercase))
                .unwrap_or_default(),
        };
        if !valid_provider_name(&name) {
            p.add(
                &format!("{at}.name"),
                format_args!(
                    "{name:?} must be 1 to 64 of a-z 0-9 . - and not \"{}\" (set name when the issuer has no such host)",
                    crate::names::LOCAL_PROVIDER
                ),
            );
        }
        if external.iter().any(|e: &JwksSource| e.name == name) {
            p.add(
                &format!("{at}.name"),
                format_args!("two providers named {name:?}: give each a distinct name"),
            );
        }
        external.push(JwksSource {
            name,
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
pub(super) fn read_secret(path: &Path, p: &mut Problems) -> Option<Vec<u8>> {
    let mut bytes = p.read("jwt.secret_file", path)?;
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

/// The in-flight counters of a config's routes: one per upstream scheme
/// and authority, so routes to one server share its bound.
struct UpstreamCounters {
    max: usize,
    seen: Vec<(String, Arc<InFlight>)>,
}

impl UpstreamCounters {
    fn new(max: usize) -> Self {
        UpstreamCounters {
            max,
            seen: Vec::new(),
        }
    }

    fn for_upstream(&mut self, upstream: Option<&Uri>) -> Arc<InFlight> {
        let Some(upstream) = upstream else {
            // A verify-only route forwards nothing; its counter stays at 0.
            return InFlight::new(self.max);
        };
        let key = crate::inflight::upstream_key(upstream);
        if let Some((_, counter)) = self.seen.iter().find(|(seen, _)| *seen == key) {
            return counter.clone();
        }
        let counter = InFlight::new(self.max);
        self.seen.push((key, counter.clone()));
        counter
    }
}

pub(super) fn validate_routes(
    raw: Vec<RawRoute>,
    upstream: &UpstreamConfig,
    max_upstream_requests: usize,
    p: &mut Problems,
) -> RouteTable {
    let mut routes = Vec::with_capacity(raw.len());
    let mut counters = UpstreamCounters::new(max_upstream_requests);
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
            "optional" => RouteAuth::Optional,
            other => {
                p.add(
                    &format!("{key}.auth"),
                    format_args!("{other:?} must be \"required\", \"public\" or \"optional\""),
                );
                RouteAuth::Required
            }
        };
        if auth == RouteAuth::Optional && (!route.roles.is_empty() || route.login.is_some()) {
            p.add(
                &format!("{key}.auth"),
                "\"optional\" cannot go with roles or login: a caller without a credential is let through",
            );
        }
        let mut hosts = Vec::with_capacity(route.hosts.len());
        for host in &route.hosts {
            match parse_host_pattern(host) {
                Ok(pattern) => {
                    if !hosts.contains(&pattern) {
                        hosts.push(pattern);
                    }
                }
                Err(problem) => p.add(&format!("{key}.hosts"), problem),
            }
        }
        let methods = route.methods.map(|names| {
            let mut methods = Vec::with_capacity(names.len());
            if names.is_empty() {
                p.add(
                    &format!("{key}.methods"),
                    "must list at least one method (leave it out for every method)",
                );
            }
            for name in &names {
                match parse_method(name) {
                    Ok(method) => {
                        if !methods.contains(&method) {
                            methods.push(method);
                        }
                    }
                    Err(problem) => p.add(&format!("{key}.methods"), problem),
                }
            }
            methods
        });
        let rewrite = match (route.strip_prefix, route.rewrite_prefix) {
            (true, Some(_)) => {
                p.add(
                    &format!("{key}.rewrite_prefix"),
                    "strip_prefix and rewrite_prefix cannot both be set",
                );
                PrefixRewrite::Keep
            }
            (true, None) => PrefixRewrite::Strip,
            (false, None) => PrefixRewrite::Keep,
            (false, Some(replacement)) => {
                let valid = replacement.starts_with('/')
                    && crate::routes::check_path(&replacement).is_ok()
                    && crate::routes::valid_prefix(&replacement);
                if !valid {
                    p.add(
                        &format!("{key}.rewrite_prefix"),
                        format_args!(
                            "{replacement:?} must be a normal path starting with '/' made of A-Z a-z 0-9 - . _ ~ and /"
                        ),
                    );
                }
                PrefixRewrite::Replace(replacement.trim_end_matches('/').to_owned())
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
        let health = route.health_check.and_then(|check| {
            let key = format!("{key}.health_check");
            if route.upstreams.is_none() {
                p.add(
                    &key,
                    "needs upstreams (a pool to keep a failing member out of)",
                );
            }
            let (low, high) = crate::pool::HEALTH_INTERVAL_SECONDS;
            let interval = p.seconds(&format!("{key}.interval"), check.interval, low, high);
            let valid =
                check.path.starts_with('/') && crate::routes::check_path(&check.path).is_ok();
            if !valid {
                p.add(
                    &format!("{key}.path"),
                    format_args!("{:?} must be a normal path starting with '/'", check.path),
                );
                return None;
            }
            Some(crate::pool::HealthCheck {
                path: check.path,
                interval,
            })
        });
        let cors = route
            .cors
            .and_then(|raw| validate_cors(raw, methods.as_deref(), &format!("{key}.cors"), p))
            .map(Arc::new);
        // `upstreams`: a pool whose first member stands for the route where
        // one upstream is needed (the verify-only check, logs).
        let pool = match (&route.upstream, route.upstreams) {
            (Some(_), Some(_)) => {
                p.add(
                    &format!("{key}.upstreams"),
                    "upstream and upstreams cannot both be set",
                );
                None
            }
            (None, Some(urls)) if urls.is_empty() => {
                p.add(
                    &format!("{key}.upstreams"),
                    "must list at least one upstream",
                );
                None
            }
            (None, Some(urls)) => {
                let mut members = Vec::with_capacity(urls.len());
                for url in &urls {
                    match parse_upstream(url) {
                        Ok(uri) => {
                            let counter = counters.for_upstream(Some(&uri));
                            members.push((uri, counter));
                        }
                        Err(problem) => p.add(&format!("{key}.upstreams"), problem),
                    }
                }
                (members.len() == urls.len()).then(|| {
                    Arc::new(crate::pool::UpstreamPool::new(
                        members,
                        crate::workers::count(),
                        health,
                    ))
                })
            }
            (_, None) => None,
        };
        // A route without `upstream` serves only forward authentication.
        let first = pool
            .as_ref()
            .and_then(|pool| pool.members().first())
            .map(|member| Ok(member.uri.clone()));
        match first
            .or_else(|| route.upstream.as_deref().map(parse_upstream))
            .transpose()
        {
            Ok(upstream) => routes.push(Route {
                label: prefix.as_str().into(),
                in_flight: counters.for_upstream(upstream.as_ref()),
                prefix,
                upstream,
                auth,
                roles: route.roles,
                timeout,
                login: route.login.map(Arc::from),
                assertion_audience: route
                    .assertion_audience
                    .filter(|audience| !audience.is_empty())
                    .map(Arc::from),
                hosts,
                methods,
                rewrite,
                pool,
                cors,
            }),
            Err(problem) => p.add(&format!("{key}.upstream"), problem),
        }
    }
    let table = RouteTable::new(routes);
    let mut reported = std::collections::HashSet::new();
    for (first, second) in table.conflicts() {
        // A pair is found once per host level they share; reported once.
        if reported.insert(first.prefix.to_ascii_lowercase()) {
            p.add(
                "route",
                format_args!(
                    "path_prefix {:?} appears more than once for the same hosts and methods, so two routes could take one request (prefixes compare ignoring ASCII case)",
                    second.prefix
                ),
            );
        }
    }
    table
}

/// The methods a preflight is told about when `allow_methods` is left out
/// and the route takes every method.
const CORS_DEFAULT_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";

/// `[route.cors]`: origins as browsers send them (`scheme://host[:port]`,
/// no path) or `"*"` (not with `allow_credentials`: browsers refuse it, and
/// echoing any origin with credentials would let every site act as the
/// user); methods as `methods` spells them (default: the route's); header
/// names; `max_age` up to a day.
fn validate_cors(
    raw: RawCors,
    route_methods: Option<&[Method]>,
    key: &str,
    p: &mut Problems,
) -> Option<crate::routes::cors::CorsPolicy> {
    let mut ok = true;
    if raw.allow_origins.is_empty() {
        p.add(
            &format!("{key}.allow_origins"),
            "must list at least one origin",
        );
        ok = false;
    }
    let mut origins = Vec::with_capacity(raw.allow_origins.len());
    for origin in &raw.allow_origins {
        if origin == "*" {
            if raw.allow_credentials {
                p.add(
                    &format!("{key}.allow_origins"),
                    "\"*\" cannot go with allow_credentials = true: list the origins",
                );
                ok = false;
            }
            origins.push(origin.clone());
            continue;
        }
        let parsed: Option<Uri> = origin.parse().ok();
        let valid = parsed.as_ref().is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
                && !origin.ends_with('/')
                && uri
                    .path_and_query()
                    .is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/")
        });
        if !valid {
            p.add(
                &format!("{key}.allow_origins"),
                format_args!("{origin:?} must be an origin such as \"https://app.example.com\" (scheme, host and port; no path)"),
            );
            ok = false;
        } else {
            origins.push(origin.to_ascii_lowercase());
        }
    }
    let mut methods = Vec::new();
    for name in &raw.allow_methods {
        match parse_method(name) {
            Ok(method) => methods.push(method.as_str().to_owned()),
            Err(problem) => {
                p.add(&format!("{key}.allow_methods"), problem);
                ok = false;
            }
        }
    }
    if methods.is_empty()
        && let Some(route_methods) = route_methods
    {
        methods = route_methods
            .iter()
            .map(|m| m.as_str().to_owned())
            .collect();
    }
    let allow_methods = if methods.is_empty() {
        HeaderValue::from_static(CORS_DEFAULT_METHODS)
    } else {
        HeaderValue::from_str(&methods.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static(CORS_DEFAULT_METHODS))
    };
    for name in &raw.allow_headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.add(
                &format!("{key}.allow_headers"),
                format_args!("{name:?} is not a header name"),
            );
            ok = false;
        }
    }
    let allow_headers = (!raw.allow_headers.is_empty())
        .then(|| HeaderValue::from_str(&raw.allow_headers.join(", ")).ok())
        .flatten();
    if let Some(max_age) = raw.max_age
        && max_age > crate::routes::cors::MAX_AGE_SECONDS
    {
        p.add(
            &format!("{key}.max_age"),
            format_args!(
                "{max_age} is over {} seconds",
                crate::routes::cors::MAX_AGE_SECONDS
            ),
        );
        ok = false;
    }
    ok.then_some(crate::routes::cors::CorsPolicy {
        allow_origins: origins,
        allow_methods,
        allow_headers,
        allow_credentials: raw.allow_credentials,
        max_age: raw.max_age,
    })
}

/// A `hosts` entry: a DNS name or `*.` and one (any case, one trailing dot
/// allowed), without scheme, port, path or a `*` anywhere else.
pub(super) fn parse_host_pattern(value: &str) -> Result<HostPattern, String> {
    let lower = value.to_ascii_lowercase();
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if value.contains("://") {
        return Err(format!("{value:?} must be a host name, without a scheme"));
    }
    if value.contains(':') {
        return Err(format!(
            "{value:?} must be a host name, without a port (ports are ignored)"
        ));
    }
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        });
    if !labels_ok {
        return Err(format!(
            "{value:?} must be a host name (letters, digits, '-', '_' and dots) or \"*.\" and one; '*' only as the whole first label"
        ));
    }
    Ok(if wildcard {
        HostPattern::Wildcard(name.to_owned())
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

/// A method name as HTTP spells the standard ones: upper case (methods are
/// case-sensitive, so `get` would be another method that no client sends).
pub(super) fn parse_method(value: &str) -> Result<Method, String> {
    let token_ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !token_ok {
        return Err(format!(
            "{value:?} must be an upper-case method name such as \"GET\" (methods are case-sensitive)"
        ));
    }
    Method::from_bytes(value.as_bytes()).map_err(|_| format!("{value:?} is not a method name"))
}

/// An upstream base URL: `http://host:port` with an optional path prefix.
pub(super) fn parse_upstream(value: &str) -> Result<Uri, String> {
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
