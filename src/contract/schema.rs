//! `schema`: a JSON Schema file compiled once per policy with the `jsonschema` crate.
//!
//! The draft comes from the schema's `$schema` (draft 4, 6, 7, 2019-09, 2020-12); a schema
//! without one, like those Power Automate's "Use sample payload to generate schema" writes,
//! is read as the contract's `draft`, by default draft 4 (the dialect of Logic Apps'
//! trigger schemas). Any other `$schema` is refused at load. References resolve inside the
//! file only (no network, no other files), patterns use the linear-time `regex` engine,
//! and `format` is asserted in every draft: a gateway checks what the schema says.

use crate::denial::PayloadFailure;
use jsonschema::{Draft, PatternOptions, Validator};
use serde_json::Value;

/// The drafts an admin can name in `draft`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, schemars::JsonSchema)]
pub enum SchemaDraft {
    /// Draft 4 (the default: Power Automate and Logic Apps schemas).
    #[default]
    #[serde(rename = "4")]
    Draft4,
    /// Draft 6.
    #[serde(rename = "6")]
    Draft6,
    /// Draft 7.
    #[serde(rename = "7")]
    Draft7,
    /// Draft 2019-09.
    #[serde(rename = "2019-09")]
    Draft201909,
    /// Draft 2020-12.
    #[serde(rename = "2020-12")]
    Draft202012,
}

impl SchemaDraft {
    fn to_jsonschema(self) -> Draft {
        match self {
            Self::Draft4 => Draft::Draft4,
            Self::Draft6 => Draft::Draft6,
            Self::Draft7 => Draft::Draft7,
            Self::Draft201909 => Draft::Draft201909,
            Self::Draft202012 => Draft::Draft202012,
        }
    }

    /// The name as written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft4 => "4",
            Self::Draft6 => "6",
            Self::Draft7 => "7",
            Self::Draft201909 => "2019-09",
            Self::Draft202012 => "2020-12",
        }
    }

    /// The draft a `$schema` URI names, if one of the supported ones.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let uri = uri.trim_end_matches('#').trim_start_matches("https://").trim_start_matches("http://");
        match uri {
            "json-schema.org/draft-04/schema" => Some(Self::Draft4),
            "json-schema.org/draft-06/schema" => Some(Self::Draft6),
            "json-schema.org/draft-07/schema" => Some(Self::Draft7),
            "json-schema.org/draft/2019-09/schema" => Some(Self::Draft201909),
            "json-schema.org/draft/2020-12/schema" => Some(Self::Draft202012),
            _ => None,
        }
    }
}

/// A compiled schema.
pub struct PayloadSchema {
    validator: Validator,
    /// The draft it was compiled as.
    pub draft: SchemaDraft,
}

impl std::fmt::Debug for PayloadSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadSchema").field("draft", &self.draft).finish_non_exhaustive()
    }
}

impl PayloadSchema {
    /// Compiles a parsed schema document, reading it as `default_draft` unless its
    /// `$schema` names another.
    ///
    /// # Errors
    /// An unsupported `$schema`, a schema its meta-schema refuses, an unresolvable
    /// reference or a pattern the engine cannot compile, as text for the admin.
    pub fn compile(document: &Value, default_draft: SchemaDraft) -> Result<Self, String> {
        let draft = match document.get("$schema") {
            None => default_draft,
            Some(Value::String(uri)) => SchemaDraft::from_uri(uri).ok_or_else(|| {
                format!(
                    "$schema {uri:?} is not a supported draft \
                     (draft-04, draft-06, draft-07, 2019-09, 2020-12 from json-schema.org)"
                )
            })?,
            Some(_) => return Err("$schema must be a string".to_owned()),
        };
        if !document.is_object() && !document.is_boolean() {
            return Err("a schema is a JSON object (or true/false)".to_owned());
        }
        let validator = jsonschema::options()
            .with_draft(draft.to_jsonschema())
            .offline()
            .with_pattern_options(PatternOptions::regex())
            .should_validate_formats(true)
            .build(document)
            .map_err(|e| e.to_string())?;
        Ok(Self { validator, draft })
    }

    /// Whether `instance` meets the schema.
    pub fn is_valid(&self, instance: &Value) -> bool {
        self.validator.is_valid(instance)
    }

    /// The failures of `instance`: at most `max` listed, with the total count. Each is the
    /// instance's JSON pointer and the keyword, never the validator's message (it quotes
    /// the value).
    pub fn failures(&self, instance: &Value, max: usize) -> (Vec<PayloadFailure>, usize) {
        let mut listed = Vec::new();
        let mut total = 0;
        for error in self.validator.iter_errors(instance) {
            total += 1;
            if listed.len() < max {
                listed.push(PayloadFailure::body(error.instance_path().to_string(), error.kind().keyword()));
            }
        }
        (listed, total)
    }
}
