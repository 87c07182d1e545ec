//! The `openbao` / `hashicorp` backend: KV v2 over HTTP with token or AppRole auth.
//!
//! Minimal read-only ACL policy for flowgate's token or AppRole (one line per path prefix
//! that triggers reference; nothing else is needed, not even `list`):
//!
//! ```hcl
//! path "secret/data/flows/*" {
//!   capabilities = ["read"]
//! }
//! ```
//!
//! AppRole: `bao write auth/approle/role/flowgate token_policies=flowgate-read token_ttl=1h`;
//! flowgate reads `role_id` and `secret_id` through `env:`/`file:` and logs in again shortly
//! before the token's lease ends (or when a read answers 403 with a cached token).

use crate::config::{Diagnostics, KeyPath, SourceFile};
use crate::secrets::backend::{
    AuthMethod, CachedToken, Credential, RawVault, RawVaultAuth, base_url, credential, required, transport_error,
};
use crate::secrets::error::SecretError;
use crate::secrets::reference::SecretRef;
use crate::secrets::value::{SecretValue, sensitive_header, zeroize_tree};
use std::time::Duration;

enum BaoAuth {
    Token(Credential),
    AppRole { role_id: Credential, secret_id: Credential, mount: String },
}

/// A compiled OpenBao / Vault KV v2 client.
pub(crate) struct OpenBao {
    vault: String,
    client: reqwest::Client,
    address: String,
    mount: String,
    namespace: Option<String>,
    auth: BaoAuth,
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

pub(crate) fn compile(
    name: &str,
    raw: &RawVault,
    client: reqwest::Client,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> Option<OpenBao> {
    let address = required(raw.address.as_ref(), &path.key("address"), diags)
        .and_then(|a| base_url(a, &path.key("address"), diags));
    let apath = path.key("auth");
    let auth = match &raw.auth {
        None => {
            diags.error_with_hint(
                &apath,
                "required",
                "auth = { method = \"approle\", role_id = \"env:…\", secret_id = \"env:…\" }",
            );
            None
        }
        Some(RawVaultAuth { method: AuthMethod::Token, token, .. }) => {
            credential(token.as_ref(), &apath.key("token"), source, diags).map(BaoAuth::Token)
        }
        Some(RawVaultAuth { method: AuthMethod::Approle, role_id, secret_id, approle_mount, .. }) => {
            let role_id = credential(role_id.as_ref(), &apath.key("role_id"), source, diags);
            let secret_id = credential(secret_id.as_ref(), &apath.key("secret_id"), source, diags);
            match (role_id, secret_id) {
                (Some(role_id), Some(secret_id)) => Some(BaoAuth::AppRole {
                    role_id,
                    secret_id,
                    mount: approle_mount.clone().unwrap_or_else(|| "approle".into()),
                }),
                _ => None,
            }
        }
        Some(_) => None, // reported by the dispatcher (vault.rs)
    };
    Some(OpenBao {
        vault: name.to_owned(),
        client,
        address: address?,
        mount: raw.mount.clone().unwrap_or_else(|| "secret".into()).trim_matches('/').to_owned(),
        namespace: raw.namespace.clone(),
        auth: auth?,
        token: tokio::sync::Mutex::new(None),
    })
}

impl OpenBao {
    async fn token(&self, reference: &SecretRef) -> Result<SecretValue, SecretError> {
        let (role_id, secret_id, mount) = match &self.auth {
            BaoAuth::Token(c) => return c.read(&self.vault),
            BaoAuth::AppRole { role_id, secret_id, mount } => (role_id, secret_id, mount),
        };
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().and_then(CachedToken::fresh) {
            return Ok(t);
        }
        let (role_id, secret_id) = (role_id.read(&self.vault)?, secret_id.read(&self.vault)?);
        let mut body =
            serde_json::json!({ "role_id": role_id.expose_secret(), "secret_id": secret_id.expose_secret() });
        let mut req = self.client.post(format!("{}/v1/auth/{mount}/login", self.address)).json(&body);
        zeroize_tree(&mut body);
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        let resp = req.send().await.map_err(|e| transport_error(reference, &e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(SecretError::Login {
                vault: self.vault.clone(),
                problem: format!("AppRole login answered HTTP {status}"),
            });
        }
        let mut json: serde_json::Value = resp.json().await.map_err(|_| SecretError::Login {
            vault: self.vault.clone(),
            problem: "AppRole login answer is not JSON".into(),
        })?;
        let token = json.pointer("/auth/client_token").and_then(|t| t.as_str()).map(|t| SecretValue::new(t.to_owned()));
        let lease = json.pointer("/auth/lease_duration").and_then(serde_json::Value::as_u64);
        zeroize_tree(&mut json);
        let token = token.ok_or_else(|| SecretError::Login {
            vault: self.vault.clone(),
            problem: "AppRole login answer has no auth.client_token".into(),
        })?;
        let lifetime = lease.filter(|l| *l > 0).map(Duration::from_secs);
        tracing::debug!(vault = %self.vault, lease_seconds = lease, "AppRole login");
        *cached = Some(CachedToken::new(token.clone(), lifetime));
        Ok(token)
    }

    pub(crate) async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, SecretError> {
        let r = || reference.to_string();
        for attempt in 0..2 {
            let token = self.token(reference).await?;
            let mut url = format!("{}/v1/{}/data/{}", self.address, self.mount, reference.path);
            if let Some(v) = &reference.version {
                url.push_str("?version=");
                url.push_str(v);
            }
            let header = sensitive_header(token.expose_secret()).ok_or_else(|| SecretError::Login {
                vault: self.vault.clone(),
                problem: "token is not a valid header value".into(),
            })?;
            let mut req = self.client.get(url).header("X-Vault-Token", header);
            if let Some(ns) = &self.namespace {
                req = req.header("X-Vault-Namespace", ns);
            }
            let resp = req.send().await.map_err(|e| transport_error(reference, &e))?;
            match resp.status().as_u16() {
                200 => {}
                403 if attempt == 0 && matches!(self.auth, BaoAuth::AppRole { .. }) => {
                    // The cached token may have been revoked: log in again once.
                    *self.token.lock().await = None;
                    continue;
                }
                403 => return Err(SecretError::Forbidden { reference: r() }),
                404 => return Err(SecretError::NotFound { reference: r() }),
                503 => return Err(SecretError::Sealed { reference: r() }),
                429 => return Err(SecretError::Throttled { reference: r() }),
                status => return Err(SecretError::Backend { reference: r(), status, code: None }),
            }
            let mut json: serde_json::Value =
                resp.json().await.map_err(|_| SecretError::Malformed { reference: r(), what: "not JSON".into() })?;
            let result = select_field(reference, json.pointer("/data/data"));
            zeroize_tree(&mut json);
            return result;
        }
        Err(SecretError::Forbidden { reference: r() })
    }
}

/// Picks the value out of KV v2 `data.data`: `#field`, or the only key when there is one.
fn select_field(reference: &SecretRef, data: Option<&serde_json::Value>) -> Result<SecretValue, SecretError> {
    let r = || reference.to_string();
    let data = match data {
        Some(serde_json::Value::Object(map)) => map,
        // A deleted or destroyed version answers `data: null`.
        Some(serde_json::Value::Null) => return Err(SecretError::NotFound { reference: r() }),
        _ => return Err(SecretError::Malformed { reference: r(), what: "no data.data object".into() }),
    };
    let value = match &reference.field {
        Some(field) => data.get(field).ok_or_else(|| SecretError::Field {
            reference: r(),
            problem: format!("no field {field:?} (fields: {})", data.keys().cloned().collect::<Vec<_>>().join(", ")),
        })?,
        None if data.len() == 1 => data.values().next().ok_or_else(|| SecretError::NotFound { reference: r() })?,
        None => {
            return Err(SecretError::Field {
                reference: r(),
                problem: format!(
                    "the secret has fields {}; select one with #field",
                    data.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    };
    match value {
        serde_json::Value::String(s) => Ok(SecretValue::new(s.clone())),
        serde_json::Value::Number(n) => Ok(SecretValue::new(n.to_string())),
        _ => Err(SecretError::Field { reference: r(), problem: "the field is not a string".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_fields_from_kv_data() {
        let data = serde_json::json!({"api_key": "k", "other": "o"});
        let r = SecretRef::parse("secret://kv/a#api_key").unwrap();
        assert_eq!(select_field(&r, Some(&data)).unwrap().expose_secret(), "k");
        let r = SecretRef::parse("secret://kv/a").unwrap();
        let e = select_field(&r, Some(&data)).unwrap_err();
        assert!(e.to_string().contains("api_key, other") && !e.to_string().contains("\"k\""));
        let single = serde_json::json!({"value": "v"});
        assert_eq!(select_field(&r, Some(&single)).unwrap().expose_secret(), "v");
        assert_eq!(select_field(&r, Some(&serde_json::Value::Null)).unwrap_err().kind(), "not_found");
    }
}
