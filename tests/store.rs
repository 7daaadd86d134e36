//! The SQLite store under concurrent writers, and the modes of its files.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use serde_json::json;

/// Concurrent clients in the write tests.
const WRITERS: usize = 16;
/// Key creations per client.
const KEYS_EACH: usize = 8;

/// `WRITERS` clients each creating `KEYS_EACH` keys at once; every answer.
async fn create_keys_at_once(gw: &Gateway, jwt: &str) -> Vec<(u16, String)> {
    let url = gw.url("/v1.0/accesskeys");
    let tasks: Vec<_> = (0..WRITERS)
        .map(|client| {
            let (url, auth) = (url.clone(), format!("Bearer {jwt}"));
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..KEYS_EACH {
                    let r = request(
                        "POST",
                        &url,
                        &[("authorization", &auth)],
                        Some(&json!({ "name": format!("c{client}-{i}"), "detail": "", "expire": 3600 })),
                    )
                    .await;
                    answers.push((r.status, r.text()));
                }
                answers
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("writer task"));
    }
    all
}

/// Room for every key the write tests create for their one user (beyond
/// the default `accesskeys.max_per_user`).
fn many_keys(mut opts: GatewayOptions) -> GatewayOptions {
    opts.extra_toml = format!("[accesskeys]\nmax_per_user = {}\n", WRITERS * KEYS_EACH);
    opts
}

fn assert_all_ok(answers: &[(u16, String)]) {
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} key creations failed, e.g. {:?}",
        failed.len(),
        answers.len(),
        failed.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_key_writers_all_succeed_on_sqlite() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(many_keys(GatewayOptions::new(&upstream.url()))).await;
    let user = unique("writer");
    gw.add_user(&user, &random_password(), &[]).await;
    let jwt = gw.issue_token(&user).await;

    let answers = create_keys_at_once(&gw, &jwt).await;
    assert_eq!(answers.len(), WRITERS * KEYS_EACH);
    assert_all_ok(&answers);
    let out = gw.cli_ok(&["key", "list", "--user", &user], None).await;
    assert_eq!(out.lines().count(), 1 + WRITERS * KEYS_EACH, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_login_bookkeeping_does_not_starve_key_writes() {
    let upstream = Upstream::start().await;
    let mut opts = many_keys(GatewayOptions::new(&upstream.url()));
    opts.login_max_concurrent_hashes = Some(4);
    let gw = Gateway::start_with(opts).await;
    let user = unique("writer");
    gw.add_user(&user, &random_password(), &[]).await;
    let jwt = gw.issue_token(&user).await;

    // Failed logins for many users (each one a throttle admission and a
    // settlement in the store) for as long as the writers run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let login_url = gw.url("/auth/login");
    let flooders: Vec<_> = (0..8)
        .map(|_| {
            let (url, stop) = (login_url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let body = json!({ "username": unique("guess"), "password": "wrong" });
                    statuses.push(post_json(&url, None, &body).await.status);
                }
                statuses
            })
        })
        .collect();
    let answers = create_keys_at_once(&gw, &jwt).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut statuses = Vec::new();
    for flooder in flooders {
        statuses.extend(flooder.await.expect("flooder"));
    }
    assert_all_ok(&answers);
    assert!(
        statuses.contains(&401),
        "the failed logins ran: {statuses:?}"
    );
    // A login is judged (401), refused at the hash bound (503 LOGIN_BUSY) or
    // throttled (429); the store never gives up on it.
    assert!(
        statuses.iter().all(|s| [401, 429, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        !gw.logs().contains("database is locked"),
        "the store was locked:\n{}",
        gw.logs()
    );
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn store_files(dir: &Path) -> [std::path::PathBuf; 3] {
    ["authgate.db", "authgate.db-wal", "authgate.db-shm"].map(|name| dir.join(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_files_are_owner_only_when_the_gateway_or_the_cli_creates_them() {
    // The test process's umask would give 0644 to files made with defaults.
    let upstream = Upstream::start().await;

    // Created by the gateway.
    let gw = Gateway::start(&upstream).await;
    let dir = gw.dir().canonicalize().unwrap();
    for file in store_files(&dir) {
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }

    // Created by the CLI, then opened by the gateway.
    let mut gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    let dir = gw.dir().canonicalize().unwrap();
    gw.add_user(&unique("first"), &random_password(), &[]).await;
    assert_eq!(mode_of(&dir.join("authgate.db")), 0o600, "made by the CLI");
    gw.spawn().await;
    let user = unique("second");
    gw.add_user(&user, &random_password(), &[]).await;
    for file in store_files(&dir) {
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_files_made_readable_before_are_made_owner_only() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    let dir = gw.dir().canonicalize().unwrap();
    gw.add_user(&unique("old"), &random_password(), &[]).await;
    let db = dir.join("authgate.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    gw.spawn().await;
    for file in store_files(&dir) {
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
}
