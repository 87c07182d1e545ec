//! W3C trace context over real sockets: the caller's `traceparent` reaches an echoing
//! upstream with the same trace id and flowgate's span as the parent; `tracestate` goes
//! with it; invalid values are replaced by a fresh trace and never forwarded; the trace id
//! is in the run record (and findable with `/runs?trace_id=`) and in the access-log line of
//! the real binary.

use crate::common;

use common::upstream::start_reporter;
use common::{Fixture, run_record, runs_at_least, start_echo, trigger_to};
use std::process::{Command, Stdio};
use std::time::Duration;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The `traceparent` fields `(trace id, parent id, flags)` of a valid version-00 value.
fn fields(traceparent: &str) -> (String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    for (part, len) in parts.iter().zip([2, 32, 16, 2]) {
        assert_eq!(part.len(), len, "{traceparent}");
        assert!(part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{traceparent}");
    }
    assert_ne!(parts[1], "0".repeat(32));
    assert_ne!(parts[2], "0".repeat(16));
    (parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
}

/// Calls `/traced` with `headers` and returns (request id, what the upstream echoed).
async fn call(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (String, serde_json::Value) {
    let mut request = client.post(url).body("{}");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    (id, response.json().await.unwrap())
}

#[tokio::test]
async fn the_callers_trace_is_continued_upstream_and_recorded() {
    let fx = Fixture::new();
    let upstream = start_reporter().await;
    let text = fx.policy_text(&trigger_to("traced", "/traced", &format!("http://{upstream}/echo"), ""));
    let gw = fx.serve_policy(&text).await;
    let client = fx.client(false);
    let url = gw.url("/traced");

    // A valid traceparent (sampled) with a tracestate.
    let caller = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let (id, echoed) =
        call(&client, &url, &[("traceparent", &caller), ("tracestate", "congo=t61rcWkgMzE,rojo=1")]).await;
    let sent = echoed["headers"]["traceparent"].as_str().expect("the upstream got a traceparent");
    let (trace, parent, flags) = fields(sent);
    assert_eq!(trace, TRACE, "the caller's trace is continued");
    assert_ne!(parent, CALLER_SPAN, "the upstream's parent is flowgate's own span, not the caller's");
    assert_eq!(flags, "01", "the sampled decision is kept");
    assert_eq!(echoed["headers"]["tracestate"], "congo=t61rcWkgMzE,rojo=1");
    let record = run_record(&gw, &id).await;
    assert_eq!(record["trace_id"], TRACE);
    // The flow run can be found from the caller's trace.
    let found = runs_at_least(&gw, &format!("trace_id={TRACE}"), 1).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["id"], id.as_str());

    // Each call gets its own span in the same trace.
    let (_, again) = call(&client, &url, &[("traceparent", &caller)]).await;
    let (trace_again, parent_again, _) = fields(again["headers"]["traceparent"].as_str().unwrap());
    assert_eq!(trace_again, TRACE);
    assert_ne!(parent_again, parent, "a span id was reused");
    assert!(again["headers"].get("tracestate").is_none(), "a tracestate appeared from nowhere");

    // No traceparent: a fresh trace, recorded as the upstream got it.
    let (id, echoed) = call(&client, &url, &[]).await;
    let (fresh, _, flags) = fields(echoed["headers"]["traceparent"].as_str().unwrap());
    assert_ne!(fresh, TRACE);
    assert_eq!(flags, "00", "flowgate records no spans, so a trace it starts is not sampled");
    assert_eq!(run_record(&gw, &id).await["trace_id"], fresh.as_str());

    // A refused call is found from the caller's trace too.
    let refused_trace = "0af7651916cd43dd8448eb211c80319c";
    let response = fx
        .anonymous_client(false)
        .post(&url)
        .header("traceparent", format!("00-{refused_trace}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(run_record(&gw, &id).await["trace_id"], refused_trace);
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_traceparents_are_replaced_never_forwarded() {
    let fx = Fixture::new();
    let upstream = start_reporter().await;
    let text = fx.policy_text(&trigger_to("traced", "/traced", &format!("http://{upstream}/echo"), ""));
    let gw = fx.serve_policy(&text).await;
    let client = fx.client(false);
    let url = gw.url("/traced");
    let invalid = [
        format!("ff-{TRACE}-{CALLER_SPAN}-01"),                  // version ff
        format!("00-{}-{CALLER_SPAN}-01", "0".repeat(32)),       // all-zero trace id
        format!("00-{TRACE}-{}-01", "0".repeat(16)),             // all-zero parent id
        format!("00-{}-{CALLER_SPAN}-01", TRACE.to_uppercase()), // upper-case hex
        format!("00-{}-{CALLER_SPAN}-01", &TRACE[..30]),         // short trace id
        format!("00-{TRACE}-{CALLER_SPAN}1-01"),                 // long parent id
        format!("00-{TRACE}-{CALLER_SPAN}-01-extra"),            // version 00 with a fifth field
        "garbage".to_owned(),
    ];
    for value in &invalid {
        let (id, echoed) = call(&client, &url, &[("traceparent", value), ("tracestate", "congo=t61rcWkgMzE")]).await;
        let sent = echoed["headers"]["traceparent"].as_str().expect("the upstream got a traceparent");
        assert_ne!(sent, value.as_str(), "an invalid traceparent was forwarded");
        let (trace, parent, _) = fields(sent);
        assert_ne!(trace.to_lowercase(), TRACE, "{value}: the invalid trace was continued");
        assert_ne!(parent, CALLER_SPAN, "{value}");
        assert!(
            echoed["headers"].get("tracestate").is_none(),
            "{value}: tracestate forwarded with an invalid traceparent"
        );
        let everything = echoed.to_string();
        assert!(!everything.contains(value.as_str()), "{value}: reached the upstream");
        assert_eq!(run_record(&gw, &id).await["trace_id"], trace.as_str(), "{value}: the record names another trace");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn the_access_log_line_of_the_real_binary_names_the_trace() {
    let fx = Fixture::new();
    fx.serve_issuer();
    let echo = start_echo().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = fx
        .policy_text(&trigger_to("traced", "/traced", &format!("http://{echo}/flow"), ""))
        .replace("listen = \"127.0.0.1:0\"\ntls", &format!("listen = \"127.0.0.1:{port}\"\ntls"));
    let path = fx.write_policy(&text);
    let log_path = fx.path().join("flowgate.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    let client = fx.client(false);
    let url = format!("https://localhost:{port}/traced");
    let caller = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let mut answered = None;
    for _ in 0..200 {
        if let Ok(response) = client.post(&url).header("traceparent", &caller).body("{}").send().await {
            answered = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = answered.expect("the gateway never answered");
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let _ = response.bytes().await;
    let mut line = None;
    for _ in 0..100 {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        line = log.lines().find(|l| l.contains(&id) && l.contains("flowgate::access")).map(str::to_owned);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let line = line.expect("no access-log line for the call");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["trace_id"], TRACE, "{line}");
    assert!(!line.contains(CALLER_SPAN), "the caller's span id is not ours to log: {line}");
}
