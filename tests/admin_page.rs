//! `/_authgate/`: the admin page is served by the gateway itself, with a
//! strict Content-Security-Policy, and never reaches a route's upstream.
//! The page's behaviour is tested in a real browser by `tests/browser/`.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_scripts_are_served_with_a_strict_policy() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;

    let page = get(&gw.url("/_authgate/"), None, &[]).await;
    page.expect_status(200);
    let content_type = page.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.text().contains("<!doctype html>"), "{}", page.text());
    let csp = page
        .header("content-security-policy")
        .expect("the page carries a Content-Security-Policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(
        page.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        page.header("referrer-policy").as_deref(),
        Some("no-referrer")
    );

    let script = get(&gw.url("/_authgate/app.js"), None, &[]).await;
    script.expect_status(200);
    let content_type = script.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    assert!(script.header("content-security-policy").is_some());

    let bare = get(&gw.url("/_authgate"), None, &[]).await;
    bare.expect_status(308);
    assert_eq!(bare.header("location").as_deref(), Some("/_authgate/"));

    get(&gw.url("/_authgate/missing.js"), None, &[])
        .await
        .expect_error(404, "NOT_FOUND", "RESOURCE_NOT_FOUND");

    // The route for "/" does not shadow the reserved prefix.
    assert_eq!(
        upstream.count(),
        0,
        "the upstream saw {:?}",
        upstream.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tells_the_page_who_is_signed_in() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let admin = unique("root");
    let password = random_password();
    gw.add_user(&admin, &password, &["admin"]).await;

    get(&gw.url("/_authgate/session"), None, &[])
        .await
        .expect_401("AUTHENTICATION_REQUIRED");

    let token = login_ok(&gw, &admin, &password).await;
    let cookie = format!("token={token}");
    let answer = get(&gw.url("/_authgate/session"), None, &[("cookie", &cookie)]).await;
    answer.expect_status(200);
    let v = answer.json();
    assert_eq!(v["username"], admin.as_str(), "{v}");
    assert_eq!(v["admin"], true, "{v}");
    assert_eq!(v["roles"], serde_json::json!(["admin"]), "{v}");
    assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"));
}
