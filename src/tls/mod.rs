//! rustls, set up once from the config: the HTTPS listener's acceptor
//! (certificates from [`certs`] and [`acme`], optional client-CA verifier,
//! ALPN h2 and http/1.1), the client config for `https://` upstreams, and the subject
//! of a verified client certificate as RFC 4514 text.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::config::{AcmeChallenge, TlsConfig, UpstreamConfig};

pub mod acme;
pub mod certs;

pub use certs::{ACME_TLS_ALPN, CertResolver};

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
    let pem = std::fs::read(path).map_err(|err| TlsError::at(path, &err))?;
    certs_from_pem(path, &pem)
}

/// Every certificate in `pem`, read from `path`.
fn certs_from_pem(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::at(path, &err))
}

/// The private key in the PEM file at `path`.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|err| TlsError::at(path, &err))?;
    key_from_pem(path, &pem)
}

/// The private key in `pem`, read from `path`.
fn key_from_pem(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| TlsError::at(path, &err))
}

/// A chain and its private key as rustls serves them, the key checked
/// against the leaf; `what` names them in errors.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
    what: &str,
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    if chain.is_empty() {
        return Err(TlsError(format!("{what}: no certificate found")));
    }
    let signing = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|err| TlsError(format!("{what}: {err}")))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|err| TlsError(format!("{what}: {err}")))?;
    Ok(Arc::new(certified))
}

/// The crypto provider of every TLS setup here.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls with TLS 1.2 and 1.3 only, ALPN h2 and http/1.1, certificates
/// from `certificates` (chosen by SNI, watched, ACME), session tickets for
/// resumption, and the client-certificate check of `config`.
pub fn acceptor(
    config: &TlsConfig,
    certificates: Arc<CertResolver>,
) -> Result<TlsAcceptor, TlsError> {
    let provider = provider();
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
    let mut server = builder.with_cert_resolver(certificates);
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Offered only while ACME may validate that way: the listener closes
    // such connections after the handshake.
    if config
        .acme
        .as_ref()
        .is_some_and(|acme| acme.challenge == AcmeChallenge::TlsAlpn01)
    {
        server.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    server.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|err| TlsError(err.to_string()))?;
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
    let provider = provider();
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
    use crate::config::CertificateConfig;

    fn tls_config(cert: &Path, key: &Path) -> TlsConfig {
        TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            default: Some(CertificateConfig {
                names: Vec::new(),
                cert: cert.to_owned(),
                key: key.to_owned(),
            }),
            certificates: Vec::new(),
            client_ca: None,
            client_cert_required: false,
            hsts: None,
            acme: None,
        }
    }

    #[test]
    fn setup_errors_name_the_file_at_fault() {
        let missing = Path::new("/nonexistent/authgate-cert.pem");
        let err = CertResolver::try_new(&tls_config(missing, missing), provider())
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("TLS setup failed: /nonexistent/authgate-cert.pem: "),
            "{err}"
        );

        let empty = tempfile::NamedTempFile::new().unwrap();
        let err = CertResolver::try_new(&tls_config(empty.path(), missing), provider())
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
