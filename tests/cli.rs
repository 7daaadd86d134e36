//! The command line: `check-config`, `user ...`, `token issue`, `--config`
//! placement, and CLI changes reaching a running gateway.

mod common;

use std::process::Output;

use common::*;
use serde_json::json;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Non-zero exit with exactly one non-empty line on stderr.
fn assert_one_line_error(out: &Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what}: expected failure, got success; stdout {:?}",
        stdout(out)
    );
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected a one-line error on stderr, got {err:?}"
    );
}

// --- check-config -----------------------------------------------------------

/// A prepared (not started) gateway dir whose config is valid.
fn prepared() -> Gateway {
    Gateway::prepare(GatewayOptions::new("http://127.0.0.1:9"))
}

async fn check_config(gw: &Gateway, config: &std::path::Path) -> Output {
    run_bin(
        gw.dir(),
        vec![
            "check-config".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        None,
        Vec::new(),
    )
    .await
}

/// The valid generated config with `from` replaced by `to` (must occur).
fn variant(gw: &Gateway, name: &str, from: &str, to: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    assert!(text.contains(from), "{from:?} not in the generated config");
    write_file(gw.dir(), name, &text.replacen(from, to, 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_accepts_a_valid_config() {
    let gw = prepared();
    let out = check_config(&gw, gw.config_path()).await;
    assert!(out.status.success(), "valid config: {}", out_text(&out));
    assert!(
        stdout(&out).contains("config OK"),
        "prints `config OK`: {}",
        out_text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_rejects_broken_configs_naming_the_key() {
    let gw = prepared();
    let short = write_file(gw.dir(), "short.secret", "only-20-bytes-long!!\n");
    let short_secret = std::fs::read_to_string(gw.config_path())
        .unwrap()
        .lines()
        .find(|l| l.starts_with("secret_file"))
        .unwrap()
        .to_string();
    let cases: Vec<(&str, std::path::PathBuf, &str)> = vec![
        (
            "unknown key",
            variant(
                &gw,
                "unknown.toml",
                "[server]\n",
                "[server]\nbogus_knob = 1\n",
            ),
            "bogus_knob",
        ),
        (
            "secret shorter than 32 bytes",
            variant(
                &gw,
                "short.toml",
                &short_secret,
                &format!("secret_file = \"{}\"", short.display()),
            ),
            "secret_file",
        ),
        (
            "secret file missing",
            variant(
                &gw,
                "missing.toml",
                &short_secret,
                &format!(
                    "secret_file = \"{}\"",
                    gw.dir().join("no-such.secret").display()
                ),
            ),
            "secret_file",
        ),
        (
            "route auth neither required nor public",
            variant(
                &gw,
                "auth.toml",
                "auth = \"required\"",
                "auth = \"sometimes\"",
            ),
            "auth",
        ),
        (
            "route upstream not a URL",
            variant(
                &gw,
                "upstream.toml",
                "upstream = \"http://127.0.0.1:9\"",
                "upstream = \"not a url\"",
            ),
            "upstream",
        ),
        (
            "TLS certificate file missing",
            variant(
                &gw,
                "tls.toml",
                "[store]\n",
                &format!(
                    "[server.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n\n[store]\n",
                    gw.dir().join("nope-cert.pem").display(),
                    gw.dir().join("nope-key.pem").display()
                ),
            ),
            "cert",
        ),
        (
            "invalid TOML",
            variant(&gw, "syntax.toml", "[server]\n", "[server\n"),
            "",
        ),
    ];
    for (what, path, key) in cases {
        let out = check_config(&gw, &path).await;
        let text = out_text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: check-config must exit 1; printed {text:?}"
        );
        assert!(!text.trim().is_empty(), "{what}: prints the problem");
        assert!(
            text.contains(key),
            "{what}: the problem must name `{key}`; printed {text:?}"
        );
        assert!(!text.contains("config OK"), "{what}: printed config OK");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_prints_every_problem_on_its_own_line() {
    let gw = prepared();
    let short = write_file(gw.dir(), "short.secret", "tiny\n");
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    let secret_line = text
        .lines()
        .find(|l| l.starts_with("secret_file"))
        .unwrap()
        .to_string();
    let text = text
        .replacen(
            &secret_line,
            &format!("secret_file = \"{}\"", short.display()),
            1,
        )
        .replacen(
            "upstream = \"http://127.0.0.1:9\"",
            "upstream = \"not a url\"",
            1,
        );
    let path = write_file(gw.dir(), "two-problems.toml", &text);
    let out = check_config(&gw, &path).await;
    let printed = out_text(&out);
    assert_eq!(out.status.code(), Some(1), "printed {printed:?}");
    let secret_lines = printed
        .lines()
        .filter(|l| l.contains("secret_file"))
        .count();
    let upstream_lines = printed
        .lines()
        .filter(|l| l.contains("upstream") && !l.contains("secret_file"))
        .count();
    assert!(
        secret_lines >= 1 && upstream_lines >= 1,
        "both problems, each on its own line; printed {printed:?}"
    );
}

/// Every unknown key is its own `<dotted.path>: unknown key` line, with a
/// suggestion from the known keys at that level when one is close, and the
/// other problems of the same config are still listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_lists_every_unknown_key_with_a_suggestion() {
    let gw = prepared();
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    let text = text
        .replacen(
            "[server]\n",
            "[server]\nlisten_adress = 1\nqqqqqqq = 2\n",
            1,
        )
        .replacen("[[route]]\n", "[[route]]\nupstrem = \"x\"\n", 1)
        .replacen(
            "upstream = \"http://127.0.0.1:9\"",
            "upstream = \"not a url\"",
            1,
        );
    let text = format!("lmits = 3\n{text}\n[limits]\nmax_body_byte = 5\n");
    let path = write_file(gw.dir(), "unknown-keys.toml", &text);
    let out = check_config(&gw, &path).await;
    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "printed {printed:?}");
    let mut unknown: Vec<&str> = printed
        .lines()
        .filter(|l| l.contains("unknown key"))
        .collect();
    unknown.sort_unstable();
    assert_eq!(
        unknown,
        vec![
            "limits.max_body_byte: unknown key (did you mean limits.max_body_bytes?)",
            "lmits: unknown key (did you mean limits?)",
            "route[0].upstrem: unknown key (did you mean route[0].upstream?)",
            "server.listen_adress: unknown key",
            "server.qqqqqqq: unknown key",
        ],
        "printed {printed:?}"
    );
    assert!(
        !printed.contains("TOML parse error") && !printed.contains(" | "),
        "one line per problem, no parser excerpt: {printed:?}"
    );
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("route[0].upstream: ") && l.contains("not a url")),
        "the other problem is listed too: {printed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_flag_goes_before_or_after_the_subcommand_and_beats_the_env() {
    let gw = prepared();
    let good = gw.config_path().display().to_string();
    let broken = variant(&gw, "broken.toml", "[server]\n", "[server]\nbogus = 1\n")
        .display()
        .to_string();
    let run = |args: Vec<&str>, env: Vec<(String, String)>| {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        run_bin(gw.dir(), args, None, env)
    };
    let out = run(vec!["--config", &good, "check-config"], vec![]).await;
    assert!(out.status.success(), "before: {}", out_text(&out));
    let out = run(vec!["check-config", "--config", &good], vec![]).await;
    assert!(out.status.success(), "after: {}", out_text(&out));
    let out = run(
        vec!["check-config"],
        vec![("AUTHGATE_CONFIG".into(), good.clone())],
    )
    .await;
    assert!(out.status.success(), "env: {}", out_text(&out));
    let out = run(
        vec!["check-config"],
        vec![("AUTHGATE_CONFIG".into(), broken.clone())],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "env names the broken config");
    let out = run(
        vec!["check-config", "--config", &good],
        vec![("AUTHGATE_CONFIG".into(), broken.clone())],
    )
    .await;
    assert!(out.status.success(), "--config wins: {}", out_text(&out));
}

// --- users and tokens ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_list_remove() {
    let gw = prepared();
    let alice = unique("alice");
    let bob = unique("bob");
    gw.add_user(&alice, &random_password(), &["admin", "ops"])
        .await;
    gw.add_user(&bob, &random_password(), &[]).await;

    let dup = gw
        .cli(
            &["user", "add", &alice, "--password-stdin"],
            Some("whatever\n"),
        )
        .await;
    assert_one_line_error(&dup, "duplicate user add");

    let list = gw.cli_ok(&["user", "list"], None).await;
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines.len() >= 3, "header plus two users: {list:?}");
    let row = |name: &str| -> Vec<String> {
        lines
            .iter()
            .skip(1)
            .map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>())
            .find(|cols| cols[0] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {list:?}"))
    };
    let a = row(&alice);
    assert_eq!(a.len(), 3, "NAME<TAB>ROLES<TAB>CREATED: {a:?}");
    assert_eq!(roles_of(&a[1]), vec!["admin", "ops"], "roles: {a:?}");
    assert!(is_rfc3339_utc(&a[2]), "created is RFC 3339: {:?}", a[2]);
    let b = row(&bob);
    assert_eq!(b[1], "", "no roles: {b:?}");

    let out = gw.cli_ok(&["user", "remove", &alice], None).await;
    assert_eq!(out.trim(), format!("removed user {alice}"));
    let list = gw.cli_ok(&["user", "list"], None).await;
    assert!(
        !list
            .lines()
            .skip(1)
            .any(|l| l.split('\t').next() == Some(alice.as_str())),
        "removed user still listed: {list:?}"
    );
    let again = gw.cli(&["user", "remove", &alice], None).await;
    assert_one_line_error(&again, "removing a missing user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_stdin_strips_one_trailing_newline() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let (a, b) = (unique("lf"), unique("crlf"));
    let pa = random_password();
    let pb = random_password();
    let out = gw
        .cli_ok(
            &["user", "add", &a, "--password-stdin"],
            Some(&format!("{pa}\n")),
        )
        .await;
    assert_eq!(out.trim(), format!("created user {a}"));
    gw.cli_ok(
        &["user", "add", &b, "--password-stdin"],
        Some(&format!("{pb}\r\n")),
    )
    .await;
    login_ok(&gw, &a, &pa).await;
    login_ok(&gw, &b, &pb).await;
    login(&gw, &a, &format!("{pa}\n"))
        .await
        .expect_401("INVALID_CREDENTIALS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_creates_the_store_when_missing() {
    let upstream = Upstream::start().await;
    let gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    let nested = gw.dir().join("deep").join("er").join("store.db");
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    let url_line = text.lines().find(|l| l.starts_with("url = ")).unwrap();
    let text = text.replacen(
        url_line,
        &format!("url = \"sqlite://{}\"", nested.display()),
        1,
    );
    std::fs::write(gw.config_path(), text).unwrap();
    assert!(!nested.exists());
    gw.add_user(&unique("first"), &random_password(), &[]).await;
    assert!(nested.exists(), "the store file was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_issue_prints_a_working_jwt() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("tok");
    gw.add_user(&user, &random_password(), &["ops"]).await;

    let out = gw
        .cli_ok(&["token", "issue", "--user", &user, "--ttl", "120"], None)
        .await;
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "only the JWT on stdout: {out:?}");
    let token = lines[0].trim();
    let claims = jwt_claims(token);
    assert_eq!(claims["sub"], user.as_str());
    assert_eq!(claims["roles"], json!(["ops"]));
    let exp = claims["exp"].as_i64().unwrap();
    assert!(
        (exp - (now_secs() + 120)).abs() <= 60,
        "--ttl 120 gives exp ≈ now + 120, got {exp}"
    );
    get(&gw.url("/t"), Some(token), &[])
        .await
        .expect_status(200);
    assert_eq!(
        upstream.last().header("x-auth-user").as_deref(),
        Some(user.as_str())
    );

    // Default TTL is jwt.ttl.
    let token = gw.issue_token(&user).await;
    let exp = jwt_claims(&token)["exp"].as_i64().unwrap();
    assert!((exp - (now_secs() + 604_800)).abs() <= 60, "exp {exp}");

    let out = gw
        .cli(&["token", "issue", "--user", &unique("nobody")], None)
        .await;
    assert_one_line_error(&out, "token for an unknown user");
    assert!(
        out.stdout.is_empty(),
        "no token printed for an unknown user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_nonzero_with_one_line() {
    let gw = prepared();
    let ghost = unique("ghost");
    let out = gw
        .cli(&["user", "passwd", &ghost, "--password-stdin"], Some("x\n"))
        .await;
    assert_one_line_error(&out, "passwd for an unknown user");
    let out = gw.cli(&["key", "create", "--user", &ghost], None).await;
    assert_one_line_error(&out, "key for an unknown user");
    let out = gw.cli(&["key", "revoke", "not-a-uuid"], None).await;
    assert_one_line_error(&out, "revoke a non-UUID");
    let out = gw
        .cli(
            &["key", "revoke", "6f1c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f"],
            None,
        )
        .await;
    assert_one_line_error(&out, "revoke an unknown key");
}

/// `authgate_cache_tokens` from `/metrics`.
async fn cached_tokens(gw: &Gateway) -> u64 {
    let text = get(&gw.url("/metrics"), None, &[]).await.text();
    text.lines()
        .find_map(|line| line.strip_prefix("authgate_cache_tokens "))
        .and_then(|value| value.trim().parse().ok())
        .expect("authgate_cache_tokens in /metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_empty_the_verified_token_cache_for_their_user_or_token() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let (leaving, staying) = (unique("leaving"), unique("staying"));
    let password = random_password();
    gw.add_user(&leaving, &password, &[]).await;
    gw.add_user(&staying, &password, &[]).await;
    // Adding a user is a change in the log too (it clears negative cache
    // entries); let those arrive before filling the cache.
    tokio::time::sleep(PROPAGATION).await;
    let leaving_tokens = [
        login_ok(&gw, &leaving, &password).await,
        login_ok(&gw, &leaving, &password).await,
    ];
    let staying_tokens = [
        login_ok(&gw, &staying, &password).await,
        login_ok(&gw, &staying, &password).await,
    ];
    for token in leaving_tokens.iter().chain(&staying_tokens) {
        get(&gw.url("/p"), Some(token), &[])
            .await
            .expect_status(200);
    }
    assert_eq!(cached_tokens(&gw).await, 4);

    // A password change made by another process arrives through the change
    // log and takes all of that user's tokens out of the cache.
    gw.cli_ok(
        &["user", "passwd", &leaving, "--password-stdin"],
        Some(&format!("{}\n", random_password())),
    )
    .await;
    let emptied = poll_until(PROPAGATION, || async { cached_tokens(&gw).await == 2 }).await;
    assert!(
        emptied,
        "the user's tokens are still cached after `user passwd`"
    );
    for token in &leaving_tokens {
        get(&gw.url("/p"), Some(token), &[])
            .await
            .expect_invalid_token();
    }
    for token in &staying_tokens {
        get(&gw.url("/p"), Some(token), &[])
            .await
            .expect_status(200);
    }

    // A logout takes out that one token.
    post_json(
        &gw.url("/auth/logout"),
        Some(&staying_tokens[0]),
        &json!({}),
    )
    .await
    .expect_status(200);
    assert_eq!(cached_tokens(&gw).await, 1);
    get(&gw.url("/p"), Some(&staying_tokens[1]), &[])
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_passwd_stops_old_password_and_tokens_within_3s() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("pw");
    let old = random_password();
    let new = random_password();
    gw.add_user(&user, &old, &[]).await;
    let old_token = login_ok(&gw, &user, &old).await;
    // Use it first, so any cache in the gateway holds it.
    get(&gw.url("/p"), Some(&old_token), &[])
        .await
        .expect_status(200);

    let out = gw
        .cli_ok(
            &["user", "passwd", &user, "--password-stdin"],
            Some(&format!("{new}\n")),
        )
        .await;
    assert_eq!(out.trim(), format!("password changed for {user}"));
    let url = gw.url("/p");
    let refused = poll_until(PROPAGATION, || {
        let url = url.clone();
        let t = old_token.clone();
        async move { get(&url, Some(&t), &[]).await.status == 401 }
    })
    .await;
    assert!(
        refused,
        "a token from before `user passwd` still works after 3 s"
    );
    get(&gw.url("/p"), Some(&old_token), &[])
        .await
        .expect_invalid_token();

    login(&gw, &user, &old)
        .await
        .expect_401("INVALID_CREDENTIALS");
    let fresh = login_ok(&gw, &user, &new).await;
    get(&gw.url("/p"), Some(&fresh), &[])
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_remove_stops_tokens_within_3s() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let user = unique("gone");
    let other = unique("stays");
    let pw = random_password();
    gw.add_user(&user, &pw, &[]).await;
    gw.add_user(&other, &random_password(), &[]).await;
    let token = login_ok(&gw, &user, &pw).await;
    let other_token = gw.issue_token(&other).await;
    get(&gw.url("/r"), Some(&token), &[])
        .await
        .expect_status(200);

    gw.cli_ok(&["user", "remove", &user], None).await;
    let url = gw.url("/r");
    let refused = poll_until(PROPAGATION, || {
        let url = url.clone();
        let t = token.clone();
        async move { get(&url, Some(&t), &[]).await.status == 401 }
    })
    .await;
    assert!(refused, "a removed user's token still works after 3 s");
    login(&gw, &user, &pw)
        .await
        .expect_401("INVALID_CREDENTIALS");
    get(&gw.url("/r"), Some(&other_token), &[])
        .await
        .expect_status(200);
}

/// `${VAR}` and `${VAR:-default}` in config values come from the
/// environment; a missing one is a `check-config` problem naming it, and
/// a value holding TOML syntax stays a plain value.
#[tokio::test]
async fn config_values_read_environment_variables() {
    let gw = prepared();
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    let templated = text
        .replacen(
            "issuer = \"authgate\"",
            "issuer = \"${AUTHGATE_TEST_ISSUER}\"",
            1,
        )
        .replacen(
            "realm = \"voximplant.com\"",
            "realm = \"${AUTHGATE_TEST_REALM:-voximplant.com}\"",
            1,
        );
    assert_ne!(templated, text, "the generated config has both keys");
    let config = write_file(gw.dir(), "templated.toml", &templated);
    let run = |envs: Vec<(String, String)>| {
        run_bin(
            gw.dir(),
            vec![
                "check-config".into(),
                "--config".into(),
                config.display().to_string(),
            ],
            None,
            envs,
        )
    };

    let missing = run(Vec::new()).await;
    assert!(!missing.status.success());
    assert!(
        stdout(&missing)
            .contains("jwt.issuer: environment variable AUTHGATE_TEST_ISSUER is not set"),
        "{}",
        stdout(&missing)
    );
    let set = run(vec![(
        "AUTHGATE_TEST_ISSUER".into(),
        "issuer\" = \"x".into(),
    )])
    .await;
    assert!(set.status.success(), "{}{}", stdout(&set), stderr(&set));
}
