//! The run history: one [`RunRecord`] per call, captured inputs and outputs with the
//! protections admins rely on (secure inputs/outputs, `_private` fields, private
//! parameters, credentials and injected secrets never recorded), the sinks that keep
//! records (a JSON-lines file with rotation, stdout, an in-memory ring for the admin
//! API). (Admin roles and the redacted policy view live in `policy`.)
//!
//! The record is assembled by the request pipeline and handed to [`AuditLog::write`],
//! which never fails and never blocks the request on disk I/O: records go through a
//! bounded channel to a writer thread. Capture rules are compiled per trigger
//! ([`CaptureRules::compile`]) so that nothing is parsed per request.

mod capture;
mod query;
mod record;
mod sink;

pub use capture::{
    CaptureParts, CaptureRules, CapturedBody, CapturedMessage, REDACTED, capture_request, capture_response,
    private_values,
};
pub use query::{DEFAULT_LIMIT, FilterError, MAX_LIMIT, RunFilter};
pub(crate) use record::{ALLOWED, format_time};
pub use record::{Captured, RunRecord, RunSummary, WebhookDelivery};

pub use sink::{AuditConfig, AuditLog, AuditStats, MAX_ANSWER_BYTES, MAX_CONCURRENT_READS, RawAudit};
