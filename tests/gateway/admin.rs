//! The admin API over real sockets: run records for every outcome, capture protections
//! applied to what the real gateway recorded (ring, file, admin API), and roles.

use crate::common;

use common::{Fixture, echo_trigger, start_echo, start_gateway_for};
use std::time::Duration;

/// Run records matching `query`, polled until one is there (records are written when the
/// response body ends).
async fn runs(gw: &common::Running, query: &str) -> Vec<serde_json::Value> {
    common::runs_at_least(gw, query, 1).await
}

#[tokio::test]
async fn every_call_leaves_one_record_that_the_admin_api_finds() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let audit_file = fx.path().join("runs.jsonl");
    let gw = fx
        .serve_policy(&fx.policy_text(&format!(
            "[audit]\nfile = \"{}\"\n\n{}",
            audit_file.display(),
            echo_trigger("t", "/t", echo, "")
        )))
        .await;
    let client = fx.client(false);
    let ok = client.post(gw.url("/t?sig=CALLERSIG")).body("{}").send().await.unwrap();
    let id = ok.headers()["x-request-id"].to_str().unwrap().to_owned();
    ok.bytes().await.unwrap();
    let missing = client.post(gw.url("/missing")).send().await.unwrap();
    missing.bytes().await.unwrap();

    let allowed = runs(&gw, "decision=allowed").await;
    assert_eq!(allowed.len(), 1, "{allowed:?}");
    assert_eq!(allowed[0]["id"], id.as_str());
    assert_eq!(allowed[0]["trigger"], "t");
    assert_eq!(allowed[0]["upstream_status"], 200);
    assert_eq!(allowed[0]["path"], "/t");
    assert_eq!(allowed[0]["bytes_in"], 2);
    assert!(allowed[0]["bytes_out"].as_u64().unwrap() > 0);
    let not_found = runs(&gw, "decision=not_found").await;
    assert_eq!(not_found.len(), 1);
    assert_eq!(not_found[0]["status"], 404);

    let one: serde_json::Value =
        reqwest::get(gw.admin_url(&format!("/runs/{id}"))).await.unwrap().json().await.unwrap();
    assert_eq!(one["id"], id.as_str());
    assert!(gw.gateway.audit.flush(Duration::from_secs(5)));
    let file = std::fs::read_to_string(&audit_file).unwrap();
    assert_eq!(file.lines().count(), 2, "{file}");
    assert!(!file.contains("CALLERSIG"), "the signed-URL signature reached the run file");
    gw.shutdown().await;
}

#[tokio::test]
async fn captured_calls_keep_no_protected_field_anywhere() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let audit_file = fx.path().join("runs.jsonl");
    let triggers = format!(
        "{}{}",
        echo_trigger("open", "/open", echo, "capture = true\nprivate_parameters = [\"password\"]"),
        echo_trigger("secure", "/secure", echo, "capture = true\nsecure_inputs = true\nsecure_outputs = true"),
    );
    let gw =
        fx.serve_policy(&fx.policy_text(&format!("[audit]\nfile = \"{}\"\n\n{triggers}", audit_file.display()))).await;
    let client = fx.client(true);
    let body = r#"{"a":[{"b":{"_private_deep":"PRIVATE-DEEP"}}],"password":"PASSWORD-VALUE","keep":"visible"}"#;
    let token = fx.token();
    for path in ["/open", "/secure"] {
        let r = client
            .post(gw.url(path))
            .header("authorization", format!("Bearer {token}"))
            .header("cookie", "session=COOKIE-VALUE")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let open = runs(&gw, "trigger=open").await;
    let secure = runs(&gw, "trigger=secure").await;
    assert!(gw.gateway.audit.flush(Duration::from_secs(5)));
    let file = std::fs::read_to_string(&audit_file).unwrap();
    let api = serde_json::to_string(&(open.clone(), secure.clone())).unwrap();
    for place in [&file, &api] {
        for leaked in ["PRIVATE-DEEP", "PASSWORD-VALUE", token.as_str(), "COOKIE-VALUE"] {
            assert!(!place.contains(leaked), "{leaked} was recorded: {place}");
        }
    }
    // Capture did happen for the open trigger (the visible field is there) ...
    assert!(serde_json::to_string(&open[0]["capture"]).unwrap().contains("visible"), "{:?}", open[0]);
    // ... with the gateway's limit header, which is marked sensitive only for h2's encoder.
    assert!(open[0]["capture"]["response"]["headers"]["ratelimit"].is_array(), "{:?}", open[0]);
    // ... and the secure one holds only the marker.
    assert_eq!(secure[0]["capture"]["request"]["secured"], true, "{:?}", secure[0]);
    assert_eq!(secure[0]["capture"]["response"]["secured"], true);
    gw.shutdown().await;
}

#[tokio::test]
async fn roles_decide_private_fields_and_reload() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger = echo_trigger("t", "/t", echo, "private_parameters = [\"password\"]");
    for (role, sees_private, reload_status) in
        [("viewer", false, 403), ("owner", true, 200), ("administrator", true, 200)]
    {
        let gw = fx
            .serve_policy(&fx.policy_text(&format!("{trigger}\n")).replace(
                "[admin]\nlisten = \"127.0.0.1:0\"\n",
                &format!("[admin]\nlisten = \"127.0.0.1:0\"\nloopback_role = \"{role}\"\n"),
            ))
            .await;
        let view: serde_json::Value = reqwest::get(gw.admin_url("/policy")).await.unwrap().json().await.unwrap();
        assert_eq!(view["role"], role);
        let shown = view["policy"].to_string().contains("private_parameters");
        assert_eq!(shown, sees_private, "{role}: {view}");
        assert!(!view["policy"].to_string().contains("UPSTREAMSIG"), "the upstream signature is shown: {view}");
        let reload = reqwest::Client::new()
            .post(gw.admin_url("/reload"))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(reload.status().as_u16(), reload_status, "{role}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn reload_through_the_admin_api_reports_located_errors() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let path = fx.write_policy(&fx.policy_text(&echo_trigger("t", "/t", echo, "")));
    let gw = start_gateway_for(&fx, &path).await;
    std::fs::write(&path, fx.policy_text(&echo_trigger("t", "/t", echo, "methdos = [\"GET\"]"))).unwrap();
    let response = reqwest::Client::new()
        .post(gw.admin_url("/reload"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    let first = body["errors"][0].as_str().unwrap();
    assert!(first.contains("policy.toml:") && first.contains("methods"), "{first}");
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_tokens_map_roles_claims_to_admin_roles() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger = echo_trigger("t", "/t", echo, "private_parameters = [\"password\"]");
    let gw = fx
        .serve_policy(&fx.policy_text(&trigger).replace(
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
            "[admin]\nlisten = \"127.0.0.1:0\"\nidentity = \"test\"\n\
         token_roles = { viewer = [\"Flowgate.Viewer\"], owner = [\"Flowgate.Owner\"] }\n",
        ))
        .await;
    let admin = reqwest::Client::new();
    let with_roles = |roles: &[&str]| {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        fx.token_with(move |o| o.roles = roles)
    };

    let anonymous = admin.get(gw.admin_url("/policy")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "loopback alone is not enough once an admin identity is set");
    let caller_only = admin.get(gw.admin_url("/runs")).bearer_auth(with_roles(&["Flows.Invoke"])).send().await.unwrap();
    assert_eq!(caller_only.status(), 403);

    let viewer = with_roles(&["Flowgate.Viewer"]);
    let view: serde_json::Value =
        admin.get(gw.admin_url("/policy")).bearer_auth(&viewer).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["role"], "viewer");
    assert!(!view["policy"].to_string().contains("private_parameters"));
    let reload = admin
        .post(gw.admin_url("/reload"))
        .header("content-type", "application/json")
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 403);

    let owner = with_roles(&["Flowgate.Viewer", "Flowgate.Owner"]);
    let view: serde_json::Value =
        admin.get(gw.admin_url("/policy")).bearer_auth(&owner).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["role"], "owner");
    assert!(view["policy"].to_string().contains("private_parameters"));
    let reload = admin
        .post(gw.admin_url("/reload"))
        .header("content-type", "application/json")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(admin.get(gw.admin_url("/healthz")).send().await.unwrap().status(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_caller_that_goes_away_still_leaves_a_record() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = fx.serve_policy(&fx.policy_text(&echo_trigger("slow", "/slow", echo, ""))).await;
    // HTTP/2: giving up resets the stream, and the gateway drops the call mid-forward.
    let impatient = fx.client(true);
    let gave_up =
        tokio::time::timeout(Duration::from_millis(400), impatient.post(gw.url("/slow?delay_ms=3000")).send()).await;
    assert!(gave_up.is_err(), "the slow call answered early");
    drop(impatient);
    let closed = runs(&gw, "decision=client_closed").await;
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0]["trigger"], "slow");
    assert_eq!(closed[0]["status"], 499);
    gw.shutdown().await;
}

/// `/policy` shows each trigger's effective rules beside the text: the built-in rate limit
/// where the policy writes none, `OFF` where it says "off", and `[private]` to viewers for
/// parts a trigger's `private_fields` hides.
#[tokio::test]
async fn policy_shows_effective_rate_limits_and_hides_private_parts() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let triggers = format!(
        "{}{}",
        echo_trigger("plain", "/plain", echo, "private_fields = [\"allow_ips\"]\nallow_ips = [\"127.0.0.0/8\"]"),
        echo_trigger("open", "/open", echo, "rate_limit = \"off\"\nprivate_fields = [\"rate_limit\"]"),
    );
    let policy = fx.write_policy(&fx.policy_text(&triggers));
    let gw = start_gateway_for(&fx, &policy).await;
    let view: serde_json::Value = reqwest::get(gw.admin_url("/policy")).await.unwrap().json().await.unwrap();
    let effective = view["effective"].as_array().expect("effective rules");
    assert_eq!(effective.len(), 2, "{view}");
    assert_eq!(effective[0]["name"], "plain");
    assert_eq!(effective[0]["rate_limit"], "2000 per 60s by principal (built-in default)");
    assert_eq!(effective[0]["ips"], "allow 127.0.0.0/8", "administrators see private parts");
    assert_eq!(effective[1]["rate_limit"], "OFF (trigger)");

    let viewer = flowgate::policy::load(&policy).unwrap();
    let shown: Vec<serde_json::Value> = viewer.routes.triggers().iter().map(|t| t.summary.view(false)).collect();
    assert_eq!(shown[0]["ips"], "[private]");
    assert_eq!(shown[0]["rate_limit"], "2000 per 60s by principal (built-in default)");
    assert_eq!(shown[1]["rate_limit"], "[private]");
    assert_eq!(shown[1]["who"], "tenant_users of identity test");
    gw.shutdown().await;
}
