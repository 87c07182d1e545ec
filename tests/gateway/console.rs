//! The console under `/ui` on the admin listener, against the real gateway: the strict
//! `Content-Security-Policy` and HTML escaping of hostile values (over HTTP), the same
//! roles as the admin API, and the pages driven in headless Chromium by Playwright
//! (`tests/console/check_console.py`) after real calls, one with a private parameter and
//! an injected secret.
//!
//! The browser test needs Debian's `chromium` and Playwright for Python
//! (`scripts/deps/console.sh` installs both); without them it fails and says so.
//! With `FLOWGATE_CONSOLE_SCREENSHOTS=docs/console` it also writes the README's screenshots.
#![allow(
    clippy::disallowed_methods,
    reason = "the browser check finds Chromium and its screenshot folder in the environment"
)]

use crate::common;

use common::bao::write_private;
use common::{Fixture, echo_trigger, start_echo, start_gateway_for};
use std::path::{Path, PathBuf};

const API_KEY: &str = "s3cr3t-console-api-key-4b1d";
const HR_KEY: &str = "s3cr3t-console-hr-key-77e0";
const PASSWORD: &str = "PASSWORD-VALUE-31337";
const PRIVATE_NOTE: &str = "PRIVATE-NOTE-c4f3";

/// The demo-like policy: an invoice trigger that captures calls, hides `password` and
/// injects a secret into a header and the JSON body; a trigger with secure inputs and
/// outputs; one whose injection is a private field.
fn console_policy(fx: &Fixture, echo: std::net::SocketAddr, admin_extra: &str) -> String {
    let triggers = [
        echo_trigger(
            "invoice",
            "/invoice",
            echo,
            "capture = true\nscrub_responses = false\nprivate_parameters = [\"password\"]\n\
             inject.headers.\"x-api-key\" = \"secret://files/flows#api_key\"\n\
             inject.json.\"/auth/key\" = \"secret://files/flows#api_key\"",
        ),
        echo_trigger("secure", "/secure", echo, "capture = true\nsecure_inputs = true\nsecure_outputs = true"),
        echo_trigger(
            "hr",
            "/hr",
            echo,
            "private_fields = [\"inject\"]\ninject.headers.\"x-hr-key\" = \"secret://files/flows#hr_key\"",
        ),
    ];
    fx.policy_text(&format!("[vault.files]\nkind = \"file\"\npath = \"secrets.toml\"\n\n{}", triggers.join("\n")))
        .replace("[admin]\nlisten = \"127.0.0.1:0\"\n", &format!("[admin]\nlisten = \"127.0.0.1:0\"\n{admin_extra}"))
}

fn write_vault(fx: &Fixture) {
    write_private(
        &fx.path().join("secrets.toml"),
        &format!("[flows]\napi_key = \"{API_KEY}\"\nhr_key = \"{HR_KEY}\"\npassword = \"unused\""),
    );
}

fn write_policy_as(fx: &Fixture, name: &str, text: &str) -> PathBuf {
    let path = fx.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// GETs an admin path, returning status, CSP header and body.
async fn get(url: &str) -> (u16, Option<String>, String) {
    let response = reqwest::get(url).await.unwrap();
    let csp = response.headers().get("content-security-policy").map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), csp, response.text().await.unwrap())
}

#[tokio::test]
async fn pages_carry_a_strict_csp_and_escape_hostile_values() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let name = "x<script>alert('pwn')</script>";
    let trigger = echo_trigger(name, "/xss", echo, "capture = true");
    let policy = fx.write_policy(&fx.policy_text(&trigger));
    let gw = start_gateway_for(&fx, &policy).await;
    let token = fx.token_with(|o| o.oid = "<img src=x onerror=alert(1)>".to_owned());
    let call = fx.anonymous_client(false).post(gw.url("/xss")).bearer_auth(&token).body("{}").send().await.unwrap();
    assert_eq!(call.status(), 200);
    let id = call.headers()["x-request-id"].to_str().unwrap().to_owned();
    call.bytes().await.unwrap();
    common::run_record(&gw, &id).await;

    for path in ["/ui/runs", &format!("/ui/runs/{id}"), "/ui/triggers", "/ui/secrets", "/ui/policy"] {
        let (status, csp, body) = get(&gw.admin_url(path)).await;
        assert_eq!(status, 200, "{path}: {body}");
        let csp = csp.unwrap_or_else(|| panic!("{path}: no Content-Security-Policy"));
        assert_eq!(csp, flowgate::console::CONTENT_SECURITY_POLICY, "{path}");
        for directive in ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{path}: {csp}");
        // The only script tag is the page's own external one.
        assert_eq!(body.matches("<script").count(), 1, "{path}: {body}");
        assert!(!body.contains("<img"), "{path}: the principal reached the page unescaped");
        assert!(!body.contains(&token), "{path}: the bearer token is on the page");
        if path != "/ui/secrets" {
            assert!(body.contains("&lt;script&gt;alert("), "{path}: the trigger name is not shown escaped: {body}");
        }
    }
    let (_, _, runs) = get(&gw.admin_url("/ui/runs")).await;
    assert!(runs.contains("oid:&lt;img src=x onerror=alert(1)&gt;"), "{runs}");
    // A filter value comes back escaped inside the form's attribute.
    let (status, _, filtered) = get(&gw.admin_url("/ui/runs?principal=%22%3E%3Cb%3Ex")).await;
    assert_eq!(status, 200);
    assert!(filtered.contains("value=\"&quot;&gt;&lt;b&gt;x\""), "{filtered}");
    assert!(!filtered.contains("<b>x"), "{filtered}");
    // A bad filter is a 400 page naming the problem, escaped.
    let (status, _, bad) = get(&gw.admin_url("/ui/runs?since=%3Cnow%3E")).await;
    assert_eq!(status, 400);
    assert!(bad.contains("&quot;&lt;now&gt;&quot; is neither"), "{bad}");

    let script = reqwest::get(gw.admin_url("/ui/console.js")).await.unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(script.text().await.unwrap().contains("/reload"));
    gw.shutdown().await;
}

/// Today's counts come from the run history; when the ring is full of today's records,
/// some may have been dropped, and the page says "at least".
#[tokio::test]
async fn todays_counts_say_at_least_when_the_ring_may_have_dropped_calls() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let policy =
        fx.write_policy(&fx.policy_text(&format!("[audit]\nring = 2\n\n{}", echo_trigger("t", "/t", echo, ""))));
    let gw = start_gateway_for(&fx, &policy).await;
    let client = fx.client(false);
    let mut last = String::new();
    for _ in 0..3 {
        let call = client.post(gw.url("/t")).body("{}").send().await.unwrap();
        assert_eq!(call.status(), 200);
        last = call.headers()["x-request-id"].to_str().unwrap().to_owned();
        call.bytes().await.unwrap();
    }
    common::run_record(&gw, &last).await;
    let (status, _, page) = get(&gw.admin_url("/ui/triggers")).await;
    assert_eq!(status, 200);
    assert!(page.contains("at least 2 allowed · 0 refused"), "{page}");
    gw.shutdown().await;
}

/// The console answers exactly whom the admin API answers, with the same role.
#[tokio::test]
async fn the_console_asks_for_the_admin_api_role() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    write_vault(&fx);
    let policy = fx.write_policy(&console_policy(
        &fx,
        echo,
        "identity = \"test\"\ntoken_roles = { viewer = [\"Flowgate.Viewer\"], owner = [\"Flowgate.Owner\"] }\n",
    ));
    let gw = start_gateway_for(&fx, &policy).await;
    let admin = reqwest::Client::new();
    let with_roles = |roles: &[&str]| {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        fx.token_with(move |o| o.roles = roles)
    };
    let anonymous = admin.get(gw.admin_url("/ui/runs")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let caller = admin.get(gw.admin_url("/ui/policy")).bearer_auth(with_roles(&["Flows.Invoke"])).send().await.unwrap();
    assert_eq!(caller.status(), 403);
    let rebound = admin.get(gw.admin_url("/ui/runs")).header("host", "attacker.example").send().await.unwrap();
    assert_eq!(rebound.status(), 421);

    let page = |token: String, path: &'static str| {
        let request = admin.get(gw.admin_url(path)).bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.text().await.unwrap()
        }
    };
    let viewer = page(with_roles(&["Flowgate.Viewer"]), "/ui/policy").await;
    assert!(viewer.contains("<strong id=\"role\">viewer</strong>"), "{viewer}");
    assert!(!viewer.contains("id=\"reload\""), "a viewer got the reload button");
    assert!(!viewer.contains("private_parameters"), "a viewer sees private fields");
    let secrets = page(with_roles(&["Flowgate.Viewer"]), "/ui/secrets").await;
    assert!(secrets.contains("secret://files/flows#api_key"), "{secrets}");
    assert!(!secrets.contains("hr_key"), "a viewer sees a private injection: {secrets}");
    let owner = page(with_roles(&["Flowgate.Owner"]), "/ui/policy").await;
    assert!(owner.contains("id=\"reload\""), "an owner has no reload button");
    assert!(owner.contains("private_parameters"));
    let secrets = page(with_roles(&["Flowgate.Owner"]), "/ui/secrets").await;
    assert!(secrets.contains("secret://files/flows#hr_key"), "{secrets}");
    for page in [&viewer, &owner, &secrets] {
        assert!(!page.contains(API_KEY) && !page.contains(HR_KEY));
    }

    // A run's private parameters are named to owners, as `/policy` names them, and to
    // viewers only as "hidden"; the value reaches neither.
    let call = fx
        .client(false)
        .post(gw.url("/invoice"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"customer":"Contoso","password":"{PASSWORD}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200);
    let id = call.headers()["x-request-id"].to_str().unwrap().to_owned();
    call.bytes().await.unwrap();
    // The record is written when the response body ends: wait for it (at most 5 s).
    for _ in 0..250 {
        if gw.gateway.audit.get(&id).is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let run = |roles: &'static [&'static str]| {
        let request = admin.get(gw.admin_url(&format!("/ui/runs/{id}"))).bearer_auth(with_roles(roles));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    let as_viewer = run(&["Flowgate.Viewer"]).await;
    assert!(as_viewer.contains("their names are hidden from viewers"), "{as_viewer}");
    assert!(!as_viewer.contains("private-parameter"), "{as_viewer}");
    let as_owner = run(&["Flowgate.Owner"]).await;
    assert!(as_owner.contains("<code class=\"private-parameter\">password</code>"), "{as_owner}");
    for page in [&as_viewer, &as_owner] {
        assert!(page.contains("&quot;customer&quot;: &quot;Contoso&quot;"), "{page}");
        assert!(!page.contains(PASSWORD) && !page.contains(API_KEY), "{page}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_headless_chromium() {
    let _browser = common::browser::take_turn().await;
    let fx = Fixture::new();
    let echo = start_echo().await;
    write_vault(&fx);
    let admin_policy = write_policy_as(&fx, "policy.toml", &console_policy(&fx, echo, ""));
    let viewer_policy = write_policy_as(&fx, "viewer.toml", &console_policy(&fx, echo, "loopback_role = \"viewer\"\n"));
    let gw = start_gateway_for(&fx, &admin_policy).await;
    let viewer = start_gateway_for(&fx, &viewer_policy).await;

    // The demo's calls: one with a private parameter, a `_private` field and an injected
    // secret (echoed back by the upstream), one to a secured trigger, one refused.
    let token = fx.token();
    let client = fx.client(false);
    let body =
        format!(r#"{{"customer":"Contoso","amount":42,"password":"{PASSWORD}","_private_note":"{PRIVATE_NOTE}"}}"#);
    let invoice =
        client.post(gw.url("/invoice")).header("content-type", "application/json").body(body).send().await.unwrap();
    assert_eq!(invoice.status(), 200);
    let invoice_id = invoice.headers()["x-request-id"].to_str().unwrap().to_owned();
    let echoed = invoice.text().await.unwrap();
    // Body scrubbing is off on this trigger, so the echo proves the upstream got the value
    // and the run record's own redaction is what the console shows.
    assert!(echoed.contains(API_KEY), "the upstream did not receive the injected secret: {echoed}");
    let secure = client.post(gw.url("/secure")).header("content-type", "application/json").body(r#"{"x":1}"#);
    let secure = secure.send().await.unwrap();
    let secure_id = secure.headers()["x-request-id"].to_str().unwrap().to_owned();
    secure.bytes().await.unwrap();
    let refused = fx.anonymous_client(false).post(gw.url("/invoice")).body("{}").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    refused.bytes().await.unwrap();
    assert_eq!(common::runs_at_least(&gw, "", 3).await.len(), 3);

    let ca = fx.path().join("ca.crt");
    let screenshots = std::env::var_os("FLOWGATE_CONSOLE_SCREENSHOTS").map(|dir| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let never = [API_KEY, HR_KEY, PASSWORD, PRIVATE_NOTE, token.as_str()].join("\n");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/check_console.py");
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(&script)
        .env("CONSOLE_ADMIN_URL", gw.admin_url(""))
        .env("CONSOLE_VIEWER_URL", viewer.admin_url(""))
        .env("CONSOLE_CALL_URL", gw.url("/invoice"))
        .env("CONSOLE_CA_FILE", &ca)
        .env("CONSOLE_TOKEN", &token)
        .env("CONSOLE_INVOICE_RUN", &invoice_id)
        .env("CONSOLE_SECURE_RUN", &secure_id)
        .env("CONSOLE_NEVER_SHOWN", &never)
        .env("CONSOLE_CHROMIUM", common::browser::chromium())
        .kill_on_drop(true);
    if let Some(dir) = &screenshots {
        command.env("CONSOLE_SCREENSHOTS", dir);
    }
    // A guard against a hung browser, not a timing assertion: the checks take seconds.
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), command.output())
        .await
        .expect("the browser checks still ran after 5 minutes (the browser hung?)")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser checks failed:\n{stdout}\n{stderr}");
    for check in [
        "runs_newest_first",
        "filter_by_trigger",
        "filter_by_decision",
        "filter_by_caller_and_time",
        "auto_refresh",
        "run_private_parameter_hidden",
        "run_secure_inputs_hidden",
        "triggers_rules_and_counts",
        "secrets_usage",
        "reload_button",
        "no_secret_in_any_page",
        "viewer_has_no_reload_button",
        "viewer_private_injection_hidden",
        "phone_width",
        "no_csp_violation",
    ] {
        assert!(stdout.contains(&format!("CHECK {check} ok")), "check {check} did not run:\n{stdout}\n{stderr}");
    }
    gw.shutdown().await;
    viewer.shutdown().await;
}
