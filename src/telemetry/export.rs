//! Export off the request path: finished spans go into a bounded queue
//! (a request never waits: when it is full they are dropped and counted),
//! and one task sends them in batches as OTLP/HTTP protobuf. While the
//! collector is down or hangs, that task waits for at most
//! [`EXPORT_TIMEOUT`] per batch; meanwhile the queue fills and new spans
//! are dropped, so neither requests nor memory feel it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// The HTTP(S) client spans are sent with.
pub type TraceClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Requests whose spans may wait for export; beyond, spans are dropped.
pub const QUEUE_REQUESTS: usize = 1024;

/// Most spans in one export request.
pub const MAX_BATCH_SPANS: usize = 512;

/// How long spans wait for more to join their batch.
const BATCH_DELAY: Duration = Duration::from_millis(500);

/// The longest an export may take before its spans count as dropped.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest collector answer read (an `ExportTraceServiceResponse`
/// is small; a collector's error page need not be read whole).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What the queue carries: one request's spans, or a request to send what
/// is held now and say when that is done.
enum Message {
    Spans(Vec<Span>),
    Flush(oneshot::Sender<()>),
}

/// The request side of the queue.
pub(super) struct Queue {
    sender: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.sender.capacity())
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Starts the export task for `url`; it ends once every [`Queue`]
    /// clone is gone and the queue is drained.
    pub(super) fn start(
        url: Uri,
        resource: Resource,
        client: TraceClient,
        metrics: Arc<Metrics>,
    ) -> Queue {
        let (sender, receiver) = mpsc::channel(QUEUE_REQUESTS);
        let exporter = Exporter {
            url,
            resource,
            client,
            metrics: metrics.clone(),
        };
        tokio::spawn(exporter.run(receiver));
        Queue { sender, metrics }
    }

    /// Queues one request's spans, or drops and counts them at once.
    pub(super) fn push(&self, spans: Vec<Span>) {
        if let Err(err) = self.sender.try_send(Message::Spans(spans)) {
            let (mpsc::error::TrySendError::Full(message)
            | mpsc::error::TrySendError::Closed(message)) = err;
            if let Message::Spans(spans) = message {
                self.metrics.trace_spans("dropped", spans.len());
            }
        }
    }

    /// Returns once what was queued before has been sent (or dropped).
    pub(super) async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = sent.await;
        }
    }
}

struct Exporter {
    url: Uri,
    resource: Resource,
    client: TraceClient,
    metrics: Arc<Metrics>,
}

impl Exporter {
    async fn run(self, mut receiver: mpsc::Receiver<Message>) {
        let mut batch = Vec::with_capacity(MAX_BATCH_SPANS);
        // Warned once per outage, not once per batch.
        let mut failing = false;
        while let Some(message) = receiver.recv().await {
            let mut flushed = None;
            match message {
                Message::Spans(spans) => batch.extend(spans),
                Message::Flush(done) => flushed = Some(done),
            }
            let delay = tokio::time::sleep(BATCH_DELAY);
            tokio::pin!(delay);
            while flushed.is_none() && batch.len() < MAX_BATCH_SPANS {
                tokio::select! {
                    more = receiver.recv() => match more {
                        Some(Message::Spans(spans)) => batch.extend(spans),
                        Some(Message::Flush(done)) => flushed = Some(done),
                        None => break,
                    },
                    () = &mut delay => break,
                }
            }
            if batch.is_empty() {
                if let Some(done) = flushed {
                    let _ = done.send(());
                }
                continue;
            }
            let count = batch.len();
            let sent =
                tokio::time::timeout(EXPORT_TIMEOUT, self.send(std::mem::take(&mut batch))).await;
            let problem = match sent {
                Ok(Ok(())) => None,
                Ok(Err(problem)) => Some(problem),
                Err(_elapsed) => Some("the collector did not answer in time"),
            };
            match problem {
                None => {
                    if failing {
                        tracing::info!("trace export works again");
                    }
                    failing = false;
                    self.metrics.trace_spans("exported", count);
                }
                Some(problem) => {
                    if !failing {
                        tracing::warn!(url = %self.url, problem, "trace export failed; spans are dropped (and counted) until it works again");
                    }
                    failing = true;
                    self.metrics.trace_spans("dropped", count);
                }
            }
            batch = Vec::with_capacity(MAX_BATCH_SPANS);
            if let Some(done) = flushed {
                let _ = done.send(());
            }
        }
    }

    /// POSTs `spans` as one `ExportTraceServiceRequest`.
    async fn send(&self, spans: Vec<Span>) -> Result<(), &'static str> {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "authgate".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let body = Bytes::from(request.encode_to_vec());
        let post = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            )
            .body(Full::new(body))
            .map_err(|_| "cannot build the request")?;
        let answer = self
            .client
            .request(post)
            .await
            .map_err(|_| "the collector could not be reached")?;
        let status = answer.status();
        // Read (a bounded part of) the answer so the connection can be reused.
        let _ = http_body_util::Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err("the collector refused the spans")
        }
    }
}
