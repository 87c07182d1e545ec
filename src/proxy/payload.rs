//! [`check_contract`]: the trigger's payload contract, the last check before anything
//! costly or sensitive. It runs inside `forward`, with the call's `Permit` already issued
//! by `admit` (so an anonymous or rate-limited caller never makes the gateway read or
//! parse a body), and before the first use of that permit (secrets, the upstream).
//!
//! The head first (media type, header and query rules: nothing read yet, so a refusal
//! drains the body as usual), then the body, read whole up to the contract's `max_body`
//! under the usual read pace, judged as strict JSON and against the schema. The bytes
//! judged are the bytes forwarded: [`Checked`] carries them on to the upstream request.

use super::body::{BodyStats, CappedBody, Pace, PacedBody};
use super::permit::Permit;
use crate::contract::QueryUnbuildable;
use crate::denial::{PayloadFailure, PayloadRefusal, PayloadStatus, Rejection};
use crate::policy::{Policy, Trigger};
use crate::web::{BodyRefusal, RequestBody, declared_length};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A request body read whole and judged by the trigger's contract: only
/// [`check_contract`] builds one, and what it holds is what the upstream gets.
pub(super) struct Checked(Bytes);

impl Checked {
    /// The bytes as judged.
    pub(super) fn into_bytes(self) -> Bytes {
        self.0
    }
}

/// Checks the call against its trigger's contract. Dropped headers are removed from
/// `parts`, dropped query parameters from its URI. Returns the body when the contract
/// read it whole (it is then taken out of `body`). The `Permit` proves the call was
/// admitted: the contract is never judged for a caller that was not.
///
/// # Errors
/// 415, 400 (query/header rule, body not strict JSON, body unreadable), 413, 408, 422.
pub(super) async fn check_contract<B: RequestBody>(
    policy: &Policy,
    trigger: &Trigger,
    parts: &mut http::request::Parts,
    body: &mut Option<B>,
    verified: &mut Option<Bytes>,
    stats: &Arc<BodyStats>,
    _admitted: &Permit,
) -> Result<Option<Checked>, Rejection> {
    let Some(contract) = &trigger.contract else {
        return Ok(None);
    };
    let refuse = |refusal: PayloadRefusal| -> Rejection {
        for keyword in refusal.keywords() {
            metrics::counter!(
                "flowgate_contract_refusals_total",
                "trigger" => trigger.name_label.clone(),
                "keyword" => keyword.to_owned()
            )
            .increment(1);
        }
        refusal.into()
    };

    // The head: nothing of the body is read yet.
    let kept_query =
        contract.check_head(&mut parts.headers, parts.uri.query(), &trigger.reserved_query).map_err(refuse)?;
    if let Some(query) = kept_query {
        parts.uri = with_query(&parts.uri, &query).map_err(QueryUnbuildable)?;
    }

    let Some(limit) = contract.body_limit() else {
        return Ok(None);
    };
    let too_large = || PayloadRefusal::one(PayloadStatus::TooLarge, PayloadFailure::body("", "max_body"));
    if declared_length(&parts.headers).is_some_and(|length| length > limit) {
        return Err(refuse(too_large()));
    }

    // A webhook delivery was read whole and verified in `admit`: the contract judges
    // those bytes, the ones that will be forwarded.
    if let Some(bytes) = verified.take() {
        if bytes.len() as u64 > limit {
            return Err(refuse(too_large()));
        }
        contract.check_body(&bytes).map_err(refuse)?;
        return Ok(Some(Checked(bytes)));
    }

    // The body, whole: held to the read pace, capped at the contract's limit.
    let Some(inbound) = body.take() else {
        return Err(crate::denial::Failure::Internal { reason: "the request body was taken twice".into() }.into());
    };
    let pace = Pace { timeout: policy.edge.body_read_timeout, min_rate: policy.edge.body_min_rate };
    let capped = CappedBody::new(PacedBody::new(inbound, pace, stats.clone()), limit, stats.clone());
    let bytes = match capped.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) if stats.exceeded.load(Ordering::Relaxed) => return Err(refuse(too_large())),
        Err(_) if stats.timed_out.load(Ordering::Relaxed) => {
            return Err(BodyRefusal::TooSlow { reason: "contract: the body arrived too slowly".into() }.into());
        }
        Err(error) => {
            let reason = error.to_string();
            return Err(BodyRefusal::Unreadable { body: "contract: the request body", reason }.into());
        }
    };
    contract.check_body(&bytes).map_err(refuse)?;
    Ok(Some(Checked(bytes)))
}

/// `uri` with its query replaced (removed when empty).
fn with_query(uri: &http::Uri, query: &str) -> Result<http::Uri, http::Error> {
    let path_and_query = if query.is_empty() { uri.path().to_owned() } else { format!("{}?{query}", uri.path()) };
    let mut builder = http::Uri::builder();
    if let Some(scheme) = uri.scheme() {
        builder = builder.scheme(scheme.clone());
    }
    if let Some(authority) = uri.authority() {
        builder = builder.authority(authority.clone());
    }
    builder.path_and_query(path_and_query).build()
}
