//! The IP firewall over the whole gateway (real TLS, real clients bound to distinct
//! loopback addresses): trigger allow lists, global deny over trigger allow, IPv6 on `::1`,
//! the client address behind trusted proxies (and spoofing from untrusted peers), and
//! per-principal pinning.

use crate::common;

use common::{Fixture, Running, echo_trigger, start_echo};
use flowgate::auth::dev_issuer::DEMO_OID;
use std::net::IpAddr;

const OTHER_OID: &str = "99999999-8888-4777-8666-555555555555";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Status, and the run record of the call.
async fn call(client: &reqwest::Client, gw: &Running, path: &str, xff: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = client.post(gw.url(path)).body("{}");
    if let Some(xff) = xff {
        request = request.header("x-forwarded-for", xff);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = response.text().await.unwrap();
    if status == 403 {
        assert!(!body.contains("allow_ips") && !body.contains("127.0.0"), "the refusal says too much: {body}");
    }
    (status, common::run_record(gw, &id).await)
}

/// `policy` with `[server] trusted_header = "forwarded"` beside its `trusted_proxies`.
fn trusting_forwarded(policy: &str) -> String {
    policy.replacen("trusted_proxies =", "trusted_header = \"forwarded\"\ntrusted_proxies =", 1)
}

/// The fixture's policy with `[server] trusted_proxies` set.
fn with_trusted(fx: &Fixture, trusted: &str, rest: &str) -> String {
    fx.policy_text(rest).replacen("\n\n[admin]", &format!("\ntrusted_proxies = {trusted}\n\n[admin]"), 1)
}

#[tokio::test]
async fn trigger_allow_list_and_global_deny() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let triggers = format!(
        "{}{}",
        echo_trigger("only-2", "/only-2", echo, "allow_ips = [\"127.0.0.2\"]"),
        echo_trigger("allow-3", "/allow-3", echo, "allow_ips = [\"127.0.0.3/32\"]"),
    );
    let gw = fx
        .serve_policy(&with_trusted(
            &fx,
            "[\"127.0.0.1/32\"]",
            &format!("[firewall]\ndeny_ips = [\"127.0.0.3\"]\n\n{triggers}"),
        ))
        .await;
    let token = fx.token();
    let from = |addr: &str| fx.client_at(false, Some(&token), Some(ip(addr)), gw.https);

    let (status, record) = call(&from("127.0.0.2"), &gw, "/only-2", None).await;
    assert_eq!(status, 200);
    assert_eq!(record["client_ip"], "127.0.0.2");
    // The 403s of the allow list and of the global deny behind a trusted proxy need no
    // socket: `admission::trigger_allow_lists_and_the_global_deny_refuse_with_403`.

    // A globally denied peer is dropped at accept time, before the TLS handshake.
    let dropped = from("127.0.0.3").post(gw.url("/allow-3")).body("{}").send().await;
    assert!(dropped.is_err(), "a globally denied peer was served: {dropped:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn ipv6_loopback_allow_and_deny() {
    std::net::TcpListener::bind("[::1]:0").expect(
        "IPv6 loopback ::1 is unavailable on this machine; enable it (sysctl -w net.ipv6.conf.lo.disable_ipv6=0) \
         to run the IPv6 firewall test",
    );
    let fx = Fixture::new();
    let echo = start_echo().await;
    let triggers = format!(
        "{}{}{}",
        echo_trigger("v6-allow", "/v6-allow", echo, "allow_ips = [\"::1/128\"]"),
        echo_trigger("v6-deny", "/v6-deny", echo, "deny_ips = [\"::1/128\"]"),
        echo_trigger("v4-only", "/v4-only", echo, "allow_ips = [\"127.0.0.0/8\"]"),
    );
    let text = fx.policy_text(&triggers).replacen("listen = \"127.0.0.1:0\"\ntls", "listen = \"[::1]:0\"\ntls", 1);
    assert!(text.contains("[::1]:0"), "the policy variant did not take");
    let gw = fx.serve_policy(&text).await;
    assert_eq!(gw.https.ip(), ip("::1"));
    let client = fx.client_at(true, Some(&fx.token()), None, gw.https);

    let (status, record) = call(&client, &gw, "/v6-allow", None).await;
    assert_eq!(status, 200);
    assert_eq!(record["client_ip"], "::1");
    let (status, record) = call(&client, &gw, "/v6-deny", None).await;
    assert_eq!(status, 403);
    assert_eq!(record["reason"], "trigger deny_ips");
    let (status, _) = call(&client, &gw, "/v4-only", None).await;
    assert_eq!(status, 403, "::1 is not in 127.0.0.0/8");
    gw.shutdown().await;
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger = echo_trigger("behind-lb", "/behind-lb", echo, "allow_ips = [\"198.51.100.2\"]");
    let gw = fx.serve_policy(&with_trusted(&fx, "[\"127.0.0.1/32\"]", &trigger)).await;
    let token = fx.token();
    let forwarded = "203.0.113.7, 198.51.100.2";
    let xff = Some(forwarded);

    // Through the trusted proxy (127.0.0.1): the rightmost untrusted address is the client.
    let proxy = fx.client_at(false, Some(&token), Some(ip("127.0.0.1")), gw.https);
    let (status, record) = call(&proxy, &gw, "/behind-lb", xff).await;
    assert_eq!(status, 200);
    assert_eq!(record["client_ip"], "198.51.100.2");
    assert_eq!(record["peer_ip"], "127.0.0.1");
    // The upstream sees the settled client address, not the caller's header.
    let echoed: serde_json::Value = proxy
        .post(gw.url("/behind-lb"))
        .header("x-forwarded-for", forwarded)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-for"], "198.51.100.2");

    // The same header from an untrusted peer is ignored: the spoof is refused.
    let spoofer = fx.client_at(false, Some(&token), Some(ip("127.0.0.2")), gw.https);
    let (status, record) = call(&spoofer, &gw, "/behind-lb", xff).await;
    assert_eq!(status, 403);
    assert_eq!(record["client_ip"], "127.0.0.2");
    assert_eq!(record["reason"], "trigger allow_ips (not listed)");
    gw.shutdown().await;
}

#[tokio::test]
async fn two_trusted_hops_are_walked_right_to_left() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger = echo_trigger("two-hops", "/two-hops", echo, "allow_ips = [\"198.51.100.2\"]");
    let gw = fx.serve_policy(&with_trusted(&fx, "[\"127.0.0.1/32\", \"10.0.0.0/8\"]", &trigger)).await;
    let proxy = fx.client_at(false, Some(&fx.token()), Some(ip("127.0.0.1")), gw.https);

    // peer 127.0.0.1 (trusted) → 10.1.2.3 (trusted) → 198.51.100.2 is the client.
    let (status, record) = call(&proxy, &gw, "/two-hops", Some("203.0.113.7, 198.51.100.2, 10.1.2.3")).await;
    assert_eq!(status, 200);
    assert_eq!(record["client_ip"], "198.51.100.2");
    // Two header lines are one list.
    let response = proxy
        .post(gw.url("/two-hops"))
        .header("x-forwarded-for", "198.51.100.2")
        .header("x-forwarded-for", "10.9.9.9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // An untrusted hop on the right stops the walk: the allowed address further left is
    // only that hop's claim.
    let (status, record) = call(&proxy, &gw, "/two-hops", Some("198.51.100.2, 203.0.113.7, 10.1.2.3")).await;
    assert_eq!(status, 403);
    assert_eq!(record["client_ip"], "203.0.113.7");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_pinned_principal_is_accepted_only_from_its_ranges() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger =
        echo_trigger("pinned", "/pinned", echo, &format!("principal_ips = {{ \"oid:{DEMO_OID}\" = [\"127.0.0.2\"] }}"));
    let gw = fx.serve_policy(&fx.policy_text(&trigger)).await;
    let pinned = fx.token();
    let other = fx.token_with(|o| o.oid = OTHER_OID.into());

    let (status, record) =
        call(&fx.client_at(false, Some(&pinned), Some(ip("127.0.0.2")), gw.https), &gw, "/pinned", None).await;
    assert_eq!(status, 200);
    assert_eq!(record["principal"], format!("oid:{DEMO_OID}"));
    let (status, record) =
        call(&fx.client_at(false, Some(&pinned), Some(ip("127.0.0.1")), gw.https), &gw, "/pinned", None).await;
    assert_eq!(status, 403);
    assert_eq!(record["decision"], "ip_forbidden");
    assert!(record["reason"].as_str().unwrap().starts_with("principal pin"), "{record}");
    // Principals without a pin are not restricted.
    let (status, _) =
        call(&fx.client_at(false, Some(&other), Some(ip("127.0.0.1")), gw.https), &gw, "/pinned", None).await;
    assert_eq!(status, 200);
    gw.shutdown().await;
}

/// A `POST` with `headers`: status, and the run record of the call.
async fn post_with(
    client: &reqwest::Client,
    gw: &Running,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut request = client.post(gw.url(path)).body("{}");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    response.bytes().await.unwrap();
    (status, common::run_record(gw, &id).await)
}

/// A caller's `POST` with its own `Forwarded` header next to the load balancer's
/// `X-Forwarded-For`, from the trusted proxy at 127.0.0.1.
async fn via_lb(client: &reqwest::Client, gw: &Running, forwarded: &str, xff: &str) -> (u16, serde_json::Value) {
    post_with(client, gw, "/behind-lb", &[("forwarded", forwarded), ("x-forwarded-for", xff)]).await
}

#[tokio::test]
async fn only_the_trusted_header_names_the_client() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger = echo_trigger("behind-lb", "/behind-lb", echo, "allow_ips = [\"198.51.100.2\"]");
    // Default: the load balancer appends to X-Forwarded-For and passes the caller's own
    // `Forwarded` through untouched. The caller must not pick its address with it.
    let gw = fx.serve_policy(&with_trusted(&fx, "[\"127.0.0.1/32\"]", &trigger)).await;
    let proxy = fx.client_at(false, Some(&fx.token()), Some(ip("127.0.0.1")), gw.https);
    let (status, record) = via_lb(&proxy, &gw, "for=198.51.100.2", "203.0.113.7").await;
    assert_eq!(record["client_ip"], "203.0.113.7", "{record}");
    assert_eq!(status, 403);
    let (status, record) = via_lb(&proxy, &gw, "for=203.0.113.7", "198.51.100.2").await;
    assert_eq!((status, record["client_ip"].as_str()), (200, Some("198.51.100.2")));
    // Neither of the caller's headers reaches the upstream; only flowgate's own.
    let echoed: serde_json::Value = proxy
        .post(gw.url("/behind-lb"))
        .header("forwarded", "for=203.0.113.7")
        .header("x-forwarded-for", "198.51.100.2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-for"], "198.51.100.2");
    assert!(echoed["headers"].get("forwarded").is_none(), "{echoed}");
    gw.shutdown().await;

    // `trusted_header = "forwarded"`: the other way round.
    let text = trusting_forwarded(&with_trusted(&fx, "[\"127.0.0.1/32\"]", &trigger));
    let gw = fx.serve_policy(&text).await;
    let proxy = fx.client_at(false, Some(&fx.token()), Some(ip("127.0.0.1")), gw.https);
    let (status, record) = via_lb(&proxy, &gw, "for=203.0.113.7", "198.51.100.2").await;
    assert_eq!((status, record["client_ip"].as_str()), (403, Some("203.0.113.7")), "{record}");
    let (status, record) = via_lb(&proxy, &gw, "for=198.51.100.2", "203.0.113.7").await;
    assert_eq!((status, record["client_ip"].as_str()), (200, Some("198.51.100.2")), "{record}");
    gw.shutdown().await;
}

/// The review's examples over the whole gateway: junk a caller writes left of the hop the
/// trusted proxy appended never turns the call into one from the proxy itself, and an
/// unreadable hop where the client should be is refused with 400.
#[tokio::test]
async fn junk_left_of_the_appended_hop_is_never_the_proxys_address() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let triggers = format!(
        "{}{}",
        echo_trigger("denied", "/denied", echo, "deny_ips = [\"198.51.100.7\"]"),
        echo_trigger("allowed", "/allowed", echo, "allow_ips = [\"127.0.0.1\"]"),
    );
    let gw = fx.serve_policy(&with_trusted(&fx, "[\"127.0.0.1\"]", &triggers)).await;
    let proxy = fx.client_at(false, Some(&fx.token()), Some(ip("127.0.0.1")), gw.https);

    let (status, record) = call(&proxy, &gw, "/denied", Some("x, 198.51.100.7")).await;
    assert_eq!((status, record["client_ip"].as_str()), (403, Some("198.51.100.7")), "{record}");
    // An allow list naming the proxy admits the proxy, never a caller behind it.
    let (status, record) = call(&proxy, &gw, "/allowed", Some("unknown-junk, 203.0.113.9")).await;
    assert_eq!((status, record["client_ip"].as_str()), (403, Some("203.0.113.9")), "{record}");
    // The hop that names the client is unreadable: refused, not judged as 127.0.0.1.
    for unreadable in ["203.0.113.9, junk", "unknown", "_hidden"] {
        let (status, record) = call(&proxy, &gw, "/allowed", Some(unreadable)).await;
        assert_eq!(status, 400, "{unreadable}: {record}");
        assert!(record["reason"].as_str().unwrap().contains("client address unknown"), "{record}");
    }
    gw.shutdown().await;

    // The same with `Forwarded`.
    let text = trusting_forwarded(&with_trusted(&fx, "[\"127.0.0.1\"]", &triggers));
    let gw = fx.serve_policy(&text).await;
    let proxy = fx.client_at(false, Some(&fx.token()), Some(ip("127.0.0.1")), gw.https);
    let (status, record) = via_forwarded(&proxy, &gw, "/denied", "for=junk, for=198.51.100.7").await;
    assert_eq!((status, record["client_ip"].as_str()), (403, Some("198.51.100.7")), "{record}");
    let (status, _) = via_forwarded(&proxy, &gw, "/allowed", "for=198.51.100.7, proto=https").await;
    assert_eq!(status, 400, "an element without for= names no client");
    gw.shutdown().await;
}

async fn via_forwarded(
    client: &reqwest::Client,
    gw: &Running,
    path: &str,
    forwarded: &str,
) -> (u16, serde_json::Value) {
    post_with(client, gw, path, &[("forwarded", forwarded)]).await
}

/// `ipv6_prefix`: addresses of one /64 share the `ip` rate-limit budget; another /64 has
/// its own. (Behind a trusted proxy, so that distinct IPv6 clients can be named.)
#[tokio::test]
async fn ipv6_clients_of_one_network_share_a_per_address_budget() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger = echo_trigger("per-ip", "/per-ip", echo, "rate_limit = { calls = 2, period = \"60s\", key = \"ip\" }");
    let gw = fx.serve_policy(&with_trusted(&fx, "[\"127.0.0.1\"]", &trigger)).await;
    let proxy = fx.client_at(false, Some(&fx.token()), Some(ip("127.0.0.1")), gw.https);
    let statuses = |hosts: &'static [&'static str]| {
        let proxy = proxy.clone();
        let gw = &gw;
        async move {
            let mut out = Vec::new();
            for host in hosts {
                out.push(call(&proxy, gw, "/per-ip", Some(host)).await.0);
            }
            out
        }
    };
    // Three hosts of 2001:db8:1:2::/64: the third call is over the shared budget.
    assert_eq!(statuses(&["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"]).await, [200, 200, 429]);
    // Another /64 is another address.
    assert_eq!(statuses(&["2001:db8:1:3::1"]).await, [200]);
    gw.shutdown().await;
}
