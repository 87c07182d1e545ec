//! Who may trigger a flow: bearer JWT validation against OIDC issuers, tenant and
//! principal rules, and signed URLs for `who = "anyone"`.
//!
//! # Layout
//! - this file: the `[identity.NAME]` and trigger settings, their compile step into
//!   [`Identity`] and [`TriggerAccess`], the [`Caller`] an admitted call carries, and
//!   [`KeyStores::authenticate`], the one entry point of the request path;
//! - [`token`]: header judgement, signature check and strict claim decoding;
//! - [`keys`]: JWKS fetching, refresh, the verified-token cache ([`KeyStores`]);
//! - [`signed`]: signed URLs; [`forward`]: identity headers and query-token detection;
//! - [`dev_issuer`]: the demo's development issuer.
//!
//! Order of checks in [`KeyStores::authenticate`]: token in the query (refused, never
//! logged) → credential present → size → header (alg, embedded keys, b64, crit) → keys
//! (503 if none) → signature → claims (types, time, iss, aud, tenant in iss) → trigger
//! rules (tenant, principal, claims → 403; roles, scopes → 403 insufficient_scope).
//!
//! # Policy example
//! ```toml
//! [identity.contoso]
//! discovery = "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
//! discovery_tenant = "organizations"
//! issuers = ["https://login.microsoftonline.com/{tenant}/v2.0", "https://sts.windows.net/{tenant}/"]
//! audiences = ["api://flowgate"]
//! tenants = ["72f988bf-86f1-41af-91ab-2d7cd011db47"]
//!
//! [signed_urls]
//! keys = { k2025 = "env:FLOWGATE_URL_KEY", k2024 = "file:secrets/url-2024.key" }
//! primary = "k2025"
//!
//! [[trigger]]                       # anyone holding a signed URL
//! name = "webhook"
//! path = "/triggers/webhook"
//! upstream = "https://flows.example.com/hook"
//! who = "anyone"
//!
//! [[trigger]]                       # any user or app of the tenant holding a role
//! name = "report"
//! path = "/triggers/report"
//! upstream = "https://flows.example.com/report"
//! who = "tenant_users"
//! identity = "contoso"
//! roles = { any_of = ["Flows.Invoke"] }
//! forward_identity = true
//!
//! [[trigger]]                       # listed principals only; [] would mean nobody
//! name = "invoice"
//! path = "/triggers/invoice"
//! upstream = "https://flows.example.com/invoice"
//! who = "specific_users"
//! identity = "contoso"
//! principals = ["oid:5e1f3c2a-0000-4000-8000-00000000aa01", "upn:alice@contoso.com", "users_of_app:6a7b8c9d-0000-4000-8000-00000000bb02"]
//! scopes = { all_of = ["Invoices.Write"] }
//! claims = { idtyp = "user" }
//! ```

pub mod dev_issuer;
pub mod forward;
pub mod keys;
pub mod signed;
mod strict_json;
#[cfg(feature = "fuzzing")]
pub use strict_json::parse_object;
pub mod token;

pub use forward::{ALWAYS_STRIPPED_HEADERS, identity_headers, query_has_token};
pub use keys::{Clock, KeySourceId, KeyStores, SystemClock};
pub use signed::{
    RawSignedUrls, SignedUrlError, SignedUrlKeys, SignedUrlParams, compile_signed_urls, sign_url,
    strip_signature_params,
};
pub use token::{Claims, TokenError};

use crate::config::{Diagnostics, HumanDuration, KeyPath, SourceFile};
use crate::denial::{Denial, Failure, Rejection};
use crate::policy::RawTrigger;
use jsonwebtoken::Algorithm;
use keys::{KeyError, KeySource, RefreshPolicy, VerifyError, VerifySpec};
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use token::{IssuerPattern, TokenRules, is_guid};

/// The three trigger modes of the workflow engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Who {
    /// No token; the URL must carry a valid flowgate signature.
    Anyone,
    /// Any principal of the trigger's tenants.
    TenantUsers,
    /// Only the listed principals.
    SpecificUsers,
}

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
    /// Accepted algorithms: RS256/384/512, PS256/384/512, ES256/384, EdDSA. Default
    /// `["RS256"]`. HMAC algorithms and `none` are never accepted.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`. Default 60s.
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    /// Shortest key refresh period, whatever `Cache-Control: max-age` says. Default 5m.
    #[serde(default = "default_refresh_min")]
    pub refresh_min: HumanDuration,
    /// Longest key refresh period, also used without `max-age`. Default 1h.
    #[serde(default = "default_refresh_max")]
    pub refresh_max: HumanDuration,
    /// An unknown `kid` causes at most one key refetch per this interval. Default 30s.
    #[serde(default = "default_refetch")]
    pub unknown_kid_refetch_interval: HumanDuration,
    /// When the IdP is unreachable, the last good keys serve this long after their fetch;
    /// then calls fail with 503. Default 24h.
    #[serde(default = "default_max_key_age")]
    pub max_key_age: HumanDuration,
    /// Extra PEM CA bundle trusted for the IdP (relative to the policy file).
    pub ca_file: Option<String>,
    /// `realm` of the `WWW-Authenticate` challenge. Default `"flowgate"`.
    pub realm: Option<String>,
    /// Allow plain `http://` key URLs, only for loopback hosts (demo and tests).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Largest token accepted, in bytes; larger ones are refused before parsing. Default 16384.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
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

/// A role or scope requirement: every `all_of` and, when `any_of` is set, one of `any_of`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRequirement {
    /// At least one of these.
    #[serde(default)]
    pub any_of: Vec<String>,
    /// All of these.
    #[serde(default)]
    pub all_of: Vec<String>,
}

use crate::config::did_you_mean;

/// True when the URL's host is a loopback address or `localhost`.
pub fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
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
    pub fn is_multi_tenant(&self) -> bool {
        self.rules.issuers.iter().any(|issuer| matches!(issuer, IssuerPattern::Tenant { .. }))
    }

    /// True when `iss` is one of the issuers tokens of this identity may carry.
    fn accepts_issuer(&self, iss: &str) -> bool {
        self.rules.issuers.iter().any(|pattern| pattern.names(iss))
    }

    /// The issuer, when the identity accepts exactly one and it has no `{tenant}` part.
    fn single_issuer(&self) -> Option<&str> {
        match self.rules.issuers.as_slice() {
            [IssuerPattern::Exact(issuer)] => Some(issuer),
            _ => None,
        }
    }

    fn spec(&self) -> VerifySpec<'_> {
        VerifySpec {
            name: &self.name,
            source: &self.source,
            refresh: self.refresh,
            rules: &self.rules,
            fingerprint: &self.fingerprint,
        }
    }
}

fn check_url(text: &str, allow_insecure_http: bool, path: &KeyPath, diags: &mut Diagnostics) -> bool {
    match url::Url::parse(text) {
        Err(e) => {
            diags.error(path, format!("invalid URL: {e}"));
            false
        }
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            diags.error_with_hint(path, "carries credentials in the URL", "identity providers' key URLs are public");
            false
        }
        Ok(url) => match url.scheme() {
            "https" => true,
            "http" if allow_insecure_http && is_loopback_url(&url) => true,
            "http" if allow_insecure_http => {
                diags.error_with_hint(
                    path,
                    "allow_insecure_http is only allowed for loopback hosts",
                    "use https for a real identity provider",
                );
                false
            }
            _ => {
                diags.error_with_hint(path, "key URLs must use https", "write https://…");
                false
            }
        },
    }
}

fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    if text.eq_ignore_ascii_case("none") {
        return Err("\"none\" is never accepted".into());
    }
    match text.parse::<Algorithm>() {
        Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
            Err("HMAC algorithms are not accepted for identities (their keys would be public)".into())
        }
        Ok(alg) => Ok(alg),
        Err(_) => Err(format!("unknown algorithm {text:?}")),
    }
}

fn compile_identity(
    name: &str,
    raw: &RawIdentity,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> Option<Identity> {
    let mut ok = true;
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
                ok = false;
            }
            let url = discovery.replace("{tenant}", tenant);
            ok &= check_url(&url, insecure, &path.key("discovery"), diags);
            Some(KeySource::Discovery(url))
        }
        (None, Some(uri), None) => {
            ok &= check_url(uri, insecure, &path.key("jwks_uri"), diags);
            Some(KeySource::JwksUri(uri.clone()))
        }
        (None, None, Some(file)) => {
            let resolved = source.resolve(file);
            if !resolved.is_file() {
                diags.error(&path.key("jwks_file"), format!("{} does not exist", resolved.display()));
                ok = false;
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
        ok = false;
    }
    let ca_file = raw.ca_file.as_ref().map(|file| {
        let resolved = source.resolve(file);
        // Parsed now, like every other CA bundle: a bad file is a policy error, not a 503
        // on every call.
        if let Err(e) = crate::tls::read_certs(&resolved) {
            diags.error(&path.key("ca_file"), e.to_string());
            ok = false;
        }
        resolved
    });

    let mut issuer_texts: Vec<(KeyPath, &String)> = raw.issuer.iter().map(|i| (path.key("issuer"), i)).collect();
    issuer_texts.extend(raw.issuers.iter().enumerate().map(|(i, text)| (path.key("issuers").index(i), text)));
    if issuer_texts.is_empty() {
        diags.error_with_hint(
            path,
            "no issuer configured",
            "set issuer = \"https://login.microsoftonline.com/{tenant}/v2.0\" (or the IdP's exact iss)",
        );
        ok = false;
    }
    let mut issuers = Vec::new();
    for (issuer_path, text) in issuer_texts {
        match IssuerPattern::parse(text) {
            Some(pattern) if !text.is_empty() => issuers.push(pattern),
            _ => {
                diags.error(&issuer_path, "an issuer must be non-empty and contain {tenant} at most once");
                ok = false;
            }
        }
    }
    if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
        diags.error_with_hint(
            &path.key("audiences"),
            "at least one non-empty audience is required",
            "audiences = [\"api://flowgate\"]",
        );
        ok = false;
    }
    let mut tenants = Vec::new();
    for (i, tenant) in raw.tenants.iter().enumerate() {
        if is_guid(tenant) {
            tenants.push(tenant.to_ascii_lowercase());
        } else {
            diags.error_with_hint(
                &path.key("tenants").index(i),
                format!("{tenant:?} is not a tenant GUID"),
                "tenants are directory (tenant) ids",
            );
            ok = false;
        }
    }
    let mut algorithms = Vec::new();
    if raw.algorithms.is_empty() {
        diags.error(&path.key("algorithms"), "at least one algorithm is required");
        ok = false;
    }
    for (i, text) in raw.algorithms.iter().enumerate() {
        match parse_algorithm(text) {
            Ok(alg) => algorithms.push(alg),
            Err(message) => {
                diags.error_with_hint(
                    &path.key("algorithms").index(i),
                    message,
                    "use RS256, PS256, ES256, ES384 or EdDSA",
                );
                ok = false;
            }
        }
    }
    if raw.refresh_min.0 > raw.refresh_max.0 {
        diags.error(&path.key("refresh_min"), "refresh_min is longer than refresh_max");
        ok = false;
    }
    if raw.max_key_age.0 < raw.refresh_max.0 {
        diags.error_with_hint(
            &path.key("max_key_age"),
            "max_key_age is shorter than refresh_max: keys would expire before their refresh",
            "make max_key_age at least refresh_max",
        );
        ok = false;
    }
    if raw.unknown_kid_refetch_interval.0.is_zero() {
        diags.error(&path.key("unknown_kid_refetch_interval"), "must be more than zero (it protects the IdP)");
        ok = false;
    }
    if raw.max_token_bytes < 64 || raw.max_token_bytes > 256 * 1024 {
        diags.error(&path.key("max_token_bytes"), "must be between 64 and 262144");
        ok = false;
    }
    let realm = raw.realm.clone().unwrap_or_else(|| "flowgate".into());
    if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
        diags.error(&path.key("realm"), "realm must not contain quotes, backslashes or control characters");
        ok = false;
    }
    let key_source = key_source?;
    if !ok {
        return None;
    }
    let source = KeySourceId { source: key_source, ca_file, allow_insecure_http: insecure };
    let rules = TokenRules {
        algorithms,
        issuers,
        audiences: raw.audiences.clone(),
        leeway: raw.leeway.0.as_secs(),
        max_token_bytes: raw.max_token_bytes,
    };
    let fingerprint: [u8; 32] = Sha256::digest(format!("{name}\n{source:?}\n{rules:?}").as_bytes()).into();
    Some(Identity {
        name: name.to_owned(),
        source,
        refresh: RefreshPolicy {
            refresh_min: raw.refresh_min.0,
            refresh_max: raw.refresh_max.0,
            unknown_kid_refetch_interval: raw.unknown_kid_refetch_interval.0,
            max_key_age: raw.max_key_age.0,
        },
        rules,
        tenants,
        realm,
        fingerprint,
    })
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

/// A compiled role or scope requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    any_of: Vec<String>,
    all_of: Vec<String>,
}

impl Requirement {
    fn compile(raw: &RawRequirement, path: &KeyPath, diags: &mut Diagnostics) -> Option<Self> {
        if raw.any_of.is_empty() && raw.all_of.is_empty() {
            diags.error_with_hint(path, "an empty requirement", "set any_of or all_of, or remove the key");
            return None;
        }
        Some(Self { any_of: raw.any_of.clone(), all_of: raw.all_of.clone() })
    }

    /// True when `held` satisfies the requirement (exact, case-sensitive names).
    pub fn is_met(&self, held: &[String]) -> bool {
        let has = |want: &String| held.iter().any(|h| h == want);
        self.all_of.iter().all(has) && (self.any_of.is_empty() || self.any_of.iter().any(has))
    }
}

/// A principal identifier as written in a policy (`oid:…`, `sub:…`, `upn:…`, `email:…`,
/// `app:…`, `users_of_app:…`) in the form [`Caller::principal_ids`] uses: kind lower-cased,
/// `email:` read as `upn:`, every value but a `sub` lower-cased. `principal_ips` compares
/// through this function; `principals` are compiled by `compile_principals`.
pub fn canonical_principal(id: &str) -> String {
    match id.split_once(':') {
        Some((kind, value)) => match kind.to_ascii_lowercase().as_str() {
            "sub" => format!("sub:{value}"),
            "email" | "upn" => format!("upn:{}", value.to_lowercase()),
            other => format!("{other}:{}", value.to_lowercase()),
        },
        None => id.to_owned(),
    }
}

/// Principals accepted by `who = "specific_users"`, normalized for matching.
///
/// Each form matches a claim that neither a foreign tenant nor the user can choose:
/// `oid` (assigned by the directory), `sub` together with the `iss` it is unique in, the
/// application id of an app-only token, or of a delegated token for `users_of_app:`. The
/// one name form, `upn:`, matches only the `upn` claim and compiles only where a tenant
/// rule already keeps other tenants out; `email`, `preferred_username` and `unique_name`
/// are never matched (mutable, and not verified: the "nOAuth" pattern).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PrincipalSet {
    oids: Vec<String>,
    /// `(iss, sub)` pairs.
    subs: Vec<(String, String)>,
    upns: Vec<String>,
    /// Applications calling as themselves.
    apps: Vec<String>,
    /// Applications whose signed-in users are accepted.
    app_users: Vec<String>,
}

impl PrincipalSet {
    fn matches(&self, claims: &Claims) -> bool {
        let lower = |s: &String| s.to_lowercase();
        let app = claims.app_id.as_ref().map(lower);
        claims.oid.as_ref().is_some_and(|oid| self.oids.contains(&lower(oid)))
            || claims.sub.as_ref().is_some_and(|sub| self.subs.iter().any(|(iss, s)| *iss == claims.iss && s == sub))
            || claims.upn.as_ref().is_some_and(|upn| self.upns.contains(&lower(upn)))
            || (claims.app_only && app.as_ref().is_some_and(|app| self.apps.contains(app)))
            || (claims.delegated && app.as_ref().is_some_and(|app| self.app_users.contains(app)))
    }
}

/// What a trigger requires of its callers; compiled from the trigger's auth fields.
#[derive(Debug, Clone)]
pub struct TriggerAccess {
    who: Who,
    identity: Option<Arc<Identity>>,
    tenants: Vec<String>,
    principals: PrincipalSet,
    roles: Option<Requirement>,
    scopes: Option<Requirement>,
    claims: Vec<(String, String)>,
    signed: Option<SignedUrlKeys>,
    /// The trigger's name, which a signed URL's signature covers.
    name: String,
    realm: String,
    /// Forward the caller's `Authorization` header upstream.
    pub forward_authorization: bool,
    /// Add the `X-Flowgate-*` identity headers upstream.
    pub forward_identity: bool,
}

impl TriggerAccess {
    /// The trigger's mode.
    pub fn who(&self) -> Who {
        self.who
    }

    /// The realm for challenges.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The identity whose tokens are accepted (`None` for `anyone`).
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.identity.as_ref()
    }

    /// The signed-URL parameter names (for `anyone` triggers) to strip from logs and the
    /// upstream query.
    pub fn signed_params(&self) -> Option<&SignedUrlParams> {
        self.signed.as_ref().map(SignedUrlKeys::params)
    }

    /// Applies the trigger's rules to verified claims.
    ///
    /// # Errors
    /// The first failed rule.
    pub fn evaluate(&self, claims: &Claims) -> Result<Caller, AuthError> {
        let tid = claims.tid.as_ref().map(|t| t.to_ascii_lowercase());
        if !self.tenants.is_empty() && !tid.as_ref().is_some_and(|tid| self.tenants.contains(tid)) {
            return Err(AuthError::Tenant);
        }
        if self.who == Who::SpecificUsers && !self.principals.matches(claims) {
            return Err(AuthError::Principal);
        }
        for (name, want) in &self.claims {
            let ok = match claims.all.get(name) {
                Some(serde_json::Value::String(value)) => value == want,
                Some(serde_json::Value::Bool(value)) => want.parse::<bool>().is_ok_and(|w| w == *value),
                Some(serde_json::Value::Number(value)) => *want == *value.to_string(),
                _ => false,
            };
            if !ok {
                return Err(AuthError::Claim(name.clone()));
            }
        }
        if let Some(roles) = &self.roles
            && !roles.is_met(&claims.roles)
        {
            return Err(AuthError::Role);
        }
        if let Some(scopes) = &self.scopes
            && !scopes.is_met(&claims.scopes)
        {
            return Err(AuthError::Scope);
        }
        Ok(Caller::from_claims(claims))
    }
}

/// Name claims that users or foreign directories can set; no rule admits by them.
const MUTABLE_NAME_CLAIMS: [&str; 3] = ["email", "preferred_username", "unique_name"];

const PRINCIPAL_FORMS: &str = "write oid:GUID, sub:SUBJECT, upn:NAME, app:CLIENT-ID (the app calling as itself) \
     or users_of_app:CLIENT-ID (users signed in through that app)";

/// Compiles a `principals` list against the identity it applies to and the tenants the
/// trigger (or `[admin]`) ends up with: the name form needs tenants, and `sub` is bound to
/// its issuer.
fn compile_principals(
    raw: &[String],
    path: &KeyPath,
    identity: Option<&Identity>,
    tenants: &[String],
    diags: &mut Diagnostics,
) -> PrincipalSet {
    let mut set = PrincipalSet::default();
    for (i, entry) in raw.iter().enumerate() {
        let at = path.index(i);
        let (kind, value) = entry.split_once(':').unwrap_or(("", entry.as_str()));
        if value.is_empty() {
            diags.error_with_hint(&at, format!("{entry:?} is not a principal"), PRINCIPAL_FORMS);
            continue;
        }
        match kind {
            "oid" if is_guid(value) => set.oids.push(value.to_ascii_lowercase()),
            "oid" => diags.error(&at, "oid: must be followed by a GUID"),
            "sub" => {
                let Some(identity) = identity else { continue };
                // OIDC issuers carry no fragment, so the first `#` ends a named issuer.
                let named = value.split_once('#').filter(|(iss, _)| identity.accepts_issuer(iss));
                match (named, identity.single_issuer()) {
                    (Some((iss, sub)), _) if !sub.is_empty() => set.subs.push((iss.to_owned(), sub.to_owned())),
                    (None, Some(iss)) => set.subs.push((iss.to_owned(), value.to_owned())),
                    _ => diags.error_with_hint(
                        &at,
                        format!(
                            "a sub is unique only within its issuer, and identity {:?} accepts several",
                            identity.name
                        ),
                        "write sub:ISSUER#SUBJECT with one of the identity's issuers (tenant GUID filled in), \
                         or use oid:GUID",
                    ),
                }
            }
            "upn" if tenants.is_empty() => diags.error_with_hint(
                &at,
                "upn: names match only where tenants are restricted: a user of any other tenant \
                 can carry the same name",
                "set tenants on the trigger (or [admin]) or on the identity, or use oid:GUID",
            ),
            "upn" => set.upns.push(value.to_lowercase()),
            "email" => diags.error_with_hint(
                &at,
                "email: is not accepted: the email claim is mutable and not verified, so a user \
                 of another tenant can carry anyone's address",
                "use oid:GUID, or upn:NAME with tenants set (it matches only the upn claim)",
            ),
            "app" => set.apps.push(value.to_lowercase()),
            "users_of_app" => set.app_users.push(value.to_lowercase()),
            _ => diags.error_with_hint(&at, format!("{entry:?} is not a principal"), PRINCIPAL_FORMS),
        }
    }
    set
}

/// Tenant GUIDs as written under `path` (`tenants`), lower-cased.
fn compile_tenants(raw: &[String], path: &KeyPath, diags: &mut Diagnostics) -> Vec<String> {
    let mut tenants = Vec::new();
    for (i, tenant) in raw.iter().enumerate() {
        if is_guid(tenant) {
            tenants.push(tenant.to_ascii_lowercase());
        } else {
            diags.error(&path.index(i), format!("{tenant:?} is not a tenant GUID"));
        }
    }
    tenants
}

/// Compiles `[admin]`'s token rules: admin callers must pass the same tenant rule as
/// trigger callers (`[admin] tenants`, else the identity's), and when `principals` is set,
/// be one of them. `None` when the identity does not exist (the caller reports that).
/// `path` is the `[admin]` table.
pub fn compile_admin_access(
    identity: &str,
    tenants: &[String],
    principals: &[String],
    identities: &BTreeMap<String, Arc<Identity>>,
    path: &KeyPath,
    diags: &mut Diagnostics,
) -> Option<TriggerAccess> {
    let identity = Arc::clone(identities.get(identity)?);
    let mut tenants = compile_tenants(tenants, &path.key("tenants"), diags);
    if tenants.is_empty() {
        tenants = identity.tenants.clone();
    }
    if tenants.is_empty() && identity.is_multi_tenant() {
        diags.error_with_hint(
            &path.key("tenants"),
            format!(
                "identity {:?} accepts tokens of every tenant: another tenant that consented to the app \
                 could give its own users the admin roles",
                identity.name
            ),
            "set tenants on [admin] or on the identity",
        );
    }
    let who = if principals.is_empty() { Who::TenantUsers } else { Who::SpecificUsers };
    let principals = compile_principals(principals, &path.key("principals"), Some(&identity), &tenants, diags);
    Some(TriggerAccess {
        who,
        realm: identity.realm.clone(),
        identity: Some(identity),
        tenants,
        principals,
        roles: None,
        scopes: None,
        claims: Vec::new(),
        signed: None,
        name: "[admin]".into(),
        forward_authorization: false,
        forward_identity: false,
    })
}

/// Compiles a trigger's auth fields (`who`, `identity`, `tenants`, `principals`, `roles`,
/// `scopes`, `claims`, `forward_*`) against the compiled identities and signed-URL keys.
/// `path` is the trigger's path (`trigger[3]`).
pub fn compile_access(
    trigger: &RawTrigger,
    path: &KeyPath,
    identities: &BTreeMap<String, Arc<Identity>>,
    signed: Option<&SignedUrlKeys>,
    diags: &mut Diagnostics,
) -> TriggerAccess {
    let mut access = TriggerAccess {
        who: trigger.who,
        identity: None,
        tenants: Vec::new(),
        principals: PrincipalSet::default(),
        roles: None,
        scopes: None,
        claims: trigger.claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        signed: None,
        name: trigger.name.clone(),
        realm: "flowgate".into(),
        forward_authorization: trigger.forward_authorization,
        forward_identity: trigger.forward_identity,
    };
    if trigger.who == Who::Anyone {
        match signed {
            Some(keys) => access.signed = Some(keys.clone()),
            None => diags.error_with_hint(
                &path.key("who"),
                "who = \"anyone\" requires signed URLs",
                "add a [signed_urls] section with keys and primary",
            ),
        }
        let token_only = [
            ("identity", trigger.identity.is_some()),
            ("tenants", !trigger.tenants.is_empty()),
            ("principals", !trigger.principals.is_empty()),
            ("roles", trigger.roles.is_some()),
            ("scopes", trigger.scopes.is_some()),
            ("claims", !trigger.claims.is_empty()),
            ("forward_identity", trigger.forward_identity),
            ("forward_authorization", trigger.forward_authorization),
        ];
        for (key, set) in token_only {
            if set {
                diags.error_with_hint(
                    &path.key(key),
                    format!("{key} has no effect with who = \"anyone\""),
                    "remove it, or use who = \"tenant_users\" / \"specific_users\"",
                );
            }
        }
        if trigger.name.chars().any(char::is_control) {
            // The name is one line of the signed text.
            diags.error(&path.key("name"), "a who = \"anyone\" trigger's name must not contain control characters");
        }
        return access;
    }
    let identity = match &trigger.identity {
        None => {
            diags.error_with_hint(
                &path.key("who"),
                "this trigger needs an identity",
                "add identity = \"NAME\" naming an [identity.NAME] section",
            );
            None
        }
        Some(name) => match identities.get(name) {
            Some(identity) => Some(Arc::clone(identity)),
            None => {
                let hint = did_you_mean(name, identities.keys().map(String::as_str))
                    .map_or_else(|| "define it as [identity.NAME]".to_owned(), |s| format!("did you mean {s:?}?"));
                diags.error_with_hint(&path.key("identity"), format!("no identity named {name:?}"), hint);
                None
            }
        },
    };
    access.tenants = compile_tenants(&trigger.tenants, &path.key("tenants"), diags);
    if let Some(identity) = &identity {
        if access.tenants.is_empty() {
            access.tenants = identity.tenants.clone();
        }
        access.realm = identity.realm.clone();
    }
    if trigger.who == Who::TenantUsers && access.tenants.is_empty() && identity.is_some() {
        diags.error_with_hint(
            &path.key("tenants"),
            "who = \"tenant_users\" needs tenants",
            "set tenants on the trigger or on its identity",
        );
    }
    if trigger.who == Who::SpecificUsers {
        if let Some(identity) = &identity
            && access.tenants.is_empty()
            && identity.is_multi_tenant()
        {
            diags.error_with_hint(
                &path.key("tenants"),
                format!(
                    "who = \"specific_users\" on identity {:?}, which accepts every tenant, needs tenants",
                    identity.name
                ),
                "an app id is the same in every tenant that consented to the app, and names are chosen \
                 by each tenant: set tenants on the trigger or on its identity",
            );
        }
        access.principals = compile_principals(
            &trigger.principals,
            &path.key("principals"),
            identity.as_deref(),
            &access.tenants,
            diags,
        );
        if trigger.principals.is_empty() {
            tracing::warn!(at = %path, "who = \"specific_users\" with no principals: nobody may call this trigger");
        }
    } else if !trigger.principals.is_empty() {
        diags.error_with_hint(
            &path.key("principals"),
            "principals only apply with who = \"specific_users\"",
            "remove them or change who",
        );
    }
    for name in trigger.claims.keys() {
        if MUTABLE_NAME_CLAIMS.contains(&name.as_str()) {
            // A guest's (or another tenant's) user brings these from a directory we do not
            // control, so a rule on them would admit whoever copies the value.
            diags.error_with_hint(
                &path.key("claims").key(name.as_str()),
                format!("a rule on {name} can be met by anyone who sets it: the claim is mutable and not verified"),
                "name the caller with principals = [\"oid:GUID\"] (or upn:NAME, which matches the upn claim)",
            );
        }
    }
    access.roles = trigger.roles.as_ref().and_then(|r| Requirement::compile(r, &path.key("roles"), diags));
    access.scopes = trigger.scopes.as_ref().and_then(|r| Requirement::compile(r, &path.key("scopes"), diags));
    access.identity = identity;
    access
}

/// The authenticated caller of an admitted call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant (`tid`, lower case), if any.
    pub tenant: Option<String>,
    /// Display id: `oid:…`, `app:…`, `sub:…`, or `signed-url:KID` for signed URLs.
    pub principal: String,
    /// The calling application (`appid`/`azp`).
    pub app_id: Option<String>,
    /// `roles`.
    pub roles: Vec<String>,
    /// Scopes from `scp`.
    pub scopes: Vec<String>,
    /// Every identifier `principal_ips` pins compare (`oid:…`, `sub:…`, `sub:ISS#…`,
    /// `upn:…`, `app:…`, `users_of_app:…`; names and ids lower case). Broader than what
    /// `principals` admits on purpose: every name claim appears as `upn:` and every token's
    /// client as `app:`, because a pin only ever refuses, so matching more is stricter.
    pub principal_ids: Vec<String>,
    /// Whose `key = "principal"` rate-limit budget a call spends, from immutable ids only:
    /// `TENANT/oid:OID` (the issuer instead of the tenant when there is no `tid`), else
    /// `ISSUER/sub:SUB` (`sub` is unique only per issuer); for a signed URL, its key id
    /// and a hash of its signature (each URL its own budget). A token with neither `oid`
    /// nor `sub` is refused (401).
    pub budget_key: String,
}

impl Caller {
    fn from_claims(claims: &Claims) -> Self {
        let mut ids = Vec::new();
        if let Some(oid) = &claims.oid {
            ids.push(format!("oid:{}", oid.to_lowercase()));
        }
        if let Some(sub) = &claims.sub {
            ids.push(format!("sub:{sub}"));
            ids.push(format!("sub:{}#{sub}", claims.iss));
        }
        for name in &claims.user_names {
            ids.push(format!("upn:{}", name.to_lowercase()));
        }
        if let Some(app) = &claims.app_id {
            ids.push(format!("app:{}", app.to_lowercase()));
            if claims.delegated {
                ids.push(format!("users_of_app:{}", app.to_lowercase()));
            }
        }
        let principal = claims
            .oid
            .as_ref()
            .map(|oid| format!("oid:{}", oid.to_lowercase()))
            .or_else(|| {
                claims
                    .app_id
                    .as_ref()
                    .filter(|_| claims.user_names.is_empty())
                    .map(|a| format!("app:{}", a.to_lowercase()))
            })
            .or_else(|| claims.sub.as_ref().map(|sub| format!("sub:{sub}")))
            .or_else(|| claims.app_id.as_ref().map(|a| format!("app:{}", a.to_lowercase())))
            .unwrap_or_else(|| "unknown".into());
        let tenant = claims.tid.as_ref().map(|t| t.to_ascii_lowercase());
        let budget_key = match (&claims.oid, &claims.sub) {
            (Some(oid), _) => format!("{}/oid:{}", tenant.as_deref().unwrap_or(&claims.iss), oid.to_lowercase()),
            (None, Some(sub)) => format!("{}/sub:{sub}", claims.iss),
            // Refused before a caller is built (`AuthError::NoSubject`).
            (None, None) => String::new(),
        };
        Self {
            tenant,
            principal,
            app_id: claims.app_id.clone(),
            roles: claims.roles.clone(),
            scopes: claims.scopes.clone(),
            principal_ids: ids,
            budget_key,
        }
    }

    /// A signed-URL caller: every URL (key id + signature) has its own budget. The
    /// signature is hashed so that no budget key (in Redis, say) holds a usable URL.
    fn signed_url(kid: &str, signature: &str) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::new().chain_update(kid).chain_update([0]).chain_update(signature).finalize();
        Self {
            tenant: None,
            principal: format!("signed-url:{kid}"),
            app_id: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            principal_ids: Vec::new(),
            budget_key: format!("signed-url/{kid}:{}", hex::encode(&digest[..16])),
        }
    }
}

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

impl AuthError {
    /// The one rejection for this error: 401 with an RFC 6750 challenge for credential
    /// problems, 403 for rules, 403 `insufficient_scope` for roles and scopes, 503 when
    /// keys are unavailable.
    pub fn into_rejection(self, realm: &str) -> Rejection {
        let reason = self.to_string();
        let unauthenticated =
            |presented: bool| Denial::Unauthenticated { realm: realm.to_owned(), presented, reason: reason.clone() };
        match self {
            Self::MissingToken | Self::SignedUrl(SignedUrlError::Missing) => unauthenticated(false).into(),
            Self::TokenInQuery | Self::BadAuthorization(_) | Self::InvalidToken(_) | Self::NoSubject => {
                unauthenticated(true).into()
            }
            Self::SignedUrl(_) => unauthenticated(true).into(),
            Self::KeysUnavailable(_) => Failure::KeysUnavailable { reason }.into(),
            Self::Tenant | Self::Principal | Self::Claim(_) => Denial::Forbidden { reason }.into(),
            Self::Role | Self::Scope => Denial::InsufficientScope { realm: realm.to_owned(), reason }.into(),
            Self::Misconfigured => Failure::Internal { reason }.into(),
        }
    }
}

/// The bearer token of the request: exactly one `Authorization` header with scheme
/// `Bearer` (any casing) and a token68 value.
fn bearer_token(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Err(AuthError::MissingToken) };
    if values.next().is_some() {
        return Err(AuthError::BadAuthorization("repeated"));
    }
    let value = value.to_str().map_err(|_| AuthError::BadAuthorization("not ASCII"))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::BadAuthorization("no scheme"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::BadAuthorization("not Bearer"));
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'='))
    {
        return Err(AuthError::BadAuthorization("not a token"));
    }
    Ok(token)
}

impl KeyStores {
    /// Authenticates and authorizes one request against a trigger's access rules.
    ///
    /// Runs after the firewall and before the rate limiter. Tokens are read only from
    /// `Authorization: Bearer`; the caller must not log the query when
    /// [`query_has_token`] is true (this function refuses such requests).
    ///
    /// # Errors
    /// [`AuthError`]; turn it into the response with [`AuthError::into_rejection`].
    pub async fn authenticate(
        &self,
        access: &TriggerAccess,
        parts: &http::request::Parts,
    ) -> Result<Caller, AuthError> {
        self.authenticate_identified(access, parts).await.map_err(|(error, _)| error)
    }

    /// [`KeyStores::authenticate`], also naming the caller when a verified token fails a
    /// trigger rule, so the run record says who was refused.
    ///
    /// # Errors
    /// The [`AuthError`], with the verified caller when the token itself was valid.
    pub async fn authenticate_identified(
        &self,
        access: &TriggerAccess,
        parts: &http::request::Parts,
    ) -> Result<Caller, (AuthError, Option<Caller>)> {
        if query_has_token(&parts.uri) {
            return Err((AuthError::TokenInQuery, None));
        }
        if access.who == Who::Anyone {
            let keys = access.signed.as_ref().ok_or((AuthError::Misconfigured, None))?;
            let now = self.clock().now_millis() / 1000;
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
            return Ok(Caller::signed_url(&kid, signature));
        }
        let identity = access.identity.as_ref().ok_or((AuthError::Misconfigured, None))?;
        let token = bearer_token(&parts.headers).map_err(|e| (e, None))?;
        let claims = self.verify_token(&identity.spec(), token).await.map_err(|e| (AuthError::from(e), None))?;
        // Rules and budgets need an immutable id: `oid`, or `sub` (with its issuer).
        if claims.oid.is_none() && claims.sub.is_none() {
            return Err((AuthError::NoSubject, None));
        }
        access.evaluate(&claims).map_err(|error| (error, Some(Caller::from_claims(&claims))))
    }

    /// Verifies the bearer token of `headers` and applies `access`'s tenant and principal
    /// rules (the admin API's, from [`compile_admin_access`]); the admin API then maps the
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
        let identity = access.identity.as_ref().ok_or(AuthError::Misconfigured)?;
        let token = bearer_token(headers)?;
        let claims = self.verify_token(&identity.spec(), token).await?;
        access.evaluate(&claims)?;
        Ok(claims)
    }

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

    /// Fetches an identity's keys now (tests, `flowgate check --online`, readiness).
    ///
    /// # Errors
    /// The fetch failure, naming the URL or file.
    pub async fn refresh_identity(&self, identity: &Identity) -> Result<usize, KeyError> {
        self.refresh_source(&identity.spec()).await
    }
}

#[cfg(test)]
mod tests;
