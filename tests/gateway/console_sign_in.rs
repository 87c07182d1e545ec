//! Browser sign-in to the console (`[admin.sign_in]`) against a real OIDC provider with an
//! interactive login page (npm `oidc-provider` with its development interactions,
//! `scripts/oidc-login/`), started by the test on loopback: the authorization request
//! over HTTP (PKCE S256, state, nonce, the login cookie's attributes), bearer clients
//! judged as before, and the whole flow in headless Chromium driven by Playwright
//! (`tests/console/check_sign_in.py`): sign-in as administrator and viewer, sign-out at
//! the provider, a foreign tenant's user and a user without a role refused, forged,
//! expired and signed-out cookies, a POST without the CSRF token, a wrong `state`, a
//! replayed authorization code, and a reload that changes the sign-in settings.
//!
//! Needs `scripts/deps/oidc-login.sh` (Node and the provider) and
//! `scripts/deps/console.sh` (Chromium and Playwright); without them it fails and says so.
#![allow(clippy::disallowed_methods, reason = "the browser check finds Chromium in the environment")]

use crate::common;

use common::bao::write_private;
use common::ports::free_port;
use common::{Fixture, echo_trigger, start_echo, start_gateway_for};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const FOREIGN_TENANT: &str = "11111111-1111-4111-8111-111111111111";
const CLIENT_ID: &str = "flowgate-console";
const CLIENT_SECRET: &str = "console-client-secret-9f8e7d6c5b4a";

/// The npm provider as a child process (killed on drop).
struct Provider {
    _child: tokio::process::Child,
    port: u16,
}

impl Provider {
    async fn start(admin_ports: &[u16]) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/oidc-login");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "the npm OIDC provider with a login page is not installed: run scripts/deps/oidc-login.sh"
        );
        let port = free_port();
        let urls = |path: &str| admin_ports.iter().map(|p| format!("http://127.0.0.1:{p}{path}")).collect::<Vec<_>>();
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("server.mjs"))
            .args(["--port", &port.to_string(), "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET])
            .args(["--redirect", &urls("/ui/callback").join(","), "--post-logout", &urls("/ui/signed-out").join(",")])
            .args(["--tenant", TENANT, "--foreign-tenant", FOREIGN_TENANT])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node is not installed: run scripts/deps/oidc-login.sh");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next_line().await.unwrap().expect("the OIDC provider exited before listening");
        assert!(line.starts_with("listening"), "unexpected provider output: {line}");
        // Keep reading: a closed pipe would kill the provider at its next line of output.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { _child: child, port }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A policy whose admin listener on `admin_port` signs people in at the provider `issuer`.
fn sign_in_policy(fx: &Fixture, issuer: &str, admin_port: u16, timeouts: &str) -> String {
    let echo_placeholder = "127.0.0.1:9";
    let text = fx.policy_text(&format!(
        "[vault.files]\nkind = \"file\"\npath = \"secrets.toml\"\n\n\
         [identity.login]\ndiscovery = \"{issuer}/.well-known/openid-configuration\"\nissuer = \"{issuer}\"\n\
         audiences = [\"api://flowgate\"]\ntenants = [\"{TENANT}\"]\nallow_insecure_http = true\n\n{}",
        echo_trigger("invoice", "/invoice", echo_placeholder.parse().unwrap(), "")
    ));
    text.replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\nidentity = \"login\"\n\
             token_roles = {{ viewer = [\"Flowgate.Viewer\"], administrator = [\"Flowgate.Admin\"] }}\n\
             sign_in = {{ client_id = \"{CLIENT_ID}\", client_secret = \"secret://files/console#client_secret\", \
             redirect_url = \"http://127.0.0.1:{admin_port}/ui/callback\", {timeouts} }}\n"
        ),
    )
}

fn write_vault(fx: &Fixture) {
    write_private(&fx.path().join("secrets.toml"), &format!("[console]\nclient_secret = \"{CLIENT_SECRET}\""));
}

fn write_policy_as(fx: &Fixture, name: &str, text: &str) -> PathBuf {
    let path = fx.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().unwrap()
}

#[tokio::test]
async fn a_signed_out_browser_is_sent_to_the_provider_with_pkce_state_and_nonce() {
    let fx = Fixture::new();
    write_vault(&fx);
    let admin_port = free_port();
    let provider = Provider::start(&[admin_port]).await;
    let _echo = start_echo().await;
    let policy = fx.write_policy(&sign_in_policy(&fx, &provider.issuer(), admin_port, "idle_timeout = \"60s\""));
    let gw = start_gateway_for(&fx, &policy).await;
    let client = no_redirects();

    let response = client.get(gw.admin_url("/ui/triggers?x=1")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.as_str().split('?').next().unwrap(), format!("{}/auth", provider.issuer()));
    let params: std::collections::HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], CLIENT_ID);
    assert_eq!(params["redirect_uri"], format!("http://127.0.0.1:{admin_port}/ui/callback"));
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["code_challenge"].len(), 43);
    assert_eq!(params["scope"], "openid profile");
    assert!(params["state"].len() >= 43 && params["nonce"].len() >= 43);
    assert_ne!(params["state"], params["nonce"]);
    assert!(!location.as_str().contains(CLIENT_SECRET));
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("__Host-flowgate-login="), "{cookie}");
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    // Each sign-in gets its own state and verifier.
    let again = client.get(gw.admin_url("/ui")).send().await.unwrap();
    let again = url::Url::parse(again.headers()["location"].to_str().unwrap()).unwrap();
    let again: std::collections::HashMap<String, String> = again.query_pairs().into_owned().collect();
    assert_ne!(again["state"], params["state"]);
    assert_ne!(again["code_challenge"], params["code_challenge"]);

    // API clients: a bearer header is judged as a bearer token, never redirected.
    let bearer = client.get(gw.admin_url("/ui/runs")).bearer_auth("not.a.token").send().await.unwrap();
    assert_eq!(bearer.status(), 401);
    let api = client.get(gw.admin_url("/policy")).send().await.unwrap();
    assert_eq!(api.status(), 401, "the JSON API answers 401, not a sign-in page");
    // A forged session cookie is no session.
    let forged = client
        .get(gw.admin_url("/policy"))
        .header("cookie", format!("__Host-flowgate-session={}", "A".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // A callback whose state this gateway never issued.
    let wrong = client.get(gw.admin_url("/ui/callback?code=abc&state=nope")).send().await.unwrap();
    assert_eq!(wrong.status(), 400);
    assert!(wrong.headers().get("set-cookie").is_none());
    // A sign-out posted without the session cookie (what a page of another site can send:
    // a Lax cookie stays home) ends nothing and sends nobody to the provider.
    let cross_site = client
        .post(gw.admin_url("/ui/sign-out"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=x")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 200);
    assert!(cross_site.headers().get("set-cookie").is_none());
    let page = cross_site.text().await.unwrap();
    assert!(page.contains("id=\"sign-in-again\"") && !page.contains(&provider.issuer()), "{page}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_sign_in_with_a_browser_and_out_again() {
    let _browser = common::browser::take_turn().await;
    let fx = Fixture::new();
    write_vault(&fx);
    let (main_port, short_port) = (free_port(), free_port());
    let provider = Provider::start(&[main_port, short_port]).await;
    let main_policy = write_policy_as(
        &fx,
        "policy.toml",
        &sign_in_policy(&fx, &provider.issuer(), main_port, "idle_timeout = \"60s\", absolute_timeout = \"1h\""),
    );
    // Sessions that expire while the test waits.
    let short_policy = write_policy_as(
        &fx,
        "short.toml",
        &sign_in_policy(&fx, &provider.issuer(), short_port, "idle_timeout = \"2s\", absolute_timeout = \"2s\""),
    );
    let gw = start_gateway_for(&fx, &main_policy).await;
    let short = start_gateway_for(&fx, &short_policy).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/check_sign_in.py");
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(&script)
        .env("SIGN_IN_ADMIN_URL", gw.admin_url(""))
        .env("SIGN_IN_SHORT_URL", short.admin_url(""))
        .env("SIGN_IN_PROVIDER", provider.issuer())
        .env("SIGN_IN_POLICY_FILE", &main_policy)
        .env("SIGN_IN_CLIENT_SECRET", CLIENT_SECRET)
        .env("CONSOLE_CHROMIUM", common::browser::chromium())
        .kill_on_drop(true);
    // A guard against a hung browser, not a timing assertion: the checks take seconds.
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), command.output())
        .await
        .expect("the browser checks still ran after 5 minutes (the browser hung?)")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser checks failed:\n{stdout}\n{stderr}");
    for check in [
        "admin_signs_in_and_lands_on_runs",
        "session_cookie_attributes",
        "reload_with_csrf_token",
        "post_without_csrf_token_refused",
        "cross_site_form_post_refused",
        "forged_cookie_refused",
        "wrong_state_refused",
        "replayed_code_refused",
        "admin_signs_out_at_the_provider",
        "signed_out_cookie_refused",
        "sent_to_log_in_again",
        "viewer_sees_what_a_viewer_sees",
        "foreign_tenant_refused",
        "user_without_role_refused",
        "expired_cookie_refused",
        "reload_changing_sign_in_ends_sessions",
        "secret_never_shown",
    ] {
        assert!(stdout.contains(&format!("CHECK {check} ok")), "check {check} did not run:\n{stdout}\n{stderr}");
    }
    gw.shutdown().await;
    short.shutdown().await;
}

/// `flowgate check` prints the sign-in settings (client id, discovery, never the secret)
/// and refuses settings that would hand out a session cookie unsafely, without echoing a
/// literal secret.
#[test]
fn check_prints_sign_in_and_refuses_unsafe_settings() {
    const BIN: &str = env!("CARGO_BIN_EXE_flowgate");
    let fx = Fixture::new();
    write_vault(&fx);
    let provider_port = free_port();
    // Compiling fetches nothing: no provider needs to run.
    let issuer = format!("http://127.0.0.1:{provider_port}");
    let check = |text: &str| {
        let path = write_policy_as(&fx, "check.toml", text);
        let out = std::process::Command::new(BIN).arg("check").arg(&path).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let good = sign_in_policy(&fx, &issuer, 9901, "idle_timeout = \"10m\"");
    let (ok, out) = check(&good);
    assert!(ok, "{out}");
    let line = out.lines().find(|l| l.starts_with("console sign-in:")).unwrap_or_else(|| panic!("{out}"));
    for part in [
        "identity login",
        &format!("discovery http://127.0.0.1:{provider_port}/.well-known/openid-configuration"),
        "client_id flowgate-console",
        "confidential",
        "redirect http://127.0.0.1:9901/ui/callback",
        "idle 10m",
        "absolute 8h",
    ] {
        assert!(line.contains(part), "{line} lacks {part}");
    }
    assert!(!out.contains(CLIENT_SECRET) && !out.contains("secret://files"), "{out}");

    let literal = good.replace("secret://files/console#client_secret", "hunter2-literal");
    let (ok, out) = check(&literal);
    assert!(!ok && out.contains("must be a secret reference"), "{out}");
    assert!(!out.contains("hunter2-literal"), "the literal secret was echoed: {out}");
    let off_box = good.replace("http://127.0.0.1:9901/ui/callback", "http://admin.internal:9901/ui/callback");
    let (ok, out) = check(&off_box);
    assert!(!ok && out.contains("secure context"), "{out}");
    let no_identity = good.replace("identity = \"login\"\n", "");
    let (ok, out) = check(&no_identity);
    assert!(!ok && out.contains("sign_in needs an admin identity"), "{out}");
    let short = good.replace("idle_timeout = \"10m\"", "idle_timeout = \"10m\", absolute_timeout = \"1m\"");
    let (ok, out) = check(&short);
    assert!(!ok && out.contains("shorter than idle_timeout"), "{out}");
}
