//! [`check_delivery`]: admission of a `who = "webhook"` call, in place of a token. The
//! body is read whole (within the trigger's `max_body_bytes`, at the edge's read pace),
//! a handshake the trigger expects is answered, the signing secrets come from the vault
//! cache, the signature and timestamp are verified, and the replay key is read; the
//! replay guard is claimed last in `admit`, once every other check has passed. The
//! bytes verified are the bytes forwarded ([`VerifiedDelivery::body`]).
//!
//! The signing secrets are resolved before the call is admitted (they are what admits
//! it), after the cheap checks and the pre-authentication shield, so that a flood of
//! forged deliveries from one address stops at the shield; values are cached by the
//! secret store, so a delivery costs no vault call while the cache is warm.

use super::body::{BodyStats, CappedBody, Pace, PacedBody};
use super::call::Call;
use crate::auth::Caller;
use crate::denial::{Failure, Rejection};
use crate::gateway::Gateway;
use crate::policy::{Policy, Trigger};
use crate::web::{BodyRefusal, RequestBody};
use crate::webhook::{Delivery, DeliveryError, WebhookRule, handshake::Answer, replay::Digest};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A delivery that passed its signature check (or a handshake to answer).
#[derive(Debug)]
pub struct VerifiedDelivery {
    /// The body as received and verified: what the upstream gets.
    pub body: Bytes,
    /// The replay guard's key, `None` with `replay = "off"` or for a handshake.
    pub replay: Option<Digest>,
    /// The answer, when the call is a handshake the trigger expects.
    pub answer: Option<Answer>,
}

/// The caller every delivery of a webhook trigger is: its source. Its rate-limit budget
/// (`key = "principal"`, the default) is the trigger's sender as a whole.
pub fn webhook_caller(trigger: &Trigger, rule: &WebhookRule) -> Caller {
    Caller {
        tenant: None,
        principal: rule.principal(),
        app_id: None,
        roles: Vec::new(),
        scopes: Vec::new(),
        principal_ids: vec![rule.principal()],
        budget_key: format!("webhook/{}", trigger.name).into(),
    }
}

/// Reads and verifies a webhook delivery.
///
/// # Errors
/// 413 over `max_body_bytes`, 408 too slow, 400 unreadable; 401 `signature_invalid`,
/// `timestamp_stale`; 503 `secret_unavailable` when no signing secret can be resolved.
pub(super) async fn check_delivery<B: RequestBody>(
    gateway: &Gateway,
    policy: &Policy,
    trigger: &Trigger,
    rule: &WebhookRule,
    parts: &http::request::Parts,
    body: &mut Option<B>,
    call: &mut Call,
) -> Result<VerifiedDelivery, Rejection> {
    let scheme = rule.scheme.name();
    call.record().webhook = Some(crate::audit::WebhookDelivery {
        scheme: scheme.to_owned(),
        delivery_id: rule.scheme.delivery_id(&parts.headers),
        handshake: None,
    });
    let bytes = read_whole(policy, trigger, body, call).await?;

    // Unsigned handshakes (Event Grid, Graph) come before any signature.
    if let Some(handshake) = rule.handshake.filter(|h| !h.is_signed())
        && let Some(answer) = handshake.answer(&parts.headers, parts.uri.query(), &bytes)
    {
        return Ok(handshake_answered(call, handshake.name(), bytes, answer));
    }

    let secrets = resolve_secrets(gateway, policy, rule).await;
    let delivery = Delivery { headers: &parts.headers, body: &bytes, query: parts.uri.query() };
    let now = i64::try_from(gateway.clock.unix_time().as_secs()).unwrap_or(i64::MAX);
    let verified = match rule.verify(&delivery, &secrets.values, now) {
        Ok(verified) => verified,
        Err(refusal) => {
            // A secret that could not be resolved may be the one the delivery is signed
            // with: that is our failure, not the sender's.
            let error = match secrets.unavailable {
                Some(unavailable) => DeliveryError::SecretUnavailable(unavailable),
                None => DeliveryError::Unverified { scheme, delivery_id: delivery_id(call), refusal },
            };
            return Err(refused(scheme, error));
        }
    };
    if let Some(handshake) = rule.handshake.filter(|h| h.is_signed())
        && let Some(answer) = handshake.answer(&parts.headers, parts.uri.query(), &bytes)
    {
        return Ok(handshake_answered(call, handshake.name(), bytes, answer));
    }
    let replay = rule
        .replay_key(&verified, &bytes)
        .map_err(|problem| refused(scheme, DeliveryError::NoReplayKey { scheme, problem }))?
        .map(|key| crate::webhook::replay::digest(&trigger.name, &key));
    Ok(VerifiedDelivery { body: bytes, replay, answer: None })
}

/// Claims the delivery's replay key: last of `admit`'s checks, so a delivery refused for
/// any other reason can be retried.
///
/// # Errors
/// 401 `replayed`; 503 when the guard cannot judge.
pub(super) async fn claim_replay(
    gateway: &Gateway,
    rule: &WebhookRule,
    call: &mut Call,
    key: Digest,
) -> Result<(), Rejection> {
    let scheme = rule.scheme.name();
    let error = match gateway.replay_guard.claim(key, rule.tolerance).await {
        Ok(crate::webhook::Claim::Fresh) => return Ok(()),
        Ok(crate::webhook::Claim::Replayed) => DeliveryError::Replayed { scheme, delivery_id: delivery_id(call) },
        Err(error) => error.into(),
    };
    Err(refused(scheme, error))
}

fn handshake_answered(call: &mut Call, name: &str, body: Bytes, answer: Answer) -> VerifiedDelivery {
    if let Some(record) = &mut call.record().webhook {
        record.handshake = Some(name.to_owned());
    }
    VerifiedDelivery { body, replay: None, answer: Some(answer) }
}

/// Counts a webhook refusal by scheme and reason.
fn count(scheme: &'static str, reason: &'static str) {
    metrics::counter!("flowgate_webhook_refusals_total", "scheme" => scheme, "reason" => reason).increment(1);
}

/// Counts a refused delivery, then answers it through the refusal table.
fn refused(scheme: &'static str, error: DeliveryError) -> Rejection {
    if let Some(reason) = error.counted_as() {
        count(scheme, reason);
    }
    error.into()
}

/// The delivery id the sender's header names, as recorded.
fn delivery_id(call: &mut Call) -> Option<String> {
    call.record().webhook.as_ref().and_then(|w| w.delivery_id.clone())
}

/// The secrets resolved, and what could not be.
struct Resolved {
    values: Vec<crate::secrets::SecretValue>,
    /// Why a secret is missing (naming its reference only).
    unavailable: Option<crate::secrets::SecretError>,
}

async fn resolve_secrets(gateway: &Gateway, policy: &Policy, rule: &WebhookRule) -> Resolved {
    let mut resolved = Resolved { values: Vec::with_capacity(rule.secrets.len()), unavailable: None };
    for reference in &rule.secrets {
        match gateway.secrets.lookup(reference, &policy.vaults).await {
            Ok(value) => resolved.values.push(value),
            Err(error) => resolved.unavailable = Some(error),
        }
    }
    resolved
}

/// Reads the body whole, within the trigger's limit and the edge's read pace.
async fn read_whole<B: RequestBody>(
    policy: &Policy,
    trigger: &Trigger,
    body: &mut Option<B>,
    call: &mut Call,
) -> Result<Bytes, Rejection> {
    let Some(body) = body.take() else {
        return Err(Failure::Internal { reason: "the request body was taken twice".into() }.into());
    };
    // Counted apart from the call's own statistics: the verified bytes are counted (and
    // captured) once, when they are sent upstream.
    let stats = Arc::new(BodyStats::default());
    let pace = Pace { timeout: policy.edge.body_read_timeout, min_rate: policy.edge.body_min_rate };
    let capped = CappedBody::new(PacedBody::new(body, pace, stats.clone()), trigger.max_body_bytes, stats.clone());
    let too_slow = || BodyRefusal::TooSlow { reason: "the webhook body arrived too slowly".into() };
    let collected = match tokio::time::timeout(trigger.response_timeout, capped.collect()).await {
        Err(_elapsed) => return Err(too_slow().into()),
        Ok(Err(_)) if stats.exceeded.load(Ordering::Relaxed) => {
            return Err(BodyRefusal::TooLarge { limit: trigger.max_body_bytes }.into());
        }
        Ok(Err(_)) if stats.timed_out.load(Ordering::Relaxed) => return Err(too_slow().into()),
        Ok(Err(error)) => {
            return Err(BodyRefusal::Unreadable { body: "the webhook body", reason: error.to_string() }.into());
        }
        Ok(Ok(collected)) => collected,
    };
    // The body was read to its end: a refusal keeps the connection.
    call.request_body.ended.store(true, Ordering::Relaxed);
    Ok(collected.to_bytes())
}
