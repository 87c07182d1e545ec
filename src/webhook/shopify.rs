//! Shopify: `X-Shopify-Hmac-Sha256: <base64>`, HMAC-SHA256 of the body under the app's
//! client secret. The webhook id (`X-Shopify-Webhook-Id`) and `X-Shopify-Triggered-At`
//! are not signed.

use super::mac::{self, Algorithm};
use super::verify::{Delivery, Refusal, Verified};
use crate::secrets::SecretValue;

/// Verifies a Shopify delivery.
///
/// # Errors
/// [`Refusal`].
pub fn verify(delivery: &Delivery<'_>, secrets: &[SecretValue]) -> Result<Verified, Refusal> {
    let header = delivery.header("x-shopify-hmac-sha256")?;
    let sent = mac::from_base64(header).ok_or(Refusal::Malformed("the signature is not base64"))?;
    let matched = secrets.iter().any(|secret| {
        mac::equal(&mac::hmac(Algorithm::Sha256, &mac::raw_key(secret.expose_secret()), &[delivery.body]), &sent)
    });
    if !matched {
        return Err(Refusal::SignatureInvalid);
    }
    let id = delivery.header("x-shopify-webhook-id").ok().map(str::to_owned);
    Ok(Verified { delivery_id: id, id_signed: false, timestamp: None, signature: sent })
}
