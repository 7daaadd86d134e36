//! A demo upstream for authgate: answers every request with a JSON echo of
//! what it received (method, path, query, headers, body size), so a person can
//! see which identity headers the gateway added and that no credential arrived.
//!
//! It is a development aid, not part of the gateway's request path. A
//! binary rather than an example, so that building it (scripts/demo.sh)
//! needs no dev-dependencies.
//!
//! ```text
//! cargo run --bin echo_upstream -- --listen 127.0.0.1:9000
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::TcpListener;

/// Address used when `--listen` is not given.
const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

const USAGE: &str = "usage: echo_upstream [--listen ADDR]   (default 127.0.0.1:9000)";

#[tokio::main]
async fn main() -> ExitCode {
    let addr = match parse_args(std::env::args().skip(1)) {
        Ok(Some(addr)) => addr,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("echo_upstream: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("echo_upstream: cannot listen on {addr}: {err}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("echo upstream listening on http://{addr}");

    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            // Transient accept errors (e.g. too many open files) must not end the demo.
            Err(err) => {
                eprintln!("echo_upstream: accept failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let builder = builder.clone();
        tokio::spawn(async move {
            let conn =
                builder.serve_connection_with_upgrades(TokioIo::new(stream), service_fn(echo));
            if let Err(err) = conn.await {
                eprintln!("echo_upstream: connection from {peer}: {err}");
            }
        });
    }
}

/// Parses `--listen ADDR` / `--listen=ADDR`; `Ok(None)` means help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<SocketAddr>, String> {
    let mut listen = DEFAULT_LISTEN.to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            other => match other.strip_prefix("--listen=") {
                Some(value) => listen = value.to_owned(),
                None => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    listen
        .parse()
        .map(Some)
        .map_err(|err| format!("bad address {listen:?}: {err}"))
}

/// What the echo reports; field order is the order a person reads it in.
#[derive(Serialize)]
struct Echo<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    version: String,
    headers: BTreeMap<String, String>,
    body_bytes: u64,
}

/// Answers any request with a JSON description of it.
async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, mut body) = req.into_parts();

    // Repeated headers are joined so every value stays visible.
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        let separator = if name == hyper::header::COOKIE {
            "; "
        } else {
            ", "
        };
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(separator);
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }

    // Count the body frame by frame instead of buffering it whole.
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(_) => break,
        }
    }

    let answer = Echo {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        version: format!("{:?}", parts.version),
        headers,
        body_bytes,
    };
    let mut text = serde_json::to_vec_pretty(&answer).unwrap_or_default();
    text.push(b'\n');

    let mut response = Response::new(Full::new(Bytes::from(text)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
