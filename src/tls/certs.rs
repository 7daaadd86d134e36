//! Which certificate a TLS handshake gets: chosen by SNI from the
//! configured certificate files (exact names, then one-label wildcards,
//! then the default), then from certificates ACME ordered, and for an
//! ACME `tls-alpn-01` validation the challenge certificate. The files are
//! watched: a changed pair is served to new handshakes once it loads, a
//! broken one leaves the last good one in place.
//!
//! One [`CertResolver`] lives as long as the process and is shared by
//! every config snapshot, so watching, ACME and reloads all change the same
//! tables; a handshake reads one table snapshot and allocates nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{TlsError, certs_from_pem, key_from_pem};
use crate::config::{CertificateConfig, ServedName, TlsConfig};

/// How often the certificate files are read for changes: well inside the
/// contract's 5 seconds.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// The ALPN protocol of ACME's `tls-alpn-01` validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Names to certificates, built when the certificates change and read by
/// every handshake.
#[derive(Default)]
struct CertTable {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertTable {
    /// `(names, key)` in order: the first certificate listed for a name
    /// serves it.
    fn build<'a>(
        served: impl IntoIterator<Item = (&'a [ServedName], &'a Arc<CertifiedKey>)>,
        default: Option<Arc<CertifiedKey>>,
    ) -> CertTable {
        let mut table = CertTable {
            default,
            ..CertTable::default()
        };
        for (names, key) in served {
            for name in names {
                let (map, name) = match name {
                    ServedName::Exact(name) => (&mut table.exact, name),
                    ServedName::Wildcard(parent) => (&mut table.wildcard, parent),
                };
                map.entry(name.as_str().into())
                    .or_insert_with(|| key.clone());
            }
        }
        table
    }

    /// The certificate for `name` (lowercase, as rustls hands it over):
    /// exact, else a wildcard for its parent. A wildcard covers one label:
    /// `*.a.test` is neither `a.test` nor `x.y.a.test`.
    fn named(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.exact.get(name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        })
    }
}

/// A configured certificate and key file pair, as last read.
struct WatchedPair {
    config: CertificateConfig,
    /// The default certificate (`cert`/`key`), served for any name.
    is_default: bool,
    names: Vec<ServedName>,
    /// SHA-256 of the cert and key files' bytes when last read (loaded or
    /// not), so a broken pair is reported once per change.
    seen: [u8; 32],
    /// The last pair that loaded: served until a good one replaces it.
    key: Arc<CertifiedKey>,
}

/// The process's certificates for the HTTPS listener.
pub struct CertResolver {
    provider: Arc<CryptoProvider>,
    files: ArcSwap<CertTable>,
    acme: ArcSwap<CertTable>,
    /// `tls-alpn-01` certificates by name, while a validation runs.
    challenges: RwLock<HashMap<Box<str>, Arc<CertifiedKey>>>,
    /// The default pair first (when configured), then the listed ones.
    watched: Mutex<Vec<WatchedPair>>,
    /// Changed pairs that did not load (kept the old ones): `/metrics`.
    pub reload_failures: AtomicU64,
    /// Changed pairs that loaded and now serve: `/metrics`.
    pub reloads: AtomicU64,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Loads every certificate `config` names; any that does not load is
    /// an error naming its file.
    pub fn try_new(config: &TlsConfig, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let resolver = CertResolver {
            provider,
            files: ArcSwap::from_pointee(CertTable::default()),
            acme: ArcSwap::from_pointee(CertTable::default()),
            challenges: RwLock::new(HashMap::new()),
            watched: Mutex::new(Vec::new()),
            reload_failures: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
        };
        resolver.configure(config)?;
        Ok(resolver)
    }

    /// Takes the certificate files of a new config (SIGHUP): all load, or
    /// nothing changes.
    pub fn configure(&self, config: &TlsConfig) -> Result<(), TlsError> {
        let mut pairs = Vec::with_capacity(config.certificates.len() + 1);
        for (certificate, is_default) in config
            .default
            .iter()
            .map(|c| (c, true))
            .chain(config.certificates.iter().map(|c| (c, false)))
        {
            let bytes = read_pair(&certificate.cert, &certificate.key)?;
            let key = self.load(&certificate.cert, &certificate.key, &bytes)?;
            let names = served_names(certificate, &key, is_default)?;
            pairs.push(WatchedPair {
                config: certificate.clone(),
                is_default,
                names,
                seen: fingerprint(&bytes),
                key,
            });
        }
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        *watched = pairs;
        self.publish(&watched);
        Ok(())
    }

    /// Serves `key` for `names` (ACME), and as the default when no default
    /// certificate file is configured.
    pub fn set_acme_certificate(&self, names: &[String], key: Arc<CertifiedKey>) {
        let served: Vec<ServedName> = names
            .iter()
            .filter_map(|name| ServedName::parse(name).ok())
            .collect();
        let table = CertTable::build([(served.as_slice(), &key)], Some(key.clone()));
        self.acme.store(Arc::new(table));
    }

    /// The `tls-alpn-01` certificate for `name` while its validation runs
    /// (`None` removes it). Served only to handshakes that offer nothing
    /// but ALPN `acme-tls/1`.
    pub fn set_alpn_challenge(&self, name: &str, key: Option<Arc<CertifiedKey>>) {
        let mut challenges = self
            .challenges
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let name = name.to_ascii_lowercase();
        match key {
            Some(key) => challenges.insert(name.into(), key),
            None => challenges.remove(name.as_str()),
        };
    }

    fn load(
        &self,
        cert: &Path,
        key: &Path,
        bytes: &PairBytes,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = load_certs_from(cert, &bytes.cert)?;
        let private = key_from_pem(key, &bytes.key)?;
        CertifiedKey::from_der(chain, private, &self.provider)
            .map(Arc::new)
            .map_err(|err| {
                TlsError::at(cert, &format!("does not go with {}: {err}", key.display()))
            })
    }

    /// Rebuilds the file table from `watched`.
    fn publish(&self, watched: &[WatchedPair]) {
        let default = watched
            .iter()
            .find(|pair| pair.is_default)
            .map(|pair| pair.key.clone());
        let table = CertTable::build(
            watched
                .iter()
                .filter(|pair| !pair.is_default)
                .map(|pair| (pair.names.as_slice(), &pair.key)),
            default,
        );
        self.files.store(Arc::new(table));
    }

    /// Reads every pair again; a changed one that loads replaces the old,
    /// one that does not is logged and counted once per change.
    pub async fn check_files(&self) {
        let configs: Vec<(CertificateConfig, [u8; 32])> = {
            let watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
            watched
                .iter()
                .map(|pair| (pair.config.clone(), pair.seen))
                .collect()
        };
        let mut changed = Vec::new();
        for (index, (config, seen)) in configs.into_iter().enumerate() {
            let bytes = match read_pair_async(&config.cert, &config.key).await {
                Ok(bytes) => bytes,
                Err(err) => {
                    // A file mid-swap may be missing for a moment; a lasting
                    // absence is reported below once it changes back.
                    tracing::debug!(error = %err, "certificate files not readable now");
                    continue;
                }
            };
            let now = fingerprint(&bytes);
            if now == seen {
                continue;
            }
            let loaded = self.load(&config.cert, &config.key, &bytes);
            changed.push((index, config, now, loaded));
        }
        if changed.is_empty() {
            return;
        }
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let mut published = false;
        for (index, config, seen, loaded) in changed {
            // A reload may have replaced the list meanwhile.
            let Some(pair) = watched.get_mut(index).filter(|pair| pair.config == config) else {
                continue;
            };
            pair.seen = seen;
            let is_default = pair.is_default;
            match loaded
                .and_then(|key| served_names(&config, &key, is_default).map(|names| (key, names)))
            {
                Ok((key, names)) => {
                    pair.key = key;
                    pair.names = names;
                    published = true;
                    self.reloads.fetch_add(1, Ordering::Relaxed);
                    info!(cert = %config.cert.display(), "certificate files changed; new handshakes get the new certificate");
                }
                Err(err) => {
                    self.reload_failures.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %err, "changed certificate files do not load; the previous certificate stays in use");
                }
            }
        }
        if published {
            self.publish(&watched);
        }
    }

    fn challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.challenges
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        if let Some(mut offered) = hello.alpn()
            && offered.next() == Some(ACME_TLS_ALPN)
            && offered.next().is_none()
        {
            // An ACME validation: its certificate or none, never a real one.
            return name.and_then(|name| self.challenge(name));
        }
        let files = self.files.load();
        let acme = self.acme.load();
        if let Some(name) = name
            && let Some(key) = files.named(name).or_else(|| acme.named(name))
        {
            return Some(key.clone());
        }
        files.default.clone().or_else(|| acme.default.clone())
    }
}

/// Reads the files of every resolver still alive every [`WATCH_INTERVAL`].
pub fn spawn_watch(resolver: Weak<CertResolver>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let Some(resolver) = resolver.upgrade() else {
                return;
            };
            resolver.check_files().await;
        }
    });
}

/// The names a pair is served for: its configured `names`, else its
/// certificate's DNS names. The default certificate needs none.
fn served_names(
    config: &CertificateConfig,
    key: &CertifiedKey,
    is_default: bool,
) -> Result<Vec<ServedName>, TlsError> {
    if !config.names.is_empty() {
        return Ok(config.names.clone());
    }
    let names = key
        .end_entity_cert()
        .ok()
        .map(|der| certificate_dns_names(der))
        .unwrap_or_default();
    if names.is_empty() && !is_default {
        return Err(TlsError::at(
            &config.cert,
            &"the certificate names no DNS name: list `names` for it",
        ));
    }
    Ok(names)
}

/// The DNS names in a certificate's subject alternative names.
pub fn certificate_dns_names(der: &[u8]) -> Vec<ServedName> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => ServedName::parse(dns).ok(),
            _ => None,
        })
        .collect()
}

/// The bytes of a certificate file and its key file.
struct PairBytes {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// Both files, the certificate checked first so an error names the file
/// at fault.
fn read_pair(cert: &Path, key: &Path) -> Result<PairBytes, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|err| TlsError::at(cert, &err))?;
    load_certs_from(cert, &cert_pem)?;
    Ok(PairBytes {
        cert: cert_pem,
        key: std::fs::read(key).map_err(|err| TlsError::at(key, &err))?,
    })
}

async fn read_pair_async(cert: &Path, key: &Path) -> Result<PairBytes, TlsError> {
    Ok(PairBytes {
        cert: tokio::fs::read(cert)
            .await
            .map_err(|err| TlsError::at(cert, &err))?,
        key: tokio::fs::read(key)
            .await
            .map_err(|err| TlsError::at(key, &err))?,
    })
}

fn fingerprint(bytes: &PairBytes) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((bytes.cert.len() as u64).to_be_bytes());
    hash.update(&bytes.cert);
    hash.update(&bytes.key);
    hash.finalize().into()
}

fn load_certs_from(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    let certs = certs_from_pem(path, pem)?;
    if certs.is_empty() {
        return Err(TlsError::at(path, &"no certificate found"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key that signs nothing: the table never looks inside one.
    #[derive(Debug)]
    struct NoKey;

    impl rustls::sign::SigningKey for NoKey {
        fn choose_scheme(
            &self,
            _offered: &[rustls::SignatureScheme],
        ) -> Option<Box<dyn rustls::sign::Signer>> {
            None
        }

        fn algorithm(&self) -> rustls::SignatureAlgorithm {
            rustls::SignatureAlgorithm::ECDSA
        }
    }

    /// A certified key told apart by a one-byte marker "certificate".
    fn key(tag: u8) -> Arc<CertifiedKey> {
        Arc::new(CertifiedKey::new(
            vec![rustls::pki_types::CertificateDer::from(vec![tag])],
            Arc::new(NoKey),
        ))
    }

    fn tag(key: Option<&Arc<CertifiedKey>>) -> Option<u8> {
        key.map(|key| key.cert[0].as_ref()[0])
    }

    #[test]
    fn exact_names_win_over_wildcards_and_a_wildcard_covers_one_label() {
        let (api, wild, other) = (key(1), key(2), key(3));
        let api_names = [ServedName::Exact("api.a.test".into())];
        let wild_names = [ServedName::Wildcard("a.test".into())];
        let other_names = [
            ServedName::Exact("api.a.test".into()),
            ServedName::Exact("b.test".into()),
        ];
        let table = CertTable::build(
            [
                (&api_names[..], &api),
                (&wild_names[..], &wild),
                (&other_names[..], &other),
            ],
            None,
        );
        assert_eq!(tag(table.named("api.a.test")), Some(1), "first listed wins");
        assert_eq!(tag(table.named("www.a.test")), Some(2));
        assert_eq!(tag(table.named("a.test")), None, "*.a.test is not a.test");
        assert_eq!(tag(table.named("x.www.a.test")), None, "one label only");
        assert_eq!(tag(table.named("b.test")), Some(3));
        assert_eq!(tag(table.named("c.test")), None);
    }
}
