//! SIGHUP reloads: signing keys and the TLS certificate rotate while
//! requests run, without a single failure; an invalid config is refused and
//! the gateway keeps serving with the one it had.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use tempfile::TempDir;

const RELOADED: &str = "configuration reloaded";
const REFUSED: &str = "reload refused";

/// An ES256 key pair and its `[[jwt.keys]]` entry.
struct Key {
    kid: String,
    private: PathBuf,
    public: PathBuf,
}

impl Key {
    fn new(dir: &Path, kid: &str) -> Key {
        let (private, public) = jwt_key_pair(dir, kid, "ES256");
        Key {
            kid: kid.to_string(),
            private,
            public,
        }
    }

    fn toml(&self, signing: bool) -> String {
        let mut s = format!(
            "[[jwt.keys]]\nkid = \"{}\"\nalgorithm = \"ES256\"\npublic_key = \"{}\"\n",
            self.kid,
            self.public.display()
        );
        if signing {
            s.push_str(&format!("private_key = \"{}\"\n", self.private.display()));
        }
        s
    }
}

/// Copies `from` over `to` at once (copy next to it, then rename).
fn replace_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("incoming");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

fn kid_of(token: &str) -> String {
    jwt_parts(token).0["kid"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

#[derive(Default)]
struct LoadStats {
    ok: usize,
    failures: Vec<String>,
    ok_by_kid: HashMap<String, usize>,
    /// (connection started, certificate fingerprint) of each success.
    certs: Vec<(Instant, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_rotates_signing_key_and_certificate_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "server");
    let first = ca.server_cert("server-1");
    let second = ca.server_cert("server-2");
    let (fp1, fp2) = (fingerprint(&first.der()), fingerprint(&second.der()));
    assert_ne!(fp1, fp2);
    let live = CertKey {
        cert: dir.path().join("live-cert.pem"),
        key: dir.path().join("live-key.pem"),
    };
    replace_file(&first.cert, &live.cert);
    replace_file(&first.key, &live.key);
    let key_a = Key::new(dir.path(), "kid-a");
    let key_b = Key::new(dir.path(), "kid-b");

    // A little upstream latency keeps requests in flight across the signal.
    let upstream = Upstream::start_with_delay(Duration::from_millis(30)).await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = format!(
        "{}{}",
        tls_toml(&live.cert, &live.key, ""),
        key_a.toml(true)
    );
    let mut gw = Gateway::start_with(opts.clone()).await;
    let https = gw.https_addr().await;
    let user = unique("load");
    let password = random_password();
    gw.add_user(&user, &password, &[]).await;
    let token_a = login_ok(&gw, &user, &password).await;
    assert_eq!(kid_of(&token_a), "kid-a");

    let tokens = Arc::new(RwLock::new(vec![token_a.clone()]));
    let stats = Arc::new(Mutex::new(LoadStats::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let alpn = if worker % 2 == 0 { "h2" } else { "http/1.1" };
        let config = client_config(&[&ca.cert], None, &[alpn]);
        let (tokens, stats, stop) = (tokens.clone(), stats.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0usize;
            // Bounded even if the test's stop never comes.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let token = {
                    let t = tokens.read().unwrap();
                    t[(n + worker) % t.len()].clone()
                };
                n += 1;
                let started = Instant::now();
                let req = Req::get(&format!("/load/{worker}/{n}")).bearer(&token);
                let result = https_request(https, "localhost", config.clone(), &req).await;
                let mut s = stats.lock().unwrap();
                match result {
                    Ok(r) if r.status == 200 => {
                        s.ok += 1;
                        *s.ok_by_kid.entry(kid_of(&token)).or_default() += 1;
                        let cert = fingerprint(&r.tls.unwrap().peer_cert);
                        s.certs.push((started, cert));
                    }
                    Ok(r) => s.failures.push(format!(
                        "worker {worker} #{n} ({alpn}, {}): HTTP {} {}",
                        kid_of(&token),
                        r.status,
                        r.text()
                    )),
                    Err(e) => s.failures.push(format!(
                        "worker {worker} #{n} ({alpn}, {}): {e}",
                        kid_of(&token)
                    )),
                }
            }
        }));
    }
    let load_started = Instant::now();
    let ok = || stats.lock().unwrap().ok;
    // A few seconds of load on each side of the signal.
    let phase = Duration::from_secs(2);
    assert!(
        poll_until(Duration::from_secs(30), || async {
            ok() >= 40 && load_started.elapsed() >= phase
        })
        .await,
        "the load did not get going: {} ok, failures {:?}",
        ok(),
        stats.lock().unwrap().failures
    );

    // Rotate: a new certificate in place of the old, kid-b signs, kid-a
    // verifies only. Then SIGHUP in the middle of the load.
    replace_file(&second.cert, &live.cert);
    replace_file(&second.key, &live.key);
    opts.extra_toml = format!(
        "{}{}{}",
        tls_toml(&live.cert, &live.key, ""),
        key_b.toml(true),
        key_a.toml(false)
    );
    gw.set_options(opts);
    let reloads = gw.log_count(RELOADED);
    let signalled = Instant::now();
    gw.sighup();
    assert!(
        gw.wait_for_log(RELOADED, reloads + 1, Duration::from_secs(15))
            .await,
        "no `{RELOADED}` after SIGHUP; log:\n{}",
        gw.logs()
    );
    let reloaded = Instant::now();

    // The published keys follow the reload.
    let jwks = get(&gw.url("/.well-known/jwks.json"), None, &[]).await;
    jwks.expect_status(200);
    let mut kids: Vec<String> = jwks.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap_or_default().to_string())
        .collect();
    kids.sort();
    assert_eq!(kids, vec!["kid-a", "kid-b"]);

    // New logins get kid-b, and their tokens join the load.
    let token_b = login_ok(&gw, &user, &password).await;
    assert_eq!(kid_of(&token_b), "kid-b", "login after the reload");
    assert_eq!(kid_of(&gw.issue_token(&user).await), "kid-b");
    tokens.write().unwrap().push(token_b.clone());
    let ok_at_reload = ok();
    let ok_b = || {
        stats
            .lock()
            .unwrap()
            .ok_by_kid
            .get("kid-b")
            .copied()
            .unwrap_or(0)
    };
    assert!(
        poll_until(Duration::from_secs(30), || async {
            ok() >= ok_at_reload + 40 && ok_b() >= 10 && reloaded.elapsed() >= phase
        })
        .await,
        "too little load after the reload: {} ok in all, {} with kid-b",
        ok(),
        ok_b()
    );
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("load worker");
    }

    let s = std::mem::take(&mut *stats.lock().unwrap());
    eprintln!(
        "load: {} ok, {} failed, by kid {:?}",
        s.ok,
        s.failures.len(),
        s.ok_by_kid
    );
    assert!(
        s.failures.is_empty(),
        "{} of {} requests failed across the reload:\n{}",
        s.failures.len(),
        s.ok + s.failures.len(),
        s.failures.join("\n")
    );
    assert!(s.ok_by_kid.get("kid-a").copied().unwrap_or(0) > 0);
    // Connections made before the signal saw the first certificate, those
    // made after the reload the second.
    let before: Vec<&String> = s
        .certs
        .iter()
        .filter(|(at, _)| *at < signalled)
        .map(|(_, c)| c)
        .collect();
    let after: Vec<&String> = s
        .certs
        .iter()
        .filter(|(at, _)| *at > reloaded)
        .map(|(_, c)| c)
        .collect();
    assert!(!before.is_empty() && !after.is_empty());
    assert!(
        before.iter().all(|c| **c == fp1),
        "a connection before the reload saw another certificate"
    );
    assert!(
        after.iter().all(|c| **c == fp2),
        "a new connection after the reload did not see the new certificate"
    );

    // The old token is still good (kid-a verifies), and so is the new one.
    let config = client_config(&[&ca.cert], None, &["h2"]);
    for token in [&token_a, &token_b] {
        let r = https_request(
            https,
            "localhost",
            config.clone(),
            &Req::get("/x").bearer(token),
        )
        .await
        .expect("request after the load");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.tls.unwrap().peer_cert, second.der());
    }
    assert_eq!(gw.log_count("TLS handshake failed"), 0, "{}", gw.logs());
}

struct Serving {
    _dir: TempDir,
    ca: Ca,
    first: CertKey,
    upstream: Upstream,
    other: Upstream,
    gw: Gateway,
    opts: GatewayOptions,
    https: SocketAddr,
    token: String,
}

impl Serving {
    /// The gateway still answers as configured at start: the token works
    /// over both listeners, `/moved` goes to the first upstream, and TLS
    /// serves the first certificate.
    async fn assert_still_serving(&self, after: &str) {
        let before = self.upstream.count();
        get(&self.gw.url("/moved/x"), Some(&self.token), &[])
            .await
            .expect_status(200);
        assert_eq!(
            self.upstream.count(),
            before + 1,
            "after {after}: /moved must still go to the first upstream"
        );
        get(&self.gw.url("/healthz"), None, &[])
            .await
            .expect_status(200);
        let r = https_request(
            self.https,
            "localhost",
            client_config(&[&self.ca.cert], None, &["h2"]),
            &Req::get("/over-tls").bearer(&self.token),
        )
        .await
        .unwrap_or_else(|e| panic!("after {after}: HTTPS request failed: {e}"));
        assert_eq!(r.status, 200, "after {after}: {}", r.text());
        assert_eq!(r.tls.unwrap().peer_cert, self.first.der(), "after {after}");
        assert_eq!(self.other.count(), 0);
    }

    /// Writes `text` as the config, sends SIGHUP, and waits for the refusal.
    async fn refused(&self, text: &str, what: &str) {
        let refusals = self.gw.log_count(REFUSED);
        self.gw.write_config(text);
        self.gw.sighup();
        assert!(
            self.gw
                .wait_for_log(REFUSED, refusals + 1, Duration::from_secs(10))
                .await,
            "{what}: no `{REFUSED}` log line after SIGHUP; log:\n{}",
            self.gw.logs()
        );
        self.assert_still_serving(what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_on_sighup_keeps_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "server");
    let first = ca.server_cert("server-1");
    let live = CertKey {
        cert: dir.path().join("live-cert.pem"),
        key: dir.path().join("live-key.pem"),
    };
    replace_file(&first.cert, &live.cert);
    replace_file(&first.key, &live.key);
    let upstream = Upstream::start().await;
    let other = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = tls_toml(&live.cert, &live.key, "");
    let gw = Gateway::start_with(opts.clone()).await;
    let https = gw.https_addr().await;
    let user = unique("reload");
    gw.add_user(&user, &random_password(), &[]).await;
    let token = gw.issue_token(&user).await;
    let s = Serving {
        _dir: dir,
        ca,
        first,
        upstream,
        other,
        gw,
        opts,
        https,
        token,
    };
    s.assert_still_serving("start").await;

    // The config the valid reload at the end will bring: `/moved` elsewhere.
    let mut moved = s.opts.clone();
    moved
        .routes
        .push(RouteSpec::required("/moved", &s.other.url()));
    let moved_text = s.gw.render_config(&moved);

    s.refused("this is [not toml\n\u{0}garbage", "garbage")
        .await;
    s.refused("", "an empty file").await;
    // Valid TOML, invalid config: the good change plus one bad route.
    s.refused(
        &format!("{moved_text}\n[[route]]\npath_prefix = \"/bad\"\nupstream = \"not a url\"\n"),
        "a route with a bad upstream",
    )
    .await;
    s.refused(
        &moved_text.replace("[upstream]\n", "[upstream]\nno_such_key = 1\n"),
        "an unknown key",
    )
    .await;
    let mut missing_key = moved.clone();
    missing_key.extra_toml = format!(
        "{}[[jwt.keys]]\nkid = \"gone\"\nalgorithm = \"ES256\"\npublic_key = \"/nonexistent/key.pem\"\n",
        moved.extra_toml
    );
    s.refused(&s.gw.render_config(&missing_key), "a missing key file")
        .await;
    // The listen address cannot change without a restart.
    s.refused(
        &moved_text.replacen("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"", 1),
        "a new listen address",
    )
    .await;
    // A broken certificate file: refused, the old certificate stays.
    let garbage_cert = s.gw.dir().join("garbage-cert.pem");
    std::fs::write(&garbage_cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let mut broken_tls = moved.clone();
    broken_tls.extra_toml = tls_toml(&garbage_cert, &s.first.key, "");
    s.refused(&s.gw.render_config(&broken_tls), "a garbage certificate")
        .await;
    assert!(
        s.gw.logs()
            .lines()
            .filter(|l| l.contains(REFUSED))
            .all(|l| l.contains("error")),
        "each refusal is logged with its reason:\n{}",
        s.gw.logs()
    );

    // A valid config is still taken after all that.
    let reloads = s.gw.log_count(RELOADED);
    s.gw.write_config(&moved_text);
    s.gw.sighup();
    assert!(
        s.gw.wait_for_log(RELOADED, reloads + 1, Duration::from_secs(10))
            .await,
        "the valid config was not reloaded; log:\n{}",
        s.gw.logs()
    );
    get(&s.gw.url("/moved/x"), Some(&s.token), &[])
        .await
        .expect_status(200);
    assert_eq!(s.other.count(), 1, "/moved goes to the new upstream");
    assert_eq!(s.other.last().path(), "/moved/x");
}
