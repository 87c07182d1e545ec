//! Rate limiting over the whole gateway (real TLS, real h2): the exact 2000-per-60 s budget
//! under 5,000 concurrent calls, independent keys (principal, ip, tcp_connection), shadow
//! mode, and the pre-authentication shield.

mod common;

use common::{Fixture, echo_trigger, metrics_text, runs_at_least, start_echo, start_gateway_for};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

const OTHER_OID: &str = "99999999-8888-4777-8666-555555555555";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// The `r=` (remaining) parameter of a `RateLimit` header value.
fn remaining(value: &str) -> u64 {
    value.split(';').find_map(|p| p.strip_prefix("r=")).and_then(|r| r.parse().ok()).unwrap_or_else(|| {
        panic!("no r= in RateLimit {value:?}");
    })
}

/// Sends `n` POSTs one after the other and returns the statuses.
async fn statuses(client: &reqwest::Client, url: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = client.post(url).body("{}").send().await.unwrap();
        out.push(r.status().as_u16());
        r.bytes().await.unwrap();
    }
    out
}

/// One principal, 5,000 calls at once over 50 h2 connections, 2000 allowed per 60 s.
///
/// The shield is off here: it limits per client address before authentication, and every
/// one of these calls comes from 127.0.0.1, so with its default burst (400) it would refuse
/// most calls before they reach the rate limiter under test. For the same reason the
/// per-address connection cap is lifted: a client racing 100 calls on a cold pool can open a
/// connection per call before h2 is negotiated, so 127.0.0.1 may briefly hold thousands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_concurrent_calls_admit_exactly_two_thousand() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger = echo_trigger("limited", "/limited", echo, "rate_limit = { calls = 2000, period = \"60s\" }");
    let policy = fx.policy_text(&format!("[shield]\nenabled = false\n\n{trigger}"));
    let policy = fx.write_policy(&policy.replacen("[server]\n", "[server]\nmax_connections_per_ip = 10000\n", 1));
    let gw = start_gateway_for(&fx, &policy).await;
    let token = fx.token();
    let url = gw.url("/limited");

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        // One client per connection: each reqwest client holds one h2 connection.
        let client = fx.client_at(true, Some(&token), None, gw.https);
        for _ in 0..100 {
            let (client, url) = (client.clone(), url.clone());
            calls.spawn(async move {
                let r = client.post(url).body("{}").send().await.expect("call");
                assert_eq!(r.version(), reqwest::Version::HTTP_2);
                let status = r.status().as_u16();
                let limit = header(&r, "ratelimit").map(str::to_owned);
                let policy = header(&r, "ratelimit-policy").map(str::to_owned);
                let retry_after = header(&r, "retry-after").map(str::to_owned);
                r.bytes().await.expect("body");
                (status, limit, policy, retry_after)
            });
        }
    }
    let results = tokio::time::timeout(Duration::from_secs(45), calls.join_all()).await.expect("the flood finished");

    let admitted: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!((admitted.len(), refused.len()), (2000, 3000), "other statuses: {:?}", {
        results.iter().filter(|r| r.0 != 200 && r.0 != 429).take(5).collect::<Vec<_>>()
    });
    // Every admitted call carries `RateLimit`, and each saw a distinct remaining budget.
    let seen: BTreeSet<u64> =
        admitted.iter().map(|(_, limit, _, _)| remaining(limit.as_deref().expect("RateLimit on a 200"))).collect();
    assert_eq!(seen, (0..2000).collect::<BTreeSet<u64>>());
    for (_, limit, policy, retry_after) in &refused {
        let secs: u64 = retry_after.as_deref().expect("Retry-After on a 429").parse().expect("whole seconds");
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
        assert_eq!(policy.as_deref(), Some("\"limited\";q=2000;w=60"));
        let limit = limit.as_deref().expect("RateLimit on a 429");
        assert!(limit.starts_with("\"limited\";r=0;t="), "{limit}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn each_principal_has_its_own_budget() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger =
        echo_trigger("pair", "/pair", echo, "rate_limit = { calls = 5, period = \"60s\", key = \"principal\" }");
    let policy = fx.write_policy(&fx.policy_text(&trigger));
    let gw = start_gateway_for(&fx, &policy).await;
    let alice = fx.client(true);
    let bob = fx.client_at(true, Some(&fx.token_with(|o| o.oid = OTHER_OID.into())), None, gw.https);
    let expected = vec![200, 200, 200, 200, 200, 429, 429];
    assert_eq!(statuses(&alice, &gw.url("/pair"), 7).await, expected);
    assert_eq!(statuses(&bob, &gw.url("/pair"), 7).await, expected, "bob was charged for alice's calls");
    // A new token of the same principal does not reset the budget.
    assert_eq!(statuses(&fx.client(false), &gw.url("/pair"), 1).await, vec![429]);
    let refused = runs_at_least(&gw, "trigger=pair&decision=rate_limited", 5).await;
    assert_eq!(refused.len(), 5);
    assert!(refused.iter().all(|r| r["status"] == 429), "{refused:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn ip_and_tcp_connection_keys() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let triggers = format!(
        "{}{}",
        echo_trigger("by-ip", "/by-ip", echo, "rate_limit = { calls = 3, period = \"60s\", key = \"ip\" }"),
        echo_trigger(
            "by-conn",
            "/by-conn",
            echo,
            "rate_limit = { calls = 2, period = \"60s\", key = \"tcp_connection\" }"
        ),
    );
    let policy = fx.write_policy(&fx.policy_text(&triggers));
    let gw = start_gateway_for(&fx, &policy).await;
    let token = fx.token();

    // Same principal, two client addresses: each address has its own budget.
    let from_1 = fx.client_at(true, Some(&token), Some(ip("127.0.0.1")), gw.https);
    let from_2 = fx.client_at(true, Some(&token), Some(ip("127.0.0.2")), gw.https);
    assert_eq!(statuses(&from_1, &gw.url("/by-ip"), 4).await, vec![200, 200, 200, 429]);
    assert_eq!(statuses(&from_2, &gw.url("/by-ip"), 4).await, vec![200, 200, 200, 429]);
    // A new connection from a spent address is still refused: the key is the address.
    let again_1 = fx.client_at(false, Some(&token), Some(ip("127.0.0.1")), gw.https);
    assert_eq!(statuses(&again_1, &gw.url("/by-ip"), 1).await, vec![429]);

    // Same principal and address, two connections: each connection has its own budget.
    let first = fx.client_at(true, Some(&token), None, gw.https);
    let second = fx.client_at(true, Some(&token), None, gw.https);
    assert_eq!(statuses(&first, &gw.url("/by-conn"), 3).await, vec![200, 200, 429]);
    assert_eq!(statuses(&second, &gw.url("/by-conn"), 3).await, vec![200, 200, 429]);
    gw.shutdown().await;
}

#[tokio::test]
async fn shadow_mode_admits_and_records_what_it_would_refuse() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger =
        echo_trigger("shadowed", "/shadowed", echo, "rate_limit = { calls = 1, period = \"60s\", shadow = true }");
    let policy = fx.write_policy(&fx.policy_text(&trigger));
    let gw = start_gateway_for(&fx, &policy).await;
    assert_eq!(statuses(&fx.client(true), &gw.url("/shadowed"), 3).await, vec![200, 200, 200]);

    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.lines().any(|l| l == "flowgate_ratelimit_shadow_refusals_total{trigger=\"shadowed\"} 2"),
        "{}",
        metrics.lines().filter(|l| l.contains("shadow")).collect::<Vec<_>>().join("\n")
    );
    let records = runs_at_least(&gw, "trigger=shadowed", 3).await;
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r["decision"] == "allowed" && r["status"] == 200), "{records:?}");
    let shadowed = records
        .iter()
        .filter(|r| r["reason"].as_str().is_some_and(|reason| reason.starts_with("shadow: would be rate limited")))
        .count();
    assert_eq!(shadowed, 2, "{records:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_shield_refuses_a_quick_third_call_from_one_address() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger = echo_trigger("shielded", "/shielded", echo, "");
    let policy = fx.write_policy(&fx.policy_text(&format!("[shield]\nper_second = 1\nburst = 2\n\n{trigger}")));
    let gw = start_gateway_for(&fx, &policy).await;
    let token = fx.token();
    // Warm the key store from another address, so the measured calls are quick.
    let warm = fx.client_at(false, Some(&token), Some(ip("127.0.0.3")), gw.https);
    assert_eq!(statuses(&warm, &gw.url("/shielded"), 1).await, vec![200]);

    let client = fx.client_at(true, Some(&token), Some(ip("127.0.0.1")), gw.https);
    let mut got = statuses(&client, &gw.url("/shielded"), 2).await;
    let third = client.post(gw.url("/shielded")).body("{}").send().await.unwrap();
    got.push(third.status().as_u16());
    assert_eq!(got, vec![200, 200, 429]);
    let retry_after: u64 = header(&third, "retry-after").expect("Retry-After").parse().unwrap();
    assert!(retry_after >= 1);
    assert!(header(&third, "ratelimit-policy").is_none(), "the shield is not a rate-limit policy");
    let id = header(&third, "x-request-id").unwrap().to_owned();
    third.bytes().await.unwrap();
    // Another address is not affected.
    let other = fx.client_at(false, Some(&token), Some(ip("127.0.0.2")), gw.https);
    assert_eq!(statuses(&other, &gw.url("/shielded"), 1).await, vec![200]);

    let shielded = runs_at_least(&gw, "decision=shielded", 1).await;
    assert_eq!(shielded.len(), 1, "{shielded:?}");
    assert_eq!(shielded[0]["id"], id.as_str());
    assert_eq!(shielded[0]["client_ip"], "127.0.0.1");
    assert!(shielded[0]["principal"].is_null(), "the shield ran after authentication");
    gw.shutdown().await;
}
