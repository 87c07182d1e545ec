//! The real `flowgate` binary: `check` exit codes and messages, refusal of a broken
//! policy at start, and SIGTERM draining an in-flight call before exiting 0.

use crate::common;

use common::ports::free_port;
use common::{Fixture, echo_trigger, start_echo};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_flowgate");

#[test]
fn check_accepts_a_valid_policy_with_a_summary() {
    let fx = Fixture::new();
    let path = fx.write_policy(&fx.policy_text(&echo_trigger("t", "/t", "127.0.0.1:9".parse().unwrap(), "")));
    let out = Command::new(BIN).arg("check").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].contains("1 trigger"), "{stdout}");
    // No rate_limit anywhere: the built-in default, and the summary says where it comes from.
    assert_eq!(
        lines[1],
        "  t: POST,GET /t | who: tenant_users of identity test | ips: any address \
         | rate limit: 2000 per 60s by principal (built-in default) | secrets: none"
    );
}

/// `rate_limit = "off"` is explicit: `check` names it, and `check --diff` reports turning
/// the default off as a loosening.
#[test]
fn check_and_diff_report_a_rate_limit_turned_off() {
    let fx = Fixture::new();
    let echo: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let old = fx.policy_text(&echo_trigger("t", "/t", echo, ""));
    let new = fx.policy_text(&echo_trigger("t", "/t", echo, "rate_limit = \"off\""));
    let old_path = fx.path().join("old.toml");
    std::fs::write(&old_path, &old).unwrap();
    let new_path = fx.write_policy(&new);
    let out = Command::new(BIN).arg("check").arg(&new_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| rate limit: OFF (trigger) |"), "{stdout}");
    assert!(stdout.contains("note: rate limiting is OFF (rate_limit = \"off\") for: t"), "{stdout}");

    let out = Command::new(BIN).arg("check").arg(&new_path).arg("--diff").arg(&old_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "LOOSENED  trigger \"t\" rate_limit: 2000 per 60s by principal (built-in default) -> off (trigger)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("1 loosened"), "{stdout}");

    // A global "off" reaches every trigger without its own rule, and says so.
    let global_off = fx.write_policy(&format!("rate_limit = \"off\"\n{old}"));
    let out = Command::new(BIN).arg("check").arg(&global_off).arg("--diff").arg(&old_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| rate limit: OFF (global) |"), "{stdout}");
    assert!(
        stdout.contains("LOOSENED  [rate_limit]: 2000 per 60s by principal (built-in default) -> off (global)"),
        "{stdout}"
    );
    assert!(stdout.contains("LOOSENED  trigger \"t\" rate_limit:"), "{stdout}");
}

#[test]
fn check_reports_every_error_located() {
    let fx = Fixture::new();
    let text = fx.policy_text(
        "[[trigger]]\nname = \"a\"\npath = \"no-slash\"\nupstream = \"http://127.0.0.1:9/\"\nwho = \"tenant_users\"\nidentity = \"test\"\n\n\
         [[trigger]]\nname = \"a\"\npath = \"/b\"\nupstream = \"ftp://x/\"\nwho = \"tenant_users\"\nidentity = \"test\"\nmethods = [\"POST\", \"P0ST\"]\n",
    );
    let path = fx.write_policy(&text);
    let out = Command::new(BIN).arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let located: Vec<&str> = stderr.lines().filter(|l| l.contains("policy.toml:")).collect();
    // no-slash path, duplicate name, ftp scheme, bad method: four located errors.
    assert!(located.len() >= 4, "{stderr}");
    for line in &located {
        let mut parts = line.splitn(4, ':');
        let _file = parts.next();
        assert!(parts.next().unwrap().parse::<usize>().is_ok(), "no line number: {line}");
        assert!(parts.next().unwrap().parse::<usize>().is_ok(), "no column: {line}");
    }
    assert!(stderr.contains("trigger[0].path"), "{stderr}");
    assert!(stderr.contains(":12:"), "the ftp upstream is on line 12: {stderr}");
}

#[test]
fn serve_refuses_a_broken_policy_with_exit_1() {
    let fx = Fixture::new();
    let path = fx
        .write_policy("[server]\nlisten = \"127.0.0.1:0\"\ntls = { cert = \"missing.crt\", key = \"missing.key\" }\n");
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("policy.toml:3:"), "{stderr}");
    assert!(stderr.contains("missing.crt"), "{stderr}");
}

#[test]
fn missing_policy_file_is_a_located_error() {
    let out = Command::new(BIN).args(["check", "/nonexistent/flowgate.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("/nonexistent/flowgate.toml:1:1:"));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_call_finish_then_exits_0() {
    sigterm_drains_then_exits_0(&[]).await;
}

/// The single-threaded runtime (`--threads 1`, what a process pinned to one core gets by
/// default) serves, drains and exits like the work-stealing one.
#[tokio::test]
async fn single_threaded_runtime_serves_drains_and_exits_0() {
    sigterm_drains_then_exits_0(&["--threads", "1"]).await;
}

/// Two threads, thread-per-core (the default for more than one thread): worker threads
/// with their own runtimes and `SO_REUSEPORT` listeners serve, drain and exit 0.
#[tokio::test]
async fn thread_per_core_serves_drains_and_exits_0() {
    sigterm_drains_then_exits_0(&["--threads", "2", "--runtime", "thread-per-core"]).await;
}

/// The work-stealing runtime stays available for comparison.
#[tokio::test]
async fn work_stealing_runtime_serves_drains_and_exits_0() {
    sigterm_drains_then_exits_0(&["--threads", "2", "--runtime", "work-stealing"]).await;
}

#[test]
fn an_unknown_runtime_is_refused() {
    let out = Command::new(BIN).args(["--runtime", "fibers", "schema"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("thread-per-core") && stderr.contains("work-stealing"), "{stderr}");
}

#[test]
fn zero_threads_is_refused() {
    let out = Command::new(BIN).args(["--threads", "0", "schema"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--threads") && stderr.contains("1.."), "{stderr}");
}

async fn sigterm_drains_then_exits_0(runtime_args: &[&str]) {
    let fx = Fixture::new();
    fx.serve_issuer();
    let echo = start_echo().await;
    let port = free_port();
    let text = fx
        .policy_text(&echo_trigger("slow", "/slow", echo, ""))
        .replace("listen = \"127.0.0.1:0\"\ntls", &format!("listen = \"127.0.0.1:{port}\"\ntls"));
    let path = fx.write_policy(&text);
    let mut child = Command::new(BIN)
        .args(runtime_args)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = fx.client(false);
    let url = format!("https://localhost:{port}/slow?delay_ms=1500");
    // Wait until the gateway answers.
    let mut up = false;
    for _ in 0..100 {
        if client.post(format!("https://localhost:{port}/slow")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the gateway never started");
    let in_flight = tokio::spawn(async move { client.post(url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = in_flight.await.unwrap().expect("the in-flight call was cut off");
    assert_eq!(status, 200);
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn the_example_policy_checks_clean_once_its_files_exist() {
    // The example names certificates, key files and env vars of a real deployment: give it
    // stand-ins and every rule must hold.
    let dir = tempfile::tempdir().unwrap();
    let (config, certs, secrets) = (dir.path().join("config"), dir.path().join("certs"), dir.path().join("secrets"));
    for d in [&config, &certs, &secrets] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy("config/flowgate.example.toml", config.join("flowgate.example.toml")).unwrap();
    std::fs::copy("config/demo-secrets.toml", config.join("demo-secrets.toml")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(config.join("demo-secrets.toml"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(config.join("blocked.txt"), "# blocked\n198.18.0.0/15\n").unwrap();
    std::fs::write(secrets.join("url-2024.key"), "k".repeat(48)).unwrap();
    let pki = flowgate::tls::dev::DevPki::generate().unwrap();
    std::fs::write(certs.join("server.crt"), &pki.server_cert_pem).unwrap();
    std::fs::write(certs.join("server.key"), &pki.server_key_pem).unwrap();
    for ca in ["clients.pem", "vault-ca.pem", "internal-ca.pem"] {
        std::fs::write(certs.join(ca), &pki.ca_cert_pem).unwrap();
    }
    let out = Command::new(BIN)
        .args(["check", "config/flowgate.example.toml"])
        .current_dir(dir.path())
        .env("FLOWGATE_URL_KEY", "u".repeat(48))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // One line per trigger: what the gateway will do, with the rate limit's source.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(summary, EXAMPLE_SUMMARY, "{stdout}");
}

/// `flowgate check config/flowgate.example.toml`, after its first line.
const EXAMPLE_SUMMARY: [&str; 2] = [
    "  invoice-approved: POST flows.example.com/triggers/invoice \
     | who: specific_users of identity contoso: oid:5e1f3c2a-0000-4000-8000-00000000aa01, upn:alice@contoso.com, \
     app:6a7b8c9d-0000-4000-8000-00000000bb02; tenants 72f988bf-86f1-41af-91ab-2d7cd011db47; \
     roles any of Flows.Invoke; claims ver = \"2.0\" \
     | ips: allow 203.0.113.0/24, 2001:db8::/32; pin app:6a7b8c9d-0000-4000-8000-00000000bb02 to 198.51.100.0/24 \
     | rate limit: 2000 per 60s by principal (trigger) \
     | secrets: secret://akv/invoice-sig, secret://kv/flows/invoice#api_key, secret://kv/flows/invoice#body_key@3, \
     secret://kv/flows/token#value, secret://local/echo#api_key",
    "  public-webhook: POST /triggers/webhook | who: anyone holding a valid signed URL | ips: any address \
     | rate limit: 2000 per 60s by signed URL (global) | secrets: none",
];

#[test]
fn the_demo_policy_checks_clean_once_its_material_exists() {
    // `flowgate demo` generates certs/ on first run; `token` creates the issuer key the same way.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::copy("config/demo.toml", dir.path().join("config/demo.toml")).unwrap();
    std::fs::copy("config/demo-secrets.toml", dir.path().join("config/demo-secrets.toml")).unwrap();
    copy_demo_schemas(dir.path());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path().join("config/demo-secrets.toml"), std::fs::Permissions::from_mode(0o600))
        .unwrap();
    flowgate::tls::dev::ensure_dev_certs(&dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/demo-url.key"), "k".repeat(64)).unwrap();
    let out = Command::new(BIN).args(["check", "config/demo.toml"]).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 trigger"));
}

#[test]
fn check_diff_shows_a_loosened_rule_without_secret_values() {
    let fx = Fixture::new();
    let old = fx.policy_text(&echo_trigger(
        "t",
        "/t",
        "127.0.0.1:9".parse().unwrap(),
        "allow_ips = [\"203.0.113.0/24\"]\nroles = { any_of = [\"Flows.Invoke\"] }",
    ));
    let new =
        old.replace("allow_ips = [\"203.0.113.0/24\"]\n", "").replace("roles = { any_of = [\"Flows.Invoke\"] }\n", "");
    let old_path = fx.path().join("old.toml");
    std::fs::write(&old_path, &old).unwrap();
    let new_path = fx.write_policy(&new);
    let out = Command::new(BIN).arg("check").arg(&new_path).arg("--diff").arg(&old_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("LOOSENED") && stdout.contains("allow_ips"), "{stdout}");
    assert!(stdout.contains("roles"), "{stdout}");
    assert!(!stdout.contains("UPSTREAMSIG"), "the upstream URL's signature was printed: {stdout}");
}

#[test]
fn schema_prints_the_committed_json_schema() {
    let out = Command::new(BIN).arg("schema").output().unwrap();
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("config/flowgate.schema.json").unwrap()).unwrap();
    assert_eq!(printed, committed, "run: cargo run -- schema > config/flowgate.schema.json");
}

#[tokio::test]
async fn runs_prints_a_table_of_recent_calls() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let policy = fx.write_policy(&fx.policy_text(&echo_trigger("listed", "/listed", echo, "")));
    let gw = common::start_gateway_for(&fx, &policy).await;
    let response = fx.client(false).post(gw.url("/listed")).body("{}").send().await.unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    response.bytes().await.unwrap();
    common::runs_at_least(&gw, "trigger=listed", 1).await;
    let admin = gw.admin_url("");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN).args(["runs", "--admin", &admin, "--trigger", "listed"]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().unwrap().contains("DECISION"), "{table}");
    assert!(table.contains(&id) && table.contains("allowed"), "{table}");
    gw.shutdown().await;
}

#[test]
fn a_bad_global_rate_limit_is_reported_once() {
    let fx = Fixture::new();
    let echo: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let triggers = format!("{}{}", echo_trigger("a", "/a", echo, ""), echo_trigger("b", "/b", echo, ""));
    let text = format!("rate_limit = {{ calls = 0, period = \"60s\" }}\n{}", fx.policy_text(&triggers));
    let path = fx.write_policy(&text);
    let out = Command::new(BIN).arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("rate_limit.calls").count(), 1, "{stderr}");
    assert!(stderr.contains("policy.toml:1:"), "{stderr}");
}

/// `flowgate demo` prints its ready-to-paste lines only once the gateway accepts
/// connections: the first printed command, run at once, gets its answer.
#[tokio::test]
async fn demo_lines_appear_only_once_the_gateway_answers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::copy("config/demo.toml", dir.path().join("config/demo.toml")).unwrap();
    std::fs::copy("config/demo-secrets.toml", dir.path().join("config/demo-secrets.toml")).unwrap();
    copy_demo_schemas(dir.path());
    let (port, admin) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args(["demo", "--config", "config/demo.toml", "--certs", "certs"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--admin", &format!("127.0.0.1:{admin}")])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first_curl = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).find(|line| line.starts_with("curl "))
    });
    let line = match tokio::time::timeout(Duration::from_secs(120), first_curl).await {
        Ok(Ok(Some(line))) => line,
        other => {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the demo printed no curl line ({other:?}); it needs 127.0.0.1:9980 and :9981 free. stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    };
    // Pasted at once: the connection is accepted and the call answered.
    let token = line.split("Bearer ").nth(1).and_then(|rest| rest.split('\'').next()).expect("a token").to_owned();
    let ca = std::fs::read(dir.path().join("certs/dev-ca.crt")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/demo/invoice");
    assert!(line.contains(&url), "the first line is the main trigger's: {line}");
    // The body the line prints: the main trigger's payload contract accepts it.
    let body = line.split("-d '").nth(1).and_then(|rest| rest.split('\'').next()).expect("a body").to_owned();
    let response =
        client.post(&url).bearer_auth(&token).header("content-type", "application/json").body(body).send().await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(response.expect("the pasted call reached the gateway").status(), 200);
}

/// The demo policy's schema files, beside its copy in `dir/config`.
fn copy_demo_schemas(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("config/schemas")).unwrap();
    for entry in std::fs::read_dir("config/schemas").unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join("config/schemas").join(entry.file_name())).unwrap();
    }
}
