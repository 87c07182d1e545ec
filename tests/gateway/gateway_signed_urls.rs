//! Over the real gateway: a signed URL opens only the trigger it was
//! issued for (version 2 signs the trigger name), so a URL for one virtual host is refused
//! on another trigger with the same path; version-1 URLs keep working while `accept_v1` is
//! on and stop when it is turned off; `flowgate sign-url` issues version 2 for the trigger
//! the URL routes to.
#![allow(clippy::disallowed_methods, reason = "signed URLs are checked by a gateway that runs on the real clock")]

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Fixture, Running, start_echo, start_gateway_for};
use hmac::{Hmac, Mac};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-test-url-key";
const BIN: &str = env!("CARGO_BIN_EXE_flowgate");

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Two `who = "anyone"` triggers on the same path: one for the virtual host `a.example`,
/// one for any other host.
fn policy(fx: &Fixture, echo: SocketAddr, signed_urls_extra: &str) -> std::path::PathBuf {
    std::fs::write(fx.path().join("url.key"), [KEY, b"\n"].concat()).unwrap();
    let trigger = |name: &str, host: &str| {
        format!(
            "[[trigger]]\nname = \"{name}\"\n{host}path = \"/hook\"\nmethods = [\"POST\"]\n\
             upstream = \"http://{echo}/flows/{name}/invoke\"\nwho = \"anyone\"\n\n"
        )
    };
    fx.write_policy(&fx.policy_text(&format!(
        "[signed_urls]\nkeys = {{ k1 = \"file:url.key\" }}\nprimary = \"k1\"\n{signed_urls_extra}\n\n{}{}",
        trigger("hook-a", "host = \"a.example\"\n"),
        trigger("hook-any", "")
    )))
}

/// The query a version-1 URL carried: HMAC over the documented v1 text (method, path,
/// expiry, key id; no trigger), as releases before trigger binding signed it.
fn v1_query(method: &str, path: &str, expires_at: u64) -> String {
    let text = format!("flowgate-url-v1\n{method}\n{path}\n{expires_at}\nk1");
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(KEY).unwrap();
    mac.update(text.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("fg_exp={expires_at}&fg_kid=k1&fg_sig={sig}")
}

/// POSTs `path_and_query` with `Host: host` (HTTP/1.1) and returns the status and the
/// run record.
async fn post(fx: &Fixture, gw: &Running, host: &str, path_and_query: &str) -> (u16, serde_json::Value) {
    let response =
        fx.anonymous_client(false).post(gw.url(path_and_query)).header("host", host).body("{}").send().await.unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    response.bytes().await.unwrap();
    let record = common::run_record(gw, &id).await;
    (status, record)
}

fn query_of(url: &str) -> &str {
    url.split_once('?').unwrap().1
}

#[tokio::test]
async fn a_url_signed_for_one_trigger_is_refused_on_another_with_the_same_path() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let path = policy(&fx, echo, "");
    let gw = start_gateway_for(&fx, &path).await;
    let sign = |trigger: &str| {
        let params = flowgate::auth::SignedUrlParams::default();
        flowgate::auth::sign_url(KEY, "k1", &params, trigger, "POST", "/hook", unix_now() + 600).unwrap()
    };
    let for_a = sign("hook-a");
    let for_any = sign("hook-any");

    // Each URL opens its own trigger...
    let (status, record) = post(&fx, &gw, "a.example", &format!("/hook?{}", query_of(&for_a))).await;
    assert_eq!((status, record["trigger"].as_str()), (200, Some("hook-a")));
    let (status, record) = post(&fx, &gw, "localhost", &format!("/hook?{}", query_of(&for_any))).await;
    assert_eq!((status, record["trigger"].as_str()), (200, Some("hook-any")));
    // ...and neither opens the other, though path, method, expiry and key are the same.
    for (host, query, trigger) in
        [("localhost", query_of(&for_a), "hook-any"), ("a.example", query_of(&for_any), "hook-a")]
    {
        let (status, record) = post(&fx, &gw, host, &format!("/hook?{query}")).await;
        assert_eq!(status, 401, "replayed on {trigger}");
        assert_eq!(record["trigger"], trigger);
        assert!(record["reason"].as_str().unwrap().contains("bad URL signature"), "{record}");
    }

    // `flowgate sign-url` routes the URL to its trigger and signs version 2 for it.
    let out =
        Command::new(BIN).args(["sign-url", "--config"]).arg(&path).arg("https://a.example/hook").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let query = query_of(printed.trim()).to_owned();
    assert_eq!(post(&fx, &gw, "a.example", &format!("/hook?{query}")).await.0, 200);
    assert_eq!(post(&fx, &gw, "localhost", &format!("/hook?{query}")).await.0, 401);
    // A trigger that takes no signed URLs is named as such.
    let out = Command::new(BIN)
        .args(["sign-url", "--trigger", "missing", "--config"])
        .arg(&path)
        .arg("https://a.example/hook")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no trigger named \"missing\""));
    gw.shutdown().await;
}

#[tokio::test]
async fn version_1_urls_work_during_the_rollover_and_stop_after_it() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let old = v1_query("POST", "/hook", unix_now() + 600);

    // Default (accept_v1 = true): a URL issued before the upgrade keeps working.
    let gw = start_gateway_for(&fx, &policy(&fx, echo, "")).await;
    let (status, record) = post(&fx, &gw, "a.example", &format!("/hook?{old}")).await;
    assert_eq!((status, record["trigger"].as_str()), (200, Some("hook-a")));
    let metrics = common::metrics_text(&gw).await;
    assert!(metrics.contains("flowgate_signed_url_v1_accepted_total"), "the rollover is not observable");
    // A version-1 URL still covers its method.
    let for_get = v1_query("GET", "/hook", unix_now() + 600);
    assert_eq!(post(&fx, &gw, "a.example", &format!("/hook?{for_get}")).await.0, 401);
    gw.shutdown().await;

    // After the rollover (accept_v1 = false): refused; version 2 unaffected.
    let gw = start_gateway_for(&fx, &policy(&fx, echo, "accept_v1 = false")).await;
    let (status, record) = post(&fx, &gw, "a.example", &format!("/hook?{old}")).await;
    assert_eq!(status, 401);
    assert!(record["reason"].as_str().unwrap().contains("bad URL signature"), "{record}");
    let params = flowgate::auth::SignedUrlParams::default();
    let new = flowgate::auth::sign_url(KEY, "k1", &params, "hook-a", "POST", "/hook", unix_now() + 600).unwrap();
    assert_eq!(post(&fx, &gw, "a.example", &format!("/hook?{}", query_of(&new))).await.0, 200);
    gw.shutdown().await;
}
