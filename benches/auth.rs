//! JWT verification cost: RS256 and ES256, cold (full signature check with keys parsed
//! once per rotation) and cached (a repeat caller through `KeyStores::authenticate`), and
//! rule evaluation, and certificate principal matching. Keys are generated at bench start;
//! the JWKS comes from a temp file. Beside them, the webhook path: a delivery's signature
//! verified per KiB of body (`auth/webhook_<scheme>/<KiB>`, throughput in bytes), what a
//! `who = "webhook"` call costs in place of a bearer token.
#![allow(clippy::disallowed_methods, reason = "benchmark tokens must be valid on the real clock")]

use criterion::{Criterion, criterion_group, criterion_main};
use flowgate::auth::key_set::KeySet;
use flowgate::auth::token::{IssuerPattern, TokenRules, verify};
use flowgate::auth::{Claims, KeyStores, compile_access, compile_identities};
use flowgate::config::{Diagnostics, KeyPath, SourceFile};
use flowgate::policy::RawTrigger;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

fn key(alg: Algorithm, kid: &str) -> (EncodingKey, Jwk) {
    let encoding = if alg == Algorithm::RS256 {
        let pair = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
        EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).unwrap()
    } else {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap()
    };
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk.common.key_algorithm = Some(KeyAlgorithm::from(alg));
    (encoding, jwk)
}

fn token(encoding: &EncodingKey, alg: Algorithm, kid: &str, now: u64) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let claims = json!({
        "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        "aud": "api://flowgate", "exp": now + 3600, "nbf": now - 5, "iat": now - 5,
        "tid": TENANT, "oid": "5e1f3c2a-0000-4000-8000-00000000aa01", "azp": "app-1",
        "roles": ["Flows.Invoke"], "scp": "user_impersonation", "ver": "2.0"
    });
    jsonwebtoken::encode(&header, &claims, encoding).unwrap()
}

fn bench(c: &mut Criterion) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (rsa, rsa_jwk) = key(Algorithm::RS256, "rsa");
    let (ec, ec_jwk) = key(Algorithm::ES256, "ec");
    let set = JwkSet { keys: vec![rsa_jwk, ec_jwk] };
    let keys = KeySet::from_jwks(&set, None);
    let rules = TokenRules {
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        issuers: vec![IssuerPattern::parse("https://login.microsoftonline.com/{tenant}/v2.0").unwrap()],
        audiences: vec!["api://flowgate".into()],
        leeway: 60,
        max_lifetime: 24 * 3600,
        max_token_bytes: 16 * 1024,
    };
    let rs_token = token(&rsa, Algorithm::RS256, "rsa", now);
    let es_token = token(&ec, Algorithm::ES256, "ec", now);

    c.bench_function("auth/verify_rs256_cold", |b| {
        b.iter(|| verify(black_box(&rs_token), &rules, &keys, now).unwrap());
    });
    c.bench_function("auth/verify_es256_cold", |b| {
        b.iter(|| verify(black_box(&es_token), &rules, &keys, now).unwrap());
    });

    // Cached: the whole authenticate path with a repeat token.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), serde_json::to_vec(&set).unwrap()).unwrap();
    let identity_toml = format!(
        "[bench]\njwks_file = \"jwks.json\"\nissuer = \"https://login.microsoftonline.com/{{tenant}}/v2.0\"\naudiences = [\"api://flowgate\"]\ntenants = [\"{TENANT}\"]\nalgorithms = [\"RS256\", \"ES256\"]\n"
    );
    let raw: BTreeMap<String, flowgate::auth::RawIdentity> = toml::from_str(&identity_toml).unwrap();
    let source = SourceFile { name: "bench.toml".into(), base_dir: dir.path().to_path_buf(), text: String::new() };
    let mut diags = Diagnostics::default();
    let ids = compile_identities(&raw, &KeyPath::root(), &source, &mut diags);
    assert!(diags.is_empty());
    let trigger: RawTrigger = toml::from_str(
        "name = \"t\"\npath = \"/t\"\nupstream = \"https://u/\"\nwho = \"specific_users\"\nidentity = \"bench\"\nprincipals = [\"upn:a@b\", \"app:other\", \"users_of_app:app-1\"]\nroles = { any_of = [\"Flows.Invoke\"] }\n",
    )
    .unwrap();
    let access = compile_access(&trigger, &KeyPath::root(), &ids, None, &mut diags);
    assert!(diags.is_empty());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stores = KeyStores::new();
    for (name, token) in [("rs256", &rs_token), ("es256", &es_token)] {
        let parts = http::Request::builder()
            .method("POST")
            .uri("/t")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        runtime.block_on(stores.authenticate(&access, &parts)).unwrap();
        c.bench_function(&format!("auth/authenticate_{name}_cached"), |b| {
            b.iter(|| runtime.block_on(stores.authenticate(&access, black_box(&parts))).unwrap());
        });
    }

    let serde_json::Value::Object(map) = json!({
        "iss": "x", "aud": "api://flowgate", "exp": now + 60, "tid": TENANT,
        "azp": "app-1", "roles": ["Flows.Invoke"], "scp": "a b"
    }) else {
        unreachable!()
    };
    let claims = Claims::from_map(map).unwrap();
    c.bench_function("auth/rules_evaluate", |b| b.iter(|| access.evaluate(black_box(&claims)).unwrap()));

    // Certificate principals: hash lookups, so 10,000 listed cost what 1 does.
    for listed in [1_usize, 10_000] {
        let mut principals = flowgate::auth::certificate::CertPrincipals::default();
        for i in 0..listed {
            principals.add(&format!("sha256:{:064x}", i + 1)).unwrap();
            principals.add(&format!("subject:CN=caller-{i},O=Contoso")).unwrap();
            principals.add(&format!("san-uri:spiffe://contoso/caller-{i}")).unwrap();
        }
        let stranger = flowgate::tls::peer::ClientCertificate {
            sha256: [0xee; 32],
            subject: "CN=stranger,O=Contoso".into(),
            san_uris: vec!["spiffe://contoso/stranger".into()],
            san_dns: vec!["stranger.contoso.example".into()],
        };
        c.bench_function(&format!("auth/cert_principals_miss_{listed}"), |b| {
            b.iter(|| assert!(!principals.matches(black_box(&stranger))));
        });
    }
}

/// Webhook signature verification over bodies of 1, 16 and 256 KiB, two secrets configured
/// (a rotation) and the delivery signed with the second, so both are tried.
fn webhook(c: &mut Criterion) {
    use flowgate::secrets::SecretValue;
    use flowgate::webhook::{Delivery, Scheme, sign::sign};
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap();
    let mut group = c.benchmark_group("auth/webhook");
    for (scheme, current, previous) in [
        (Scheme::Github, "github-current-secret", "github-previous-secret"),
        (Scheme::Standard, "whsec_Y3VycmVudC1zZWNyZXQtYnl0ZXM=", "whsec_cHJldmlvdXMtc2VjcmV0LWJ5dGVz"),
        (Scheme::Stripe, "whsec_current", "whsec_previous"),
    ] {
        let secrets = [SecretValue::new(current.to_owned()), SecretValue::new(previous.to_owned())];
        for kib in [1usize, 16, 256] {
            let body = vec![b'a'; kib * 1024];
            let mut headers = http::HeaderMap::new();
            for (name, value) in sign(&scheme, previous, &body, now, "msg_bench").unwrap() {
                headers.insert(http::HeaderName::try_from(name).unwrap(), value.parse().unwrap());
            }
            let delivery = Delivery { headers: &headers, body: &body, query: None };
            assert!(scheme.verify(&delivery, &secrets, now, 300).is_ok());
            group.throughput(criterion::Throughput::Bytes(body.len() as u64));
            group.bench_function(format!("{}/{kib}KiB", scheme.name()), |b| {
                b.iter(|| scheme.verify(black_box(&delivery), &secrets, now, 300).unwrap());
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench, webhook);
criterion_main!(benches);
