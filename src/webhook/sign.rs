//! Signing a delivery as a sender would, for `flowgate sign-webhook` (a ready-to-paste
//! signed `curl` against the demo) and the verification bench. The request path never
//! signs; tests sign with the senders' own libraries, not with this.

use super::mac::{self, Algorithm};
use super::scheme::Scheme;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Why a delivery cannot be signed here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The scheme needs more than a body to sign (Twilio's URL and form, a generic
    /// description): sign with the sender's own tools.
    #[error("scheme {0} is not signed by flowgate: use the sender's own tools")]
    Unsupported(&'static str),
    /// A Standard Webhooks secret that is not `whsec_` base64 (or a `whpk_` public key,
    /// which cannot sign).
    #[error("the secret is not a whsec_ signing secret")]
    BadSecret,
}

/// The headers a sender of `scheme` would send with `body` at `now` (Unix seconds), with
/// delivery id `id` where the scheme has one.
///
/// # Errors
/// [`SignError`].
pub fn sign(
    scheme: &Scheme,
    secret: &str,
    body: &[u8],
    now: i64,
    id: &str,
) -> Result<Vec<(String, String)>, SignError> {
    let ts = now.to_string();
    let key = mac::raw_key(secret);
    let headers = match scheme {
        Scheme::Standard => {
            let encoded = secret.strip_prefix("whsec_").ok_or(SignError::BadSecret)?;
            let key = zeroize::Zeroizing::new(mac::from_base64(encoded).ok_or(SignError::BadSecret)?);
            let signature = mac::hmac(Algorithm::Sha256, &key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
            vec![
                ("webhook-id".into(), id.to_owned()),
                ("webhook-timestamp".into(), ts),
                ("webhook-signature".into(), format!("v1,{}", STANDARD.encode(signature))),
            ]
        }
        Scheme::Github => vec![
            ("x-github-delivery".into(), id.to_owned()),
            (
                "x-hub-signature-256".into(),
                format!("sha256={}", hex::encode(mac::hmac(Algorithm::Sha256, &key, &[body]))),
            ),
        ],
        Scheme::Stripe => {
            let signature = mac::hmac(Algorithm::Sha256, &key, &[ts.as_bytes(), b".", body]);
            vec![("stripe-signature".into(), format!("t={ts},v1={}", hex::encode(signature)))]
        }
        Scheme::Slack => {
            let signature = mac::hmac(Algorithm::Sha256, &key, &[b"v0:", ts.as_bytes(), b":", body]);
            vec![
                ("x-slack-request-timestamp".into(), ts),
                ("x-slack-signature".into(), format!("v0={}", hex::encode(signature))),
            ]
        }
        Scheme::Shopify => vec![
            ("x-shopify-webhook-id".into(), id.to_owned()),
            ("x-shopify-hmac-sha256".into(), STANDARD.encode(mac::hmac(Algorithm::Sha256, &key, &[body]))),
        ],
        Scheme::Twilio { .. } | Scheme::Hmac(_) => return Err(SignError::Unsupported(scheme.name())),
    };
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretValue;
    use crate::webhook::Delivery;

    #[test]
    fn what_is_signed_here_verifies() {
        let body = br#"{"hello":"flowgate"}"#;
        for (scheme, secret) in [
            (Scheme::Standard, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            (Scheme::Github, "It's a Secret to Everybody"),
            (Scheme::Stripe, "whsec_test"),
            (Scheme::Slack, "8f742231b10e8888abcd99yyyzzz85a5"),
            (Scheme::Shopify, "shpss_x"),
        ] {
            let headers = sign(&scheme, secret, body, 1_700_000_000, "msg_1").unwrap();
            let mut map = http::HeaderMap::new();
            for (name, value) in headers {
                map.insert(http::HeaderName::try_from(name).unwrap(), value.parse().unwrap());
            }
            let delivery = Delivery { headers: &map, body, query: None };
            let secrets = [SecretValue::new(secret.to_owned())];
            assert!(scheme.verify(&delivery, &secrets, 1_700_000_010, 300).is_ok(), "{}", scheme.name());
        }
    }
}
