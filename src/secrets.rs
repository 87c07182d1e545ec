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
//! | `secrets/vault.rs` | [`compile_vaults`], [`Vaults`], credentials, throttle |
//! | `secrets/file.rs`, `secrets/openbao.rs`, `secrets/akv.rs` | the backends (env lives in `vault.rs`) |
//! | `secrets/store.rs` | [`SecretStore`]: TTL, refresh ahead, single flight, stale serving |
//! | `secrets/inject.rs` | [`compile_injection`], [`Injection`], [`Rendered`] |
//! | `secrets/scrub.rs` | [`Scrubber`], [`ScrubBody`] |
//! | `secrets/report.rs` | [`usage_report`] for `flowgate secrets` |

mod akv;
mod error;
mod file;
mod inject;
mod openbao;
mod reference;
mod report;
mod scrub;
mod store;
mod value;
mod vault;

pub use error::SecretError;
pub use inject::{Injection, NamesToStrip, Rendered, compile_injection, is_credential_like};
pub use reference::{Part, RefParseError, SecretRef, Template};
pub use report::usage_report;
pub use scrub::{REDACTED_MARKER, ScrubBody, Scrubber};
pub use store::{CachePhase, CacheSettings, CacheState, SecretStore, compile_cache};
pub use value::SecretValue;
pub use vault::{Vault, VaultKind, Vaults, compile_vaults};

use crate::config::HumanDuration;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `[vault.NAME]`: one secret store, referenced as `secret://NAME/...`.
///
/// Which fields apply depends on `kind`; a field that does not apply to the kind is an
/// error. Credentials (tokens, AppRole ids, client secrets, certificates) are never
/// written here: each is an indirection, `"env:VARIABLE"` or `"file:PATH"`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    /// `file`, `env`, `openbao`, `hashicorp` or `azure_key_vault`.
    pub kind: VaultKind,
    /// `file`: the TOML (`.toml`) or JSON secrets file, relative to the policy file. Must not be
    /// group- or world-readable (mode `0600` or stricter).
    pub path: Option<String>,
    /// `env`: prefix prepended to the variable name derived from the reference path.
    pub prefix: Option<String>,
    /// `openbao`/`hashicorp`: the server, for example `"https://127.0.0.1:8200"`.
    pub address: Option<String>,
    /// `openbao`/`hashicorp`: the KV v2 mount. Default `"secret"`.
    pub mount: Option<String>,
    /// `openbao`/`hashicorp`: sent as `X-Vault-Namespace` when set.
    pub namespace: Option<String>,
    /// `openbao`/`hashicorp`/`azure_key_vault`: PEM CA bundle trusted beside the system roots
    /// (relative to the policy file).
    pub ca_file: Option<String>,
    /// How flowgate authenticates to the vault (not for `file` and `env`).
    pub auth: Option<RawVaultAuth>,
    /// `azure_key_vault`: the vault, for example `"https://myvault.vault.azure.net"`.
    pub vault_url: Option<String>,
    /// `azure_key_vault`: the Entra ID authority. Default `"https://login.microsoftonline.com"`
    /// (sovereign clouds: `https://login.microsoftonline.us`, `https://login.chinacloudapi.cn`).
    pub authority_host: Option<String>,
    /// `azure_key_vault`: the token resource. Default `"https://vault.azure.net"`.
    pub resource: Option<String>,
    /// `azure_key_vault`: the instance metadata endpoint. Default `"http://169.254.169.254"`.
    pub imds_endpoint: Option<String>,
    /// Client-side cap on calls to this vault per minute (GCRA). Default 2000 for
    /// `azure_key_vault` (its service limit), unlimited otherwise.
    pub calls_per_minute: Option<u32>,
}

/// `auth` of a vault: the method and its credential indirections.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVaultAuth {
    /// `token` or `approle` (OpenBao); `client_secret`, `client_certificate`,
    /// `managed_identity` or `app_service` (Azure Key Vault).
    pub method: AuthMethod,
    /// `token`: `"env:VAR"` or `"file:PATH"` holding the vault token.
    pub token: Option<String>,
    /// `approle`: the role id, `"env:VAR"` or `"file:PATH"`.
    pub role_id: Option<String>,
    /// `approle`: the secret id, `"env:VAR"` or `"file:PATH"`.
    pub secret_id: Option<String>,
    /// `approle`: the auth mount. Default `"approle"`.
    pub approle_mount: Option<String>,
    /// Entra ID methods: the tenant (GUID or domain).
    pub tenant: Option<String>,
    /// Entra ID methods: the application (client) id. For `managed_identity`, selects a
    /// user-assigned identity.
    pub client_id: Option<String>,
    /// `client_secret`: `"env:VAR"` or `"file:PATH"`.
    pub client_secret: Option<String>,
    /// `client_certificate`: `"file:PATH"` (or `"env:VAR"`) of a PEM holding the certificate
    /// and its RSA private key.
    pub certificate: Option<String>,
    /// `app_service`: the identity endpoint. Default `"env:IDENTITY_ENDPOINT"`.
    pub identity_endpoint: Option<String>,
    /// `app_service`: the identity header value. Default `"env:IDENTITY_HEADER"`.
    pub identity_header: Option<String>,
}

/// How flowgate logs in to a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// OpenBao/Vault: a fixed token.
    Token,
    /// OpenBao/Vault: AppRole login (role id + secret id), token renewed by re-login.
    Approle,
    /// Entra ID client credentials with a client secret.
    ClientSecret,
    /// Entra ID client credentials with a certificate (signed JWT assertion).
    ClientCertificate,
    /// Azure VM managed identity (instance metadata endpoint).
    ManagedIdentity,
    /// Azure App Service managed identity (`IDENTITY_ENDPOINT` + `X-IDENTITY-HEADER`).
    AppService,
}

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
