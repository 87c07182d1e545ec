//! Secret references, vault backends, the rotating cache, injection templates and
//! response scrubbing.
//!
//! The policy holds references (`secret://<vault>/<path>[#field][@version]`), never
//! values. Compile time builds the vault clients ([`compile_vaults`]) and the per-trigger
//! templates ([`compile_injection`]); at request time [`Injection::render`] (which takes a
//! [`Permit`](crate::proxy::Permit), so only admitted calls reach a vault) resolves the
//! references through the [`SecretStore`], a cache that survives policy reloads.
//!
//! Values live in [`SecretValue`] (zeroized on drop, redacted `Debug`/`Display`) from the
//! moment they leave the vault; errors ([`SecretError`]) name references, never values.
//!
//! # Layout
//! | file | concern |
//! |---|---|
//! | `secrets/value.rs` | [`SecretValue`], the leak-proof value type |
//! | `secrets/reference.rs` | [`SecretRef`] parsing and [`Template`]s |
//! | `secrets/vault.rs` | [`compile_vaults`], [`Vaults`]: dispatch to the backends, throttle |
//! | `secrets/backend.rs` | [`RawVault`], credentials, tokens, HTTP client: what the backends share |
//! | `secrets/backend/{file,env,openbao,akv}.rs` | the backends, one per kind |
//! | `secrets/store.rs` | [`SecretStore`]: TTL, refresh ahead, single flight, stale serving |
//! | `secrets/inject.rs` | [`compile_injection`], [`Injection`], [`Rendered`] |
//! | `secrets/scrub.rs` | [`Scrubber`], [`ScrubBody`] |
//! | `secrets/report.rs` | [`usage_report`] for `flowgate secrets` |

mod backend;
mod error;
mod inject;
mod reference;
mod report;
mod scrub;
mod store;
mod value;
mod vault;

pub use backend::{AuthMethod, RawVault, RawVaultAuth, VaultKind};
pub use error::SecretError;
pub use inject::{Injection, NamesToStrip, Rendered, compile_injection, is_credential_like};
pub use reference::{Part, RefParseError, SecretRef, Template};
pub use report::usage_report;
pub use scrub::{REDACTED_MARKER, ScrubBody, Scrubber};
pub use store::{CachePhase, CacheSettings, CacheState, SecretStore, compile_cache};
pub use value::SecretValue;
pub use vault::{Vault, Vaults, compile_vaults};

use crate::config::HumanDuration;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `[secrets]`: cache tuning.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecretCache {
    /// How long a fetched value is used. Default `"60s"`: a rotated secret is in use within it.
    pub ttl: Option<HumanDuration>,
    /// Refresh in the background this long before the TTL ends. Default a quarter of `ttl`.
    pub refresh_ahead: Option<HumanDuration>,
    /// When the vault fails, keep serving the last value this long past its TTL; after that
    /// the call fails closed (503). Default `"5m"`.
    pub max_stale: Option<HumanDuration>,
    /// Time allowed for one vault fetch (login included). Default `"5s"`.
    pub fetch_timeout: Option<HumanDuration>,
}

/// `inject`: values written into the upstream request. Each value is a template: a bare
/// reference (`"secret://kv/flows/token"`), literal text, or both mixed
/// (`"Bearer {{secret://kv/flows/token}}"`). Credential-like names refuse literal-only values.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawInject {
    /// Header name → template. The caller's headers of the same name are removed first.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameter → template. The caller's parameters of the same name are removed first.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON pointer (`"/auth/key"`) → template, for `application/json` bodies only.
    #[serde(default)]
    pub json: BTreeMap<String, String>,
    /// Largest JSON body rewritten, in bytes; larger → the call fails. Default 1 MiB.
    pub json_max_bytes: Option<usize>,
    /// HTTP basic authentication sent upstream as `Authorization: Basic ...`.
    pub basic_auth: Option<RawBasicAuth>,
}

/// `inject.basic_auth`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    /// The user name (template; may be literal).
    pub username: String,
    /// The password (template; must contain a `secret://` reference).
    pub password: String,
}
