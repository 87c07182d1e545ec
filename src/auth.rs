//! Who may trigger a flow: bearer JWT validation against OIDC issuers, tenant and
//! principal rules, and signed URLs for `who = "anyone"`.
//!
//! (Skeleton: the auth work fills this module in.)

use schemars::JsonSchema;
use serde::Deserialize;

/// The three trigger modes of the workflow engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Who {
    /// No token; the URL must carry a valid flowgate signature.
    Anyone,
    /// Any principal of the trigger's tenants.
    TenantUsers,
    /// Only the listed principals.
    SpecificUsers,
}

/// `[identity.NAME]`: one token issuer family.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// OIDC discovery URL (may contain `{tenant}`).
    pub discovery: Option<String>,
}

/// `[signed_urls]`: HMAC keys for signed trigger URLs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSignedUrls {
    /// Key id → secret reference.
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, String>,
}

/// A role or scope requirement.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRequirement {
    /// At least one of these.
    #[serde(default)]
    pub any_of: Vec<String>,
    /// All of these.
    #[serde(default)]
    pub all_of: Vec<String>,
}
