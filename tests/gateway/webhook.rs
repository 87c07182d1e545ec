//! Signed webhook deliveries (`who = "webhook"`) through the real gateway over TLS, each
//! scheme signed by its sender's own library (scripts/webhooks/sign.py and sign.mjs:
//! `PyPI` `standardwebhooks`, `stripe`, `slack-sdk`, `twilio`; npm
//! `@octokit/webhooks-methods`; Shopify publishes only its recipe, which sign.py follows
//! with Python's `hmac`; Standard Webhooks `v1a` is signed with `PyPI` `cryptography` as the
//! specification describes, since the reference library signs `v1` only; the generic
//! `hmac` scheme has no sender, so the test signs it with the `hmac` crate). For each
//! scheme: a valid delivery reaches a recording upstream byte for byte; a tampered body,
//! a wrong secret, a stale timestamp, a missing header and a replay are refused; the
//! previous secret passes during a rotation. Two gateways sharing one real Redis forward
//! a delivery sent to both at the same moment once.
//!
//! Needs the signers: scripts/deps/webhooks.sh (and Node.js: scripts/deps/oidc.sh), and
//! `redis-server` for the cluster test (scripts/deps/redis.sh).

use crate::common;

use bytes::Bytes;
use common::bao::write_private;
use common::redis::Redis;
use common::{Fixture, Running, run_record};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Bodies received by the recording upstream, in order.
type Received = Arc<Mutex<Vec<Bytes>>>;

/// An upstream that keeps every body it receives and answers 200.
async fn start_recorder() -> (SocketAddr, Received) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let keep = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let keep = keep.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let keep = keep.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(http_body_util::Collected::to_bytes)
                            .unwrap_or_default();
                        keep.lock().unwrap().push(body);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"taken"),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/webhooks")
}

const INSTALL: &str = "install the senders' signing libraries: scripts/deps/webhooks.sh";

/// Runs sign.py on a list of requests.
fn python_sign(requests: &[Value]) -> Vec<Value> {
    run_signer("python3", &["sign.py"], &Value::Array(requests.to_vec())).as_array().unwrap().clone()
}

/// Signs a GitHub delivery with @octokit/webhooks-methods.
fn github_sign(secret: &str, body: &str) -> Value {
    run_signer("node", &["sign.mjs"], &json!({ "secret": secret, "body": body }))
}

fn run_signer(program: &str, args: &[&str], input: &Value) -> Value {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .current_dir(scripts())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); {INSTALL}"));
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{program} signer failed ({INSTALL}): {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn now() -> i64 {
    use flowgate::clock::Clock;
    i64::try_from(flowgate::clock::SystemClock::default().unix_time().as_secs()).unwrap()
}

/// Signing secrets of every scheme: `(current, previous, wrong)`.
struct Secrets {
    standard: [String; 3],
    /// Ed25519 `(private, public)` pairs.
    ed25519: Vec<(String, String)>,
    stripe: [String; 3],
    slack: [String; 3],
    shopify: [String; 3],
    github: [String; 3],
    twilio: [String; 3],
    hmac: [String; 3],
}

fn secrets() -> Secrets {
    let keys = python_sign(&[
        json!({"scheme": "ed25519_keygen"}),
        json!({"scheme": "ed25519_keygen"}),
        json!({"scheme": "ed25519_keygen"}),
    ]);
    let three = |prefix: &str, tag: &str| {
        ["cur", "prev", "wrong"].map(|which| format!("{prefix}LEAKMARK-{tag}-{which}-{}", &uuid_like(tag, which)))
    };
    Secrets {
        // `whsec_` + base64: the decoded bytes are the key.
        standard: ["cur", "prev", "wrong"].map(|w| {
            use base64::Engine;
            format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(format!("LEAKMARK-standard-{w}-key")))
        }),
        ed25519: keys
            .iter()
            .map(|k| (k["private"].as_str().unwrap().to_owned(), k["public"].as_str().unwrap().to_owned()))
            .collect(),
        stripe: three("whsec_", "stripe"),
        slack: three("", "slack"),
        shopify: three("shpss_", "shopify"),
        github: three("", "github"),
        twilio: three("", "twilio"),
        hmac: three("", "hmac"),
    }
}

fn uuid_like(a: &str, b: &str) -> String {
    common::upstream::sha(format!("{a}/{b}"))[..16].to_owned()
}

const TWILIO_URL: &str = "https://hooks.example.com/twilio";

fn vault_text(s: &Secrets) -> String {
    let mut text = String::from("[hooks]\n");
    let mut add = |name: &str, cur: &str, prev: &str| {
        text.push_str(&format!("{name}_cur = {}\n{name}_prev = {}\n", json!(cur), json!(prev)));
    };
    add("standard", &s.standard[0], &s.standard[1]);
    add("ed25519", &s.ed25519[0].1, &s.ed25519[1].1);
    add("stripe", &s.stripe[0], &s.stripe[1]);
    add("slack", &s.slack[0], &s.slack[1]);
    add("shopify", &s.shopify[0], &s.shopify[1]);
    add("github", &s.github[0], &s.github[1]);
    add("twilio", &s.twilio[0], &s.twilio[1]);
    add("hmac", &s.hmac[0], &s.hmac[1]);
    text
}

fn webhook_trigger(name: &str, upstream: SocketAddr, webhook: &str) -> String {
    format!(
        "[[trigger]]\nname = \"{name}\"\npath = \"/hooks/{name}\"\nupstream = \"http://{upstream}/flows/{name}\"\n\
         who = \"webhook\"\nwebhook = {{ {webhook}, secrets = [\"secret://files/hooks#{secret}_cur\", \"secret://files/hooks#{secret}_prev\"] }}\n",
        secret = name.split('-').next().unwrap()
    )
}

fn policy(fx: &Fixture, upstream: SocketAddr, extra: &str) -> String {
    policy_with(fx, upstream, extra, "")
}

/// The policy with `per_trigger` added to every trigger.
fn policy_with(fx: &Fixture, upstream: SocketAddr, extra: &str, per_trigger: &str) -> String {
    let triggers = [
        webhook_trigger("standard", upstream, "scheme = \"standard\""),
        webhook_trigger("ed25519", upstream, "scheme = \"standard\""),
        webhook_trigger("stripe", upstream, "scheme = \"stripe\""),
        webhook_trigger("slack", upstream, "scheme = \"slack\""),
        webhook_trigger("shopify", upstream, "scheme = \"shopify\""),
        webhook_trigger("github", upstream, "scheme = \"github\""),
        webhook_trigger("twilio", upstream, &format!("scheme = \"twilio\", public_url = \"{TWILIO_URL}\"")),
        webhook_trigger("twilio-json", upstream, &format!("scheme = \"twilio\", public_url = \"{TWILIO_URL}\"")),
        webhook_trigger(
            "hmac",
            upstream,
            "scheme = \"hmac\", hmac = { header = \"x-signature\", prefix = \"sha256=\", timestamp_header = \"x-timestamp\", content = \"{timestamp}.{body}\" }",
        ),
    ];
    let triggers: String = triggers.iter().map(|t| format!("{t}{per_trigger}\n")).collect();
    fx.policy_text(&format!("[vault.files]\nkind = \"file\"\npath = \"secrets.toml\"\n\n{extra}\n{triggers}"))
}

/// One signed delivery, ready to send.
#[derive(Debug, Clone)]
struct Signed {
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Signed {
    fn from_signer(path: &str, body: &str, out: &Value) -> Self {
        let headers = out["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        Self {
            path: path.to_owned(),
            query: out["query"].as_str().unwrap_or("").to_owned(),
            headers,
            body: body.to_owned(),
        }
    }

    fn without(mut self, header: &str) -> Self {
        self.headers.retain(|(name, _)| !name.eq_ignore_ascii_case(header));
        self
    }

    fn tampered(mut self) -> Self {
        self.body.push(' ');
        self
    }
}

async fn send(client: &reqwest::Client, gw: &Running, signed: &Signed) -> (u16, Value, String) {
    let mut url = gw.url(&signed.path);
    if !signed.query.is_empty() {
        url = format!("{url}?{}", signed.query);
    }
    let mut request = client.post(url).body(signed.body.clone());
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let id = response.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), id)
}

/// How to sign a delivery of one scheme: secret index (0 current, 1 previous, 2 wrong),
/// body, timestamp and id.
type Signer<'a> = Box<dyn Fn(usize, &str, i64, &str) -> Signed + 'a>;

fn signers(s: &Secrets) -> Vec<(&'static str, bool, Signer<'_>)> {
    let python = |path: &'static str, request: Value, body: String| {
        let out = python_sign(&[request]);
        Signed::from_signer(path, &body, &out[0])
    };
    vec![
        (
            "standard",
            true,
            Box::new(move |k: usize, body: &str, ts: i64, id: &str| {
                python(
                    "/hooks/standard",
                    json!({"scheme": "standard", "secret": s.standard[k], "body": body, "timestamp": ts, "id": id}),
                    body.to_owned(),
                )
            }) as Signer<'_>,
        ),
        (
            "ed25519",
            true,
            Box::new(move |k: usize, body: &str, ts: i64, id: &str| {
                python(
                    "/hooks/ed25519",
                    json!({"scheme": "standard_v1a", "secret": s.ed25519[k].0, "body": body, "timestamp": ts, "id": id}),
                    body.to_owned(),
                )
            }),
        ),
        (
            "stripe",
            true,
            Box::new(move |k: usize, body: &str, ts: i64, _: &str| {
                python(
                    "/hooks/stripe",
                    json!({"scheme": "stripe", "secrets": [s.stripe[k]], "body": body, "timestamp": ts}),
                    body.to_owned(),
                )
            }),
        ),
        (
            "slack",
            true,
            Box::new(move |k: usize, body: &str, ts: i64, _: &str| {
                python(
                    "/hooks/slack",
                    json!({"scheme": "slack", "secret": s.slack[k], "body": body, "timestamp": ts}),
                    body.to_owned(),
                )
            }),
        ),
        (
            "shopify",
            false,
            Box::new(move |k: usize, body: &str, _: i64, id: &str| {
                python(
                    "/hooks/shopify",
                    json!({"scheme": "shopify", "secret": s.shopify[k], "body": body, "id": id}),
                    body.to_owned(),
                )
            }),
        ),
        (
            "github",
            false,
            Box::new(move |k: usize, body: &str, _: i64, id: &str| {
                let mut signed = Signed::from_signer("/hooks/github", body, &github_sign(&s.github[k], body));
                signed.headers.push(("x-github-delivery".into(), id.into()));
                signed
            }),
        ),
        (
            "twilio",
            false,
            Box::new(move |k: usize, body: &str, _: i64, _: &str| {
                // The form body is built from the parameters the signer signs.
                let form: Vec<(String, String)> = vec![
                    ("To".into(), "+15550001111".into()),
                    ("From".into(), "+15552223333".into()),
                    ("Body".into(), body.into()),
                ];
                let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form.iter()).finish();
                python(
                    "/hooks/twilio",
                    json!({"scheme": "twilio_form", "secret": s.twilio[k], "url": TWILIO_URL, "form": form}),
                    encoded,
                )
            }),
        ),
        (
            "twilio-json",
            false,
            Box::new(move |k: usize, body: &str, _: i64, _: &str| {
                python(
                    "/hooks/twilio-json",
                    json!({"scheme": "twilio_json", "secret": s.twilio[k], "url": TWILIO_URL, "body": body}),
                    body.to_owned(),
                )
            }),
        ),
        (
            "hmac",
            true,
            Box::new(move |k: usize, body: &str, ts: i64, _: &str| {
                use hmac::Mac;
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(s.hmac[k].as_bytes()).unwrap();
                mac.update(format!("{ts}.{body}").as_bytes());
                let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                Signed {
                    path: "/hooks/hmac".into(),
                    query: String::new(),
                    headers: vec![("x-signature".into(), signature), ("x-timestamp".into(), ts.to_string())],
                    body: body.into(),
                }
            }),
        ),
    ]
}

/// The signature header of each scheme (the one a "missing header" delivery lacks).
fn signature_header(scheme: &str) -> &'static str {
    match scheme {
        "standard" | "ed25519" => "webhook-signature",
        "stripe" => "stripe-signature",
        "slack" => "x-slack-signature",
        "shopify" => "x-shopify-hmac-sha256",
        "github" => "x-hub-signature-256",
        "twilio" | "twilio-json" => "x-twilio-signature",
        _ => "x-signature",
    }
}

fn assert_refused(result: &(u16, Value, String), kind: &str, what: &str) {
    assert_eq!(result.0, 401, "{what}: {result:?}");
    assert_eq!(result.1["error"], kind, "{what}: {result:?}");
}

#[tokio::test]
async fn every_scheme_passes_its_senders_signature_and_refuses_forgery_staleness_and_replay() {
    let fx = Fixture::new();
    let s = secrets();
    write_private(&fx.path().join("secrets.toml"), &vault_text(&s));
    let (upstream, received) = start_recorder().await;
    let gw = fx.serve_policy(&policy(&fx, upstream, "")).await;
    let client = fx.anonymous_client(true);

    for (n, (scheme, signs_time, sign)) in signers(&s).iter().enumerate() {
        let body = |case: &str| {
            format!("{{ \"event\" : \"{scheme}-{case}\",\n  \"amount\":  10.50, \"note\": \"é ✓ \\u00e9\" }}")
        };
        let id = |case: &str| format!("msg_{n}_{case}");
        let before = received.lock().unwrap().len();

        // A valid delivery reaches the upstream byte for byte, as webhook:<scheme>.
        let valid = sign(0, &body("valid"), now(), &id("valid"));
        let sent = send(&client, &gw, &valid).await;
        assert_eq!(sent.0, 200, "{scheme}: valid delivery: {sent:?}");
        assert_eq!(received.lock().unwrap().last().unwrap(), valid.body.as_bytes(), "{scheme}: bytes forwarded");
        let record = run_record(&gw, &sent.2).await;
        let family = if scheme.starts_with("twilio") {
            "twilio"
        } else if *scheme == "ed25519" {
            "standard"
        } else {
            scheme
        };
        assert_eq!(record["principal"], format!("webhook:{family}"), "{scheme}: {record}");
        assert_eq!(record["webhook"]["scheme"], family, "{scheme}: {record}");

        // The same delivery again is a replay.
        assert_refused(&send(&client, &gw, &valid).await, "replayed", &format!("{scheme}: replay"));

        // A tampered body, a wrong secret, a missing signature header.
        let tampered = sign(0, &body("tampered"), now(), &id("tampered")).tampered();
        assert_refused(&send(&client, &gw, &tampered).await, "signature_invalid", &format!("{scheme}: tampered"));
        let wrong = sign(2, &body("wrong"), now(), &id("wrong"));
        assert_refused(&send(&client, &gw, &wrong).await, "signature_invalid", &format!("{scheme}: wrong secret"));
        let missing = sign(0, &body("missing"), now(), &id("missing")).without(signature_header(scheme));
        assert_refused(&send(&client, &gw, &missing).await, "signature_invalid", &format!("{scheme}: missing header"));

        // A timestamp older than the tolerance (5 minutes), correctly signed.
        if *signs_time {
            let stale = sign(0, &body("stale"), now() - 400, &id("stale"));
            assert_refused(&send(&client, &gw, &stale).await, "timestamp_stale", &format!("{scheme}: stale"));
            let future = sign(0, &body("future"), now() + 400, &id("future"));
            assert_refused(&send(&client, &gw, &future).await, "timestamp_stale", &format!("{scheme}: future"));
        }

        // During a rotation the previous secret still passes.
        let previous = sign(1, &body("previous"), now(), &id("previous"));
        let sent = send(&client, &gw, &previous).await;
        assert_eq!(sent.0, 200, "{scheme}: previous secret: {sent:?}");
        assert_eq!(received.lock().unwrap().last().unwrap(), previous.body.as_bytes(), "{scheme}: bytes forwarded");

        assert_eq!(received.lock().unwrap().len(), before + 2, "{scheme}: only the two valid deliveries went upstream");
    }

    // Refusals are counted by scheme and reason.
    let metrics = common::metrics_text(&gw).await;
    for scheme in ["standard", "stripe", "slack", "shopify", "github", "twilio", "hmac"] {
        for reason in ["signature_invalid", "replayed"] {
            let line = format!("flowgate_webhook_refusals_total{{scheme=\"{scheme}\",reason=\"{reason}\"}}");
            assert!(metrics.contains(&line), "{line} not in metrics");
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_webhook_limit_is_refused_with_413_before_verification() {
    let fx = Fixture::new();
    let s = secrets();
    write_private(&fx.path().join("secrets.toml"), &vault_text(&s));
    let (upstream, received) = start_recorder().await;
    let gw = fx.serve_policy(&policy(&fx, upstream, "")).await;
    let big = "x".repeat(1024 * 1024 + 1);
    let signed = Signed { path: "/hooks/github".into(), query: String::new(), headers: vec![], body: big };
    let sent = send(&fx.anonymous_client(false), &gw, &signed).await;
    assert_eq!(sent.0, 413, "{sent:?}");
    assert!(received.lock().unwrap().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn two_gateways_sharing_redis_forward_a_delivery_sent_to_both_once() {
    let fx = Fixture::new();
    let s = secrets();
    write_private(&fx.path().join("secrets.toml"), &vault_text(&s));
    let mut redis = Redis::start();
    let (upstream, received) = start_recorder().await;
    let cluster = format!("[cluster]\nredis = \"redis://127.0.0.1:{}\"\ntimeout = \"2s\"\n", redis.port);
    // No rate limit: with Redis down, the replay guard's own fail mode is what answers.
    let text = policy_with(&fx, upstream, &cluster, "rate_limit = \"off\"");
    let first = fx.serve_policy(&text).await;
    let second = fx.serve_policy(&text).await;
    let client = fx.anonymous_client(true);
    let all = signers(&s);
    let (_, _, standard) = &all[0];
    let (_, _, github) = &all[5];

    for (round, sign) in [standard, github].into_iter().enumerate() {
        let delivery = sign(0, &format!("{{\"round\": {round}}}"), now(), &format!("cluster-{round}"));
        let (a, b) = tokio::join!(send(&client, &first, &delivery), send(&client, &second, &delivery));
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 401], "round {round}: {a:?} {b:?}");
        let refused = if a.0 == 401 { &a } else { &b };
        assert_eq!(refused.1["error"], "replayed");
    }
    assert_eq!(received.lock().unwrap().len(), 2, "each delivery reached the upstream once");

    // Redis down: the rate limiter's fail mode (fail_closed by default) applies.
    redis.stop();
    let delivery = standard(0, "{\"after\": \"redis\"}", now(), "cluster-down");
    let sent = send(&client, &first, &delivery).await;
    assert_eq!(sent.0, 503, "{sent:?}");
    assert_eq!(sent.1["error"], "replay_guard_unavailable");
    assert_eq!(received.lock().unwrap().len(), 2);
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn handshakes_are_answered_at_the_edge_only_on_triggers_that_expect_them() {
    let fx = Fixture::new();
    let s = secrets();
    write_private(&fx.path().join("secrets.toml"), &vault_text(&s));
    let (upstream, received) = start_recorder().await;
    let handshakes = [
        webhook_trigger("slack-handshake", upstream, "scheme = \"slack\", handshake = \"slack_url_verification\""),
        webhook_trigger("standard-grid", upstream, "scheme = \"standard\", handshake = \"event_grid\""),
        webhook_trigger("standard-graph", upstream, "scheme = \"standard\", handshake = \"graph_validation\""),
    ]
    .concat();
    let gw = fx.serve_policy(&format!("{}{handshakes}", policy(&fx, upstream, ""))).await;
    let client = fx.anonymous_client(false);

    // Slack signs its url_verification: answered after verification, refused unsigned.
    let challenge =
        r#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let signed =
        python_sign(&[json!({"scheme": "slack", "secret": s.slack[0], "body": challenge, "timestamp": now()})]);
    let mut delivery = Signed::from_signer("/hooks/slack-handshake", challenge, &signed[0]);
    let sent = send(&client, &gw, &delivery).await;
    assert_eq!(sent.0, 200, "{sent:?}");
    assert_eq!(sent.1, json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}));
    assert_eq!(run_record(&gw, &sent.2).await["webhook"]["handshake"], "slack_url_verification");
    delivery.path = "/hooks/slack".into();
    let sent = send(&client, &gw, &delivery).await;
    assert_eq!(sent.0, 200, "a trigger without the handshake forwards the signed request: {sent:?}");
    let unsigned = delivery.clone().without("x-slack-signature");
    let sent = send(&client, &gw, &Signed { path: "/hooks/slack-handshake".into(), ..unsigned }).await;
    assert_refused(&sent, "signature_invalid", "unsigned Slack handshake");

    // Event Grid's subscription validation is unsigned: answered on the trigger that asks.
    let validation = r#"[{"id":"2d1781af","topic":"/subscriptions/x","subject":"","data":{"validationCode":"512d38b6-c7b8-40c8-89fe-f46f9e9622b6","validationUrl":"https://rp-eastus2.eventgrid.azure.net/x"},"eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","eventTime":"2018-01-25T22:12:19.4556811Z","metadataVersion":"1","dataVersion":"1"}]"#;
    let grid = |path: &str| Signed {
        path: path.into(),
        query: String::new(),
        headers: vec![("aeg-event-type".into(), "SubscriptionValidation".into())],
        body: validation.into(),
    };
    let sent = send(&client, &gw, &grid("/hooks/standard-grid")).await;
    assert_eq!(sent.0, 200, "{sent:?}");
    assert_eq!(sent.1, json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}));
    assert_eq!(run_record(&gw, &sent.2).await["webhook"]["handshake"], "event_grid");
    assert_refused(&send(&client, &gw, &grid("/hooks/standard")).await, "signature_invalid", "Event Grid elsewhere");

    // Microsoft Graph's validationToken is echoed as text/plain.
    let graph = |path: &str| Signed {
        path: path.into(),
        query: "validationToken=Validation%3A%20Testing%20client%20application".into(),
        headers: vec![],
        body: String::new(),
    };
    let sent = send(&client, &gw, &graph("/hooks/standard-graph")).await;
    assert_eq!((sent.0, sent.1.clone()), (200, Value::String("Validation: Testing client application".into())));
    assert_eq!(run_record(&gw, &sent.2).await["webhook"]["handshake"], "graph_validation");
    assert_refused(&send(&client, &gw, &graph("/hooks/standard")).await, "signature_invalid", "Graph elsewhere");

    // Only the one signed delivery to the trigger without a handshake went upstream.
    assert_eq!(received.lock().unwrap().len(), 1);
    gw.shutdown().await;
}

#[test]
fn check_prints_scheme_secret_references_and_replay_window_never_a_secret() {
    let fx = Fixture::new();
    let s = secrets();
    write_private(&fx.path().join("secrets.toml"), &vault_text(&s));
    let path = fx.write_policy(&policy(&fx, "127.0.0.1:9".parse().unwrap(), ""));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowgate")).arg("check").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.trim_start().starts_with("stripe:")).unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(
            "who: webhook stripe, secrets [secret://files/hooks#stripe_cur, secret://files/hooks#stripe_prev]; \
             timestamps within 5m; replays refused by signature for 5m"
        ),
        "{line}"
    );
    let github = text.lines().find(|l| l.trim_start().starts_with("github:")).unwrap();
    assert!(github.contains("no signed timestamp"), "{github}");
    assert!(!text.contains("LEAKMARK"), "a signing secret reached check's output: {text}");
}

#[tokio::test]
async fn a_delivery_the_upstream_did_not_take_is_forgotten_so_the_retry_passes() {
    let fx = Fixture::new();
    let s = secrets();
    write_private(&fx.path().join("secrets.toml"), &vault_text(&s));
    let (upstream, received) = start_recorder().await;
    let down = common::closed_port();
    let flaky = webhook_trigger("github-down", down, "scheme = \"github\"");
    let gw = fx.serve_policy(&format!("{}{flaky}", policy(&fx, upstream, ""))).await;
    let client = fx.anonymous_client(false);
    let body = "{\"retry\": true}";
    let mut delivery = Signed::from_signer("/hooks/github-down", body, &github_sign(&s.github[0], body));
    delivery.headers.push(("x-github-delivery".into(), "retry-1".into()));
    // Twice 502, never `replayed`: the sender's retries must reach the upstream when it is back.
    for attempt in 0..2 {
        let sent = send(&client, &gw, &delivery).await;
        assert_eq!(sent.0, 502, "attempt {attempt}: {sent:?}");
    }
    // Delivered once to an upstream that takes it, it is then a replay.
    delivery.path = "/hooks/github".into();
    assert_eq!(send(&client, &gw, &delivery).await.0, 200);
    assert_refused(&send(&client, &gw, &delivery).await, "replayed", "after delivery");
    assert_eq!(received.lock().unwrap().len(), 1);
    gw.shutdown().await;
}
