//! ACME (RFC 8555): the certificate of `[server.tls.acme]`, ordered when
//! no valid one is cached, renewed once two thirds of its life have
//! passed, retried with a capped backoff after a failure, all while the
//! old (or the default) certificate keeps serving.
//!
//! The protocol and its signed requests are `instant-acme`'s; CSRs and
//! tls-alpn-01 certificates are `rcgen`'s. The account and certificates
//! are kept in `cache_dir` and, with a PostgreSQL store, in the store too,
//! where every replica finds them; an advisory lock lets one replica order
//! at a time, and the http-01 answers go through the store as well, so
//! that whichever replica the CA reaches can answer.
//!
//! The pure parts (when to renew, how long to back off, cache names,
//! reading a cached certificate) are apart from the task that does I/O.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{CertResolver, TlsError, certified_key, load_certs};
use crate::clock::unix_now;
use crate::config::{AcmeChallenge, AcmeConfig};
use crate::metrics::Metrics;
use crate::store::Store;

/// Where the plain listener answers http-01 challenges (RFC 8555 8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// First wait after a failed attempt; doubled after each further failure.
const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Longest wait between failed attempts: a CA's limits on failed
/// validations are counted per hour.
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// Longest sleep between checks of a valid certificate, so that clock
/// changes, short-lived certificates and replicas' renewals are noticed.
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// How long the CA may take to validate the challenges.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the CA may take to issue after the CSR.
const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(120);
/// One HTTP exchange with the CA, from request to response head.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a replica waiting for another's order tries the lock.
const LOCK_POLL: Duration = Duration::from_secs(1);
/// How long a replica waits for another's order before it counts as a
/// failed attempt (and backs off).
const LOCK_WAIT: Duration = Duration::from_secs(600);
/// Folder and file modes: the account key is a secret.
const CACHE_DIR_MODE: u32 = 0o700;
const CACHE_FILE_MODE: u32 = 0o600;
/// The longest http-01 token taken (the CA's are 43 characters).
const MAX_TOKEN_LEN: usize = 128;

/// Why an ACME attempt failed. The messages name no secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// The CA answered with a problem, or could not be reached.
    #[error("ACME: {0}")]
    Protocol(String),
    /// The CA did not validate or issue.
    #[error("order failed: {0}")]
    Order(String),
    /// The store or the cache folder failed.
    #[error("cache: {0}")]
    Cache(String),
    /// A key or certificate could not be made or used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// Another replica held the ordering lock for too long.
    #[error("another replica has been ordering for {} seconds", LOCK_WAIT.as_secs())]
    LockTimeout,
}

impl From<instant_acme::Error> for AcmeError {
    fn from(err: instant_acme::Error) -> Self {
        AcmeError::Protocol(error_chain(&err))
    }
}

impl From<TlsError> for AcmeError {
    fn from(err: TlsError) -> Self {
        AcmeError::Certificate(err.to_string())
    }
}

impl From<rcgen::Error> for AcmeError {
    fn from(err: rcgen::Error) -> Self {
        AcmeError::Certificate(err.to_string())
    }
}

/// An error and its sources on one line: hyper's own says only "client
/// error (Connect)".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------
// Pure parts.

/// When a certificate valid from `not_before` to `not_after` (Unix
/// seconds) is renewed: once two thirds of its life have passed.
pub fn renewal_time(not_before: i64, not_after: i64) -> i64 {
    let life = (not_after - not_before).max(0);
    not_before + life * 2 / 3
}

/// The wait after the `failures`-th failure in a row (from 1): doubling
/// from [`FIRST_RETRY`], at most [`MAX_RETRY`].
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

/// The sleep from `now` until a certificate due for renewal at `renew_at`
/// is looked at again, at most [`MAX_CHECK_INTERVAL`].
pub fn check_delay(renew_at: i64, now: i64) -> Duration {
    let seconds = u64::try_from(renew_at.saturating_sub(now)).unwrap_or(0);
    Duration::from_secs(seconds).min(MAX_CHECK_INTERVAL)
}

/// The first 16 hex digits of SHA-256 over `parts`, each ended by a NUL.
fn short_hash(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..8])
}

/// The cache name of the account at `directory`: one account per CA,
/// kept when the domains change.
pub fn account_name(directory: &str) -> String {
    format!("account-{}.json", short_hash(&[directory]))
}

/// The cache name of the certificate for `domains` from `directory`: a
/// new set of names (in any order) is a new certificate.
pub fn certificate_name(directory: &str, domains: &[String]) -> String {
    let mut sorted: Vec<&str> = domains.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.insert(0, directory);
    format!("certificate-{}.pem", short_hash(&sorted))
}

/// A cached certificate: its key and chain, read and checked.
pub struct Bundle {
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's `notBefore`, Unix seconds.
    pub not_before: i64,
    /// The leaf's `notAfter`, Unix seconds.
    pub not_after: i64,
}

impl Bundle {
    /// Reads the PEM text of a cached certificate (its key, then the
    /// chain), which must name every one of `domains`.
    pub fn parse(pem: &str, domains: &[String]) -> Result<Bundle, String> {
        let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|err| format!("no private key: {err}"))?;
        let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("bad certificate: {err}"))?;
        let leaf = chain.first().ok_or("no certificate")?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|err| format!("bad certificate: {err}"))?;
        let names: Vec<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        x509_parser::extensions::GeneralName::DNSName(dns) => {
                            Some(dns.to_ascii_lowercase())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(missing) = domains.iter().find(|domain| !names.contains(domain)) {
            return Err(format!("does not name {missing}"));
        }
        let validity = cert.validity();
        Ok(Bundle {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            key,
            chain,
        })
    }

    /// When this certificate is renewed.
    pub fn renew_at(&self) -> i64 {
        renewal_time(self.not_before, self.not_after)
    }
}

/// Whether `token` can be an http-01 token (base64url, RFC 8555 8.3):
/// anything else is answered 404 without a look in the store.
pub fn valid_token(token: &str) -> bool {
    (1..=MAX_TOKEN_LEN).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Unix seconds as RFC 3339 text, for the log.
fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

// ---------------------------------------------------------------------
// The task.

/// The ACME side of the gateway, long-lived across reloads: the task that
/// orders and renews, and the http-01 answers of orders in progress.
pub struct AcmeControl {
    shared: Arc<Shared>,
    config: watch::Sender<Option<AcmeConfig>>,
    started: Mutex<bool>,
}

struct Shared {
    resolver: Arc<CertResolver>,
    store: Store,
    metrics: Arc<Metrics>,
    /// http-01 key authorizations by token.
    http01: RwLock<HashMap<String, String>>,
    /// The leaf last installed, so that a check that finds the same one
    /// logs nothing.
    installed: Mutex<Option<CertificateDer<'static>>>,
}

impl AcmeControl {
    /// Nothing ordered yet; [`AcmeControl::configure`] starts the task.
    pub fn new(resolver: Arc<CertResolver>, store: Store, metrics: Arc<Metrics>) -> AcmeControl {
        AcmeControl {
            shared: Arc::new(Shared {
                resolver,
                store,
                metrics,
                http01: RwLock::new(HashMap::new()),
                installed: Mutex::new(None),
            }),
            config: watch::Sender::new(None),
            started: Mutex::new(false),
        }
    }

    /// Takes the `[server.tls.acme]` of a (new) config: the first one
    /// starts the task; a changed one (other domains) makes it look again
    /// at once; `None` pauses it (the certificate installed keeps serving).
    pub fn configure(&self, config: Option<&AcmeConfig>) {
        self.config.send_if_modified(|current| {
            if current.as_ref() == config {
                return false;
            }
            *current = config.cloned();
            true
        });
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if config.is_some() && !*started {
            *started = true;
            tokio::spawn(run(self.shared.clone(), self.config.subscribe()));
        }
    }

    /// The key authorization for an http-01 `token`: this process's, or
    /// with PostgreSQL, another replica's.
    pub async fn http01_answer(&self, token: &str) -> Option<String> {
        if !valid_token(token) {
            return None;
        }
        let local = self
            .shared
            .http01
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        if local.is_some() {
            return local;
        }
        self.shared.store.postgres_url()?;
        self.shared
            .store
            .acme_get(&http01_name(token))
            .await
            .ok()
            .flatten()
    }
}

/// The store name of an http-01 answer.
fn http01_name(token: &str) -> String {
    format!("http01:{token}")
}

/// Orders, renews and retries for as long as the process runs.
async fn run(shared: Arc<Shared>, mut config: watch::Receiver<Option<AcmeConfig>>) {
    let mut failures = 0u32;
    loop {
        let current = config.borrow_and_update().clone();
        let wait = match current {
            None => None,
            Some(current) => match attempt(&shared, &current).await {
                Ok(renew_at) => {
                    failures = 0;
                    Some(check_delay(renew_at, unix_now()))
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let delay = retry_delay(failures);
                    let next = unix_now() + i64::try_from(delay.as_secs()).unwrap_or(0);
                    shared.metrics.acme_failed(next);
                    warn!(
                        error = %err,
                        failures,
                        retry_in_seconds = delay.as_secs(),
                        next_attempt = %rfc3339(next),
                        domains = ?current.domains,
                        "ACME attempt failed; the current certificate keeps serving"
                    );
                    Some(delay)
                }
            },
        };
        let sleep = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            changed = config.changed() => if changed.is_err() { return },
        }
    }
}

/// One look at the certificate: serve the cached one, and order a new one
/// when there is none or it is due. The time it is next due on success.
async fn attempt(shared: &Shared, config: &AcmeConfig) -> Result<i64, AcmeError> {
    let cert_name = certificate_name(&config.directory, &config.domains);
    if let Some(bundle) = load_bundle(shared, config, &cert_name).await {
        // Due but still valid: it serves while its successor is ordered.
        // Expired: the default certificate (if any) serves instead.
        if unix_now() < bundle.not_after {
            install(shared, config, &bundle)?;
        }
        if unix_now() < bundle.renew_at() {
            return Ok(bundle.renew_at());
        }
    }
    let lock = if shared.store.postgres_url().is_some() {
        Some(wait_for_lock(shared).await?)
    } else {
        None
    };
    // A bool, not a borrow of the lock: its connection is not `Sync`.
    let locked = lock.is_some();
    let result = async {
        if locked {
            // Another replica may have ordered while this one waited.
            if let Some(bundle) = load_bundle(shared, config, &cert_name).await
                && unix_now() < bundle.renew_at()
            {
                install(shared, config, &bundle)?;
                return Ok(bundle.renew_at());
            }
        }
        let account = account(shared, config).await?;
        info!(domains = ?config.domains, directory = %config.directory, "ACME: ordering a certificate");
        let pem = order(shared, config, &account).await?;
        let bundle = Bundle::parse(&pem, &config.domains).map_err(AcmeError::Certificate)?;
        save(shared, config, &cert_name, &pem).await;
        shared.metrics.acme_ordered();
        install(shared, config, &bundle)?;
        Ok(bundle.renew_at())
    }
    .await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    result
}

/// The ordering lock, waiting while another replica holds it.
async fn wait_for_lock(shared: &Shared) -> Result<crate::store::acme::AcmeLock, AcmeError> {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    let mut waiting_logged = false;
    loop {
        match shared.store.acme_try_lock().await {
            Ok(Some(lock)) => return Ok(lock),
            Ok(None) if tokio::time::Instant::now() < deadline => {
                if !waiting_logged {
                    info!("ACME: another replica is ordering; waiting for it");
                    waiting_logged = true;
                }
                tokio::time::sleep(LOCK_POLL).await;
            }
            Ok(None) => return Err(AcmeError::LockTimeout),
            Err(err) => return Err(AcmeError::Cache(err.to_string())),
        }
    }
}

/// Serves `bundle` for the configured domains.
fn install(shared: &Shared, config: &AcmeConfig, bundle: &Bundle) -> Result<(), AcmeError> {
    let key = certified_key(bundle.chain.clone(), &bundle.key, "ACME certificate")?;
    shared.resolver.set_acme_certificate(&config.domains, key);
    let renew_at = bundle.renew_at();
    let next_check =
        unix_now() + i64::try_from(check_delay(renew_at, unix_now()).as_secs()).unwrap_or(0);
    shared.metrics.acme_serving(bundle.not_after, next_check);
    let mut installed = shared.installed.lock().unwrap_or_else(|e| e.into_inner());
    if installed.as_ref() != bundle.chain.first() {
        *installed = bundle.chain.first().cloned();
        info!(
            domains = ?config.domains,
            not_after = %rfc3339(bundle.not_after),
            renew_at = %rfc3339(renew_at),
            "ACME: serving the certificate"
        );
    }
    Ok(())
}

/// The cached certificate for `name` that names the configured domains:
/// from the store with PostgreSQL, else (or when the store has none)
/// from `cache_dir`. A broken one is logged and treated as missing.
async fn load_bundle(shared: &Shared, config: &AcmeConfig, name: &str) -> Option<Bundle> {
    let pem = load(shared, config, name).await?;
    match Bundle::parse(&pem, &config.domains) {
        Ok(bundle) => Some(bundle),
        Err(problem) => {
            warn!(cache = name, problem, "ACME: ignoring a cached certificate");
            None
        }
    }
}

/// The cached text under `name`.
async fn load(shared: &Shared, config: &AcmeConfig, name: &str) -> Option<String> {
    if shared.store.postgres_url().is_some() {
        match shared.store.acme_get(name).await {
            Ok(Some(value)) => return Some(value),
            Ok(None) => {}
            Err(err) => warn!(error = %err, "ACME: cannot read the store; trying cache_dir"),
        }
    }
    let path = config.cache_dir.join(name);
    match tokio::fs::read_to_string(&path).await {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => {
            warn!(path = %path.display(), error = %err, "ACME: cannot read the cache");
            None
        }
    }
}

/// Keeps `value` under `name` in `cache_dir` (owner-only) and, with
/// PostgreSQL, in the store. Failures are logged: what was ordered is
/// served all the same.
async fn save(shared: &Shared, config: &AcmeConfig, name: &str, value: &str) {
    if shared.store.postgres_url().is_some()
        && let Err(err) = shared.store.acme_put(name, value, unix_now()).await
    {
        warn!(error = %err, "ACME: cannot keep the certificate in the store");
    }
    let dir = config.cache_dir.clone();
    let name = name.to_owned();
    let value = value.to_owned();
    let written = tokio::task::spawn_blocking(move || write_private(&dir, &name, &value)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(err)) => warn!(
            cache_dir = %config.cache_dir.display(),
            error = %err,
            "ACME: cannot write to cache_dir; a restart will order again"
        ),
        Err(err) => warn!(error = %err, "ACME: cannot write to cache_dir"),
    }
}

/// Writes `dir/name` owner-only, through a temporary file and a rename,
/// so that a crash leaves the old file or the new one.
fn write_private(dir: &Path, name: &str, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(CACHE_DIR_MODE)
        .create(dir)?;
    let temporary = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(CACHE_FILE_MODE)
        .open(&temporary)?;
    file.write_all(value.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))
}

/// The account for the configured CA: the cached one, else a new one
/// (kept at once, so a failed order does not make another account).
async fn account(shared: &Shared, config: &AcmeConfig) -> Result<Account, AcmeError> {
    let name = account_name(&config.directory);
    let http = http_client(config)?;
    if let Some(json) = load(shared, config, &name).await {
        match serde_json::from_str::<AccountCredentials>(&json) {
            Ok(credentials) => {
                return Ok(Account::builder_with_http(Box::new(http))
                    .from_credentials(credentials)
                    .await?);
            }
            // Not the text: it holds the account key.
            Err(_) => warn!(cache = name, "ACME: ignoring an unreadable cached account"),
        }
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(Box::new(http))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            None,
        )
        .await?;
    let json = serde_json::to_string(&credentials)
        .map_err(|err| AcmeError::Cache(format!("cannot encode the account: {err}")))?;
    save(shared, config, &name, &json).await;
    info!(directory = %config.directory, "ACME: account created");
    Ok(account)
}

/// What an order put up for the CA to check, taken down afterwards.
enum Answer {
    Http01(String),
    TlsAlpn01(String),
}

/// Orders a certificate for the configured domains: answers the
/// challenges, sends a CSR for a new key, and returns the key and the
/// issued chain as PEM text.
async fn order(
    shared: &Shared,
    config: &AcmeConfig,
    account: &Account,
) -> Result<String, AcmeError> {
    let identifiers: Vec<Identifier> = config
        .domains
        .iter()
        .map(|domain| Identifier::Dns(domain.clone()))
        .collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut answers = Vec::new();
    let validated = async {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(AcmeError::Order(format!("authorization is {status:?}")));
                }
            }
            let kind = match config.challenge {
                AcmeChallenge::Http01 => ChallengeType::Http01,
                AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut challenge = authorization
                .challenge(kind.clone())
                .ok_or_else(|| AcmeError::Order(format!("the CA offers no {kind:?} challenge")))?;
            let name = challenge.identifier().to_string();
            let key_authorization = challenge.key_authorization();
            match config.challenge {
                AcmeChallenge::Http01 => {
                    let token = challenge.token.clone();
                    shared
                        .http01
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(token.clone(), key_authorization.as_str().to_owned());
                    if shared.store.postgres_url().is_some() {
                        shared
                            .store
                            .acme_put(&http01_name(&token), key_authorization.as_str(), unix_now())
                            .await
                            .map_err(|err| AcmeError::Cache(err.to_string()))?;
                    }
                    answers.push(Answer::Http01(token));
                }
                AcmeChallenge::TlsAlpn01 => {
                    let key = alpn_certificate(&name, key_authorization.digest().as_ref())?;
                    shared.resolver.set_alpn_challenge(&name, Some(key));
                    answers.push(Answer::TlsAlpn01(name));
                }
            }
            challenge.set_ready().await?;
        }
        let retries = RetryPolicy::new().timeout(VALIDATION_TIMEOUT);
        Ok::<_, AcmeError>(order.poll_ready(&retries).await?)
    }
    .await;
    for answer in answers {
        match answer {
            Answer::Http01(token) => {
                shared
                    .http01
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&token);
                if shared.store.postgres_url().is_some() {
                    let _ = shared.store.acme_delete(&http01_name(&token)).await;
                }
            }
            Answer::TlsAlpn01(name) => shared.resolver.set_alpn_challenge(&name, None),
        }
    }
    let status = validated?;
    if status != OrderStatus::Ready {
        let problem = order
            .state()
            .error
            .as_ref()
            .map(|problem| problem.to_string())
            .unwrap_or_else(|| "the CA did not validate the names".into());
        return Err(AcmeError::Order(format!("order is {status:?}: {problem}")));
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(config.domains.clone())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    let retries = RetryPolicy::new().timeout(ISSUANCE_TIMEOUT);
    let chain = order.poll_certificate(&retries).await?;
    Ok(format!("{}{chain}", key.serialize_pem()))
}

/// The tls-alpn-01 certificate for `name` (RFC 8737 section 3): self-signed,
/// with the digest of the key authorization in an acmeIdentifier extension.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not `certified_key`: its key check parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension; the
    // key was made for this certificate a line above.
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|err| AcmeError::Certificate(format!("tls-alpn-01 certificate: {err}")))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

// ---------------------------------------------------------------------
// Talking to the CA.

/// instant-acme's HTTP through the gateway's own hyper and rustls (ring):
/// the system's roots plus `ca_file`, every exchange under a timeout.
struct AcmeHttp(Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.0.request(request);
        Box::pin(async move {
            match tokio::time::timeout(HTTP_TIMEOUT, response).await {
                Ok(Ok(response)) => Ok(BytesResponse::from(response)),
                Ok(Err(err)) => Err(instant_acme::Error::Other(error_chain(&err).into())),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("no answer within {} seconds", HTTP_TIMEOUT.as_secs()).into(),
                )),
            }
        })
    }
}

fn http_client(config: &AcmeConfig) -> Result<AcmeHttp, AcmeError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = &config.ca_file {
        for cert in load_certs(path)? {
            roots
                .add(cert)
                .map_err(|err| AcmeError::Certificate(format!("{}: {err}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| AcmeError::Certificate(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(HTTP_TIMEOUT));
    connector.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(connector);
    Ok(AcmeHttp(Client::builder(TokioExecutor::new()).build(https)))
}

/// `check-config`'s look at an ACME config: the directory answers with a
/// directory, and `cache_dir` can be written. Each problem as
/// `<key>: <problem>`.
pub async fn preflight(config: &AcmeConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(problem) = fetch_directory(config).await {
        problems.push(format!(
            "server.tls.acme.directory: cannot use {}: {problem}",
            config.directory
        ));
    }
    let dir = config.cache_dir.clone();
    let writable = tokio::task::spawn_blocking(move || {
        write_private(&dir, ".check", "")?;
        std::fs::remove_file(dir.join(".check"))
    })
    .await;
    match writable {
        Ok(Ok(())) => {}
        Ok(Err(err)) => problems.push(format!(
            "server.tls.acme.cache_dir: cannot write to {}: {err}",
            config.cache_dir.display()
        )),
        Err(err) => problems.push(format!("server.tls.acme.cache_dir: {err}")),
    }
    problems
}

/// Fetches the directory and checks it is one.
async fn fetch_directory(config: &AcmeConfig) -> Result<(), String> {
    let http = http_client(config).map_err(|err| err.to_string())?;
    let request = http::Request::get(&config.directory)
        .body(BodyWrapper::default())
        .map_err(|err| err.to_string())?;
    let response = http.request(request).await.map_err(|err| err.to_string())?;
    let status = response.parts.status;
    let mut body = response.body;
    let bytes = body.into_bytes().await.map_err(|err| err.to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP status {status}"));
    }
    let directory: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| "the answer is not a JSON directory".to_owned())?;
    if directory.get("newNonce").is_none() || directory.get("newOrder").is_none() {
        return Err("the answer is not an ACME directory (no newNonce, newOrder)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_two_thirds_of_life() {
        assert_eq!(renewal_time(0, 90 * 86_400), 60 * 86_400);
        assert_eq!(renewal_time(1000, 1000 + 3 * 3600), 1000 + 2 * 3600);
        // A certificate that ends before it begins is due at once.
        assert_eq!(renewal_time(5000, 10), 5000);
    }

    #[test]
    fn retries_double_up_to_the_cap() {
        assert_eq!(retry_delay(1), FIRST_RETRY);
        assert_eq!(retry_delay(2), FIRST_RETRY * 2);
        assert_eq!(retry_delay(3), FIRST_RETRY * 4);
        assert_eq!(retry_delay(20), MAX_RETRY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
        assert_eq!(retry_delay(0), FIRST_RETRY);
    }

    #[test]
    fn checks_come_at_renewal_or_within_the_interval() {
        assert_eq!(check_delay(1100, 1000), Duration::from_secs(100));
        assert_eq!(check_delay(900, 1000), Duration::ZERO);
        assert_eq!(check_delay(1000 + 86_400, 1000), MAX_CHECK_INTERVAL);
    }

    #[test]
    fn cache_names_follow_the_domains_not_their_order() {
        let dir = "https://ca.test/dir";
        let a = certificate_name(dir, &["a.test".into(), "b.test".into()]);
        let b = certificate_name(dir, &["b.test".into(), "a.test".into()]);
        assert_eq!(a, b);
        assert_ne!(a, certificate_name(dir, &["a.test".into()]));
        assert_ne!(
            a,
            certificate_name(
                "https://other.test/dir",
                &["a.test".into(), "b.test".into()]
            )
        );
        // The account stays when the domains change.
        assert_eq!(account_name(dir), account_name(dir));
        assert_ne!(account_name(dir), account_name("https://other.test/dir"));
        assert!(a.starts_with("certificate-") && a.ends_with(".pem"), "{a}");
    }

    #[test]
    fn tokens_are_base64url() {
        assert!(valid_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        for bad in ["", "../etc", "a b", "a%2f", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(!valid_token(bad), "{bad:?}");
        }
    }

    fn bundle_pem(names: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        format!("{}{}", key.serialize_pem(), cert.pem())
    }

    #[test]
    fn a_cached_certificate_must_name_every_domain() {
        let pem = bundle_pem(&["a.test", "b.test"]);
        let bundle = Bundle::parse(&pem, &["a.test".into(), "b.test".into()]).unwrap();
        assert!(bundle.not_after > bundle.not_before);
        assert_eq!(bundle.chain.len(), 1);
        assert!(certified_key(bundle.chain.clone(), &bundle.key, "test").is_ok());
        let err = Bundle::parse(&pem, &["c.test".into()]).err().unwrap();
        assert_eq!(err, "does not name c.test");
        assert!(Bundle::parse("", &[]).is_err());
        let no_key = pem[pem.find("-----BEGIN CERTIFICATE").unwrap()..].to_owned();
        assert!(
            Bundle::parse(&no_key, &[])
                .err()
                .unwrap()
                .starts_with("no private key")
        );
    }

    #[test]
    fn the_alpn_certificate_carries_the_acme_identifier() {
        let digest = [7u8; 32];
        let key = alpn_certificate("a.test", &digest).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
        let extension = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(extension.critical);
        // An OCTET STRING of the 32-byte digest.
        assert_eq!(&extension.value[..2], &[0x04, 32]);
        assert_eq!(&extension.value[2..], &digest);
    }
}
