//! rustls, set up once from the config: the HTTPS listener's acceptor
//! (certificate chain, key, optional client-CA verifier, ALPN h2 and
//! http/1.1), the client config for `https://` upstreams, and the subject
//! of a verified client certificate as RFC 4514 text.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwapOption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::config::{AcmeChallenge, TlsConfig, UpstreamConfig};

pub mod acme;

/// The ALPN protocol of RFC 8737's tls-alpn-01 validation handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A certificate, key or CA file could not be loaded, or rustls refused
/// the combination.
#[derive(Debug, thiserror::Error)]
#[error("TLS setup failed: {0}")]
pub struct TlsError(String);

impl TlsError {
    /// `path: cause`, naming the file at fault.
    fn at(path: &Path, err: &dyn std::fmt::Display) -> Self {
        TlsError(format!("{}: {err}", path.display()))
    }
}

/// Every certificate in the PEM file at `path`.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| TlsError::at(path, &err))
}

/// The private key in the PEM file at `path`.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| TlsError::at(path, &err))
}

/// A chain and its private key as rustls serves them; `what` names them in
/// errors.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
    what: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    if chain.is_empty() {
        return Err(TlsError(format!("{what}: no certificate found")));
    }
    let signing = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|err| TlsError(format!("{what}: {err}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|err| TlsError(format!("{what}: {err}")))?;
    Ok(Arc::new(certified))
}

/// Chooses the certificate of each handshake. Long-lived: every config
/// snapshot's acceptor shares it, so that the certificates ACME installs
/// outlive reloads.
#[derive(Debug, Default)]
pub struct CertResolver {
    /// The `cert`/`key` pair of the current config.
    default: ArcSwapOption<CertifiedKey>,
    /// The ACME certificate and the names it is served for.
    acme: ArcSwapOption<AcmeCertificate>,
    /// tls-alpn-01 certificates by lower-case name.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

#[derive(Debug)]
struct AcmeCertificate {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

impl CertResolver {
    /// The certificate of the config's `cert`/`key` (`None`: there is none).
    pub fn set_default(&self, key: Option<Arc<CertifiedKey>>) {
        self.default.store(key);
    }

    /// Serves `key` for `names` (and when no default certificate is
    /// configured, for every other name too).
    pub fn set_acme_certificate(&self, names: &[String], key: Arc<CertifiedKey>) {
        let names = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        self.acme
            .store(Some(Arc::new(AcmeCertificate { names, key })));
    }

    /// The tls-alpn-01 certificate for `name` (`None` removes it), served
    /// only to handshakes that offer exactly ALPN `acme-tls/1`.
    pub fn set_alpn_challenge(&self, name: &str, key: Option<Arc<CertifiedKey>>) {
        // A poisoned lock only means another setter panicked; the map is whole.
        let mut challenges = self.challenges.write().unwrap_or_else(|e| e.into_inner());
        match key {
            Some(key) => challenges.insert(name.to_ascii_lowercase(), key),
            None => challenges.remove(&name.to_ascii_lowercase()),
        };
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        let acme_only = hello.alpn().is_some_and(|mut offered| {
            offered.next() == Some(ACME_TLS_ALPN) && offered.next().is_none()
        });
        if acme_only {
            // A validation handshake gets the challenge certificate or
            // nothing: never a real certificate under the ACME protocol.
            let challenges = self.challenges.read().unwrap_or_else(|e| e.into_inner());
            return challenges.get(name.as_deref()?).cloned();
        }
        let acme = self.acme.load_full();
        if let (Some(acme), Some(name)) = (&acme, &name)
            && acme.names.iter().any(|n| n == name)
        {
            return Some(acme.key.clone());
        }
        self.default
            .load_full()
            .or_else(|| acme.map(|acme| acme.key.clone()))
    }
}

/// rustls with TLS 1.2 and 1.3 only, ALPN h2 and http/1.1 (and
/// `acme-tls/1` with ACME's tls-alpn-01), certificates from `resolver`,
/// whose default certificate becomes the config's `cert`/`key`.
pub fn acceptor(config: &TlsConfig, resolver: &Arc<CertResolver>) -> Result<TlsAcceptor, TlsError> {
    let default = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            let certs = load_certs(cert)?;
            if certs.is_empty() {
                return Err(TlsError::at(cert, &"no certificate found"));
            }
            let key = load_key(key)?;
            Some(certified_key(certs, &key, &cert.display().to_string())?)
        }
        _ => None,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| TlsError(err.to_string()))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in load_certs(path)? {
                roots.add(ca).map_err(|err| TlsError::at(path, &err))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if config.client_cert_required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|err| TlsError::at(path, &err))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_cert_resolver(resolver.clone());
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if config
        .acme
        .as_ref()
        .is_some_and(|acme| acme.challenge == AcmeChallenge::TlsAlpn01)
    {
        server.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    resolver.set_default(default);
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// rustls client config for `https://` upstreams: the system's CA roots
/// plus `upstream.ca_file`, and `upstream.client_cert` when set.
pub fn upstream_config(config: &UpstreamConfig) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    debug!(
        system_roots = added,
        "loaded the system's CA roots for https upstreams"
    );
    if let Some(path) = &config.ca_file {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|err| TlsError::at(path, &err))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| TlsError(err.to_string()))?
        .with_root_certificates(roots);
    match &config.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_path, key_path)) => {
            let chain = load_certs(cert_path)?;
            let key = load_key(key_path)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| TlsError::at(cert_path, &err))
        }
    }
}

/// The subject of the client certificate a finished handshake verified,
/// if the client sent one.
pub fn peer_subject(connection: &rustls::ServerConnection) -> Option<String> {
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| certificate_subject(cert))
}

/// The subject of a DER certificate as an RFC 4514 string: the last RDN
/// first, special characters escaped, so a value cannot pose as another
/// attribute. Non-ASCII bytes are escaped as `\XX`, keeping the header
/// ASCII; values that are not strings are given as `#` and their DER in hex.
pub fn certificate_subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let rdns: Vec<String> = cert
        .subject()
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let name = attribute_name(&attribute.attr_type().to_id_string());
                    let value = match attribute.as_str() {
                        Ok(text) => escape_dn_value(text),
                        Err(_) => format!("#{}", hex::encode(attribute.attr_value().as_bytes())),
                    };
                    format!("{name}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

/// RFC 4514 short names of the usual attribute types; others by OID.
fn attribute_name(oid: &str) -> String {
    match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        other => return other.to_owned(),
    }
    .to_owned()
}

/// Escapes an attribute value per RFC 4514 section 2.4.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.len().saturating_sub(1);
    for (index, byte) in value.bytes().enumerate() {
        match byte {
            b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' => {
                out.push('\\');
                out.push(byte as char);
            }
            b'#' if index == 0 => out.push_str("\\#"),
            b' ' if index == 0 || index == last => out.push_str("\\ "),
            0x20..=0x7e => out.push(byte as char),
            _ => out.push_str(&format!("\\{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_config(cert: &Path, key: &Path) -> TlsConfig {
        TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: Some(cert.to_owned()),
            key: Some(key.to_owned()),
            acme: None,
            client_ca: None,
            client_cert_required: false,
        }
    }

    #[test]
    fn setup_errors_name_the_file_at_fault() {
        let resolver = Arc::new(CertResolver::default());
        let missing = Path::new("/nonexistent/authgate-cert.pem");
        let err = acceptor(&tls_config(missing, missing), &resolver)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("TLS setup failed: /nonexistent/authgate-cert.pem: "),
            "{err}"
        );

        let empty = tempfile::NamedTempFile::new().unwrap();
        let err = acceptor(&tls_config(empty.path(), missing), &resolver)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "TLS setup failed: {}: no certificate found",
                empty.path().display()
            )
        );
    }

    #[test]
    fn distinguished_name_values_are_escaped() {
        assert_eq!(escape_dn_value("mallory, O=admins"), "mallory\\, O=admins");
        assert_eq!(
            escape_dn_value("a+b;c<d>e\"f\\g"),
            "a\\+b\\;c\\<d\\>e\\\"f\\\\g"
        );
        assert_eq!(escape_dn_value("#lead"), "\\#lead");
        assert_eq!(escape_dn_value(" both "), "\\ both\\ ");
        assert_eq!(escape_dn_value("Zoë"), "Zo\\C3\\AB");
        assert_eq!(escape_dn_value("nul\0"), "nul\\00");
        assert_eq!(attribute_name("2.5.4.3"), "CN");
        assert_eq!(attribute_name("1.2.3"), "1.2.3");
    }
}
