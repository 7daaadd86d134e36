//! Control and bidirectional formatting characters in access-key names and
//! details: refused by the API (create and PUT) and by `key create`, and
//! escaped by the CLI when it prints rows stored before the check.

mod common;

use common::*;
use serde_json::{Value, json};
use sqlx::Connection;

const KEYS: &str = "/v1.0/accesskeys";

/// Texts that forge rows, repaint terminals or reorder what is shown.
const EVIL: [&str; 12] = [
    "\u{1b}[31mred\u{1b}[0m",
    "two\nlines",
    "cr\rover",
    "nul\0byte",
    "tab\tcolumn",
    "del\u{7f}",
    "c1 csi\u{9b}2J",
    "invoice\u{202e}fdp.exe",
    "isolate\u{2066}x\u{2069}",
    "mark\u{200f}",
    "arabic mark\u{061c}",
    "embed\u{202a}x\u{202c}",
];

async fn call(gw: &Gateway, method: &str, path: &str, jwt: &str, body: &Value) -> Resp {
    request(
        method,
        &gw.url(path),
        &[("authorization", &format!("Bearer {jwt}"))],
        Some(body),
    )
    .await
}

async fn key_count(gw: &Gateway, jwt: &str) -> usize {
    let r = get(&gw.url(KEYS), Some(jwt), &[]).await;
    r.expect_status(200);
    r.json()["result"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_control_and_bidi_characters() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("cc");
    gw.add_user(&user, &random_password(), &[]).await;
    let jwt = gw.issue_token(&user).await;

    for evil in EVIL {
        let r = call(
            &gw,
            "POST",
            KEYS,
            &jwt,
            &json!({ "name": evil, "detail": "ok", "expire": 3600 }),
        )
        .await;
        let v = r.expect_error(400, "INVALID_ARGUMENT", "INVALID_NAME");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains(evil), "the text is not echoed: {message}");
        let r = call(
            &gw,
            "POST",
            KEYS,
            &jwt,
            &json!({ "name": "ok", "detail": evil, "expire": 3600 }),
        )
        .await;
        r.expect_error(400, "INVALID_ARGUMENT", "INVALID_DETAIL");
    }
    assert_eq!(key_count(&gw, &jwt).await, 0, "nothing was created");

    // Plain Unicode is fine.
    let r = call(
        &gw,
        "POST",
        KEYS,
        &jwt,
        &json!({ "name": "déploiement 日本", "detail": "ok ☕", "expire": 3600 }),
    )
    .await;
    r.expect_status(200);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let path = format!("{KEYS}/{id}");
    for evil in EVIL {
        call(&gw, "PUT", &path, &jwt, &json!({ "name": evil }))
            .await
            .expect_error(400, "INVALID_ARGUMENT", "INVALID_NAME");
        call(&gw, "PUT", &path, &jwt, &json!({ "detail": evil }))
            .await
            .expect_error(400, "INVALID_ARGUMENT", "INVALID_DETAIL");
    }
    let r = get(&gw.url(&path), Some(&jwt), &[]).await;
    r.expect_status(200);
    assert_eq!(r.json()["name"], "déploiement 日本");
    assert_eq!(r.json()["detail"], "ok ☕");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_create_refuses_control_and_bidi_characters() {
    let gw = Gateway::prepare(GatewayOptions::new("http://127.0.0.1:9"));
    let user = unique("cc");
    gw.add_user(&user, &random_password(), &[]).await;
    // NUL cannot be in argv at all.
    for evil in EVIL.iter().filter(|text| !text.contains('\0')) {
        for flag in ["--name", "--detail"] {
            let out = gw
                .cli(&["key", "create", "--user", &user, flag, evil], None)
                .await;
            assert!(!out.status.success(), "{flag} {evil:?} was accepted");
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(
                lines.len(),
                1,
                "one-line error for {flag} {evil:?}: {err:?}"
            );
            assert!(lines[0].contains(flag), "the error names {flag}: {err:?}");
            assert!(
                !err.contains('\u{1b}') && !err.contains('\u{202e}'),
                "the error does not echo the text: {err:?}"
            );
        }
    }
    let list = gw.cli_ok(&["key", "list", "--user", &user], None).await;
    assert_eq!(list.lines().count(), 1, "only the header: {list:?}");
    // Control: a plain name works.
    gw.cli_ok(
        &["key", "create", "--user", &user, "--name", "ci déploiement"],
        None,
    )
    .await;
}

/// Rows stored before the check (written here straight into the SQLite
/// store) are printed escaped: one line per row, no raw control or bidi
/// character on the terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_escape_what_the_store_holds() {
    let gw = Gateway::prepare(GatewayOptions::new("http://127.0.0.1:9"));
    let user = unique("cc");
    gw.add_user(&user, &random_password(), &[]).await;
    let (id, _key) = gw.create_key_cli(&user, &["--name", "placeholder"]).await;

    let forged = "x\u{1b}[2J\n00000000-0000-0000-0000-000000000000\tadmin\u{202e}";
    let mut db = sqlx::SqliteConnection::connect(&gw.db_url())
        .await
        .expect("open the store");
    sqlx::query("UPDATE accesskeys SET name = ? WHERE id = ?")
        .bind(forged)
        .bind(&id)
        .execute(&mut db)
        .await
        .expect("update");
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, ha1, ha1_realm, roles, generation, created_at, updated_at) \
         SELECT 'old-row', ?, password_hash, ha1, ha1_realm, ?, 1, created_at, updated_at FROM users LIMIT 1",
    )
    .bind("old\u{1b}]0;pwned\u{7}user\nroot")
    .bind("ops\u{1b}[8m")
    .execute(&mut db)
    .await
    .expect("insert");
    db.close().await.expect("close");

    let keys = gw.cli_ok(&["key", "list"], None).await;
    let users = gw.cli_ok(&["user", "list"], None).await;
    for (what, out, rows) in [("key list", &keys, 2), ("user list", &users, 3)] {
        assert_eq!(
            out.lines().count(),
            rows,
            "{what}: one line per row: {out:?}"
        );
        assert!(
            !out.chars()
                .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}'),
            "{what} prints raw control or bidi characters: {out:?}"
        );
        assert!(out.contains("\\u{1b}"), "{what} shows ESC escaped: {out:?}");
    }
    assert!(keys.contains("x\\u{1b}[2J\\n00000000-0000-0000-0000-000000000000\\tadmin\\u{202e}"));
    assert!(users.contains("old\\u{1b}]0;pwned\\u{7}user\\nroot\tops\\u{1b}[8m"));
}
