//! The forms a secret value could leak in, for the leak scans (`secrets_leak`,
//! `secrets_echo`): one list, so every scan looks for the same encodings.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// Every encoding a value could leak in, each with its name for the failure message.
pub(crate) fn forms(value: &str) -> Vec<(&'static str, String)> {
    let bytes = value.as_bytes();
    let strict: String = bytes
        .iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
                (*b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let form: String = url::form_urlencoded::byte_serialize(bytes).collect();
    let json = serde_json::to_string(value).unwrap();
    let json = &json[1..json.len() - 1];
    let debug = format!("{value:?}");
    vec![
        ("raw", value.to_owned()),
        ("base64", STANDARD.encode(bytes)),
        ("base64 no padding", STANDARD_NO_PAD.encode(bytes)),
        ("base64url", URL_SAFE.encode(bytes)),
        ("base64url no padding", URL_SAFE_NO_PAD.encode(bytes)),
        ("form-urlencoded (lower)", lower_escapes(&form)),
        ("form-urlencoded", form),
        ("percent-encoded (lower)", lower_escapes(&strict)),
        ("percent-encoded (upper)", strict),
        ("hex lower", hex::encode(bytes)),
        ("hex upper", hex::encode_upper(bytes)),
        ("JSON-escaped", json.to_owned()),
        ("JSON-escaped slashes", json.replace('/', "\\/")),
        ("Debug-escaped", debug[1..debug.len() - 1].to_owned()),
    ]
}

/// `%2B` → `%2b`, other characters unchanged.
pub(crate) fn lower_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}
