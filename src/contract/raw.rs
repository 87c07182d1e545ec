//! The contract as written in a trigger: `contract = { schema = "...", ... }`. Each field
//! is documented here (these comments become the policy's JSON Schema and reference).

use super::names::UnlistedNames;
use super::schema::SchemaDraft;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// What a trigger accepts from a caller beyond who it is: the body's media type, size and
/// JSON Schema, and rules for query parameters and headers. Checked after authentication
/// and the rate limit, before any secret is fetched or the upstream is contacted.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawContract {
    /// A JSON Schema file the body must meet (relative to the policy file), for example
    /// the flow trigger's own "Request Body JSON Schema" saved as `schemas/invoice.json`.
    /// The draft is taken from its `$schema`, else from `draft`. A body that is not strict
    /// JSON is refused with 400, one that breaks the schema with 422.
    pub schema: Option<String>,
    /// The draft of a schema without `$schema`: `"4"` (default; what Power Automate and
    /// Logic Apps write), `"6"`, `"7"`, `"2019-09"` or `"2020-12"`.
    pub draft: Option<SchemaDraft>,
    /// Media types accepted (`type/subtype`, `type/*`, `application/*+json`); others get
    /// 415. Default with a schema: `["application/json", "application/*+json"]` (a schema
    /// accepts only JSON types); without one: any.
    pub content_types: Option<Vec<String>>,
    /// The largest body accepted (413 beyond), for example `"64KiB"` or `65536`; at most
    /// the trigger's `max_body_bytes`. The body is read whole up to it before the call goes
    /// on. Default with a schema: 1 MiB (or the trigger's limit when lower).
    pub max_body: Option<ByteSize>,
    /// Rules for the caller's query parameters.
    #[serde(default)]
    pub query: RawNameRules,
    /// Rules for the caller's headers. Protocol headers (`Content-Type`, `Authorization`,
    /// `Accept*`, `User-Agent`, hop-by-hop, forwarding and trace headers) are never judged.
    #[serde(default)]
    pub headers: RawNameRules,
}

/// Rules for query parameters or headers (names compare case-insensitively).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNameRules {
    /// Names that must be present (400 when missing).
    #[serde(default)]
    pub required: Vec<String>,
    /// Names accepted; unset accepts any. Names in `required` and `patterns` are accepted
    /// too.
    pub allowed: Option<Vec<String>>,
    /// What happens to a name not in `allowed`: `"refuse"` (default, 400) or `"drop"`
    /// (removed before the call goes upstream).
    #[serde(default)]
    pub others: UnlistedNames,
    /// Regular expressions (Rust `regex` syntax) the whole value must match, by name, for
    /// example `{ orderId = "[0-9]{1,10}" }`. A name with a pattern may appear only once.
    #[serde(default)]
    pub patterns: BTreeMap<String, String>,
}

/// A size in bytes: a number, or text with a binary unit (`"512B"`, `"64KiB"`, `"1MiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Number(n) => Ok(Self(n)),
            Written::Text(text) => parse_size(&text).map(Self).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {text:?} (write it like \"64KiB\", \"1MiB\" or a number of bytes)"
                ))
            }),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes: a number, or text such as \"512B\", \"64KiB\", \"1MiB\".",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*(B|KiB|MiB|GiB)?\\s*$" }
            ]
        })
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    let unit: u64 = match text[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Some(65_536));
        assert_eq!(parse_size(" 1 MiB "), Some(1 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("1KB"), None, "binary units only: no guessing 1000 or 1024");
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("99999999999GiB"), None);
    }
}
