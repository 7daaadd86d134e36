//! Edge TLS certificates (contract, "Edge TLS"): chosen by SNI among
//! `[[server.tls.certificates]]` (exact names, one-label wildcards, explicit
//! `names`), the default for everything else or a handshake failure without
//! one; certificate files watched, the Kubernetes Secret symlink swap
//! included, and a broken pair leaving the old one in place. Certificates
//! are made with `openssl`; the client is rustls.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use tempfile::TempDir;

/// The contract's bound for a changed pair to reach new handshakes.
const RELOAD_WITHIN: Duration = Duration::from_secs(5);

fn certs_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("authgate-sni-")
        .tempdir()
        .expect("temp dir for certificates")
}

/// A leaf certificate of `ca` for `dns_names` (IP addresses as such).
fn leaf(ca: &Ca, file: &str, dns_names: &[&str]) -> CertKey {
    let san: Vec<String> = dns_names
        .iter()
        .map(|name| match name.parse::<std::net::IpAddr>() {
            Ok(_) => format!("IP:{name}"),
            Err(_) => format!("DNS:{name}"),
        })
        .collect();
    ca.issue(
        file,
        &format!("/CN={}", dns_names[0]),
        &format!(
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = {}",
            san.join(", ")
        ),
    )
}

/// The leaf certificate the gateway at `addr` serves to SNI `name`
/// (`127.0.0.1`: no SNI), verified against `ca`; `Err` for a refused
/// handshake.
async fn served_to(addr: SocketAddr, name: &str, ca: &Ca) -> Result<Vec<u8>, String> {
    let config = client_config(&[&ca.cert], None, &["http/1.1"]);
    https_request(addr, name, config, &Req::get("/healthz"))
        .await
        .map(|response| response.tls.expect("TLS info").peer_cert)
}

fn certificate_entry(cert: &CertKey, names: Option<&[&str]>) -> String {
    let names = names
        .map(|names| {
            let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
            format!("names = [{}]\n", quoted.join(", "))
        })
        .unwrap_or_default();
    format!(
        "[[server.tls.certificates]]\n{names}cert = \"{}\"\nkey = \"{}\"\n",
        cert.cert.display(),
        cert.key.display()
    )
}

async fn gateway_with(upstream: &Upstream, tls_table: String) -> Gateway {
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = tls_table;
    Gateway::start_with(opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_exact_names_then_one_label_wildcards_then_the_default() {
    let dir = certs_dir();
    let ca = Ca::new(dir.path(), "sni");
    // The default covers every name asked for below, so each handshake
    // verifies and the served certificate tells which one was chosen.
    let default = leaf(
        &ca,
        "default",
        &[
            "a.test",
            "x.www.a.test",
            "b.test",
            "other.test",
            "127.0.0.1",
        ],
    );
    let api = leaf(&ca, "api", &["api.a.test"]);
    let wildcard = leaf(&ca, "wildcard", &["*.a.test"]);
    // Its certificate names b.test and c.test; the config limits it to c.test.
    let limited = leaf(&ca, "limited", &["c.test", "b.test"]);
    let upstream = Upstream::start().await;
    let table = format!(
        "{}{}{}{}",
        tls_toml(&default.cert, &default.key, ""),
        certificate_entry(&api, None),
        certificate_entry(&wildcard, None),
        certificate_entry(&limited, Some(&["c.test"])),
    );
    let gw = gateway_with(&upstream, table).await;
    let https = gw.https_addr().await;

    let expect = [
        ("api.a.test", &api),
        ("www.a.test", &wildcard),
        ("a.test", &default),
        ("x.www.a.test", &default),
        ("c.test", &limited),
        ("b.test", &default),
        ("other.test", &default),
        ("127.0.0.1", &default),
    ];
    for (name, cert) in expect {
        let served = served_to(https, name, &ca)
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(
            fingerprint(&served),
            fingerprint(&cert.der()),
            "SNI {name} got the wrong certificate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_default_unknown_names_and_no_sni_fail_the_handshake() {
    let dir = certs_dir();
    let ca = Ca::new(dir.path(), "nodefault");
    let api = leaf(&ca, "api", &["api.a.test", "other.test"]);
    let upstream = Upstream::start().await;
    let table = format!(
        "[server.tls]\nlisten = \"127.0.0.1:0\"\n{}",
        certificate_entry(&api, Some(&["api.a.test"]))
    );
    let gw = gateway_with(&upstream, table).await;
    let https = gw.https_addr().await;

    let served = served_to(https, "api.a.test", &ca)
        .await
        .expect("api.a.test");
    assert_eq!(fingerprint(&served), fingerprint(&api.der()));
    for name in ["other.test", "127.0.0.1"] {
        let refused = served_to(https, name, &ca).await;
        assert!(refused.is_err(), "{name}: expected a handshake failure");
    }
}

/// A Kubernetes Secret volume: `cert.pem` and `key.pem` link into `..data`,
/// itself a link to a timestamped folder that is swapped atomically.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(dir: &Path, pair: &CertKey) -> SecretVolume {
        let mut volume = SecretVolume {
            dir: dir.join("secret"),
            version: 0,
        };
        std::fs::create_dir_all(&volume.dir).unwrap();
        volume.swap_in(pair);
        std::os::unix::fs::symlink("..data/tls.crt", volume.cert()).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", volume.key()).unwrap();
        volume
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// Writes a new version folder and points `..data` at it in one rename,
    /// as the kubelet does.
    fn swap_in(&mut self, pair: &CertKey) {
        self.write_version(
            &std::fs::read(&pair.cert).unwrap(),
            &std::fs::read(&pair.key).unwrap(),
        );
    }

    fn write_version(&mut self, cert: &[u8], key: &[u8]) {
        self.version += 1;
        let name = format!("..2026_12_07_{}", self.version);
        let version = self.dir.join(&name);
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("tls.crt"), cert).unwrap();
        std::fs::write(version.join("tls.key"), key).unwrap();
        let next = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &next).unwrap();
        std::fs::rename(&next, self.dir.join("..data")).unwrap();
    }
}

/// Polls until SNI `name` is served `want`, within [`RELOAD_WITHIN`] of `since`.
async fn served_within_bound(
    addr: SocketAddr,
    name: &str,
    ca: &Ca,
    want: &CertKey,
    since: Instant,
) {
    let want = fingerprint(&want.der());
    loop {
        let served = served_to(addr, name, ca).await.map(|der| fingerprint(&der));
        if served.as_deref() == Ok(want.as_str()) {
            return;
        }
        assert!(
            since.elapsed() < RELOAD_WITHIN,
            "the new certificate was not served within {RELOAD_WITHIN:?} (last: {served:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_secret_is_served_within_five_seconds_and_a_broken_one_keeps_the_old() {
    let dir = certs_dir();
    let ca = Ca::new(dir.path(), "watch");
    let first = leaf(&ca, "first", &["gw.test"]);
    let second = leaf(&ca, "second", &["gw.test"]);
    let mut volume = SecretVolume::new(dir.path(), &first);
    let upstream = Upstream::start().await;
    let gw = gateway_with(&upstream, tls_toml(&volume.cert(), &volume.key(), "")).await;
    let https = gw.https_addr().await;
    assert_eq!(
        fingerprint(&served_to(https, "gw.test", &ca).await.unwrap()),
        fingerprint(&first.der())
    );
    // A connection opened before the swap keeps working after it.
    let mut open = OpenConnection::connect(https, "gw.test", &ca).await;
    open.get_ok("/healthz").await;

    volume.swap_in(&second);
    served_within_bound(https, "gw.test", &ca, &second, Instant::now()).await;
    open.get_ok("/healthz").await;
    assert!(
        gw.wait_for_log("certificate files changed", 1, Duration::from_secs(5))
            .await
    );

    // A broken pair (the new certificate with another key) keeps the last
    // good one, and says so in the log and the metrics.
    let third = leaf(&ca, "third", &["gw.test"]);
    volume.write_version(
        &std::fs::read(&third.cert).unwrap(),
        &std::fs::read(&first.key).unwrap(),
    );
    assert!(
        gw.wait_for_log("do not load", 1, RELOAD_WITHIN).await,
        "a broken pair is logged; logs:\n{}",
        gw.logs()
    );
    assert_eq!(
        fingerprint(&served_to(https, "gw.test", &ca).await.unwrap()),
        fingerprint(&second.der()),
        "a broken pair must not replace the good one"
    );
    let metrics = get(&gw.url("/metrics"), None, &[]).await;
    let metrics = metrics.text();
    assert!(
        metrics.contains("authgate_tls_certificate_reload_failures_total 1"),
        "{metrics}"
    );
    // Fixed again: served again.
    volume.swap_in(&third);
    served_within_bound(https, "gw.test", &ca, &third, Instant::now()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_mismatched_pairs_and_bad_names() {
    let dir = certs_dir();
    let ca = Ca::new(dir.path(), "check");
    let one = leaf(&ca, "one", &["one.test"]);
    let two = leaf(&ca, "two", &["two.test"]);
    let upstream = Upstream::start().await;
    let mut gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));

    let mismatched = CertKey {
        cert: one.cert.clone(),
        key: two.key.clone(),
    };
    let mut opts = gw.options().clone();
    opts.extra_toml = tls_toml(&mismatched.cert, &mismatched.key, "");
    gw.set_options(opts.clone());
    let out = gw.cli(&["check-config"], None).await;
    let text = out_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&one.cert.display().to_string()) && text.contains("does not go with"),
        "{text}"
    );

    opts.extra_toml = format!(
        "[server.tls]\nlisten = \"127.0.0.1:0\"\n{}",
        certificate_entry(&one, Some(&["*.test", "a..b", "*"]))
    );
    gw.set_options(opts);
    let out = gw.cli(&["check-config"], None).await;
    let text = out_text(&out);
    assert!(!out.status.success(), "{text}");
    for name in ["\"*.test\"", "\"a..b\"", "\"*\""] {
        assert!(text.contains(name), "{name} is named: {text}");
    }
}

/// One HTTP/1.1 connection over TLS kept open across requests.
struct OpenConnection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    authority: String,
    /// Full or resumed.
    handshake: Option<rustls::HandshakeKind>,
}

impl OpenConnection {
    async fn connect(addr: SocketAddr, name: &str, ca: &Ca) -> OpenConnection {
        let config = client_config(&[&ca.cert], None, &["http/1.1"]);
        OpenConnection::connect_with(addr, name, config).await
    }

    /// With `config`, whose session store carries tickets from one
    /// connection to the next.
    async fn connect_with(
        addr: SocketAddr,
        name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> OpenConnection {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .expect("TLS handshake");
        let handshake = tls.get_ref().1.handshake_kind();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        OpenConnection {
            sender,
            authority: format!("{name}:{}", addr.port()),
            handshake,
        }
    }

    async fn get_ok(&mut self, path: &str) {
        let request = hyper::Request::get(path)
            .header("host", &self.authority)
            .body(http_body_util::Empty::new())
            .unwrap();
        let response = self
            .sender
            .send_request(request)
            .await
            .expect("the open connection still works");
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_https_sends_plain_requests_to_tls_and_hsts_marks_tls_answers() {
    let dir = certs_dir();
    let ca = Ca::new(dir.path(), "redirect");
    let server = ca.server_cert("server");
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    // The redirect names the TLS port, so it is fixed (probed) here.
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .unwrap()
        .port();
    opts.extra_toml = tls_toml(
        &server.cert,
        &server.key,
        "hsts = \"max-age=31536000; includeSubDomains\"\n",
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{tls_port}"));
    let mut gw = Gateway::prepare(opts);
    let text = gw.render_config(gw.options()).replacen(
        "[server]\n",
        "[server]\nredirect_https = true\n",
        1,
    );
    gw.write_config(&text);
    gw.spawn().await;
    let https = gw.https_addr().await;

    let plain = |target: &str, host: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    let moved = raw_request(
        gw.addr(),
        &plain("/api/x?b=two%20words", "gw.test:8080"),
        b"",
    )
    .await;
    assert_eq!(moved.status, 308);
    assert_eq!(
        moved.header("location"),
        Some(format!("https://gw.test:{}/api/x?b=two%20words", https.port()).as_str())
    );
    assert_eq!(upstream.count(), 0, "a redirected request is not forwarded");
    // Only the host of Host is used: user info cannot pick the target.
    let sneaky = raw_request(gw.addr(), &plain("/", "evil.test@gw.test"), b"").await;
    assert_eq!(sneaky.status, 400);

    for exempt in [
        "/healthz",
        "/readyz",
        "/.well-known/acme-challenge/token",
        "/_authgate/verify",
    ] {
        let answer = raw_request(gw.addr(), &plain(exempt, "gw.test"), b"").await;
        assert_ne!(answer.status, 308, "{exempt} stays on plain HTTP");
    }
    let health = raw_request(gw.addr(), &plain("/healthz", "gw.test"), b"").await;
    assert_eq!(health.header("strict-transport-security"), None);

    let config = client_config(&[&ca.cert], None, &["http/1.1"]);
    let over_tls = https_request(https, "localhost", config, &Req::get("/healthz"))
        .await
        .expect("HTTPS");
    assert_eq!(over_tls.status, 200);
    assert_eq!(
        over_tls.header("strict-transport-security").as_deref(),
        Some("max-age=31536000; includeSubDomains")
    );
}

/// `openssl s_client` to `addr` with SNI `name` (none when empty) and
/// `extra` arguments; stdin closed, so it quits after the handshake.
async fn s_client(addr: SocketAddr, name: &str, ca: &Ca, extra: &[&str]) -> String {
    let mut args = vec![
        "s_client".to_string(),
        "-connect".to_string(),
        addr.to_string(),
        "-CAfile".to_string(),
        ca.cert.display().to_string(),
    ];
    if name.is_empty() {
        args.push("-noservername".into());
    } else {
        args.extend(["-servername".to_string(), name.to_string()]);
    }
    args.extend(extra.iter().map(|arg| arg.to_string()));
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run openssl s_client");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
    .await
    .expect("s_client task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_clients_get_the_certificate_for_their_name_and_resume_sessions() {
    let dir = certs_dir();
    let ca = Ca::new(dir.path(), "openssl");
    let default = leaf(&ca, "default", &["gw.test"]);
    let api = leaf(&ca, "api", &["api.a.test"]);
    let upstream = Upstream::start().await;
    let table = format!(
        "{}{}",
        tls_toml(&default.cert, &default.key, ""),
        certificate_entry(&api, None)
    );
    let gw = gateway_with(&upstream, table).await;
    let https = gw.https_addr().await;

    let to_api = s_client(https, "api.a.test", &ca, &[]).await;
    assert!(to_api.contains("CN = api.a.test"), "{to_api}");
    assert!(to_api.contains("Verify return code: 0 (ok)"), "{to_api}");
    let no_sni = s_client(https, "", &ca, &[]).await;
    assert!(no_sni.contains("CN = gw.test"), "{no_sni}");

    // Resumption with TLS 1.2 (s_client reconnects before a TLS 1.3
    // ticket arrives, so TLS 1.3 is checked with rustls below).
    let resumed = s_client(https, "api.a.test", &ca, &["-tls1_2", "-reconnect"]).await;
    assert!(
        resumed.matches("Reused, TLSv1.2").count() >= 5,
        "the session is resumed on reconnects\n{resumed}"
    );

    // TLS 1.3: a ticket from the first connection resumes the second.
    let config = client_config(&[&ca.cert], None, &["http/1.1"]);
    let mut first = OpenConnection::connect_with(https, "api.a.test", config.clone()).await;
    first.get_ok("/healthz").await;
    drop(first);
    let second = OpenConnection::connect_with(https, "api.a.test", config).await;
    assert_eq!(
        second.handshake,
        Some(rustls::HandshakeKind::Resumed),
        "a TLS 1.3 ticket resumes the session"
    );
}
