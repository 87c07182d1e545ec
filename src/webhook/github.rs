//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the body under the
//! webhook's secret; the delivery id (`X-GitHub-Delivery`) is not signed, and no
//! timestamp is sent.

use super::mac::{self, Algorithm};
use super::verify::{Delivery, Refusal, Verified};
use crate::secrets::SecretValue;

/// Parses `sha256=<hex>`.
///
/// # Errors
/// [`Refusal::Malformed`] without the prefix or with bad hex.
pub fn parse_signature(header: &str) -> Result<Vec<u8>, Refusal> {
    let hex = header.strip_prefix("sha256=").ok_or(Refusal::Malformed("the signature lacks sha256="))?;
    mac::from_hex(hex).ok_or(Refusal::Malformed("the signature is not hex"))
}

/// Verifies a GitHub delivery.
///
/// # Errors
/// [`Refusal`].
pub fn verify(delivery: &Delivery<'_>, secrets: &[SecretValue]) -> Result<Verified, Refusal> {
    let sent = parse_signature(delivery.header("x-hub-signature-256")?)?;
    let matched = secrets.iter().any(|secret| {
        mac::equal(&mac::hmac(Algorithm::Sha256, &mac::raw_key(secret.expose_secret()), &[delivery.body]), &sent)
    });
    if !matched {
        return Err(Refusal::SignatureInvalid);
    }
    let id = delivery.header("x-github-delivery").ok().map(str::to_owned);
    Ok(Verified { delivery_id: id, id_signed: false, timestamp: None, signature: sent })
}
