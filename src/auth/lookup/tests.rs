//! The hashed rules against a naive scan: generated principal lists, tenant lists, role
//! requirements and tokens, compiled through the real compile step, judged by both.

use crate::auth::{AuthError, Claims, RawIdentity, TriggerAccess, compile_access, compile_identities};
use crate::config::{Diagnostics, KeyPath, SourceFile};
use crate::policy::RawTrigger;
use proptest::prelude::*;
use serde_json::json;

const ISSUER: &str = "https://a.example";
const OTHER_ISSUER: &str = "https://b.example";
const GUIDS: [&str; 4] = [
    "0d2d3b0e-0000-4000-8000-00000000000a",
    "0d2d3b0e-0000-4000-8000-00000000000b",
    "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
];
const NAMES: [&str; 4] = ["alice@contoso.com", "Bob@Contoso.com", "ÅSA@contoso.com", "carol"];
const SUBS: [&str; 3] = ["subject-1", "Subject-1", "s#2"];
const ROLES: [&str; 4] = ["Flows.Invoke", "flows.invoke", "Admin", "Reader"];

/// One of `pool`, with the case of its ASCII letters flipped where `flips` says.
fn variant(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    (0..pool.len(), any::<u64>()).prop_map(move |(i, flips)| {
        pool[i]
            .chars()
            .enumerate()
            .map(|(n, c)| if flips >> (n % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

/// A `principals` entry in every form the compile step accepts for this identity.
fn entry() -> impl Strategy<Value = String> {
    prop_oneof![
        variant(&GUIDS).prop_map(|g| format!("oid:{g}")),
        (0..SUBS.len()).prop_map(|i| format!("sub:{}", SUBS[i])),
        (0..SUBS.len()).prop_map(|i| format!("sub:{ISSUER}#{}", SUBS[i])),
        (0..SUBS.len()).prop_map(|i| format!("sub:{OTHER_ISSUER}#{}", SUBS[i])),
        variant(&NAMES).prop_map(|n| format!("upn:{n}")),
        variant(&GUIDS).prop_map(|g| format!("app:{g}")),
        variant(&GUIDS).prop_map(|g| format!("users_of_app:{g}")),
    ]
}

fn token() -> impl Strategy<Value = Claims> {
    (
        proptest::option::of(variant(&GUIDS)),
        proptest::option::of((0..SUBS.len()).prop_map(|i| SUBS[i])),
        prop_oneof![Just(ISSUER), Just(OTHER_ISSUER)],
        proptest::option::of(variant(&NAMES)),
        proptest::option::of(variant(&GUIDS)),
        proptest::option::of(prop_oneof![Just("app"), Just("user")]),
        proptest::option::of(variant(&GUIDS)),
        proptest::collection::vec((0..ROLES.len()).prop_map(|i| ROLES[i]), 0..4),
    )
        .prop_map(|(oid, sub, iss, upn, app, idtyp, tid, roles)| {
            let mut map = serde_json::Map::new();
            map.insert("iss".into(), json!(iss));
            map.insert("aud".into(), json!("x"));
            map.insert("exp".into(), json!(10));
            let optional = [("oid", oid), ("sub", sub.map(str::to_owned)), ("upn", upn), ("azp", app), ("tid", tid)];
            for (name, value) in optional {
                if let Some(value) = value {
                    map.insert(name.into(), json!(value));
                }
            }
            if let Some(idtyp) = idtyp {
                map.insert("idtyp".into(), json!(idtyp));
            }
            map.insert("roles".into(), json!(roles));
            Claims::from_map(map).unwrap()
        })
}

/// The rules as written: a naive reading of each list, entry by entry.
struct Model {
    tenants: Vec<String>,
    principals: Vec<String>,
    any_of: Vec<String>,
    all_of: Vec<String>,
}

impl Model {
    fn principal_matches(entry: &str, claims: &Claims) -> bool {
        let (kind, value) = entry.split_once(':').unwrap();
        let same = |claim: &Option<String>| claim.as_ref().is_some_and(|c| c.to_lowercase() == value.to_lowercase());
        match kind {
            "oid" => same(&claims.oid),
            "sub" => {
                let (iss, sub) = match value.split_once('#') {
                    Some((iss, sub)) if iss == ISSUER && !sub.is_empty() => (iss, sub),
                    _ => (ISSUER, value),
                };
                claims.iss == iss && claims.sub.as_deref() == Some(sub)
            }
            "upn" => same(&claims.upn),
            "app" => claims.app_only && same(&claims.app_id),
            "users_of_app" => claims.delegated && same(&claims.app_id),
            _ => unreachable!("{entry}"),
        }
    }

    fn judge(&self, claims: &Claims) -> Result<(), AuthError> {
        let tid = claims.tid.as_deref().unwrap_or("");
        if !self.tenants.iter().any(|t| t.eq_ignore_ascii_case(tid)) {
            return Err(AuthError::Tenant);
        }
        if !self.principals.iter().any(|p| Self::principal_matches(p, claims)) {
            return Err(AuthError::Principal);
        }
        let held = |want: &String| claims.roles.iter().any(|r| r == want);
        let any_ok = self.any_of.is_empty() || self.any_of.iter().any(held);
        if !(self.all_of.iter().all(held) && any_ok) {
            return Err(AuthError::Role);
        }
        Ok(())
    }
}

fn compiled(model: &Model) -> TriggerAccess {
    let source = SourceFile { name: "policy.toml".into(), base_dir: std::env::temp_dir(), text: String::new() };
    let raw: std::collections::BTreeMap<String, RawIdentity> = toml::from_str(&format!(
        "[plain]\njwks_uri = \"https://idp.example.com/keys\"\nissuer = \"{ISSUER}\"\naudiences = [\"x\"]\n"
    ))
    .unwrap();
    let mut diags = Diagnostics::default();
    let identities = compile_identities(&raw, &KeyPath::root().key("identity"), &source, &mut diags);
    let roles = if model.any_of.is_empty() && model.all_of.is_empty() {
        String::new()
    } else {
        format!("roles = {{ any_of = {:?}, all_of = {:?} }}\n", model.any_of, model.all_of)
    };
    let text = format!(
        "name = \"t\"\npath = \"/t\"\nupstream = \"https://u.example/\"\nwho = \"specific_users\"\n\
         identity = \"plain\"\ntenants = {:?}\nprincipals = {:?}\n{roles}",
        model.tenants, model.principals
    );
    let trigger: RawTrigger = toml::from_str(&text).unwrap();
    let access = compile_access(&trigger, &KeyPath::root().key("trigger").index(0), &identities, None, &mut diags);
    let errors: Vec<_> = diags.into_vec().into_iter().map(|d| d.message).collect();
    assert!(errors.is_empty(), "{errors:?}");
    access
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hashed_rules_judge_like_a_scan_of_the_lists(
        tenants in proptest::collection::vec(variant(&GUIDS), 1..4),
        principals in proptest::collection::vec(entry(), 0..40),
        any_of in proptest::collection::vec((0..ROLES.len()).prop_map(|i| ROLES[i].to_owned()), 0..3),
        all_of in proptest::collection::vec((0..ROLES.len()).prop_map(|i| ROLES[i].to_owned()), 0..3),
        tokens in proptest::collection::vec(token(), 1..16),
    ) {
        let model = Model { tenants, principals, any_of, all_of };
        let access = compiled(&model);
        for claims in &tokens {
            prop_assert_eq!(access.admits(claims), model.judge(claims), "{:?}", claims);
        }
    }
}

#[test]
fn ten_thousand_principals_admit_the_last_and_no_stranger() {
    let principals: Vec<String> = (0..10_000).map(|i| format!("oid:0d2d3b0e-0000-4000-8000-{i:012}")).collect();
    let model = Model { tenants: vec![GUIDS[2].into()], principals, any_of: Vec::new(), all_of: Vec::new() };
    let access = compiled(&model);
    let token = |oid: &str| {
        let mut map = serde_json::Map::new();
        for (name, value) in [("iss", ISSUER), ("aud", "x"), ("tid", GUIDS[2]), ("oid", oid)] {
            map.insert(name.into(), json!(value));
        }
        map.insert("exp".into(), json!(10));
        Claims::from_map(map).unwrap()
    };
    assert_eq!(access.admits(&token("0D2D3B0E-0000-4000-8000-000000009999")), Ok(()));
    assert_eq!(access.admits(&token("0d2d3b0e-0000-4000-8000-000000010000")), Err(AuthError::Principal));
}
