//! Standard Webhooks (and Svix, whose `svix-*` headers are the same scheme): `webhook-id`,
//! `webhook-timestamp` and `webhook-signature`, a space-separated list of `v1,<base64>`
//! (HMAC-SHA256) and `v1a,<base64>` (Ed25519) signatures over `id.timestamp.body`.
//! Secrets are `whsec_<base64>` HMAC keys or `whpk_<base64>` Ed25519 public keys.

use super::mac::{self, Algorithm, KeyBytes};
use super::verify::{Delivery, Refusal, Verified, parse_timestamp};
use crate::secrets::SecretValue;
use zeroize::Zeroizing;

const ID: &[&str] = &["webhook-id", "svix-id"];
const TIMESTAMP: &[&str] = &["webhook-timestamp", "svix-timestamp"];
const SIGNATURE: &[&str] = &["webhook-signature", "svix-signature"];

/// Signatures read from one header at most: each costs a MAC per secret.
pub const MAX_SIGNATURES: usize = 16;

/// One entry of a `webhook-signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// `v1,<base64>`: HMAC-SHA256.
    V1(Vec<u8>),
    /// `v1a,<base64>`: Ed25519.
    V1a(Vec<u8>),
}

/// Parses a `webhook-signature` header: entries separated by spaces, each
/// `VERSION,BASE64`. Entries of versions this gateway does not know are skipped (the
/// specification lets senders add them); an entry without a comma or with bad base64 makes
/// the header malformed.
///
/// # Errors
/// [`Refusal::Malformed`], also for more than [`MAX_SIGNATURES`] entries.
pub fn parse_signatures(header: &str) -> Result<Vec<Signature>, Refusal> {
    let mut signatures = Vec::new();
    for (i, entry) in header.split(' ').filter(|e| !e.is_empty()).enumerate() {
        if i >= MAX_SIGNATURES {
            return Err(Refusal::Malformed("too many signatures"));
        }
        let (version, value) = entry.split_once(',').ok_or(Refusal::Malformed("a signature has no version"))?;
        let decode = || mac::from_base64(value).ok_or(Refusal::Malformed("a signature is not base64"));
        match version {
            "v1" => signatures.push(Signature::V1(decode()?)),
            "v1a" => signatures.push(Signature::V1a(decode()?)),
            _ => {}
        }
    }
    Ok(signatures)
}

/// A Standard Webhooks secret, read from its text.
enum Key {
    Hmac(KeyBytes),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// `whsec_<base64>` (or bare base64, as the reference libraries accept) is an HMAC key;
/// `whpk_<base64>` an Ed25519 public key. `None` for text that is neither.
fn read_key(secret: &str) -> Option<Key> {
    if let Some(public) = secret.strip_prefix("whpk_") {
        let bytes: [u8; 32] = mac::from_base64(public)?.try_into().ok()?;
        return ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok().map(Key::Ed25519);
    }
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    mac::from_base64(encoded).map(|bytes| Key::Hmac(Zeroizing::new(bytes)))
}

/// Verifies a Standard Webhooks delivery.
///
/// # Errors
/// [`Refusal`]: a missing header, an unreadable one, or no signature matching any secret.
pub fn verify(delivery: &Delivery<'_>, secrets: &[SecretValue]) -> Result<Verified, Refusal> {
    let id = delivery.header_any(ID)?;
    let timestamp_text = delivery.header_any(TIMESTAMP)?;
    let timestamp = parse_timestamp(timestamp_text)?;
    let signatures = parse_signatures(delivery.header_any(SIGNATURE)?)?;
    let content: [&[u8]; 5] = [id.as_bytes(), b".", timestamp_text.as_bytes(), b".", delivery.body];
    let keys: Vec<Key> = secrets.iter().filter_map(|s| read_key(s.expose_secret())).collect();
    let mut signed_message: Option<Vec<u8>> = None;
    for signature in &signatures {
        let matched = keys.iter().any(|key| match (key, signature) {
            (Key::Hmac(key), Signature::V1(sent)) => mac::equal(&mac::hmac(Algorithm::Sha256, key, &content), sent),
            (Key::Ed25519(public), Signature::V1a(sent)) => {
                let Ok(sent) = ed25519_dalek::Signature::from_slice(sent) else { return false };
                let message = signed_message.get_or_insert_with(|| content.concat());
                public.verify_strict(message, &sent).is_ok()
            }
            _ => false,
        });
        if matched {
            let bytes = match signature {
                Signature::V1(b) | Signature::V1a(b) => b.clone(),
            };
            return Ok(Verified {
                delivery_id: Some(id.to_owned()),
                id_signed: true,
                timestamp: Some(timestamp),
                signature: bytes,
            });
        }
    }
    Err(Refusal::SignatureInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_versions_are_skipped_and_known_ones_decoded() {
        let parsed = parse_signatures("v2,abc v1,AAE= v1a,AQ==").unwrap();
        assert_eq!(parsed, vec![Signature::V1(vec![0, 1]), Signature::V1a(vec![1])]);
        assert!(parse_signatures("v1AAE=").is_err());
        assert!(parse_signatures("v1,***").is_err());
    }

    use proptest::prelude::*;

    /// One generated header entry: a version and the signature bytes.
    fn entry() -> impl Strategy<Value = (String, Vec<u8>)> {
        (prop::sample::select(vec!["v1", "v1a", "v2", "v1b", "V1"]), prop::collection::vec(any::<u8>(), 1..70))
            .prop_map(|(v, bytes)| (v.to_owned(), bytes))
    }

    proptest! {
        /// The model: entries are read left to right; `v1` and `v1a` are kept with their
        /// decoded bytes, every other version is skipped; spacing does not matter.
        #[test]
        fn parsed_signatures_match_the_model(
            entries in prop::collection::vec(entry(), 0..MAX_SIGNATURES),
            gaps in prop::collection::vec(1usize..4, MAX_SIGNATURES + 1),
        ) {
            use base64::Engine as _;
            let mut header = " ".repeat(gaps[0] - 1);
            for (i, (version, bytes)) in entries.iter().enumerate() {
                header.push_str(&format!("{version},{}", base64::engine::general_purpose::STANDARD.encode(bytes)));
                header.push_str(&" ".repeat(gaps[i + 1]));
            }
            let model: Vec<Signature> = entries
                .iter()
                .filter_map(|(version, bytes)| match version.as_str() {
                    "v1" => Some(Signature::V1(bytes.clone())),
                    "v1a" => Some(Signature::V1a(bytes.clone())),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(parse_signatures(&header).unwrap(), model);
        }

        /// Any text: no panic, and an accepted header holds only entries whose comma-split
        /// parts are a known version and base64.
        #[test]
        fn any_text_is_parsed_or_refused(text in "[ -~]{0,120}") {
            if let Ok(parsed) = parse_signatures(&text) {
                let known = text.split(' ').filter(|e| e.starts_with("v1,") || e.starts_with("v1a,")).count();
                prop_assert_eq!(parsed.len(), known);
            }
        }
    }

    #[test]
    fn too_many_signatures_are_refused() {
        let header = vec!["v1,AA=="; MAX_SIGNATURES + 1].join(" ");
        assert!(parse_signatures(&header).is_err());
    }
}
