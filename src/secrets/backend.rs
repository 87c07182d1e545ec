//! What the vault backends share, and nothing else: the `[vault.NAME]` raw configuration
//! every backend reads its fields from, credential indirections (`env:`/`file:`) and the
//! tokens they log in to, the secrets-file permission check, the HTTP client and URL fields
//! of the HTTP backends, transport error shaping, and picking a string out of a parsed tree.
//!
//! The backends (`file`, `env`, `openbao`, `akv`) import from here and from the base types
//! (`error`, `reference`, `value`), never from each other; `vault.rs` dispatches to them.

pub(crate) mod akv;
pub(crate) mod env;
pub(crate) mod file;
pub(crate) mod openbao;

use super::error::SecretError;
use super::reference::SecretRef;
use super::value::SecretValue;
use crate::config::{Diagnostics, KeyPath, SourceFile};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

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

/// The backend kind of a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VaultKind {
    /// A local TOML/JSON file (development, demo). Path `a/b` selects nested tables.
    File,
    /// Environment variables: path `flows/token` reads `{prefix}FLOWS_TOKEN`.
    Env,
    /// OpenBao KV v2.
    Openbao,
    /// `HashiCorp` Vault KV v2 (same API as OpenBao).
    Hashicorp,
    /// Azure Key Vault secrets (REST API 7.5).
    AzureKeyVault,
}

impl VaultKind {
    /// The name as written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Env => "env",
            Self::Openbao => "openbao",
            Self::Hashicorp => "hashicorp",
            Self::AzureKeyVault => "azure_key_vault",
        }
    }
}

/// Where a vault credential comes from: never the policy text itself.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// An environment variable, read at each login.
    Env(String),
    /// A file (trailing newline trimmed), read at each login so that rotation works.
    File(PathBuf),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Credential {
    /// `env:VAR` or `file:PATH`: the indirection, safe to log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Env(var) => format!("env:{var}"),
            Self::File(path) => format!("file:{}", path.display()),
        }
    }

    /// Reads the credential now.
    pub(crate) fn read(&self, vault: &str) -> Result<SecretValue, SecretError> {
        let fail = |problem: String| SecretError::Credential {
            vault: vault.to_owned(),
            source_name: self.describe(),
            problem,
        };
        match self {
            #[expect(clippy::disallowed_methods, reason = "the policy names this variable as the credential's source")]
            Self::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(SecretValue::new(v)),
                Ok(_) => Err(fail("empty".into())),
                Err(_) => Err(fail("not set".into())),
            },
            Self::File(path) => {
                check_permissions(path)?;
                let mut text = std::fs::read_to_string(path).map_err(|e| fail(e.kind().to_string()))?;
                let trimmed = text.trim_end_matches(['\n', '\r']).len();
                text.truncate(trimmed);
                if text.is_empty() {
                    return Err(fail("empty".into()));
                }
                Ok(SecretValue::new(text))
            }
        }
    }
}

/// Compile helper: a credential field that must be an `env:`/`file:` indirection.
pub(crate) fn credential(
    raw: Option<&String>,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> Option<Credential> {
    let Some(text) = raw else {
        diags.error_with_hint(path, "missing credential", "write \"env:VARIABLE\" or \"file:PATH\"");
        return None;
    };
    if let Some(var) = text.strip_prefix("env:") {
        if var.is_empty() {
            diags.error(path, "env: needs a variable name");
            return None;
        }
        return Some(Credential::Env(var.to_owned()));
    }
    if let Some(file) = text.strip_prefix("file:") {
        if file.is_empty() {
            diags.error(path, "file: needs a path");
            return None;
        }
        return Some(Credential::File(source.resolve(file)));
    }
    diags.error_with_hint(
        path,
        "a literal credential is not allowed in the policy",
        "write \"env:VARIABLE\" or \"file:PATH\" and keep the value out of the policy file",
    );
    None
}

/// A vault token (or Entra access token) and when to renew it.
pub(crate) struct CachedToken {
    pub(crate) token: SecretValue,
    pub(crate) renew_at: Instant,
}

impl CachedToken {
    /// Renews at 80 % of the lifetime, and at least a minute before it ends when it can.
    /// The lifetime comes from the server, so it is capped at a year (no `Instant` overflow).
    pub(crate) fn new(token: SecretValue, lifetime: Option<Duration>) -> Self {
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        let now = Instant::now();
        let l = lifetime.unwrap_or(YEAR).min(YEAR);
        let margin = (l / 5).max(Duration::from_secs(60).min(l / 2));
        let renew_at = now + l.saturating_sub(margin);
        Self { token, renew_at }
    }

    pub(crate) fn fresh(&self) -> Option<SecretValue> {
        (Instant::now() < self.renew_at).then(|| self.token.clone())
    }
}

/// Refuses a file whose mode grants anything to group or others.
pub(crate) fn check_permissions(path: &Path) -> Result<(), SecretError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SecretError::FilePermissions { path: path.display().to_string(), mode });
            }
        }
    }
    Ok(())
}

/// Walks `path` segments and then the field through nested tables.
pub(crate) fn select(
    mut node: &serde_json::Value,
    reference: &SecretRef,
    segments: impl Iterator<Item = String>,
) -> Result<SecretValue, SecretError> {
    for seg in segments {
        node = node.get(&seg).ok_or_else(|| SecretError::NotFound { reference: reference.to_string() })?;
    }
    match node {
        serde_json::Value::String(s) => Ok(SecretValue::new(s.clone())),
        serde_json::Value::Number(n) => Ok(SecretValue::new(n.to_string())),
        _ => Err(SecretError::Field {
            reference: reference.to_string(),
            problem: "the selected entry is a table, not a string; add #field".into(),
        }),
    }
}

/// The HTTP client of an `openbao`/`hashicorp` or `azure_key_vault` vault: no proxy, no
/// redirects, the vault's `ca_file` trusted beside the system roots.
pub(crate) fn http_client(
    raw: &RawVault,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> Option<reqwest::Client> {
    // No redirects: reqwest keeps custom headers (X-Vault-Token, X-IDENTITY-HEADER) across
    // hosts, so a redirect must never carry a vault credential elsewhere.
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &raw.ca_file {
        let file = source.resolve(ca);
        match std::fs::read(&file).map(|pem| reqwest::Certificate::from_pem_bundle(&pem)) {
            Ok(Ok(certs)) if !certs.is_empty() => builder = builder.tls_certs_merge(certs),
            Ok(_) => {
                diags.error(&path.key("ca_file"), format!("{}: no PEM certificate in the file", file.display()));
                return None;
            }
            Err(e) => {
                diags.error(&path.key("ca_file"), format!("{}: {e}", file.display()));
                return None;
            }
        }
    }
    match builder.build() {
        Ok(c) => Some(c),
        Err(e) => {
            diags.error(path, format!("cannot build the HTTP client: {e}"));
            None
        }
    }
}

/// Reads a required string field of a vault, reporting it when missing.
pub(crate) fn required<'a>(value: Option<&'a String>, path: &KeyPath, diags: &mut Diagnostics) -> Option<&'a str> {
    match value {
        Some(v) if !v.is_empty() => Some(v),
        _ => {
            diags.error(path, "required for this kind of vault");
            None
        }
    }
}

/// Parses a base URL field (no trailing slash kept).
pub(crate) fn base_url(value: &str, path: &KeyPath, diags: &mut Diagnostics) -> Option<String> {
    // The value is never echoed: a URL may carry credentials.
    match url::Url::parse(value) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            diags.error_with_hint(
                path,
                "carries credentials in the URL",
                "give vault credentials through auth = { ... } with env: or file: references",
            );
            None
        }
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Some(value.trim_end_matches('/').to_owned())
        }
        _ => {
            diags.error_with_hint(path, "is not an http(s) URL", "for example \"https://127.0.0.1:8200\"");
            None
        }
    }
}

/// A transport failure, described without request headers (reqwest never prints them).
pub(crate) fn transport_error(reference: &SecretRef, e: &reqwest::Error) -> SecretError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let url =
        e.url().map(|u| format!("{}://{}{}", u.scheme(), u.host_str().unwrap_or(""), u.path())).unwrap_or_default();
    SecretError::Transport { reference: reference.to_string(), detail: format!("{what} {url}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_with_credentials_are_refused_without_echoing_them() {
        let mut diags = Diagnostics::default();
        assert!(base_url("https://user:hunter2@vault.internal", &KeyPath::root().key("address"), &mut diags).is_none());
        let text = format!("{:?}", diags.into_vec());
        assert!(text.contains("credentials") && !text.contains("hunter2"), "{text}");
    }

    #[test]
    fn tokens_renew_before_lease_end() {
        let t = CachedToken::new(SecretValue::new("s.x".into()), Some(Duration::from_secs(3600)));
        assert!(t.fresh().is_some());
        let t = CachedToken::new(SecretValue::new("s.x".into()), Some(Duration::from_secs(0)));
        assert!(t.fresh().is_none());
    }
}
