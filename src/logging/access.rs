//! One access log line: the facts a finished request leaves behind, taken
//! cheaply on the request path (clones of shared values, no formatting),
//! and their formatting into the text or JSON line the writer thread
//! writes. The lines look like the tracing subscriber's own, as if the
//! event `access` had been logged inside the `connection` and `request`
//! spans, so log tooling sees one shape. The target is redacted here, off
//! the request path, before anything is written.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::HeaderValue;
use http::{Method, Uri};
use serde::Serialize;

use crate::logging::redact::redact_target;
use crate::text::push_decimal;

/// The log line format (`AUTHGATE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// tracing's default text format, without colours.
    Text,
    /// One JSON object per line, with the current span and the span list.
    Json,
}

/// A finished request, as the access log reports it.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// When the request finished.
    pub time: SystemTime,
    /// The client's address.
    pub client: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The request id.
    pub request_id: HeaderValue,
    /// The method.
    pub method: Method,
    /// The request target as received; redacted when formatted.
    pub uri: Uri,
    /// The route prefix or own endpoint, once known.
    pub route: Option<Arc<str>>,
    /// `jwt` or `accesskey`, and the user, once a credential was checked.
    pub caller: Option<(&'static str, Arc<str>)>,
    /// The response status.
    pub status: u16,
    /// Time from arrival to the response head.
    pub latency: Duration,
    /// `authenticated`, `public`, `own` or `rejected`.
    pub outcome: &'static str,
    /// The error's reason when rejected, else empty.
    pub reason: &'static str,
}

impl AccessRecord {
    /// Appends the line, newline included, to `out`.
    pub fn write(&self, format: Format, out: &mut Vec<u8>) {
        match format {
            Format::Text => self.write_text(out),
            Format::Json => self.write_json(out),
        }
    }

    fn write_text(&self, out: &mut Vec<u8>) {
        write_timestamp(self.time, out);
        out.extend_from_slice(b"  INFO connection{client.addr=");
        push_addr(out, self.client);
        out.extend_from_slice(if self.tls {
            b" tls=true"
        } else {
            b" tls=false"
        });
        out.extend_from_slice(b"}:request{request.id=");
        push_quoted(out, self.request_id.to_str().unwrap_or_default());
        out.extend_from_slice(b" http.method=");
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.extend_from_slice(b" http.target=");
        out.extend_from_slice(redact_target(&self.uri).as_bytes());
        if let Some(route) = &self.route {
            out.extend_from_slice(b" route=");
            push_quoted(out, route);
        }
        if let Some((method, user)) = &self.caller {
            out.extend_from_slice(b" auth.method=");
            push_quoted(out, method);
            out.extend_from_slice(b" auth.user=");
            push_quoted(out, user);
        }
        out.extend_from_slice(b"}: authgate::request::context: access http.status=");
        push_decimal(out, u64::from(self.status));
        out.extend_from_slice(b" latency_ms=");
        push_millis(out, self.latency);
        out.extend_from_slice(b" outcome=");
        push_quoted(out, self.outcome);
        out.extend_from_slice(b" reason=");
        push_quoted(out, self.reason);
        out.push(b'\n');
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        let mut timestamp = Vec::with_capacity(32);
        write_timestamp(self.time, &mut timestamp);
        let target = redact_target(&self.uri);
        let request = RequestSpan {
            request_id: self.request_id.to_str().unwrap_or_default(),
            method: self.method.as_str(),
            target: &target,
            route: self.route.as_deref(),
            auth_method: self.caller.as_ref().map(|(method, _)| *method),
            auth_user: self.caller.as_ref().map(|(_, user)| &**user),
            name: "request",
        };
        let line = JsonLine {
            timestamp: std::str::from_utf8(&timestamp).unwrap_or_default(),
            level: "INFO",
            fields: Fields {
                message: "access",
                status: self.status,
                latency_ms: latency_ms(self.latency),
                outcome: self.outcome,
                reason: self.reason,
            },
            target: "authgate::request::context",
            span: &request,
            spans: (
                ConnectionSpan {
                    client_addr: &self.client.to_string(),
                    tls: self.tls,
                    name: "connection",
                },
                &request,
            ),
        };
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
        }
    }

    /// A record for tests.
    #[cfg(test)]
    pub(crate) fn sample(request_id: &str) -> AccessRecord {
        AccessRecord {
            time: UNIX_EPOCH + Duration::from_micros(1_764_648_000_123_456),
            client: "192.0.2.7:4711".parse().unwrap(),
            tls: false,
            request_id: HeaderValue::from_str(request_id).unwrap(),
            method: Method::GET,
            uri: "/data?token=secret-token&x=1".parse().unwrap(),
            route: Some(Arc::from("/")),
            caller: Some(("jwt", Arc::from("bob"))),
            status: 200,
            latency: Duration::from_micros(1250),
            outcome: "authenticated",
            reason: "",
        }
    }
}

/// Milliseconds to the microsecond, as a JSON number.
fn latency_ms(latency: Duration) -> f64 {
    // Rounded to whole microseconds, so the text and JSON lines agree.
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    micros as f64 / 1000.0
}

/// `latency` in milliseconds with three decimals (whole microseconds).
fn push_millis(out: &mut Vec<u8>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    push_decimal(out, micros / 1000);
    out.push(b'.');
    push_padded(out, micros % 1000, 3);
}

/// `value` in decimal, zero-padded to `width` digits (`value` must fit).
fn push_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    let mut value = value;
    for at in (start..start + width).rev() {
        out[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `addr` as `Display` shows it (`[v6]:port` for IPv6), without `fmt`.
fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(octet));
            }
        }
        // Rare enough for the general formatter.
        SocketAddr::V6(v6) => {
            let _ = write!(out, "[{}]", v6.ip());
            if v6.scope_id() != 0 {
                out.truncate(out.len() - 1);
                let _ = write!(out, "%{}]", v6.scope_id());
            }
        }
    }
    out.push(b':');
    push_decimal(out, u64::from(addr.port()));
}

/// `text` quoted as `{:?}` writes it; plain text is copied as it is.
fn push_quoted(out: &mut Vec<u8>, text: &str) {
    let plain = text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{text:?}");
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    timestamp: &'a str,
    level: &'static str,
    fields: Fields,
    target: &'static str,
    span: &'a RequestSpan<'a>,
    spans: (ConnectionSpan<'a>, &'a RequestSpan<'a>),
}

#[derive(Serialize)]
struct Fields {
    message: &'static str,
    #[serde(rename = "http.status")]
    status: u16,
    latency_ms: f64,
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Serialize)]
struct ConnectionSpan<'a> {
    #[serde(rename = "client.addr")]
    client_addr: &'a str,
    tls: bool,
    name: &'static str,
}

#[derive(Serialize)]
struct RequestSpan<'a> {
    #[serde(rename = "request.id")]
    request_id: &'a str,
    #[serde(rename = "http.method")]
    method: &'a str,
    #[serde(rename = "http.target")]
    target: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(rename = "auth.method", skip_serializing_if = "Option::is_none")]
    auth_method: Option<&'static str>,
    #[serde(rename = "auth.user", skip_serializing_if = "Option::is_none")]
    auth_user: Option<&'a str>,
    name: &'static str,
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as tracing writes it; the part up to the
/// second is formatted once a second.
fn write_timestamp(time: SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            *cached = secs;
            *text = i64::try_from(secs)
                .ok()
                .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
                .map(|at| {
                    format!(
                        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                        at.year(),
                        u8::from(at.month()),
                        at.day(),
                        at.hour(),
                        at.minute(),
                        at.second()
                    )
                })
                .unwrap_or_default();
        }
        out.extend_from_slice(text.as_bytes());
    });
    out.push(b'.');
    push_padded(out, u64::from(since_epoch.subsec_micros()), 6);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_have_the_span_fields_and_a_redacted_target() {
        let mut out = Vec::new();
        AccessRecord::sample("req-1").write(Format::Text, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2025-12-02T04:00:00.123456Z  INFO connection{client.addr=192.0.2.7:4711 tls=false}:\
             request{request.id=\"req-1\" http.method=GET http.target=/data?token=REDACTED&x=1 \
             route=\"/\" auth.method=\"jwt\" auth.user=\"bob\"}: authgate::request::context: access \
             http.status=200 latency_ms=1.250 outcome=\"authenticated\" reason=\"\"\n"
        );
    }

    #[test]
    fn pieces_format_as_display_and_debug_would() {
        for addr in [
            "192.0.2.7:4711",
            "0.0.0.0:0",
            "[2001:db8::1]:443",
            "[fe80::1%2]:80",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            push_addr(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
        for text in [
            "plain",
            "",
            "with \"quote\"",
            "back\\slash",
            "tab\there",
            "ünï",
        ] {
            let mut out = Vec::new();
            push_quoted(&mut out, text);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{text:?}"));
        }
        for (micros, shown) in [
            (0, "0.000"),
            (1, "0.001"),
            (1250, "1.250"),
            (12_345_678, "12345.678"),
        ] {
            let mut out = Vec::new();
            push_millis(&mut out, Duration::from_micros(micros));
            assert_eq!(String::from_utf8(out).unwrap(), shown);
        }
        let mut out = Vec::new();
        push_decimal(&mut out, u64::MAX);
        assert_eq!(String::from_utf8(out).unwrap(), u64::MAX.to_string());
    }

    #[test]
    fn json_lines_have_the_shape_of_tracing_json() {
        let mut record = AccessRecord::sample("req-2");
        record.caller = None;
        record.route = None;
        let mut out = Vec::new();
        record.write(Format::Json, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["timestamp"], "2025-12-02T04:00:00.123456Z");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "authgate::request::context");
        assert_eq!(line["fields"]["message"], "access");
        assert_eq!(line["fields"]["http.status"], 200);
        assert_eq!(line["fields"]["latency_ms"], 1.25);
        assert_eq!(line["span"]["request.id"], "req-2");
        assert_eq!(line["span"]["http.target"], "/data?token=REDACTED&x=1");
        assert_eq!(line["span"]["name"], "request");
        assert!(line["span"].get("auth.user").is_none());
        assert!(line["span"].get("route").is_none());
        assert_eq!(line["spans"][0]["client.addr"], "192.0.2.7:4711");
        assert_eq!(line["spans"][0]["name"], "connection");
        assert_eq!(line["spans"][1]["request.id"], "req-2");
        assert!(!String::from_utf8_lossy(&out).contains("secret-token"));
    }
}
