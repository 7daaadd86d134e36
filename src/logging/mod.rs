//! Log output: the tracing subscriber on stderr (text, or JSON lines with
//! `AUTHGATE_LOG_FORMAT=json`, filtered by `AUTHGATE_LOG`), and for `serve`
//! the batched sink behind it, which also takes the access log's records.

pub mod access;
pub mod redact;
pub mod sink;

use std::io::IsTerminal;
use std::sync::OnceLock;

use access::{AccessRecord, Format};
use sink::{Sink, SinkGuard, SinkWriter};

/// The sink access records go to, once `serve` set logging up.
static ACCESS_SINK: OnceLock<Sink> = OnceLock::new();

/// Writes what is still queued when dropped; hold it until the process ends.
pub struct LogGuard {
    _sink: Option<SinkGuard>,
}

/// Sets up logging to stderr with `default_filter` unless `AUTHGATE_LOG`
/// says otherwise. With `batched` (the gateway), lines go through the
/// batched sink and the access log is written from records; otherwise (the
/// short-lived commands) each line is written as it comes.
pub fn init(default_filter: &str, batched: bool) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUTHGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let format = if std::env::var("AUTHGATE_LOG_FORMAT")
        .is_ok_and(|format| format.eq_ignore_ascii_case("json"))
    {
        Format::Json
    } else {
        Format::Text
    };
    let started = batched
        .then(|| Sink::start(std::io::stderr(), format).ok())
        .flatten();
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let guard = match started {
        Some((sink, guard)) => {
            let writer = SinkWriter(sink.clone());
            let _ = ACCESS_SINK.set(sink);
            match format {
                Format::Json => builder
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(writer)
                    .init(),
                // Access lines from records have no colours; neither do these.
                Format::Text => builder.with_ansi(false).with_writer(writer).init(),
            }
            Some(guard)
        }
        None => {
            let builder = builder.with_writer(std::io::stderr);
            match format {
                Format::Json => builder
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .init(),
                Format::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
            }
            None
        }
    };
    LogGuard { _sink: guard }
}

/// Logs a finished request's access line, when the filter lets
/// `authgate::request::context` info events through: queued as a record for the
/// sink, or, without one (the library used on its own), logged at once
/// through tracing.
pub fn access(record: impl FnOnce() -> AccessRecord) {
    if !tracing::enabled!(target: "authgate::request::context", tracing::Level::INFO) {
        return;
    }
    let record = record();
    match ACCESS_SINK.get() {
        Some(sink) => sink.access(record),
        None => tracing::event!(
            target: "authgate::request::context",
            tracing::Level::INFO,
            request.id = record.request_id.to_str().unwrap_or_default(),
            http.method = %record.method,
            http.target = %crate::logging::redact::redact_target(&record.uri),
            route = record.route.as_deref(),
            auth.method = record.caller.as_ref().map(|(method, _)| *method),
            auth.user = record.caller.as_ref().map(|(_, user)| &**user),
            http.status = record.status,
            latency_ms = record.latency.as_secs_f64() * 1000.0,
            outcome = record.outcome,
            reason = record.reason,
            "access"
        ),
    }
}
