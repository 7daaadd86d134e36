//! Access-key scopes (roles, methods, path prefixes) through the API and
//! the CLI, their enforcement on proxied requests, and `tm_last_used`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const KEYS: &str = "/v1.0/accesskeys";

async fn setup(roles: &[&str]) -> (Upstream, Gateway, String, String) {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("s");
    gw.add_user(&user, &random_password(), roles).await;
    let jwt = gw.issue_token(&user).await;
    (upstream, gw, user, jwt)
}

async fn create(gw: &Gateway, jwt: &str, body: Value) -> Resp {
    let auth = format!("Bearer {jwt}");
    request(
        "POST",
        &gw.url(KEYS),
        &[("authorization", &auth)],
        Some(&body),
    )
    .await
}

async fn use_key(gw: &Gateway, method: &str, path: &str, key: &str) -> Resp {
    request(
        method,
        &gw.url(path),
        &[("cookie", &format!("accesskey={key}"))],
        None,
    )
    .await
}

fn assert_out_of_scope(r: &Resp) {
    r.expect_status(403);
    let v = r.json();
    assert_eq!(v["error"]["status"], "PERMISSION_DENIED", "{v}");
    assert_eq!(v["error"]["reason"], "OUT_OF_SCOPE", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_key_reaches_only_its_methods_and_prefixes() {
    let (upstream, gw, _user, jwt) = setup(&["ops", "dev"]).await;
    let r = create(
        &gw,
        &jwt,
        json!({"name": "ro", "expire": 3600, "roles": ["ops"], "methods": ["GET", "HEAD"],
               "path_prefixes": ["/api", "/docs/"]}),
    )
    .await;
    r.expect_status(200);
    let created = r.json();
    assert_eq!(created["roles"], json!(["ops"]));
    assert_eq!(created["methods"], json!(["GET", "HEAD"]));
    assert_eq!(created["path_prefixes"], json!(["/api", "/docs/"]));
    assert_eq!(created["tm_last_used"], "");
    let key = created["token"].as_str().unwrap().to_owned();

    for path in ["/api", "/api/v1/x", "/api/v1;jsessionid=1", "/docs/a"] {
        use_key(&gw, "GET", path, &key).await.expect_status(200);
        let seen = upstream.last();
        assert_eq!(seen.path(), path);
        // The key's roles, not the owner's.
        assert_eq!(seen.header("x-auth-roles").as_deref(), Some("ops"));
    }
    let forwarded = upstream.count();
    use_key(&gw, "HEAD", "/api/x", &key)
        .await
        .expect_status(200);
    assert_out_of_scope(&use_key(&gw, "POST", "/api/x", &key).await);
    assert_out_of_scope(&use_key(&gw, "DELETE", "/api/x", &key).await);
    // Outside the prefixes under any reading of the path.
    for path in [
        "/apix",
        "/",
        "/docs",
        "/other/api",
        "/API/x",
        "/Api",
        "/api;x/",
        "/API;x/",
        "/api./x",
        "/api~/x",
        "/api%20/x",
        "/docs;a/x",
        "/other;/api/",
    ] {
        assert_out_of_scope(&use_key(&gw, "GET", path, &key).await);
    }
    // Under /admin (role admin) the route's role check refuses first.
    use_key(&gw, "GET", "/admin;/api/", &key)
        .await
        .expect_status(403);
    assert_eq!(
        upstream.count(),
        forwarded + 1,
        "nothing outside the scope was forwarded"
    );
    // Key endpoints lie outside its prefixes too.
    assert_out_of_scope(&use_key(&gw, "GET", KEYS, &key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_roles_are_checked_against_the_key_roles() {
    let (upstream, gw, _user, jwt) = setup(&["admin", "ops"]).await;
    let narrowed = create(&gw, &jwt, json!({"expire": 3600, "roles": ["ops"]})).await;
    narrowed.expect_status(200);
    let narrowed = narrowed.json()["token"].as_str().unwrap().to_owned();
    let none = create(&gw, &jwt, json!({"expire": 3600, "roles": []}))
        .await
        .json();
    let none = none["token"].as_str().unwrap().to_owned();
    let follows = create(&gw, &jwt, json!({"expire": 3600})).await.json();
    assert_eq!(follows["roles"], Value::Null, "follows its owner");
    assert_eq!(follows["methods"], json!([]));
    assert_eq!(follows["path_prefixes"], json!([]));
    let follows = follows["token"].as_str().unwrap().to_owned();

    let r = use_key(&gw, "GET", "/admin/x", &narrowed).await;
    r.expect_status(403);
    assert_eq!(r.json()["error"]["reason"], "MISSING_ROLE");
    use_key(&gw, "GET", "/x", &none).await.expect_status(200);
    assert_eq!(upstream.last().header("x-auth-roles").as_deref(), Some(""));
    use_key(&gw, "POST", "/admin/x", &follows)
        .await
        .expect_status(200);
    assert_eq!(
        roles_of(&upstream.last().header("x-auth-roles").unwrap()),
        vec!["admin", "ops"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scopes_are_refused_and_a_scope_is_fixed() {
    let (_upstream, gw, _user, jwt) = setup(&["ops"]).await;
    let r = create(
        &gw,
        &jwt,
        json!({"expire": 3600, "roles": ["ops", "admin"]}),
    )
    .await;
    r.expect_status(400);
    assert_eq!(r.json()["error"]["reason"], "ROLE_NOT_HELD");
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    for bad in [
        json!({"expire": 3600, "methods": ["get"]}),
        json!({"expire": 3600, "methods": ["GET POST"]}),
        json!({"expire": 3600, "path_prefixes": ["api"]}),
        json!({"expire": 3600, "path_prefixes": ["/a/../b"]}),
        json!({"expire": 3600, "path_prefixes": ["/a;b"]}),
        json!({"expire": 3600, "path_prefixes": ["/api."]}),
        json!({"expire": 3600, "path_prefixes": ["/%61pi"]}),
        json!({"expire": 3600, "roles": ["a,b"]}),
    ] {
        let r = create(&gw, &jwt, bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let created = create(&gw, &jwt, json!({"expire": 3600, "methods": ["GET"]}))
        .await
        .json();
    let id = created["id"].as_str().unwrap();
    let auth = format!("Bearer {jwt}");
    let url = gw.url(&format!("{KEYS}/{id}"));
    let widen = request(
        "PUT",
        &url,
        &[("authorization", &auth)],
        Some(&json!({"name": "x", "methods": []})),
    )
    .await;
    widen.expect_status(400);
    let renamed = request(
        "PUT",
        &url,
        &[("authorization", &auth)],
        Some(&json!({"name": "n2"})),
    )
    .await;
    renamed.expect_status(200);
    assert_eq!(renamed.json()["name"], "n2");
    assert_eq!(renamed.json()["methods"], json!(["GET"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_and_lists_scoped_keys() {
    let (upstream, gw, user, _jwt) = setup(&["ops", "dev"]).await;
    let (id, key) = gw
        .create_key_cli(
            &user,
            &[
                "--role", "dev", "--method", "GET", "--path", "/api/", "--path", "/v2",
            ],
        )
        .await;
    use_key(&gw, "GET", "/api/x", &key).await.expect_status(200);
    assert_eq!(
        upstream.last().header("x-auth-roles").as_deref(),
        Some("dev")
    );
    assert_out_of_scope(&use_key(&gw, "PUT", "/api/x", &key).await);
    assert_out_of_scope(&use_key(&gw, "GET", "/v3", &key).await);
    let list = gw.cli_ok(&["key", "list", "--user", &user], None).await;
    let line = list.lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(line.contains("\tdev\tGET\t/api/,/v2"), "{line}");
    for bad in [
        vec!["--role", "admin"],
        vec!["--method", "get"],
        vec!["--path", "/a//b"],
    ] {
        let mut args = vec!["key", "create", "--user", &user];
        args.extend(bad.iter().copied());
        let out = gw.cli(&args, None).await;
        assert!(!out.status.success(), "{bad:?} accepted");
        let text = out_text(&out);
        assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    }
}

/// Opens the gateway's SQLite store beside it.
async fn open_db(gw: &Gateway) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let path = gw.dir().join("authgate.db");
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open the store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tm_last_used_is_written_in_batches_at_most_once_a_minute() {
    let (_upstream, gw, user, jwt) = setup(&[]).await;
    let (id, key) = gw.create_key_cli(&user, &[]).await;
    let (other_id, other) = gw.create_key_cli(&user, &[]).await;
    // Count every write of the column, whatever writes it.
    let mut db = open_db(&gw).await;
    sqlx::raw_sql(
        "CREATE TABLE last_used_writes (id TEXT); \
         CREATE TRIGGER count_last_used AFTER UPDATE OF tm_last_used ON accesskeys \
         BEGIN INSERT INTO last_used_writes VALUES (NEW.id); END;",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let shown = |id: String| {
        let gw = &gw;
        let jwt = jwt.clone();
        async move {
            let r = get(&gw.url(&format!("{KEYS}/{id}")), Some(&jwt), &[]).await;
            r.json()["tm_last_used"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    assert_eq!(shown(id.clone()).await, "");
    // 100 uses over about five seconds: several flushes happen meanwhile.
    let started = Instant::now();
    for i in 0..100 {
        use_key(&gw, "GET", "/x", &key).await.expect_status(200);
        if i == 0 {
            use_key(&gw, "GET", "/x", &other).await.expect_status(200);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let used_at = started.elapsed();
    let seen = poll_until(Duration::from_secs(10), || {
        let id = id.clone();
        async { !shown(id).await.is_empty() }
    })
    .await;
    assert!(seen, "tm_last_used shows the use within 10 seconds");
    let last_used = shown(id.clone()).await;
    assert!(is_rfc3339_utc(&last_used), "{last_used}");
    assert!(!shown(other_id.clone()).await.is_empty());
    let writes: Vec<String> = sqlx::query_scalar("SELECT id FROM last_used_writes")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert!(used_at > Duration::from_secs(4), "{used_at:?}");
    assert_eq!(
        writes.iter().filter(|w| **w == id).count(),
        1,
        "one write for 100 uses within a minute: {writes:?}"
    );
    let list = gw.cli_ok(&["key", "list", "--user", &user], None).await;
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(line.contains(&last_used), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_before_scopes_existed_keep_working() {
    // A store at migration 0003 with a key, as an older gateway left it.
    use sqlx::Connection;
    let upstream = Upstream::start().await;
    let mut gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    let old = gw.dir().join("old-migrations");
    std::fs::create_dir_all(&old).unwrap();
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(&here).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "0004" {
            std::fs::copy(&path, old.join(&name)).unwrap();
        }
    }
    let db_path = gw.dir().join("authgate.db");
    let mut db =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db_path.display()))
            .await
            .unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&mut db)
        .await
        .unwrap();
    let key = format!("ag_{}", "A".repeat(40));
    let now = now_secs();
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, ha1, ha1_realm, roles, generation, created_at, updated_at) \
         VALUES ('u1', 'legacy', 'x', 'x', 'voximplant.com', 'ops,dev', 1, $1, $1)",
    )
    .bind(now)
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO accesskeys (id, username, name, detail, token_hash, token_prefix, tm_expire, tm_create, tm_update) \
         VALUES ('01900000-0000-7000-8000-000000000001', 'legacy', 'old', '', $1, $2, $3, $4, $4)",
    )
    .bind(sha256_hex(key.as_bytes()))
    .bind(&key[..11])
    .bind(now + 3600)
    .bind(now)
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
    gw.spawn().await;
    for (method, path) in [("GET", "/x"), ("DELETE", "/admin-not/y"), ("POST", "/z")] {
        use_key(&gw, method, path, &key).await.expect_status(200);
    }
    assert_eq!(
        roles_of(&upstream.last().header("x-auth-roles").unwrap()),
        vec!["dev", "ops"]
    );
    let list = gw.cli_ok(&["key", "list", "--user", "legacy"], None).await;
    assert!(list.contains("(owner's)\t*\t*"), "{list}");
}

/// The same on PostgreSQL (migration 0004 there): scoped and unscoped keys,
/// and `tm_last_used`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_and_last_use_on_postgres() {
    use sqlx::Connection;
    let admin_url = std::env::var("AUTHGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let name = format!("authgate_{}", unique("sc").replace('-', "_")).to_lowercase();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("PostgreSQL must be running on 127.0.0.1:5432");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (server, _) = admin_url.rsplit_once('/').unwrap();
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.store_url = Some(format!("{server}/{name}"));
    let gw = Gateway::start_with(opts).await;
    let user = unique("pg");
    gw.add_user(&user, &random_password(), &["ops", "dev"])
        .await;
    let (scoped_id, scoped) = gw
        .create_key_cli(
            &user,
            &["--role", "ops", "--method", "GET", "--path", "/api"],
        )
        .await;
    let (_, plain) = gw.create_key_cli(&user, &[]).await;
    use_key(&gw, "GET", "/api/x", &scoped)
        .await
        .expect_status(200);
    assert_eq!(
        upstream.last().header("x-auth-roles").as_deref(),
        Some("ops")
    );
    assert_out_of_scope(&use_key(&gw, "GET", "/apix", &scoped).await);
    use_key(&gw, "DELETE", "/x", &plain)
        .await
        .expect_status(200);
    let jwt = gw.issue_token(&user).await;
    let shown = poll_until(Duration::from_secs(10), || async {
        let r = get(&gw.url(&format!("{KEYS}/{scoped_id}")), Some(&jwt), &[]).await;
        let v = r.json();
        assert_eq!(v["roles"], json!(["ops"]));
        assert_eq!(v["path_prefixes"], json!(["/api"]));
        !v["tm_last_used"].as_str().unwrap_or_default().is_empty()
    })
    .await;
    assert!(shown, "tm_last_used shows the use within 10 seconds");
    drop(gw);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}
