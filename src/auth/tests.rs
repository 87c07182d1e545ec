//! Compile-step and rule tests for the auth module.

use super::bearer::bearer_token;
use super::*;
use crate::config::{Diagnostics, KeyPath, SourceFile};
use crate::policy::RawTrigger;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

fn source() -> SourceFile {
    SourceFile { name: "policy.toml".into(), base_dir: std::env::temp_dir(), text: String::new() }
}

fn identities(text: &str) -> (BTreeMap<String, Arc<Identity>>, Vec<String>) {
    let raw: BTreeMap<String, RawIdentity> = toml::from_str(text).unwrap();
    let mut diags = Diagnostics::default();
    let compiled = compile_identities(&raw, &KeyPath::root().key("identity"), &source(), &mut diags);
    let messages = diags.into_vec().into_iter().map(|d| format!("{}: {}", d.path, d.message)).collect();
    (compiled, messages)
}

fn entra() -> BTreeMap<String, Arc<Identity>> {
    let (ids, errors) = identities(&format!(
        r#"[contoso]
discovery = "https://login.microsoftonline.com/{{tenant}}/v2.0/.well-known/openid-configuration"
issuers = ["https://login.microsoftonline.com/{{tenant}}/v2.0", "https://sts.windows.net/{{tenant}}/"]
audiences = ["api://flowgate"]
tenants = ["{TENANT}"]
"#
    ));
    assert!(errors.is_empty(), "{errors:?}");
    ids
}

fn access(trigger_toml: &str, ids: &BTreeMap<String, Arc<Identity>>) -> (TriggerAccess, Vec<String>) {
    let text = format!("name = \"t\"\npath = \"/t\"\nupstream = \"https://u.example/\"\n{trigger_toml}");
    let trigger: RawTrigger = toml::from_str(&text).unwrap();
    let mut diags = Diagnostics::default();
    let compiled = compile_access(&trigger, &KeyPath::root().key("trigger").index(0), ids, None, &mut diags);
    (compiled, diags.into_vec().into_iter().map(|d| format!("{}: {}", d.path, d.message)).collect())
}

fn claims(value: serde_json::Value) -> Claims {
    let serde_json::Value::Object(mut map) = value else { unreachable!() };
    map.entry("iss").or_insert(json!("x"));
    map.entry("aud").or_insert(json!("api://flowgate"));
    map.entry("exp").or_insert(json!(10));
    Claims::from_map(map).unwrap()
}

#[test]
fn identity_errors_are_all_reported_with_paths() {
    let (ids, errors) = identities(
        r#"[bad]
jwks_uri = "http://idp.example.com/keys"
allow_insecure_http = true
issuer = "https://a/{tenant}/{tenant}"
audiences = []
tenants = ["not-a-guid"]
algorithms = ["HS256", "none", "RS999"]
"#,
    );
    assert!(ids.is_empty());
    let all = errors.join("\n");
    for needle in [
        "identity.bad.jwks_uri: allow_insecure_http is only allowed for loopback",
        "identity.bad.issuer",
        "identity.bad.audiences",
        "identity.bad.tenants[0]",
        "identity.bad.algorithms[0]: HMAC",
        "identity.bad.algorithms[1]",
        "identity.bad.algorithms[2]: unknown algorithm",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn identity_needs_one_key_source_and_https() {
    let (_, errors) = identities("[a]\nissuer = \"i\"\naudiences = [\"x\"]\n");
    assert!(errors.iter().any(|e| e.contains("exactly one key source")), "{errors:?}");
    let (_, errors) = identities("[a]\njwks_uri = \"http://idp.example.com/k\"\nissuer = \"i\"\naudiences = [\"x\"]\n");
    assert!(errors.iter().any(|e| e.contains("must use https")), "{errors:?}");
    let (ids, errors) = identities(
        "[a]\njwks_uri = \"http://127.0.0.1:9/k\"\nallow_insecure_http = true\nissuer = \"i\"\naudiences = [\"x\"]\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ids["a"].key_source().source, keys::KeySource::JwksUri("http://127.0.0.1:9/k".into()));
}

#[test]
fn discovery_tenant_replaces_the_template() {
    let ids = entra();
    assert_eq!(
        ids["contoso"].key_source().source,
        keys::KeySource::Discovery(
            "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration".into()
        )
    );
}

#[test]
fn unknown_identity_gets_a_suggestion() {
    let ids = entra();
    let text =
        "name = \"t\"\npath = \"/t\"\nupstream = \"https://u/\"\nwho = \"tenant_users\"\nidentity = \"contosso\"\n";
    let trigger: RawTrigger = toml::from_str(text).unwrap();
    let mut diags = Diagnostics::default();
    compile_access(&trigger, &KeyPath::root().key("trigger").index(0), &ids, None, &mut diags);
    let diags = diags.into_vec();
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].path.to_string(), "trigger[0].identity");
    assert_eq!(diags[0].hint.as_deref(), Some("did you mean \"contoso\"?"));
}

#[test]
fn who_needs_what_it_needs() {
    let ids = entra();
    let (_, errors) = access("who = \"specific_users\"\n", &ids);
    assert!(errors.iter().any(|e| e.contains("needs an identity")), "{errors:?}");
    let (_, errors) = access("who = \"anyone\"\nidentity = \"contoso\"\n", &ids);
    assert!(errors.iter().any(|e| e.contains("requires signed URLs")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("trigger[0].identity")), "{errors:?}");
    let (_, errors) =
        access("who = \"specific_users\"\nidentity = \"contoso\"\nprincipals = [\"bob\", \"oid:x\"]\n", &ids);
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn empty_principal_list_refuses_everyone() {
    let ids = entra();
    let (access, errors) = access("who = \"specific_users\"\nidentity = \"contoso\"\n", &ids);
    assert!(errors.is_empty(), "{errors:?}");
    let caller =
        claims(json!({"tid": TENANT, "oid": "0d2d3b0e-0000-4000-8000-000000000001", "appid": "a", "upn": "x@y"}));
    assert_eq!(access.evaluate(&caller), Err(AuthError::Principal));
}

#[test]
fn tenant_and_principal_rules() {
    let ids = entra();
    let (access, errors) = access(
        "who = \"specific_users\"\nidentity = \"contoso\"\nprincipals = [\"upn:Alice@Contoso.com\", \"app:ABC\", \"oid:0D2D3B0E-0000-4000-8000-000000000001\"]\n",
        &ids,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let alice =
        claims(json!({"tid": TENANT, "upn": "alice@contoso.COM", "oid": "0d2d3b0e-0000-4000-8000-000000000009"}));
    let caller = access.evaluate(&alice).unwrap();
    assert_eq!(caller.principal, "oid:0d2d3b0e-0000-4000-8000-000000000009");
    assert!(caller.principal_ids.contains(&"upn:alice@contoso.com".to_owned()));
    // The name form matches the upn claim only, never preferred_username or email: those
    // are mutable and unverified, so a foreign tenant's user can carry anyone's name.
    let spoof = claims(
        json!({"tid": TENANT, "preferred_username": "alice@contoso.com", "email": "alice@contoso.com", "oid": "0d2d3b0e-0000-4000-8000-000000000008"}),
    );
    assert_eq!(access.evaluate(&spoof), Err(AuthError::Principal));
    // app: means the app calling as itself (an app-only token), never its signed-in users.
    let app = claims(json!({"tid": TENANT, "azp": "abc", "idtyp": "app"}));
    assert_eq!(access.evaluate(&app).unwrap().principal, "app:abc");
    let by_oid = claims(json!({"tid": TENANT, "oid": "0d2d3b0e-0000-4000-8000-000000000001"}));
    assert!(access.evaluate(&by_oid).is_ok());
    let stranger = claims(json!({"tid": TENANT, "oid": "0d2d3b0e-0000-4000-8000-000000000002"}));
    assert_eq!(access.evaluate(&stranger), Err(AuthError::Principal));
    let other_tenant = claims(json!({"tid": "00000000-0000-4000-8000-000000000000", "azp": "abc", "idtyp": "app"}));
    assert_eq!(access.evaluate(&other_tenant), Err(AuthError::Tenant));
}

#[test]
fn app_means_app_only_and_users_of_app_means_delegated() {
    let ids = entra();
    let (apps, errors) = access("who = \"specific_users\"\nidentity = \"contoso\"\nprincipals = [\"app:ABC\"]\n", &ids);
    assert!(errors.is_empty(), "{errors:?}");
    let (users, errors) =
        access("who = \"specific_users\"\nidentity = \"contoso\"\nprincipals = [\"users_of_app:ABC\"]\n", &ids);
    assert!(errors.is_empty(), "{errors:?}");
    let user = "0d2d3b0e-0000-4000-8000-000000000003";
    let v2_app = claims(json!({"tid": TENANT, "azp": "abc", "idtyp": "app"}));
    let v1_app = claims(json!({"tid": TENANT, "appid": "abc", "appidacr": "1"}));
    let v2_user = claims(json!({"tid": TENANT, "azp": "abc", "azpacr": "0", "scp": "Flows.Invoke", "oid": user}));
    let v1_user =
        claims(json!({"tid": TENANT, "appid": "abc", "appidacr": "0", "scp": "user_impersonation", "oid": user}));
    for token in [&v2_app, &v1_app] {
        assert!(apps.evaluate(token).is_ok(), "{token:?}");
        assert_eq!(users.evaluate(token), Err(AuthError::Principal), "{token:?}");
    }
    for token in [&v2_user, &v1_user] {
        assert_eq!(apps.evaluate(token), Err(AuthError::Principal), "{token:?}");
        assert!(users.evaluate(token).is_ok(), "{token:?}");
    }
    // Neither idtyp nor an acr claim: not known to be either, so neither form admits it.
    let unknown = claims(json!({"tid": TENANT, "azp": "abc"}));
    assert_eq!(apps.evaluate(&unknown), Err(AuthError::Principal));
    assert_eq!(users.evaluate(&unknown), Err(AuthError::Principal));
}

#[test]
fn names_need_tenants_email_is_refused_and_multi_tenant_specific_users_need_tenants() {
    // One exact issuer, no tenants: upn: cannot be told apart from a foreign user's name.
    let (single, errors) = identities(
        "[plain]\njwks_uri = \"https://idp.example.com/keys\"\nissuer = \"https://idp.example.com\"\naudiences = [\"x\"]\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    let (_, errors) =
        access("who = \"specific_users\"\nidentity = \"plain\"\nprincipals = [\"upn:alice@contoso.com\"]\n", &single);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("trigger[0].principals[0]: upn: names match only where tenants"), "{errors:?}");
    // With tenants on the trigger the same entry compiles.
    let (_, errors) = access(
        &format!(
            "who = \"specific_users\"\nidentity = \"plain\"\ntenants = [\"{TENANT}\"]\nprincipals = [\"upn:alice@contoso.com\"]\n"
        ),
        &single,
    );
    assert!(errors.is_empty(), "{errors:?}");
    // email: is never a principal.
    let (_, errors) = access(
        "who = \"specific_users\"\nidentity = \"contoso\"\nprincipals = [\"email:alice@contoso.com\"]\n",
        &entra(),
    );
    assert!(errors.iter().any(|e| e.contains("email: is not accepted")), "{errors:?}");
    // A {tenant} identity without tenants: specific_users is refused, naming the fix.
    let (multi, errors) = identities(
        "[any]\njwks_uri = \"https://idp.example.com/keys\"\nissuer = \"https://login.microsoftonline.com/{tenant}/v2.0\"\naudiences = [\"x\"]\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    let (_, errors) = access(
        "who = \"specific_users\"\nidentity = \"any\"\nprincipals = [\"oid:0d2d3b0e-0000-4000-8000-000000000001\"]\n",
        &multi,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("trigger[0].tenants: who = \"specific_users\" on identity \"any\""), "{errors:?}");
}

#[test]
fn claim_rules_on_mutable_names_are_refused() {
    let ids = entra();
    for claim in ["email", "preferred_username", "unique_name"] {
        let (_, errors) = access(
            &format!(
                "who = \"tenant_users\"\nidentity = \"contoso\"\nclaims = {{ {claim} = \"alice@contoso.com\" }}\n"
            ),
            &ids,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("trigger[0].claims.{claim}: a rule on {claim} can be met")),
            "{errors:?}"
        );
    }
    let (_, errors) =
        access("who = \"tenant_users\"\nidentity = \"contoso\"\nclaims = { upn = \"alice@contoso.com\" }\n", &ids);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn sub_is_bound_to_its_issuer() {
    let v2 = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
    let ids = entra();
    // Two issuers (v1 and v2): a bare sub is ambiguous.
    let (_, errors) = access("who = \"specific_users\"\nidentity = \"contoso\"\nprincipals = [\"sub:s-1\"]\n", &ids);
    assert!(errors.iter().any(|e| e.contains("unique only within its issuer")), "{errors:?}");
    let (access, errors) =
        access(&format!("who = \"specific_users\"\nidentity = \"contoso\"\nprincipals = [\"sub:{v2}#s-1\"]\n"), &ids);
    assert!(errors.is_empty(), "{errors:?}");
    let from_v2 = claims(json!({"tid": TENANT, "iss": v2, "sub": "s-1"}));
    assert!(access.evaluate(&from_v2).is_ok());
    let from_v1 = claims(json!({"tid": TENANT, "iss": format!("https://sts.windows.net/{TENANT}/"), "sub": "s-1"}));
    assert_eq!(access.evaluate(&from_v1), Err(AuthError::Principal));
    assert!(Caller::from_claims(&from_v2).principal_ids.contains(&format!("sub:{v2}#s-1")));
    // One exact issuer: the bare form is that issuer's.
    let (single, _) = identities(
        "[plain]\njwks_uri = \"https://idp.example.com/keys\"\nissuer = \"https://idp.example.com\"\naudiences = [\"x\"]\n",
    );
    let (plain, errors) =
        self::access("who = \"specific_users\"\nidentity = \"plain\"\nprincipals = [\"sub:a#b\"]\n", &single);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(plain.evaluate(&claims(json!({"iss": "https://idp.example.com", "sub": "a#b"}))).is_ok());
}

#[test]
fn admin_rules_apply_the_tenant_rule() {
    let ids = entra();
    let mut diags = Diagnostics::default();
    let admin = compile_admin_access("contoso", &[], &[], &ids, &KeyPath::root().key("admin"), &mut diags).unwrap();
    assert!(diags.is_empty());
    let home = claims(json!({"tid": TENANT, "roles": ["Flowgate.Admin"]}));
    assert!(admin.evaluate(&home).is_ok());
    let foreign = claims(json!({"tid": "00000000-0000-4000-8000-000000000000", "roles": ["Flowgate.Admin"]}));
    assert_eq!(admin.evaluate(&foreign), Err(AuthError::Tenant));
    // Principals narrow it further.
    let oid = "0d2d3b0e-0000-4000-8000-000000000001";
    let admin =
        compile_admin_access("contoso", &[], &[format!("oid:{oid}")], &ids, &KeyPath::root().key("admin"), &mut diags)
            .unwrap();
    assert!(diags.is_empty());
    assert_eq!(admin.evaluate(&home), Err(AuthError::Principal));
    assert!(admin.evaluate(&claims(json!({"tid": TENANT, "oid": oid}))).is_ok());
    // A {tenant} identity without tenants anywhere is refused for admin use.
    let (multi, _) = identities(
        "[any]\njwks_uri = \"https://idp.example.com/keys\"\nissuer = \"https://login.microsoftonline.com/{tenant}/v2.0\"\naudiences = [\"x\"]\n",
    );
    compile_admin_access("any", &[], &[], &multi, &KeyPath::root().key("admin"), &mut diags);
    let errors: Vec<String> = diags.into_vec().into_iter().map(|d| format!("{}: {}", d.path, d.message)).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("admin.tenants: identity \"any\" accepts tokens of every tenant"), "{errors:?}");
}

#[test]
fn roles_scopes_and_claims() {
    let ids = entra();
    let (access, errors) = access(
        "who = \"tenant_users\"\nidentity = \"contoso\"\nroles = { any_of = [\"A\", \"B\"] }\nscopes = { all_of = [\"read\", \"write\"] }\nclaims = { idtyp = \"app\" }\n",
        &ids,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let good = claims(json!({"tid": TENANT, "roles": ["B"], "scp": "write read", "idtyp": "app"}));
    assert!(access.evaluate(&good).is_ok());
    let no_role = claims(json!({"tid": TENANT, "roles": ["C"], "scp": "write read", "idtyp": "app"}));
    assert_eq!(access.evaluate(&no_role), Err(AuthError::Role));
    let one_scope = claims(json!({"tid": TENANT, "roles": ["A"], "scp": "read", "idtyp": "app"}));
    assert_eq!(access.evaluate(&one_scope), Err(AuthError::Scope));
    let user = claims(json!({"tid": TENANT, "roles": ["A"], "scp": "read write", "idtyp": "user"}));
    assert_eq!(access.evaluate(&user), Err(AuthError::Claim("idtyp".into())));
}

#[test]
fn bearer_header_parsing() {
    let mut headers = http::HeaderMap::new();
    assert_eq!(bearer_token(&headers), Err(AuthError::MissingToken));
    headers.insert(http::header::AUTHORIZATION, "bearer abc.def.ghi".parse().unwrap());
    assert_eq!(bearer_token(&headers), Ok(b"abc.def.ghi".as_slice()));
    headers.insert(http::header::AUTHORIZATION, "Basic Zm9vOmJhcg==".parse().unwrap());
    assert!(matches!(bearer_token(&headers), Err(AuthError::BadAuthorization(_))));
    headers.insert(http::header::AUTHORIZATION, "Bearer a b".parse().unwrap());
    assert!(matches!(bearer_token(&headers), Err(AuthError::BadAuthorization(_))));
}

proptest::proptest! {
    /// `bearer_token` against a model written the plain way (the value as text, split at the
    /// first space, the scheme compared, leading spaces trimmed, every byte checked), on
    /// generated values (non-ASCII and control bytes, tabs, missing and repeated spaces):
    /// the same token or a refusal for every input. The every-byte test below is its seed.
    #[test]
    fn bearer_token_matches_the_plain_reading(
        scheme in proptest::prop_oneof![
            proptest::strategy::Just("Bearer".to_owned()),
            proptest::strategy::Just("bEaReR".to_owned()),
            "[A-Za-z\\xe9]{0,7}",
        ],
        separator in "[ \t]{0,3}",
        token in proptest::collection::vec(proptest::prop_oneof![
            8 => proptest::sample::select(b"abcXYZ019-._~+/=".to_vec()),
            1 => proptest::num::u8::ANY,
        ], 0..40),
    ) {
        let mut value = [scheme.as_bytes(), separator.as_bytes()].concat();
        value.extend_from_slice(&token);
        let Ok(value) = http::HeaderValue::from_bytes(&value) else { return Ok(()) };
        let model = value.to_str().ok().and_then(|text| {
            let (scheme, rest) = text.split_once(' ')?;
            let token = rest.trim_start_matches(' ');
            let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
            (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.bytes().all(allowed))
                .then(|| token.as_bytes().to_vec())
        });
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        proptest::prop_assert_eq!(bearer_token(&headers).ok().map(<[u8]>::to_vec), model);
    }
}

#[test]
fn bearer_tokens_hold_only_token68_bytes_and_dots() {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    for b in 0..=255u8 {
        let mut headers = http::HeaderMap::new();
        let value = [b"Bearer a".as_slice(), &[b], b"z"].concat();
        let Ok(value) = http::HeaderValue::from_bytes(&value) else { continue };
        headers.insert(http::header::AUTHORIZATION, value);
        let parsed = bearer_token(&headers);
        assert_eq!(parsed.is_ok(), allowed(b), "byte {b:#04x}: {parsed:?}");
    }
}
