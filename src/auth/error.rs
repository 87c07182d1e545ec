//! [`AuthError`]: why a call was not authenticated or authorized. Which status each one
//! is (401, 403, 503) is decided in the refusal table (`refusal.rs`).

use super::keys::{KeyError, VerifyError};
use super::signed::SignedUrlError;
use super::token::TokenError;

/// Why a call was not authenticated or authorized. Names the failed check, never a token,
/// signature or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A token-like query parameter (`access_token`, `id_token`, a JWT-shaped value…).
    #[error("token in the query string")]
    TokenInQuery,
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    MissingToken,
    /// An `Authorization` header that is not one well-formed bearer token.
    #[error("malformed Authorization header: {0}")]
    BadAuthorization(&'static str),
    /// The token failed verification.
    #[error("invalid token: {0}")]
    InvalidToken(TokenError),
    /// No usable signing keys (503).
    #[error("{0}")]
    KeysUnavailable(KeyError),
    /// The signed URL failed.
    #[error("signed URL: {0}")]
    SignedUrl(SignedUrlError),
    /// `tid` is not among the trigger's tenants.
    #[error("tenant not allowed")]
    Tenant,
    /// The principal is not listed.
    #[error("principal not listed")]
    Principal,
    /// An exact-match claim rule failed (names the claim).
    #[error("claim {0} does not match")]
    Claim(String),
    /// A required role is missing.
    #[error("required role missing")]
    Role,
    /// A required scope is missing.
    #[error("required scope missing")]
    Scope,
    /// A valid token naming no principal: neither `oid` nor `sub`, so no immutable id
    /// to judge or budget it by.
    #[error("token has neither oid nor sub: no principal to key its rate limit by")]
    NoSubject,
    /// The trigger needs a client certificate and the call presented none.
    #[error("no client certificate")]
    CertificateMissing,
    /// The call's certificate cannot name a caller (not for client authentication, or
    /// unreadable).
    #[error("client certificate unusable: {0}")]
    CertificateUnusable(crate::tls::peer::PeerCertError),
    /// The certificate is not one of the trigger's `cert:` principals.
    #[error("client certificate not listed")]
    CertificateNotListed,
    /// The trigger requires certificate-bound tokens and the token has no `cnf.x5t#S256`.
    #[error("token not bound to a certificate (no cnf.x5t#S256)")]
    TokenNotBound,
    /// The token's `cnf.x5t#S256` names another certificate than the one presented (or
    /// none was presented).
    #[error("token bound to another certificate (cnf.x5t#S256 does not match)")]
    TokenBoundElsewhere,
    /// The trigger cannot be judged (compile let through a trigger without identity).
    #[error("trigger has no usable identity or signed-URL keys")]
    Misconfigured,
}

impl From<VerifyError> for AuthError {
    fn from(err: VerifyError) -> Self {
        match err {
            VerifyError::Token(e) => Self::InvalidToken(e),
            VerifyError::Keys(e) => Self::KeysUnavailable(e),
        }
    }
}
