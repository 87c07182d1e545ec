//! OAuth over the whole gateway (real TLS, real HTTP, the dev issuer's discovery and JWKS
//! on a real socket): RFC 6750 challenges, tenant / principal / role refusals, tokens in
//! the query string kept out of every record and log, signed URLs, the IdP being down, and
//! forwarded identity headers that a caller cannot forge.
#![allow(clippy::disallowed_methods, reason = "tokens are checked by a gateway that runs on the real clock")]

mod common;

use common::{Fixture, Running, closed_port, echo_trigger, runs_at_least, start_echo, start_gateway};
use flowgate::auth::dev_issuer::{DEMO_APP_ID, DEMO_AUDIENCE, DEMO_OID, DEMO_TENANT, DevIssuer};
use flowgate::auth::{SignedUrlParams, sign_url};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const OTHER_TENANT: &str = "0a0b0c0d-1111-4222-8333-444455556666";
const OTHER_OID: &str = "99999999-8888-4777-8666-555555555555";

fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate on {}", response.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

async fn post(client: &reqwest::Client, url: String) -> reqwest::Response {
    client.post(url).body("{}").send().await.unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The run record whose request id is `id`.
async fn record_of(gw: &Running, id: &str) -> serde_json::Value {
    common::run_record(gw, id).await
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn missing_and_invalid_tokens_get_rfc6750_challenges() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = fx.serve_policy(&fx.policy_text(&echo_trigger("t", "/t", echo, ""))).await;

    // No token: a bare challenge, no error code.
    let none = post(&fx.anonymous_client(false), gw.url("/t")).await;
    assert_eq!(none.status(), 401);
    assert_eq!(challenge(&none), "Bearer realm=\"flowgate\"");
    let record = record_of(&gw, &request_id(&none)).await;
    assert_eq!(record["decision"], "unauthenticated");

    // The same key and dev-issuer shape, but another issuer URL: the signature verifies,
    // the issuer does not.
    let foreign_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fx.path().join(flowgate::auth::dev_issuer::KEY_FILE),
        foreign_dir.path().join(flowgate::auth::dev_issuer::KEY_FILE),
    )
    .unwrap();
    let foreign = DevIssuer::load_or_create(foreign_dir.path(), "http://127.0.0.1:1/other-tenant").unwrap();
    let wrong_issuer = foreign.mint(&flowgate::auth::dev_issuer::MintOptions::default()).unwrap();

    let cases = [
        ("expired", fx.token_with(|o| o.expires_in = -600), "expired"),
        ("wrong audience", fx.token_with(|o| o.audience = "api://someone-else".into()), "audience"),
        ("wrong issuer", wrong_issuer, "issuer"),
        ("garbage", "eyJhbGciOiJFUzI1NiJ9.e30.c2ln".to_owned(), "invalid token"),
    ];
    for (what, token, reason) in cases {
        let response = fx.anonymous_client(true).post(gw.url("/t")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), 401, "{what}");
        assert_eq!(challenge(&response), "Bearer realm=\"flowgate\", error=\"invalid_token\"", "{what}");
        let id = request_id(&response);
        let body = response.text().await.unwrap();
        assert!(!body.contains(reason), "{what}: the public body names the failed check: {body}");
        let record = record_of(&gw, &id).await;
        assert_eq!(record["decision"], "unauthenticated", "{what}");
        let recorded = record["reason"].as_str().unwrap();
        assert!(recorded.contains(reason), "{what}: reason {recorded:?} should mention {reason:?}");
        assert!(!record.to_string().contains(&token), "{what}: the token reached the run record");
    }

    // Control: the fixture's own token passes on the same trigger.
    assert_eq!(post(&fx.client(false), gw.url("/t")).await.status(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn tenant_principal_and_role_rules_refuse_with_403() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let triggers = [
        echo_trigger("other-tenant", "/other-tenant", echo, &format!("tenants = [\"{OTHER_TENANT}\"]")),
        echo_trigger(
            "listed",
            "/listed",
            echo,
            &format!("principals = [\"oid:{DEMO_OID}\", \"upn:Alice@Example.com\"]"),
        )
        .replace("tenant_users", "specific_users"),
        echo_trigger("nobody", "/nobody", echo, "principals = []").replace("tenant_users", "specific_users"),
        echo_trigger("admins", "/admins", echo, "roles = { any_of = [\"Flows.Admin\"] }"),
    ]
    .concat();
    let gw = fx.serve_policy(&fx.policy_text(&triggers)).await;
    let client = fx.client(true);
    let other = fx.token_with(|o| o.oid = OTHER_OID.into());
    let admin = fx.token_with(|o| o.roles = vec!["Flows.Admin".into()]);

    // A tenant the trigger does not list.
    let r = post(&client, gw.url("/other-tenant")).await;
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("www-authenticate").is_none(), "a tenant refusal is not a scope problem");
    let record = record_of(&gw, &request_id(&r)).await;
    assert_eq!(
        (record["decision"].as_str(), record["reason"].as_str()),
        (Some("forbidden"), Some("tenant not allowed"))
    );

    // specific_users: the listed principal passes, another one of the same tenant does not.
    assert_eq!(post(&client, gw.url("/listed")).await.status(), 200);
    let r = fx.anonymous_client(true).post(gw.url("/listed")).bearer_auth(&other).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let record = record_of(&gw, &request_id(&r)).await;
    assert_eq!(record["reason"], "principal not listed");

    // An empty list means nobody, not the whole tenant.
    for token in [fx.token(), other.clone(), admin.clone()] {
        let r = fx.anonymous_client(false).post(gw.url("/nobody")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(record_of(&gw, &request_id(&r)).await["reason"], "principal not listed");
    }

    // A missing role: 403 with the insufficient_scope challenge; the role holder passes.
    let r = post(&client, gw.url("/admins")).await;
    assert_eq!(r.status(), 403);
    assert_eq!(challenge(&r), "Bearer realm=\"flowgate\", error=\"insufficient_scope\"");
    let refused = record_of(&gw, &request_id(&r)).await;
    assert_eq!(refused["decision"], "insufficient_scope");
    // The token was valid: the record names who was refused.
    assert_eq!(refused["principal"], "oid:22222222-3333-4444-8555-666666666666", "{refused}");
    assert_eq!(refused["tenant"], "11111111-2222-4333-8444-555555555555");
    let r = fx.anonymous_client(false).post(gw.url("/admins")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    gw.shutdown().await;
}

/// Every log line of this test binary, whatever the level (one global subscriber).
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn log_capture() -> LogCapture {
    static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = LogCapture::default();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(capture.clone())
                .try_init()
                .expect("the only subscriber of this test binary");
            capture
        })
        .clone()
}

#[tokio::test]
async fn a_token_in_the_query_is_refused_and_never_recorded_or_logged() {
    let logs = log_capture();
    let fx = Fixture::new();
    let echo = start_echo().await;
    let audit_file = fx.path().join("runs.jsonl");
    let gw = fx
        .serve_policy(&fx.policy_text(&format!(
            "[audit]\nfile = \"{}\"\n\n{}",
            audit_file.display(),
            echo_trigger("query-token", "/qt", echo, "")
        )))
        .await;
    let token = fx.token_with(|o| o.subject = Some("query-token-subject".into()));
    let anonymous = fx.anonymous_client(false);
    let mut ids = Vec::new();
    for query in [format!("access_token={token}"), format!("x=1&data={token}")] {
        let r = post(&anonymous, gw.url(&format!("/qt?{query}"))).await;
        assert_eq!(r.status(), 401, "{query}");
        assert!(challenge(&r).contains("error=\"invalid_token\""));
        ids.push(request_id(&r));
        r.bytes().await.unwrap();
    }
    // Even with a valid bearer header beside it, the query token is refused.
    let r = fx.client(false).post(gw.url(&format!("/qt?access_token={token}"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    ids.push(request_id(&r));
    r.bytes().await.unwrap();

    let records = runs_at_least(&gw, "trigger=query-token", 3).await;
    assert_eq!(records.len(), 3, "{records:?}");
    for record in &records {
        assert_eq!(record["decision"], "unauthenticated");
        assert_eq!(record["path"], "/qt");
    }
    assert!(gw.gateway.audit.flush(Duration::from_secs(5)));
    let file = std::fs::read_to_string(&audit_file).unwrap();
    let api = serde_json::to_string(&records).unwrap();
    let log_text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    // The access log did record these calls (so its absence of the token means something).
    for id in &ids {
        assert!(log_text.contains(id.as_str()), "no access-log line for {id}");
    }
    let signature = token.rsplit('.').next().unwrap();
    for (place, text) in [("run file", &file), ("admin API", &api), ("logs", &log_text)] {
        assert!(!text.contains(&token), "the token reached the {place}");
        assert!(!text.contains(signature), "the token's signature reached the {place}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn signed_urls_are_checked_and_their_parameters_stay_here() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let key = b"0123456789abcdef0123456789abcdef-test-url-key";
    std::fs::write(fx.path().join("url.key"), [key.as_slice(), b"\n"].concat()).unwrap();
    let trigger = format!(
        "[[trigger]]\nname = \"hook\"\npath = \"/hook\"\nmethods = [\"POST\"]\n\
         upstream = \"http://{echo}/flows/hook/invoke?api-version=1\"\nwho = \"anyone\"\n"
    );
    let gw = fx
        .serve_policy(
            &fx.policy_text(&format!(
                "[signed_urls]\nkeys = {{ k1 = \"file:url.key\" }}\nprimary = \"k1\"\n\n{trigger}"
            )),
        )
        .await;
    let client = fx.anonymous_client(true);
    let params = SignedUrlParams::default();
    let sign =
        |method: &str, expires_at: u64| sign_url(key, "k1", &params, "hook", method, &gw.url("/hook?x=1"), expires_at);

    let good = sign("POST", unix_now() + 600).unwrap();
    let r = post(&client, good.clone()).await;
    assert_eq!(r.status(), 200);
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echoed["query_names"], serde_json::json!(["api-version", "x"]), "signature params were forwarded");

    let expired = sign("POST", unix_now() - 10).unwrap();
    let sig_at = good.find("fg_sig=").unwrap() + "fg_sig=".len();
    let mut tampered = good.clone();
    let flipped = if tampered[sig_at..].starts_with('A') { "B" } else { "A" };
    tampered.replace_range(sig_at..=sig_at, flipped);
    let other_method = sign("GET", unix_now() + 600).unwrap();
    let unsigned = gw.url("/hook?x=1");
    for (what, url, reason) in [
        ("expired", expired, "expired"),
        ("tampered", tampered, "bad URL signature"),
        ("signed for GET", other_method, "bad URL signature"),
        ("unsigned", unsigned, "no URL signature"),
    ] {
        let r = post(&client, url).await;
        assert_eq!(r.status(), 401, "{what}");
        let record = record_of(&gw, &request_id(&r)).await;
        assert!(record["reason"].as_str().unwrap().contains(reason), "{what}: {record}");
    }
    let api = serde_json::to_string(&runs_at_least(&gw, "trigger=hook", 5).await).unwrap();
    let signature = &good[sig_at..];
    assert!(!api.contains(signature), "the URL signature reached the run history");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_idp_is_our_fault_503_and_the_record_says_keys_are_unavailable() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let down = closed_port();
    let identity = format!(
        "[identity.down]\ndiscovery = \"http://{down}/.well-known/openid-configuration\"\nissuer = \"{}\"\n\
         audiences = [\"{DEMO_AUDIENCE}\"]\ntenants = [\"{DEMO_TENANT}\"]\nalgorithms = [\"ES256\"]\nallow_insecure_http = true\n",
        fx.issuer.issuer()
    );
    let trigger = echo_trigger("idp-down", "/down", echo, "").replace("identity = \"test\"", "identity = \"down\"");
    let policy = fx.write_policy(&fx.policy_text(&format!("{identity}\n{trigger}")));
    // The issuer is deliberately not served: nothing listens on `down`.
    let gw = start_gateway(&policy).await;
    let r = post(&fx.client(false), gw.url("/down")).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("www-authenticate").is_none(), "an IdP outage is not the caller's fault");
    let id = request_id(&r);
    let body = r.text().await.unwrap();
    assert!(!body.contains(&down.to_string()), "internals leaked: {body}");
    let record = record_of(&gw, &id).await;
    assert_eq!(record["decision"], "keys_unavailable");
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.contains("keys") && reason.contains("down"), "{reason}");
    gw.shutdown().await;
}

#[tokio::test]
async fn forwarded_identity_is_the_verified_one_and_cannot_be_forged() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let triggers = format!(
        "{}{}",
        echo_trigger("with-identity", "/with", echo, "forward_identity = true"),
        echo_trigger("without-identity", "/without", echo, "")
    );
    let gw = fx.serve_policy(&fx.policy_text(&triggers)).await;
    let client = fx.client(true);
    let forged = |path: &str| {
        client
            .post(gw.url(path))
            .header("x-flowgate-tenant", OTHER_TENANT)
            .header("x-flowgate-principal", "oid:forged")
            .header("x-flowgate-roles", "Flows.Admin")
            .header("x-flowgate-app-id", "forged-app")
            .body("{}")
            .send()
    };
    let with: serde_json::Value = forged("/with").await.unwrap().json().await.unwrap();
    let headers = &with["headers"];
    assert_eq!(headers["x-flowgate-tenant"], DEMO_TENANT, "{with}");
    assert_eq!(headers["x-flowgate-principal"], format!("oid:{DEMO_OID}"));
    assert_eq!(headers["x-flowgate-app-id"], DEMO_APP_ID);
    assert_eq!(headers["x-flowgate-roles"], "Flows.Invoke");
    assert!(headers.get("authorization").is_none(), "the caller's token was forwarded");

    let without: serde_json::Value = forged("/without").await.unwrap().json().await.unwrap();
    let headers = without["headers"].as_object().unwrap();
    for name in ["x-flowgate-tenant", "x-flowgate-principal", "x-flowgate-roles", "x-flowgate-app-id"] {
        assert!(!headers.contains_key(name), "forged {name} reached the upstream: {headers:?}");
    }
    gw.shutdown().await;
}
