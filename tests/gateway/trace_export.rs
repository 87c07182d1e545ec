//! OTLP/HTTP span export to a receiver started by the test, which decodes the protobuf:
//! one span per call, continuing the caller's trace under the caller's span, with child
//! spans for authentication, rate limit, secret resolution and the upstream call under it;
//! the upstream's parent is the call's span; unsampled callers' traces are not exported;
//! and nothing exported carries the token, a query string or the injected secret.

use crate::common;

use bytes::Bytes;
use common::bao::write_private;
use common::upstream::start_reporter;
use common::{Fixture, start_gateway_for, trigger_to};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const UNSAMPLED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const SECRET: &str = "s3cr3t-exported-nowhere-4c1d";

/// What the receiver got: each request's raw body and its decoded spans.
#[derive(Default)]
struct Received {
    raw: Vec<Bytes>,
    spans: Vec<Span>,
}

/// An OTLP/HTTP traces receiver on loopback (protobuf only).
async fn start_receiver() -> (SocketAddr, Arc<Mutex<Received>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Received::default()));
    let store = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let store = store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        assert_eq!(request.uri().path(), "/v1/traces");
                        assert_eq!(request.headers()["content-type"], "application/x-protobuf");
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let decoded = ExportTraceServiceRequest::decode(body.clone()).expect("protobuf");
                        let mut store = store.lock().unwrap();
                        store.raw.push(body);
                        for resource in decoded.resource_spans {
                            for scope in resource.scope_spans {
                                store.spans.extend(scope.spans);
                            }
                        }
                        let mut response = hyper::Response::new(Full::new(Bytes::new()));
                        response
                            .headers_mut()
                            .insert("content-type", hyper::header::HeaderValue::from_static("application/x-protobuf"));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

/// The spans of `trace` (hex), waiting until at least `count` arrived.
async fn spans_of(received: &Mutex<Received>, trace: &str, count: usize) -> Vec<Span> {
    for _ in 0..200 {
        let spans: Vec<Span> =
            received.lock().unwrap().spans.iter().filter(|s| hex::encode(&s.trace_id) == trace).cloned().collect();
        if spans.len() >= count {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {count} spans of trace {trace} arrived");
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a opentelemetry_proto::tonic::common::v1::AnyValue> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref())
}

#[tokio::test]
async fn one_span_per_call_with_children_under_the_callers_span_and_no_secret() {
    let fx = Fixture::new();
    let (receiver, received) = start_receiver().await;
    let upstream = start_reporter().await;
    write_private(&fx.path().join("secrets.toml"), &format!("[flows]\napi_key = \"{SECRET}\""));
    let text = fx.policy_text(&format!(
        "[traces]\notlp_endpoint = \"http://{receiver}/v1/traces\"\nservice_name = \"flowgate-test\"\n\n\
         [vault.files]\nkind = \"file\"\npath = \"secrets.toml\"\n\n{}",
        trigger_to(
            "exported",
            "/exported",
            &format!("http://{upstream}/echo?api-version=1&sig=UPSTREAMSIG"),
            // Body scrubbing off: the echo proves the value was injected (see below).
            "inject.headers.\"x-api-key\" = \"secret://files/flows#api_key\"\n\
             scrub_responses = false\n\
             rate_limit = { calls = 100, period = \"60s\" }"
        )
    ));
    let gw = start_gateway_for(&fx, &fx.write_policy(&text)).await;
    let token = fx.token();
    let client = fx.anonymous_client(false);
    let url = gw.url("/exported?code=CALLERQUERY");

    // An unsampled caller first: its trace is continued but not exported.
    let response = client
        .post(&url)
        .bearer_auth(&token)
        .header("traceparent", format!("00-{UNSAMPLED_TRACE}-b7ad6b7169203331-00"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let response = client
        .post(&url)
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .body("{\"hello\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-api-key"], SECRET, "the secret was not injected: the test would prove nothing");
    let upstream_parent = echoed["headers"]["traceparent"].as_str().unwrap().split('-').nth(2).unwrap().to_owned();

    let spans = spans_of(&received, TRACE, 5).await;
    let calls: Vec<&Span> = spans.iter().filter(|s| s.name == "call").collect();
    assert_eq!(calls.len(), 1, "{spans:#?}");
    let call = calls[0];
    assert_eq!(hex::encode(&call.parent_span_id), CALLER_SPAN, "the call's span is not under the caller's");
    assert_eq!(hex::encode(&call.span_id), upstream_parent, "the upstream's parent is not the call's span");
    assert_eq!(call.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32);
    assert!(call.end_time_unix_nano >= call.start_time_unix_nano);
    let path = attribute(call, "url.path").expect("url.path");
    assert_eq!(format!("{path:?}").matches("/exported").count(), 1);
    let mut children: Vec<&str> = spans
        .iter()
        .filter(|s| s.span_id != call.span_id)
        .map(|s| {
            assert_eq!(s.parent_span_id, call.span_id, "{} is not a child of the call", s.name);
            assert!(s.start_time_unix_nano >= call.start_time_unix_nano, "{} starts before the call", s.name);
            s.name.as_str()
        })
        .collect();
    children.sort_unstable();
    assert_eq!(children, ["authenticate", "rate limit", "resolve secrets", "upstream"]);

    // A call without a traceparent starts a sampled trace when spans are exported.
    let response = client.post(&url).bearer_auth(&token).body("{}").send().await.unwrap();
    let echoed: serde_json::Value = response.json().await.unwrap();
    let fresh = echoed["headers"]["traceparent"].as_str().unwrap().to_owned();
    assert!(fresh.ends_with("-01"), "{fresh}");
    let fresh_trace = fresh.split('-').nth(1).unwrap();
    let fresh_spans = spans_of(&received, fresh_trace, 5).await;
    let root = fresh_spans.iter().find(|s| s.name == "call").unwrap();
    assert!(root.parent_span_id.is_empty() || root.parent_span_id == [0; 8], "a fresh trace's root has a parent");

    {
        // Export runs in call order: the unsampled call, made first, would be here by now.
        let received = received.lock().unwrap();
        assert!(
            received.spans.iter().all(|s| hex::encode(&s.trace_id) != UNSAMPLED_TRACE),
            "an unsampled caller's trace was exported"
        );
        // No attribute (nor anything else exported) carries a token, a query string or a secret.
        let everything: Vec<u8> = received.raw.iter().flat_map(|b| b.to_vec()).collect();
        let contains = |needle: &str| everything.windows(needle.len()).any(|w| w == needle.as_bytes());
        for needle in [SECRET, token.as_str(), &token[..20], "CALLERQUERY", "code=", "UPSTREAMSIG", "sig=", "Bearer"] {
            assert!(!contains(needle), "{needle:?} was exported");
        }
        assert!(contains("flowgate-test"), "the service name is missing: the scan saw nothing");
    }
    gw.shutdown().await;
}

#[test]
fn a_bad_traces_section_is_refused_with_its_location() {
    let fx = Fixture::new();
    let trigger = trigger_to("t", "/t", "http://127.0.0.1:9/x", "");
    for (section, expected) in [
        ("[traces]\notlp_endpoint = \"ftp://collector/v1/traces\"\n", "is not an http(s) URL"),
        ("[traces]\nendpoint = \"http://collector:4318/v1/traces\"\n", "endpoint"),
        ("[traces]\notlp_endpoint = \"http://collector:4318/v1/traces\"\nqueue = 0\n", "queue must be at least 1"),
    ] {
        let path = fx.write_policy(&fx.policy_text(&format!("{section}\n{trigger}")));
        let errors = match flowgate::policy::load(&path) {
            Ok(_) => panic!("accepted: {section}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
        };
        assert!(errors.contains(expected), "{section}: {errors}");
        assert!(errors.contains("policy.toml:"), "not located: {errors}");
    }
    // Without the section, or without an endpoint, nothing is exported.
    let path = fx.write_policy(&fx.policy_text(&format!("[traces]\nservice_name = \"x\"\n\n{trigger}")));
    assert!(flowgate::policy::load(&path).unwrap().traces.is_none());
}
