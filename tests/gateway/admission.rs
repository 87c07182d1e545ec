//! Admission and denial without a socket: `flowgate::proxy::handle` called directly with
//! in-memory requests, on paused tokio time, against the fixture's compiled policy. Each
//! case here is decided before any upstream or credential check needs the network (route,
//! method, IP rules, declared length, head size, missing credentials, the shield), so a
//! socket would only add a TLS handshake per call. Wire behaviour (h1/h2, TLS, bodies
//! streamed over the network, accept-time drops) stays in the socket tests.

use crate::common::{Fixture, echo_trigger};
use bytes::Bytes;
use flowgate::gateway::Gateway;
use flowgate::proxy::{Connection, handle};
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A port no upstream listens on: none of these calls reaches it.
const NOWHERE: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

/// A gateway running the fixture's policy with `extra` appended (compiled, not served).
fn gateway(fx: &Fixture, extra: &str) -> Arc<Gateway> {
    let path = fx.write_policy(&fx.policy_text(extra));
    let policy = flowgate::policy::load(&path).unwrap_or_else(|errors| panic!("test policy refused: {errors:#?}"));
    Gateway::new(policy, None).unwrap()
}

/// One call from `peer`: the status, the answer's headers, and the call's run record.
async fn call(
    gateway: &Arc<Gateway>,
    peer: &str,
    request: http::request::Builder,
    body: &'static [u8],
) -> (u16, http::HeaderMap, serde_json::Value) {
    let connection = Arc::new(Connection::new(format!("{peer}:40000").parse().unwrap(), true, 1));
    let request = request.header(header::HOST, "gw.example").body(Full::new(Bytes::from_static(body))).unwrap();
    let Ok(response) = handle(gateway.clone(), connection, request).await;
    let (parts, body) = response.into_parts();
    // The run record is written when the response body ends.
    body.collect().await.unwrap();
    let id = parts.headers["x-request-id"].to_str().unwrap();
    let record = gateway.audit.get_json(id).unwrap_or_else(|| panic!("no run record for {id}"));
    (parts.status.as_u16(), parts.headers, serde_json::from_str(&record).unwrap())
}

fn post(path: &str) -> http::request::Builder {
    Request::post(path)
}

/// The statuses of `foundation::each_error_status_happens_when_it_should` that need no
/// upstream: an unknown path, a method the trigger does not take, a declared body over
/// the limit, a head over `max_header_bytes`.
#[tokio::test(start_paused = true)]
async fn refusals_before_the_upstream_have_their_status() {
    let fx = Fixture::new();
    let ok = echo_trigger("ok", "/ok", NOWHERE, "max_body_bytes = 1000\nupstream_response_timeout = \"300ms\"");
    let gw = gateway(&fx, &format!("[limits]\nmax_header_bytes = 4096\n\n{ok}"));

    assert_eq!(call(&gw, "127.0.0.1", post("/nothing-here"), b"").await.0, 404);
    let (status, headers, _) = call(&gw, "127.0.0.1", Request::builder().method(Method::DELETE).uri("/ok"), b"").await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET, POST");
    // Declared too large: refused before the upstream.
    let declared = post("/ok").header(header::CONTENT_LENGTH, "1001");
    assert_eq!(call(&gw, "127.0.0.1", declared, &[b'a'; 1001]).await.0, 413);
    assert_eq!(call(&gw, "127.0.0.1", post("/ok").header("x-big", "a".repeat(8000)), b"").await.0, 431);
}

/// The refusals of `gateway_firewall::trigger_allow_list_and_global_deny` decided by IP
/// rules: a trigger's allow list, and the global deny over a trigger's allow, before the
/// route is looked up, for a client known only from a trusted proxy's X-Forwarded-For.
#[tokio::test(start_paused = true)]
async fn trigger_allow_lists_and_the_global_deny_refuse_with_403() {
    let fx = Fixture::new();
    let triggers = format!(
        "{}{}",
        echo_trigger("only-2", "/only-2", NOWHERE, "allow_ips = [\"127.0.0.2\"]"),
        echo_trigger("allow-3", "/allow-3", NOWHERE, "allow_ips = [\"127.0.0.3/32\"]"),
    );
    let text = fx.policy_text(&format!("[firewall]\ndeny_ips = [\"127.0.0.3\"]\n\n{triggers}")).replacen(
        "\n\n[admin]",
        "\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n[admin]",
        1,
    );
    let path = fx.write_policy(&text);
    let gw = Gateway::new(flowgate::policy::load(&path).unwrap(), None).unwrap();

    let (status, _, record) = call(&gw, "127.0.0.1", post("/only-2"), b"{}").await;
    assert_eq!(status, 403);
    assert_eq!(record["decision"], "ip_forbidden");
    assert_eq!(record["reason"], "trigger allow_ips (not listed)");
    assert_eq!(record["client_ip"], "127.0.0.1");

    let (status, _, record) =
        call(&gw, "127.0.0.1", post("/allow-3").header("x-forwarded-for", "127.0.0.3"), b"{}").await;
    assert_eq!(status, 403);
    assert_eq!(record["reason"], "global deny_ips");
    assert_eq!(record["client_ip"], "127.0.0.3");
    assert!(record["trigger"].is_null(), "{record}");
}

/// A bearer trigger called without a token, or with an `Authorization` header that is no
/// bearer token: 401 with the RFC 6750 challenge (`invalid_token` once one was presented),
/// before any key is needed. Each such refusal spends the caller's shield; once spent, the
/// address is refused with 429 before authentication.
#[tokio::test(start_paused = true)]
async fn missing_credentials_are_401_and_spend_the_shield_until_429() {
    let fx = Fixture::new();
    let trigger = echo_trigger("guarded", "/guarded", NOWHERE, "");
    let gw = gateway(&fx, &format!("[shield]\nper_second = 1\nburst = 2\n\n{trigger}"));

    let (status, headers, record) = call(&gw, "127.0.0.5", post("/guarded"), b"{}").await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer realm="), "{headers:?}");
    assert!(!headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    assert_eq!(record["decision"], "unauthenticated");
    let basic = post("/guarded").header(header::AUTHORIZATION, "Basic Zm9vOmJhcg==");
    let (status, headers, _) = call(&gw, "127.0.0.5", basic, b"{}").await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""), "{headers:?}");

    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(call(&gw, "127.0.0.5", post("/guarded"), b"{}").await.0);
        if got.last() == Some(&429) {
            break;
        }
    }
    assert_eq!(got.last(), Some(&429), "the address was never shielded: {got:?}");
    assert!(got[..got.len() - 1].iter().all(|s| *s == 401), "{got:?}");
    // Another address is judged on its own.
    assert_eq!(call(&gw, "127.0.0.6", post("/guarded"), b"{}").await.0, 401);
}
