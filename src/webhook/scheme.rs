//! [`Scheme`]: a compiled signature scheme, and the one `match` that dispatches a
//! delivery to its scheme's file, then judges the signed timestamp.

use super::generic::GenericHmac;
use super::verify::{Delivery, Refusal, Verified};
use crate::secrets::SecretValue;
use http::HeaderMap;

/// A compiled signature scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// Standard Webhooks (`webhook-*`, or Svix's `svix-*` headers).
    Standard,
    /// GitHub (`X-Hub-Signature-256`).
    Github,
    /// Stripe (`Stripe-Signature`).
    Stripe,
    /// Slack (`X-Slack-Signature`, `v0`).
    Slack,
    /// Shopify (`X-Shopify-Hmac-Sha256`).
    Shopify,
    /// Twilio (`X-Twilio-Signature`) over the URL the sender called.
    Twilio {
        /// The public URL Twilio is configured to call (before any query).
        public_url: String,
    },
    /// A sender not listed, described by its header, hash, encoding and signed content.
    Hmac(GenericHmac),
}

impl Scheme {
    /// Its name in policy text, metrics and the run record's principal.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Github => "github",
            Self::Stripe => "stripe",
            Self::Slack => "slack",
            Self::Shopify => "shopify",
            Self::Twilio { .. } => "twilio",
            Self::Hmac(_) => "hmac",
        }
    }

    /// The sender's delivery id as sent, for the run record even of a refused delivery:
    /// visible ASCII only, at most 128 bytes (it is not trusted; it may not be signed).
    pub fn delivery_id(&self, headers: &HeaderMap) -> Option<String> {
        let name: &str = match self {
            Self::Standard => {
                if headers.contains_key("webhook-id") {
                    "webhook-id"
                } else {
                    "svix-id"
                }
            }
            Self::Github => "x-github-delivery",
            Self::Shopify => "x-shopify-webhook-id",
            Self::Twilio { .. } => "i-twilio-idempotency-token",
            Self::Hmac(generic) => generic.id_header()?.as_str(),
            Self::Stripe | Self::Slack => return None,
        };
        let value = headers.get(name)?.to_str().ok()?;
        (value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic())).then(|| value.to_owned())
    }

    /// True when the scheme signs a timestamp, so staleness can be judged.
    pub fn signs_timestamp(&self) -> bool {
        match self {
            Self::Standard | Self::Stripe | Self::Slack => true,
            Self::Hmac(generic) => generic.signs_timestamp(),
            Self::Github | Self::Shopify | Self::Twilio { .. } => false,
        }
    }

    /// Checks the delivery's signature against every secret (current and previous: a
    /// rotation overlaps), then the signed timestamp against `now` ± `tolerance_secs`.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn verify(
        &self,
        delivery: &Delivery<'_>,
        secrets: &[SecretValue],
        now: i64,
        tolerance_secs: i64,
    ) -> Result<Verified, Refusal> {
        let verified = match self {
            Self::Standard => super::standard::verify(delivery, secrets)?,
            Self::Github => super::github::verify(delivery, secrets)?,
            Self::Stripe => super::stripe::verify(delivery, secrets)?,
            Self::Slack => super::slack::verify(delivery, secrets)?,
            Self::Shopify => super::shopify::verify(delivery, secrets)?,
            Self::Twilio { public_url } => super::twilio::verify(delivery, public_url, secrets)?,
            Self::Hmac(generic) => generic.verify(delivery, secrets)?,
        };
        // Judged only once the signature holds, so that an unsigned caller learns nothing.
        if let Some(timestamp) = verified.timestamp {
            let age_secs = now.saturating_sub(timestamp);
            if age_secs.abs() > tolerance_secs {
                return Err(Refusal::TimestampStale { age_secs });
            }
        }
        Ok(verified)
    }
}
