//! Optional OTLP/HTTP (protobuf) export of one span per call, with a child span for each
//! expensive step: authentication, rate limit, secret resolution and the upstream call.
//! Off unless `[traces] otlp_endpoint` is set; needs a restart to change.
//!
//! Spans are built from the few fields of the finished run record they show ([`SpanFields`]:
//! method, path without its query, trigger, decision, statuses, request id, client
//! address), copied when the call ends: never its capture, never a token, a query string,
//! an upstream URL or a secret value. Calls are queued to one task that batches them to the
//! `opentelemetry-otlp` exporter. The queue is bounded in calls (`queue`) and in bytes
//! (`queue_max_bytes`), and every export request in time ([`EXPORT_TIMEOUT`]), so a
//! collector that never answers holds at most that much; a full queue drops the call's
//! spans (counted in `flowgate_trace_spans_dropped_total`) rather than slow a call.

use super::TraceContext;
use crate::audit::RunRecord;
use crate::config::{Diagnostics, KeyPath};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// `[traces]`: OpenTelemetry span export.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTraces {
    /// OTLP/HTTP traces endpoint taking protobuf, for example
    /// `"http://127.0.0.1:4318/v1/traces"`. Unset (default): no spans are exported.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of exported spans (default `flowgate`).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Calls waiting for export at most; beyond, spans are dropped and counted (default 4096).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Bytes of span fields waiting for export at most (method, path, ids, trigger...; never
    /// captures); beyond, spans are dropped and counted (default 4 MiB).
    #[serde(default = "default_queue_max_bytes")]
    pub queue_max_bytes: usize,
}

impl Default for RawTraces {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: default_service_name(),
            queue: default_queue(),
            queue_max_bytes: default_queue_max_bytes(),
        }
    }
}

fn default_service_name() -> String {
    "flowgate".to_owned()
}
fn default_queue() -> usize {
    4096
}
fn default_queue_max_bytes() -> usize {
    4 * 1024 * 1024
}

/// Longest time one export request may take (connect, send, answer); a collector that
/// never answers costs at most this per batch, and the queue behind it stays bounded.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Compiled `[traces]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// Where spans go.
    pub endpoint: String,
    /// `service.name`.
    pub service_name: String,
    /// Queue bound in calls.
    pub queue: usize,
    /// Queue bound in bytes of span fields.
    pub queue_max_bytes: usize,
}

impl ExportSettings {
    /// Compiles `[traces]` (`path` is `traces`); `None` when export is off.
    pub fn compile(raw: &RawTraces, path: &KeyPath, diags: &mut Diagnostics) -> Option<Self> {
        let endpoint = raw.otlp_endpoint.as_ref()?;
        let usable = endpoint
            .parse::<http::Uri>()
            .ok()
            .is_some_and(|uri| matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some());
        if !usable {
            diags.error(&path.key("otlp_endpoint"), format!("{endpoint:?} is not an http(s) URL"));
            return None;
        }
        if raw.queue == 0 {
            diags.error(&path.key("queue"), "queue must be at least 1");
        }
        if raw.queue_max_bytes < 4096 {
            diags.error(&path.key("queue_max_bytes"), "queue_max_bytes must be at least 4096");
        }
        Some(Self {
            endpoint: endpoint.clone(),
            service_name: raw.service_name.clone(),
            queue: raw.queue.max(1),
            queue_max_bytes: raw.queue_max_bytes.max(4096),
        })
    }
}

/// The steps of a call that get a child span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Token or signed-URL verification and the caller rules.
    Authenticate = 0,
    /// The rate-limit decision (a Redis round trip in a cluster).
    RateLimit = 1,
    /// Rendering injected secrets (vault cache or fetch).
    Secrets = 2,
    /// The upstream call, until its response head.
    Upstream = 3,
}

impl Step {
    const ALL: [Step; 4] = [Step::Authenticate, Step::RateLimit, Step::Secrets, Step::Upstream];

    fn name(self) -> &'static str {
        match self {
            Step::Authenticate => "authenticate",
            Step::RateLimit => "rate limit",
            Step::Secrets => "resolve secrets",
            Step::Upstream => "upstream",
        }
    }
}

/// When each step of one call ran (no allocation; unused steps stay `None`). Timed only
/// when spans are exported: otherwise nobody reads the times, and each costs two clock
/// reads per step per call.
#[derive(Debug, Clone, Copy)]
pub struct Steps {
    times: [Option<(SystemTime, SystemTime)>; 4],
    timed: bool,
}

impl Steps {
    /// Steps of one call, timed when `timed` (spans are exported).
    pub fn new(timed: bool) -> Self {
        Self { times: [None; 4], timed }
    }

    /// The start of a step, when steps are timed.
    #[expect(
        clippy::disallowed_methods,
        reason = "span times are wall-clock by OTLP's definition, read only when spans are exported; a call's steps carry no clock"
    )]
    pub fn start(&self) -> Option<SystemTime> {
        self.timed.then(SystemTime::now)
    }

    /// Records that `step` ran from `started` (from [`Steps::start`]) until now.
    #[expect(clippy::disallowed_methods, reason = "as `Steps::start`: the end of a step's span, wall-clock by OTLP")]
    pub fn done(&mut self, step: Step, started: Option<SystemTime>) {
        if let Some(started) = started {
            self.times[step as usize] = Some((started, SystemTime::now()));
        }
    }
}

/// What a call's spans show, copied from its run record when it ends: a few short
/// strings, never the record's capture.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanFields {
    id: String,
    method: String,
    path: String,
    status: u16,
    upstream_status: Option<u16>,
    decision: String,
    policy_version: String,
    trigger: Option<String>,
    client: Option<std::net::IpAddr>,
    start: SystemTime,
    latency_ms: f64,
}

impl SpanFields {
    /// The fields of `record` that spans show.
    #[expect(
        clippy::disallowed_methods,
        reason = "a record always carries its time; the real time stands in only if it could not be read"
    )]
    pub fn of(record: &RunRecord) -> Self {
        Self {
            id: record.id.clone(),
            method: record.method.clone(),
            path: record.path.clone(),
            status: record.status,
            upstream_status: record.upstream_status,
            decision: record.decision.clone(),
            policy_version: record.policy_version.clone(),
            trigger: record.trigger.clone(),
            client: record.client_ip,
            start: record.at().unwrap_or_else(SystemTime::now),
            latency_ms: record.latency_ms,
        }
    }

    /// Bytes these fields keep alive while queued (strings plus the queue slot).
    pub fn cost(&self) -> usize {
        std::mem::size_of::<Finished>()
            + self.id.capacity()
            + self.method.capacity()
            + self.path.capacity()
            + self.decision.capacity()
            + self.policy_version.capacity()
            + self.trigger.as_ref().map_or(0, String::capacity)
    }
}

/// One finished call on its way to the exporter.
struct Finished {
    fields: SpanFields,
    trace: TraceContext,
    steps: Steps,
    /// Its [`SpanFields::cost`], given back when it leaves the queue.
    cost: usize,
}

/// The export queue; lives in the `Gateway`.
#[derive(Debug)]
pub struct SpanExport {
    queue: mpsc::Sender<Finished>,
    bytes: std::sync::Arc<QueueBytes>,
}

/// Bytes queued now, and the bound.
#[derive(Debug)]
struct QueueBytes {
    queued: AtomicUsize,
    max: usize,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Finished")
    }
}

/// Why the span exporter cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ExportStartError {
    /// The project's HTTP client cannot be built for it.
    #[error("cannot build the OTLP HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The OTLP exporter rejects the settings.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

impl SpanExport {
    /// Builds the exporter and starts its task. Must run inside the tokio runtime.
    ///
    /// # Errors
    /// The exporter cannot be built from the settings.
    pub fn start(settings: &ExportSettings) -> Result<Self, ExportStartError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(ReqwestClient::new()?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(ExportStartError::Exporter)?;
        let resource =
            opentelemetry_sdk::Resource::builder_empty().with_service_name(settings.service_name.clone()).build();
        exporter.set_resource(&resource);
        let (queue, received) = mpsc::channel(settings.queue);
        let bytes = std::sync::Arc::new(QueueBytes {
            queued: AtomicUsize::new(0),
            max: settings.queue_max_bytes,
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(run(exporter, received, bytes.clone()));
        Ok(Self { queue, bytes })
    }

    /// Queues a finished call's spans, when its trace is sampled; never waits.
    pub fn call_finished(&self, record: &RunRecord, trace: &TraceContext, steps: Steps) {
        if !trace.sampled() {
            return;
        }
        let fields = SpanFields::of(record);
        let cost = fields.cost();
        let bytes = &self.bytes;
        let queued = bytes.queued.fetch_add(cost, Ordering::Relaxed) + cost;
        let refused = if queued > bytes.max {
            true
        } else {
            self.queue.try_send(Finished { fields, trace: trace.clone(), steps, cost }).is_err()
        };
        if refused {
            bytes.queued.fetch_sub(cost, Ordering::Relaxed);
            bytes.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("flowgate_trace_spans_dropped_total").increment(1);
        }
    }

    /// Bytes of span fields waiting for export now (never more than `queue_max_bytes`).
    pub fn queued_bytes(&self) -> usize {
        self.bytes.queued.load(Ordering::Relaxed)
    }

    /// Calls whose spans were dropped since start (full queue).
    pub fn dropped(&self) -> u64 {
        self.bytes.dropped.load(Ordering::Relaxed)
    }
}

/// Calls per export request at most.
const BATCH: usize = 128;

async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut received: mpsc::Receiver<Finished>,
    bytes: std::sync::Arc<QueueBytes>,
) {
    let mut batch = Vec::new();
    let take = |finished: &Finished, batch: &mut Vec<SpanData>| {
        bytes.queued.fetch_sub(finished.cost, Ordering::Relaxed);
        batch.extend(spans_of(finished));
    };
    while let Some(first) = received.recv().await {
        take(&first, &mut batch);
        // Whatever else is already waiting goes in the same request.
        while batch.len() < BATCH * 5 {
            match received.try_recv() {
                Ok(next) => take(&next, &mut batch),
                Err(_) => break,
            }
        }
        // The client's own timeouts should fire first; this one holds whatever they miss.
        match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(std::mem::take(&mut batch))).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                metrics::counter!("flowgate_trace_export_errors_total").increment(1);
                tracing::warn!(%error, "span export failed");
            }
            Err(_) => {
                metrics::counter!("flowgate_trace_export_errors_total").increment(1);
                tracing::warn!(timeout = ?EXPORT_TIMEOUT, "span export timed out");
            }
        }
    }
}

/// The call's span and its children, from what the run record holds.
fn spans_of(finished: &Finished) -> Vec<SpanData> {
    let Finished { fields: record, trace, steps, .. } = finished;
    let trace_id = TraceId::from_bytes(trace.trace_id);
    let call_span = SpanId::from_bytes(trace.span_id);
    let context = |span: SpanId| SpanContext::new(trace_id, span, TraceFlags::SAMPLED, false, TraceState::default());
    let scope = InstrumentationScope::builder("flowgate").with_version(env!("CARGO_PKG_VERSION")).build();
    let start = record.start;
    let end = start + Duration::from_secs_f64(record.latency_ms.max(0.0) / 1000.0);
    let mut attributes = vec![
        KeyValue::new("http.request.method", record.method.clone()),
        KeyValue::new("url.path", record.path.clone()),
        KeyValue::new("http.response.status_code", i64::from(record.status)),
        KeyValue::new("flowgate.request_id", record.id.clone()),
        KeyValue::new("flowgate.decision", record.decision.clone()),
        KeyValue::new("flowgate.policy_version", record.policy_version.clone()),
    ];
    if let Some(trigger) = &record.trigger {
        attributes.push(KeyValue::new("flowgate.trigger", trigger.clone()));
    }
    if let Some(client) = record.client {
        attributes.push(KeyValue::new("client.address", client.to_string()));
    }
    let status = if record.status >= 500 { Status::error(record.decision.clone()) } else { Status::Unset };
    let span = |context, parent, remote, kind, name: &'static str, start, end, attributes, status| SpanData {
        span_context: context,
        parent_span_id: parent,
        parent_span_is_remote: remote,
        span_kind: kind,
        name: name.into(),
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    };
    let parent = trace.parent_id.map_or(SpanId::INVALID, SpanId::from_bytes);
    let mut spans = vec![span(
        context(call_span),
        parent,
        trace.continued(),
        SpanKind::Server,
        "call",
        start,
        end,
        attributes,
        status,
    )];
    for step in Step::ALL {
        let Some((started, ended)) = steps.times[step as usize] else { continue };
        let (kind, attributes) = match step {
            Step::Upstream => (
                SpanKind::Client,
                record.upstream_status.map(|s| vec![KeyValue::new("http.response.status_code", i64::from(s))]),
            ),
            _ => (SpanKind::Internal, None),
        };
        let child = SpanId::from_bytes(super::new_span_id());
        spans.push(span(
            context(child),
            call_span,
            false,
            kind,
            step.name(),
            started,
            ended,
            attributes.unwrap_or_default(),
            Status::Unset,
        ));
    }
    spans
}

/// The exporter's HTTP client: the project's reqwest, on the gateway's runtime.
#[derive(Debug)]
struct ReqwestClient(reqwest::Client);

impl ReqwestClient {
    fn new() -> Result<Self, ExportStartError> {
        reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build().map(Self).map_err(ExportStartError::Client)
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ReqwestClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let response =
            self.0.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
        let mut out = http::Response::builder().status(response.status());
        if let Some(headers) = out.headers_mut() {
            *headers = response.headers().clone();
        }
        let body = response.bytes().await?;
        Ok(out.body(body)?)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "test records are stamped with the real time")]
mod tests {
    use super::*;
    use crate::audit::{Captured, CapturedBody, CapturedMessage};

    /// A record of a captured call with a 64 KiB JSON body (the seed).
    fn captured_record(i: usize) -> RunRecord {
        let mut record = RunRecord::new(format!("id-{i}"), SystemTime::now(), "POST", &format!("/flows/{i}"));
        let json = serde_json::json!({ "payload": "x".repeat(64 * 1024) });
        record.capture = Some(Captured {
            request: Some(CapturedMessage::Captured {
                headers: std::collections::BTreeMap::new(),
                body: Some(CapturedBody::Json { json }),
            }),
            response: None,
        });
        record
    }

    #[test]
    fn span_fields_never_carry_the_capture() {
        let fields = SpanFields::of(&captured_record(1));
        assert!(fields.cost() < 1024, "{} bytes queued for one call", fields.cost());
    }

    /// Seed: 1,990 captured 64 KiB calls with a collector that never answers grew the
    /// process to 2.25 GB. The queue stays under its byte bound and counts what it drops.
    #[tokio::test]
    async fn the_queue_stays_within_its_byte_bound_when_the_collector_never_answers() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/v1/traces", silent.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                open.push(stream);
            }
        });
        let max = 64 * 1024;
        let settings = ExportSettings { endpoint, service_name: "t".into(), queue: 4096, queue_max_bytes: max };
        let export = SpanExport::start(&settings).unwrap();
        let trace = TraceContext::from_headers(&http::HeaderMap::new(), true);
        for i in 0..1990 {
            export.call_finished(&captured_record(i), &trace, Steps::new(false));
            assert!(export.queued_bytes() <= max, "{} bytes queued", export.queued_bytes());
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        assert!(export.dropped() > 0, "nothing was dropped although the collector never answers");
        held.abort();
    }
}
