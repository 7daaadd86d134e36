//! Black-box test harness, one file per job:
//! - `upstream`: the recording upstream (plain or TLS, one accept loop);
//! - `gateway`: the real `authgate` binary in a temporary directory, and CLI runs;
//! - `http`: requests over reqwest and fully read responses;
//! - `raw`: raw HTTP/1.1 over TCP, for heads a client library would rewrite;
//! - `tokens`: secrets, JWTs and digests computed independently of the gateway;
//! - `tls`: certificates, HTTPS and HTTP/2 clients; `pyserver`: real Python servers.
//!
//! Everything binds `127.0.0.1:0` and lives in its own `TempDir`, so tests run
//! in parallel without sharing ports or files.

// Each test file uses a different subset of the harness.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use md5::Md5;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

mod gateway;
mod http;
pub mod pyserver;
mod raw;
pub mod tls;
mod tokens;
mod upstream;

// Test files use different subsets; an unused re-export is no finding.
#[allow(unused_imports)]
pub use self::gateway::*;
#[allow(unused_imports)]
pub use self::http::*;
#[allow(unused_imports)]
pub use self::raw::*;
#[allow(unused_imports)]
pub use self::tokens::*;
#[allow(unused_imports)]
pub use self::upstream::*;

/// The gateway binary built by cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// Generous: debug builds hash with argon2 slowly and run migrations on start.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// The contract's bound for a CLI change to reach a running gateway.
pub const PROPAGATION: Duration = Duration::from_secs(3);

/// A TCP port free on 127.0.0.1 right now (bound, then released), for a
/// config that must name its own address before the process starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("probe a free port")
        .port()
}

/// The status codes of every HTTP/1.1 response in `raw`, in order.
pub fn statuses(raw: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(raw);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

/// Sends `signal` to the process `pid` (a child of the test, not yet
/// reaped); whether it was delivered.
#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
    // own unreaped child, so it names no other process.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Whether the tests run as root.
#[allow(unsafe_code)]
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Writes `text` as a config file named `name` in `dir`; returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("create parent dir");
    }
    std::fs::write(&p, text).expect("write file");
    p
}

/// Output as text: stdout and stderr joined, for messages.
pub fn out_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An RFC 3339 timestamp in UTC (`Z` or `+00:00`), parsed by the `time` crate.
pub fn is_rfc3339_utc(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .is_ok_and(|at| at.offset().is_utc())
}
