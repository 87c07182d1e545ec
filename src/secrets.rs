//! Secret references, vault backends, the rotating cache and injection templates.
//!
//! (Skeleton: the secrets work fills this module in.)

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `[vault.NAME]`: one secret store.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    /// `file`, `env`, `openbao`, `hashicorp` or `azure_key_vault`.
    pub kind: String,
}

/// `[secrets]`: cache tuning.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecretCache {}

/// `inject`: values written into the upstream request.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawInject {
    /// Header name → template.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameter → template.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
}
