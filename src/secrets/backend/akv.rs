//! The `azure_key_vault` backend: REST Get Secret (api-version 7.5) with Entra ID tokens from
//! a client secret, a client certificate (signed JWT assertion), the VM instance-metadata
//! endpoint or the App Service identity endpoint.
//!
//! Minimal permissions: the identity needs only the data-plane right to get secrets:
//! the built-in role **Key Vault Secrets User** scoped to the vault (RBAC vaults), or an
//! access policy with secret permission `get` (no `list`).
//!
//! A disabled secret, or one outside its `nbf`/`exp` window, is never injected: the fetch
//! fails with a typed error (503 for the caller, the reason in the audit record).
//! 429 answers are retried after `Retry-After` when present, else after a jittered
//! exponential delay, within the cache's `fetch_timeout`.

use crate::config::{Diagnostics, KeyPath, SourceFile};
use crate::secrets::backend::{
    AuthMethod, CachedToken, Credential, RawVault, RawVaultAuth, base_url, credential, required, select,
    transport_error,
};
use crate::secrets::error::SecretError;
use crate::secrets::reference::SecretRef;
use crate::secrets::value::{SecretValue, sensitive_header, zeroize_tree};
use base64::Engine;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const API_VERSION: &str = "7.5";
/// Attempts of one fetch when the vault answers 429.
const MAX_ATTEMPTS: u32 = 5;

enum AkvAuth {
    ClientSecret { tenant: String, client_id: String, secret: Credential },
    ClientCertificate { tenant: String, client_id: String, certificate: Credential },
    ManagedIdentity { client_id: Option<String> },
    AppService { endpoint: Credential, header: Credential, client_id: Option<String> },
}

/// A compiled Azure Key Vault client.
pub(crate) struct Akv {
    vault: String,
    client: reqwest::Client,
    vault_url: String,
    authority_host: String,
    resource: String,
    imds: String,
    auth: AkvAuth,
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

pub(crate) fn compile(
    name: &str,
    raw: &RawVault,
    client: reqwest::Client,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> Option<Akv> {
    let url_field = |v: Option<&String>, key: &str, default: &str, diags: &mut Diagnostics| {
        base_url(v.map_or(default, String::as_str), &path.key(key), diags)
    };
    let vault_url = required(raw.vault_url.as_ref(), &path.key("vault_url"), diags)
        .and_then(|u| base_url(u, &path.key("vault_url"), diags));
    let authority_host =
        url_field(raw.authority_host.as_ref(), "authority_host", "https://login.microsoftonline.com", diags);
    let resource = url_field(raw.resource.as_ref(), "resource", "https://vault.azure.net", diags);
    let imds = url_field(raw.imds_endpoint.as_ref(), "imds_endpoint", "http://169.254.169.254", diags);
    let apath = path.key("auth");
    let need = |v: &Option<String>, key: &str, diags: &mut Diagnostics| {
        required(v.as_ref(), &apath.key(key), diags).map(str::to_owned)
    };
    let auth = match &raw.auth {
        None => {
            diags.error_with_hint(
                &apath,
                "required",
                "auth = { method = \"managed_identity\" } or client_secret / client_certificate / app_service",
            );
            None
        }
        Some(a @ RawVaultAuth { method: AuthMethod::ClientSecret, .. }) => {
            let (tenant, client_id) = (need(&a.tenant, "tenant", diags), need(&a.client_id, "client_id", diags));
            let secret = credential(a.client_secret.as_ref(), &apath.key("client_secret"), source, diags);
            Some(AkvAuth::ClientSecret { tenant: tenant?, client_id: client_id?, secret: secret? })
        }
        Some(a @ RawVaultAuth { method: AuthMethod::ClientCertificate, .. }) => {
            let (tenant, client_id) = (need(&a.tenant, "tenant", diags), need(&a.client_id, "client_id", diags));
            let certificate = credential(a.certificate.as_ref(), &apath.key("certificate"), source, diags);
            Some(AkvAuth::ClientCertificate { tenant: tenant?, client_id: client_id?, certificate: certificate? })
        }
        Some(a @ RawVaultAuth { method: AuthMethod::ManagedIdentity, .. }) => {
            Some(AkvAuth::ManagedIdentity { client_id: a.client_id.clone() })
        }
        Some(a @ RawVaultAuth { method: AuthMethod::AppService, .. }) => {
            let endpoint_default = "env:IDENTITY_ENDPOINT".to_owned();
            let header_default = "env:IDENTITY_HEADER".to_owned();
            let endpoint = credential(
                Some(a.identity_endpoint.as_ref().unwrap_or(&endpoint_default)),
                &apath.key("identity_endpoint"),
                source,
                diags,
            );
            let header = credential(
                Some(a.identity_header.as_ref().unwrap_or(&header_default)),
                &apath.key("identity_header"),
                source,
                diags,
            );
            Some(AkvAuth::AppService { endpoint: endpoint?, header: header?, client_id: a.client_id.clone() })
        }
        Some(_) => None, // reported by the dispatcher (vault.rs)
    };
    Some(Akv {
        vault: name.to_owned(),
        client,
        vault_url: vault_url?,
        authority_host: authority_host?,
        resource: resource?,
        imds: imds?,
        auth: auth?,
        token: tokio::sync::Mutex::new(None),
    })
}

#[expect(clippy::disallowed_methods, reason = "Entra checks a client assertion against the real time")]
fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The delay before retrying a 429: `Retry-After` (seconds) when present, else a jittered
/// exponential back-off (0.5 s × 2^attempt, between 50 % and 100 % of it, capped at 30 s).
pub(crate) fn retry_delay(attempt: u32, retry_after: Option<&HeaderValue>, jitter: f64) -> Duration {
    if let Some(secs) = retry_after.and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()) {
        return Duration::from_secs(secs.min(300));
    }
    let base = Duration::from_millis(500).saturating_mul(1u32 << attempt.min(6)).min(Duration::from_secs(30));
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

fn number(v: Option<&serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[derive(serde::Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    iat: u64,
    exp: u64,
}

/// Extracts the first `PRIVATE KEY` PEM block.
fn private_key_pem(pem: &str) -> Option<&str> {
    let start = pem
        .match_indices("-----BEGIN ")
        .map(|(i, _)| i)
        .find(|i| pem[*i..].lines().next().is_some_and(|l| l.contains("PRIVATE KEY")))?;
    let end_marker = pem[start..].find("-----END ")? + start;
    let end = pem[end_marker..].find('\n').map_or(pem.len(), |e| end_marker + e + 1);
    Some(&pem[start..end])
}

impl Akv {
    fn login_error(&self, problem: impl Into<String>) -> SecretError {
        SecretError::Login { vault: self.vault.clone(), problem: problem.into() }
    }

    /// A signed client assertion (RFC 7523) with the certificate's `x5t#S256` thumbprint.
    fn client_assertion(&self, pem: &SecretValue, client_id: &str, audience: &str) -> Result<SecretValue, SecretError> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let cert = CertificateDer::from_pem_slice(pem.expose_secret().as_bytes())
            .map_err(|_| self.login_error("client certificate file has no CERTIFICATE block"))?;
        let key_pem = private_key_pem(pem.expose_secret())
            .ok_or_else(|| self.login_error("client certificate file has no PRIVATE KEY block"))?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.as_bytes())
            .map_err(|_| self.login_error("client certificate key is not an RSA private key"))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.x5t_s256 = Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(cert.as_ref())));
        let now = now_unix();
        let claims = AssertionClaims {
            aud: audience,
            iss: client_id,
            sub: client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + 600,
        };
        jsonwebtoken::encode(&header, &claims, &key)
            .map(SecretValue::new)
            .map_err(|_| self.login_error("cannot sign the client assertion"))
    }

    async fn new_token(&self, reference: &SecretRef) -> Result<CachedToken, SecretError> {
        let scope = format!("{}/.default", self.resource);
        let req = match &self.auth {
            AkvAuth::ClientSecret { tenant, client_id, secret } => {
                let secret = secret.read(&self.vault)?;
                self.client.post(format!("{}/{tenant}/oauth2/v2.0/token", self.authority_host)).form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", secret.expose_secret()),
                    ("scope", &scope),
                ])
            }
            AkvAuth::ClientCertificate { tenant, client_id, certificate } => {
                let pem = certificate.read(&self.vault)?;
                let url = format!("{}/{tenant}/oauth2/v2.0/token", self.authority_host);
                let assertion = self.client_assertion(&pem, client_id, &url)?;
                self.client.post(&url).form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", assertion.expose_secret()),
                    ("scope", &scope),
                ])
            }
            AkvAuth::ManagedIdentity { client_id } => {
                let mut query = vec![("api-version", "2018-02-01"), ("resource", self.resource.as_str())];
                if let Some(id) = client_id {
                    query.push(("client_id", id));
                }
                self.client
                    .get(format!("{}/metadata/identity/oauth2/token", self.imds))
                    .query(&query)
                    .header("Metadata", "true")
            }
            AkvAuth::AppService { endpoint, header, client_id } => {
                let endpoint = endpoint.read(&self.vault)?;
                let header = header.read(&self.vault)?;
                let mut query = vec![("api-version", "2019-08-01"), ("resource", self.resource.as_str())];
                if let Some(id) = client_id {
                    query.push(("client_id", id));
                }
                let value = sensitive_header(header.expose_secret())
                    .ok_or_else(|| self.login_error("identity header is not a valid header value"))?;
                self.client.get(endpoint.expose_secret()).query(&query).header("X-IDENTITY-HEADER", value)
            }
        };
        let resp = req.send().await.map_err(|e| transport_error(reference, &e))?;
        let status = resp.status();
        let mut json: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let code = json
                .get("error")
                .and_then(|e| e.as_str().map(str::to_owned).or_else(|| e.get("code")?.as_str().map(str::to_owned)));
            zeroize_tree(&mut json);
            return Err(self.login_error(format!(
                "token endpoint answered HTTP {status}{}",
                code.map(|c| format!(" ({c})")).unwrap_or_default()
            )));
        }
        let token = json.get("access_token").and_then(|t| t.as_str()).map(|t| SecretValue::new(t.to_owned()));
        let lifetime = number(json.get("expires_in"))
            .or_else(|| number(json.get("expires_on")).map(|on| on.saturating_sub(now_unix())))
            .map(Duration::from_secs);
        zeroize_tree(&mut json);
        let token = token.ok_or_else(|| self.login_error("token answer has no access_token"))?;
        tracing::debug!(vault = %self.vault, lifetime_seconds = lifetime.map(|l| l.as_secs()), "Entra ID token acquired");
        Ok(CachedToken::new(token, Some(lifetime.unwrap_or(Duration::from_secs(300)))))
    }

    async fn token(&self, reference: &SecretRef) -> Result<SecretValue, SecretError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().and_then(CachedToken::fresh) {
            return Ok(t);
        }
        let fresh = self.new_token(reference).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    pub(crate) async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, SecretError> {
        let r = || reference.to_string();
        let mut url = format!("{}/secrets/{}", self.vault_url, reference.path);
        if let Some(v) = &reference.version {
            url.push('/');
            url.push_str(v);
        }
        url.push_str("?api-version=");
        url.push_str(API_VERSION);
        let mut reauthenticated = false;
        let mut attempt = 0;
        loop {
            let token = self.token(reference).await?;
            let bearer = sensitive_header(&format!("Bearer {}", token.expose_secret()))
                .ok_or_else(|| self.login_error("access token is not a valid header value"))?;
            let resp = self
                .client
                .get(&url)
                .header(http::header::AUTHORIZATION, bearer)
                .send()
                .await
                .map_err(|e| transport_error(reference, &e))?;
            let status = resp.status().as_u16();
            match status {
                200 => {}
                401 => {
                    let challenge = resp
                        .headers()
                        .get(http::header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    *self.token.lock().await = None;
                    if !reauthenticated {
                        reauthenticated = true;
                        continue;
                    }
                    return Err(SecretError::Unauthorized { reference: r(), challenge });
                }
                429 => {
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        return Err(SecretError::Throttled { reference: r() });
                    }
                    let delay = retry_delay(attempt - 1, resp.headers().get(http::header::RETRY_AFTER), rand::random());
                    tracing::info!(vault = %self.vault, reference = %reference, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "vault throttled (429); backing off");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                _ => {
                    let json: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
                    let code = json.pointer("/error/code").and_then(|c| c.as_str()).map(str::to_owned);
                    let inner = json.pointer("/error/innererror/code").and_then(|c| c.as_str()).unwrap_or("");
                    let disabled =
                        code.as_deref().is_some_and(|c| c.contains("Disabled")) || inner.contains("Disabled");
                    return Err(match status {
                        403 if disabled => SecretError::Disabled { reference: r() },
                        403 => SecretError::Forbidden { reference: r() },
                        404 => SecretError::NotFound { reference: r() },
                        _ => SecretError::Backend { reference: r(), status, code },
                    });
                }
            }
            let mut json: serde_json::Value =
                resp.json().await.map_err(|_| SecretError::Malformed { reference: r(), what: "not JSON".into() })?;
            let result = Self::judge(reference, &json);
            zeroize_tree(&mut json);
            return result;
        }
    }

    /// Checks `attributes` (enabled, nbf, exp) and extracts the value (or a `#field` of a
    /// JSON value).
    fn judge(reference: &SecretRef, json: &serde_json::Value) -> Result<SecretValue, SecretError> {
        let r = || reference.to_string();
        let attributes = json.get("attributes");
        if attributes.and_then(|a| a.get("enabled")).and_then(serde_json::Value::as_bool) == Some(false) {
            return Err(SecretError::Disabled { reference: r() });
        }
        let now = now_unix();
        if number(attributes.and_then(|a| a.get("nbf"))).is_some_and(|nbf| nbf > now) {
            return Err(SecretError::NotYetValid { reference: r() });
        }
        if number(attributes.and_then(|a| a.get("exp"))).is_some_and(|exp| exp <= now) {
            return Err(SecretError::Expired { reference: r() });
        }
        let value = json
            .get("value")
            .and_then(|v| v.as_str())
            .ok_or_else(|| SecretError::Malformed { reference: r(), what: "no value".into() })?;
        match &reference.field {
            None => Ok(SecretValue::new(value.to_owned())),
            Some(field) => {
                let mut inner: serde_json::Value = serde_json::from_str(value).map_err(|_| SecretError::Field {
                    reference: r(),
                    problem: "#field needs a secret whose value is a JSON object".into(),
                })?;
                let selected = select(&inner, reference, std::iter::once(field.clone()));
                zeroize_tree(&mut inner);
                selected
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_honours_retry_after_else_jittered_exponential() {
        let ra = HeaderValue::from_static("7");
        assert_eq!(retry_delay(0, Some(&ra), 0.3), Duration::from_secs(7));
        assert_eq!(retry_delay(3, Some(&ra), 0.9), Duration::from_secs(7));
        // No Retry-After: between half and all of 0.5 s × 2^attempt.
        assert_eq!(retry_delay(0, None, 0.0), Duration::from_millis(250));
        assert_eq!(retry_delay(0, None, 1.0), Duration::from_millis(500));
        assert_eq!(retry_delay(2, None, 1.0), Duration::from_secs(2));
        assert!(retry_delay(3, None, 0.5) > retry_delay(2, None, 0.5));
        assert!(retry_delay(30, None, 1.0) <= Duration::from_secs(30));
        let bad = HeaderValue::from_static("soon");
        assert_eq!(retry_delay(1, Some(&bad), 0.0), Duration::from_millis(500));
    }

    #[test]
    fn finds_the_private_key_block() {
        // Not a key: placeholder text for the PEM block finder, assembled so that no
        // committed file looks like it holds a private key.
        let kind = ["PRIVATE", "KEY"].join(" ");
        let block = format!("-----BEGIN {kind}-----\nBBB\n-----END {kind}-----\n");
        let pem = format!("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n{block}");
        assert_eq!(private_key_pem(&pem), Some(block.as_str()));
        assert_eq!(private_key_pem("-----BEGIN CERTIFICATE-----\n"), None);
    }
}
