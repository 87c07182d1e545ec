//! The demo's development token issuer: an ES256 key generated on first run into a
//! directory (`certs/dev-issuer.key.json`, mode 0600), discovery and JWKS served over
//! plain HTTP on loopback, and [`DevIssuer::mint`] behind `flowgate token`.
//!
//! Nothing trusts this issuer unless a policy names it in an `[identity.NAME]`.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// File name of the signing key inside the given directory.
pub const KEY_FILE: &str = "dev-issuer.key.json";
/// The demo tenant id minted by default.
pub const DEMO_TENANT: &str = "11111111-2222-4333-8444-555555555555";
/// The demo caller's object id minted by default.
pub const DEMO_OID: &str = "22222222-3333-4444-8555-666666666666";
/// The demo client application id minted by default.
pub const DEMO_APP_ID: &str = "33333333-4444-4555-8666-777777777777";
/// The demo audience minted by default.
pub const DEMO_AUDIENCE: &str = "api://flowgate-demo";
/// The demo role minted by default.
pub(crate) const DEMO_ROLE: &str = "Flows.Invoke";

/// Why the development issuer failed.
#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    /// Reading or writing the key file.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is not a development issuer key.
    #[error("{path}: not a development issuer key: {reason}")]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Key generation or signing failed.
    #[error("signing: {0}")]
    Crypto(String),
}

/// Options of `flowgate token`. With none given, the token is accepted by the demo's main
/// trigger.
#[derive(Debug, Clone, clap::Args)]
pub struct MintOptions {
    /// Tenant id (`tid`).
    #[arg(long, default_value = DEMO_TENANT)]
    pub tenant: String,
    /// Subject (`sub`); defaults to the object id. Empty: no `sub` claim.
    #[arg(long)]
    pub subject: Option<String>,
    /// Object id (`oid`). Empty: no `oid` claim.
    #[arg(long, default_value = DEMO_OID)]
    pub oid: String,
    /// Calling application id (`azp` and `appid`).
    #[arg(long, default_value = DEMO_APP_ID)]
    pub app_id: String,
    /// Roles (`roles`), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = DEMO_ROLE)]
    pub roles: Vec<String>,
    /// Delegated scopes (`scp`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// Audience (`aud`).
    #[arg(long, default_value = DEMO_AUDIENCE)]
    pub audience: String,
    /// Lifetime in seconds; negative gives an already expired token.
    #[arg(long, default_value_t = 3600, allow_negative_numbers = true)]
    pub expires_in: i64,
    /// Binds the token to a client certificate (RFC 8705 `cnf.x5t#S256`: the unpadded
    /// base64url SHA-256 of the certificate's DER).
    #[arg(long)]
    pub cnf_x5t_s256: Option<String>,
}

impl Default for MintOptions {
    fn default() -> Self {
        Self {
            tenant: DEMO_TENANT.into(),
            subject: None,
            oid: DEMO_OID.into(),
            app_id: DEMO_APP_ID.into(),
            roles: vec![DEMO_ROLE.into()],
            scopes: Vec::new(),
            audience: DEMO_AUDIENCE.into(),
            expires_in: 3600,
            cnf_x5t_s256: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    kid: String,
    alg: String,
    pkcs8_pem: String,
}

/// The development issuer: its key, public JWK and issuer URL.
pub struct DevIssuer {
    issuer: String,
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer").field("issuer", &self.issuer).field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// Loads the key from `dir/dev-issuer.key.json`, generating it (mode 0600) on first
    /// run. `issuer` is the URL the demo serves discovery under, for example
    /// `http://127.0.0.1:9902`; it becomes `iss`.
    ///
    /// # Errors
    /// When the file cannot be read, written or parsed.
    pub fn load_or_create(dir: &Path, issuer: &str) -> Result<Self, DevIssuerError> {
        let path = dir.join(KEY_FILE);
        let io = |source| DevIssuerError::Io { path: path.clone(), source };
        let file: KeyFile = match std::fs::read(&path) {
            // Only the place of a JSON error: serde's message may quote the key text.
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DevIssuerError::BadKeyFile {
                path: path.clone(),
                reason: format!("not a key file (line {} column {})", e.line(), e.column()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| DevIssuerError::Crypto(e.to_string()))?;
                let kid = hex::encode(&Sha256::digest(pair.public_key_raw())[..8]);
                let file = KeyFile { kid, alg: "ES256".into(), pkcs8_pem: pair.serialize_pem() };
                let json = serde_json::to_vec_pretty(&file).map_err(|e| DevIssuerError::Crypto(e.to_string()))?;
                crate::tls::dev::write_file(dir, &path, &json, 0o600).map_err(|e| match e {
                    crate::tls::dev::DevCertError::Write { cause, .. } => io(cause),
                    other @ crate::tls::dev::DevCertError::Generate(_) => DevIssuerError::Crypto(other.to_string()),
                })?;
                file
            }
            Err(e) => return Err(io(e)),
        };
        if file.alg != "ES256" {
            return Err(DevIssuerError::BadKeyFile { path, reason: format!("alg {} is not ES256", file.alg) });
        }
        let encoding = EncodingKey::from_ec_pem(file.pkcs8_pem.as_bytes())
            .map_err(|e| DevIssuerError::BadKeyFile { path: path.clone(), reason: e.to_string() })?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)
            .map_err(|e| DevIssuerError::BadKeyFile { path, reason: e.to_string() })?;
        jwk.common.key_id = Some(file.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        Ok(Self { issuer: issuer.trim_end_matches('/').to_owned(), kid: file.kid, encoding, jwk })
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The discovery URL to put in an `[identity.NAME]`.
    pub(crate) fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The public key set.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: vec![self.jwk.clone()] }
    }

    /// The discovery document.
    pub fn discovery(&self) -> serde_json::Value {
        serde_json::json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks", self.issuer),
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        })
    }

    /// The `[identity.NAME]` table (TOML) that trusts this issuer for the demo tenant.
    pub fn identity_toml(&self, name: &str) -> String {
        format!(
            "[identity.{name}]\ndiscovery = \"{}\"\nissuer = \"{}\"\naudiences = [\"{DEMO_AUDIENCE}\"]\ntenants = [\"{DEMO_TENANT}\"]\nalgorithms = [\"ES256\"]\nallow_insecure_http = true\n",
            self.discovery_url(),
            self.issuer
        )
    }

    /// Mints a token (Entra v2 shape: `tid`, `oid`, `sub`, `azp`, `appid`, `roles`, `scp`).
    ///
    /// # Errors
    /// When signing fails.
    pub fn mint(&self, opts: &MintOptions) -> Result<String, DevIssuerError> {
        #[expect(clippy::disallowed_methods, reason = "a development token is stamped with the real time it is minted")]
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let exp = now.saturating_add(opts.expires_in);
        let issued = exp.min(now).saturating_sub(if opts.expires_in < 0 { 60 } else { 0 });
        let mut claims = serde_json::json!({
            "iss": self.issuer,
            "aud": opts.audience,
            "exp": exp,
            "nbf": issued,
            "iat": issued,
            "tid": opts.tenant,
            "oid": opts.oid,
            "sub": opts.subject.clone().unwrap_or_else(|| opts.oid.clone()),
            "azp": opts.app_id,
            "appid": opts.app_id,
            "ver": "2.0",
        });
        // An empty value leaves the claim out (tokens of other issuers may lack them).
        if opts.oid.is_empty() {
            claims.as_object_mut().map(|c| c.remove("oid"));
        }
        if claims["sub"].as_str().is_some_and(str::is_empty) {
            claims.as_object_mut().map(|c| c.remove("sub"));
        }
        let roles: Vec<&String> = opts.roles.iter().filter(|r| !r.is_empty()).collect();
        if !roles.is_empty() {
            claims["roles"] = serde_json::json!(roles);
        }
        let scopes: Vec<&str> = opts.scopes.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
        if !scopes.is_empty() {
            claims["scp"] = serde_json::json!(scopes.join(" "));
        }
        if let Some(thumbprint) = &opts.cnf_x5t_s256 {
            claims["cnf"] = serde_json::json!({ "x5t#S256": thumbprint });
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| DevIssuerError::Crypto(e.to_string()))
    }

    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, body, cache) = match (request.method(), request.uri().path()) {
            (&Method::GET, "/.well-known/openid-configuration") => {
                (StatusCode::OK, self.discovery().to_string(), "max-age=300")
            }
            (&Method::GET, "/jwks") => {
                (StatusCode::OK, serde_json::to_string(&self.jwks()).unwrap_or_default(), "max-age=300")
            }
            _ => (StatusCode::NOT_FOUND, "{\"error\":\"not_found\"}".to_owned(), "no-store"),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        response.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static(cache));
        response
    }

    /// Serves discovery (`/.well-known/openid-configuration`) and `/jwks` over plain HTTP
    /// on `listener` until `shutdown` completes.
    ///
    /// # Errors
    /// When accepting fails.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = listener.accept() => accepted?,
            };
            let issuer = Arc::clone(&self);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = issuer.respond(&request);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                if let Err(e) =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
                {
                    tracing::debug!(error = %e, "dev issuer connection ended");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevIssuer::load_or_create(dir.path(), "http://127.0.0.1:1").unwrap();
        let second = DevIssuer::load_or_create(dir.path(), "http://127.0.0.1:1/").unwrap();
        assert_eq!(first.kid, second.kid);
        assert_eq!(second.issuer(), "http://127.0.0.1:1");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let token = first.mint(&MintOptions::default()).unwrap();
        assert_eq!(token.split('.').count(), 3);
    }
}
