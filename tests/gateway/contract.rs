//! Payload contracts through the real gateway over TLS (h1 and h2): a valid body reaches a
//! recording upstream byte for byte; every kind of refusal (415, 413, 400 for bodies that
//! are not strict JSON and for query/header rules, 422 for a schema break) answers its
//! status with an `application/problem+json` body that lists rules and pointers but never
//! the caller's values, writes a run record `invalid_payload` (or its kind) with the same
//! pointers, and counts in `flowgate_contract_refusals_total`; a refused call never reaches
//! the upstream and fetches no secret (the `file` vault's call counter stays at zero); an
//! anonymous caller is refused before its body is judged; names the contract drops never
//! reach the upstream; a reload swaps the contract, and a broken schema keeps the old one.

use crate::common;

use common::bao::write_private;
use common::{Fixture, metrics_text, run_record, trigger_to};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What reached the recording upstream: the request target, headers and exact body.
#[derive(Debug, Clone)]
struct Received {
    target: String,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

/// An upstream that keeps every request it gets and answers 200.
async fn start_recorder() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let keep = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let keep = keep.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let keep = keep.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
                        keep.lock().unwrap().push(Received {
                            target: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        });
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from("ok"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A schema as Power Automate's "Use sample payload to generate schema" writes it (no
/// `$schema`, draft-04 style), for the sample
/// `{"invoiceId":"INV-1","amount":12.5,"lines":[{"sku":"A-1","qty":2}]}`, with the
/// top-level `required` an admin adds.
const INVOICE_SCHEMA: &str = r#"{
    "type": "object",
    "properties": {
        "invoiceId": {
            "type": "string"
        },
        "amount": {
            "type": "number"
        },
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "sku": {
                        "type": "string"
                    },
                    "qty": {
                        "type": "integer"
                    }
                },
                "required": [
                    "sku",
                    "qty"
                ]
            }
        }
    },
    "required": [
        "invoiceId",
        "amount"
    ]
}"#;

/// The caller's values in refused bodies: none may appear in an answer or a record.
const MARK: &str = "CALLERVALUE";

/// A policy with one contract trigger `name` at `/in` injecting a secret from a file vault
/// named `vault` (its own name, so its call counter is this test's alone).
fn setup(fx: &Fixture, name: &str, vault: &str, upstream: SocketAddr, contract: &str) -> String {
    std::fs::write(fx.path().join("invoice.json"), INVOICE_SCHEMA).unwrap();
    write_private(&fx.path().join("secrets.toml"), "[flows]\napi_key = \"s3cr3t-contract-key\"");
    let vault_toml = format!("[vault.{vault}]\nkind = \"file\"\npath = \"secrets.toml\"\n");
    let extra = format!("inject.headers.\"x-api-key\" = \"secret://{vault}/flows#api_key\"\ncontract = {contract}\n");
    let trigger = trigger_to(name, "/in", &format!("http://{upstream}/flow?api-version=1"), &extra);
    fx.policy_text(&format!("{vault_toml}\n{trigger}"))
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| l.starts_with(name) && !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\""))).then(|| value.parse().ok())?
    })
}

const VALID: &str =
    "{\"invoiceId\" : \"INV-\\u00e9\",\n \"amount\": 12.50, \"lines\": [ {\"sku\":\"A-1\",\"qty\":2} ] }";

#[tokio::test]
async fn a_valid_body_reaches_the_upstream_byte_for_byte() {
    let fx = Fixture::new();
    let (up, seen) = start_recorder().await;
    let gw = fx.serve_policy(&setup(&fx, "contract-valid", "cvalid", up, "{ schema = \"invoice.json\" }")).await;
    for http2 in [false, true] {
        for content_type in ["application/json", "application/json; charset=utf-8", "application/invoice+json"] {
            let response = fx
                .client(http2)
                .post(gw.url("/in"))
                .header("content-type", content_type)
                .body(VALID)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{content_type} http2={http2}");
            let got = seen.lock().unwrap().pop().expect("the upstream got the call");
            assert_eq!(got.body.as_ref(), VALID.as_bytes(), "the bytes judged are the bytes forwarded");
            assert_eq!(got.headers["content-length"], VALID.len().to_string().as_str());
            assert!(got.headers.contains_key("x-api-key"), "the secret was injected after the check");
        }
    }
    gw.shutdown().await;
}

/// One refused call: what the caller and the run history see.
struct Refused {
    status: u16,
    problem: Value,
    record: Value,
}

async fn refused(fx: &Fixture, gw: &common::Running, request: reqwest::RequestBuilder) -> Refused {
    let _ = fx;
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = response.text().await.unwrap();
    assert_eq!(content_type, "application/problem+json", "{status}: {text}");
    assert!(!text.contains(MARK), "the caller's value is in the answer: {text}");
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["request_id"], id.as_str(), "{problem}");
    assert_eq!(problem["status"], status, "{problem}");
    let record = run_record(gw, &id).await;
    assert!(!record.to_string().contains(MARK), "the caller's value is in the run record: {record}");
    Refused { status, problem, record }
}

fn errors(problem: &Value) -> Vec<(String, String)> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let at = e.get("pointer").or_else(|| e.get("name")).and_then(Value::as_str).unwrap_or("?");
            (at.to_owned(), e["keyword"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn each_refusal_answers_its_status_without_values_and_never_reaches_the_upstream_or_the_vault() {
    let fx = Fixture::new();
    let (up, seen) = start_recorder().await;
    let contract = "{ schema = \"invoice.json\", max_body = \"1KiB\", \
                    query = { required = [\"source\"], patterns = { source = \"[a-z]{1,12}\" } }, \
                    headers = { allowed = [\"x-correlation-id\"] } }";
    let trigger = "contract-refusals";
    let gw = fx.serve_policy(&setup(&fx, trigger, "crefuse", up, contract)).await;
    let url = gw.url("/in?source=erp");
    let json = |client: &reqwest::Client, url: &str, body: String| {
        client.post(url).header("content-type", "application/json").body(body)
    };
    let big_line = format!("{{\"sku\":\"{MARK}\",\"qty\":1}}");
    let too_large =
        format!("{{\"invoiceId\":\"{MARK}\",\"amount\":1,\"lines\":[{}]}}", vec![big_line.as_str(); 40].join(","));
    // (request, status, decision, expected errors as (pointer or name, keyword))
    type Case = (reqwest::RequestBuilder, u16, &'static str, Vec<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        (
            fx.client(false).post(&url).header("content-type", "text/plain").body(MARK),
            415,
            "unsupported_media_type",
            vec![("content-type", "content_type")],
        ),
        (json(&fx.client(true), &url, too_large), 413, "body_too_large", vec![("", "max_body")]),
        (
            json(&fx.client(false), &url, format!("{{\"invoiceId\": \"{MARK}\", \"amount\": ")),
            400,
            "invalid_payload",
            vec![("/amount", "malformed")],
        ),
        (
            json(&fx.client(true), &url, format!("{{\"invoiceId\":\"{MARK}\",\"amount\":1,\"invoiceId\":\"x\"}}")),
            400,
            "invalid_payload",
            vec![("/invoiceId", "duplicate_key")],
        ),
        (
            json(&fx.client(false), &url, format!("{{\"invoiceId\":\"{MARK}\\ud800\",\"amount\":1}}")),
            400,
            "invalid_payload",
            vec![("/invoiceId", "lone_surrogate")],
        ),
        (
            json(
                &fx.client(true),
                &url,
                format!(
                    "{{\"invoiceId\":\"{MARK}\",\"amount\":1,\"lines\":[{{\"sku\":\"a\",\"qty\":9007199254740993}}]}}"
                ),
            ),
            400,
            "invalid_payload",
            vec![("/lines/0/qty", "unsafe_integer")],
        ),
        (
            json(
                &fx.client(false),
                &url,
                format!("{{\"amount\":\"{MARK}\",\"lines\":[{{\"sku\":\"{MARK}\",\"qty\":1.5}}]}}"),
            ),
            422,
            "invalid_payload",
            vec![("", "required"), ("/amount", "type"), ("/lines/0/qty", "type")],
        ),
        (json(&fx.client(true), &gw.url("/in"), VALID.into()), 400, "invalid_payload", vec![("source", "missing")]),
        (
            json(&fx.client(false), &gw.url(&format!("/in?source={MARK}")), VALID.into()),
            400,
            "invalid_payload",
            vec![("source", "pattern")],
        ),
        (
            json(&fx.client(true), &url, VALID.into()).header("x-debug", MARK),
            400,
            "invalid_payload",
            vec![("x-debug", "not_allowed")],
        ),
    ];
    for (request, status, decision, expected) in cases {
        let refused = refused(&fx, &gw, request).await;
        assert_eq!(refused.status, status, "{}", refused.problem);
        let mut found = errors(&refused.problem);
        found.sort();
        let mut expected: Vec<(String, String)> =
            expected.iter().map(|(a, k)| ((*a).to_owned(), (*k).to_owned())).collect();
        expected.sort();
        assert_eq!(found, expected, "{}", refused.problem);
        assert_eq!(refused.record["decision"], decision, "{}", refused.record);
        let reason = refused.record["reason"].as_str().unwrap();
        for (at, keyword) in &expected {
            assert!(reason.contains(keyword.as_str()) && reason.contains(at.as_str()), "{reason}");
        }
        let metrics = metrics_text(&gw).await;
        for (_, keyword) in &expected {
            let count =
                metric(&metrics, "flowgate_contract_refusals_total", &[("trigger", trigger), ("keyword", keyword)]);
            assert!(count.is_some_and(|c| c >= 1.0), "no refusal counted for {keyword}");
        }
    }
    assert!(seen.lock().unwrap().is_empty(), "a refused call reached the upstream");
    let metrics = metrics_text(&gw).await;
    assert_eq!(
        metric(&metrics, "flowgate_vault_calls_total", &[("vault", "crefuse")]),
        None,
        "a refused call fetched a secret"
    );

    // The same trigger admits a valid call: the secret is fetched and the upstream reached.
    let ok = json(&fx.client(true), &url, VALID.into()).header("x-correlation-id", "c-1").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(seen.lock().unwrap().len(), 1);
    let metrics = metrics_text(&gw).await;
    assert_eq!(metric(&metrics, "flowgate_vault_calls_total", &[("vault", "crefuse")]), Some(1.0));
    gw.shutdown().await;
}

#[tokio::test]
async fn an_anonymous_caller_is_refused_before_its_body_is_judged() {
    let fx = Fixture::new();
    let (up, seen) = start_recorder().await;
    let gw = fx.serve_policy(&setup(&fx, "contract-anon", "canon", up, "{ schema = \"invoice.json\" }")).await;
    let response = fx
        .anonymous_client(false)
        .post(gw.url("/in"))
        .header("content-type", "text/plain")
        .body("{ not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "identity is judged before the contract");
    let metrics = metrics_text(&gw).await;
    assert_eq!(metric(&metrics, "flowgate_contract_refusals_total", &[("trigger", "contract-anon")]), None);
    assert!(seen.lock().unwrap().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn names_the_contract_drops_never_reach_the_upstream() {
    let fx = Fixture::new();
    let (up, seen) = start_recorder().await;
    let contract = "{ query = { allowed = [\"source\"], others = \"drop\" }, \
                    headers = { allowed = [\"x-correlation-id\"], others = \"drop\" } }";
    let gw = fx.serve_policy(&setup(&fx, "contract-drop", "cdrop", up, contract)).await;
    let response = fx
        .client(true)
        .post(gw.url("/in?source=erp&debug=1&Trace=on"))
        .header("x-correlation-id", "c-7")
        .header("x-debug", "1")
        .header("content-type", "text/plain")
        .body("any body: no schema here")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let got = seen.lock().unwrap().pop().unwrap();
    assert!(got.target.contains("source=erp") && got.target.contains("api-version=1"), "{}", got.target);
    assert!(!got.target.contains("debug") && !got.target.contains("Trace"), "{}", got.target);
    assert_eq!(got.headers["x-correlation-id"], "c-7");
    assert!(!got.headers.contains_key("x-debug"));
    assert_eq!(got.body.as_ref(), b"any body: no schema here");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_swaps_the_contract_and_a_broken_schema_keeps_the_old_one() {
    let fx = Fixture::new();
    let (up, _seen) = start_recorder().await;
    let text = setup(&fx, "contract-reload", "creload", up, "{ schema = \"invoice.json\" }");
    let path = fx.write_policy(&text);
    let gw = common::start_gateway_for(&fx, &path).await;
    let post = |body: &'static str| {
        fx.client(false).post(gw.url("/in")).header("content-type", "application/json").body(body).send()
    };
    let reload =
        || reqwest::Client::new().post(gw.admin_url("/reload")).header("content-type", "application/json").send();
    assert_eq!(post(r#"{"invoiceId":"a"}"#).await.unwrap().status(), 422);

    // A schema that is not one: the reload is refused, located, and the old contract stays.
    std::fs::write(fx.path().join("loose.json"), r#"{"type": "objekt"}"#).unwrap();
    std::fs::write(&path, text.replace("invoice.json", "loose.json")).unwrap();
    let answer = reload().await.unwrap();
    assert_eq!(answer.status(), 422);
    let body: Value = answer.json().await.unwrap();
    let first = body["errors"][0].as_str().unwrap();
    assert!(
        first.contains("policy.toml:") && first.contains("contract.schema") && first.contains("loose.json"),
        "{first}"
    );
    assert_eq!(post(r#"{"invoiceId":"a"}"#).await.unwrap().status(), 422);

    // A valid looser schema: swapped in with the rest of the policy.
    std::fs::write(fx.path().join("loose.json"), json!({"type": "object"}).to_string()).unwrap();
    assert_eq!(reload().await.unwrap().status(), 200);
    assert_eq!(post(r#"{"invoiceId":"a"}"#).await.unwrap().status(), 200);
    gw.shutdown().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_flowgate");

#[test]
fn check_locates_a_broken_schema_and_summarises_a_good_one() {
    let fx = Fixture::new();
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let text = setup(&fx, "contract-check", "ccheck", up, "{ schema = \"invoice.json\", max_body = \"64KiB\" }");
    let path = fx.write_policy(&text);
    let line = text.lines().position(|l| l.starts_with("contract =")).unwrap() + 1;

    let out = std::process::Command::new(BIN).arg("check").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("    contract: schema invoice.json (draft 4) | content types application/json, application/*+json | max body 65536 bytes"),
        "{stdout}"
    );

    for (schema, says) in [
        (
            "{\n  \"type\": \"object\",\n  \"properties\": {\n    \"a\": { \"type\": \"string\" },\n  }\n}",
            "invoice.json:5:",
        ),
        ("{\"type\": \"objekt\"}", "not a valid schema"),
        ("{\"type\": \"object\", \"type\": \"array\"}", "duplicate_key"),
    ] {
        std::fs::write(fx.path().join("invoice.json"), schema).unwrap();
        let out = std::process::Command::new(BIN).arg("check").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(&format!("policy.toml:{line}:")), "the policy entry is located: {stderr}");
        assert!(stderr.contains("contract.schema") && stderr.contains(says), "{stderr}");
    }
    std::fs::remove_file(fx.path().join("invoice.json")).unwrap();
    let out = std::process::Command::new(BIN).arg("check").arg(&path).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read schema file"));
}

#[test]
fn check_diff_reports_a_removed_or_widened_contract_as_loosened() {
    let fx = Fixture::new();
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let old = setup(
        &fx,
        "contract-diff",
        "cdiff",
        up,
        "{ schema = \"invoice.json\", max_body = \"64KiB\", query = { allowed = [\"a\"] } }",
    );
    let wider =
        setup(&fx, "contract-diff", "cdiff", up, "{ max_body = \"1MiB\", query = { allowed = [\"a\", \"b\"] } }");
    let none = setup(&fx, "contract-diff", "cdiff", up, "{}").replace("contract = {}\n", "");
    let old_path = fx.path().join("old.toml");
    std::fs::write(&old_path, &old).unwrap();
    for (new, expect) in [
        (
            &wider,
            vec![
                "contract.schema: invoice.json removed",
                "contract.max_body: 65536 -> 1048576 bytes",
                "contract.query.allowed: added b",
            ],
        ),
        (&none, vec!["contract: contract removed"]),
    ] {
        let new_path = fx.write_policy(new);
        let out =
            std::process::Command::new(BIN).arg("check").arg(&new_path).arg("--diff").arg(&old_path).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for line in expect {
            assert!(
                stdout.lines().any(|l| l.starts_with("LOOSENED") && l.contains(line)),
                "{line:?} not reported as loosened: {stdout}"
            );
        }
    }
}
