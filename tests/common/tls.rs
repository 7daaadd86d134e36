//! TLS material for the tests (made with the system's `openssl`, as the
//! development script does), HTTPS and HTTP/2 clients that report what was
//! negotiated, and a recording upstream behind TLS.

use super::*;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

/// The longest a test waits for one HTTPS exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Certificates and keys
// ---------------------------------------------------------------------------

/// Runs `openssl ARGS...` in `cwd`; panics with its output on failure.
pub fn openssl(cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("openssl must be installed for the TLS tests");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        out_text(&out)
    );
    out
}

/// A random positive serial number in the form openssl takes.
fn serial() -> String {
    let mut bytes = random_bytes(16);
    bytes[0] = (bytes[0] & 0x7f) | 0x10;
    format!("0x{}", hex::encode(bytes))
}

/// A PEM certificate and its PKCS#8 private key.
#[derive(Clone, Debug)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertKey {
    /// DER of the first certificate in `cert`.
    pub fn der(&self) -> Vec<u8> {
        first_cert_der(&self.cert)
    }
}

/// DER of the first certificate in a PEM file.
pub fn first_cert_der(path: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(path)
        .expect("read PEM certificates")
        .next()
        .expect("a certificate in the file")
        .expect("a parsable certificate")
        .as_ref()
        .to_vec()
}

/// A test certificate authority (EC P-256) in `dir`.
#[derive(Clone, Debug)]
pub struct Ca {
    dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let cert = dir.join(format!("{name}-ca.pem"));
        let key = dir.join(format!("{name}-ca-key.pem"));
        let subject = format!("/CN=authgate test CA {name}");
        let serial = serial();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                path_str(&key),
                "-out",
                path_str(&cert),
                "-days",
                "30",
                "-sha256",
                "-set_serial",
                &serial,
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Ca {
            dir: dir.to_path_buf(),
            cert,
            key,
        }
    }

    /// A certificate signed by this CA; `extensions` is an openssl
    /// extension section body.
    pub fn issue(&self, name: &str, subject: &str, extensions: &str) -> CertKey {
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}-key.pem"));
        let csr = self.dir.join(format!("{name}.csr"));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext, format!("[leaf]\n{extensions}\n")).expect("write extensions");
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                path_str(&key),
                "-out",
                path_str(&csr),
                "-subj",
                subject,
            ],
        );
        let serial = serial();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                path_str(&csr),
                "-CA",
                path_str(&self.cert),
                "-CAkey",
                path_str(&self.key),
                "-set_serial",
                &serial,
                "-days",
                "30",
                "-sha256",
                "-extfile",
                path_str(&ext),
                "-extensions",
                "leaf",
                "-out",
                path_str(&cert),
            ],
        );
        CertKey { cert, key }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server_cert(&self, name: &str) -> CertKey {
        self.issue(
            name,
            "/CN=localhost",
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = DNS:localhost, IP:127.0.0.1",
        )
    }

    /// A client certificate with `subject` (openssl `/K=V/...` form).
    pub fn client_cert(&self, name: &str, subject: &str) -> CertKey {
        self.issue(
            name,
            subject,
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = clientAuth",
        )
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// What `certs/gen-dev-certs.sh` made.
#[derive(Clone, Debug)]
pub struct DevCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Runs a copy of the repository's `certs/gen-dev-certs.sh` inside
/// `dir/certs/` (the script writes next to itself) and returns its files.
pub fn dev_certs(dir: &Path) -> DevCerts {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("create certs dir");
    let script = certs.join("gen-dev-certs.sh");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/gen-dev-certs.sh"),
        &script,
    )
    .expect("copy gen-dev-certs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run gen-dev-certs.sh");
    assert!(
        out.status.success(),
        "gen-dev-certs.sh failed: {}",
        out_text(&out)
    );
    DevCerts {
        ca: certs.join("dev-ca.pem"),
        cert: certs.join("dev-cert.pem"),
        key: certs.join("dev-key.pem"),
    }
}

/// A JWT key pair for `algorithm` (`ES256`, `RS256` or `EdDSA`): PKCS#8
/// private PEM and public PEM paths.
pub fn jwt_key_pair(dir: &Path, name: &str, algorithm: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let params: &[&str] = match algorithm {
        "ES256" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "RS256" => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "EdDSA" => &["-algorithm", "ed25519"],
        other => panic!("no key type for {other}"),
    };
    let mut args = vec!["genpkey", "-out", path_str(&private)];
    args.extend_from_slice(params);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            path_str(&private),
            "-pubout",
            "-out",
            path_str(&public),
        ],
    );
    (private, public)
}

/// `[server.tls]` on an ephemeral port; `extra` is added inside the table.
pub fn tls_toml(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[server.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
        cert.display(),
        key.display()
    )
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client trusting the CA certificates in `roots`, presenting
/// `identity` when given, offering `alpn` (e.g. `["h2", "http/1.1"]`).
pub fn client_config(
    roots: &[&Path],
    identity: Option<&CertKey>,
    alpn: &[&str],
) -> Arc<rustls::ClientConfig> {
    client_config_versions(
        roots,
        identity,
        alpn,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
}

/// [`client_config`] limited to the TLS `versions` given.
pub fn client_config_versions(
    roots: &[&Path],
    identity: Option<&CertKey>,
    alpn: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for path in roots {
        for cert in CertificateDer::pem_file_iter(path).expect("read CA PEM") {
            store.add(cert.expect("CA certificate")).expect("add root");
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(store);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = CertificateDer::pem_file_iter(&id.cert)
                .expect("read client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert chain");
            let key = PrivateKeyDer::from_pem_file(&id.key).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth cert")
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// What the TLS handshake settled.
#[derive(Clone, Debug)]
pub struct TlsInfo {
    pub alpn: Option<Vec<u8>>,
    pub version: Option<rustls::ProtocolVersion>,
    /// DER of the server's leaf certificate.
    pub peer_cert: Vec<u8>,
}

/// One fully read response and how it travelled.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub version: ::http::Version,
    pub headers: ::http::HeaderMap,
    pub body: Vec<u8>,
    /// `None` for cleartext connections.
    pub tls: Option<TlsInfo>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// A request to send with [`https_request`] or [`h2c_request`].
#[derive(Clone, Debug)]
pub struct Req {
    pub method: ::http::Method,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn get(path_and_query: &str) -> Req {
        Req {
            method: ::http::Method::GET,
            path_and_query: path_and_query.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn post(path_and_query: &str, body: &[u8]) -> Req {
        Req {
            method: ::http::Method::POST,
            body: body.to_vec(),
            ..Req::get(path_and_query)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn bearer(self, token: &str) -> Req {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// HTTP/2 wants an absolute URI; HTTP/1.1 gets origin form and `Host`.
    fn build(&self, scheme: &str, authority: &str, h2: bool) -> Request<Full<Bytes>> {
        let mut builder = Request::builder().method(self.method.clone());
        if h2 {
            builder = builder
                .version(::http::Version::HTTP_2)
                .uri(format!("{scheme}://{authority}{}", self.path_and_query));
        } else {
            builder = builder
                .uri(self.path_and_query.as_str())
                .header("host", authority);
        }
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        builder
            .body(Full::new(Bytes::from(self.body.clone())))
            .expect("build request")
    }
}

/// Sends `req` on `io` with HTTP/2 (`h2`) or HTTP/1.1 and reads the answer.
async fn exchange<I>(
    io: I,
    h2: bool,
    req: Request<Full<Bytes>>,
) -> Result<(u16, ::http::Version, ::http::HeaderMap, Vec<u8>), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        sender
            .send_request(req)
            .await
            .map_err(|e| format!("h2 request: {e}"))?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("http1 handshake: {e}"))?;
        tokio::spawn(conn);
        sender
            .send_request(req)
            .await
            .map_err(|e| format!("http1 request: {e}"))?
    };
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok((parts.status.as_u16(), parts.version, parts.headers, body))
}

/// Connects to `addr` with TLS (SNI / verified name `server_name`) on a new
/// connection, sends `req` with the protocol ALPN chose (HTTP/2 for `h2`,
/// else HTTP/1.1) and reads the whole response. `Err` describes a refused
/// handshake or a broken connection.
pub async fn https_request(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
    req: &Req,
) -> Result<HttpResponse, String> {
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    let authority = if server_name.parse::<std::net::IpAddr>().is_ok() {
        addr.to_string()
    } else {
        format!("{server_name}:{}", addr.port())
    };
    let run = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let (_, session) = tls.get_ref();
        let info = TlsInfo {
            alpn: session.alpn_protocol().map(<[u8]>::to_vec),
            version: session.protocol_version(),
            peer_cert: session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| c.as_ref().to_vec())
                .unwrap_or_default(),
        };
        let h2 = info.alpn.as_deref() == Some(b"h2");
        let (status, version, headers, body) =
            exchange(TokioIo::new(tls), h2, req.build("https", &authority, h2)).await?;
        Ok(HttpResponse {
            status,
            version,
            headers,
            body,
            tls: Some(info),
        })
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()))
}

/// Cleartext HTTP/2 with prior knowledge (h2c) on a new connection.
pub async fn h2c_request(addr: SocketAddr, req: &Req) -> Result<HttpResponse, String> {
    let run = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (status, version, headers, body) = exchange(
            TokioIo::new(tcp),
            true,
            req.build("http", &addr.to_string(), true),
        )
        .await?;
        Ok(HttpResponse {
            status,
            version,
            headers,
            body,
            tls: None,
        })
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()))
}

/// SHA-256 of a DER certificate, hex.
pub fn fingerprint(der: &[u8]) -> String {
    sha256_hex(der)
}

// ---------------------------------------------------------------------------
// A recording upstream behind TLS
// ---------------------------------------------------------------------------

/// A rustls server config for `leaf` (HTTP/1.1 only); with `client_ca`,
/// clients must present a certificate from that CA.
pub fn server_config(leaf: &CertKey, client_ca: Option<&Path>) -> Arc<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(&leaf.cert)
        .expect("read cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert chain");
    let key = PrivateKeyDer::from_pem_file(&leaf.key).expect("read key");
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).expect("read client CA") {
                roots.add(cert.expect("client CA cert")).expect("add root");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .expect("server cert and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
