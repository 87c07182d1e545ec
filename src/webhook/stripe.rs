//! Stripe: `Stripe-Signature: t=TIMESTAMP,v1=<hex>[,v1=<hex>…][,v0=…]`, HMAC-SHA256 of
//! `TIMESTAMP.BODY` under the endpoint's `whsec_…` secret used as text (not decoded).
//! During a secret roll Stripe sends one `v1` per live secret.

use super::mac::{self, Algorithm};
use super::verify::{Delivery, Refusal, Verified, parse_timestamp};
use crate::secrets::SecretValue;

/// `v1` signatures read from one header at most: each costs a MAC per secret.
pub const MAX_SIGNATURES: usize = 16;

/// A parsed `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeHeader {
    /// The `t` element, as sent (it is signed as text).
    pub timestamp: String,
    /// The decoded `v1` signatures, in order.
    pub v1: Vec<Vec<u8>>,
}

/// Parses a `Stripe-Signature` header: comma-separated `key=value` elements; exactly one
/// `t`; `v1` elements collected; other schemes (`v0`, test-mode extras) ignored.
///
/// # Errors
/// [`Refusal::Malformed`] for an element without `=`, no or several `t`, a `v1` that is
/// not hex, or more than [`MAX_SIGNATURES`] of them.
pub fn parse_header(header: &str) -> Result<StripeHeader, Refusal> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for element in header.split(',') {
        let (key, value) = element.trim().split_once('=').ok_or(Refusal::Malformed("an element has no '='"))?;
        match key {
            "t" if timestamp.is_some() => return Err(Refusal::Malformed("t is repeated")),
            "t" => timestamp = Some(value.to_owned()),
            "v1" if v1.len() >= MAX_SIGNATURES => return Err(Refusal::Malformed("too many signatures")),
            "v1" => v1.push(mac::from_hex(value).ok_or(Refusal::Malformed("a v1 signature is not hex"))?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Refusal::Malformed("no t element"))?;
    Ok(StripeHeader { timestamp, v1 })
}

/// Verifies a Stripe delivery.
///
/// # Errors
/// [`Refusal`].
pub fn verify(delivery: &Delivery<'_>, secrets: &[SecretValue]) -> Result<Verified, Refusal> {
    let header = parse_header(delivery.header("stripe-signature")?)?;
    let timestamp = parse_timestamp(&header.timestamp)?;
    let content: [&[u8]; 3] = [header.timestamp.as_bytes(), b".", delivery.body];
    for secret in secrets {
        let expected = mac::hmac(Algorithm::Sha256, &mac::raw_key(secret.expose_secret()), &content);
        if let Some(sent) = header.v1.iter().find(|sent| mac::equal(&expected, sent)) {
            return Ok(Verified {
                delivery_id: None,
                id_signed: false,
                timestamp: Some(timestamp),
                signature: sent.clone(),
            });
        }
    }
    Err(Refusal::SignatureInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    proptest! {
        /// The model: elements split on `,`; exactly one `t`; every `v1` decoded from hex in
        /// order; other keys ignored; an element without `=` or a `v1` that is not hex, a
        /// missing or repeated `t` refuse the header.
        #[test]
        fn parsed_headers_match_the_model(
            elements in prop::collection::vec(
                (prop::sample::select(vec!["t", "v1", "v0", "x", ""]), "[0-9a-fA-FxyZ=]{0,12}", any::<bool>()),
                0..8,
            ),
        ) {
            let header: Vec<String> = elements
                .iter()
                .map(|(key, value, has_eq)| if *has_eq { format!("{key}={value}") } else { (*key).to_owned() })
                .collect();
            let header = header.join(",");
            let model = (|| {
                let mut t = None;
                let mut v1 = Vec::new();
                for element in header.split(',') {
                    let eq = element.find('=')?;
                    let (key, value) = (&element[..eq], &element[eq + 1..]);
                    if key == "t" {
                        if t.is_some() { return None; }
                        t = Some(value.to_owned());
                    } else if key == "v1" {
                        if value.len() % 2 != 0 || !value.bytes().all(|b| b.is_ascii_hexdigit()) { return None; }
                        v1.push((0..value.len()).step_by(2).map(|i| u8::from_str_radix(&value[i..i + 2], 16).unwrap()).collect::<Vec<u8>>());
                    }
                }
                Some(StripeHeader { timestamp: t?, v1 })
            })();
            prop_assert_eq!(parse_header(&header).ok(), model);
        }
    }

    #[test]
    fn header_elements_are_read_in_any_order() {
        let parsed = parse_header("v1=00ff,t=12,v0=zz,v1=01").unwrap();
        assert_eq!(parsed, StripeHeader { timestamp: "12".into(), v1: vec![vec![0, 255], vec![1]] });
        assert!(parse_header("v1=00").is_err());
        assert!(parse_header("t=1,t=2").is_err());
        assert!(parse_header("t=1,v1").is_err());
    }
}
