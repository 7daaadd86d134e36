//! Thread-per-core: `--workers N` runs N worker threads, each with its own
//! `SO_REUSEPORT` listener on the same address, and all of them serve.

mod common;

use std::time::Duration;

use common::*;

/// (thread name, nanoseconds on CPU) of every thread of `pid`.
fn threads(pid: libc::pid_t) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc task dir") {
        let dir = task.expect("task entry").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let on_cpu = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        out.push((name.trim().to_string(), on_cpu));
    }
    out
}

fn worker_times(pid: libc::pid_t) -> Vec<(String, u64)> {
    let mut workers: Vec<_> = threads(pid)
        .into_iter()
        .filter(|(name, _)| name.starts_with("authgate-worke"))
        .collect();
    workers.sort();
    workers
}

#[tokio::test]
async fn every_worker_accepts_and_forwards_and_shutdown_drains_them_all() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::prepare(GatewayOptions::new(&upstream.url()));
    gw.spawn_with_prelude("export AUTHGATE_WORKERS=3").await;
    gw.add_user("alice", "alice-password", &[]).await;
    let token = gw.issue_token("alice").await;

    // Workers 1 and 2 are threads of their own (the main thread is 0).
    let before = worker_times(gw.pid());
    let names: Vec<&str> = before.iter().map(|(name, _)| name.as_str()).collect();
    // comm is cut at 15 bytes: "authgate-worker-1" reads "authgate-worker".
    assert_eq!(names.len(), 2, "threads: {:?}", threads(gw.pid()));

    // Fresh connections: the kernel spreads them over the three sockets
    // by their addresses, so each worker gets some of 90.
    let head = format!(
        "GET /data/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    for _ in 0..90 {
        let response = raw_request(gw.addr(), &head, b"").await;
        assert_eq!(response.status, 200, "{response:?}");
    }
    let after = worker_times(gw.pid());
    for ((name, was), (_, is)) in before.iter().zip(&after) {
        assert!(
            is > was,
            "worker thread {name} ran no code while 90 connections came in"
        );
    }

    // Open connections on every worker, then SIGTERM: all drain, exit 0.
    let mut idle = Vec::new();
    for _ in 0..12 {
        let (status, _, stream) = raw_upgrade(
            gw.addr(),
            &format!("GET /data/y HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 200);
        idle.push(stream);
    }
    gw.sigterm();
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}; log:\n{}",
        gw.logs()
    );
}

#[tokio::test]
async fn workers_share_a_connection_budget_smaller_than_their_number() {
    // Three accept loops, two slots: a loop must not sit on a slot while
    // its socket is quiet, or connections the kernel gives another loop's
    // socket would wait for ever.
    let upstream = Upstream::start().await;
    let mut opts = GatewayOptions::new(&upstream.url());
    opts.extra_toml = "[limits]\nmax_connections = 2\n".into();
    let mut gw = Gateway::prepare(opts);
    gw.spawn_with_prelude("export AUTHGATE_WORKERS=3").await;
    let head = "GET /public/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";
    for i in 0..30 {
        let response =
            tokio::time::timeout(Duration::from_secs(5), raw_request(gw.addr(), head, b""))
                .await
                .unwrap_or_else(|_| panic!("connection {i} was never served"));
        assert_eq!(response.status, 200, "{response:?}");
    }
}
