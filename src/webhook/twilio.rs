//! Twilio: `X-Twilio-Signature: <base64>`, HMAC-SHA1 under the account's auth token of
//! the URL Twilio called (the trigger's configured `public_url` plus the query) followed,
//! for a form body, by every parameter's name and value in sorted order. A JSON body is
//! covered instead through the `bodySHA256` query parameter (its SHA-256 in hex), which
//! the URL's signature covers. A body neither way covers is refused: the bytes forwarded
//! must be bytes the sender signed.

use super::mac::{self, Algorithm};
use super::verify::{Delivery, Refusal, Verified};
use crate::secrets::SecretValue;
use std::collections::{BTreeMap, BTreeSet};

/// The text Twilio signs for a URL and a form body: the URL, then for each parameter name
/// in sorted order, each of its distinct values in sorted order, as `name` + `value`.
pub fn signed_text(url: &str, form: &[(String, String)]) -> String {
    let mut params: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in form {
        params.entry(name).or_default().insert(value);
    }
    let mut text = url.to_owned();
    for (name, values) in params {
        for value in values {
            text.push_str(name);
            text.push_str(value);
        }
    }
    text
}

fn is_form(delivery: &Delivery<'_>) -> bool {
    delivery
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// Verifies a Twilio request to `public_url`.
///
/// # Errors
/// [`Refusal`].
pub fn verify(delivery: &Delivery<'_>, public_url: &str, secrets: &[SecretValue]) -> Result<Verified, Refusal> {
    let header = delivery.header("x-twilio-signature")?;
    let sent = mac::from_base64(header).ok_or(Refusal::Malformed("the signature is not base64"))?;
    let url = match delivery.query.filter(|q| !q.is_empty()) {
        Some(query) => format!("{public_url}?{query}"),
        None => public_url.to_owned(),
    };
    let body_hash = delivery.query.and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "bodySHA256")
            .map(|(_, v)| v.into_owned())
    });
    let form: Vec<(String, String)> = match &body_hash {
        Some(_) => Vec::new(),
        None if is_form(delivery) => url::form_urlencoded::parse(delivery.body).into_owned().collect(),
        None if delivery.body.is_empty() => Vec::new(),
        None => return Err(Refusal::Malformed("a body that is neither a form nor covered by bodySHA256")),
    };
    let text = signed_text(&url, &form);
    let matched = secrets.iter().any(|secret| {
        mac::equal(&mac::hmac(Algorithm::Sha1, &mac::raw_key(secret.expose_secret()), &[text.as_bytes()]), &sent)
    });
    if !matched {
        return Err(Refusal::SignatureInvalid);
    }
    if let Some(expected) = body_hash {
        use sha2::Digest as _;
        let actual = hex::encode(sha2::Sha256::digest(delivery.body));
        if !mac::equal(actual.as_bytes(), expected.to_ascii_lowercase().as_bytes()) {
            return Err(Refusal::SignatureInvalid);
        }
    }
    let id = delivery.header("i-twilio-idempotency-token").ok().map(str::to_owned);
    Ok(Verified { delivery_id: id, id_signed: false, timestamp: None, signature: sent })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_sign_sorted_by_name_then_value() {
        let form = vec![("To".into(), "b".into()), ("From".into(), "x".into()), ("To".into(), "a".into())];
        assert_eq!(signed_text("https://h/p", &form), "https://h/pFromxToaTob");
    }
}
