//! Every way a token is refused (forged, expired, foreign, malformed), against keys generated at test time and a JWKS served
//! over a real socket on 127.0.0.1:0; plus Entra v1/v2 accepts, the verified-token cache,
//! key rotation and the IdP being down (with a manual clock, no timing assertions).

use crate::common::auth as fixtures;

use fixtures::{JwksServer, ManualClock, TestKey, b64, jwks, request, unix_now};
use flowgate::auth::{
    AuthError, Identity, KeyStores, SignedUrlKeys, SignedUrlParams, TokenError, TriggerAccess, compile_access,
    compile_identities,
};
use flowgate::config::{Diagnostics, KeyPath, SourceFile};
use flowgate::policy::RawTrigger;
use http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER_TENANT: &str = "0a0b0c0d-1111-4222-8333-444455556666";
const OID: &str = "5e1f3c2a-0000-4000-8000-00000000aa01";
const APP: &str = "6a7b8c9d-0000-4000-8000-00000000bb02";

struct Env {
    server: JwksServer,
    clock: Arc<ManualClock>,
    stores: KeyStores,
    rsa: TestKey,
    ec: TestKey,
    ids: BTreeMap<String, Arc<Identity>>,
    now: u64,
}

async fn env() -> Env {
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::ec("ec-1");
    let server = JwksServer::start(jwks(&[&rsa, &ec])).await;
    let now = unix_now();
    let clock = ManualClock::at(now);
    let stores = KeyStores::with_clock(clock.clone());
    let text = format!(
        r#"[entra]
jwks_uri = "{}"
allow_insecure_http = true
issuers = ["https://login.microsoftonline.com/{{tenant}}/v2.0", "https://sts.windows.net/{{tenant}}/"]
audiences = ["api://flowgate"]
tenants = ["{TENANT}"]
algorithms = ["RS256", "ES256"]
refresh_max = "1h"
max_key_age = "2h"
unknown_kid_refetch_interval = "30s"
max_token_bytes = 4096
"#,
        server.url()
    );
    let raw: BTreeMap<String, flowgate::auth::RawIdentity> = toml::from_str(&text).unwrap();
    let source = SourceFile { name: "t.toml".into(), base_dir: std::env::temp_dir(), text: String::new() };
    let mut diags = Diagnostics::default();
    let ids = compile_identities(&raw, &KeyPath::root().key("identity"), &source, &mut diags);
    assert!(diags.is_empty(), "{:?}", diags.into_vec());
    Env { server, clock, stores, rsa, ec, ids, now }
}

fn access(env: &Env, extra: &str) -> TriggerAccess {
    access_with(env, extra, None)
}

fn access_with(env: &Env, extra: &str, signed: Option<&SignedUrlKeys>) -> TriggerAccess {
    let text = format!("name = \"t\"\npath = \"/t\"\nupstream = \"https://u.example/\"\n{extra}");
    let trigger: RawTrigger = toml::from_str(&text).unwrap();
    let mut diags = Diagnostics::default();
    let access = compile_access(&trigger, &KeyPath::root().key("trigger").index(0), &env.ids, signed, &mut diags);
    assert!(diags.is_empty(), "{:?}", diags.into_vec());
    access
}

fn v2_claims(env: &Env) -> Value {
    json!({
        "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        "aud": "api://flowgate",
        "exp": env.now + 600,
        "nbf": env.now - 10,
        "iat": env.now - 10,
        "tid": TENANT,
        "oid": OID,
        "sub": "subject-1",
        "azp": APP,
        "preferred_username": "alice@contoso.com",
        "roles": ["Flows.Invoke"],
        "ver": "2.0"
    })
}

async fn judge(
    env: &Env,
    access: &TriggerAccess,
    token: &str,
) -> Result<std::sync::Arc<flowgate::auth::Caller>, AuthError> {
    env.stores.authenticate(access, &request("/t", Some(token))).await
}

async fn expect_invalid(env: &Env, token: &str, want: TokenError) {
    let access = access(env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    let err = judge(env, &access, token).await.unwrap_err();
    assert_eq!(err, AuthError::InvalidToken(want));
    let rejection = flowgate::refusal::auth(err, access.realm());
    assert_eq!(rejection.status(), StatusCode::UNAUTHORIZED);
    let response = rejection.response("req");
    let challenge = response.headers()[http::header::WWW_AUTHENTICATE].to_str().unwrap();
    assert_eq!(challenge, "Bearer realm=\"flowgate\", error=\"invalid_token\"");
    assert!(!rejection.reason().contains(token), "the audit reason must never carry the token");
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

#[tokio::test]
async fn accepts_entra_v2_token() {
    let env = env().await;
    let access =
        access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\nroles = { any_of = [\"Flows.Invoke\"] }\n");
    let caller = judge(&env, &access, &env.rsa.token(&v2_claims(&env))).await.unwrap();
    assert_eq!(caller.tenant.as_deref(), Some(TENANT));
    assert_eq!(caller.principal, format!("oid:{OID}"));
    assert_eq!(caller.app_id.as_deref(), Some(APP));
    assert!(caller.principal_ids.contains(&"upn:alice@contoso.com".to_owned()));
}

#[tokio::test]
async fn accepts_entra_v1_token_with_es256() {
    let env = env().await;
    let access = access(
        &env,
        "who = \"specific_users\"\nidentity = \"entra\"\nprincipals = [\"upn:Bob@Contoso.com\"]\nscopes = { all_of = [\"user_impersonation\"] }\n",
    );
    let claims = json!({
        "iss": format!("https://sts.windows.net/{TENANT}/"),
        "aud": "api://flowgate",
        "exp": env.now + 600,
        "iat": env.now,
        "tid": TENANT,
        "oid": OID,
        "appid": APP,
        "upn": "bob@contoso.com",
        "unique_name": "bob@contoso.com",
        "scp": "user_impersonation",
        "ver": "1.0"
    });
    let caller = judge(&env, &access, &env.ec.token(&claims)).await.unwrap();
    assert_eq!(caller.app_id.as_deref(), Some(APP));
    assert_eq!(caller.scopes, vec!["user_impersonation".to_owned()]);
}

#[tokio::test]
async fn refuses_alg_none_in_any_casing() {
    let env = env().await;
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "kid": "rsa-1"}).to_string();
        let token = format!("{}.{}.", b64(header), b64(v2_claims(&env).to_string()));
        // An empty signature part is malformed before alg is even read; with one byte the
        // alg check itself must refuse.
        expect_invalid(&env, &format!("{token}AA"), TokenError::AlgNone).await;
    }
}

#[tokio::test]
async fn refuses_hs256_signed_with_the_rsa_public_key() {
    let env = env().await;
    let hmac_key = jsonwebtoken::EncodingKey::from_secret(env.rsa.public_pem.as_bytes());
    let header = json!({"alg": "HS256", "kid": "rsa-1"}).to_string();
    let input = format!("{}.{}", b64(header), b64(v2_claims(&env).to_string()));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &hmac_key, jsonwebtoken::Algorithm::HS256).unwrap();
    expect_invalid(&env, &format!("{input}.{sig}"), TokenError::AlgNotAllowed("HS256".into())).await;
}

#[tokio::test]
async fn refuses_es256_with_all_zero_signature() {
    let env = env().await;
    let header = json!({"alg": "ES256", "kid": "ec-1"}).to_string();
    let token = format!("{}.{}.{}", b64(header), b64(v2_claims(&env).to_string()), b64([0u8; 64]));
    expect_invalid(&env, &token, TokenError::Signature).await;
}

#[tokio::test]
async fn refuses_rs256_token_presented_as_es256_key() {
    let env = env().await;
    // A valid RSA signature but the header points at the EC key.
    let header = json!({"alg": "RS256", "kid": "ec-1"}).to_string();
    let token = env.rsa.sign_raw(&header, &v2_claims(&env).to_string());
    expect_invalid(&env, &token, TokenError::KeyMismatch).await;
}

#[tokio::test]
async fn refuses_kid_with_path_traversal_and_limits_refetches() {
    let env = env().await;
    let access = access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    // Warm the keys with a good token.
    judge(&env, &access, &env.rsa.token(&v2_claims(&env))).await.unwrap();
    let hits_before = env.server.hits();
    for i in 0..5 {
        let header = json!({"alg": "RS256", "kid": format!("../../../etc/passwd{i}")}).to_string();
        let token = env.rsa.sign_raw(&header, &v2_claims(&env).to_string());
        expect_invalid(&env, &token, TokenError::UnknownKid).await;
    }
    assert!(env.server.hits() - hits_before <= 1, "unknown kids must cause at most one refetch per interval");
}

#[tokio::test]
async fn refuses_embedded_key_headers() {
    let env = env().await;
    for (name, value) in [
        ("jku", json!("https://evil.example/jwks")),
        ("x5u", json!("https://evil.example/cert")),
        ("jwk", serde_json::to_value(&env.rsa.jwk).unwrap()),
        ("x5c", json!(["MIIB"])),
    ] {
        let mut header = json!({"alg": "RS256", "kid": "rsa-1"});
        header[name] = value;
        let token = env.rsa.sign_raw(&header.to_string(), &v2_claims(&env).to_string());
        let want = TokenError::EmbeddedKey(match name {
            "jku" => "jku",
            "x5u" => "x5u",
            "jwk" => "jwk",
            _ => "x5c",
        });
        expect_invalid(&env, &token, want).await;
    }
}

#[tokio::test]
async fn refuses_unknown_crit() {
    let env = env().await;
    let header =
        json!({"alg": "RS256", "kid": "rsa-1", "crit": ["http://example.com/ext"], "http://example.com/ext": true});
    let token = env.rsa.sign_raw(&header.to_string(), &v2_claims(&env).to_string());
    expect_invalid(&env, &token, TokenError::UnknownCrit).await;
}

#[tokio::test]
async fn refuses_expired() {
    let env = env().await;
    let claims = with(v2_claims(&env), "exp", json!(env.now - 120));
    expect_invalid(&env, &env.rsa.token(&claims), TokenError::Expired).await;
}

/// A validly signed token with `exp` = 2^63 was accepted as never expiring: refused as
/// longer-lived than the identity's `max_token_lifetime` (default 24h), also when `iat`
/// is absent.
#[tokio::test]
async fn refuses_tokens_that_practically_never_expire() {
    let env = env().await;
    let forever = with(v2_claims(&env), "exp", json!(1u64 << 63));
    expect_invalid(&env, &env.rsa.token(&forever), TokenError::LifetimeTooLong).await;
    let mut no_iat = with(v2_claims(&env), "exp", json!(env.now + 48 * 3600));
    no_iat.as_object_mut().unwrap().remove("iat");
    expect_invalid(&env, &env.rsa.token(&no_iat), TokenError::LifetimeTooLong).await;
    let day = with(v2_claims(&env), "exp", json!(env.now + 23 * 3600));
    let access = access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    assert!(judge(&env, &access, &env.rsa.token(&day)).await.is_ok(), "23 h is within the default");
}

#[tokio::test]
async fn refuses_nbf_in_the_future() {
    let env = env().await;
    let claims = with(v2_claims(&env), "nbf", json!(env.now + 300));
    expect_invalid(&env, &env.rsa.token(&claims), TokenError::NotYetValid).await;
}

#[tokio::test]
async fn refuses_wrong_issuer() {
    let env = env().await;
    let claims = with(v2_claims(&env), "iss", json!("https://evil.example/"));
    expect_invalid(&env, &env.rsa.token(&claims), TokenError::Issuer).await;
}

#[tokio::test]
async fn refuses_wrong_audience() {
    let env = env().await;
    let claims = with(v2_claims(&env), "aud", json!(["api://other", "api://another"]));
    expect_invalid(&env, &env.rsa.token(&claims), TokenError::Audience).await;
}

#[tokio::test]
async fn refuses_tenant_not_allowed_with_403() {
    let env = env().await;
    let mut claims = with(v2_claims(&env), "tid", json!(OTHER_TENANT));
    claims["iss"] = json!(format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"));
    let access = access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    let err = judge(&env, &access, &env.rsa.token(&claims)).await.unwrap_err();
    assert_eq!(err, AuthError::Tenant);
    assert_eq!(flowgate::refusal::auth(err, "flowgate").status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn refuses_tid_not_matching_issuer_tenant() {
    let env = env().await;
    let claims = with(v2_claims(&env), "iss", json!(format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0")));
    expect_invalid(&env, &env.rsa.token(&claims), TokenError::IssuerTenant).await;
}

#[tokio::test]
async fn refuses_wrong_claim_types() {
    let env = env().await;
    let exp_string = with(v2_claims(&env), "exp", json!((env.now + 600).to_string()));
    expect_invalid(&env, &env.rsa.token(&exp_string), TokenError::ClaimType("exp")).await;
    let roles_string = with(v2_claims(&env), "roles", json!("Flows.Invoke"));
    expect_invalid(&env, &env.rsa.token(&roles_string), TokenError::ClaimType("roles")).await;
    let tid_number = with(v2_claims(&env), "tid", json!(7));
    expect_invalid(&env, &env.rsa.token(&tid_number), TokenError::ClaimType("tid")).await;
}

#[tokio::test]
async fn refuses_duplicate_json_keys() {
    let env = env().await;
    let claims = v2_claims(&env).to_string();
    // Append a second "aud": serde_json alone would keep the last one silently.
    let payload = format!("{},\"aud\":\"api://flowgate\"}}", &claims[..claims.len() - 1]);
    let token = env.rsa.sign_raw(&json!({"alg": "RS256", "kid": "rsa-1"}).to_string(), &payload);
    let access = access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    let err = judge(&env, &access, &token).await.unwrap_err();
    assert!(matches!(err, AuthError::InvalidToken(TokenError::Json { part: "payload", .. })), "{err:?}");
    let header = r#"{"alg":"RS256","kid":"rsa-1","kid":"ec-1"}"#;
    let token = env.rsa.sign_raw(header, &v2_claims(&env).to_string());
    let err = judge(&env, &access, &token).await.unwrap_err();
    assert!(matches!(err, AuthError::InvalidToken(TokenError::Json { part: "header", .. })), "{err:?}");
}

#[tokio::test]
async fn refuses_malformed_base64() {
    let env = env().await;
    let header = b64(json!({"alg": "RS256", "kid": "rsa-1"}).to_string());
    // Standard (not url-safe) alphabet and padding in the payload, correctly signed.
    let payload = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v2_claims(&env).to_string() + " ");
    let token = env.rsa.sign_input(&format!("{header}.{payload}"));
    expect_invalid(&env, &token, TokenError::Base64 { part: "payload" }).await;
    let good = env.rsa.token(&v2_claims(&env));
    expect_invalid(&env, &format!("{good}="), TokenError::Base64 { part: "signature" }).await;
}

#[tokio::test]
async fn refuses_oversized_token_before_parsing() {
    let env = env().await;
    let token = format!("{}.{}.{}", "A".repeat(3000), "B".repeat(3000), "C");
    expect_invalid(&env, &token, TokenError::Oversized { limit: 4096 }).await;
}

#[tokio::test]
async fn refuses_token_in_query_string() {
    let env = env().await;
    let access = access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    let token = env.rsa.token(&v2_claims(&env));
    let uri = format!("/t?access_token={token}");
    assert!(flowgate::auth::query_has_token(&uri.parse().unwrap()));
    let err = env.stores.authenticate(&access, &request(&uri, Some(&token))).await.unwrap_err();
    assert_eq!(err, AuthError::TokenInQuery);
    let rejection = flowgate::refusal::auth(err, access.realm());
    assert_eq!(rejection.status(), StatusCode::UNAUTHORIZED);
    assert!(!rejection.reason().contains(&token));
}

#[tokio::test]
async fn refuses_everyone_when_principal_list_is_empty() {
    let env = env().await;
    let access = access(&env, "who = \"specific_users\"\nidentity = \"entra\"\nprincipals = []\n");
    let err = judge(&env, &access, &env.rsa.token(&v2_claims(&env))).await.unwrap_err();
    assert_eq!(err, AuthError::Principal);
    assert_eq!(flowgate::refusal::auth(err, "flowgate").status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn missing_token_is_401_without_error_code() {
    let env = env().await;
    let access = access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    let err = env.stores.authenticate(&access, &request("/t", None)).await.unwrap_err();
    let response = flowgate::refusal::auth(err, access.realm()).response("r");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[http::header::WWW_AUTHENTICATE], "Bearer realm=\"flowgate\"");
}

#[tokio::test]
async fn cache_skips_verification_and_rotation_drops_it() {
    let env = env().await;
    let access = access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    let token = env.rsa.token(&v2_claims(&env));
    judge(&env, &access, &token).await.unwrap();
    assert_eq!(env.stores.cached_tokens(), 1);
    judge(&env, &access, &token).await.unwrap();
    assert_eq!(env.stores.cached_tokens(), 1);
    // Rotate: the IdP now publishes only a new RSA key.
    let new_key = TestKey::rsa("rsa-2");
    env.server.set_body(jwks(&[&new_key]));
    env.stores.refresh_identity(&env.ids["entra"]).await.unwrap();
    let err = judge(&env, &access, &token).await.unwrap_err();
    assert_eq!(err, AuthError::InvalidToken(TokenError::UnknownKid));
    judge(&env, &access, &new_key.token(&v2_claims(&env))).await.unwrap();
}

#[tokio::test]
async fn cached_token_does_not_outlive_exp() {
    let env = env().await;
    let access = access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    let claims = with(v2_claims(&env), "exp", json!(env.now + 30));
    let token = env.rsa.token(&claims);
    judge(&env, &access, &token).await.unwrap();
    env.clock.advance(31);
    // Within leeway for a fresh verification, but the cache entry itself is dead; the
    // fresh verification applies the leeway.
    judge(&env, &access, &token).await.unwrap();
    env.clock.advance(60);
    assert_eq!(judge(&env, &access, &token).await.unwrap_err(), AuthError::InvalidToken(TokenError::Expired));
}

/// The cache finds an entry by the token's last bytes (its signature's), but a hit needs
/// the whole token: a cached token's signature on another payload (another caller, a later
/// `exp`) is judged afresh and refused, never answered with the cached caller.
#[tokio::test]
async fn a_cached_signature_on_another_payload_is_refused() {
    let env = env().await;
    let access = access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    let token = env.rsa.token(&v2_claims(&env));
    let cached = judge(&env, &access, &token).await.unwrap();
    assert_eq!(env.stores.cached_tokens(), 1);
    let (head, rest) = token.split_once('.').unwrap();
    let signature = rest.rsplit_once('.').unwrap().1;
    let other = with(v2_claims(&env), "oid", json!("00000000-0000-0000-0000-00000000beef"));
    let forged = format!("{head}.{}.{signature}", b64(serde_json::to_vec(&other).unwrap()));
    assert_eq!(judge(&env, &access, &forged).await.unwrap_err(), AuthError::InvalidToken(TokenError::Signature));
    // The genuine token still hits its entry.
    assert_eq!(judge(&env, &access, &token).await.unwrap(), cached);
    assert_eq!(env.stores.cached_tokens(), 1);
}

/// Only a cached token's exact bytes skip the byte check of the credential's shape: the
/// same token with a byte added anywhere, or cut short, is a new credential, judged and
/// refused as any other.
#[tokio::test]
async fn a_cached_token_changed_by_a_byte_is_judged_afresh() {
    let env = env().await;
    let access = access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    let token = env.rsa.token(&v2_claims(&env));
    let cached = judge(&env, &access, &token).await.unwrap();
    for changed in [format!("{token}!"), format!("{token} x"), format!("*{token}"), format!("{token},{token}")] {
        let refused = judge(&env, &access, &changed).await.unwrap_err();
        assert_eq!(refused, AuthError::BadAuthorization("not a token"), "{changed:?}");
    }
    let cut = &token[..token.len() - 1];
    assert!(matches!(judge(&env, &access, cut).await, Err(AuthError::InvalidToken(_))));
    assert_eq!(judge(&env, &access, &token).await.unwrap(), cached);
    assert_eq!(env.stores.cached_tokens(), 1);
}

#[tokio::test]
async fn idp_down_at_start_is_503() {
    let env = env().await;
    env.server.set_up(false);
    let access = access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    let err = judge(&env, &access, &env.rsa.token(&v2_claims(&env))).await.unwrap_err();
    assert!(matches!(err, AuthError::KeysUnavailable(_)), "{err:?}");
    let rejection = flowgate::refusal::auth(err, access.realm());
    assert_eq!(rejection.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(rejection.reason().contains("status 500"), "{}", rejection.reason());
}

#[tokio::test]
async fn idp_down_later_serves_last_good_keys_until_max_key_age() {
    let env = env().await;
    let access = access(&env, "who = \"tenant_users\"\nidentity = \"entra\"\n");
    judge(&env, &access, &env.rsa.token(&v2_claims(&env))).await.unwrap();
    env.server.set_up(false);
    assert!(env.stores.refresh_identity(&env.ids["entra"]).await.is_err());
    // 1h59m later: last good keys still serve (token minted at that time).
    env.clock.advance(2 * 3600 - 60);
    let later = |env: &Env| {
        let mut claims = v2_claims(env);
        claims["exp"] = json!(env.clock.secs() + 600);
        claims["iat"] = json!(env.clock.secs());
        claims["nbf"] = json!(env.clock.secs());
        env.rsa.token(&claims)
    };
    judge(&env, &access, &later(&env)).await.unwrap();
    // Past max_key_age: 503, not 401.
    env.clock.advance(120);
    let err = judge(&env, &access, &later(&env)).await.unwrap_err();
    assert!(matches!(err, AuthError::KeysUnavailable(_)), "{err:?}");
    assert_eq!(flowgate::refusal::auth(err, "flowgate").status(), StatusCode::SERVICE_UNAVAILABLE);
    // The IdP comes back: the next allowed refetch restores service.
    env.server.set_up(true);
    env.clock.advance(31);
    judge(&env, &access, &later(&env)).await.unwrap();
}

#[tokio::test]
async fn signed_urls_through_authenticate() {
    let env = env().await;
    let mut keys = BTreeMap::new();
    keys.insert("k1".to_owned(), vec![7u8; 32]);
    let signed = SignedUrlKeys::from_resolved(keys, "k1", SignedUrlParams::default());
    let access = access_with(&env, "who = \"anyone\"\n", Some(&signed));
    let url = signed.sign("t", "POST", "/t?x=1", env.now + 60).unwrap();
    let caller = env.stores.authenticate(&access, &request(&url, None)).await.unwrap();
    assert_eq!(caller.principal, "signed-url:k1");
    let tampered = url.replace("/t?", "/u?");
    let err = env.stores.authenticate(&access, &request(&tampered, None)).await.unwrap_err();
    assert_eq!(flowgate::refusal::auth(err, "flowgate").status(), StatusCode::UNAUTHORIZED);
    env.clock.advance(61);
    let err = env.stores.authenticate(&access, &request(&url, None)).await.unwrap_err();
    assert_eq!(err, AuthError::SignedUrl(flowgate::auth::SignedUrlError::Expired));
    let stripped =
        flowgate::auth::strip_signature_params(url.split_once('?').map(|(_, q)| q), access.signed_params().unwrap());
    assert_eq!(stripped.as_deref(), Some("x=1"));
}

fn https_identity(server: &JwksServer, ca_file: Option<&std::path::Path>) -> BTreeMap<String, Arc<Identity>> {
    let ca_line = ca_file.map(|p| format!("ca_file = {:?}\n", p.display().to_string())).unwrap_or_default();
    let text = format!(
        "[tls]\njwks_uri = \"{}\"\n{ca_line}issuer = \"https://login.microsoftonline.com/{{tenant}}/v2.0\"\naudiences = [\"api://flowgate\"]\ntenants = [\"{TENANT}\"]\n",
        server.url()
    );
    let raw: BTreeMap<String, flowgate::auth::RawIdentity> = toml::from_str(&text).unwrap();
    let source = SourceFile { name: "t.toml".into(), base_dir: std::env::temp_dir(), text: String::new() };
    let mut diags = Diagnostics::default();
    let ids = compile_identities(&raw, &KeyPath::root().key("identity"), &source, &mut diags);
    assert!(diags.is_empty(), "{:?}", diags.into_vec());
    ids
}

#[tokio::test]
async fn jwks_over_https_with_ca_file() {
    let rsa = TestKey::rsa("rsa-tls");
    let (server, ca) = JwksServer::start_tls(jwks(&[&rsa])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.ca_pem).unwrap();
    let now = unix_now();
    let claims = json!({
        "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        "aud": "api://flowgate", "exp": now + 600, "tid": TENANT, "oid": OID
    });
    let token = rsa.token(&claims);
    let trigger: RawTrigger = toml::from_str(
        "name = \"t\"\npath = \"/t\"\nupstream = \"https://u/\"\nwho = \"tenant_users\"\nidentity = \"tls\"\n",
    )
    .unwrap();

    // Trusted through ca_file: keys fetched over HTTPS, token accepted.
    let ids = https_identity(&server, Some(&ca_path));
    let mut diags = Diagnostics::default();
    let trusted = compile_access(&trigger, &KeyPath::root(), &ids, None, &mut diags);
    let stores = KeyStores::new();
    let caller = stores.authenticate(&trusted, &request("/t", Some(&token))).await.unwrap();
    assert_eq!(caller.tenant.as_deref(), Some(TENANT));

    // Without the CA the IdP's certificate is not trusted: no keys, 503.
    let ids = https_identity(&server, None);
    let untrusted = compile_access(&trigger, &KeyPath::root(), &ids, None, &mut diags);
    assert!(diags.is_empty());
    let err = KeyStores::new().authenticate(&untrusted, &request("/t", Some(&token))).await.unwrap_err();
    assert!(matches!(err, AuthError::KeysUnavailable(_)), "{err:?}");
}

/// Polls `done` every 50 ms, for at most 20 s (an eventual condition, not a timing check).
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn background_refresh_clamps_max_age_and_picks_up_rotation() {
    let old = TestKey::rsa("old");
    let server = JwksServer::start(jwks(&[&old])).await;
    // The server says max-age=600; refresh_max = 1s must win.
    let text = format!(
        "[bg]\njwks_uri = \"{}\"\nallow_insecure_http = true\nissuer = \"https://login.microsoftonline.com/{{tenant}}/v2.0\"\naudiences = [\"api://flowgate\"]\ntenants = [\"{TENANT}\"]\nrefresh_min = \"1s\"\nrefresh_max = \"1s\"\nmax_key_age = \"1h\"\nunknown_kid_refetch_interval = \"1h\"\n",
        server.url()
    );
    let raw: BTreeMap<String, flowgate::auth::RawIdentity> = toml::from_str(&text).unwrap();
    let source = SourceFile { name: "t.toml".into(), base_dir: std::env::temp_dir(), text: String::new() };
    let mut diags = Diagnostics::default();
    let ids = compile_identities(&raw, &KeyPath::root().key("identity"), &source, &mut diags);
    let trigger: RawTrigger = toml::from_str(
        "name = \"t\"\npath = \"/t\"\nupstream = \"https://u/\"\nwho = \"tenant_users\"\nidentity = \"bg\"\n",
    )
    .unwrap();
    let access = compile_access(&trigger, &KeyPath::root(), &ids, None, &mut diags);
    assert!(diags.is_empty(), "{:?}", diags.into_vec());
    let stores = KeyStores::new();
    stores.start_refresh(ids.values());
    eventually("the first background fetch", || server.hits() >= 1).await;
    let now = unix_now();
    let claims = json!({
        "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        "aud": "api://flowgate", "exp": now + 600, "tid": TENANT, "oid": OID
    });
    stores.authenticate(&access, &request("/t", Some(&old.token(&claims)))).await.unwrap();
    let new = TestKey::rsa("new");
    server.set_body(jwks(&[&new]));
    let seen = server.hits();
    eventually("two more background fetches", || server.hits() >= seen + 2).await;
    // The unknown-kid refetch interval is 1h, so only the background refresh can have
    // brought the new key in.
    stores.authenticate(&access, &request("/t", Some(&new.token(&claims)))).await.unwrap();
    let err = stores.authenticate(&access, &request("/t", Some(&old.token(&claims)))).await.unwrap_err();
    assert_eq!(err, AuthError::InvalidToken(TokenError::UnknownKid));
}
