//! The request path's entry into auth: [`KeyStores::authenticate_identified`] reads a
//! request's credential (bearer token or signed URL), verifies it, and applies the
//! trigger's rules; [`KeyStores::authorize_bearer`] does the same for the admin API.

use super::caller::Caller;
use super::certificate::Presented;
use super::error::AuthError;
use super::forward::query_has_token;
use super::keys::KeyStores;
use super::rules::{TriggerAccess, Who};
use super::token::Claims;
use std::sync::Arc;

/// The bearer token of the request: exactly one `Authorization` header with scheme
/// `Bearer` (any casing) and a token68 value.
pub(super) fn bearer_token(headers: &http::HeaderMap) -> Result<&[u8], AuthError> {
    well_formed(bearer_credential_bytes(headers)?)
}

/// The credential bytes after `Bearer` and its spaces, of exactly one `Authorization`
/// header; not yet checked to be a token ([`well_formed`]).
fn bearer_credential_bytes(headers: &http::HeaderMap) -> Result<&[u8], AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Err(AuthError::MissingToken) };
    if values.next().is_some() {
        return Err(AuthError::BadAuthorization("repeated"));
    }
    // Read as bytes, and handed on as bytes: `is_token` admits ASCII only, so a text check
    // (`to_str`, `from_utf8`) would only repeat it over a kilobyte on every call. The token
    // is read as text only when it is not a cached one (`verify_token`).
    let value = value.as_bytes();
    let space = value.iter().position(|&b| b == b' ').ok_or(AuthError::BadAuthorization("no scheme"))?;
    let (scheme, token) = (&value[..space], &value[space + 1..]);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthError::BadAuthorization("not Bearer"));
    }
    Ok(&token[token.iter().take_while(|&&b| b == b' ').count()..])
}

/// `credential` when it is a token: not empty, token68 bytes and dots only.
fn well_formed(credential: &[u8]) -> Result<&[u8], AuthError> {
    if credential.is_empty() || !is_token(credential) {
        return Err(AuthError::BadAuthorization("not a token"));
    }
    Ok(credential)
}

/// The request's bearer token, when it carries one well-formed: what the caller
/// authenticated with, which the run record must not hold even if an upstream echoes it.
pub fn bearer_credential(headers: &http::HeaderMap) -> Option<&[u8]> {
    bearer_token(headers).ok()
}

/// True when every byte may appear in a bearer token (token68 plus `.`, as JWTs use).
/// Checked on every call over a kilobyte or more, so it is written to be vectorised:
/// comparisons without branches, folded over the whole token with no early exit.
#[expect(clippy::needless_bitwise_bool, reason = "no early exit, so that the fold is vectorised")]
fn is_token(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        let alphanumeric = (b | 0x20).wrapping_sub(b'a') < 26 || b.wrapping_sub(b'0') < 10;
        let punctuation = b == b'-' || b == b'.' || b == b'_' || b == b'~' || b == b'+' || b == b'/' || b == b'=';
        ok & (alphanumeric | punctuation)
    })
}

impl KeyStores {
    /// Authenticates and authorizes one request against a trigger's access rules.
    ///
    /// Runs after the firewall and before the rate limiter. Tokens are read only from
    /// `Authorization: Bearer`; the caller must not log the query when
    /// [`query_has_token`] is true (this function refuses such requests).
    ///
    /// # Errors
    /// [`AuthError`]; the refusal table (`refusal::auth`) turns it into the response.
    pub async fn authenticate(
        &self,
        access: &TriggerAccess,
        parts: &http::request::Parts,
    ) -> Result<Arc<Caller>, AuthError> {
        self.authenticate_identified(access, parts, None).await.map_err(|(error, _)| error)
    }

    /// [`KeyStores::authenticate`], also naming the caller when a verified token fails a
    /// trigger rule, so the run record says who was refused, and judging the client
    /// certificate the call `presented` against the trigger's certificate rule.
    ///
    /// # Errors
    /// The [`AuthError`], with the verified caller when the token itself was valid.
    pub async fn authenticate_identified(
        &self,
        access: &TriggerAccess,
        parts: &http::request::Parts,
        presented: Presented<'_>,
    ) -> Result<Arc<Caller>, (AuthError, Option<Arc<Caller>>)> {
        if query_has_token(&parts.uri) {
            return Err((AuthError::TokenInQuery, None));
        }
        // The certificate costs a hash lookup: judged before any signature.
        let certificate = access.certificate.check(presented).map_err(|e| (e, None))?;
        if access.who() == Who::Certificate {
            let certificate = certificate.ok_or((AuthError::CertificateMissing, None))?;
            return Ok(Arc::new(Caller::certificate(certificate)));
        }
        if access.who() == Who::Anyone {
            let keys = access.signed.as_ref().ok_or((AuthError::Misconfigured, None))?;
            let now = self.clock().unix_millis() / 1000;
            let kid = keys
                .verify(&access.name, parts.method.as_str(), parts.uri.path(), parts.uri.query(), now)
                .map_err(|e| (AuthError::SignedUrl(e), None))?;
            // Verified above: the query holds exactly one signature parameter.
            let sig_name = keys.params().sig.as_str();
            let signature = parts
                .uri
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|pair| pair.split_once('=').filter(|(name, _)| *name == sig_name).map(|(_, v)| v))
                .unwrap_or("");
            return Ok(Arc::new(Caller::signed_url(&kid, signature)));
        }
        let identity = access.identity().ok_or((AuthError::Misconfigured, None))?;
        let spec = identity.spec();
        let credential = bearer_credential_bytes(&parts.headers).map_err(|e| (e, None))?;
        // A repeat caller's exact bytes are a token verified before: the byte-by-byte check
        // of its shape (over a kilobyte) runs only for a token the cache does not hold.
        let verified = if let Some(verified) = self.cached_token(&spec, credential) {
            verified
        } else {
            let token = well_formed(credential).map_err(|e| (e, None))?;
            // Boxed: verification (and a key fetch it may wait for) is the rare path; inline,
            // its state would be carried, and moved, by every call's future.
            Box::pin(self.verify_token(&spec, token)).await.map_err(|e| (AuthError::from(e), None))?
        };
        // Rules and budgets need an immutable id: `oid`, or `sub` (with its issuer).
        if verified.claims.oid.is_none() && verified.claims.sub.is_none() {
            return Err((AuthError::NoSubject, None));
        }
        let judged = access
            .admits(&verified.claims)
            .and_then(|()| access.certificate.check_binding(&verified.claims, certificate.map(|c| &**c)));
        match judged {
            Ok(()) => Ok(verified.caller),
            Err(error) => Err((error, Some(verified.caller))),
        }
    }

    /// Verifies the bearer token of `headers` and applies `access`'s tenant and principal
    /// rules (the admin API's, from `compile_admin_access`); the admin API then maps the
    /// verified `roles` claim to admin roles.
    ///
    /// # Errors
    /// [`AuthError`] as for [`KeyStores::authenticate`]: a valid token of a tenant or
    /// principal the rules do not admit is [`AuthError::Tenant`] / [`AuthError::Principal`].
    pub async fn authorize_bearer(
        &self,
        access: &TriggerAccess,
        headers: &http::HeaderMap,
    ) -> Result<Arc<Claims>, AuthError> {
        let identity = access.identity().ok_or(AuthError::Misconfigured)?;
        let token = bearer_token(headers)?;
        let verified = self.verify_token(&identity.spec(), token).await?;
        access.admits(&verified.claims)?;
        Ok(verified.claims)
    }
}
