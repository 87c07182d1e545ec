//! W3C Trace Context (`traceparent`, `tracestate`): every call belongs to a trace.
//!
//! A caller's valid `traceparent` is continued: the call keeps its trace id, and the
//! upstream is told that flowgate's own span (a fresh span id) is its parent. A missing or
//! invalid one starts a fresh trace; an invalid value is never forwarded, and neither is
//! the `tracestate` that came with it (the specification forbids reading `tracestate` once
//! `traceparent` failed). The trace id goes into the run record and the access-log line, so
//! a flow run can be found from the caller's trace (`GET /runs?trace_id=...`).
//!
//! Parsing follows the W3C Trace Context recommendation (level 1, §3.2): lower-case hex
//! only, version `ff` refused, all-zero trace or parent ids refused, exact field lengths;
//! a higher version is read for its first four fields when the rest is separated by `-`.

mod context;
mod export;

pub use context::TraceContext;
pub use export::{EXPORT_TIMEOUT, ExportSettings, ExportStartError, RawTraces, SpanExport, SpanFields, Step, Steps};

use context::new_span_id;
