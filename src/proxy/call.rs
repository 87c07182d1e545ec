//! One call in progress ([`Call`]) and the one place it ends: [`Call::finish`] writes the
//! access-log line, the exported span and the run record, exactly once, whether the
//! response body ended, was dropped, or the caller went away before the response.

use super::body::{self, BodyStats, ObservedBody};
use super::inbound::Connection;
use crate::audit::RunRecord;
use crate::gateway::Gateway;
use crate::policy::{Policy, Trigger};
use crate::secrets::Redactor;
use crate::web::{BoxError, ResponseBody, new_request_id, write_request_id};
use bytes::Bytes;
use http::{Request, Response};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

/// One call in progress: its run record, filled in step by step, and what capture needs.
pub struct Call {
    /// The run record, written exactly once when the call ends, then taken (`None`). Before
    /// the response is handed over, dropping the call (the caller went away while it was
    /// being judged or forwarded) writes it as `client_closed`; after, the response body's
    /// end writes it (`record_on_end`).
    record: Option<RunRecord>,
    /// The W3C trace the call belongs to (see `trace`): passed on to the upstream.
    pub trace: crate::trace::TraceContext,
    /// When the expensive steps ran, for exported spans.
    pub steps: crate::trace::Steps,
    pub(super) started: Instant,
    pub(super) request_body: Arc<BodyStats>,
    pub(super) capture: Option<Capture>,
    /// The matched trigger's name as a metric label (see `Trigger::name_label`).
    pub(super) trigger_label: Option<Arc<str>>,
    /// The caller's slot of `max_calls_per_principal`, held until the call ends.
    pub(super) in_flight: Option<crate::ratelimit::InFlightSlot>,
    gateway: Arc<Gateway>,
}

/// What a capturing trigger keeps of a call until the response ends.
pub(super) struct Capture {
    pub(super) trigger: Arc<Trigger>,
    pub(super) request_headers: http::HeaderMap,
    pub(super) response_headers: http::HeaderMap,
    pub(super) response_body: Arc<body::Tap>,
    /// The call's redactor (see `secrets/redact.rs`), set once the secrets are rendered.
    pub(super) redactor: Redactor,
}

impl Call {
    pub(super) fn begin<B>(
        gateway: &Arc<Gateway>,
        policy: &Policy,
        connection: &Connection,
        request: &Request<B>,
    ) -> Box<Self> {
        let (at, method, path) = (gateway.clock.system_time(), request.method().as_str(), request.uri().path());
        // A record this thread wrote before, renewed, when there is one: its strings' buffers
        // serve again (every field is set afresh: `RunRecord::renew`).
        let (mut record, mut trace_id) = match SPARE_RECORDS.with_borrow_mut(Vec::pop) {
            Some(mut record) => {
                let trace_id = record.trace_id.take().unwrap_or_default();
                record.renew(write_request_id, at, method, path);
                (record, trace_id)
            }
            None => (RunRecord::new(new_request_id(), at, method, path), String::with_capacity(32)),
        };
        record.peer_ip = Some(connection.peer.ip());
        record.policy_version.clone_from(&policy.version);
        // The caller's trace (or a fresh one) is known before any check, so refused calls
        // can be found from the caller's trace too.
        let trace = crate::trace::TraceContext::from_headers(request.headers(), gateway.spans.is_some());
        trace_id.clear();
        trace.write_trace_id(&mut trace_id);
        record.trace_id = Some(trace_id);
        // Boxed from the start: a call and its record are over 1.6 KiB, and from here on
        // it moves as a pointer (into the handling future, then into the response body).
        Box::new(Self {
            record: Some(record),
            trace,
            steps: crate::trace::Steps::new(gateway.spans.is_some()),
            started: Instant::now(),
            request_body: Arc::new(BodyStats::default()),
            capture: None,
            trigger_label: None,
            in_flight: None,
            gateway: gateway.clone(),
        })
    }

    /// The call's run record, filled in step by step.
    ///
    /// # Panics
    /// After the record was written (a bug in the request path).
    pub fn record(&mut self) -> &mut RunRecord {
        self.record.as_mut().expect("a call's record is taken only when it is written")
    }

    /// The call's request id.
    pub fn request_id(&self) -> &str {
        self.record.as_ref().map_or("", |record| &record.id)
    }

    /// Writes the finished call: the access-log line, its exported span and its run record
    /// (with the capture, if the trigger asks for one). The only place any of them is written.
    fn finish(&mut self, bytes_out: u64, completed: bool) {
        let Some(record) = self.record.as_mut() else { return };
        record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        record.bytes_in = self.request_body.bytes.load(Ordering::Relaxed);
        record.bytes_out = bytes_out;
        if let Some(capture) = self.capture.take() {
            record.capture = Some(capture.captured(&self.request_body, record.bytes_in, bytes_out));
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a latency in whole milliseconds: never negative, far below 2^64"
        )]
        let duration_ms = record.latency_ms as u64;
        tracing::info!(
            target: "flowgate::access",
            request_id = %record.id,
            trace_id = record.trace_id.as_deref().unwrap_or("-"),
            trigger = record.trigger.as_deref().unwrap_or("-"),
            method = %record.method,
            path = %record.path,
            status = record.status,
            duration_ms,
            bytes_in = record.bytes_in,
            bytes_out,
            completed,
            decision = %record.decision,
            client = %record.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            certificate = record.certificate.as_deref().unwrap_or("-"),
            "call"
        );
        if let Some(spans) = &self.gateway.spans {
            spans.call_finished(record, &self.trace, self.steps);
        }
        // Written in place when the ring can take it so (and then kept for a later call of
        // this thread); else the record is moved in.
        let in_place = self.gateway.audit.write_in_place(record);
        if let Some(record) = self.record.take() {
            if in_place {
                spare(record);
            } else {
                self.gateway.audit.write_moved(record);
            }
        }
    }
}

thread_local! {
    /// Records of this thread's finished calls, already copied into the run history:
    /// their string buffers serve the next calls' records ([`Call::begin`]).
    static SPARE_RECORDS: std::cell::RefCell<Vec<RunRecord>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How many finished records a thread keeps for reuse: about the calls it has in flight.
const SPARE_RECORDS_MAX: usize = 64;

/// Keeps a written record for a later call, unless enough are kept, or its buffers grew
/// large (a long path or reason): those are freed rather than held.
fn spare(record: RunRecord) {
    let large = record.path.capacity() + record.reason.as_ref().map_or(0, String::capacity) > 4096;
    if !large && record.capture.is_none() {
        SPARE_RECORDS.with_borrow_mut(|spares| {
            if spares.len() < SPARE_RECORDS_MAX {
                spares.push(record);
            }
        });
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // A record still here was never handed to a response (the body's end writes those).
        let Some(record) = self.record.as_mut() else { return };
        // The upstream may already have the request: the run history must still say so.
        "client_closed".clone_into(&mut record.decision);
        record.reason = Some("the caller went away before the response".to_owned());
        record.status = 499;
        // Nothing was answered: there is no response to capture.
        self.capture = None;
        self.finish(0, false);
    }
}

impl Capture {
    /// The run record's capture of a finished call.
    fn captured(self, request_body: &BodyStats, bytes_in: u64, bytes_out: u64) -> crate::audit::Captured {
        let rules = &self.trigger.capture;
        let request_prefix = request_body.tap.as_ref().map(body::Tap::bytes).unwrap_or_default();
        // Values of dropped request fields are redacted wherever they reappear
        // (an upstream echoing its input), like injected secrets.
        let mut redactor = self.redactor;
        redactor.add_private_values(crate::audit::private_values(rules, &request_prefix));
        let hidden = redactor.record_values();
        let (response_body, response_len) = redactor.scrub_captured(self.response_body.bytes(), bytes_out);
        crate::audit::Captured {
            request: Some(crate::audit::capture_request(
                rules,
                &self.request_headers,
                &request_prefix,
                bytes_in,
                &hidden,
            )),
            response: Some(crate::audit::capture_response(
                rules,
                &self.response_headers,
                &response_body,
                response_len,
                &hidden,
            )),
        }
    }
}

/// The response body a call hands to its connection: the response, observed so that the
/// call is finished (`Call::finish`) exactly once, when the body ends or is dropped. The
/// call travels inside the body, boxed: the response is moved whole a dozen times on its
/// way out (the service future, hyper's dispatch, h2's stream task); a box moves as a
/// pointer.
pub struct CallBody(ObservedBody<ResponseBody, Box<Call>>);

/// The end of an answered call: its run record, written by `Call::finish` in place.
impl body::OnEnd for Box<Call> {
    fn ended(mut self, bytes_out: u64, completed: bool) {
        self.finish(bytes_out, completed);
    }
}

impl http_body::Body for CallBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// Wraps the response body so that the call is finished ([`Call::finish`]) exactly once,
/// when the body ends or is dropped, with real byte counts. The request metrics are counted
/// now, at the response head (`flowgate_request_duration_seconds` is head to head).
///
/// # Panics
/// When the call's record was already handed over (a bug in the request path).
pub(super) fn record_on_end(mut call: Box<Call>, response: Response<ResponseBody>) -> Response<CallBody> {
    let Call { record, gateway, trigger_label, started, capture, .. } = &mut *call;
    let record = record.as_mut().expect("a call's response is handed over once");
    record.status = response.status().as_u16();
    gateway.request_metrics.answered(
        trigger_label.as_ref(),
        &record.method,
        record.status,
        started.elapsed().as_secs_f64(),
    );
    let tap = capture.as_ref().map(|c| c.response_body.clone());
    response.map(|body| CallBody(ObservedBody::new(body, tap, call)))
}
