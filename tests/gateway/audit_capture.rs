//! Each capture protection, end to end: a call is captured with the trigger's compiled
//! rules, recorded through a real `AuditLog` (ring and JSON-lines file), and the
//! protected value is proven ABSENT from the record, the ring and the file.
#![allow(
    clippy::disallowed_methods,
    reason = "run records are stamped as a running gateway stamps them, with the real time"
)]

use flowgate::audit::{
    AuditConfig, AuditLog, CaptureRules, Captured, CapturedBody, CapturedMessage, REDACTED, RunFilter, RunRecord,
    capture_request, capture_response,
};
use flowgate::config::{Diagnostics, KeyPath};
use flowgate::policy::RawTrigger;
use http::{HeaderMap, HeaderValue};
use std::time::{Duration, SystemTime};

/// A trigger's capture rules compiled from its TOML options.
fn rules(options: &str) -> CaptureRules {
    let text = format!(
        "name = \"t\"\npath = \"/t\"\nupstream = \"http://127.0.0.1:9/\"\nwho = \"anyone\"\ncapture = true\n{options}"
    );
    let raw: RawTrigger = toml::from_str(&text).expect("trigger parses");
    let mut diags = Diagnostics::default();
    let rules =
        CaptureRules::compile(raw.capture_parts(), 64 * 1024, &KeyPath::root().key("trigger").index(0), &mut diags);
    assert!(diags.is_empty(), "{:?}", diags.into_vec());
    rules
}

struct Recorded {
    ring: String,
    by_id: String,
    file: String,
    record: RunRecord,
}

/// Writes one record holding `captured` through a real log and reads it back from the
/// ring, `get`, and the file.
fn record(captured: Captured, path: &str) -> Recorded {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("runs.jsonl");
    let cfg = AuditConfig { file: Some(file.clone()), ..AuditConfig::default() };
    let log = AuditLog::new(&cfg).expect("log starts");
    let mut record = RunRecord::new("req-1", SystemTime::now(), "POST", path);
    record.trigger = Some("t".into());
    record.capture = Some(captured);
    log.write(record);
    assert!(log.flush(Duration::from_secs(10)), "writer flushed");
    let ring = serde_json::to_string(&log.query(&RunFilter::default())).expect("ring serializes");
    let got = log.get("req-1").expect("record in ring");
    let by_id = serde_json::to_string(&got).expect("serializes");
    let file = std::fs::read_to_string(&file).expect("file written");
    let parsed: RunRecord = serde_json::from_str(file.trim_end()).expect("file holds one JSON record");
    assert_eq!(parsed, got, "file and ring agree");
    Recorded { ring, by_id, file, record: got }
}

fn assert_absent(recorded: &Recorded, needle: &str) {
    for (place, text) in [("ring", &recorded.ring), ("get", &recorded.by_id), ("file", &recorded.file)] {
        assert!(!text.contains(needle), "{needle:?} present in the {place}: {text}");
    }
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers
}

fn request_of(recorded: &Recorded) -> &CapturedMessage {
    recorded.record.capture.as_ref().and_then(|c| c.request.as_ref()).expect("request captured")
}

fn response_of(recorded: &Recorded) -> &CapturedMessage {
    recorded.record.capture.as_ref().and_then(|c| c.response.as_ref()).expect("response captured")
}

#[test]
fn secure_inputs_replace_the_request_with_a_marker() {
    let rules = rules("secure_inputs = true");
    let body = br#"{"card": "4111-SECRET-INPUT"}"#;
    let request = capture_request(&rules, &json_headers(), body, body.len() as u64, &[]);
    let response = capture_response(&rules, &json_headers(), br#"{"ok": "visible-output"}"#, 23, &[]);
    let recorded = record(Captured { request: Some(request), response: Some(response) }, "/t");
    assert_absent(&recorded, "4111-SECRET-INPUT");
    assert_absent(&recorded, "card");
    assert_eq!(request_of(&recorded), &CapturedMessage::secured());
    assert!(recorded.file.contains(r#""request":{"secured":true}"#), "{}", recorded.file);
    assert!(recorded.file.contains("visible-output"), "outputs are still captured");
}

#[test]
fn secure_outputs_replace_the_response_with_a_marker() {
    let rules = rules("secure_outputs = true");
    let body = br#"{"result": "SECRET-OUTPUT"}"#;
    let response = capture_response(&rules, &json_headers(), body, body.len() as u64, &[]);
    let request = capture_request(&rules, &json_headers(), br#"{"in": "visible-input"}"#, 22, &[]);
    let recorded = record(Captured { request: Some(request), response: Some(response) }, "/t");
    assert_absent(&recorded, "SECRET-OUTPUT");
    assert_eq!(response_of(&recorded), &CapturedMessage::secured());
    assert!(recorded.file.contains("visible-input"));
}

#[test]
fn private_fields_dropped_at_depth_three_inside_arrays() {
    let rules = rules("");
    let body = serde_json::json!({
        "orders": [
            {"lines": [{"sku": "A1", "_private_cost": "COST-AT-DEPTH", "detail": {"_privateNote": "NOTE-DEEP"}}]},
            {"_private": "TOP-ITEM"}
        ],
        "_private_root": "ROOT-VALUE",
        "kept": "visible"
    });
    let bytes = serde_json::to_vec(&body).expect("json");
    let request = capture_request(&rules, &json_headers(), &bytes, bytes.len() as u64, &[]);
    let response = capture_response(&rules, &json_headers(), &bytes, bytes.len() as u64, &[]);
    let recorded = record(Captured { request: Some(request), response: Some(response) }, "/t");
    for needle in ["COST-AT-DEPTH", "NOTE-DEEP", "TOP-ITEM", "ROOT-VALUE", "_private"] {
        assert_absent(&recorded, needle);
    }
    assert!(recorded.file.contains("A1") && recorded.file.contains("visible"), "{}", recorded.file);
}

#[test]
fn private_parameters_dropped_at_any_depth() {
    let rules = rules(r#"private_parameters = ["password", "SSN"]"#);
    let body = br#"{"user": {"name": "ann", "Password": "PW-VALUE", "ids": [{"ssn": "SSN-VALUE"}]}}"#;
    let request = capture_request(&rules, &json_headers(), body, body.len() as u64, &[]);
    let recorded = record(Captured { request: Some(request), response: None }, "/t");
    assert_absent(&recorded, "PW-VALUE");
    assert_absent(&recorded, "SSN-VALUE");
    assert!(recorded.file.contains("ann"));
}

#[test]
fn authorization_and_proxy_authorization_never_recorded() {
    let rules = rules("");
    let mut headers = json_headers();
    headers.insert("authorization", HeaderValue::from_static("Bearer eyJ.TOKEN-VALUE.sig"));
    headers.insert("proxy-authorization", HeaderValue::from_static("Basic PROXY-CRED"));
    let request = capture_request(&rules, &headers, b"{}", 2, &[]);
    let recorded = record(Captured { request: Some(request), response: None }, "/t");
    assert_absent(&recorded, "TOKEN-VALUE");
    assert_absent(&recorded, "PROXY-CRED");
    assert_absent(&recorded, "authorization");
    assert!(recorded.file.contains("application/json"), "other headers kept");
}

#[test]
fn cookies_never_recorded() {
    let rules = rules("");
    let mut headers = json_headers();
    headers.insert("cookie", HeaderValue::from_static("session=COOKIE-VALUE"));
    let mut response_headers = json_headers();
    response_headers.insert("set-cookie", HeaderValue::from_static("session=SET-COOKIE-VALUE; HttpOnly"));
    let request = capture_request(&rules, &headers, b"", 0, &[]);
    let response = capture_response(&rules, &response_headers, b"", 0, &[]);
    let recorded = record(Captured { request: Some(request), response: Some(response) }, "/t");
    assert_absent(&recorded, "COOKIE-VALUE");
    assert_absent(&recorded, "SET-COOKIE-VALUE");
    assert_absent(&recorded, "cookie");
}

#[test]
fn signed_url_signature_never_recorded() {
    let rules = rules("");
    let request = capture_request(&rules, &json_headers(), b"{}", 2, &[]);
    let recorded =
        record(Captured { request: Some(request), response: None }, "/t/invoice?se=1700000000&sig=SIGNATURE-VALUE");
    assert_absent(&recorded, "SIGNATURE-VALUE");
    assert_absent(&recorded, "sig=");
    assert_eq!(recorded.record.path, "/t/invoice");
}

#[test]
fn non_json_body_is_hashed_never_raw() {
    let rules = rules("");
    let body = b"name=ann&password=RAW-FORM-VALUE";
    let request = capture_request(&rules, &HeaderMap::new(), body, body.len() as u64, &[]);
    let recorded = record(Captured { request: Some(request), response: None }, "/t");
    assert_absent(&recorded, "RAW-FORM-VALUE");
    assert_absent(&recorded, "ann");
    match request_of(&recorded) {
        CapturedMessage::Captured { body: Some(CapturedBody::Hashed { sha256, length, truncated }), .. } => {
            use sha2::Digest;
            assert_eq!(sha256, &hex::encode(sha2::Sha256::digest(body)));
            assert_eq!(*length, body.len() as u64);
            assert!(!truncated);
        }
        other => panic!("expected a hashed body, got {other:?}"),
    }
}

#[test]
fn injected_secret_echoed_by_upstream_is_redacted() {
    let rules = rules("");
    let secret: &[u8] = b"sk-INJECTED-SECRET-123";
    let mut upstream_headers = json_headers();
    upstream_headers.insert("x-echo-api-key", HeaderValue::from_static("sk-INJECTED-SECRET-123"));
    let body = br#"{"echo": {"headers": ["x-api-key: sk-INJECTED-SECRET-123"]}, "n": 1}"#;
    let response = capture_response(&rules, &upstream_headers, body, body.len() as u64, &[secret]);
    let mut request_headers = json_headers();
    request_headers.insert("x-api-key", HeaderValue::from_static("sk-INJECTED-SECRET-123"));
    let request = capture_request(&rules, &request_headers, b"{}", 2, &[secret]);
    let recorded = record(Captured { request: Some(request), response: Some(response) }, "/t");
    assert_absent(&recorded, "INJECTED-SECRET");
    assert_absent(&recorded, "x-echo-api-key");
    assert!(recorded.file.contains(REDACTED), "{}", recorded.file);
}

#[test]
fn injected_secret_in_non_json_echo_is_hashed() {
    let rules = rules("");
    let secret: &[u8] = b"PLAIN-ECHOED-SECRET";
    let body = b"you sent PLAIN-ECHOED-SECRET";
    let response = capture_response(&rules, &HeaderMap::new(), body, body.len() as u64, &[secret]);
    let recorded = record(Captured { request: None, response: Some(response) }, "/t");
    assert_absent(&recorded, "PLAIN-ECHOED-SECRET");
}
