//! The gateway's shared state: built once at start from the config, the
//! store and the caches, and rebuilt on reload around the same store,
//! caches and metrics.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use tracing::warn;

use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::auth::password::HashLimiter;
use crate::auth::throttle::LoginThrottle;
use crate::clock::unix_now;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Forwarder;
use crate::proxy::assertion::Assertions;
use crate::ratelimit::RateLimits;
use crate::store::cache::CredentialCache;
use crate::store::{Store, follow};
use crate::telemetry::Telemetry;
use crate::tls::acme::AcmeControl;
use crate::tls::{self, CertResolver, TlsError};
use crate::token::jwks::JwksProvider;
use tokio_rustls::TlsAcceptor;

/// Everything a request needs: one snapshot of the configuration and what
/// is built from it, plus the long-lived parts (store, cache, metrics)
/// that every snapshot shares. A reload makes a new snapshot; requests
/// finish on the snapshot they started with.
pub struct Gateway {
    /// The validated config.
    pub config: Config,
    /// Users, keys and revocations.
    pub store: Store,
    /// The in-memory cache in front of the store.
    pub cache: Arc<CredentialCache>,
    /// Credential checking.
    pub auth: Authenticator,
    /// Failed-login throttling.
    pub throttle: LoginThrottle,
    /// The pooled upstream client.
    pub forwarder: Forwarder,
    /// TLS for the HTTPS listener, when configured.
    pub tls: Option<TlsAcceptor>,
    /// The HTTPS listener's certificates (SNI, watched files, ACME), shared
    /// by every snapshot: they outlive reloads.
    pub certificates: Option<Arc<CertResolver>>,
    /// ACME ordering and renewal, shared by every snapshot (with TLS only).
    pub acme: Option<Arc<AcmeControl>>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The audit log's queue, shared by every snapshot.
    pub audit: AuditLog,
    /// External OpenID Connect providers for browser sign-in.
    pub oidc: crate::oidc::Providers,
    /// The rate-limit rules and their buckets.
    pub ratelimits: RateLimits,
    /// Per-address budget of `POST /v1.0/accesskeys/revoke`, which needs
    /// no credential.
    pub revoke_bound: Arc<crate::ratelimit::memory::MemoryBuckets>,
    /// `[telemetry]`: traces of every request; `None` costs nothing.
    pub telemetry: Option<Arc<Telemetry>>,
}

/// Why the gateway's shared state could not be built at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or migrated.
    #[error("cannot open the store: {}", .0.detail())]
    Store(#[from] crate::store::StoreError),
    /// TLS could not be set up: a certificate, key or CA file could not be
    /// loaded, or rustls refused it.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Why a new config was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The change needs a restart (listeners or store).
    #[error("{0} cannot change without a restart")]
    NeedsRestart(&'static str),
    /// The certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl Gateway {
    /// Opens the store, loads revocations and starts the background tasks.
    pub async fn start(config: Config) -> Result<Arc<Gateway>, StartError> {
        let store = Store::open(&config.store.url).await?;
        let cache = Arc::new(CredentialCache::new(&config.cache));
        for (jti, expires_at) in store.revoked_tokens(unix_now()).await? {
            cache.revoke_token(&jti, expires_at);
        }
        let other_realm = store
            .users_with_other_realm(&config.onetimekey.realm)
            .await?;
        if other_realm > 0 {
            warn!(
                users = other_realm,
                realm = %config.onetimekey.realm,
                "some users' one-time-key digests were made with another realm; their one-time-key logins need a password reset"
            );
        }
        follow::start(&store, &cache, config.store.poll_interval).await?;
        let hashes = HashLimiter::new(
            config.login.max_concurrent_hashes,
            config.login.max_queued_hashes,
        );
        let metrics = Arc::new(Metrics::default());
        let audit = AuditLog::start(store.clone(), metrics.clone());
        let certificates = match &config.server.tls {
            Some(tls) => {
                let resolver = Arc::new(CertResolver::try_new(tls, tls::provider())?);
                tls::certs::spawn_watch(Arc::downgrade(&resolver));
                Some(resolver)
            }
            None => None,
        };
        let acme = certificates.as_ref().map(|certificates| {
            Arc::new(AcmeControl::new(
                certificates.clone(),
                store.clone(),
                metrics.clone(),
            ))
        });
        let mut gateway = Gateway::assemble(
            config,
            store,
            cache,
            (metrics, audit),
            hashes,
            certificates,
            None,
        )?;
        gateway.acme = acme;
        gateway.configure_acme();
        Ok(Arc::new(gateway))
    }

    fn assemble(
        config: Config,
        store: Store,
        cache: Arc<CredentialCache>,
        // The counters and the audit log's queue: both outlive snapshots.
        (metrics, audit): (Arc<Metrics>, AuditLog),
        hashes: HashLimiter,
        certificates: Option<Arc<CertResolver>>,
        previous_limits: Option<&RateLimits>,
    ) -> Result<Gateway, TlsError> {
        let tls = match (&config.server.tls, &certificates) {
            (Some(tls), Some(certificates)) => Some(tls::acceptor(tls, certificates.clone())?),
            _ => None,
        };
        let mut providers = Vec::with_capacity(config.jwt.external.len());
        if !config.jwt.external.is_empty() {
            // One client, and one load of the system's CA roots, for all.
            let client = crate::proxy::pooled_client(&config.upstream)?;
            for source in &config.jwt.external {
                let provider = JwksProvider::new(source.clone(), client.clone(), config.jwt.leeway);
                provider.spawn_refresh();
                providers.push(provider);
            }
        }
        let pools = config.routes.pools();
        if pools.iter().any(|(_, pool)| pool.health_check().is_some()) {
            let client = crate::proxy::pooled_client(&config.upstream)?;
            crate::pool::spawn_probers(
                pools.iter().map(|(_, pool)| *pool),
                &client,
                config.upstream.connect_timeout,
            );
        }
        // A new snapshot verifies with a new cache: tokens of keys a reload
        // removed are not let in from the old one.
        let auth = Authenticator::new(
            config.jwt.keys.clone(),
            providers,
            store.clone(),
            cache.clone(),
        )
        .with_sources(credential_sources(&config));
        cache.watch_token_cache(auth.token_cache());
        // A snapshot's own exporter: it ends once the snapshot and its
        // last request are gone, after sending what it holds.
        let telemetry = match &config.telemetry {
            Some(telemetry) => Some(Telemetry::start(
                telemetry,
                crate::proxy::pooled_client(&config.upstream)?,
                metrics.clone(),
            )),
            None => None,
        };
        Ok(Gateway {
            telemetry,
            auth,
            throttle: LoginThrottle::new(store.clone(), &config.login, hashes),
            forwarder: Forwarder::try_new(
                &config.upstream,
                &config.limits,
                config
                    .assertion
                    .clone()
                    .map(|assertion| Assertions::new(assertion, config.jwt.keys.clone())),
            )?
            .with_credential_sources(credential_sources(&config)),
            oidc: crate::oidc::Providers::try_new(
                &config.oidc,
                &config.jwt.derive_root,
                &config.upstream,
                config.jwt.leeway,
            )?,
            ratelimits: RateLimits::new(&config.ratelimit, metrics.clone(), previous_limits),
            revoke_bound: revoke_bound(),
            tls,
            certificates,
            // Set by the caller: it outlives snapshots.
            acme: None,
            metrics,
            audit,
            store,
            cache,
            config,
        })
    }

    /// A snapshot with `config` that shares this one's store, cache and
    /// metrics. Listeners and the store cannot change this way.
    pub fn reconfigure(&self, mut config: Config) -> Result<Gateway, ReloadError> {
        let old = &self.config.server;
        let new = &config.server;
        if old.listen != new.listen
            || old.admin_listen != new.admin_listen
            || old.tls.as_ref().map(|t| t.listen) != new.tls.as_ref().map(|t| t.listen)
        {
            return Err(ReloadError::NeedsRestart("the listen addresses"));
        }
        if self.config.store.url != config.store.url {
            return Err(ReloadError::NeedsRestart("store.url"));
        }
        config.routes.adopt_in_flight(&self.config.routes);
        // The same hashing slots while the bound stays: requests still
        // running on the old snapshot count against the new one's bound.
        let (slots, queued) = (
            config.login.max_concurrent_hashes,
            config.login.max_queued_hashes,
        );
        let hashes = if self.throttle.hashes().same_bounds(slots, queued) {
            self.throttle.hashes().clone()
        } else {
            HashLimiter::new(slots, queued)
        };
        if let (Some(tls), Some(certificates)) = (&config.server.tls, &self.certificates) {
            certificates.configure(tls)?;
        }
        let mut next = Gateway::assemble(
            config,
            self.store.clone(),
            self.cache.clone(),
            (self.metrics.clone(), self.audit.clone()),
            hashes,
            self.certificates.clone(),
            Some(&self.ratelimits),
        )?;
        next.acme = self.acme.clone();
        // Other domains are ordered at once, with the same account.
        next.configure_acme();
        Ok(next)
    }

    /// Hands this snapshot's `[server.tls.acme]` to the ACME task.
    fn configure_acme(&self) {
        if let Some(acme) = &self.acme {
            acme.configure(
                self.config
                    .server
                    .tls
                    .as_ref()
                    .and_then(|t| t.acme.as_ref()),
            );
        }
    }
}

/// Sustained revocations by value per client address and second.
const REVOKE_RATE_PER_SEC: f64 = 1.0;
/// Revocations by value one address may make at once.
const REVOKE_BURST: u32 = 20;

/// The per-address budget of `POST /v1.0/accesskeys/revoke`: it takes no credential, so
/// without one an address could make the gateway hash and look up keys
/// (and write to the store) as fast as it can send.
fn revoke_bound() -> Arc<crate::ratelimit::memory::MemoryBuckets> {
    crate::ratelimit::memory::MemoryBuckets::new(&crate::config::ratelimit::RateLimitRule {
        name: Arc::from("accesskeys_revoke"),
        by: crate::config::ratelimit::LimitBy::Address,
        rate: REVOKE_RATE_PER_SEC,
        burst: REVOKE_BURST,
        path_prefix: None,
    })
}

/// Where a request's credential may be, as `config` says: the access-key
/// header and whether the query may carry one.
pub fn credential_sources(config: &Config) -> crate::auth::extract::Sources {
    crate::auth::extract::Sources {
        key_header: config.accesskeys.header.clone(),
        query: config.server.credentials_in_query,
    }
}

/// The current gateway snapshot; a reload swaps it.
pub type SharedGateway = Arc<ArcSwap<Gateway>>;

/// Validates the config at `path` and swaps it in.
pub fn reload(path: &Path, shared: &SharedGateway) -> Result<(), ReloadError> {
    let config = Config::load(path).map_err(|err| ReloadError::Invalid(err.problems.join("; ")))?;
    let current = shared.load_full();
    let next = current.reconfigure(config)?;
    shared.store(Arc::new(next));
    current.metrics.reloads();
    current
        .audit
        .record(crate::audit::Event::new(crate::audit::Kind::ConfigReloaded));
    Ok(())
}

/// Deletes audit events older than `[audit] keep_days` now and every
/// [`crate::audit::PURGE_INTERVAL`], with the keep_days of the snapshot then
/// in force. Every replica does it; the DELETE is idempotent.
pub async fn purge_audit(shared: std::sync::Weak<ArcSwap<Gateway>>) {
    let mut every = tokio::time::interval(crate::audit::PURGE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Not the snapshot: it would keep its config's pools while the
        // DELETE runs.
        let (store, keep_days) = {
            let gateway = shared.load();
            (gateway.store.clone(), gateway.config.audit.keep_days)
        };
        drop(shared);
        crate::audit::purge(&store, keep_days).await;
    }
}
