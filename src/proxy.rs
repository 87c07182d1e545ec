//! The request path. [`handle`] (`proxy/handle.rs`) reads top to bottom:
//!
//! 1. load the policy snapshot once (a reload never changes the rules under a call);
//! 2. [`admit`] (`proxy/admit.rs`): every check, cheapest first, each a plain function
//!    returning `Result<_, Denial>`; success yields a [`Permit`];
//! 3. [`forward`] (`proxy/forward.rs`): only with a permit; render the upstream request,
//!    stream it, stream the answer back;
//! 4. a refusal settles what is left of the request body first (`proxy/unread.rs`);
//! 5. exactly one access-log line and one run record, written when the response body
//!    ends (or is dropped), so the byte counts are real, or when the caller goes away
//!    first: both from `Call::finish` (`proxy/call.rs`).
//!
//! Beside these: `inbound` ([`Connection`]), `body` (read pace, size cap, buffered prefix,
//! response observer), `headers` (hygiene), `coding` (decoding for the scrubber), `permit`
//! ([`Permit`]), `payload` (the trigger's contract, judged inside `forward` before the
//! permit is first used). Plain HTTP pieces (body types, the request id, the upstream client and
//! its pools) live below, in `web`. This file only declares and re-exports.

mod admit;
mod body;
mod call;
mod certificate;
pub mod coding;
mod delivery;
mod forward;
mod handle;
mod headers;
mod inbound;
mod payload;
mod permit;
mod unread;

/// Kept at their old paths for the benches and tests that name them here.
pub use crate::web::{BoxError, REQUEST_ID, RequestBody};
pub use admit::{Admitted, admit};
pub use body::{BodyStats, BodyTooSlow, CappedBody, ObservedBody, OnEnd, Pace, PacedBody, Prefixed, StallGuard};
pub use call::{Call, CallBody};
pub use delivery::{VerifiedDelivery, webhook_caller};
pub use forward::{Forwarding, forward};
pub use handle::handle;
pub use headers::strip_hop_by_hop;
pub use inbound::Connection;
pub use permit::Permit;

#[cfg(test)]
mod tests;
