//! Paths mean one thing before routing (real TLS, raw requests where an HTTP client
//! library would normalise the path): `;` path parameters are refused, spellings of a
//! narrower route (case, escapes, a trailing `/`) reach that route, segment ends a server
//! would trim are refused, the longest matching route answers 405 rather than a shorter
//! prefix, and `;` in caller query values cannot smuggle parameters upstream.

use crate::common;

use common::{Fixture, Running, echo_trigger, raw_tls, start_echo, start_gateway_for, trigger_to};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `METHOD target` on a fresh raw connection; returns the whole answer.
async fn raw(fx: &Fixture, gw: &Running, method: &str, target: &str) -> String {
    let mut tls = raw_tls(fx, gw).await;
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        fx.token()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> u16 {
    answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// `/api` (prefix, open) and the narrower `/api/admin` (prefix, GET only, and an allow
/// list nobody here is on).
async fn api_and_admin(fx: &Fixture) -> Running {
    let echo = start_echo().await;
    let triggers = format!(
        "{}{}",
        echo_trigger("api", "/api", echo, "path_match = \"prefix\""),
        echo_trigger("admin", "/api/admin", echo, "path_match = \"prefix\"\nallow_ips = [\"192.0.2.1\"]")
            .replace("methods = [\"POST\", \"GET\"]", "methods = [\"GET\"]"),
    );
    let policy = fx.write_policy(&fx.policy_text(&triggers));
    start_gateway_for(fx, &policy).await
}

#[tokio::test]
async fn path_parameters_are_refused() {
    let fx = Fixture::new();
    let gw = api_and_admin(&fx).await;
    assert_eq!(status(&raw(&fx, &gw, "GET", "/api/x").await), 200);
    // Servlet-style upstreams strip `;params` per segment before normalising: each of
    // these would reach /admin/x (or the narrower route's space) through the open /api.
    for bad in ["/api/x/..;/admin/x", "/api/.;/admin/x", "/api/admin;a=b/x", "/api/x%3B/..%3b/admin", "/api/x;"] {
        let answer = raw(&fx, &gw, "GET", bad).await;
        assert_eq!(status(&answer), 400, "{bad}: {answer}");
        assert!(answer.contains("request_id"), "{answer}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_narrower_route_cannot_be_bypassed_by_spelling() {
    let fx = Fixture::new();
    let gw = api_and_admin(&fx).await;
    // The plain spelling reaches the narrower route, which refuses us.
    assert_eq!(status(&raw(&fx, &gw, "GET", "/api/admin/x").await), 403);
    for spelled in ["/api/%61dmin/x", "/api/%61%64%6D%69%6E/x", "/api/ADMIN/x", "/api/Admin", "/%61pi/admin/x"] {
        let answer = raw(&fx, &gw, "GET", spelled).await;
        assert_eq!(status(&answer), 403, "{spelled} was not judged by the admin route: {answer}");
    }
    // Unreserved characters are forwarded decoded; the rest keeps its case.
    let answer = raw(&fx, &gw, "GET", "/api/%7Euser/Mixed%2dCase").await;
    assert_eq!(status(&answer), 200, "{answer}");
    let echoed: serde_json::Value = serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(echoed["path"], "/flows/api/invoke/~user/Mixed-Case");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_longest_route_answers_405_instead_of_a_shorter_prefix() {
    let fx = Fixture::new();
    let gw = api_and_admin(&fx).await;
    for target in ["/api/admin/x", "/api/admin", "/api/%61dmin/x"] {
        let answer = raw(&fx, &gw, "POST", target).await;
        assert_eq!(status(&answer), 405, "{target}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("\r\nallow: get\r\n"), "{answer}");
    }
    // The shorter route still answers its own paths.
    assert_eq!(status(&raw(&fx, &gw, "POST", "/api/other").await), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn semicolons_in_query_values_cannot_smuggle_parameters() {
    let fx = Fixture::new();
    let reporter = common::upstream::start_reporter().await;
    let trigger = trigger_to("q", "/q", &format!("http://{reporter}/echo?sig=UPSTREAMSIG"), "");
    let gw = fx.serve_policy(&fx.policy_text(&trigger)).await;
    let answer = raw(&fx, &gw, "GET", "/q?x=1;sig=evil&y=a;b;c&z=%3B").await;
    assert_eq!(status(&answer), 200, "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let target = body[body.find("\"target\":\"").unwrap() + 10..].split('"').next().unwrap().to_owned();
    assert!(!target.contains(';'), "a raw ';' reached the upstream: {target}");
    assert!(target.contains("x=1%3Bsig=evil") && target.contains("y=a%3Bb%3Bc"), "{target}");
    assert_eq!(target.matches("sig=").count(), 2, "{target}");
    gw.shutdown().await;
}

#[test]
fn trigger_paths_follow_the_same_rules() {
    let fx = Fixture::new();
    let echo: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let triggers = format!(
        "{}{}{}{}{}{}",
        echo_trigger("a", "/Flows/%61", echo, ""),
        echo_trigger("b", "/flows/A", echo, ""),
        echo_trigger("c", "/x/..;/y", echo, ""),
        echo_trigger("d", "/FLOWS/a/", echo, ""),
        echo_trigger("e", "/x/y.", echo, ""),
        echo_trigger("f", "/x/y%C2%A0/z", echo, ""),
    );
    let errors = flowgate::policy::load(&fx.write_policy(&fx.policy_text(&triggers))).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|e| e.contains("trigger[1].path") && e.contains("already routed")), "{text:#?}");
    assert!(text.iter().any(|e| e.contains("trigger[2].path") && e.contains("path parameter")), "{text:#?}");
    // A trailing `/` does not make another route; a segment a server would trim is refused.
    assert!(text.iter().any(|e| e.contains("trigger[3].path") && e.contains("already routed")), "{text:#?}");
    assert!(text.iter().any(|e| e.contains("trigger[4].path") && e.contains("ending with '.'")), "{text:#?}");
    assert!(text.iter().any(|e| e.contains("trigger[5].path") && e.contains("ending with whitespace")), "{text:#?}");
    // Located in the file, with a hint.
    assert!(text.iter().any(|e| e.contains("policy.toml:") && e.contains("segment ending with '.'")), "{text:#?}");
}

/// One route per meaning, as attacked: an exact `/api/admin` for one principal (not ours) beside a prefix `/api`
/// open to the whole tenant. Every spelling an upstream framework reads as `/api/admin`
/// (Express: case and a trailing `/`; IIS: case, trailing dots and spaces) must reach the
/// exact trigger's rules, or be refused, never the tenant-wide prefix.
#[tokio::test]
async fn spellings_of_an_exact_route_never_reach_a_broader_prefix() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let only_someone_else = "who = \"specific_users\"\nprincipals = [\"oid:00000000-0000-0000-0000-00000000beef\"]";
    let triggers = format!(
        "{}{}",
        echo_trigger("api", "/api", echo, "path_match = \"prefix\""),
        echo_trigger("admin", "/api/admin", echo, "").replace("who = \"tenant_users\"", only_someone_else),
    );
    let gw = fx.serve_policy(&fx.policy_text(&triggers)).await;
    // The tenant user may use the prefix, not the exact route.
    assert_eq!(status(&raw(&fx, &gw, "POST", "/api/other").await), 200);
    assert_eq!(status(&raw(&fx, &gw, "POST", "/api/admin").await), 403);
    for spelled in ["/api/admin/", "/API/Admin/", "/API/ADMIN", "/api/%61dmin/", "/Api/Admi%6E"] {
        let answer = raw(&fx, &gw, "POST", spelled).await;
        assert_eq!(status(&answer), 403, "{spelled} was not judged by the exact route: {answer}");
    }
    // IIS trims trailing dots and spaces of a segment: refused rather than guessed.
    for trimmed in ["/api/admin.", "/api/admin%20", "/api/admin%09", "/api/admin%C2%A0", "/api/admin./", "/api/x./y"] {
        let answer = raw(&fx, &gw, "POST", trimmed).await;
        assert_eq!(status(&answer), 400, "{trimmed}: {answer}");
    }
    // The prefix still answers the rest of its space; the rest is cut by segment from the
    // caller's spelling (`%C4%B0` is `İ`, six bytes of path for one `i` of the route key).
    let answer = raw(&fx, &gw, "POST", "/AP%C4%B0/Caf%C3%A9/").await;
    assert_eq!(status(&answer), 200, "{answer}");
    let echoed: serde_json::Value = serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(echoed["path"], "/flows/api/invoke/Caf%C3%A9/");
    gw.shutdown().await;
}
