//! The demo's development issuer end to end: key generated on first run, discovery and
//! JWKS served on 127.0.0.1:0, default minted token accepted by a trigger trusting the
//! issuer through its `identity_toml`, and `--expires-in -120` giving an expired token.

use clap::Parser;
use flowgate::auth::dev_issuer::{DevIssuer, MintOptions};
use flowgate::auth::{AuthError, KeyStores, TokenError, compile_access, compile_identities};
use flowgate::config::{Diagnostics, KeyPath, SourceFile};
use flowgate::policy::RawTrigger;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Parser)]
struct TokenCommand {
    #[command(flatten)]
    opts: MintOptions,
}

fn request(token: &str) -> http::request::Parts {
    http::Request::builder()
        .method("POST")
        .uri("/demo")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
        .into_parts()
        .0
}

#[tokio::test]
async fn demo_issuer_tokens_are_accepted_by_the_demo_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer_url = format!("http://{}", listener.local_addr().unwrap());
    let issuer = Arc::new(DevIssuer::load_or_create(dir.path(), &issuer_url).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Arc::clone(&issuer).serve(listener, async move {
        let _ = stop_rx.await;
    }));

    let raw: BTreeMap<String, flowgate::auth::RawIdentity> =
        toml::from_str(&issuer.identity_toml("demo").replace("[identity.demo]", "[demo]")).unwrap();
    let source = SourceFile { name: "demo.toml".into(), base_dir: dir.path().to_path_buf(), text: String::new() };
    let mut diags = Diagnostics::default();
    let ids = compile_identities(&raw, &KeyPath::root().key("identity"), &source, &mut diags);
    let trigger: RawTrigger = toml::from_str(
        "name = \"demo\"\npath = \"/demo\"\nupstream = \"http://127.0.0.1:1/\"\nwho = \"tenant_users\"\nidentity = \"demo\"\nroles = { any_of = [\"Flows.Invoke\"] }\n",
    )
    .unwrap();
    let access = compile_access(&trigger, &KeyPath::root().key("trigger").index(0), &ids, None, &mut diags);
    assert!(diags.is_empty(), "{:?}", diags.into_vec());

    let stores = KeyStores::new();
    let default = TokenCommand::parse_from(["token"]).opts;
    let caller = stores.authenticate(&access, &request(&issuer.mint(&default).unwrap())).await.unwrap();
    assert_eq!(caller.tenant.as_deref(), Some(flowgate::auth::dev_issuer::DEMO_TENANT));
    assert_eq!(caller.roles, vec!["Flows.Invoke".to_owned()]);

    let expired = TokenCommand::parse_from(["token", "--expires-in", "-120"]).opts;
    assert_eq!(expired.expires_in, -120);
    let err = stores.authenticate(&access, &request(&issuer.mint(&expired).unwrap())).await.unwrap_err();
    assert_eq!(err, AuthError::InvalidToken(TokenError::Expired));

    let no_role = TokenCommand::parse_from(["token", "--roles", "", "--scopes", "a,b"]).opts;
    let err = stores.authenticate(&access, &request(&issuer.mint(&no_role).unwrap())).await.unwrap_err();
    assert_eq!(err, AuthError::Role);

    // A second run reuses the key: tokens from before stay valid.
    let again = DevIssuer::load_or_create(dir.path(), &issuer_url).unwrap();
    stores.authenticate(&access, &request(&again.mint(&MintOptions::default()).unwrap())).await.unwrap();

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
