//! Trigger rules: who may call a trigger (`who`, tenants, principals, roles, scopes,
//! exact claims), their compile step into a [`TriggerAccess`] (for triggers and for
//! `[admin]`), and its evaluation against verified claims.

use super::caller::Caller;
use super::certificate::{CertificateInput, CertificateRule, compile_certificate_rule};
use super::error::AuthError;
use super::identity::Identity;
use super::lookup::{NameRule, PrincipalSet, TenantSet};
use super::signed::{SignedUrlKeys, SignedUrlParams};
use super::token::{Claims, is_guid};
use crate::config::{Diagnostics, KeyPath, did_you_mean};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// No token: a verified client certificate (of `[server] tls.client_ca`, or from a
    /// trusted proxy's `forwarded_client_cert` header), one of the `cert:` principals when
    /// any are listed.
    Certificate,
    /// No token; each delivery must carry the sender's signature (`webhook = { … }`).
    Webhook,
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

/// A compiled role or scope requirement (a hash set: long lists cost nothing per call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirement(NameRule);

impl Requirement {
    fn compile(raw: &RawRequirement, path: &KeyPath, diags: &mut Diagnostics) -> Option<Self> {
        if raw.any_of.is_empty() && raw.all_of.is_empty() {
            diags.error_with_hint(path, "an empty requirement", "set any_of or all_of, or remove the key");
            return None;
        }
        Some(Self(NameRule::new(&raw.any_of, &raw.all_of)))
    }

    /// True when `held` satisfies the requirement (exact, case-sensitive names).
    pub(crate) fn is_met(&self, held: &[String]) -> bool {
        self.0.is_met(held)
    }
}

/// A principal identifier as written in a policy (`oid:…`, `sub:…`, `upn:…`, `email:…`,
/// `app:…`, `users_of_app:…`) in the form [`Caller::principal_ids`] uses: kind lower-cased,
/// `email:` read as `upn:`, every value but a `sub` lower-cased. `principal_ips` compares
/// through this function; `principals` are compiled by `compile_principals`.
pub(crate) fn canonical_principal(id: &str) -> String {
    match id.split_once(':') {
        Some((kind, value)) => match kind.to_ascii_lowercase().as_str() {
            "sub" => format!("sub:{value}"),
            "email" | "upn" => format!("upn:{}", value.to_lowercase()),
            other => format!("{other}:{}", value.to_lowercase()),
        },
        None => id.to_owned(),
    }
}

/// What a trigger requires of its callers; compiled from the trigger's auth fields.
#[derive(Debug, Clone)]
pub struct TriggerAccess {
    who: Who,
    identity: Option<Arc<Identity>>,
    tenants: TenantSet,
    principals: PrincipalSet,
    roles: Option<Requirement>,
    scopes: Option<Requirement>,
    claims: Vec<(String, String)>,
    pub(super) signed: Option<SignedUrlKeys>,
    /// The trigger's name, which a signed URL's signature covers.
    pub(super) name: String,
    realm: String,
    /// What the caller's client certificate must be, if anything.
    pub certificate: CertificateRule,
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

    /// Applies the trigger's rules to verified claims and names the caller.
    ///
    /// # Errors
    /// The first failed rule.
    pub fn evaluate(&self, claims: &Claims) -> Result<Caller, AuthError> {
        self.admits(claims).map(|()| Caller::from_claims(claims))
    }

    /// Applies the trigger's rules to verified claims (the request path, whose caller is
    /// built once per token by the token cache).
    ///
    /// # Errors
    /// The first failed rule.
    pub fn admits(&self, claims: &Claims) -> Result<(), AuthError> {
        if !self.tenants.is_empty() && !claims.tid.as_deref().is_some_and(|tid| self.tenants.contains(tid)) {
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
        Ok(())
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
            "oid" if is_guid(value) => set.add_oid(value),
            "oid" => diags.error(&at, "oid: must be followed by a GUID"),
            "sub" => {
                let Some(identity) = identity else { continue };
                // OIDC issuers carry no fragment, so the first `#` ends a named issuer.
                let named = value.split_once('#').filter(|(iss, _)| identity.accepts_issuer(iss));
                match (named, identity.single_issuer()) {
                    (Some((iss, sub)), _) if !sub.is_empty() => set.add_sub(iss, sub),
                    (None, Some(iss)) => set.add_sub(iss, value),
                    _ => diags.error_with_hint(
                        &at,
                        format!(
                            "a sub is unique only within its issuer, and identity {:?} accepts several",
                            identity.name()
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
            "upn" => set.add_upn(value),
            "email" => diags.error_with_hint(
                &at,
                "email: is not accepted: the email claim is mutable and not verified, so a user \
                 of another tenant can carry anyone's address",
                "use oid:GUID, or upn:NAME with tenants set (it matches only the upn claim)",
            ),
            "app" => set.add_app(value),
            "users_of_app" => set.add_app_users(value),
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
pub(crate) fn compile_admin_access(
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
        tenants = identity.tenants().to_vec();
    }
    if tenants.is_empty() && identity.is_multi_tenant() {
        diags.error_with_hint(
            &path.key("tenants"),
            format!(
                "identity {:?} accepts tokens of every tenant: another tenant that consented to the app \
                 could give its own users the admin roles",
                identity.name()
            ),
            "set tenants on [admin] or on the identity",
        );
    }
    let who = if principals.is_empty() { Who::TenantUsers } else { Who::SpecificUsers };
    let principals = compile_principals(principals, &path.key("principals"), Some(&identity), &tenants, diags);
    Some(TriggerAccess {
        who,
        realm: identity.realm().to_owned(),
        identity: Some(identity),
        tenants: TenantSet::new(tenants),
        principals,
        roles: None,
        scopes: None,
        claims: Vec::new(),
        signed: None,
        name: "[admin]".into(),
        certificate: CertificateRule::default(),
        forward_authorization: false,
        forward_identity: false,
    })
}

/// A trigger's auth fields as written in the policy, borrowed from the trigger table that
/// holds them: what [`compile_access`] compiles. The policy builds it from its raw trigger,
/// so that auth need not know the rest of a trigger.
#[derive(Debug, Clone, Copy)]
pub struct TriggerAccessInput<'a> {
    /// `name`: a signed URL's signature covers it.
    pub name: &'a str,
    /// `who`.
    pub who: Who,
    /// `identity`: the `[identity.NAME]` whose tokens are accepted.
    pub identity: Option<&'a str>,
    /// `tenants`.
    pub tenants: &'a [String],
    /// `principals`.
    pub principals: &'a [String],
    /// `roles`.
    pub roles: Option<&'a RawRequirement>,
    /// `scopes`.
    pub scopes: Option<&'a RawRequirement>,
    /// `claims`: exact-match claim rules.
    pub claims: &'a BTreeMap<String, String>,
    /// `forward_authorization`.
    pub forward_authorization: bool,
    /// `forward_identity`.
    pub forward_identity: bool,
    /// `require_certificate` and `require_bound_token`.
    pub certificate: super::certificate::CertificateFlags,
}

/// Compiles a trigger's auth fields (`who`, `identity`, `tenants`, `principals`, `roles`,
/// `scopes`, `claims`, `forward_*`) against the compiled identities and signed-URL keys.
/// `path` is the trigger's path (`trigger[3]`).
pub fn compile_access<'a>(
    trigger: impl Into<TriggerAccessInput<'a>>,
    path: &KeyPath,
    identities: &BTreeMap<String, Arc<Identity>>,
    signed: Option<&SignedUrlKeys>,
    diags: &mut Diagnostics,
) -> TriggerAccess {
    let trigger: TriggerAccessInput<'a> = trigger.into();
    let mut access = TriggerAccess {
        who: trigger.who,
        identity: None,
        tenants: TenantSet::default(),
        principals: PrincipalSet::default(),
        roles: None,
        scopes: None,
        claims: trigger.claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        signed: None,
        name: trigger.name.to_owned(),
        realm: "flowgate".into(),
        certificate: CertificateRule::default(),
        forward_authorization: trigger.forward_authorization,
        forward_identity: trigger.forward_identity,
    };
    // `cert:` principals form the certificate rule, judged beside (never instead of) the
    // token rules; the others are the token's.
    let cert_principals: Vec<(usize, &str)> = trigger
        .principals
        .iter()
        .enumerate()
        .filter(|(_, p)| p.get(..5).is_some_and(|k| k.eq_ignore_ascii_case("cert:")))
        .map(|(i, p)| (i, p.as_str()))
        .collect();
    let token_principals: Vec<String> = trigger
        .principals
        .iter()
        .filter(|p| !p.get(..5).is_some_and(|k| k.eq_ignore_ascii_case("cert:")))
        .cloned()
        .collect();
    access.certificate = compile_certificate_rule(
        CertificateInput {
            certificate_only: trigger.who == Who::Certificate,
            flags: trigger.certificate,
            principals: &cert_principals,
        },
        path,
        diags,
    );
    if trigger.who == Who::Certificate {
        refuse_token_rules(&trigger, &token_principals, path, Who::Certificate, diags);
        return access;
    }
    let trigger = TriggerAccessInput { principals: &token_principals, ..trigger };
    if trigger.who == Who::Anyone {
        access.signed = compile_signed_access(&trigger, path, signed, diags);
        return access;
    }
    if trigger.who == Who::Webhook {
        refuse_token_rules(&trigger, trigger.principals, path, Who::Webhook, diags);
        // A delivery is judged by its signature alone; a certificate rule here would be
        // written and never checked.
        if !cert_principals.is_empty()
            || trigger.certificate.require_certificate
            || trigger.certificate.require_bound_token
        {
            diags.error_with_hint(
                &path.key("principals"),
                "certificate rules are not checked on who = \"webhook\"",
                "remove cert: principals and require_certificate / require_bound_token from this trigger",
            );
        }
        return access;
    }
    let identity = find_identity(trigger.identity, path, identities, diags);
    let mut tenants = compile_tenants(trigger.tenants, &path.key("tenants"), diags);
    if let Some(identity) = &identity {
        if tenants.is_empty() {
            tenants = identity.tenants().to_vec();
        }
        identity.realm().clone_into(&mut access.realm);
    }
    access.principals = compile_who(&trigger, identity.as_deref(), &tenants, path, diags);
    access.tenants = TenantSet::new(tenants);
    check_claim_rules(trigger.claims, &path.key("claims"), diags);
    access.roles = trigger.roles.and_then(|r| Requirement::compile(r, &path.key("roles"), diags));
    access.scopes = trigger.scopes.and_then(|r| Requirement::compile(r, &path.key("scopes"), diags));
    access.identity = identity;
    access
}

/// `who = "anyone"`: the signed-URL keys that admit its callers. Every token rule is
/// refused, since no token is read.
fn compile_signed_access(
    trigger: &TriggerAccessInput<'_>,
    path: &KeyPath,
    signed: Option<&SignedUrlKeys>,
    diags: &mut Diagnostics,
) -> Option<SignedUrlKeys> {
    if signed.is_none() {
        diags.error_with_hint(
            &path.key("who"),
            "who = \"anyone\" requires signed URLs",
            "add a [signed_urls] section with keys and primary",
        );
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
    signed.cloned()
}

/// Token rules on a trigger that reads no token (`who = "certificate"` or `"webhook"`) are
/// refused: they would look like protection and judge nothing.
fn refuse_token_rules(
    trigger: &TriggerAccessInput<'_>,
    token_principals: &[String],
    path: &KeyPath,
    who: Who,
    diags: &mut Diagnostics,
) {
    let (name, hint) = match who {
        Who::Webhook => ("webhook", "remove it: the sender's signature is the credential"),
        _ => (
            "certificate",
            "use cert: principals, or a token trigger (who = \"specific_users\") with require_certificate = true",
        ),
    };
    let token_only = [
        ("identity", trigger.identity.is_some()),
        ("tenants", !trigger.tenants.is_empty()),
        ("principals", !token_principals.is_empty()),
        ("roles", trigger.roles.is_some()),
        ("scopes", trigger.scopes.is_some()),
        ("claims", !trigger.claims.is_empty()),
        // A certificate caller's identity headers are still forwarded; a webhook has none.
        ("forward_identity", who == Who::Webhook && trigger.forward_identity),
        ("forward_authorization", trigger.forward_authorization),
    ];
    for (key, set) in token_only {
        if set {
            diags.error_with_hint(
                &path.key(key),
                format!("{key} is a token rule, and who = \"{name}\" reads no token"),
                hint,
            );
        }
    }
}

/// The `[identity.NAME]` a token trigger names; `None` (reported) when it names none or an
/// unknown one.
fn find_identity(
    name: Option<&str>,
    path: &KeyPath,
    identities: &BTreeMap<String, Arc<Identity>>,
    diags: &mut Diagnostics,
) -> Option<Arc<Identity>> {
    let Some(name) = name else {
        diags.error_with_hint(
            &path.key("who"),
            "this trigger needs an identity",
            "add identity = \"NAME\" naming an [identity.NAME] section",
        );
        return None;
    };
    let identity = identities.get(name).map(Arc::clone);
    if identity.is_none() {
        let hint = did_you_mean(name, identities.keys().map(String::as_str))
            .map_or_else(|| "define it as [identity.NAME]".to_owned(), |s| format!("did you mean {s:?}?"));
        diags.error_with_hint(&path.key("identity"), format!("no identity named {name:?}"), hint);
    }
    identity
}

/// `who = "tenant_users"` or `"specific_users"` against the tenants the trigger ends up
/// with: the principals `specific_users` accepts (empty for `tenant_users`, which may not
/// list any).
fn compile_who(
    trigger: &TriggerAccessInput<'_>,
    identity: Option<&Identity>,
    tenants: &[String],
    path: &KeyPath,
    diags: &mut Diagnostics,
) -> PrincipalSet {
    if trigger.who == Who::TenantUsers && tenants.is_empty() && identity.is_some() {
        diags.error_with_hint(
            &path.key("tenants"),
            "who = \"tenant_users\" needs tenants",
            "set tenants on the trigger or on its identity",
        );
    }
    if trigger.who != Who::SpecificUsers {
        if !trigger.principals.is_empty() {
            diags.error_with_hint(
                &path.key("principals"),
                "principals only apply with who = \"specific_users\"",
                "remove them or change who",
            );
        }
        return PrincipalSet::default();
    }
    if let Some(identity) = identity
        && tenants.is_empty()
        && identity.is_multi_tenant()
    {
        diags.error_with_hint(
            &path.key("tenants"),
            format!(
                "who = \"specific_users\" on identity {:?}, which accepts every tenant, needs tenants",
                identity.name()
            ),
            "an app id is the same in every tenant that consented to the app, and names are chosen \
             by each tenant: set tenants on the trigger or on its identity",
        );
    }
    let principals = compile_principals(trigger.principals, &path.key("principals"), identity, tenants, diags);
    if trigger.principals.is_empty() {
        tracing::warn!(at = %path, "who = \"specific_users\" with no principals: nobody may call this trigger");
    }
    principals
}

/// `claims`: exact-match rules, refused on the name claims anyone can set.
fn check_claim_rules(claims: &BTreeMap<String, String>, path: &KeyPath, diags: &mut Diagnostics) {
    for name in claims.keys() {
        if MUTABLE_NAME_CLAIMS.contains(&name.as_str()) {
            // A guest's (or another tenant's) user brings these from a directory we do not
            // control, so a rule on them would admit whoever copies the value.
            diags.error_with_hint(
                &path.key(name.as_str()),
                format!("a rule on {name} can be met by anyone who sets it: the claim is mutable and not verified"),
                "name the caller with principals = [\"oid:GUID\"] (or upn:NAME, which matches the upn claim)",
            );
        }
    }
}
