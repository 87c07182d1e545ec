//! `[identity.NAME]`: the settings of one token issuer family and their defaults, the
//! compile step into an [`Identity`] (token rules built once, where its keys come from,
//! how they refresh), and the key refresh of the compiled identities.

use super::keys::{KeyError, KeySource, KeySourceId, KeyStores, RefreshPolicy, StoreHint, VerifySpec, is_loopback_url};
use super::token::{IssuerPattern, TokenRules, is_guid};
use crate::config::{Diagnostics, HumanDuration, KeyPath, SourceFile};
use jsonwebtoken::Algorithm;
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `[identity.NAME]`: one token issuer family.
///
/// ```toml
/// [identity.contoso]
/// discovery = "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
/// issuers = ["https://login.microsoftonline.com/{tenant}/v2.0", "https://sts.windows.net/{tenant}/"]
/// audiences = ["api://flowgate"]
/// tenants = ["72f988bf-86f1-41af-91ab-2d7cd011db47"]
/// ```
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// OIDC discovery URL; its `jwks_uri` is fetched. May contain `{tenant}`, replaced by
    /// `discovery_tenant` for fetching. Exactly one of `discovery`, `jwks_uri`, `jwks_file`.
    pub discovery: Option<String>,
    /// The tenant used to fetch a `{tenant}` discovery URL: `"common"` (default),
    /// `"organizations"`, `"consumers"` or a tenant GUID.
    pub discovery_tenant: Option<String>,
    /// A JWKS URL, fetched directly.
    pub jwks_uri: Option<String>,
    /// A local JWKS file (relative to the policy file), re-read on each refresh.
    pub jwks_file: Option<String>,
    /// The accepted `iss`. May contain `{tenant}`: the tenant part must then be a GUID
    /// equal to the token's `tid`.
    pub issuer: Option<String>,
    /// Several accepted issuers (for example Entra v2 `https://login.microsoftonline.com/{tenant}/v2.0`
    /// and v1 `https://sts.windows.net/{tenant}/`).
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Accepted `aud` values; a token matches when any of its audiences is listed.
    pub audiences: Vec<String>,
    /// Default allowed tenants (GUIDs) for triggers using this identity.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Accepted algorithms: `RS256`/`384`/`512`, `PS256`/`384`/`512`, `ES256`/`384`, `EdDSA`.
    /// Default `["RS256"]`. HMAC algorithms and `none` are never accepted.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`. Default 60s.
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    /// Shortest key refresh period, whatever `Cache-Control: max-age` says. Default `5m`.
    #[serde(default = "default_refresh_min")]
    pub refresh_min: HumanDuration,
    /// Longest key refresh period, also used without `max-age`. Default `1h`.
    #[serde(default = "default_refresh_max")]
    pub refresh_max: HumanDuration,
    /// An unknown `kid` causes at most one key refetch per this interval. Default `30s`.
    #[serde(default = "default_refetch")]
    pub unknown_kid_refetch_interval: HumanDuration,
    /// When the identity provider is unreachable, the last good keys serve this long after their fetch;
    /// then calls fail with 503. Default 24h.
    #[serde(default = "default_max_key_age")]
    pub max_key_age: HumanDuration,
    /// Extra PEM CA bundle trusted for the identity provider (relative to the policy file).
    pub ca_file: Option<String>,
    /// `realm` of the `WWW-Authenticate` challenge. Default `"flowgate"`.
    pub realm: Option<String>,
    /// Allow plain `http://` key URLs, only for loopback hosts (demo and tests).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Largest token accepted, in bytes; larger ones are refused before parsing. Default 16384.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Longest token lifetime accepted: a token whose `exp` lies further ahead than this
    /// (or whose `exp - iat` is longer) is refused with 401, since a token that practically
    /// never expires is a standing credential once stolen. Default `24h` (Entra ID access
    /// tokens live 60 to 90 minutes).
    #[serde(default = "default_max_token_lifetime")]
    pub max_token_lifetime: HumanDuration,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}
fn default_leeway() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_refresh_min() -> HumanDuration {
    HumanDuration::from_secs(300)
}
fn default_refresh_max() -> HumanDuration {
    HumanDuration::from_secs(3600)
}
fn default_refetch() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_max_key_age() -> HumanDuration {
    HumanDuration::from_secs(24 * 3600)
}
fn default_max_token_bytes() -> usize {
    16 * 1024
}
fn default_max_token_lifetime() -> HumanDuration {
    HumanDuration::from_secs(24 * 3600)
}

/// A compiled identity: validation rules built once, and where its keys come from.
#[derive(Debug)]
pub struct Identity {
    name: String,
    source: KeySourceId,
    refresh: RefreshPolicy,
    rules: TokenRules,
    tenants: Vec<String>,
    realm: String,
    fingerprint: [u8; 32],
    store_hint: StoreHint,
}

impl Identity {
    /// The `[identity.NAME]` name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key source, which names its store in [`KeyStores`].
    pub fn key_source(&self) -> &KeySourceId {
        &self.source
    }

    /// The challenge realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The default tenants (lower-case GUIDs).
    pub fn tenants(&self) -> &[String] {
        &self.tenants
    }

    /// True when an issuer has a `{tenant}` part: tokens of every tenant that consented to
    /// the application are valid, and only a tenant rule tells them apart.
    pub(crate) fn is_multi_tenant(&self) -> bool {
        self.rules.issuers.iter().any(|issuer| matches!(issuer, IssuerPattern::Tenant { .. }))
    }

    /// True when `iss` is one of the issuers tokens of this identity may carry.
    pub(super) fn accepts_issuer(&self, iss: &str) -> bool {
        self.rules.issuers.iter().any(|pattern| pattern.names(iss))
    }

    /// The issuer, when the identity accepts exactly one and it has no `{tenant}` part.
    pub(super) fn single_issuer(&self) -> Option<&str> {
        match self.rules.issuers.as_slice() {
            [IssuerPattern::Exact(issuer)] => Some(issuer),
            _ => None,
        }
    }

    /// A hash of everything that decides which tokens of this identity are valid.
    pub(crate) fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// What [`KeyStores::verify_token`] needs to know about this identity.
    pub(super) fn spec(&self) -> VerifySpec<'_> {
        VerifySpec {
            name: &self.name,
            source: &self.source,
            refresh: self.refresh,
            rules: &self.rules,
            fingerprint: &self.fingerprint,
            hint: &self.store_hint,
        }
    }
}

/// Records a problem when `text` is not a key URL flowgate may fetch: https, no
/// credentials, plain http only for loopback hosts with `allow_insecure_http`.
fn check_url(text: &str, allow_insecure_http: bool, path: &KeyPath, diags: &mut Diagnostics) {
    match url::Url::parse(text) {
        Err(e) => diags.error(path, format!("invalid URL: {e}")),
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            diags.error_with_hint(path, "carries credentials in the URL", "identity providers' key URLs are public");
        }
        Ok(url) => match url.scheme() {
            "https" => {}
            "http" if allow_insecure_http && is_loopback_url(&url) => {}
            "http" if allow_insecure_http => diags.error_with_hint(
                path,
                "allow_insecure_http is only allowed for loopback hosts",
                "use https for a real identity provider",
            ),
            _ => diags.error_with_hint(path, "key URLs must use https", "write https://…"),
        },
    }
}

/// Why an `algorithms` entry is refused.
#[derive(Debug, thiserror::Error)]
enum AlgorithmRefusal {
    #[error("\"none\" is never accepted")]
    None,
    #[error("HMAC algorithms are not accepted for identities (their keys would be public)")]
    Hmac,
    #[error("unknown algorithm {0:?}")]
    Unknown(String),
}

fn parse_algorithm(text: &str) -> Result<Algorithm, AlgorithmRefusal> {
    if text.eq_ignore_ascii_case("none") {
        return Err(AlgorithmRefusal::None);
    }
    match text.parse::<Algorithm>() {
        Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => Err(AlgorithmRefusal::Hmac),
        Ok(alg) => Ok(alg),
        Err(_) => Err(AlgorithmRefusal::Unknown(text.to_owned())),
    }
}

/// Compiles one `[identity.NAME]` section by section; every section reports its own
/// problems, and the identity is left out when any of them found one.
fn compile_identity(
    name: &str,
    raw: &RawIdentity,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> Option<Identity> {
    let mark = diags.mark();
    let key_source = compile_key_source(raw, path, source, diags);
    let ca_file = compile_ca_file(raw, path, source, diags);
    let issuers = compile_issuers(raw, path, diags);
    check_audiences(&raw.audiences, &path.key("audiences"), diags);
    let tenants = compile_tenants(&raw.tenants, &path.key("tenants"), diags);
    let algorithms = compile_algorithms(&raw.algorithms, &path.key("algorithms"), diags);
    let refresh = compile_refresh(raw, path, diags);
    check_token_limits(raw, path, diags);
    let realm = compile_realm(raw.realm.as_deref(), &path.key("realm"), diags);
    // Every section has run, so the admin sees all of an identity's problems at once.
    if !diags.ok_since(mark) {
        return None;
    }
    let source = KeySourceId { source: key_source?, ca_file, allow_insecure_http: raw.allow_insecure_http };
    let rules = TokenRules {
        algorithms,
        issuers,
        audiences: raw.audiences.clone(),
        leeway: raw.leeway.0.as_secs(),
        max_lifetime: raw.max_token_lifetime.0.as_secs(),
        max_token_bytes: raw.max_token_bytes,
    };
    let fingerprint: [u8; 32] = Sha256::digest(format!("{name}\n{source:?}\n{rules:?}").as_bytes()).into();
    Some(Identity {
        name: name.to_owned(),
        source,
        refresh,
        rules,
        tenants,
        realm,
        fingerprint,
        store_hint: StoreHint::default(),
    })
}

/// Where the keys come from: exactly one of `discovery` (with its `discovery_tenant`),
/// `jwks_uri` and `jwks_file`. `None` only when there is not exactly one.
fn compile_key_source(
    raw: &RawIdentity,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> Option<KeySource> {
    let insecure = raw.allow_insecure_http;
    let key_source = match (&raw.discovery, &raw.jwks_uri, &raw.jwks_file) {
        (Some(discovery), None, None) => {
            let tenant = raw.discovery_tenant.as_deref().unwrap_or("common");
            if !matches!(tenant, "common" | "organizations" | "consumers") && !is_guid(tenant) {
                diags.error_with_hint(
                    &path.key("discovery_tenant"),
                    format!("{tenant:?} is not a tenant"),
                    "use \"common\", \"organizations\", \"consumers\" or a tenant GUID",
                );
            }
            let url = discovery.replace("{tenant}", tenant);
            check_url(&url, insecure, &path.key("discovery"), diags);
            Some(KeySource::Discovery(url))
        }
        (None, Some(uri), None) => {
            check_url(uri, insecure, &path.key("jwks_uri"), diags);
            Some(KeySource::JwksUri(uri.clone()))
        }
        (None, None, Some(file)) => {
            let resolved = source.resolve(file);
            if !resolved.is_file() {
                diags.error(&path.key("jwks_file"), format!("{} does not exist", resolved.display()));
            }
            Some(KeySource::JwksFile(resolved))
        }
        _ => {
            diags.error_with_hint(
                path,
                "an identity needs exactly one key source",
                "set one of discovery, jwks_uri or jwks_file",
            );
            None
        }
    };
    if raw.discovery_tenant.is_some() && raw.discovery.is_none() {
        diags.error(&path.key("discovery_tenant"), "discovery_tenant only applies with discovery");
    }
    key_source
}

/// `ca_file`, resolved against the policy file.
fn compile_ca_file(
    raw: &RawIdentity,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> Option<std::path::PathBuf> {
    raw.ca_file.as_ref().map(|file| {
        let resolved = source.resolve(file);
        // Parsed now, like every other CA bundle: a bad file is a policy error, not a 503
        // on every call.
        if let Err(e) = crate::tls::read_certs(&resolved) {
            diags.error(&path.key("ca_file"), e.to_string());
        }
        resolved
    })
}

/// `issuer` and `issuers`: at least one, each with `{tenant}` at most once.
fn compile_issuers(raw: &RawIdentity, path: &KeyPath, diags: &mut Diagnostics) -> Vec<IssuerPattern> {
    let mut issuer_texts: Vec<(KeyPath, &String)> = raw.issuer.iter().map(|i| (path.key("issuer"), i)).collect();
    issuer_texts.extend(raw.issuers.iter().enumerate().map(|(i, text)| (path.key("issuers").index(i), text)));
    if issuer_texts.is_empty() {
        diags.error_with_hint(
            path,
            "no issuer configured",
            "set issuer = \"https://login.microsoftonline.com/{tenant}/v2.0\" (or the IdP's exact iss)",
        );
    }
    let mut issuers = Vec::new();
    for (issuer_path, text) in issuer_texts {
        match IssuerPattern::parse(text) {
            Some(pattern) if !text.is_empty() => issuers.push(pattern),
            _ => diags.error(&issuer_path, "an issuer must be non-empty and contain {tenant} at most once"),
        }
    }
    issuers
}

/// `audiences`: at least one, none empty.
fn check_audiences(audiences: &[String], path: &KeyPath, diags: &mut Diagnostics) {
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        diags.error_with_hint(path, "at least one non-empty audience is required", "audiences = [\"api://flowgate\"]");
    }
}

/// `tenants`: directory GUIDs, lower-cased.
fn compile_tenants(raw: &[String], path: &KeyPath, diags: &mut Diagnostics) -> Vec<String> {
    let mut tenants = Vec::new();
    for (i, tenant) in raw.iter().enumerate() {
        if is_guid(tenant) {
            tenants.push(tenant.to_ascii_lowercase());
        } else {
            diags.error_with_hint(
                &path.index(i),
                format!("{tenant:?} is not a tenant GUID"),
                "tenants are directory (tenant) ids",
            );
        }
    }
    tenants
}

/// `algorithms`: at least one, asymmetric only.
fn compile_algorithms(raw: &[String], path: &KeyPath, diags: &mut Diagnostics) -> Vec<Algorithm> {
    if raw.is_empty() {
        diags.error(path, "at least one algorithm is required");
    }
    let mut algorithms = Vec::new();
    for (i, text) in raw.iter().enumerate() {
        match parse_algorithm(text) {
            Ok(alg) => algorithms.push(alg),
            Err(refusal) => {
                diags.error_with_hint(&path.index(i), refusal.to_string(), "use RS256, PS256, ES256, ES384 or EdDSA");
            }
        }
    }
    algorithms
}

/// The key refresh periods, which must nest: `refresh_min` ≤ `refresh_max` ≤ `max_key_age`.
fn compile_refresh(raw: &RawIdentity, path: &KeyPath, diags: &mut Diagnostics) -> RefreshPolicy {
    if raw.refresh_min.0 > raw.refresh_max.0 {
        diags.error(&path.key("refresh_min"), "refresh_min is longer than refresh_max");
    }
    if raw.max_key_age.0 < raw.refresh_max.0 {
        diags.error_with_hint(
            &path.key("max_key_age"),
            "max_key_age is shorter than refresh_max: keys would expire before their refresh",
            "make max_key_age at least refresh_max",
        );
    }
    if raw.unknown_kid_refetch_interval.0.is_zero() {
        diags.error(&path.key("unknown_kid_refetch_interval"), "must be more than zero (it protects the IdP)");
    }
    RefreshPolicy {
        refresh_min: raw.refresh_min.0,
        refresh_max: raw.refresh_max.0,
        unknown_kid_refetch_interval: raw.unknown_kid_refetch_interval.0,
        max_key_age: raw.max_key_age.0,
    }
}

/// The bounds on one token: its lifetime and its size.
fn check_token_limits(raw: &RawIdentity, path: &KeyPath, diags: &mut Diagnostics) {
    if raw.max_token_lifetime.0 < std::time::Duration::from_secs(60) {
        diags.error(&path.key("max_token_lifetime"), "must be at least 1m");
    }
    if raw.max_token_bytes < 64 || raw.max_token_bytes > 256 * 1024 {
        diags.error(&path.key("max_token_bytes"), "must be between 64 and 262144");
    }
}

/// `realm`, written into a quoted `WWW-Authenticate` parameter.
fn compile_realm(raw: Option<&str>, path: &KeyPath, diags: &mut Diagnostics) -> String {
    let realm = raw.unwrap_or("flowgate").to_owned();
    if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
        diags.error(path, "realm must not contain quotes, backslashes or control characters");
    }
    realm
}

/// Compiles every `[identity.NAME]`, reporting each problem under `path` (the `identity`
/// table). Identities with errors are left out of the result.
pub fn compile_identities(
    raw: &BTreeMap<String, RawIdentity>,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Arc<Identity>> {
    raw.iter()
        .filter_map(|(name, raw)| {
            compile_identity(name, raw, &path.key(name.as_str()), source, diags).map(|id| (name.clone(), Arc::new(id)))
        })
        .collect()
}

impl KeyStores {
    /// Starts the background key refresh of every identity (idempotent per key source)
    /// and drops the stores no identity uses any more. Call after each policy swap, from
    /// inside the tokio runtime.
    pub fn start_refresh<'a>(&self, identities: impl IntoIterator<Item = &'a Arc<Identity>>) {
        let mut used = Vec::new();
        for identity in identities {
            let store = self.store(&identity.name, &identity.source, identity.refresh);
            self.start_store(&store, identity.refresh);
            used.push(identity.source.clone());
        }
        self.retain_sources(&used);
    }

    /// Fetches an identity's keys now (tests, tests).
    ///
    /// # Errors
    /// The fetch failure, naming the URL or file.
    pub async fn refresh_identity(&self, identity: &Identity) -> Result<usize, KeyError> {
        self.refresh_source(&identity.spec()).await
    }
}
