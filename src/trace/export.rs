//! Optional OTLP/HTTP (protobuf) export of one span per call, with a child span for each
//! expensive step: authentication, rate limit, secret resolution and the upstream call.
//! Off unless `[traces] otlp_endpoint` is set; needs a restart to change.
//!
//! Spans are built from the finished run record, so they carry what the record carries
//! and nothing more: method, path without its query, trigger, decision, statuses, request
//! id. Never a token, a query string, an upstream URL or a secret value. Calls are queued
//! to one task that batches them to the `opentelemetry-otlp` exporter; a full queue drops
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
}

impl Default for RawTraces {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: default_service_name(), queue: default_queue() }
    }
}

fn default_service_name() -> String {
    "flowgate".to_owned()
}
fn default_queue() -> usize {
    4096
}

/// Compiled `[traces]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// Where spans go.
    pub endpoint: String,
    /// `service.name`.
    pub service_name: String,
    /// Queue bound.
    pub queue: usize,
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
        Some(Self { endpoint: endpoint.clone(), service_name: raw.service_name.clone(), queue: raw.queue.max(1) })
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
    pub fn start(&self) -> Option<SystemTime> {
        self.timed.then(SystemTime::now)
    }

    /// Records that `step` ran from `started` (from [`Steps::start`]) until now.
    pub fn done(&mut self, step: Step, started: Option<SystemTime>) {
        if let Some(started) = started {
            self.times[step as usize] = Some((started, SystemTime::now()));
        }
    }
}

/// One finished call on its way to the exporter.
struct Finished {
    record: RunRecord,
    trace: TraceContext,
    steps: Steps,
}

/// The export queue; lives in the `Gateway`.
#[derive(Debug)]
pub struct SpanExport {
    queue: mpsc::Sender<Finished>,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Finished")
    }
}

impl SpanExport {
    /// Builds the exporter and starts its task. Must run inside the tokio runtime.
    ///
    /// # Errors
    /// The exporter cannot be built from the settings.
    pub fn start(settings: &ExportSettings) -> Result<Self, String> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(ReqwestClient::new()?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let resource =
            opentelemetry_sdk::Resource::builder_empty().with_service_name(settings.service_name.clone()).build();
        exporter.set_resource(&resource);
        let (queue, received) = mpsc::channel(settings.queue);
        tokio::spawn(run(exporter, received));
        Ok(Self { queue })
    }

    /// Queues a finished call's spans, when its trace is sampled; never waits.
    pub fn call_finished(&self, record: &RunRecord, trace: &TraceContext, steps: Steps) {
        if !trace.sampled() {
            return;
        }
        let finished = Finished { record: record.clone(), trace: trace.clone(), steps };
        if self.queue.try_send(finished).is_err() {
            metrics::counter!("flowgate_trace_spans_dropped_total").increment(1);
        }
    }
}

/// Calls per export request at most.
const BATCH: usize = 128;

async fn run(exporter: opentelemetry_otlp::SpanExporter, mut received: mpsc::Receiver<Finished>) {
    let mut batch = Vec::new();
    while let Some(first) = received.recv().await {
        batch.extend(spans_of(&first));
        // Whatever else is already waiting goes in the same request.
        while batch.len() < BATCH * 5 {
            match received.try_recv() {
                Ok(next) => batch.extend(spans_of(&next)),
                Err(_) => break,
            }
        }
        if let Err(error) = exporter.export(std::mem::take(&mut batch)).await {
            metrics::counter!("flowgate_trace_export_errors_total").increment(1);
            tracing::warn!(%error, "span export failed");
        }
    }
}

/// The call's span and its children, from what the run record holds.
fn spans_of(finished: &Finished) -> Vec<SpanData> {
    let Finished { record, trace, steps } = finished;
    let trace_id = TraceId::from_bytes(trace.trace_id);
    let call_span = SpanId::from_bytes(trace.span_id);
    let context = |span: SpanId| SpanContext::new(trace_id, span, TraceFlags::SAMPLED, false, TraceState::default());
    let scope = InstrumentationScope::builder("flowgate").with_version(env!("CARGO_PKG_VERSION")).build();
    let start = record.at().unwrap_or_else(SystemTime::now);
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
    if let Some(client) = record.client_ip {
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
    fn new() -> Result<Self, String> {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map(Self)
            .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))
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
