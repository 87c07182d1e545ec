//! Against a real OIDC provider from npm (oauth2-mock-server, `scripts/oidc/`), started by
//! the test on loopback: discovery, JWKS, client-credentials tokens with custom claims,
//! key rotation while the key stores run, and the IdP down at start and during operation.

use crate::common::auth as fixtures;

use fixtures::{ManualClock, request, unix_now};
use flowgate::auth::{AuthError, Identity, KeyStores, TokenError, TriggerAccess, compile_access, compile_identities};
use flowgate::config::{Diagnostics, KeyPath, SourceFile};
use flowgate::policy::RawTrigger;
use http::StatusCode;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OID: &str = "5e1f3c2a-0000-4000-8000-00000000aa01";
const APP: &str = "6a7b8c9d-0000-4000-8000-00000000bb02";

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/oidc")
}

/// The npm provider as a child process (killed on drop).
struct Provider {
    child: tokio::process::Child,
}

impl Provider {
    async fn start(port: u16, state: &Path, kid: &str) -> Self {
        let dir = oidc_dir();
        assert!(
            dir.join("node_modules/oauth2-mock-server").is_dir(),
            "the npm OIDC provider is not installed: run scripts/deps/oidc.sh"
        );
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("server.mjs"))
            .args(["--port", &port.to_string(), "--kid", kid, "--tenant", TENANT, "--state"])
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node is not installed: run scripts/deps/oidc.sh");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next_line().await.unwrap().expect("the OIDC provider exited before listening");
        assert!(line.starts_with("listening"), "unexpected provider output: {line}");
        Self { child }
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Env {
    port: u16,
    state: tempfile::TempDir,
    clock: Arc<ManualClock>,
    stores: KeyStores,
    ids: BTreeMap<String, Arc<Identity>>,
}

fn env() -> Env {
    let port = free_port();
    let text = format!(
        r#"[mock]
discovery = "http://127.0.0.1:{port}/.well-known/openid-configuration"
issuer = "http://127.0.0.1:{port}"
audiences = ["api://flowgate"]
tenants = ["{TENANT}"]
allow_insecure_http = true
refresh_max = "1h"
max_key_age = "2h"
"#
    );
    let raw: BTreeMap<String, flowgate::auth::RawIdentity> = toml::from_str(&text).unwrap();
    let source = SourceFile { name: "t.toml".into(), base_dir: std::env::temp_dir(), text: String::new() };
    let mut diags = Diagnostics::default();
    let ids = compile_identities(&raw, &KeyPath::root().key("identity"), &source, &mut diags);
    assert!(diags.is_empty(), "{:?}", diags.into_vec());
    let clock = ManualClock::at(unix_now());
    Env { port, state: tempfile::tempdir().unwrap(), stores: KeyStores::with_clock(clock.clone()), clock, ids }
}

fn access(env: &Env, extra: &str) -> TriggerAccess {
    let text = format!("name = \"t\"\npath = \"/t\"\nupstream = \"https://u.example/\"\nidentity = \"mock\"\n{extra}");
    let trigger: RawTrigger = toml::from_str(&text).unwrap();
    let mut diags = Diagnostics::default();
    let access = compile_access(&trigger, &KeyPath::root().key("trigger").index(0), &env.ids, None, &mut diags);
    assert!(diags.is_empty(), "{:?}", diags.into_vec());
    access
}

/// A client-credentials token from the provider, with Entra-style custom claims.
async fn client_token(port: u16) -> String {
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("aud", "api://flowgate"),
            ("oid", OID),
            ("roles", "Flows.Invoke,Flows.Read"),
        ])
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    response["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn discovery_jwks_and_client_credentials_with_custom_claims() {
    let env = env();
    let provider = Provider::start(env.port, env.state.path(), "k1").await;
    let token = client_token(env.port).await;
    let specific = access(
        &env,
        &format!(
            "who = \"specific_users\"\nprincipals = [\"app:{APP}\"]\nroles = {{ all_of = [\"Flows.Invoke\"] }}\nclaims = {{ idtyp = \"app\" }}\n"
        ),
    );
    let caller = env.stores.authenticate(&specific, &request("/t", Some(&token))).await.unwrap();
    assert_eq!(caller.tenant.as_deref(), Some(TENANT));
    assert_eq!(caller.principal, format!("oid:{OID}"));
    assert_eq!(caller.app_id.as_deref(), Some(APP));
    assert_eq!(caller.roles, vec!["Flows.Invoke".to_owned(), "Flows.Read".to_owned()]);
    let admin_only = access(&env, "who = \"tenant_users\"\nroles = { any_of = [\"Flows.Admin\"] }\n");
    let err = env.stores.authenticate(&admin_only, &request("/t", Some(&token))).await.unwrap_err();
    assert_eq!(flowgate::refusal::auth(err, "flowgate").kind(), "insufficient_scope");
    // Background refresh tasks start per key source and stop when no identity uses them.
    env.stores.start_refresh(env.ids.values());
    assert_eq!(env.stores.store_count(), 1);
    env.stores.start_refresh(std::iter::empty());
    assert_eq!(env.stores.store_count(), 0);
    provider.stop().await;
}

#[tokio::test]
async fn key_rotation_while_running() {
    let env = env();
    let tenant_users = access(&env, "who = \"tenant_users\"\n");
    let provider = Provider::start(env.port, env.state.path(), "k1").await;
    let old_token = client_token(env.port).await;
    env.stores.authenticate(&tenant_users, &request("/t", Some(&old_token))).await.unwrap();
    // The IdP rotates: k1 is retired and k2 signs (provider restarted on the same port).
    provider.stop().await;
    let provider = Provider::start(env.port, env.state.path(), "k2").await;
    let new_token = client_token(env.port).await;
    // The unknown kid triggers one refetch once the interval has passed: accepted without
    // restarting anything.
    env.clock.advance(31);
    let caller = env.stores.authenticate(&tenant_users, &request("/t", Some(&new_token))).await.unwrap();
    assert_eq!(caller.app_id.as_deref(), Some(APP));
    // The retired key's token (verified and cached before) is refused after the refresh.
    let err = env.stores.authenticate(&tenant_users, &request("/t", Some(&old_token))).await.unwrap_err();
    assert_eq!(err, AuthError::InvalidToken(TokenError::UnknownKid));
    provider.stop().await;
}

#[tokio::test]
async fn idp_down_at_start_then_during_operation() {
    let env = env();
    let tenant_users = access(&env, "who = \"tenant_users\"\n");
    // Down at start: 503 (our fault), not 401.
    let err = env
        .stores
        .authenticate(&tenant_users, &request("/t", Some("eyJhbGciOiJSUzI1NiJ9.e30.AAAA")))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::KeysUnavailable(_)), "{err:?}");
    assert_eq!(flowgate::refusal::auth(err, "flowgate").status(), StatusCode::SERVICE_UNAVAILABLE);
    // The IdP comes up: after the refetch interval the keys are fetched on demand.
    let provider = Provider::start(env.port, env.state.path(), "k1").await;
    let token = client_token(env.port).await;
    env.clock.advance(31);
    env.stores.authenticate(&tenant_users, &request("/t", Some(&token))).await.unwrap();
    // Down during operation: the last good keys serve up to max_key_age (2h)…
    provider.stop().await;
    assert!(env.stores.refresh_identity(&env.ids["mock"]).await.is_err());
    env.clock.advance(3600);
    env.stores.authenticate(&tenant_users, &request("/t", Some(&token))).await.unwrap();
    // …then every call fails with 503.
    env.clock.advance(3601);
    let err = env.stores.authenticate(&tenant_users, &request("/t", Some(&token))).await.unwrap_err();
    assert!(matches!(err, AuthError::KeysUnavailable(_)), "{err:?}");
    assert_eq!(flowgate::refusal::auth(err, "flowgate").status(), StatusCode::SERVICE_UNAVAILABLE);
}
