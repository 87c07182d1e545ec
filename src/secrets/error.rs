//! Why a secret could not be resolved: names the reference and the cause, never a value.

use thiserror::Error;

/// A secret could not be resolved. The refusal table (`refusal.rs`) answers 503
/// (`Failure::SecretUnavailable`) for every variant but [`SecretError::JsonBody`], the
/// caller's body (400); the `Display` text is the private audit reason.
///
/// Every variant names the reference (`secret://vault/path...`) or the vault; none carries a
/// value, a token or a credential.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecretError {
    /// The reference names a vault that is not configured.
    #[error("{reference}: no such vault")]
    UnknownVault {
        /// The reference.
        reference: String,
    },
    /// The secret (or version) does not exist.
    #[error("{reference}: not found")]
    NotFound {
        /// The reference.
        reference: String,
    },
    /// The vault refused access (403): ACL or role assignment missing.
    #[error("{reference}: access denied by the vault")]
    Forbidden {
        /// The reference.
        reference: String,
    },
    /// The vault did not accept our credentials (401) even after a fresh login.
    #[error("{reference}: vault authentication rejected{}", challenge.as_deref().map(|c| format!(" (challenge: {c})")).unwrap_or_default())]
    Unauthorized {
        /// The reference.
        reference: String,
        /// The `WWW-Authenticate` challenge (names the authority and resource; no secrets).
        challenge: Option<String>,
    },
    /// OpenBao/Vault is sealed (503).
    #[error("{reference}: vault is sealed")]
    Sealed {
        /// The reference.
        reference: String,
    },
    /// The secret is disabled in Azure Key Vault; never injected.
    #[error("{reference}: secret is disabled")]
    Disabled {
        /// The reference.
        reference: String,
    },
    /// The secret's `nbf` is in the future.
    #[error("{reference}: secret is not valid yet (nbf)")]
    NotYetValid {
        /// The reference.
        reference: String,
    },
    /// The secret's `exp` has passed.
    #[error("{reference}: secret has expired (exp)")]
    Expired {
        /// The reference.
        reference: String,
    },
    /// The vault kept answering 429 within the fetch time.
    #[error("{reference}: vault throttled the request (429)")]
    Throttled {
        /// The reference.
        reference: String,
    },
    /// The secret has no such field, or several fields and none was selected.
    #[error("{reference}: {problem}")]
    Field {
        /// The reference.
        reference: String,
        /// What is wrong with the field selection (names fields, never values).
        problem: String,
    },
    /// The vault answered something that is not the documented shape.
    #[error("{reference}: malformed vault response: {what}")]
    Malformed {
        /// The reference.
        reference: String,
        /// What was wrong.
        what: String,
    },
    /// The vault answered an unexpected status.
    #[error("{reference}: vault answered HTTP {status}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Backend {
        /// The reference.
        reference: String,
        /// The HTTP status.
        status: u16,
        /// The vault's error code, when it gave one.
        code: Option<String>,
    },
    /// The vault could not be reached.
    #[error("{reference}: vault unreachable: {detail}")]
    Transport {
        /// The reference.
        reference: String,
        /// The transport error (addresses, never credentials).
        detail: String,
    },
    /// The fetch did not finish within `fetch_timeout`.
    #[error("{reference}: vault fetch timed out")]
    Timeout {
        /// The reference.
        reference: String,
    },
    /// A credential indirection (`env:`/`file:`) could not be read.
    #[error("vault {vault}: cannot read credential {source_name}: {problem}")]
    Credential {
        /// The vault name.
        vault: String,
        /// `env:VAR` or `file:PATH` (the indirection, not its content).
        source_name: String,
        /// What went wrong.
        problem: String,
    },
    /// Logging in to the vault (AppRole, Entra ID, managed identity) failed.
    #[error("vault {vault}: login failed: {problem}")]
    Login {
        /// The vault name.
        vault: String,
        /// Status and error code from the token endpoint.
        problem: String,
    },
    /// The secrets file is readable by group or others.
    #[error("{path}: secrets file is group- or world-readable (mode {mode:o}); chmod 600 it")]
    FilePermissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The secrets file could not be read or parsed.
    #[error("{reference}: secrets file: {problem}")]
    File {
        /// The reference.
        reference: String,
        /// What went wrong (never file content).
        problem: String,
    },
    /// The request body could not take the injected JSON values.
    #[error("json injection: {problem}")]
    JsonBody {
        /// What went wrong.
        problem: String,
    },
    /// A rendered value cannot be a header value (control characters).
    #[error("{name}: rendered value is not a valid header value")]
    InvalidHeaderValue {
        /// The header name.
        name: String,
    },
}

impl SecretError {
    /// A short stable kind for metrics labels and the run history.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownVault { .. } => "unknown_vault",
            Self::NotFound { .. } => "not_found",
            Self::Forbidden { .. } => "forbidden",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Sealed { .. } => "sealed",
            Self::Disabled { .. } => "disabled",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Expired { .. } => "expired",
            Self::Throttled { .. } => "throttled",
            Self::Field { .. } => "field",
            Self::Malformed { .. } => "malformed",
            Self::Backend { .. } => "backend",
            Self::Transport { .. } => "transport",
            Self::Timeout { .. } => "timeout",
            Self::Credential { .. } => "credential",
            Self::Login { .. } => "login",
            Self::FilePermissions { .. } => "file_permissions",
            Self::File { .. } => "file",
            Self::JsonBody { .. } => "json_body",
            Self::InvalidHeaderValue { .. } => "invalid_header_value",
        }
    }
}
