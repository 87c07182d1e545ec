//! Talking to an identity provider for a browser sign-in (the console's): its endpoints
//! from discovery, the authorization code exchanged at its token endpoint, and the ID
//! token verified with the identity's own keys and claim checks.
//!
//! The ID token is judged exactly as a bearer token of the identity is (signature, `alg`
//! list, issuer, time, size, an immutable id), except that its audience is the console's
//! client id, it must carry the `nonce` the sign-in sent, and, naming several audiences,
//! an `azp` equal to that client id (OIDC Core 3.1.3.7). The admin rules (tenant,
//! principals) then apply through the same [`TriggerAccess::admits`] as the bearer path.

use super::error::AuthError;
use super::identity::Identity;
use super::keys::{KeyError, KeyStores, VerifySpec, shown_url};
use super::rules::TriggerAccess;
use super::token::Claims;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Largest token-endpoint answer read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 256 * 1024;

/// What a browser sign-in needs from the discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEndpoints {
    /// `issuer`.
    pub issuer: String,
    /// `authorization_endpoint`.
    pub authorization: String,
    /// `token_endpoint`.
    pub token: String,
    /// `end_session_endpoint` (RP-initiated logout), when advertised.
    pub end_session: Option<String>,
    /// The client authentication to use at the token endpoint: `client_secret_basic`
    /// unless the provider lists only `client_secret_post`.
    pub secret_in_body: bool,
}

/// Why a sign-in could not talk to the provider. Names URLs (without query), never a
/// code, token or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The identity has no discovery URL.
    #[error("identity {0:?} has no discovery document")]
    NoDiscovery(String),
    /// Discovery or the token endpoint failed or answered something unusable.
    #[error(transparent)]
    Fetch(#[from] KeyError),
    /// The token endpoint refused the code (its `error` code, a fixed ASCII word).
    #[error("the token endpoint refused the code ({0})")]
    Refused(String),
}

impl KeyStores {
    /// The endpoints of `identity`'s provider, read from its discovery document; every
    /// URL must pass the identity's transport rule (https, or http on loopback when
    /// `allow_insecure_http`).
    ///
    /// # Errors
    /// [`ProviderError`] when the document cannot be read or lacks an endpoint.
    pub async fn discover_endpoints(&self, identity: &Identity) -> Result<ProviderEndpoints, ProviderError> {
        let super::keys::KeySource::Discovery(url) = &identity.key_source().source else {
            return Err(ProviderError::NoDiscovery(identity.name().to_owned()));
        };
        let spec = identity.spec();
        let store = self.store(spec.name, spec.source, spec.refresh);
        store.check_url(url)?;
        let (bytes, _) = store.get_document(url).await?;
        let document_error =
            |reason: &str| KeyError::Document { source_name: shown_url(url), reason: reason.to_owned() };
        let doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| document_error(&e.to_string()))?;
        let text = |name: &str| doc.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
        let required = |name: &str| text(name).ok_or_else(|| document_error(&format!("no {name} string")));
        let endpoints = ProviderEndpoints {
            issuer: required("issuer")?,
            authorization: required("authorization_endpoint")?,
            token: required("token_endpoint")?,
            end_session: text("end_session_endpoint"),
            secret_in_body: doc.get("token_endpoint_auth_methods_supported").and_then(|v| v.as_array()).is_some_and(
                |methods| {
                    let has = |m: &str| methods.iter().any(|v| v.as_str() == Some(m));
                    has("client_secret_post") && !has("client_secret_basic")
                },
            ),
        };
        for endpoint in [Some(&endpoints.authorization), Some(&endpoints.token), endpoints.end_session.as_ref()]
            .into_iter()
            .flatten()
        {
            store.check_url(endpoint)?;
        }
        Ok(endpoints)
    }

    /// Exchanges an authorization `code` (with its PKCE `verifier`) at the token endpoint
    /// and returns the ID token. `client_secret` is `None` for a public client.
    ///
    /// # Errors
    /// [`ProviderError::Refused`] when the provider refuses the code (a replayed or
    /// expired code, a wrong verifier), [`ProviderError::Fetch`] on transport failures.
    pub async fn exchange_code(
        &self,
        identity: &Identity,
        endpoints: &ProviderEndpoints,
        exchange: CodeExchange<'_>,
    ) -> Result<String, ProviderError> {
        let spec = identity.spec();
        let store = self.store(spec.name, spec.source, spec.refresh);
        store.check_url(&endpoints.token)?;
        let fetch_error = |reason: String| KeyError::Fetch { url: shown_url(&endpoints.token), reason };
        let client = store.client()?;
        let (authorization, body) = token_request(&exchange, endpoints.secret_in_body);
        let mut request = client.post(&endpoints.token).header(http::header::ACCEPT, "application/json");
        if let Some(authorization) = authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        let mut response = request
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(|e| fetch_error(transport_reason(e)))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fetch_error(e.without_url().to_string()))? {
            if bytes.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
                return Err(fetch_error("answer too large".into()).into());
            }
            bytes.extend_from_slice(&chunk);
        }
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if !status.is_success() {
            // The `error` code is an ASCII word from a fixed list (RFC 6749 5.2); anything
            // else is not repeated.
            let code = answer
                .get("error")
                .and_then(serde_json::Value::as_str)
                .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .unwrap_or("no error code");
            return Err(ProviderError::Refused(format!("status {}, {code}", status.as_u16())));
        }
        answer
            .get("id_token")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| fetch_error("the answer has no id_token".into()).into())
    }

    /// Verifies an ID token of the admin identity for the console's `client_id`, with the
    /// `nonce` its sign-in sent, and applies the admin `access` rules (tenant, principals).
    ///
    /// # Errors
    /// [`AuthError`] as for [`KeyStores::authorize_bearer`]; a wrong or missing `nonce` or
    /// `azp` is [`AuthError::Claim`].
    pub async fn verify_id_token(
        &self,
        access: &TriggerAccess,
        token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Arc<Claims>, AuthError> {
        let identity = access.identity().ok_or(AuthError::Misconfigured)?;
        let base = identity.spec();
        let mut rules = base.rules.clone();
        rules.audiences = vec![client_id.to_owned()];
        // Another audience means other rules: the verified-token cache must not mix them.
        let mut hasher = Sha256::new();
        hasher.update(base.fingerprint);
        hasher.update(b"\nid_token\n");
        hasher.update(client_id.as_bytes());
        let fingerprint: [u8; 32] = hasher.finalize().into();
        let spec = VerifySpec { rules: &rules, fingerprint: &fingerprint, ..base };
        let verified = self.verify_token(&spec, token.as_bytes()).await?;
        let claims = verified.claims;
        let sent = claims.all.get("nonce").and_then(serde_json::Value::as_str);
        if !sent.is_some_and(|sent| super::same_bytes(sent.as_bytes(), nonce.as_bytes())) {
            return Err(AuthError::Claim("nonce".into()));
        }
        if claims.aud.len() > 1 && claims.all.get("azp").and_then(serde_json::Value::as_str) != Some(client_id) {
            return Err(AuthError::Claim("azp".into()));
        }
        if claims.oid.is_none() && claims.sub.is_none() {
            return Err(AuthError::NoSubject);
        }
        access.admits(&claims)?;
        Ok(claims)
    }
}

/// A transport failure in words: reqwest's message without the URL, and its causes
/// (connect, TLS, protocol), none of which repeat the request.
fn transport_reason(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    reason
}

/// The token request's form body and, for `client_secret_basic`, its `Authorization`
/// header (marked sensitive).
fn token_request(
    exchange: &CodeExchange<'_>,
    secret_in_body: bool,
) -> (Option<http::HeaderValue>, zeroize::Zeroizing<String>) {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "authorization_code")
        .append_pair("code", exchange.code)
        .append_pair("redirect_uri", exchange.redirect_uri)
        .append_pair("code_verifier", exchange.verifier);
    let mut authorization = None;
    match exchange.client_secret {
        Some(secret) if !secret_in_body => {
            // RFC 6749 2.3.1: both parts form-encoded before they are joined.
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = zeroize::Zeroizing::new(format!("{}:{}", encode(exchange.client_id), encode(secret)));
            let basic = zeroize::Zeroizing::new(format!(
                "Basic {}",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair.as_bytes())
            ));
            authorization = http::HeaderValue::from_str(&basic).ok().map(|mut value| {
                value.set_sensitive(true);
                value
            });
        }
        Some(secret) => {
            form.append_pair("client_id", exchange.client_id).append_pair("client_secret", secret);
        }
        None => {
            form.append_pair("client_id", exchange.client_id);
        }
    }
    (authorization, zeroize::Zeroizing::new(form.finish()))
}

/// What one code exchange sends.
#[derive(Clone, Copy)]
pub struct CodeExchange<'a> {
    /// The authorization code from the callback.
    pub code: &'a str,
    /// The PKCE code verifier of the sign-in that asked for it.
    pub verifier: &'a str,
    /// The redirect URI the authorization request named.
    pub redirect_uri: &'a str,
    /// The console's client id.
    pub client_id: &'a str,
    /// Its secret, for a confidential client.
    pub client_secret: Option<&'a str>,
}

impl std::fmt::Debug for CodeExchange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeExchange").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}
