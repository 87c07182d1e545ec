//! Azure Key Vault — against a TEST DOUBLE, not the real service (Azure Key Vault has no
//! emulator that runs here). The double below serves the documented wire format on
//! 127.0.0.1:0 with hyper: Get Secret (`GET /secrets/{name}[/{version}]?api-version=7.5` →
//! `{value, id, contentType, attributes{enabled, nbf, exp, created, updated}}`), errors as
//! `{"error":{"code","message"}}`, the 401 `WWW-Authenticate: Bearer authorization=...,
//! resource=...` challenge, 403 for a disabled secret, 404, 429 with and without
//! `Retry-After`; and the three token flows: Entra ID client credentials with a client secret
//! or a client certificate (the double verifies the assertion's RS256 signature, audience,
//! issuer and `x5t#S256`), VM managed identity (IMDS, `Metadata: true`) and App Service
//! (`IDENTITY_ENDPOINT` + `X-IDENTITY-HEADER`).
#![allow(
    clippy::disallowed_methods,
    reason = "the vault double issues tokens the gateway checks against the real clock"
)]

use base64::Engine;
use bytes::Bytes;
use flowgate::config::{Diagnostics, KeyPath, SourceFile};
use flowgate::secrets::{SecretRef, Vaults, compile_vaults};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const CLIENT_SECRET: &str = "double-client-secret-value";
const IDENTITY_HEADER: &str = "double-identity-header-value";
const SECRET_VALUE: &str = "akv-secret-value-123";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[derive(Default)]
struct DoubleState {
    base: String,
    tokens: HashSet<String>,
    issued: usize,
    token_requests: Vec<String>,
    secret_requests: usize,
    /// Answers 429 before serving: `Some(secs)` with Retry-After, `None` without.
    throttle: VecDeque<Option<u64>>,
    /// Answer 401 to every secret request.
    always_unauthorized: bool,
    /// The client certificate's SPKI PEM and `x5t#S256` the double accepts.
    cert_public_pem: String,
    cert_thumbprint: String,
}

type Double = Arc<Mutex<DoubleState>>;

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn error(status: StatusCode, code: &str, message: &str, inner: Option<&str>) -> Response<Full<Bytes>> {
    let mut e = json!({ "error": { "code": code, "message": message } });
    if let Some(inner) = inner {
        e["error"]["innererror"] = json!({ "code": inner });
    }
    json_response(status, &e)
}

fn issue(state: &mut DoubleState, flow: &str) -> String {
    state.issued += 1;
    let token = format!("double-access-token-{}", state.issued);
    state.tokens.insert(token.clone());
    state.token_requests.push(flow.to_owned());
    token
}

#[derive(serde::Deserialize)]
struct Assertion {
    sub: String,
    jti: String,
}

fn token_endpoint(state: &mut DoubleState, tenant: &str, form: &BTreeMap<String, String>) -> Response<Full<Bytes>> {
    let f = |k: &str| form.get(k).map_or("", String::as_str);
    if f("grant_type") != "client_credentials"
        || f("scope") != "https://vault.azure.net/.default"
        || f("client_id") != "app-1"
    {
        return json_response(StatusCode::BAD_REQUEST, &json!({ "error": "invalid_request" }));
    }
    let flow = if form.contains_key("client_secret") {
        if f("client_secret") != CLIENT_SECRET {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "invalid_client", "error_description": "AADSTS7000215" }),
            );
        }
        "client_secret"
    } else if f("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
        let assertion = f("client_assertion");
        let Ok(header) = jsonwebtoken::decode_header(assertion) else {
            return json_response(StatusCode::BAD_REQUEST, &json!({ "error": "invalid_request" }));
        };
        if header.x5t_s256.as_deref() != Some(state.cert_thumbprint.as_str()) {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "invalid_client", "error_description": "AADSTS700027 unknown certificate" }),
            );
        }
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(state.cert_public_pem.as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[format!("{}/{tenant}/oauth2/v2.0/token", state.base)]);
        validation.set_issuer(&["app-1"]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        match jsonwebtoken::decode::<Assertion>(assertion, &key, &validation) {
            Ok(data) if data.claims.sub == "app-1" && !data.claims.jti.is_empty() => {}
            _ => {
                return json_response(
                    StatusCode::UNAUTHORIZED,
                    &json!({ "error": "invalid_client", "error_description": "AADSTS700027 bad signature" }),
                );
            }
        }
        "client_certificate"
    } else {
        return json_response(StatusCode::BAD_REQUEST, &json!({ "error": "invalid_request" }));
    };
    let token = issue(state, flow);
    json_response(
        StatusCode::OK,
        &json!({ "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token }),
    )
}

fn get_secret(state: &mut DoubleState, name: &str, version: Option<&str>, auth: Option<&str>) -> Response<Full<Bytes>> {
    let authorized = auth.and_then(|a| a.strip_prefix("Bearer ")).is_some_and(|t| state.tokens.contains(t));
    if !authorized || state.always_unauthorized {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(
                "www-authenticate",
                "Bearer authorization=\"https://login.microsoftonline.com/tenant-1\", resource=\"https://vault.azure.net\"",
            )
            .body(Full::new(Bytes::from(
                json!({"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}}).to_string(),
            )))
            .unwrap();
    }
    state.secret_requests += 1;
    if let Some(retry_after) = state.throttle.pop_front() {
        let mut b =
            Response::builder().status(StatusCode::TOO_MANY_REQUESTS).header("content-type", "application/json");
        if let Some(secs) = retry_after {
            b = b.header("retry-after", secs.to_string());
        }
        return b
            .body(Full::new(Bytes::from(json!({"error": {"code": "Throttled", "message": "Request was not processed because too many requests were received."}}).to_string())))
            .unwrap();
    }
    let t = now();
    let (value, enabled, nbf, exp) = match (name, version) {
        ("invoice-sig", None | Some("v2")) => (SECRET_VALUE.to_owned(), true, None, Some(t + 3600)),
        ("invoice-sig", Some("v1")) => ("akv-old-version".to_owned(), true, None, None),
        ("json-secret", None) => (json!({"api_key": "json-field-value"}).to_string(), true, None, None),
        ("disabled-secret", None) => {
            return error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Operation get is not allowed on a disabled secret.",
                Some("SecretDisabled"),
            );
        }
        ("listed-disabled", None) => ("x".to_owned(), false, None, None),
        ("future-secret", None) => ("y".to_owned(), true, Some(t + 3600), None),
        ("expired-secret", None) => ("z".to_owned(), true, None, Some(t - 10)),
        ("denied", None) => {
            return error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Caller is not authorized to perform action on resource.",
                Some("ForbiddenByRbac"),
            );
        }
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "SecretNotFound",
                &format!("A secret with (name/id) {name} was not found in this key vault."),
                None,
            );
        }
    };
    let id = format!("{}/secrets/{name}/{}", state.base, version.unwrap_or("v2"));
    let mut attributes =
        json!({ "enabled": enabled, "created": t - 100, "updated": t - 50, "recoveryLevel": "Recoverable+Purgeable" });
    if let Some(nbf) = nbf {
        attributes["nbf"] = json!(nbf);
    }
    if let Some(exp) = exp {
        attributes["exp"] = json!(exp);
    }
    json_response(
        StatusCode::OK,
        &json!({ "value": value, "id": id, "contentType": "text/plain", "attributes": attributes, "tags": {} }),
    )
}

async fn handle(
    double: Double,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    let mut state = double.lock().unwrap();
    let path = parts.uri.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let response = match (parts.method.as_str(), segments.as_slice()) {
        ("POST", [tenant, "oauth2", "v2.0", "token"]) => {
            let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
            token_endpoint(&mut state, tenant, &form)
        }
        ("GET", ["metadata", "identity", "oauth2", "token"]) => {
            if header("metadata") != Some("true") {
                error(StatusCode::BAD_REQUEST, "invalid_request", "Required metadata header not specified", None)
            } else if query.get("api-version").map(String::as_str) != Some("2018-02-01")
                || query.get("resource").map(String::as_str) != Some("https://vault.azure.net")
            {
                error(StatusCode::BAD_REQUEST, "invalid_request", "bad query", None)
            } else {
                let token = issue(&mut state, "imds");
                // IMDS sends numbers as strings.
                json_response(
                    StatusCode::OK,
                    &json!({ "access_token": token, "expires_in": "86399", "expires_on": (now() + 86399).to_string(), "resource": "https://vault.azure.net", "token_type": "Bearer" }),
                )
            }
        }
        ("GET", ["appservice", "msi", "token"]) => {
            if header("x-identity-header") != Some(IDENTITY_HEADER)
                || query.get("api-version").map(String::as_str) != Some("2019-08-01")
            {
                error(StatusCode::UNAUTHORIZED, "invalid_request", "bad identity header", None)
            } else {
                let token = issue(&mut state, "app_service");
                json_response(
                    StatusCode::OK,
                    &json!({ "access_token": token, "expires_on": (now() + 86399).to_string(), "resource": "https://vault.azure.net", "token_type": "Bearer", "client_id": "mi-1" }),
                )
            }
        }
        ("GET", ["secrets", name]) if query.get("api-version").map(String::as_str) == Some("7.5") => {
            get_secret(&mut state, name, None, header("authorization"))
        }
        ("GET", ["secrets", name, version]) if query.get("api-version").map(String::as_str) == Some("7.5") => {
            get_secret(&mut state, name, Some(version), header("authorization"))
        }
        _ => error(StatusCode::BAD_REQUEST, "BadParameter", "unknown route or api-version", None),
    };
    Ok(response)
}

/// Starts the double; returns its state and base URL.
async fn start_double() -> (Double, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let double: Double = Arc::new(Mutex::new(DoubleState { base: base.clone(), ..Default::default() }));
    let d = double.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let d = d.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(d.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (double, base)
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn compile(dir: &Path, base: &str, auth: &str) -> Vaults {
    let text = format!(
        "[akv]\nkind = \"azure_key_vault\"\nvault_url = \"{base}\"\nauthority_host = \"{base}\"\nimds_endpoint = \"{base}\"\ncalls_per_minute = 600\nauth = {auth}\n"
    );
    let raw: BTreeMap<String, flowgate::secrets::RawVault> = toml::from_str(&text).unwrap();
    let source = SourceFile { name: "policy.toml".into(), base_dir: dir.to_path_buf(), text };
    let mut diags = Diagnostics::default();
    let vaults = compile_vaults(&raw, &KeyPath::root().key("vault"), &source, &mut diags);
    assert!(diags.is_empty(), "{:?}", diags.into_vec());
    vaults
}

async fn fetch(vaults: &Vaults, reference: &str) -> Result<String, flowgate::secrets::SecretError> {
    let r = SecretRef::parse(reference).unwrap();
    vaults.get(&r.vault).unwrap().fetch(&r).await.map(|v| v.expose_secret().to_owned())
}

fn client_secret_vaults(dir: &Path, base: &str) -> Vaults {
    write_private(&dir.join("client_secret"), CLIENT_SECRET);
    compile(
        dir,
        base,
        "{ method = \"client_secret\", tenant = \"tenant-1\", client_id = \"app-1\", client_secret = \"file:client_secret\" }",
    )
}

#[tokio::test]
async fn akv_double_client_secret_reads_latest_version_and_field_with_one_token() {
    let (double, base) = start_double().await;
    let dir = tempfile::tempdir().unwrap();
    let vaults = client_secret_vaults(dir.path(), &base);
    assert_eq!(fetch(&vaults, "secret://akv/invoice-sig").await.unwrap(), SECRET_VALUE);
    assert_eq!(fetch(&vaults, "secret://akv/invoice-sig@v1").await.unwrap(), "akv-old-version");
    assert_eq!(fetch(&vaults, "secret://akv/json-secret#api_key").await.unwrap(), "json-field-value");
    let state = double.lock().unwrap();
    assert_eq!(state.token_requests, ["client_secret"], "the Entra token is cached");
    assert_eq!(state.secret_requests, 3);
}

#[tokio::test]
async fn akv_double_typed_errors_disabled_nbf_exp_403_404() {
    let (_double, base) = start_double().await;
    let dir = tempfile::tempdir().unwrap();
    let vaults = client_secret_vaults(dir.path(), &base);
    let kind = |r: Result<String, flowgate::secrets::SecretError>| r.unwrap_err().kind();
    assert_eq!(kind(fetch(&vaults, "secret://akv/disabled-secret").await), "disabled");
    assert_eq!(kind(fetch(&vaults, "secret://akv/listed-disabled").await), "disabled");
    assert_eq!(kind(fetch(&vaults, "secret://akv/future-secret").await), "not_yet_valid");
    assert_eq!(kind(fetch(&vaults, "secret://akv/expired-secret").await), "expired");
    assert_eq!(kind(fetch(&vaults, "secret://akv/denied").await), "forbidden");
    let err = fetch(&vaults, "secret://akv/missing").await.unwrap_err();
    assert_eq!(err.to_string(), "secret://akv/missing: not found");
}

#[tokio::test]
async fn akv_double_401_challenge_reauthenticates_once_then_reports_the_challenge() {
    let (double, base) = start_double().await;
    let dir = tempfile::tempdir().unwrap();
    let vaults = client_secret_vaults(dir.path(), &base);
    assert_eq!(fetch(&vaults, "secret://akv/invoice-sig").await.unwrap(), SECRET_VALUE);
    // The vault forgets the token (revoked): one 401, a fresh token, success.
    double.lock().unwrap().tokens.clear();
    assert_eq!(fetch(&vaults, "secret://akv/invoice-sig").await.unwrap(), SECRET_VALUE);
    assert_eq!(double.lock().unwrap().token_requests.len(), 2);
    // A vault that keeps refusing: a typed error carrying the challenge, never the token.
    double.lock().unwrap().always_unauthorized = true;
    let err = fetch(&vaults, "secret://akv/invoice-sig").await.unwrap_err();
    assert_eq!(err.kind(), "unauthorized");
    let text = err.to_string();
    assert!(text.contains("resource=\"https://vault.azure.net\""), "{text}");
    assert!(!text.contains("double-access-token") && !text.contains(CLIENT_SECRET));
    // A wrong client secret: the login fails with the AAD error code only.
    write_private(&dir.path().join("client_secret"), "wrong");
    double.lock().unwrap().tokens.clear();
    let err = fetch(&vaults, "secret://akv/invoice-sig").await.unwrap_err();
    assert_eq!(err.kind(), "login", "{err}");
    assert!(err.to_string().contains("invalid_client"), "{err}");
}

#[tokio::test]
async fn akv_double_429_backs_off_with_and_without_retry_after() {
    let (double, base) = start_double().await;
    let dir = tempfile::tempdir().unwrap();
    let vaults = client_secret_vaults(dir.path(), &base);
    double.lock().unwrap().throttle.extend([Some(1), None, Some(0)]);
    assert_eq!(fetch(&vaults, "secret://akv/invoice-sig").await.unwrap(), SECRET_VALUE);
    assert_eq!(double.lock().unwrap().secret_requests, 4, "three 429s then the value");
    // Throttled beyond the attempt budget: a typed error.
    double.lock().unwrap().throttle.extend([Some(0); 10]);
    let err = fetch(&vaults, "secret://akv/invoice-sig").await.unwrap_err();
    assert_eq!(err.kind(), "throttled");
}

#[tokio::test]
async fn akv_double_client_certificate_assertion_is_verified_by_the_double() {
    let (double, base) = start_double().await;
    let dir = tempfile::tempdir().unwrap();
    let make_cert = || {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["flowgate-client".to_owned()]).unwrap().self_signed(&key).unwrap();
        let thumb = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(cert.der()));
        (format!("{}{}", cert.pem(), key.serialize_pem()), key.public_key_pem(), thumb)
    };
    let (pem, public, thumb) = make_cert();
    {
        let mut s = double.lock().unwrap();
        s.cert_public_pem = public;
        s.cert_thumbprint = thumb;
    }
    write_private(&dir.path().join("client.pem"), &pem);
    let vaults = compile(
        dir.path(),
        &base,
        "{ method = \"client_certificate\", tenant = \"tenant-1\", client_id = \"app-1\", certificate = \"file:client.pem\" }",
    );
    assert_eq!(fetch(&vaults, "secret://akv/invoice-sig").await.unwrap(), SECRET_VALUE);
    assert_eq!(double.lock().unwrap().token_requests, ["client_certificate"]);
    // Another certificate (unknown to the tenant): the double refuses the assertion.
    let (other, _, _) = make_cert();
    write_private(&dir.path().join("client.pem"), &other);
    double.lock().unwrap().tokens.clear();
    let err = fetch(&vaults, "secret://akv/invoice-sig").await.unwrap_err();
    assert_eq!(err.kind(), "login", "{err}");
}

#[tokio::test]
async fn akv_double_managed_identity_imds_and_app_service() {
    let (double, base) = start_double().await;
    let dir = tempfile::tempdir().unwrap();
    let vaults = compile(dir.path(), &base, "{ method = \"managed_identity\" }");
    assert_eq!(fetch(&vaults, "secret://akv/invoice-sig").await.unwrap(), SECRET_VALUE);
    assert_eq!(fetch(&vaults, "secret://akv/invoice-sig@v1").await.unwrap(), "akv-old-version");
    assert_eq!(double.lock().unwrap().token_requests, ["imds"]);

    write_private(&dir.path().join("endpoint"), &format!("{base}/appservice/msi/token"));
    write_private(&dir.path().join("header"), IDENTITY_HEADER);
    let vaults = compile(
        dir.path(),
        &base,
        "{ method = \"app_service\", identity_endpoint = \"file:endpoint\", identity_header = \"file:header\" }",
    );
    assert_eq!(fetch(&vaults, "secret://akv/invoice-sig").await.unwrap(), SECRET_VALUE);
    assert_eq!(double.lock().unwrap().token_requests, ["imds", "app_service"]);
    write_private(&dir.path().join("header"), "wrong-header");
    let vaults = compile(
        dir.path(),
        &base,
        "{ method = \"app_service\", identity_endpoint = \"file:endpoint\", identity_header = \"file:header\" }",
    );
    assert_eq!(fetch(&vaults, "secret://akv/invoice-sig").await.unwrap_err().kind(), "login");
}

/// Collects every log line written at TRACE.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every form a leaked value could take: raw, base64 (standard and URL-safe), URL-encoded, hex.
fn forms(value: &str) -> Vec<String> {
    vec![
        value.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(value),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value),
        url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        hex::encode(value),
    ]
}

#[tokio::test]
async fn akv_double_leak_scan_trace_logs_and_errors_hold_no_secret_or_credential() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (double, base) = start_double().await;
    let dir = tempfile::tempdir().unwrap();
    let vaults = client_secret_vaults(dir.path(), &base);
    let store = flowgate::secrets::SecretStore::new();
    let mut seen = Vec::new();
    // Every path: success, cached hit, each typed error, 401 re-auth, 429 back-off, bad login.
    let ok = store.lookup(&SecretRef::parse("secret://akv/invoice-sig").unwrap(), &vaults).await.unwrap();
    seen.push(format!("{ok:?} {ok}"));
    seen.push(format!("{:?}", store.lookup(&SecretRef::parse("secret://akv/invoice-sig").unwrap(), &vaults).await));
    for name in ["disabled-secret", "listed-disabled", "future-secret", "expired-secret", "denied", "missing"] {
        let e = fetch(&vaults, &format!("secret://akv/{name}")).await.unwrap_err();
        seen.push(format!("{e} {e:?}"));
    }
    double.lock().unwrap().tokens.clear();
    double.lock().unwrap().throttle.extend([Some(0), Some(0)]);
    seen.push(format!("{:?}", fetch(&vaults, "secret://akv/json-secret#api_key").await.is_ok()));
    double.lock().unwrap().always_unauthorized = true;
    let e = fetch(&vaults, "secret://akv/invoice-sig").await.unwrap_err();
    seen.push(format!("{e} {e:?}"));
    write_private(&dir.path().join("client_secret"), "wrong-secret-xyz");
    double.lock().unwrap().tokens.clear();
    let e = fetch(&vaults, "secret://akv/invoice-sig").await.unwrap_err();
    seen.push(format!("{e} {e:?}"));
    seen.push(format!("{vaults:?} {store:?}"));
    let scrubbed =
        flowgate::secrets::Scrubber::new([ok.clone()]).scrub_bytes(format!("echo {SECRET_VALUE}").as_bytes());
    seen.push(String::from_utf8(scrubbed).unwrap());

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("vault fetch failed"), "TRACE capture is working");
    let haystack = format!("{logs}\n{}", seen.join("\n"));
    let secrets =
        [SECRET_VALUE, "json-field-value", "akv-old-version", CLIENT_SECRET, "wrong-secret-xyz", "double-access-token"];
    for secret in secrets {
        for form in forms(secret) {
            assert!(!haystack.contains(&form), "leaked {secret:?} as {form:?}");
        }
    }
}
