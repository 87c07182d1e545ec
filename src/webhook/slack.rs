//! Slack: `X-Slack-Signature: v0=<hex>`, HMAC-SHA256 of `v0:TIMESTAMP:BODY` under the
//! app's signing secret, with `X-Slack-Request-Timestamp`. Slack sends no delivery id.

use super::mac::{self, Algorithm};
use super::verify::{Delivery, Refusal, Verified, parse_timestamp};
use crate::secrets::SecretValue;

/// Parses `v0=<hex>`.
///
/// # Errors
/// [`Refusal::Malformed`] without the prefix or with bad hex.
pub fn parse_signature(header: &str) -> Result<Vec<u8>, Refusal> {
    let hex = header.strip_prefix("v0=").ok_or(Refusal::Malformed("the signature lacks v0="))?;
    mac::from_hex(hex).ok_or(Refusal::Malformed("the signature is not hex"))
}

/// Verifies a Slack request.
///
/// # Errors
/// [`Refusal`].
pub fn verify(delivery: &Delivery<'_>, secrets: &[SecretValue]) -> Result<Verified, Refusal> {
    let timestamp_text = delivery.header("x-slack-request-timestamp")?;
    let timestamp = parse_timestamp(timestamp_text)?;
    let sent = parse_signature(delivery.header("x-slack-signature")?)?;
    let content: [&[u8]; 4] = [b"v0:", timestamp_text.as_bytes(), b":", delivery.body];
    let matched = secrets.iter().any(|secret| {
        mac::equal(&mac::hmac(Algorithm::Sha256, &mac::raw_key(secret.expose_secret()), &content), &sent)
    });
    if !matched {
        return Err(Refusal::SignatureInvalid);
    }
    Ok(Verified { delivery_id: None, id_signed: false, timestamp: Some(timestamp), signature: sent })
}
