//! Capture of request and response headers and bodies, with every protection applied
//! before anything is stored: secure inputs/outputs, `_private` fields, private
//! parameters, credential headers and injected secret values.
//!
//! Decision on non-JSON bodies: the `_private` rule always applies, so a body that is
//! not valid JSON (or was truncated at the size bound, and so cannot be checked) is
//! ALWAYS stored as `{ "sha256", "length" }`, never raw.

use crate::config::{Diagnostics, KeyPath};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};

/// What replaces an injected secret value found in a captured body.
pub const REDACTED: &str = "[redacted]";

/// The prefix of JSON field names that are never recorded.
const PRIVATE_PREFIX: &str = "_private";

/// A trigger's capture settings, compiled once per policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureRules {
    /// Capture at all (`capture = true`). Off by default.
    pub enabled: bool,
    /// Replace the captured request with the `{"secured": true}` marker.
    pub secure_inputs: bool,
    /// Replace the captured response with the `{"secured": true}` marker.
    pub secure_outputs: bool,
    /// Field names dropped at any depth, lower-cased (matching is case-insensitive).
    pub private_parameters: HashSet<String>,
    /// Body bytes captured at most; longer bodies are hashed.
    pub max_bytes: usize,
    /// Trigger options hidden from viewers on `/policy` (`private_fields`).
    pub private_fields: Vec<String>,
}

/// A trigger's capture options, as written in the policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureParts<'a> {
    /// `capture`
    pub capture: bool,
    /// `secure_inputs`
    pub secure_inputs: bool,
    /// `secure_outputs`
    pub secure_outputs: bool,
    /// `private_parameters`
    pub private_parameters: &'a [String],
    /// `private_fields`
    pub private_fields: &'a [String],
}

impl CaptureRules {
    /// Compiles a trigger's capture settings; `max_bytes` is `[audit] capture_max_bytes`.
    /// Every problem is reported to `diags` under `path` (the trigger's key path).
    pub fn compile(raw: CaptureParts<'_>, max_bytes: usize, path: &KeyPath, diags: &mut Diagnostics) -> Self {
        let mut private_parameters = HashSet::new();
        for (i, name) in raw.private_parameters.iter().enumerate() {
            let at = path.key("private_parameters").index(i);
            if name.trim().is_empty() {
                diags.error_with_hint(&at, "empty private parameter name", "remove the entry or name a JSON field");
            } else if !private_parameters.insert(name.to_ascii_lowercase()) {
                diags.error_with_hint(
                    &at,
                    format!("private parameter {name:?} is listed twice (names match case-insensitively)"),
                    "remove the duplicate",
                );
            }
        }
        let mut private_fields = Vec::new();
        for (i, field) in raw.private_fields.iter().enumerate() {
            let at = path.key("private_fields").index(i);
            if field.is_empty() || field.split('.').any(str::is_empty) {
                diags.error_with_hint(
                    &at,
                    format!("{field:?} is not a trigger option path"),
                    "write an option of this trigger, such as \"upstream\" or \"inject.headers\"",
                );
            } else if field == "name" {
                diags.error_with_hint(&at, "the trigger name cannot be private", "remove \"name\"");
            } else {
                private_fields.push(field.clone());
            }
        }
        Self {
            enabled: raw.capture,
            secure_inputs: raw.secure_inputs,
            secure_outputs: raw.secure_outputs,
            private_parameters,
            max_bytes,
            private_fields,
        }
    }
}

/// One captured message (request or response).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CapturedMessage {
    /// `secure_inputs`/`secure_outputs`: nothing but `{"secured": true}`.
    Secured {
        /// Always `true`.
        secured: bool,
    },
    /// Headers and body after every protection.
    Captured {
        /// Header name (lower case) → values, credentials and secret-bearing headers dropped.
        headers: BTreeMap<String, Vec<String>>,
        /// The body; `None` when empty.
        body: Option<CapturedBody>,
    },
}

impl CapturedMessage {
    /// The secure marker.
    pub fn secured() -> Self {
        Self::Secured { secured: true }
    }
}

/// A captured body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CapturedBody {
    /// A body that is not JSON, or was truncated: only its hash and length.
    Hashed {
        /// Hex SHA-256 of the captured bytes (the first `max_bytes` when truncated).
        sha256: String,
        /// The body's full length in bytes.
        length: u64,
        /// The body was longer than the capture bound.
        truncated: bool,
    },
    /// A JSON body with private fields dropped and secret values replaced.
    Json {
        /// The cleaned document.
        json: Value,
    },
}

/// Captures a request. `body` is the buffered prefix of the body (at most
/// `rules.max_bytes` are used) and `total_len` its full length; `secrets` are the
/// values injected into this call, which are removed wherever they appear.
pub fn capture_request(
    rules: &CaptureRules,
    headers: &HeaderMap,
    body: &[u8],
    total_len: u64,
    secrets: &[&[u8]],
) -> CapturedMessage {
    capture(rules, rules.secure_inputs, headers, body, total_len, secrets)
}

/// Captures a response; see [`capture_request`]. Secrets echoed by the upstream are
/// removed even when `scrub_responses` is off.
pub fn capture_response(
    rules: &CaptureRules,
    headers: &HeaderMap,
    body: &[u8],
    total_len: u64,
    secrets: &[&[u8]],
) -> CapturedMessage {
    capture(rules, rules.secure_outputs, headers, body, total_len, secrets)
}

/// One message, or only the secured marker when `secure` (secure inputs/outputs) is set.
fn capture(
    rules: &CaptureRules,
    secure: bool,
    headers: &HeaderMap,
    body: &[u8],
    total_len: u64,
    secrets: &[&[u8]],
) -> CapturedMessage {
    if secure {
        return CapturedMessage::secured();
    }
    let mut secrets: Vec<&[u8]> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    // Longest first: replacing a shorter value inside a longer one would leave the
    // longer one's remainder in the record.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    CapturedMessage::Captured {
        headers: capture_headers(headers, &secrets),
        body: capture_body(rules, body, total_len, &secrets),
    }
}

/// The values of every field capture drops from a JSON request body (`_private*` and
/// private parameters, at any depth): they are redacted wherever else they reappear in
/// the record, such as in an upstream's echo of the request. Values shorter than 3
/// characters are left alone; redacting them would shred unrelated text.
pub fn private_values(rules: &CaptureRules, body: &[u8]) -> Vec<Vec<u8>> {
    fn scalars(value: &Value, out: &mut Vec<Vec<u8>>) {
        match value {
            Value::Object(map) => map.values().for_each(|v| scalars(v, out)),
            Value::Array(items) => items.iter().for_each(|v| scalars(v, out)),
            Value::String(text) => out.push(text.as_bytes().to_vec()),
            Value::Number(number) => out.push(number.to_string().into_bytes()),
            Value::Null | Value::Bool(_) => {}
        }
    }
    fn walk(value: &Value, rules: &CaptureRules, out: &mut Vec<Vec<u8>>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let lower = key.to_ascii_lowercase();
                    if lower.starts_with(PRIVATE_PREFIX) || rules.private_parameters.contains(&lower) {
                        scalars(child, out);
                    } else {
                        walk(child, rules, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, rules, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        walk(&json, rules, &mut out);
    }
    out.retain(|v| v.len() >= 3);
    out
}

fn capture_headers(headers: &HeaderMap, secrets: &[&[u8]]) -> BTreeMap<String, Vec<String>> {
    let mut kept: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        // Credential-like names (Authorization, cookies, x-api-key, x-functions-key, ...) are
        // never recorded: the same rule that refuses literal values under such names.
        if crate::secrets::is_credential_like(name.as_str()) || value.is_sensitive() {
            continue;
        }
        let bytes = value.as_bytes();
        if secrets.iter().any(|s| contains(bytes, s)) {
            continue;
        }
        // URL-valued headers (a 202's Location) may carry signatures in their query.
        let text = crate::secrets::redact_url(&String::from_utf8_lossy(bytes));
        kept.entry(name.as_str().to_owned()).or_default().push(text);
    }
    kept
}

fn capture_body(rules: &CaptureRules, body: &[u8], total_len: u64, secrets: &[&[u8]]) -> Option<CapturedBody> {
    let total_len = total_len.max(body.len() as u64);
    if total_len == 0 {
        return None;
    }
    let truncated = total_len > rules.max_bytes as u64 || (body.len() as u64) < total_len;
    let prefix = &body[..body.len().min(rules.max_bytes)];
    if !truncated && let Ok(mut json) = serde_json::from_slice::<Value>(prefix) {
        clean_json(&mut json, rules, secrets);
        return Some(CapturedBody::Json { json });
    }
    Some(CapturedBody::Hashed { sha256: hex::encode(Sha256::digest(prefix)), length: total_len, truncated })
}

/// Drops `_private*` and private-parameter fields at any depth (arrays included) and
/// replaces injected secret values in keys, strings and numbers.
fn clean_json(value: &mut Value, rules: &CaptureRules, secrets: &[&[u8]]) {
    match value {
        Value::Object(map) => {
            let old = std::mem::take(map);
            let mut cleaned = Map::with_capacity(old.len());
            for (key, mut child) in old {
                let lower = key.to_ascii_lowercase();
                if lower.starts_with(PRIVATE_PREFIX) || rules.private_parameters.contains(&lower) {
                    continue;
                }
                clean_json(&mut child, rules, secrets);
                cleaned.insert(redact_str(&key, secrets), child);
            }
            *map = cleaned;
        }
        Value::Array(items) => items.iter_mut().for_each(|item| clean_json(item, rules, secrets)),
        Value::String(text) => {
            let redacted = redact_str(text, secrets);
            *text = redacted;
        }
        Value::Number(number) => {
            let text = number.to_string();
            if secrets.iter().any(|s| contains(text.as_bytes(), s)) {
                *value = Value::String(REDACTED.to_owned());
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

fn redact_str(text: &str, secrets: &[&[u8]]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        // A secret that is not UTF-8 cannot occur inside a Rust string.
        if let Ok(secret) = std::str::from_utf8(secret)
            && out.contains(secret)
        {
            out = out.replace(secret, REDACTED);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn rules() -> CaptureRules {
        CaptureRules { enabled: true, max_bytes: 1024, ..CaptureRules::default() }
    }

    fn body_json(message: &CapturedMessage) -> Value {
        match message {
            CapturedMessage::Captured { body: Some(CapturedBody::Json { json }), .. } => json.clone(),
            other => panic!("expected a JSON body, got {other:?}"),
        }
    }

    #[test]
    fn private_prefix_dropped_inside_nested_arrays() {
        let body = json!({"a": [{"b": [{"c": {"_private_x": 1, "keep": 2}}]}], "_privateTop": 3});
        let bytes = serde_json::to_vec(&body).expect("json");
        let json = body_json(&capture_request(&rules(), &HeaderMap::new(), &bytes, bytes.len() as u64, &[]));
        assert_eq!(json, json!({"a": [{"b": [{"c": {"keep": 2}}]}]}));
    }

    #[test]
    fn secret_in_number_and_key_redacted() {
        let bytes = br#"{"n": 98765, "98765": "x"}"#;
        let json = body_json(&capture_response(&rules(), &HeaderMap::new(), bytes, 26, &[b"98765"]));
        assert_eq!(json, json!({"n": REDACTED, REDACTED: "x"}));
    }

    #[test]
    fn longer_secrets_are_redacted_before_the_shorter_ones_inside_them() {
        let json = body_json(&capture_response(
            &rules(),
            &HeaderMap::new(),
            br#"{"v":"xxabcdefyy"}"#,
            18,
            &[b"abc", b"abcdef"],
        ));
        assert_eq!(json, json!({"v": format!("xx{REDACTED}yy")}));
    }

    #[test]
    fn credential_like_and_url_headers_keep_no_secret() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("CALLERKEY"));
        headers.insert("x-functions-key", HeaderValue::from_static("FNKEY"));
        headers.insert("location", HeaderValue::from_static("https://h/p?api-version=1&sig=SIGVALUE"));
        match capture_response(&rules(), &headers, b"", 0, &[]) {
            CapturedMessage::Captured { headers, .. } => {
                let text = format!("{headers:?}");
                for leaked in ["CALLERKEY", "FNKEY", "SIGVALUE"] {
                    assert!(!text.contains(leaked), "{leaked} recorded: {text}");
                }
                assert!(text.contains("api-version=1"), "{text}");
            }
            other @ CapturedMessage::Secured { .. } => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_json_is_hashed() {
        let mut small = rules();
        small.max_bytes = 4;
        let bytes = br#"{"a": 1}"#;
        match capture_request(&small, &HeaderMap::new(), bytes, bytes.len() as u64, &[]) {
            CapturedMessage::Captured { body: Some(CapturedBody::Hashed { length, truncated, .. }), .. } => {
                assert_eq!(length, 8);
                assert!(truncated);
            }
            other => panic!("expected a hash, got {other:?}"),
        }
    }

    #[test]
    fn sensitive_header_dropped_and_empty_secret_ignored() {
        let mut headers = HeaderMap::new();
        let mut value = HeaderValue::from_static("opaque");
        value.set_sensitive(true);
        headers.insert("x-injected", value);
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        match capture_request(&rules(), &headers, b"", 0, &[b""]) {
            CapturedMessage::Captured { headers, body } => {
                assert!(!headers.contains_key("x-injected"));
                assert_eq!(headers["content-type"], vec!["application/json".to_owned()]);
                assert!(body.is_none());
            }
            other @ CapturedMessage::Secured { .. } => panic!("{other:?}"),
        }
    }

    #[test]
    fn compile_reports_every_problem() {
        let raw: crate::policy::RawTrigger = toml::from_str(
            r#"
            name = "t"
            path = "/t"
            upstream = "http://127.0.0.1:1/"
            who = "anyone"
            capture = true
            private_parameters = ["Password", "", "password"]
            private_fields = ["upstream", "name", "a..b"]
            "#,
        )
        .expect("trigger parses");
        let mut diags = Diagnostics::default();
        let rules =
            CaptureRules::compile(raw.capture_parts(), 100, &KeyPath::root().key("trigger").index(0), &mut diags);
        assert!(rules.enabled);
        assert!(rules.private_parameters.contains("password"));
        assert_eq!(rules.private_fields, vec!["upstream".to_owned()]);
        assert_eq!(diags.into_vec().len(), 4);
    }
}
