//! Durations written as `"60s"`, `"500ms"`, `"5m"` in the policy file.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A duration parsed with `humantime` (`"60s"`, `"1m 30s"`, `"250ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// A whole number of seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(HumanDuration).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e} (write it like \"60s\", \"500ms\" or \"5m\")"
            ))
        })
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as \"60s\", \"500ms\" or \"5m\".",
            "pattern": "^\\s*[0-9]+\\s*[a-zµ]+(\\s*[0-9]+\\s*[a-zµ]+)*\\s*$"
        })
    }
}
