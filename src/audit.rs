//! The run history: one [`RunRecord`] per call, captured inputs and outputs with the
//! protections admins rely on (secure inputs/outputs, `_private` fields, private
//! parameters, credentials and injected secrets never recorded), the sinks that keep
//! records (a JSON-lines file with rotation, stdout, an in-memory ring for the admin
//! API), and the redacted policy view shown to admins by role.
//!
//! The record is assembled by the request pipeline and handed to [`AuditLog::write`],
//! which never fails and never blocks the request on disk I/O: records go through a
//! bounded channel to a writer thread. Capture rules are compiled per trigger
//! ([`CaptureRules::compile`]) so that nothing is parsed per request.

mod capture;
#[allow(
    clippy::disallowed_methods,
    reason = "a query's relative times count from now; narrow this to the call once the file is free to edit"
)]
mod query;
mod record;
mod role;
#[allow(
    clippy::disallowed_methods,
    reason = "its tests stamp records with the real time; narrow this to them once the file is free to edit"
)]
mod sink;
mod view;

pub use capture::{
    CaptureParts, CaptureRules, CapturedBody, CapturedMessage, REDACTED, capture_request, capture_response,
    private_values,
};
pub use query::{DEFAULT_LIMIT, MAX_LIMIT, RunFilter};
pub(crate) use record::{ALLOWED, format_time};
pub use record::{Captured, RunRecord, RunSummary, WebhookDelivery};
pub use role::{AdminRole, UnknownRole};
pub use sink::{AuditConfig, AuditLog, AuditStats, MAX_ANSWER_BYTES, MAX_CONCURRENT_READS, RawAudit};
pub use view::{is_secret_reference, policy_view, policy_view_table};
pub(crate) use view::{policy_view_tagged, untag_literals};
