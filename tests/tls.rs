//! TLS at the edge (`[server.tls]`, mTLS) and towards `https://` upstreams.
//!
//! Certificates are made per test in a temporary directory: with the
//! repository's `certs/gen-dev-certs.sh` for the development CA, and with
//! `openssl` directly for the extra CAs and client certificates.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::tls::*;
use common::*;
use tempfile::TempDir;

const HANDSHAKE_FAILED: &str = "TLS handshake failed";

fn certs_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("authgate-certs-")
        .tempdir()
        .expect("temp dir for certificates")
}

/// A gateway with `[server.tls]` (server certificate `server`, `tls_extra`
/// inside the table) and the default routes to `upstream`.
async fn tls_gateway(upstream: &Upstream, server: &CertKey, tls_extra: &str) -> Gateway {
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = tls_toml(&server.cert, &server.key, tls_extra);
    Gateway::start_with(opts).await
}

/// A user and a token for it.
async fn token_for(gw: &Gateway, roles: &[&str]) -> (String, String) {
    let user = unique("tls");
    gw.add_user(&user, &random_password(), roles).await;
    let token = gw.issue_token(&user).await;
    (user, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_request_with_the_development_ca() {
    let dir = certs_dir();
    let dev = dev_certs(dir.path());
    // The script is idempotent: a second run keeps the valid files.
    let before = std::fs::read(&dev.cert).unwrap();
    let again = dev_certs(dir.path());
    assert_eq!(std::fs::read(&again.cert).unwrap(), before);
    let upstream = Upstream::start().await;
    let gw = tls_gateway(
        &upstream,
        &CertKey {
            cert: dev.cert.clone(),
            key: dev.key.clone(),
        },
        "",
    )
    .await;
    let https = gw.https_addr().await;
    let (user, token) = token_for(&gw, &["reader"]).await;
    let trusting = client_config(&[&dev.ca], None, &["http/1.1"]);

    // The certificate verifies for both names the script puts in it.
    for name in ["localhost", "127.0.0.1"] {
        let r = https_request(https, name, trusting.clone(), &Req::get("/healthz"))
            .await
            .unwrap_or_else(|e| panic!("HTTPS to {name} with the dev CA: {e}"));
        assert_eq!(r.status, 200, "/healthz over HTTPS: {}", r.text());
        let tls = r.tls.as_ref().unwrap();
        assert_eq!(
            tls.peer_cert,
            first_cert_der(&dev.cert),
            "the served leaf is the dev certificate"
        );
    }

    // A proxied, authenticated request over HTTPS.
    let r = https_request(
        https,
        "localhost",
        trusting.clone(),
        &Req::get("/over/tls?x=1").bearer(&token),
    )
    .await
    .expect("authenticated HTTPS request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["upstream"], "ok");
    let rec = upstream.last();
    assert_eq!(rec.uri, "/over/tls?x=1");
    assert_eq!(rec.header("x-auth-user").as_deref(), Some(user.as_str()));
    assert_eq!(rec.header("x-auth-method").as_deref(), Some("jwt"));
    assert_eq!(rec.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        rec.header("x-forwarded-host"),
        Some(format!("localhost:{}", https.port()))
    );
    assert!(!rec.has_header("authorization"));

    // No credential over HTTPS: the usual 401 envelope.
    let r = https_request(https, "localhost", trusting, &Req::get("/over/tls"))
        .await
        .expect("HTTPS request without credential");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["reason"], "AUTHENTICATION_REQUIRED");
    assert_eq!(upstream.count(), 1);

    // A client that does not trust the dev CA refuses the certificate.
    let other = Ca::new(dir.path(), "unrelated");
    let r = https_request(
        https,
        "localhost",
        client_config(&[&other.cert], None, &["http/1.1"]),
        &Req::get("/healthz"),
    )
    .await;
    assert!(r.is_err(), "a client without the dev CA must refuse: {r:?}");

    // The plain listener serves side by side.
    get(&gw.url("/healthz"), None, &[]).await.expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_selects_h2_and_falls_back_to_http_1_1() {
    let dir = certs_dir();
    let ca = Ca::new(dir.path(), "server");
    let server = ca.server_cert("server");
    let upstream = Upstream::start().await;
    let gw = tls_gateway(&upstream, &server, "").await;
    let https = gw.https_addr().await;
    let (user, token) = token_for(&gw, &[]).await;

    /// Protocols offered, protocol chosen, HTTP version spoken.
    type AlpnCase = (
        &'static [&'static str],
        Option<&'static [u8]>,
        http::Version,
    );
    let cases: [AlpnCase; 4] = [
        (&["h2", "http/1.1"], Some(b"h2"), http::Version::HTTP_2),
        (&["h2"], Some(b"h2"), http::Version::HTTP_2),
        (&["http/1.1"], Some(b"http/1.1"), http::Version::HTTP_11),
        (&[], None, http::Version::HTTP_11),
    ];
    for (offered, chosen, version) in cases {
        let r = https_request(
            https,
            "localhost",
            client_config(&[&ca.cert], None, offered),
            &Req::get("/alpn").bearer(&token),
        )
        .await
        .unwrap_or_else(|e| panic!("ALPN {offered:?}: {e}"));
        let tls = r.tls.as_ref().unwrap();
        assert_eq!(tls.alpn.as_deref(), chosen, "ALPN offered {offered:?}");
        assert_eq!(r.version, version, "ALPN offered {offered:?}");
        assert_eq!(r.status, 200, "ALPN offered {offered:?}: {}", r.text());
        let rec = upstream.last();
        assert_eq!(rec.header("x-auth-user").as_deref(), Some(user.as_str()));
        assert_eq!(
            rec.version,
            http::Version::HTTP_11,
            "the upstream is spoken to in HTTP/1.1"
        );
    }

    // TLS 1.3 by default, and TLS 1.2 is still accepted.
    let r = https_request(
        https,
        "localhost",
        client_config(&[&ca.cert], None, &["h2"]),
        &Req::get("/healthz"),
    )
    .await
    .expect("TLS 1.3");
    assert_eq!(
        r.tls.unwrap().version,
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let r = https_request(
        https,
        "localhost",
        client_config_versions(&[&ca.cert], None, &["h2"], &[&rustls::version::TLS12]),
        &Req::get("/healthz"),
    )
    .await
    .expect("TLS 1.2 must be accepted");
    assert_eq!(r.status, 200);
    let tls = r.tls.unwrap();
    assert_eq!(tls.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(tls.alpn.as_deref(), Some(&b"h2"[..]));
}

/// `openssl s_client` with one protocol flag; stdin is closed, so it quits
/// right after the handshake.
async fn s_client(addr: SocketAddr, ca: &Path, flag: &str) -> Output {
    let ca = ca.to_path_buf();
    let flag = flag.to_string();
    tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .arg("s_client")
            .arg("-connect")
            .arg(addr.to_string())
            .args(["-servername", "localhost", "-CAfile"])
            .arg(&ca)
            .arg(&flag)
            // OpenSSL 3 refuses TLS 1.0/1.1 itself at the default security
            // level; level 0 makes it really offer them to the gateway.
            .args(["-cipher", "DEFAULT@SECLEVEL=0"])
            .stdin(Stdio::null())
            .output()
            .expect("run openssl s_client")
    })
    .await
    .expect("s_client task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_0_and_1_1_clients_are_refused() {
    let dir = certs_dir();
    let ca = Ca::new(dir.path(), "server");
    let server = ca.server_cert("server");
    let upstream = Upstream::start().await;
    let gw = tls_gateway(&upstream, &server, "").await;
    let https = gw.https_addr().await;

    // Controls: the same client with TLS 1.2 and 1.3 gets through.
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client(https, &ca.cert, flag).await;
        let text = out_text(&out);
        assert!(out.status.success(), "s_client {flag} failed: {text}");
        assert!(
            text.contains(&format!("Protocol  : {version}"))
                || text.contains(&format!("New, {version}")),
            "s_client {flag} did not negotiate {version}: {text}"
        );
    }
    assert_eq!(gw.log_count(HANDSHAKE_FAILED), 0, "{}", gw.logs());

    for (i, flag) in ["-tls1_1", "-tls1"].into_iter().enumerate() {
        let out = s_client(https, &ca.cert, flag).await;
        let text = out_text(&out);
        assert!(
            !out.status.success(),
            "s_client {flag} must be refused: {text}"
        );
        assert!(
            !text.contains("no protocols available"),
            "openssl did not even offer {flag}; the test proves nothing: {text}"
        );
        assert!(
            text.contains("Cipher is (NONE)"),
            "{flag}: a session was established: {text}"
        );
        // The gateway saw the attempt and logged the refusal with the peer.
        assert!(
            gw.wait_for_log(HANDSHAKE_FAILED, i + 1, Duration::from_secs(5))
                .await,
            "no `{HANDSHAKE_FAILED}` log line for {flag}; log:\n{}",
            gw.logs()
        );
    }
    let logs = gw.logs();
    for line in logs.lines().filter(|l| l.contains(HANDSHAKE_FAILED)) {
        assert!(
            line.contains("127.0.0.1:") && line.contains("error"),
            "a handshake failure is logged with the peer address and the reason: {line}"
        );
    }
    assert_eq!(upstream.count(), 0);
}

/// Server CA and certificate, the CA clients must come from, and a CA that
/// is not trusted for clients.
struct MtlsSetup {
    _dir: TempDir,
    server_ca: Ca,
    good: CertKey,
    foreign: CertKey,
    cn: String,
    upstream: Upstream,
    gw: Gateway,
    https: SocketAddr,
}

async fn mtls_setup(client_auth: &str) -> MtlsSetup {
    let dir = certs_dir();
    let server_ca = Ca::new(dir.path(), "server");
    let server = server_ca.server_cert("server");
    let client_ca = Ca::new(dir.path(), "clients");
    let other_ca = Ca::new(dir.path(), "other");
    let cn = unique("device-");
    let subject = format!("/O=authgate tests/CN={cn}");
    let good = client_ca.client_cert("good-client", &subject);
    // Same subject, wrong issuer.
    let foreign = other_ca.client_cert("foreign-client", &subject);
    let upstream = Upstream::start().await;
    let gw = tls_gateway(
        &upstream,
        &server,
        &format!(
            "client_ca = \"{}\"\nclient_auth = \"{client_auth}\"\n",
            client_ca.cert.display()
        ),
    )
    .await;
    let https = gw.https_addr().await;
    MtlsSetup {
        _dir: dir,
        server_ca,
        good,
        foreign,
        cn,
        upstream,
        gw,
        https,
    }
}

impl MtlsSetup {
    async fn send(
        &self,
        identity: Option<&CertKey>,
        alpn: &str,
        req: &Req,
    ) -> Result<HttpResponse, String> {
        https_request(
            self.https,
            "localhost",
            client_config(&[&self.server_ca.cert], identity, &[alpn]),
            req,
        )
        .await
    }

    /// The forwarded subject must name the certificate, once, and never
    /// carry the client's spoofed value.
    fn assert_subject_forwarded(&self, rec: &Recorded) {
        let values = rec.header_all("x-client-cert-subject");
        assert_eq!(
            values.len(),
            1,
            "exactly one X-Client-Cert-Subject: {values:?}"
        );
        assert!(
            values[0].contains(&format!("CN={}", self.cn))
                && values[0].contains("O=authgate tests"),
            "X-Client-Cert-Subject names the verified certificate: {values:?}"
        );
        assert!(!values[0].contains("spoofed"), "{values:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_required_refuses_missing_and_foreign_certificates() {
    let s = mtls_setup("required").await;
    let (user, token) = token_for(&s.gw, &[]).await;
    let spoofed = ("x-client-cert-subject", "CN=spoofed-admin");

    for alpn in ["h2", "http/1.1"] {
        let req = Req::get("/mtls")
            .bearer(&token)
            .header(spoofed.0, spoofed.1);
        let before = s.gw.log_count(HANDSHAKE_FAILED);
        let r = s.send(None, alpn, &req).await;
        assert!(
            r.is_err(),
            "{alpn}: no client certificate must be refused, got {r:?}"
        );
        let r = s.send(Some(&s.foreign), alpn, &req).await;
        assert!(
            r.is_err(),
            "{alpn}: a certificate from another CA must be refused, got {r:?}"
        );
        assert!(
            s.gw.wait_for_log(HANDSHAKE_FAILED, before + 2, Duration::from_secs(5))
                .await,
            "refused client certificates are logged; log:\n{}",
            s.gw.logs()
        );
        assert_eq!(
            s.upstream.count(),
            0,
            "a refused client reached the upstream"
        );
    }

    for (i, alpn) in ["h2", "http/1.1"].into_iter().enumerate() {
        let req = Req::get("/mtls")
            .bearer(&token)
            .header(spoofed.0, spoofed.1);
        let r = s
            .send(Some(&s.good), alpn, &req)
            .await
            .unwrap_or_else(|e| panic!("{alpn}: a certificate from client_ca: {e}"));
        assert_eq!(r.status, 200, "{alpn}: {}", r.text());
        assert_eq!(s.upstream.count(), i + 1);
        let rec = s.upstream.last();
        assert_eq!(rec.header("x-auth-user").as_deref(), Some(user.as_str()));
        s.assert_subject_forwarded(&rec);
    }

    // The certificate does not replace the credential.
    let r = s
        .send(Some(&s.good), "http/1.1", &Req::get("/mtls"))
        .await
        .expect("request without a token");
    assert_eq!(r.status, 401, "{}", r.text());

    // On the plain listener a client-sent subject never reaches the upstream.
    get(&s.gw.url("/plain"), Some(&token), &[spoofed])
        .await
        .expect_status(200);
    let rec = s.upstream.last();
    assert_eq!(rec.path(), "/plain");
    assert!(
        !rec.has_header("x-client-cert-subject"),
        "a spoofed X-Client-Cert-Subject was forwarded: {:?}",
        rec.header_all("x-client-cert-subject")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_optional_checks_a_certificate_only_when_sent() {
    let s = mtls_setup("optional").await;
    let (_user, token) = token_for(&s.gw, &[]).await;
    let spoofed = ("x-client-cert-subject", "CN=spoofed-admin");

    // Without a certificate: served, and the spoofed subject is dropped.
    let r = s
        .send(
            None,
            "h2",
            &Req::get("/anon")
                .bearer(&token)
                .header(spoofed.0, spoofed.1),
        )
        .await
        .expect("optional client auth admits clients without a certificate");
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = s.upstream.last();
    assert!(
        !rec.has_header("x-client-cert-subject"),
        "no certificate, yet X-Client-Cert-Subject reached the upstream: {:?}",
        rec.header_all("x-client-cert-subject")
    );

    // A certificate that is sent is verified.
    let r = s
        .send(Some(&s.foreign), "h2", &Req::get("/foreign").bearer(&token))
        .await;
    assert!(
        r.is_err(),
        "a certificate from another CA must be refused: {r:?}"
    );
    assert_eq!(s.upstream.count(), 1);

    let r = s
        .send(
            Some(&s.good),
            "http/1.1",
            &Req::get("/good")
                .bearer(&token)
                .header(spoofed.0, spoofed.1),
        )
        .await
        .expect("a certificate from client_ca");
    assert_eq!(r.status, 200, "{}", r.text());
    s.assert_subject_forwarded(&s.upstream.last());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_verified_with_upstream_ca_file() {
    let dir = certs_dir();
    let upstream_ca = Ca::new(dir.path(), "upstream");
    let upstream_cert = upstream_ca.server_cert("upstream");
    let upstream = Upstream::start_tls(server_config(&upstream_cert, None)).await;
    let https_url = format!("https://localhost:{}", upstream.addr().port());

    let mut opts = GatewayOptions::new(&https_url);
    opts.upstream_extra_toml = format!("ca_file = \"{}\"\n", upstream_ca.cert.display());
    let gw = Gateway::start_with(opts).await;
    let (user, token) = token_for(&gw, &[]).await;

    let r = get(&gw.url("/secure/path?q=1"), Some(&token), &[]).await;
    r.expect_status(200);
    assert_eq!(r.json()["upstream"], "ok");
    let rec = upstream.last();
    assert_eq!(rec.uri, "/secure/path?q=1");
    assert_eq!(rec.header("x-auth-user").as_deref(), Some(user.as_str()));
    assert_eq!(
        rec.header("host"),
        Some(format!("localhost:{}", upstream.addr().port()))
    );
    assert_eq!(rec.header(SAW_CLIENT_CERT).as_deref(), Some("none"));

    // The same upstream without `ca_file`: its certificate is not trusted.
    let untrusting = Gateway::start_with(GatewayOptions::new(&https_url)).await;
    let (_, token) = token_for(&untrusting, &[]).await;
    get(&untrusting.url("/secure/path"), Some(&token), &[])
        .await
        .expect_error(502, "UNAVAILABLE", "UPSTREAM_UNREACHABLE");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_that_requires_a_client_certificate() {
    let dir = certs_dir();
    let upstream_ca = Ca::new(dir.path(), "upstream");
    let upstream_cert = upstream_ca.server_cert("upstream");
    let gateway_ca = Ca::new(dir.path(), "gateways");
    let identity = gateway_ca.client_cert("gateway-identity", "/O=authgate tests/CN=gateway-1");
    let upstream = Upstream::start_tls(server_config(&upstream_cert, Some(&gateway_ca.cert))).await;
    let https_url = format!("https://localhost:{}", upstream.addr().port());

    let mut opts = GatewayOptions::new(&https_url);
    opts.upstream_extra_toml = format!(
        "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        upstream_ca.cert.display(),
        identity.cert.display(),
        identity.key.display()
    );
    let gw = Gateway::start_with(opts).await;
    let (user, token) = token_for(&gw, &[]).await;
    get(&gw.url("/with-client-cert"), Some(&token), &[])
        .await
        .expect_status(200);
    let rec = upstream.last();
    assert_eq!(rec.header("x-auth-user").as_deref(), Some(user.as_str()));
    let seen = rec.header(SAW_CLIENT_CERT).unwrap_or_default();
    assert!(
        seen.contains("CN=gateway-1"),
        "the upstream saw the gateway's client certificate: {seen:?}"
    );

    // Without `client_cert` the upstream refuses the gateway.
    let mut opts = GatewayOptions::new(&https_url);
    opts.upstream_extra_toml = format!("ca_file = \"{}\"\n", upstream_ca.cert.display());
    let anonymous = Gateway::start_with(opts).await;
    let (_, token) = token_for(&anonymous, &[]).await;
    get(&anonymous.url("/without-client-cert"), Some(&token), &[])
        .await
        .expect_error(502, "UNAVAILABLE", "UPSTREAM_UNREACHABLE");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_client_is_dropped_after_the_handshake_timeout() {
    let dir = certs_dir();
    let ca = Ca::new(dir.path(), "server");
    let server = ca.server_cert("server");
    let upstream = Upstream::start().await;
    let gw = tls_gateway(&upstream, &server, "").await;
    let https = gw.https_addr().await;

    // Connects and never sends a ClientHello.
    let mut silent = tokio::net::TcpStream::connect(https).await.unwrap();
    let started = std::time::Instant::now();
    // Meanwhile other clients are served.
    let r = https_request(
        https,
        "localhost",
        client_config(&[&ca.cert], None, &["h2"]),
        &Req::get("/healthz"),
    )
    .await
    .expect("a second client while one sits silent");
    assert_eq!(r.status, 200);

    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("the gateway must close a silent TLS connection (10 s handshake timeout)");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the connection to be closed, got {read:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(20),
        "closed after {waited:?}; the README says 10 s"
    );
    assert!(
        gw.wait_for_log("TLS handshake timed out", 1, Duration::from_secs(5))
            .await,
        "the timeout is logged; log:\n{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_subject_cannot_smuggle_extra_attributes() {
    let dir = certs_dir();
    let server_ca = Ca::new(dir.path(), "server");
    let server = server_ca.server_cert("server");
    let client_ca = Ca::new(dir.path(), "clients");
    // A CN chosen by the certificate holder that reads like more RDNs.
    let sneaky = client_ca.client_cert("sneaky", "/O=authgate tests/CN=mallory, O=admins");
    let upstream = Upstream::start().await;
    let gw = tls_gateway(
        &upstream,
        &server,
        &format!("client_ca = \"{}\"\n", client_ca.cert.display()),
    )
    .await;
    let https = gw.https_addr().await;
    let (_, token) = token_for(&gw, &[]).await;
    let r = https_request(
        https,
        "localhost",
        client_config(&[&server_ca.cert], Some(&sneaky), &["http/1.1"]),
        &Req::get("/sneaky").bearer(&token),
    )
    .await
    .expect("a certificate from client_ca");
    assert_eq!(r.status, 200, "{}", r.text());
    let subject = upstream
        .last()
        .header("x-client-cert-subject")
        .expect("the subject is forwarded");
    assert!(
        subject.contains("mallory"),
        "the subject names the certificate: {subject:?}"
    );
    // RFC 4514: a comma inside a value is escaped (`\,`), so the header
    // cannot be read as carrying an `O=admins` attribute.
    assert!(
        !subject.contains("mallory, O=admins") && !subject.contains("mallory,O=admins"),
        "X-Client-Cert-Subject is ambiguous: {subject:?} reads as if the certificate had O=admins"
    );
}
