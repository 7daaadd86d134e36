//! ACME (`[server.tls.acme]`) against the real ACME test server: Debian's
//! `pebble`, with `pebble-challtestsrv` as its DNS server (every name
//! resolves to 127.0.0.1). Each test starts its own pebble on free ports
//! in a temporary directory, pointed at the gateway's listeners, so the
//! tests run in parallel. Without pebble installed they are skipped with a
//! message, except under `CI=true`, where that is a failure.
//!
//! The replica test also needs PostgreSQL on 127.0.0.1:5432 (trust auth;
//! `AUTHGATE_TEST_PG` overrides the admin URL), like `tests/replicas.rs`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use sqlx::Connection;
use tempfile::TempDir;

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";
/// Generous: a debug build, two cores shared with other builds.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
const SERVING: &str = "ACME: serving the certificate";
const ORDERING: &str = "ACME: ordering a certificate";
const FAILED: &str = "ACME attempt failed";

/// Whether pebble can be run; `CI=true` without it fails the test.
fn pebble_available() -> bool {
    if Path::new(PEBBLE).exists() && Path::new(CHALLTESTSRV).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "pebble is not installed (apt-get install -y pebble); CI must run the ACME tests"
    );
    eprintln!("SKIPPED: pebble is not installed (apt-get install -y pebble)");
    false
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free UDP port")
        .port()
}

/// pebble and its DNS server, stopped on drop.
struct Pebble {
    dir: TempDir,
    ca: Ca,
    listen: SocketAddr,
    management: SocketAddr,
    children: Vec<Child>,
}

impl Pebble {
    /// pebble validating http-01 on `http_port` and tls-alpn-01 on
    /// `tls_port` of 127.0.0.1.
    async fn start(http_port: u16, tls_port: u16) -> Pebble {
        Pebble::start_with_validity(http_port, tls_port, None).await
    }

    /// [`Pebble::start`] issuing certificates valid for `validity` seconds
    /// (pebble's default: five years).
    async fn start_with_validity(http_port: u16, tls_port: u16, validity: Option<u64>) -> Pebble {
        let dir = tempfile::Builder::new()
            .prefix("authgate-pebble-")
            .tempdir()
            .expect("temp dir");
        // pebble's HTTPS directory needs a certificate; Debian ships none.
        let ca = Ca::new(dir.path(), "pebble");
        let leaf = ca.server_cert("pebble-https");
        let dns = free_udp_port();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": leaf.cert,
                "privateKey": leaf.key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        if let Some(seconds) = validity {
            config["pebble"]["certificateValidityPeriod"] = seconds.into();
        }
        let config_path = write_file(dir.path(), "pebble.json", &config.to_string());
        let log =
            |name: &str| std::fs::File::create(dir.path().join(name)).expect("pebble log file");
        let challtestsrv = Command::new(CHALLTESTSRV)
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("start pebble-challtestsrv");
        let pebble = Command::new(PEBBLE)
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("start pebble");
        let pebble = Pebble {
            dir,
            ca,
            listen,
            management,
            children: vec![challtestsrv, pebble],
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not listen; log:\n{}",
                pebble.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pebble
    }

    fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.listen.port())
    }

    fn logs(&self) -> String {
        ["pebble.log", "pebble.err", "challtestsrv.err"]
            .iter()
            .map(|name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The root pebble issues under, from its management interface, as a
    /// PEM file.
    async fn root(&self) -> PathBuf {
        let trusting = client_config(&[&self.ca.cert], None, &["http/1.1"]);
        let r = https_request(
            self.management,
            "localhost",
            trusting,
            &Req::get("/roots/0"),
        )
        .await
        .expect("pebble's root");
        assert_eq!(r.status, 200, "{}", r.text());
        write_file(self.dir.path(), "issuing-root.pem", &r.text())
    }

    /// How many certificates pebble issued, from its log.
    fn issued(&self) -> usize {
        self.logs().matches("Issued certificate serial").count()
    }

    /// `[server.tls.acme]` for `domain` with `challenge`.
    fn acme_toml(&self, domain: &str, challenge: &str) -> String {
        format!(
            "[server.tls.acme]\ndirectory = \"{}\"\ndomains = [\"{domain}\"]\n\
             contact = [\"mailto:ops@example.com\"]\nchallenge = \"{challenge}\"\n\
             cache_dir = \"acme-cache\"\nca_file = \"{}\"\n",
            self.directory(),
            self.ca.cert.display()
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A gateway on fixed ports (pebble must know them) with only ACME's
/// certificate, `acme` as its `[server.tls.acme]`.
fn acme_gateway_options(http_port: u16, tls_port: u16, acme: &str) -> GatewayOptions {
    let mut opts = GatewayOptions::new("http://127.0.0.1:9");
    opts.listen = format!("127.0.0.1:{http_port}");
    opts.extra_toml = format!("[server.tls]\nlisten = \"127.0.0.1:{tls_port}\"\n\n{acme}");
    opts
}

/// The leaf served for `domain` after verifying the chain against `root`
/// (pebble's), or why the handshake failed.
async fn served_leaf(gw_tls: SocketAddr, domain: &str, root: &Path) -> Result<Vec<u8>, String> {
    let trusting = client_config(&[root], None, &["http/1.1"]);
    let r = https_request(gw_tls, domain, trusting, &Req::get("/healthz")).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    Ok(r.tls.expect("TLS info").peer_cert)
}

/// A metric's value in the gateway's `/metrics`.
async fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = get(&gw.url("/metrics"), None, &[]).await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// Waits until the gateway has served its `n`-th ACME certificate; fails
/// at once when an attempt fails (none should, against pebble).
async fn wait_serving(gw: &Gateway, pebble: &Pebble, n: usize) {
    let deadline = Instant::now() + ORDER_TIMEOUT;
    while gw.log_count(SERVING) < n {
        let failed = gw.log_count(FAILED) > 0;
        assert!(
            !failed && Instant::now() < deadline,
            "no ACME certificate served; gateway log:\n{}\npebble log:\n{}",
            gw.logs(),
            pebble.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_order_at_start_serves_a_certificate_from_pebbles_root() {
    if !pebble_available() {
        return;
    }
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, tls_port).await;
    let domain = format!("{}.example.com", unique("gw"));
    let opts = acme_gateway_options(http_port, tls_port, &pebble.acme_toml(&domain, "http-01"));
    // Everything else on the plain listener is redirected to HTTPS; the
    // CA's requests are not.
    let mut gw = Gateway::prepare(opts);
    let text = gw.render_config(gw.options()).replacen(
        "[server]\n",
        "[server]\nredirect_https = true\n",
        1,
    );
    gw.write_config(&text);
    gw.spawn().await;
    wait_serving(&gw, &pebble, 1).await;
    let moved = get(&gw.url("/.well-known/other"), None, &[]).await;
    assert_eq!(moved.status, 308, "{}", moved.text());

    let root = pebble.root().await;
    let https = gw.https_addr().await;
    let leaf = served_leaf(https, &domain, &root)
        .await
        .expect("the served chain verifies against pebble's root");
    assert!(!leaf.is_empty());
    assert_eq!(pebble.issued(), 1, "{}", pebble.logs());
    assert_eq!(gw.log_count(ORDERING), 1, "{}", gw.logs());
    // The answers are gone with the order; other tokens are 404, before
    // any route or credential (the only route would want a token).
    let r = get(
        &gw.url("/.well-known/acme-challenge/unknownToken"),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = get(&gw.url("/.well-known/acme-challenge/bad.token"), None, &[]).await;
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_order_at_start_serves_a_certificate_from_pebbles_root() {
    if !pebble_available() {
        return;
    }
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, tls_port).await;
    let domain = format!("{}.example.com", unique("gw"));
    let opts = acme_gateway_options(
        http_port,
        tls_port,
        &pebble.acme_toml(&domain, "tls-alpn-01"),
    );
    let gw = Gateway::start_with(opts).await;
    wait_serving(&gw, &pebble, 1).await;

    let root = pebble.root().await;
    let https = gw.https_addr().await;
    served_leaf(https, &domain, &root)
        .await
        .expect("the served chain verifies against pebble's root");
    assert_eq!(pebble.issued(), 1, "{}", pebble.logs());
    // After the order an acme-tls/1-only handshake gets no certificate at
    // all: challenge certificates live only while the CA checks.
    let acme_only = client_config(&[&root], None, &["acme-tls/1"]);
    let refused = https_request(https, &domain, acme_only, &Req::get("/")).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(
        gw.wait_for_log("TLS handshake failed", 1, Duration::from_secs(10))
            .await,
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_the_cached_certificate_without_a_new_order() {
    if !pebble_available() {
        return;
    }
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, tls_port).await;
    let domain = format!("{}.example.com", unique("gw"));
    let opts = acme_gateway_options(http_port, tls_port, &pebble.acme_toml(&domain, "http-01"));
    let mut gw = Gateway::start_with(opts).await;
    wait_serving(&gw, &pebble, 1).await;
    let root = pebble.root().await;
    let first = served_leaf(gw.https_addr().await, &domain, &root)
        .await
        .expect("first certificate");
    assert_eq!(metric(&gw, "authgate_acme_orders_total").await, 1.0);

    gw.restart().await;
    wait_serving(&gw, &pebble, 2).await;
    let again = served_leaf(gw.https_addr().await, &domain, &root)
        .await
        .expect("certificate after the restart");
    assert_eq!(again, first, "the cached certificate is served");
    assert_eq!(gw.log_count(ORDERING), 1, "{}", gw.logs());
    assert_eq!(metric(&gw, "authgate_acme_orders_total").await, 0.0);
    assert_eq!(pebble.issued(), 1, "{}", pebble.logs());
    // The account key and certificate are the owner's only.
    use std::os::unix::fs::PermissionsExt;
    let cache = gw.dir().join("acme-cache");
    for entry in std::fs::read_dir(&cache).expect("cache_dir") {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_renewed_at_two_thirds_of_its_life() {
    if !pebble_available() {
        return;
    }
    let (http_port, tls_port) = (free_port(), free_port());
    // 15 seconds of life: renewed about 10 seconds after issue.
    let pebble = Pebble::start_with_validity(http_port, tls_port, Some(15)).await;
    let domain = format!("{}.example.com", unique("gw"));
    let opts = acme_gateway_options(http_port, tls_port, &pebble.acme_toml(&domain, "http-01"));
    let gw = Gateway::start_with(opts).await;
    wait_serving(&gw, &pebble, 1).await;
    let root = pebble.root().await;
    let https = gw.https_addr().await;
    let first = served_leaf(https, &domain, &root).await.expect("first");
    let issued_at = Instant::now();
    let next = metric(&gw, "authgate_acme_next_attempt_seconds").await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!(
        next > now && next <= now + 11.0,
        "next check {next}, now {now}"
    );

    wait_serving(&gw, &pebble, 2).await;
    let renewed_after = issued_at.elapsed();
    // Two thirds of 15 s; not at the end of its life.
    assert!(
        renewed_after >= Duration::from_secs(7) && renewed_after < Duration::from_secs(14),
        "renewed after {renewed_after:?}"
    );
    let second = served_leaf(https, &domain, &root).await.expect("renewed");
    assert_ne!(second, first, "the renewed certificate is served");
    assert_eq!(gw.log_count(ORDERING), 2, "{}", gw.logs());
    assert_eq!(gw.log_count("ACME: account created"), 1, "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_domains_are_ordered_at_reload_with_the_same_account() {
    if !pebble_available() {
        return;
    }
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, tls_port).await;
    let first = format!("{}.example.com", unique("gw"));
    let opts = acme_gateway_options(http_port, tls_port, &pebble.acme_toml(&first, "http-01"));
    let mut gw = Gateway::start_with(opts.clone()).await;
    wait_serving(&gw, &pebble, 1).await;

    let second = format!("{}.example.com", unique("gw"));
    let mut changed = opts;
    changed.extra_toml =
        acme_gateway_options(http_port, tls_port, &pebble.acme_toml(&second, "http-01")).extra_toml;
    gw.set_options(changed);
    gw.sighup();
    wait_serving(&gw, &pebble, 2).await;
    let root = pebble.root().await;
    served_leaf(gw.https_addr().await, &second, &root)
        .await
        .expect("the new name is served");
    assert_eq!(gw.log_count(ORDERING), 2, "{}", gw.logs());
    assert_eq!(gw.log_count("ACME: account created"), 1, "{}", gw.logs());
    assert_eq!(pebble.logs().matches("There are now 1 accounts").count(), 1);
    assert_eq!(pebble.logs().matches("There are now 2 accounts").count(), 0);
}

fn admin_url() -> String {
    std::env::var("AUTHGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh PostgreSQL database for this test.
async fn fresh_database() -> String {
    let name = format!("authgate_{}", unique("acme").replace('-', "_")).to_lowercase();
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("PostgreSQL must be running on 127.0.0.1:5432");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let base = admin_url();
    let (server, _) = base.rsplit_once('/').expect("admin URL has a database");
    format!("{server}/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_database_order_once() {
    if !pebble_available() {
        return;
    }
    let db = fresh_database().await;
    let (a_http, a_tls, b_http, b_tls) = (free_port(), free_port(), free_port(), free_port());
    // pebble reaches replica A only, as a load balancer might pick it: the
    // replica that orders need not be the one the CA asks.
    let pebble = Pebble::start(a_http, a_tls).await;
    let domain = format!("{}.example.com", unique("gw"));
    let acme = pebble.acme_toml(&domain, "http-01");
    let mut a_opts = acme_gateway_options(a_http, a_tls, &acme);
    a_opts.store_url = Some(db.clone());
    let mut b_opts = acme_gateway_options(b_http, b_tls, &acme);
    b_opts.store_url = Some(db.clone());
    let mut a = Gateway::prepare(a_opts);
    let mut b = Gateway::prepare(b_opts);
    tokio::join!(a.spawn(), b.spawn());
    wait_serving(&a, &pebble, 1).await;
    wait_serving(&b, &pebble, 1).await;

    let root = pebble.root().await;
    let leaf_a = served_leaf(a.https_addr().await, &domain, &root)
        .await
        .expect("replica A");
    let leaf_b = served_leaf(b.https_addr().await, &domain, &root)
        .await
        .expect("replica B");
    assert_eq!(leaf_a, leaf_b, "both replicas serve the one certificate");
    assert_eq!(
        a.log_count(ORDERING) + b.log_count(ORDERING),
        1,
        "A:\n{}\nB:\n{}",
        a.logs(),
        b.logs()
    );
    assert_eq!(pebble.issued(), 1, "{}", pebble.logs());
    assert_eq!(
        a.log_count("ACME: account created") + b.log_count("ACME: account created"),
        1,
        "one account for both"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_the_ca_reaches_answers_http01_for_the_one_that_orders() {
    if !pebble_available() {
        return;
    }
    let db = fresh_database().await;
    let (a_http, a_tls, b_http, b_tls) = (free_port(), free_port(), free_port(), free_port());
    // pebble validates on replica A only; replica B orders. A's own ACME
    // cannot reach its CA, so A never orders: what it answers comes from
    // the store.
    let pebble = Pebble::start(a_http, a_tls).await;
    let domain = format!("{}.example.com", unique("gw"));
    let acme = pebble.acme_toml(&domain, "http-01");
    let unreachable = acme.replace(
        &pebble.directory(),
        &format!("https://127.0.0.1:{}/dir", free_port()),
    );
    let mut a_opts = acme_gateway_options(a_http, a_tls, &unreachable);
    a_opts.store_url = Some(db.clone());
    let mut b_opts = acme_gateway_options(b_http, b_tls, &acme);
    b_opts.store_url = Some(db);
    let a = Gateway::start_with(a_opts).await;
    let b = Gateway::start_with(b_opts).await;
    wait_serving(&b, &pebble, 1).await;
    assert_eq!(a.log_count(ORDERING), 0, "{}", a.logs());
    assert_eq!(b.log_count(ORDERING), 1, "{}", b.logs());
    let root = pebble.root().await;
    served_leaf(b.https_addr().await, &domain, &root)
        .await
        .expect("replica B's certificate");
    // The answer left the store with the order.
    let r = get(&a.url("/.well-known/acme-challenge/someToken"), None, &[]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_directory_keeps_the_default_certificate_and_says_when_it_retries() {
    let dir = tempfile::Builder::new()
        .prefix("authgate-acme-")
        .tempdir()
        .unwrap();
    let ca = Ca::new(dir.path(), "default");
    let default = ca.server_cert("default");
    let closed = free_port();
    let mut opts = GatewayOptions::new("http://127.0.0.1:9");
    opts.extra_toml = format!(
        "{}\n[server.tls.acme]\ndirectory = \"https://127.0.0.1:{closed}/dir\"\n\
         domains = [\"gw.example.com\"]\ncache_dir = \"acme-cache\"\n",
        tls_toml(&default.cert, &default.key, "")
    );
    let gw = Gateway::start_with(opts).await;
    assert!(
        gw.wait_for_log(FAILED, 1, Duration::from_secs(30)).await,
        "{}",
        gw.logs()
    );
    let logs = gw.logs();
    let line = logs.lines().find(|l| l.contains(FAILED)).unwrap();
    assert!(line.contains("next_attempt="), "{line}");
    assert!(line.contains("retry_in_seconds=10"), "{line}");
    assert!(line.contains("Connection refused"), "{line}");

    // The listener serves the default certificate all the while.
    let trusting = client_config(&[&ca.cert], None, &["http/1.1"]);
    let r = https_request(
        gw.https_addr().await,
        "localhost",
        trusting,
        &Req::get("/healthz"),
    )
    .await
    .expect("HTTPS with the default certificate");
    assert_eq!(r.status, 200);
    assert_eq!(r.tls.unwrap().peer_cert, default.der());

    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    let next = metric(&gw, "authgate_acme_next_attempt_seconds").await;
    assert!(next > now && next <= now + 11.0, "{next} vs {now}");
    assert_eq!(metric(&gw, "authgate_acme_failures_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_says_what_is_wrong_with_acme() {
    let closed = free_port();
    let cases = [
        (
            "directory = \"https://127.0.0.1:1/dir\"\n",
            "server.tls.acme.domains: is required",
        ),
        (
            "directory = \"http://ca.test/dir\"\ndomains = [\"gw.example.com\"]\n",
            "server.tls.acme.directory: \"http://ca.test/dir\" is not an https:// URL",
        ),
        (
            "directory = \"https://ca.test/dir\"\ndomains = [\"*.example.com\"]\n",
            "server.tls.acme.domains: \"*.example.com\": wildcards need dns-01",
        ),
        (
            "directory = \"https://ca.test/dir\"\ndomains = [\"gw.example.com\"]\nchallenge = \"dns-01\"\n",
            "server.tls.acme.challenge: \"dns-01\" must be",
        ),
        (
            "directory = \"https://ca.test/dir\"\ndomains = [\"gw.example.com\"]\ncontact = [\"ops@example.com\"]\n",
            "server.tls.acme.contact: \"ops@example.com\" is not a mailto:ADDRESS",
        ),
        (
            "directory = \"https://ca.test/dir\"\ndomains = [\"gw.example.com\"]\nchalenge = \"http-01\"\n",
            "server.tls.acme.chalenge: unknown key (did you mean server.tls.acme.challenge?)",
        ),
    ];
    for (acme, expected) in cases {
        let mut opts = GatewayOptions::new("http://127.0.0.1:9");
        opts.extra_toml = format!(
            "[server.tls]\nlisten = \"127.0.0.1:0\"\n[server.tls.acme]\n{acme}cache_dir = \"acme\"\n"
        );
        let gw = Gateway::prepare(opts);
        let out = gw.cli(&["check-config"], None).await;
        assert!(!out.status.success(), "{acme}: {}", out_text(&out));
        assert!(
            out_text(&out).contains(expected),
            "{acme}: {}",
            out_text(&out)
        );
    }

    // Valid on paper, but the directory cannot be reached.
    let mut opts = GatewayOptions::new("http://127.0.0.1:9");
    opts.extra_toml = format!(
        "[server.tls]\nlisten = \"127.0.0.1:0\"\n[server.tls.acme]\n\
         directory = \"https://127.0.0.1:{closed}/dir\"\ndomains = [\"gw.example.com\"]\n\
         cache_dir = \"acme\"\n"
    );
    let gw = Gateway::prepare(opts);
    let out = gw.cli(&["check-config"], None).await;
    assert!(!out.status.success(), "{}", out_text(&out));
    let text = out_text(&out);
    assert!(
        text.contains(&format!(
            "server.tls.acme.directory: cannot use https://127.0.0.1:{closed}/dir: "
        )),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
}
