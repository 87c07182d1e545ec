//! Identity comes from what the issuer guarantees, on every path that accepts a token,
//! over the real gateway (TLS, HTTP, the admin listener): an
//! Entra-shaped identity (v1 and v2 `{tenant}` issuers, keys from a JWKS file generated at
//! test time) and tokens signed by the test's own key, so each token can carry exactly the
//! claims a foreign tenant or a user could set.
//!
//! - admin tokens obey the identity's tenants (`[admin] tenants`);
//! - principals match immutable ids: `upn:` only the `upn` claim, never `email` or
//!   `preferred_username`; `app:` only app-only tokens, `users_of_app:` only delegated ones;
//! - tokens with a `b64` header parameter are refused, in `crit` or not;
//! - the policy rules that would let a foreign tenant in are refused at compile.

use crate::common;

use crate::common::auth as fixtures;

use common::{Fixture, Running, start_echo, start_gateway};
use fixtures::{TestKey, jwks, unix_now};
use serde_json::{Value, json};
use std::net::SocketAddr;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER_TENANT: &str = "0a0b0c0d-1111-4222-8333-444455556666";
const ALICE: &str = "5e1f3c2a-0000-4000-8000-00000000aa01";
const MALLORY: &str = "5e1f3c2a-0000-4000-8000-00000000ee66";
const APP: &str = "6a7b8c9d-0000-4000-8000-00000000bb02";

/// The Entra identity: `{tenant}` issuers for v2 and v1, keys from `entra.jwks`.
fn identity(tenants: &str) -> String {
    format!(
        "[identity.entra]\njwks_file = \"entra.jwks\"\n\
         issuers = [\"https://login.microsoftonline.com/{{tenant}}/v2.0\", \"https://sts.windows.net/{{tenant}}/\"]\n\
         audiences = [\"api://flowgate\"]\nalgorithms = [\"RS256\"]\n{tenants}\n"
    )
}

fn trigger(name: &str, echo: SocketAddr, rules: &str) -> String {
    format!(
        "[[trigger]]\nname = \"{name}\"\npath = \"/{name}\"\nmethods = [\"POST\"]\n\
         upstream = \"http://{echo}/flows/{name}/invoke\"\nidentity = \"entra\"\n{rules}\n"
    )
}

/// `[server]`, `[admin]` with `admin` lines, and `rest`.
fn policy(fx: &Fixture, key: &TestKey, admin: &str, rest: &str) -> std::path::PathBuf {
    std::fs::write(fx.path().join("entra.jwks"), jwks(&[key])).unwrap();
    fx.write_policy(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"server.crt\", key = \"server.key\" }}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n\n{rest}"
    ))
}

/// An Entra v2 token of `tenant`'s user `oid` with `extra` claims merged in.
fn v2(tenant: &str, oid: &str, extra: Value) -> Value {
    let now = unix_now();
    let mut claims = json!({
        "iss": format!("https://login.microsoftonline.com/{tenant}/v2.0"),
        "aud": "api://flowgate",
        "exp": now + 600,
        "nbf": now - 10,
        "iat": now - 10,
        "tid": tenant,
        "oid": oid,
        "sub": format!("pairwise-{oid}"),
        "azp": APP,
        "ver": "2.0"
    });
    let Value::Object(extra) = extra else { panic!("extra claims must be an object") };
    for (k, v) in extra {
        claims[k] = v;
    }
    claims
}

/// An Entra v1 token of `tenant` with `extra` claims merged in.
fn v1(tenant: &str, oid: &str, extra: Value) -> Value {
    let now = unix_now();
    let mut claims = json!({
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "aud": "api://flowgate",
        "exp": now + 600,
        "iat": now - 10,
        "tid": tenant,
        "oid": oid,
        "sub": oid,
        "appid": APP,
        "ver": "1.0"
    });
    let Value::Object(extra) = extra else { panic!("extra claims must be an object") };
    for (k, v) in extra {
        claims[k] = v;
    }
    claims
}

async fn call(fx: &Fixture, gw: &Running, path: &str, token: &str) -> (u16, Value) {
    let response = fx.anonymous_client(false).post(gw.url(path)).bearer_auth(token).body("{}").send().await.unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    response.bytes().await.unwrap();
    (status, common::run_record(gw, &id).await)
}

#[tokio::test]
async fn an_admin_token_of_another_tenant_is_refused_whatever_its_roles() {
    let fx = Fixture::new();
    let key = TestKey::rsa("k1");
    let echo = start_echo().await;
    let admin = "identity = \"entra\"\ntoken_roles = { administrator = [\"Flowgate.Admin\"] }";
    let rest =
        format!("{}{}", identity(&format!("tenants = [\"{TENANT}\"]")), trigger("t", echo, "who = \"tenant_users\""));
    let gw = start_gateway(&policy(&fx, &key, admin, &rest)).await;
    let client = reqwest::Client::new();
    let admin_role = json!({"roles": ["Flowgate.Admin"]});

    // The home tenant's administrator reads the policy and the runs.
    let home = key.token(&v2(TENANT, ALICE, admin_role.clone()));
    let r = client.get(gw.admin_url("/policy")).bearer_auth(&home).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Another tenant that consented to the app gives its own user the admin role: the token
    // is correctly signed, of an accepted issuer and audience, and refused for its tenant.
    for foreign in [
        key.token(&v2(OTHER_TENANT, MALLORY, admin_role.clone())),
        key.token(&v1(OTHER_TENANT, MALLORY, admin_role.clone())),
    ] {
        for (method, path) in [("GET", "/policy"), ("GET", "/runs"), ("POST", "/reload")] {
            let request = client.request(method.parse().unwrap(), gw.admin_url(path)).bearer_auth(&foreign);
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 403, "{method} {path} with a foreign tenant's admin token");
            let body = r.text().await.unwrap();
            assert!(!body.contains("Flowgate.Admin") && !body.contains(&foreign), "{body}");
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_tenants_and_principals_narrow_a_multi_tenant_identity() {
    let fx = Fixture::new();
    let key = TestKey::rsa("k1");
    let echo = start_echo().await;
    // The identity serves every tenant (its triggers name theirs); [admin] names its own.
    let admin = format!(
        "identity = \"entra\"\ntenants = [\"{TENANT}\"]\nprincipals = [\"oid:{ALICE}\"]\n\
         token_roles = {{ viewer = [\"Flowgate.Viewer\"] }}"
    );
    let rest = format!(
        "{}{}",
        identity(""),
        trigger("t", echo, &format!("who = \"tenant_users\"\ntenants = [\"{OTHER_TENANT}\"]"))
    );
    let gw = start_gateway(&policy(&fx, &key, &admin, &rest)).await;
    let client = reqwest::Client::new();
    let viewer = json!({"roles": ["Flowgate.Viewer"]});
    let status = |token: String| {
        let request = client.get(gw.admin_url("/runs")).bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(key.token(&v2(TENANT, ALICE, viewer.clone()))).await, 200);
    // A tenant the triggers serve is not thereby an admin tenant.
    assert_eq!(status(key.token(&v2(OTHER_TENANT, ALICE, viewer.clone()))).await, 403);
    // Another principal of the admin tenant, holding the role, is not listed.
    assert_eq!(status(key.token(&v2(TENANT, MALLORY, viewer.clone()))).await, 403);
    gw.shutdown().await;

    // Without [admin] tenants, a {tenant} identity without tenants is refused at compile.
    let admin = "identity = \"entra\"\ntoken_roles = { viewer = [\"Flowgate.Viewer\"] }";
    let errors = flowgate::policy::load(&policy(&fx, &key, admin, &rest)).unwrap_err();
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        all.iter().any(|e| e.contains("admin.tenants") && e.contains("accepts tokens of every tenant")),
        "{all:#?}"
    );
}

#[tokio::test]
async fn principals_match_immutable_ids_not_names_or_clients_a_caller_can_set() {
    let fx = Fixture::new();
    let key = TestKey::rsa("k1");
    let echo = start_echo().await;
    let tenants = format!("tenants = [\"{TENANT}\"]");
    let specific = |principals: &str| format!("who = \"specific_users\"\n{tenants}\nprincipals = [{principals}]");
    let rest = format!(
        "{}{}{}{}",
        identity(""),
        trigger("named", echo, &specific("\"upn:Alice@Contoso.com\"")),
        trigger("app-only", echo, &specific(&format!("\"app:{APP}\""))),
        trigger("app-users", echo, &specific(&format!("\"users_of_app:{APP}\""))),
    );
    let gw = start_gateway(&policy(&fx, &key, "", &rest)).await;

    // upn: the user whose upn it is passes (v2 and v1 token shapes)...
    let alice_v2 = key.token(&v2(TENANT, ALICE, json!({"upn": "alice@contoso.com", "scp": "Flows.Invoke"})));
    let alice_v1 = key.token(&v1(TENANT, ALICE, json!({"upn": "alice@contoso.com", "scp": "user_impersonation"})));
    for token in [&alice_v2, &alice_v1] {
        assert_eq!(call(&fx, &gw, "/named", token).await.0, 200);
    }
    // ...a user of the same tenant carrying her address in the mutable, unverified name
    // claims does not ("nOAuth")...
    let spoof = key.token(&v2(
        TENANT,
        MALLORY,
        json!({"email": "alice@contoso.com", "preferred_username": "alice@contoso.com", "unique_name": "alice@contoso.com"}),
    ));
    let (status, record) = call(&fx, &gw, "/named", &spoof).await;
    assert_eq!((status, record["reason"].as_str()), (403, Some("principal not listed")));
    // ...nor does another tenant's user with that very upn.
    let foreign = key.token(&v2(OTHER_TENANT, MALLORY, json!({"upn": "alice@contoso.com"})));
    let (status, record) = call(&fx, &gw, "/named", &foreign).await;
    assert_eq!((status, record["reason"].as_str()), (403, Some("tenant not allowed")));

    // app: the application calling as itself (v2 idtyp, v1 appidacr without scp)...
    let app_v2 = key.token(&v2(TENANT, APP_SP, json!({"idtyp": "app", "roles": ["Flows.Invoke"]})));
    let app_v1 = key.token(&v1(TENANT, APP_SP, json!({"appidacr": "1", "roles": ["Flows.Invoke"]})));
    // ...not a user signed in through it (same client id, delegated).
    let user_v2 = key.token(&v2(TENANT, MALLORY, json!({"idtyp": "user", "scp": "Flows.Invoke"})));
    let user_v1 = key.token(&v1(TENANT, MALLORY, json!({"appidacr": "0", "scp": "user_impersonation"})));
    for (token, app_only, what) in [
        (&app_v2, true, "v2 app"),
        (&app_v1, true, "v1 app"),
        (&user_v2, false, "v2 user"),
        (&user_v1, false, "v1 user"),
    ] {
        let (status, _) = call(&fx, &gw, "/app-only", token).await;
        assert_eq!(status == 200, app_only, "app: with a {what} token gave {status}");
        let (status, _) = call(&fx, &gw, "/app-users", token).await;
        assert_eq!(status == 200, !app_only, "users_of_app: with a {what} token gave {status}");
    }
    gw.shutdown().await;
}

/// The service principal's object id in app-only tokens.
const APP_SP: &str = "6a7b8c9d-0000-4000-8000-0000000055aa";

#[tokio::test]
async fn a_b64_header_parameter_is_refused_in_crit_or_not() {
    let fx = Fixture::new();
    let key = TestKey::rsa("k1");
    let echo = start_echo().await;
    let rest =
        format!("{}{}", identity(&format!("tenants = [\"{TENANT}\"]")), trigger("t", echo, "who = \"tenant_users\""));
    let gw = start_gateway(&policy(&fx, &key, "", &rest)).await;
    let claims = v2(TENANT, ALICE, json!({})).to_string();
    // Control: the same claims with a plain header pass.
    assert_eq!(call(&fx, &gw, "/t", &key.token(&serde_json::from_str(&claims).unwrap())).await.0, 200);
    for header in [
        json!({"alg": "RS256", "kid": "k1", "b64": false}),
        json!({"alg": "RS256", "kid": "k1", "b64": true}),
        json!({"alg": "RS256", "kid": "k1", "b64": false, "crit": ["b64"]}),
    ] {
        // The payload stays base64url-encoded, so a verifier ignoring b64 would accept it.
        let token = key.sign_raw(&header.to_string(), &claims);
        let (status, record) = call(&fx, &gw, "/t", &token).await;
        assert_eq!(status, 401, "{header}");
        let reason = record["reason"].as_str().unwrap();
        assert!(reason.contains("b64"), "{header}: {reason}");
        assert!(!record.to_string().contains(&token), "the token reached the run record");
    }
    gw.shutdown().await;
}

#[test]
fn rules_a_foreign_tenant_could_satisfy_are_refused_at_compile() {
    let fx = Fixture::new();
    let key = TestKey::rsa("k1");
    let echo: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cases = [
        // A name on an identity that does not restrict tenants.
        (
            trigger("a", echo, "who = \"specific_users\"\ntenants = []\nprincipals = [\"upn:alice@contoso.com\"]"),
            "principals[0]: upn: names match only where tenants are restricted",
        ),
        // specific_users on a {tenant} identity without tenants, even with ids only.
        (
            trigger("b", echo, &format!("who = \"specific_users\"\nprincipals = [\"oid:{ALICE}\"]")),
            "tenants: who = \"specific_users\" on identity \"entra\", which accepts every tenant, needs tenants",
        ),
        // email is never a principal, whatever the tenants.
        (
            trigger(
                "c",
                echo,
                &format!(
                    "who = \"specific_users\"\ntenants = [\"{TENANT}\"]\nprincipals = [\"email:alice@contoso.com\"]"
                ),
            ),
            "principals[0]: email: is not accepted",
        ),
    ];
    for (text, needle) in cases {
        let errors = flowgate::policy::load(&policy(&fx, &key, "", &format!("{}{text}", identity("")))).unwrap_err();
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(all.iter().any(|e| e.contains(needle) && e.contains("hint:")), "missing {needle:?} in {all:#?}");
    }
}
