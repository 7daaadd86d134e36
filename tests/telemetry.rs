//! OpenTelemetry traces (contract, "Identity for the upstream, traces and
//! audit", `[telemetry]`): spans received by a real OTLP/HTTP receiver that
//! decodes with the official definitions (PyPI `opentelemetry-proto`,
//! `tests/upstreams/otlp_receiver.py`), W3C `traceparent` continued and
//! passed to the upstream, and a collector that hangs never slowing
//! requests.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::pyserver::{PyServer, venv_program};
use common::*;
use serde_json::Value;

/// The receiver and the file it writes one JSON line per span to; `None`
/// (skipped) outside CI when the setup script has not installed it.
async fn receiver() -> Option<(PyServer, tempfile::TempDir, PathBuf)> {
    let python = venv_program("python")?;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spans.jsonl");
    let server = PyServer::start(
        &python,
        &["otlp_receiver.py", "{port}"],
        &[("OTLP_OUT", out.to_str().unwrap())],
    )
    .await;
    Some((server, dir, out))
}

fn spans(out: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// Waits until the receiver has a span matching `pred`; returns them all.
async fn wait_for_span(out: &PathBuf, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = spans(out);
        if all.iter().any(&pred) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "no such span; received: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn telemetry_toml(endpoint: &str, ratio: &str) -> String {
    format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"gw-under-test\"\nsample_ratio = {ratio}\n"
    )
}

async fn traced_gateway(upstream: &Upstream, endpoint: &str, ratio: &str) -> Gateway {
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = telemetry_toml(endpoint, ratio);
    Gateway::start_with(opts).await
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// Every attribute value of every span, as text.
fn all_attribute_text(spans: &[Value]) -> String {
    let mut text = String::new();
    for span in spans {
        text.push_str(&span["attributes"].to_string());
        text.push_str(&span["resource"].to_string());
        text.push_str(span["name"].as_str().unwrap_or_default());
        text.push_str(span["trace_state"].as_str().unwrap_or_default());
    }
    text
}

const CLIENT_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_follow_the_http_conventions_continue_the_client_trace_and_hold_no_credential() {
    let Some((_receiver, _dir, out)) = receiver().await else {
        return;
    };
    let upstream = Upstream::start().await;
    let gw = traced_gateway(&upstream, &_receiver.url(), "1.0").await;
    let user = unique("otel");
    let password = random_password();
    gw.add_user(&user, &password, &[]).await;
    let token = gw.issue_token(&user).await;
    let (_id, key) = gw.create_key_cli(&user, &[]).await;

    // A JWT, with the client's trace.
    get(
        &gw.url("/orders/1?page=2"),
        Some(&token),
        &[("traceparent", CLIENT_PARENT), ("tracestate", "vendor=abc")],
    )
    .await
    .expect_status(200);
    let seen = upstream.last();
    let sent = seen.header("traceparent").expect("traceparent upstream");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(parts[0], "00");
    assert_eq!(
        parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
        "the client's trace"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "the gateway's own span");
    assert_eq!(parts[3], "01");
    assert_eq!(seen.header("tracestate").as_deref(), Some("vendor=abc"));

    // An access key in the query, a wrong password, a wrong token.
    get(&gw.url(&format!("/keyed?accesskey={key}&x=1")), None, &[])
        .await
        .expect_status(200);
    post_json(
        &gw.url("/auth/login"),
        None,
        &serde_json::json!({"username": user, "password": format!("{password}x")}),
    )
    .await;
    let wrong = format!("{token}x");
    get(&gw.url("/denied"), Some(&wrong), &[])
        .await
        .expect_status(401);

    let all = wait_for_span(&out, |s| attr(s, "url.path") == "/denied").await;
    let server = all
        .iter()
        .find(|s| attr(s, "url.path") == "/orders/1")
        .expect("the JWT request's server span");
    assert_eq!(server["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(server["name"], "GET /");
    assert_eq!(server["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(server["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(server["trace_state"], "vendor=abc");
    assert_eq!(server["resource"]["service.name"], "gw-under-test");
    assert_eq!(attr(server, "http.request.method"), "GET");
    assert_eq!(attr(server, "url.scheme"), "http");
    assert_eq!(attr(server, "http.response.status_code"), 200);
    assert_eq!(attr(server, "server.address"), "127.0.0.1");
    assert_eq!(attr(server, "server.port"), i64::from(gw.addr().port()));
    assert_eq!(attr(server, "network.protocol.version"), "1.1");
    assert_eq!(attr(server, "client.address"), "127.0.0.1");
    assert_eq!(attr(server, "network.peer.address"), "127.0.0.1");
    assert_eq!(attr(server, "http.route"), "/");
    assert_eq!(attr(server, "authgate.route"), "/");
    assert_eq!(attr(server, "authgate.auth.method"), "jwt");
    assert_eq!(attr(server, "authgate.outcome"), "authenticated");
    assert!(server["end"].as_u64() >= server["start"].as_u64());

    // Its upstream attempt: a child client span, whose id the upstream got.
    let attempt = all
        .iter()
        .find(|s| s["parent_span_id"] == server["span_id"])
        .expect("the upstream attempt's span");
    assert_eq!(attempt["kind"], 3, "SPAN_KIND_CLIENT");
    assert_eq!(attempt["span_id"], parts[2]);
    assert_eq!(attempt["trace_id"], server["trace_id"]);
    assert_eq!(attr(attempt, "http.request.method"), "GET");
    assert_eq!(attr(attempt, "http.response.status_code"), 200);
    assert_eq!(
        attr(attempt, "url.full"),
        &Value::from(format!("{}/orders/1", upstream.url()))
    );

    let keyed = all
        .iter()
        .find(|s| attr(s, "url.path") == "/keyed")
        .expect("the access-key request's span");
    assert_eq!(attr(keyed, "authgate.auth.method"), "accesskey");
    assert_eq!(keyed["parent_span_id"], "", "a new trace");
    let denied = all
        .iter()
        .find(|s| attr(s, "url.path") == "/denied")
        .unwrap();
    assert_eq!(attr(denied, "http.response.status_code"), 401);
    assert_eq!(attr(denied, "authgate.outcome"), "rejected");
    assert_eq!(attr(denied, "authgate.reason"), "INVALID_CREDENTIALS");
    let login = wait_for_span(&out, |s| attr(s, "url.path") == "/auth/login").await;
    assert!(
        login.iter().any(|s| attr(s, "authgate.route") == "login"),
        "{login:#?}"
    );

    // No credential in any attribute of any span.
    let all = spans(&out);
    let text = all_attribute_text(&all);
    for secret in [
        token.as_str(),
        key.as_str(),
        password.as_str(),
        wrong.as_str(),
    ] {
        assert!(!text.contains(secret), "a credential in a span: {text}");
    }
    assert!(!text.contains("accesskey="), "no query in any span: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_starts_a_new_trace_and_unsampled_traces_are_not_exported() {
    let Some((receiver, _dir, out)) = receiver().await else {
        return;
    };
    let upstream = Upstream::start().await;
    let gw = traced_gateway(&upstream, &receiver.url(), "1").await;

    for forged in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "garbage",
    ] {
        get(
            &gw.url("/public/forged"),
            None,
            &[("traceparent", forged), ("tracestate", "vendor=abc")],
        )
        .await
        .expect_status(200);
        let seen = upstream.last();
        let sent = seen.header("traceparent").expect("a traceparent upstream");
        let fields: Vec<&str> = sent.split('-').collect();
        assert_eq!(fields.len(), 4, "{sent}");
        assert_eq!(fields[0], "00");
        assert!(
            fields[1].len() == 32
                && fields[1]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && fields[1] != "0".repeat(32),
            "{sent}"
        );
        assert_ne!(
            fields[1], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{forged}: a new trace"
        );
        assert_eq!(fields[2].len(), 16, "{sent}");
        assert_eq!(fields[3], "01", "sampled at ratio 1");
        assert!(
            !seen.has_header("tracestate"),
            "tracestate goes only with a valid traceparent"
        );
    }

    // The client did not sample: the gateway records nothing but passes
    // the decision on; a tracestate over 512 bytes is dropped.
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let long_state = format!("k={}", "v".repeat(600));
    get(
        &gw.url("/public/unsampled"),
        None,
        &[("traceparent", unsampled), ("tracestate", &long_state)],
    )
    .await
    .expect_status(200);
    let seen = upstream.last();
    let sent = seen.header("traceparent").unwrap();
    assert!(
        sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && sent.ends_with("-00"),
        "{sent}"
    );
    assert!(!sent.contains("b7ad6b7169203331"), "{sent}");
    assert!(!seen.has_header("tracestate"), "over 512 bytes");
    get(&gw.url("/public/after"), None, &[])
        .await
        .expect_status(200);
    let all = wait_for_span(&out, |s| attr(s, "url.path") == "/public/after").await;
    assert!(
        all.iter()
            .all(|s| s["trace_id"] != "0af7651916cd43dd8448eb211c80319c"),
        "an unsampled trace is not exported"
    );
    assert_eq!(
        all.iter()
            .filter(|s| attr(s, "url.path") == "/public/forged")
            .count(),
        4
    );
}

/// A collector that accepts connections and never answers.
async fn hanging_collector() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

fn counter(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// `requests` GETs of `/public/...` on 8 connections at once; the
/// latencies, sorted, and the time it all took.
async fn load(gw: &Gateway, requests: usize) -> (Vec<Duration>, Duration) {
    let client = client();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let client = client.clone();
        let url = gw.url(&format!("/public/w{worker}"));
        tasks.spawn(async move {
            let mut took = Vec::new();
            for _ in 0..requests / 8 {
                let one = Instant::now();
                let status = client.get(&url).send().await.unwrap().status();
                assert_eq!(status, 200);
                took.push(one.elapsed());
            }
            took
        });
    }
    let mut latencies = Vec::with_capacity(requests);
    while let Some(took) = tasks.join_next().await {
        latencies.extend(took.unwrap());
    }
    latencies.sort();
    (latencies, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_hangs_never_slows_requests_and_the_queue_stays_bounded() {
    let (collector, _task) = hanging_collector().await;
    let upstream = Upstream::start().await;
    // The same load without tracing first: the normal latency here.
    let (baseline, _) = {
        let plain = Gateway::start_with(GatewayOptions::new(&upstream.url())).await;
        load(&plain, 400).await
    };
    let normal = baseline[baseline.len() / 2];
    let gw = traced_gateway(&upstream, &collector, "1.0").await;

    // More requests than the queue (1024 requests' spans) and one batch
    // (512 spans) hold: the export of the first batch hangs for its 10 s
    // timeout meanwhile. Each request has two spans (server, upstream).
    let requests = 1024 + 512 + 300;
    let (latencies, total) = load(&gw, requests).await;
    let median = latencies[latencies.len() / 2];
    let worst = latencies[latencies.len() - 1];
    eprintln!(
        "without tracing: median {normal:?}; with a hanging collector: {} requests in {total:?}, median {median:?}, worst {worst:?}",
        latencies.len()
    );
    assert!(
        median < normal * 4 + Duration::from_millis(20),
        "median {median:?}, {normal:?} without tracing"
    );
    // A request that waited for the collector would take its 10 s
    // timeout at least.
    assert!(worst < Duration::from_secs(3), "worst {worst:?}");

    let metrics = get(&gw.url("/metrics"), None, &[]).await.text();
    let dropped = counter(&metrics, "authgate_trace_spans_total{result=\"dropped\"}");
    let spans = 2 * latencies.len() as u64;
    let held = 2 * 1024 + 512 + 2;
    eprintln!("spans dropped: {dropped} of {spans}");
    assert!(
        dropped >= spans - held && dropped <= spans,
        "only what the queue and one batch hold may wait; dropped {dropped} of {spans}:\n{metrics}"
    );
    assert_eq!(
        counter(&metrics, "authgate_trace_spans_total{result=\"exported\"}"),
        0
    );

    // Shutting down waits for the hanging collector 3 s at most.
    let mut gw = gw;
    let stopping = Instant::now();
    gw.sigterm();
    let status = gw.wait_exit(Duration::from_secs(15)).await;
    let took = stopping.elapsed();
    eprintln!("shutdown with a hanging collector took {took:?}");
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[tokio::test]
async fn check_config_refuses_malformed_endpoints_and_ratios_outside_0_to_1() {
    for (endpoint, ratio, expected) in [
        ("127.0.0.1:4318", "1.0", "telemetry.otlp_endpoint"),
        ("ftp://collector:4318", "1.0", "telemetry.otlp_endpoint"),
        (
            "http://collector:4318/?token=x",
            "1.0",
            "telemetry.otlp_endpoint",
        ),
        (
            "http://user:pw@collector:4318",
            "1.0",
            "telemetry.otlp_endpoint",
        ),
        ("http://", "1.0", "telemetry.otlp_endpoint"),
        ("http://collector:4318", "1.5", "telemetry.sample_ratio"),
        ("http://collector:4318", "-0.1", "telemetry.sample_ratio"),
        ("http://collector:4318", "2", "telemetry.sample_ratio"),
        ("http://collector:4318", "nan", "telemetry.sample_ratio"),
    ] {
        let mut opts = GatewayOptions::new("http://127.0.0.1:9");
        opts.extra_toml = telemetry_toml(endpoint, ratio);
        let gw = Gateway::prepare(opts);
        let out = gw.cli(&["check-config"], None).await;
        let text = out_text(&out);
        assert!(!out.status.success(), "{endpoint} {ratio}: {text}");
        assert!(text.contains(expected), "{endpoint} {ratio}: {text}");
        assert!(!text.contains("pw@"), "no credential echoed: {text}");
    }
    for (endpoint, ratio) in [
        ("https://collector.example/otlp/", "0"),
        ("http://[::1]:4318", "0.25"),
    ] {
        let mut opts = GatewayOptions::new("http://127.0.0.1:9");
        opts.extra_toml = telemetry_toml(endpoint, ratio);
        let gw = Gateway::prepare(opts);
        let out = gw.cli(&["check-config"], None).await;
        assert!(
            out.status.success(),
            "{endpoint} {ratio}: {}",
            out_text(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_attempt_is_its_own_span_retries_included() {
    let Some((receiver, _dir, out)) = receiver().await else {
        return;
    };
    let live = Upstream::start().await;
    let mut opts = GatewayOptions::new(&live.url());
    opts.extra_toml = format!(
        "{}[[route]]\npath_prefix = \"/pool\"\nauth = \"public\"\nupstreams = [\"{}\", \"{}\"]\n",
        telemetry_toml(&receiver.url(), "1.0"),
        closed_port_url(),
        live.url()
    );
    let gw = Gateway::start_with(opts).await;
    // Members take turns: one of two requests goes to the closed port
    // first, and is tried once more on the live member.
    for n in 0..2 {
        get(&gw.url(&format!("/pool/{n}")), None, &[])
            .await
            .expect_status(200);
    }
    let retried = live
        .requests()
        .into_iter()
        .map(|r| r.header("traceparent").unwrap())
        .collect::<Vec<_>>();
    let all = wait_for_span(&out, |s| {
        attr(s, "http.request.resend_count") == 1 && attr(s, "http.response.status_code") == 200
    })
    .await;
    let second = all
        .iter()
        .find(|s| attr(s, "http.request.resend_count") == 1)
        .unwrap();
    let first = all
        .iter()
        .find(|s| {
            s["parent_span_id"] == second["parent_span_id"] && attr(s, "error.type") == "connect"
        })
        .expect("the refused attempt's span, under the same server span");
    assert_eq!(first["kind"], 3);
    assert_eq!(first["status_code"], 2, "STATUS_CODE_ERROR");
    assert_ne!(first["span_id"], second["span_id"]);
    let server = all
        .iter()
        .find(|s| s["span_id"] == second["parent_span_id"])
        .expect("their server span");
    assert_eq!(attr(server, "http.response.status_code"), 200);
    // The live upstream saw the retry's own span as its parent.
    let second_id = second["span_id"].as_str().unwrap();
    assert!(
        retried.iter().any(|sent| sent.contains(second_id)),
        "{retried:?} vs {second_id}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_telemetry_the_client_traceparent_passes_untouched_and_a_reload_turns_tracing_on() {
    let Some((receiver, _dir, out)) = receiver().await else {
        return;
    };
    let upstream = Upstream::start().await;
    let mut gw = Gateway::start_with(GatewayOptions::new(&upstream.url())).await;
    get(
        &gw.url("/public/off"),
        None,
        &[("traceparent", CLIENT_PARENT), ("tracestate", "vendor=abc")],
    )
    .await
    .expect_status(200);
    let seen = upstream.last();
    assert_eq!(seen.header("traceparent").as_deref(), Some(CLIENT_PARENT));
    assert_eq!(seen.header("tracestate").as_deref(), Some("vendor=abc"));

    let mut opts = gw.options().clone();
    opts.extra_toml = telemetry_toml(&receiver.url(), "1.0");
    let reloads = gw.log_count("configuration reloaded");
    gw.set_options(opts);
    gw.sighup();
    assert!(
        gw.wait_for_log(
            "configuration reloaded",
            reloads + 1,
            Duration::from_secs(15)
        )
        .await,
        "{}",
        gw.logs()
    );
    get(
        &gw.url("/public/on"),
        None,
        &[("traceparent", CLIENT_PARENT)],
    )
    .await
    .expect_status(200);
    let sent = upstream.last().header("traceparent").unwrap();
    assert_ne!(sent, CLIENT_PARENT, "the gateway's span now");
    let all = wait_for_span(&out, |s| attr(s, "url.path") == "/public/on").await;
    assert!(all.iter().all(|s| attr(s, "url.path") != "/public/off"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_ratio_0_new_traces_are_not_recorded_but_a_sampled_client_trace_is() {
    let Some((receiver, _dir, out)) = receiver().await else {
        return;
    };
    let upstream = Upstream::start().await;
    let gw = traced_gateway(&upstream, &receiver.url(), "0").await;
    get(&gw.url("/public/new"), None, &[])
        .await
        .expect_status(200);
    let sent = upstream.last().header("traceparent").unwrap();
    assert!(sent.starts_with("00-") && sent.ends_with("-00"), "{sent}");
    let new_trace = sent.split('-').nth(1).unwrap().to_owned();
    // Parent-based: the client sampled its trace, so it is recorded.
    get(
        &gw.url("/public/followed"),
        None,
        &[("traceparent", CLIENT_PARENT)],
    )
    .await
    .expect_status(200);
    assert!(
        upstream
            .last()
            .header("traceparent")
            .unwrap()
            .ends_with("-01")
    );
    let all = wait_for_span(&out, |s| attr(s, "url.path") == "/public/followed").await;
    assert!(all.iter().all(|s| s["trace_id"] != new_trace.as_str()));
    assert!(all.iter().all(|s| attr(s, "url.path") != "/public/new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_sends_the_spans_still_queued() {
    let Some((receiver, _dir, out)) = receiver().await else {
        return;
    };
    let upstream = Upstream::start().await;
    let mut gw = traced_gateway(&upstream, &receiver.url(), "1.0").await;
    // A fresh client per request: no idle connection slows the drain.
    for n in 0..3 {
        let answer = reqwest::Client::new()
            .get(gw.url(&format!("/public/last{n}")))
            .header("connection", "close")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    gw.sigterm();
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        gw.logs()
    );
    let all = spans(&out);
    for n in 0..3 {
        let path = format!("/public/last{n}");
        assert!(
            all.iter().any(|s| attr(s, "url.path") == path.as_str()),
            "{path} lost at shutdown: {all:#?}\n{}",
            gw.logs()
        );
    }
}
