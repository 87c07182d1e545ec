//! The fault matrix under load (`docs/OPERATIONS.md`, "Fault matrix"): a steady, bounded
//! load of valid calls runs on loopback while one fault is injected at a time, and what
//! every caller saw (sent, answered by status, failed at the connection level) is checked
//! against the table. "Nothing lost": every answered call has a run record with its status.
//!
//! Real counterparts: development-issuer keys behind a loopback JWKS endpoint the test can
//! stop, OpenBao (`bao server -dev`), `redis-server`, and the real binary for SIGTERM.
//! Missing tools fail with the command that installs them (scripts/deps/).
//!
//! The rows share one process-wide Prometheus recorder, so they run one at a time
//! (`SERIAL`) even when the harness runs tests in parallel.

mod common;
use common::load;

use common::bao::{Bao, openbao_vault_toml};
use common::ports::free_port;
use common::redis::Redis;
use common::upstream::{sha, start_reporter};
use common::{Fixture, Running, closed_port, metrics_text, start_echo, start_gateway, trigger_to};
use flowgate::auth::dev_issuer::{DevIssuer, MintOptions};
use load::{Load, MakeCall, assert_recorded};
use serde_json::json;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;
use tokio::time::Instant;

static SERIAL: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

/// Load shape: a few callers, one call at a time each, a short pause between calls.
const WORKERS: usize = 3;
const PACE: Duration = Duration::from_millis(20);
/// Generous bound for "recovers" / "reaches the new state".
const RECOVERY: Duration = Duration::from_secs(10);

/// Run history large enough to hold every call of a row, and short timeouts.
const COMMON: &str = "[audit]\nring = 100000\n\n[limits]\nupstream_connect_timeout = \"1s\"\n\
                      upstream_response_timeout = \"2s\"\nshutdown_grace = \"5s\"\n";

/// `[server]`, `[admin]` and `extra` for a gateway on port 0 using the fixture's TLS files.
fn server_toml(extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"server.crt\", key = \"server.key\" }}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n{extra}"
    )
}

/// One client per worker (one connection each), sending `token`, to `path`.
fn post_calls(fx: &Fixture, gw: &Running, path: &str, token: Arc<RwLock<String>>) -> MakeCall {
    let clients: Vec<reqwest::Client> = (0..WORKERS * 2).map(|_| fx.client_at(false, None, None, gw.https)).collect();
    let url = gw.url(path);
    Arc::new(move |worker| {
        let token = token.read().unwrap().clone();
        clients[worker % clients.len()].post(&url).bearer_auth(token).body("{}")
    })
}

fn fixed(token: String) -> Arc<RwLock<String>> {
    Arc::new(RwLock::new(token))
}

/// Sends single calls until one answers `want` (or the bound passes); returns how long it took.
async fn until_status(client: &reqwest::Client, url: &str, token: &str, want: u16) -> Duration {
    let start = Instant::now();
    loop {
        let outcome = load::one(client.post(url).bearer_auth(token).body("{}")).await;
        if outcome.status == Some(want) {
            return start.elapsed();
        }
        assert!(start.elapsed() < RECOVERY, "no {want} within {RECOVERY:?}; last: {outcome:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first value of a Prometheus series whose line starts with `prefix`, or 0.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// IdP: a loopback discovery + JWKS endpoint serving chosen development-issuer keys, which
// the test takes down (listener and open connections gone) and brings back on its port.

struct Idp {
    port: u16,
    issuer: String,
    keys: Arc<Mutex<Vec<serde_json::Value>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Idp {
    fn new() -> Self {
        let port = free_port();
        Self { port, issuer: format!("http://127.0.0.1:{port}"), keys: Arc::new(Mutex::new(Vec::new())), task: None }
    }

    /// A development issuer (its own key and `kid`) for this IdP's URL.
    fn signer(&self) -> (tempfile::TempDir, DevIssuer) {
        let dir = tempfile::tempdir().unwrap();
        let issuer = DevIssuer::load_or_create(dir.path(), &self.issuer).unwrap();
        (dir, issuer)
    }

    /// Publishes exactly these signers' public keys.
    fn publish(&self, signers: &[&DevIssuer]) {
        let keys = signers.iter().map(|s| serde_json::to_value(s.jwks()).unwrap()["keys"][0].clone()).collect();
        *self.keys.lock().unwrap() = keys;
    }

    async fn up(&mut self) {
        let mut bound = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => {
                    bound = Some(listener);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let listener = bound.expect("the IdP port could not be bound again");
        let (keys, issuer) = (self.keys.clone(), self.issuer.clone());
        self.task = Some(tokio::spawn(async move {
            // Connections live in this set: aborting the task closes them all.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (keys, issuer) = (keys.clone(), issuer.clone());
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let body = match request.uri().path() {
                            "/jwks" => json!({ "keys": *keys.lock().unwrap() }),
                            _ => json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") }),
                        };
                        let mut response =
                            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body.to_string())));
                        response.headers_mut().insert("content-type", "application/json".parse().unwrap());
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }

    fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// `[identity.test]` trusting this IdP, with short refresh timings.
    fn identity_toml(signer: &DevIssuer) -> String {
        format!(
            "{}refresh_min = \"1s\"\nrefresh_max = \"1s\"\nunknown_kid_refetch_interval = \"1s\"\nmax_key_age = \"1h\"\n",
            signer.identity_toml("test")
        )
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.down();
    }
}

async fn idp_gateway(fx: &Fixture, signer: &DevIssuer) -> Running {
    let echo = start_echo().await;
    let text = server_toml(&format!(
        "{COMMON}\n{}\n{}",
        Idp::identity_toml(signer),
        common::echo_trigger("t", "/t", echo, "rate_limit = \"off\"")
    ));
    start_gateway(&fx.write_policy(&text)).await
}

fn mint(signer: &DevIssuer) -> String {
    signer.mint(&MintOptions::default()).unwrap()
}

/// IdP (JWKS endpoint) down: the cached keys keep serving every valid call; a token with
/// a `kid` the gateway has never seen is 503 (we cannot judge it), not 401; when the IdP
/// returns, that token is accepted without a restart.
#[tokio::test]
async fn idp_down_cached_keys_serve_new_kid_is_503_then_recovers() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let mut idp = Idp::new();
    let (_a_dir, a) = idp.signer();
    let (_b_dir, b) = idp.signer();
    idp.publish(&[&a]);
    idp.up().await;
    let gw = idp_gateway(&fx, &a).await;
    let load = Load::start(WORKERS, PACE, &post_calls(&fx, &gw, "/t", fixed(mint(&a))));
    tokio::time::sleep(Duration::from_secs(1)).await;

    idp.down();
    let down = Instant::now();
    // Several refresh periods (refresh_max = 1s) pass with the IdP down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let probe = fx.client_at(false, None, None, gw.https);
    let new_kid = load::one(probe.post(gw.url("/t")).bearer_auth(mint(&b)).body("{}")).await;
    assert_eq!(new_kid.status, Some(503), "a new kid while the IdP is down: {new_kid:?}");
    let metrics = metrics_text(&gw).await;
    assert!(metric(&metrics, "flowgate_jwks_fetch_errors_total{identity=\"test\"}") > 0.0, "{metrics}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outage = down.elapsed();

    // The IdP returns, now also publishing the new key.
    idp.publish(&[&a, &b]);
    idp.up().await;
    let recovered = until_status(&probe, &gw.url("/t"), &mint(&b), 200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.finish().await;
    eprintln!("{} (IdP down {outage:?}; new kid accepted {recovered:?} after it returned)", tally.summary("idp_down"));
    tally.assert_all_ok("idp_down", 100);
    assert_recorded(&gw.admin_url("/runs"), &tally).await;
    gw.shutdown().await;
}

/// The IdP rotates its signing key mid-load the way `IdPs` do: the new key is published
/// first, tokens are then signed with it, and the old key is retired. No valid call is
/// refused across the rotation.
#[tokio::test]
async fn idp_key_rotation_mid_load_refuses_no_valid_call() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let mut idp = Idp::new();
    let (_a_dir, a) = idp.signer();
    let (_b_dir, b) = idp.signer();
    idp.publish(&[&a]);
    idp.up().await;
    let gw = idp_gateway(&fx, &a).await;
    let token = fixed(mint(&a));
    let load = Load::start(WORKERS, PACE, &post_calls(&fx, &gw, "/t", token.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Published a moment before use (less than one refresh period): calls with the new
    // kid may arrive before the background refresh has seen it.
    idp.publish(&[&a, &b]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    *token.write().unwrap() = mint(&b);
    let switched = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    idp.publish(&[&b]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.finish().await;
    let after = tally.outcomes.iter().filter(|o| o.sent >= switched).count();
    eprintln!("{} ({after} with the new key)", tally.summary("idp_rotation"));
    tally.assert_all_ok("idp_rotation", 100);
    assert!(after > 50, "too few calls with the new key: {after}");
    assert_recorded(&gw.admin_url("/runs"), &tally).await;
    // The retired key's tokens are refused once the refresh has dropped it.
    let probe = fx.client_at(false, None, None, gw.https);
    until_status(&probe, &gw.url("/t"), &mint(&a), 401).await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Vault: OpenBao with short cache timings; the reporting upstream shows (as SHA-256) the
// secret each call carried.

const SECRETS: &str =
    "[secrets]\nttl = \"1s\"\nrefresh_ahead = \"400ms\"\nmax_stale = \"3s\"\nfetch_timeout = \"500ms\"\n";

async fn bao_gateway(fx: &Fixture, bao: &Bao) -> Running {
    fx.serve_issuer();
    let up = start_reporter().await;
    let trigger = trigger_to(
        "bao",
        "/bao",
        &format!("http://{up}/report"),
        "inject.headers.\"x-api-key\" = \"secret://kv/flows/token\"\nrate_limit = \"off\"",
    );
    let text = fx.policy_text(&format!("{COMMON}\n{}\n{SECRETS}\n{trigger}", openbao_vault_toml("kv", &bao.addr)));
    start_gateway(&fx.write_policy(&text)).await
}

/// Vault down: the cached secret serves until `max_stale`, then 503; it recovers when the
/// vault returns; no call ever reaches the upstream with an empty or wrong secret.
#[tokio::test]
async fn vault_down_serves_stale_until_max_stale_then_503_and_recovers() {
    let _serial = SERIAL.lock().await;
    let port = free_port();
    let bao = Bao::start(port).await;
    let fx = Fixture::new();
    bao.setup_approle(fx.path()).await;
    bao.put_secret("flows/token", json!({ "value": "s3cr3t-v1" })).await;
    let gw = bao_gateway(&fx, &bao).await;
    let load = Load::start(WORKERS, PACE, &post_calls(&fx, &gw, "/bao", fixed(fx.token())));
    tokio::time::sleep(Duration::from_secs(1)).await;

    drop(bao);
    let down = Instant::now();
    // ttl (1s) + max_stale (3s), then some 503s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let bao = Bao::start(port).await;
    bao.setup_approle(fx.path()).await;
    bao.put_secret("flows/token", json!({ "value": "s3cr3t-v1" })).await;
    let back = Instant::now();
    let probe = fx.client_at(false, None, None, gw.https);
    let recovered = until_status(&probe, &gw.url("/bao"), &fx.token(), 200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.finish().await;
    eprintln!(
        "{} (vault down {:?}; recovered {recovered:?} after it returned)",
        tally.summary("vault_down"),
        back - down
    );

    tally.assert_load("vault_down", 100);
    assert!(tally.failed().is_empty(), "connection failures: {:?}", tally.failed());
    let statuses = tally.by_status();
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), vec![200, 503], "{statuses:?}");
    for outcome in &tally.outcomes {
        if outcome.status == Some(200) {
            assert_eq!(outcome.digest, Some(sha("s3cr3t-v1")), "a call carried an empty or wrong secret");
        }
    }
    // Stale serving, then 503: no 200 sent after the first 503 until the vault is back,
    // and the first 503 not before ttl has run out (generous: ttl - 0.5 s).
    let first_503 = tally.outcomes.iter().find(|o| o.status == Some(503)).unwrap();
    assert!(first_503.sent >= down + Duration::from_millis(500), "503 before the cached value expired");
    let stale_200 =
        tally.outcomes.iter().filter(|o| o.status == Some(200) && o.sent > down && o.done < first_503.sent).count();
    assert!(stale_200 > 0, "no stale value was served while the vault was down");
    assert!(
        !tally.outcomes.iter().any(|o| o.status == Some(200) && o.sent > first_503.done && o.done < back),
        "a 200 after max_stale ran out, before the vault returned"
    );
    assert_recorded(&gw.admin_url("/runs"), &tally).await;
    let metrics = metrics_text(&gw).await;
    assert!(metric(&metrics, "flowgate_secret_stale_served_total") > 0.0, "{metrics}");
    gw.shutdown().await;
}

/// Vault secret rotated mid-load: every call succeeds, each with the old or the new value,
/// and the new value is in use within the TTL (plus refresh slack).
#[tokio::test]
async fn vault_secret_rotation_mid_load_fails_no_call() {
    let _serial = SERIAL.lock().await;
    let bao = Bao::start(free_port()).await;
    let fx = Fixture::new();
    bao.setup_approle(fx.path()).await;
    bao.put_secret("flows/token", json!({ "value": "s3cr3t-old" })).await;
    let gw = bao_gateway(&fx, &bao).await;
    let load = Load::start(WORKERS, PACE, &post_calls(&fx, &gw, "/bao", fixed(fx.token())));
    tokio::time::sleep(Duration::from_secs(1)).await;
    bao.put_secret("flows/token", json!({ "value": "s3cr3t-new" })).await;
    let written = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tally = load.finish().await;
    let (old, new) = (sha("s3cr3t-old"), sha("s3cr3t-new"));
    let first_new =
        tally.outcomes.iter().find(|o| o.digest.as_ref() == Some(&new)).expect("the new value was never used");
    eprintln!(
        "{} (new value upstream {:?} after the write)",
        tally.summary("vault_rotation"),
        first_new.done - written
    );
    tally.assert_all_ok("vault_rotation", 100);
    // ttl = 1s: every call sent 2 s after the write carries the new value.
    for outcome in &tally.outcomes {
        assert!(
            outcome.digest == Some(old.clone()) || outcome.digest == Some(new.clone()),
            "wrong secret: {outcome:?}"
        );
        if outcome.sent > written + Duration::from_secs(2) {
            assert_eq!(outcome.digest, Some(new.clone()), "old value used past the TTL");
        }
    }
    assert_recorded(&gw.admin_url("/runs"), &tally).await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Redis: the shared rate limiter stops and returns on the same port.

async fn redis_gateway(fx: &Fixture, redis: &Redis, on_error: &str) -> Running {
    fx.serve_issuer();
    let echo = start_echo().await;
    let triggers = format!(
        "{}{}",
        common::echo_trigger("t", "/t", echo, "rate_limit = { calls = 1000000, period = \"60s\" }"),
        common::echo_trigger("small", "/small", echo, "rate_limit = { calls = 3, period = \"60s\" }"),
    );
    let text = fx.policy_text(&format!(
        "{COMMON}\n[cluster]\nredis = \"redis://127.0.0.1:{}/0\"\non_redis_error = \"{on_error}\"\n\n{triggers}",
        redis.port
    ));
    start_gateway(&fx.write_policy(&text)).await
}

/// Redis down with `fail_closed`: 503 while it is down (never over-admit), 200 again once
/// it returns; no connection-level failure.
#[tokio::test]
async fn redis_down_fail_closed_is_503_then_recovers() {
    let _serial = SERIAL.lock().await;
    let mut redis = Redis::start();
    let fx = Fixture::new();
    let gw = redis_gateway(&fx, &redis, "fail_closed").await;
    let load = Load::start(WORKERS, PACE, &post_calls(&fx, &gw, "/t", fixed(fx.token())));
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.stop();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _redis = Redis::start_on(redis.port);
    let back = Instant::now();
    let probe = fx.client_at(false, None, None, gw.https);
    let recovered = until_status(&probe, &gw.url("/t"), &fx.token(), 200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.finish().await;
    eprintln!("{} (Redis down {:?}; recovered {recovered:?} after)", tally.summary("redis_fail_closed"), back - down);
    tally.assert_load("redis_fail_closed", 100);
    assert!(tally.failed().is_empty(), "connection failures: {:?}", tally.failed());
    assert_eq!(tally.by_status().keys().copied().collect::<Vec<_>>(), vec![200, 503], "{:?}", tally.by_status());
    // 503 only while Redis is down (generous margins for the connection to notice).
    for outcome in tally.outcomes.iter().filter(|o| o.status == Some(503)) {
        assert!(outcome.done >= down && outcome.sent <= back + RECOVERY, "503 outside the outage: {outcome:?}");
    }
    // Calls sent well inside the outage are all refused: fail closed.
    let inside: Vec<_> =
        tally.outcomes.iter().filter(|o| o.sent > down + Duration::from_millis(500) && o.done < back).collect();
    assert!(!inside.is_empty() && inside.iter().all(|o| o.status == Some(503)), "admitted while Redis was down");
    assert_recorded(&gw.admin_url("/runs"), &tally).await;
    gw.shutdown().await;
}

/// Redis down with `local`: every valid call keeps being served on this instance's
/// budgets (a small local budget still refuses with 429), the fallback is counted, and the
/// shared limiter is used again when Redis returns.
#[tokio::test]
async fn redis_down_local_uses_local_budgets_then_recovers() {
    let _serial = SERIAL.lock().await;
    let mut redis = Redis::start();
    let fx = Fixture::new();
    let gw = redis_gateway(&fx, &redis, "local").await;
    let load = Load::start(WORKERS, PACE, &post_calls(&fx, &gw, "/t", fixed(fx.token())));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = metric(&metrics_text(&gw).await, "flowgate_ratelimit_redis_fallback_total");
    redis.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The small budget (3 per minute) is enforced locally during the outage.
    let probe = fx.client_at(false, None, None, gw.https);
    let mut small = Vec::new();
    for _ in 0..5 {
        small.push(load::one(probe.post(gw.url("/small")).bearer_auth(fx.token()).body("{}")).await.status);
    }
    assert_eq!(small, [Some(200), Some(200), Some(200), Some(429), Some(429)], "local budget during the outage");
    let during = metric(&metrics_text(&gw).await, "flowgate_ratelimit_redis_fallback_total");
    assert!(during > before, "the fallback to local budgets was not counted ({before} -> {during})");
    let _redis = Redis::start_on(redis.port);
    // Back on Redis: the fallback counter stops growing.
    let start = Instant::now();
    loop {
        let a = metric(&metrics_text(&gw).await, "flowgate_ratelimit_redis_fallback_total");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let b = metric(&metrics_text(&gw).await, "flowgate_ratelimit_redis_fallback_total");
        // Counter samples are whole numbers.
        if (a - b).abs() < 0.5 {
            break;
        }
        assert!(start.elapsed() < RECOVERY, "still falling back {RECOVERY:?} after Redis returned");
    }
    let tally = load.finish().await;
    eprintln!("{} (recovered {:?} after Redis returned)", tally.summary("redis_local"), start.elapsed());
    tally.assert_all_ok("redis_local", 100);
    assert_recorded(&gw.admin_url("/runs"), &tally).await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Upstream faults, policy reloads, certificate rotation.

/// Upstream refuses connections / stalls, next to a healthy trigger under load: 502 within
/// the connect timeout, 504 within the response timeout, healthy calls untouched, and no
/// connection slot leaks: every slot comes back, and a full set of new connections is served.
#[tokio::test]
async fn upstream_refusing_or_stalling_is_502_or_504_in_time_without_slot_leaks() {
    let _serial = SERIAL.lock().await;
    const SLOTS: usize = 12;
    let fx = Fixture::new();
    fx.serve_issuer();
    let echo = start_echo().await;
    let triggers = format!(
        "{}{}{}",
        common::echo_trigger("t", "/t", echo, "rate_limit = \"off\""),
        trigger_to("refused", "/refused", &format!("http://{}/", closed_port()), "rate_limit = \"off\""),
        trigger_to(
            "stall",
            "/stall",
            &format!("http://{echo}/stall?delay_ms=5000"),
            "rate_limit = \"off\"\nupstream_response_timeout = \"1s\""
        ),
    );
    // COMMON ends inside [limits].
    let text = fx.policy_text(&format!("{COMMON}max_connections = {SLOTS}\n\n{triggers}"));
    let gw = start_gateway(&fx.write_policy(&text)).await;
    let token = fixed(fx.token());
    let healthy = Load::start(WORKERS, PACE, &post_calls(&fx, &gw, "/t", token.clone()));
    let refused = Load::start(2, PACE, &post_calls(&fx, &gw, "/refused", token.clone()));
    let stalled = Load::start(2, PACE, &post_calls(&fx, &gw, "/stall", token.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (healthy, refused, stalled) = (healthy.finish().await, refused.finish().await, stalled.finish().await);
    eprintln!("{}", healthy.summary("upstream_healthy"));
    eprintln!("{}", refused.summary("upstream_refused"));
    eprintln!("{}", stalled.summary("upstream_stalled"));

    healthy.assert_load("upstream_healthy", 100);
    assert!(healthy.failed().is_empty() && healthy.other_than(200).is_empty(), "healthy calls hurt");
    refused.assert_load("upstream_refused", 20);
    assert!(refused.failed().is_empty() && refused.other_than(502).is_empty(), "{:?}", refused.by_status());
    // connect timeout 1 s (a refused connect is immediate) plus a generous margin.
    assert!(refused.outcomes.iter().all(|o| o.done - o.sent < Duration::from_secs(3)), "a 502 took too long");
    stalled.assert_load("upstream_stalled", 4);
    assert!(stalled.failed().is_empty() && stalled.other_than(504).is_empty(), "{:?}", stalled.by_status());
    for o in &stalled.outcomes {
        let took = o.done - o.sent;
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "504 after {took:?}");
    }
    let metrics = metrics_text(&gw).await;
    assert!(metric(&metrics, "flowgate_upstream_errors_total{kind=\"connect\"}") > 0.0, "{metrics}");
    assert!(metric(&metrics, "flowgate_upstream_errors_total{kind=\"timeout\"}") > 0.0, "{metrics}");
    for tally in [&healthy, &refused, &stalled] {
        assert_recorded(&gw.admin_url("/runs"), tally).await;
    }

    // Every caller is gone: every connection slot comes back...
    let start = Instant::now();
    loop {
        let open = metric(&metrics_text(&gw).await, "flowgate_open_connections");
        if open == 0.0 {
            break;
        }
        assert!(start.elapsed() < RECOVERY, "{open} connections still open {RECOVERY:?} after every caller left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and SLOTS new connections at once, each holding its slot for a while, are all served.
    let mut calls = Vec::new();
    for _ in 0..SLOTS {
        let client = fx.client_at(false, Some(&fx.token()), None, gw.https);
        let url = gw.url("/t?delay_ms=300");
        calls.push(tokio::spawn(async move { load::one(client.post(url).body("{}")).await.status }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), Some(200), "a connection slot leaked");
    }
    gw.shutdown().await;
}

/// 100 policy reloads during load, valid and invalid alternating: no call fails; every
/// valid file is swapped in, every invalid one swaps nothing.
#[tokio::test]
async fn hundred_reloads_valid_and_invalid_alternating_fail_no_call() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    fx.serve_issuer();
    let echo = start_echo().await;
    let policy = |i: usize| {
        fx.policy_text(&format!(
            "{COMMON}\n{}{}",
            common::echo_trigger("t", "/t", echo, "rate_limit = \"off\""),
            common::echo_trigger(
                "other",
                "/other",
                echo,
                &format!("rate_limit = {{ calls = {}, period = \"60s\" }}", 100 + i)
            ),
        ))
    };
    let path = fx.write_policy(&policy(0));
    let gw = start_gateway(&path).await;
    let load = Load::start(WORKERS, PACE, &post_calls(&fx, &gw, "/t", fixed(fx.token())));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let failed_before = metric(&metrics_text(&gw).await, "flowgate_policy_reloads_total{result=\"failed\"}");
    let mut versions = std::collections::HashSet::new();
    let mut replaced = Vec::new();
    for i in 1..=100 {
        replaced.push(Arc::downgrade(&gw.gateway.policy()));
        let running = gw.gateway.policy().version.clone();
        let valid = i % 2 == 0;
        let text = match (valid, i % 4) {
            (true, _) => policy(i),
            // Not TOML at all, and TOML that does not compile (a path without '/').
            (false, 1) => format!("{}\n[[trigger]\nname = ", policy(i)),
            (false, _) => policy(i).replace("path = \"/other\"", "path = \"other\""),
        };
        std::fs::write(&path, text).unwrap();
        let outcome = flowgate::reload::reload_blocking(&gw.gateway).await;
        let now = gw.gateway.policy().version.clone();
        if valid {
            match outcome {
                Ok(flowgate::gateway::ReloadOutcome::Swapped { version }) => {
                    assert_eq!(version, now);
                    assert_ne!(version, running, "reload {i}: a changed policy kept its version");
                    versions.insert(version);
                }
                other => panic!("reload {i} (valid): {other:?}"),
            }
        } else {
            assert!(outcome.is_err(), "reload {i} (invalid) was accepted: {outcome:?}");
            assert_eq!(now, running, "reload {i} (invalid) swapped the policy");
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let tally = load.finish().await;
    eprintln!("{} (100 reloads: {} swapped)", tally.summary("reloads"), versions.len());
    assert_eq!(versions.len(), 50);
    // Policies swapped out are freed once no call holds them (a soak runs for weeks).
    let current = Arc::downgrade(&gw.gateway.policy());
    let start = Instant::now();
    loop {
        let kept: Vec<usize> =
            (0..replaced.len()).filter(|i| replaced[*i].strong_count() > 0 && !replaced[*i].ptr_eq(&current)).collect();
        if kept.is_empty() {
            break;
        }
        assert!(start.elapsed() < RECOVERY, "replaced policies still held after the load stopped: {kept:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed_after = metric(&metrics_text(&gw).await, "flowgate_policy_reloads_total{result=\"failed\"}");
    // Counter samples are whole numbers.
    let failed = failed_after - failed_before;
    assert!((failed - 50.0).abs() < 0.5, "failed reloads counted: {failed}");
    tally.assert_all_ok("reloads", 100);
    assert_recorded(&gw.admin_url("/runs"), &tally).await;
    gw.shutdown().await;
}

/// Certificate rotated on disk (watched files): new connections get the new certificate
/// (a client trusting only the new CA gets through, one trusting only the old CA is
/// refused); connections opened before keep serving calls without a failure.
#[tokio::test]
async fn certificate_rotated_on_disk_new_connections_get_it_open_ones_continue() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    fx.serve_issuer();
    let echo = start_echo().await;
    let path = fx.write_policy(
        &fx.policy_text(&format!("{COMMON}\n{}", common::echo_trigger("t", "/t", echo, "rate_limit = \"off\""))),
    );
    let gw = start_gateway(&path).await;
    let _watcher = flowgate::reload::watch_files(gw.gateway.clone(), &path).unwrap();
    // Each worker has its own client: one connection, opened before the rotation, trusting
    // only the old CA. A reconnect would fail and be counted.
    let load = Load::start(WORKERS, PACE, &post_calls(&fx, &gw, "/t", fixed(fx.token())));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pki = flowgate::tls::dev::DevPki::generate().unwrap();
    for (name, pem) in [("server.crt", &pki.server_cert_pem), ("server.key", &pki.server_key_pem)] {
        let tmp = fx.path().join(format!("{name}.new"));
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, fx.path().join(name)).unwrap();
    }
    let rotated = Instant::now();
    let new_ca = reqwest::Certificate::from_pem(pki.ca_cert_pem.as_bytes()).unwrap();
    let start = Instant::now();
    loop {
        // A fresh client (fresh connection) each time, trusting only the new CA.
        let client = reqwest::Client::builder()
            .tls_certs_only([new_ca.clone()])
            .no_proxy()
            .resolve("localhost", gw.https)
            .build()
            .unwrap();
        let outcome = load::one(client.post(gw.url("/t")).bearer_auth(fx.token()).body("{}")).await;
        if outcome.status == Some(200) {
            break;
        }
        assert!(start.elapsed() < RECOVERY, "new connections never got the new certificate: {outcome:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = rotated.elapsed();
    let old_only = fx.client_at(false, Some(&fx.token()), None, gw.https);
    let outcome = load::one(old_only.post(gw.url("/t")).body("{}")).await;
    assert!(outcome.error.is_some(), "a new connection still got the old certificate: {outcome:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.finish().await;
    eprintln!(
        "{} (new certificate on new connections {took:?} after the files changed)",
        tally.summary("cert_rotation")
    );
    tally.assert_load("cert_rotation", 100);
    assert!(tally.outcomes.iter().any(|o| o.sent > rotated + took), "no call on an old connection after rotation");
    assert!(tally.failed().is_empty(), "open connections were cut: {:?}", tally.failed());
    assert!(tally.other_than(200).is_empty(), "{:?}", tally.other_than(200));
    assert_recorded(&gw.admin_url("/runs"), &tally).await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// SIGTERM: the real binary.

const BIN: &str = env!("CARGO_BIN_EXE_flowgate");

/// SIGTERM during load: every call sent well before the signal gets its full answer; each
/// call the gateway accepted (has a run record) got its answer and each answer has a
/// record; new connections are refused; the process exits 0 within `shutdown_grace`.
#[tokio::test]
async fn sigterm_during_load_drains_every_accepted_call_and_exits_0_in_grace() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    fx.serve_issuer();
    let echo = start_echo().await;
    let port = free_port();
    let text = fx
        .policy_text(&format!(
            "[audit]\nfile = \"runs.jsonl\"\nring = 100000\n\n[limits]\nshutdown_grace = \"5s\"\n\n{}",
            common::echo_trigger("t", "/t", echo, "rate_limit = \"off\"")
        ))
        .replace("listen = \"127.0.0.1:0\"\ntls", &format!("listen = \"127.0.0.1:{port}\"\ntls"));
    let path = fx.write_policy(&text);
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let probe = fx.client_at(false, Some(&fx.token()), None, addr);
    let url = format!("https://localhost:{port}/t?delay_ms=200");
    let start = Instant::now();
    let probed = loop {
        let outcome = load::one(probe.post(&url).body("{}")).await;
        if outcome.status == Some(200) {
            break outcome.id.unwrap();
        }
        assert!(start.elapsed() < RECOVERY, "the gateway never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Calls that take 200 ms or more upstream, so some are always in flight. Each worker's
    // take a different time (200–345 ms): in lockstep, the six workers' 5 ms pauses could
    // all fall on the signal and leave no call in flight (seen once on a busy host).
    let clients: Vec<reqwest::Client> = (0..6).map(|_| fx.client_at(false, Some(&fx.token()), None, addr)).collect();
    let urls: Vec<String> =
        (0..6).map(|worker| format!("https://localhost:{port}/t?delay_ms={}", 200 + 29 * worker)).collect();
    let load = Load::start(6, Duration::from_millis(5), &{
        Arc::new(move |worker| clients[worker].post(&urls[worker]).body("{}"))
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = child.id().unwrap().to_string();
    let signalled = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // New connections are refused once the signal is handled.
    let fresh = tokio::net::TcpStream::connect(addr).await;
    assert!(fresh.is_err(), "a new connection was accepted after SIGTERM");
    let exit = tokio::time::timeout(Duration::from_secs(5 + 3), child.wait())
        .await
        .expect("the gateway did not exit within shutdown_grace")
        .unwrap();
    let exited = signalled.elapsed();
    let tally = load.finish().await;
    eprintln!("{} (exit {:?} {exited:?} after SIGTERM)", tally.summary("sigterm"), exit.code());
    let before = tally.failed().iter().filter(|o| o.sent < signalled).count();
    eprintln!("sigterm: {} calls sent after the signal failed to connect, {before} sent before it", {
        tally.failed().len() - before
    });
    assert_eq!(exit.code(), Some(0));
    assert!(exited < Duration::from_secs(5 + 1), "exit took {exited:?} (shutdown_grace 5 s)");
    tally.assert_load("sigterm", 20);
    // Calls in flight at the signal were drained (answered after it).
    let drained = tally.outcomes.iter().filter(|o| o.status == Some(200) && o.done > signalled).count();
    assert!(drained > 0, "no call was in flight at the signal: the row proved nothing");

    // Calls sent well before the signal (100 ms, while the upstream takes 200 ms) were
    // accepted: each has its full answer.
    for o in tally.outcomes.iter().filter(|o| o.sent + Duration::from_millis(100) < signalled) {
        assert_eq!(o.status, Some(200), "a call accepted before SIGTERM lost its answer: {o:?}");
    }
    // No answer is a failure status or cut short: a call got 200 or was never accepted.
    assert!(tally.other_than(200).is_empty(), "{:?}", tally.other_than(200));
    assert!(!tally.failed().iter().any(|o| o.id.is_some()), "an answer was cut short");
    // Nothing lost: the run records (flushed before exit) are exactly the answered calls.
    let file = std::fs::read_to_string(fx.path().join("runs.jsonl")).unwrap();
    let recorded: std::collections::BTreeSet<String> = file
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|r| r["path"] == "/t")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let mut answered: std::collections::BTreeSet<String> =
        tally.outcomes.iter().filter(|o| o.status.is_some()).map(|o| o.id.clone().unwrap()).collect();
    answered.insert(probed);
    let lost: Vec<_> = recorded.difference(&answered).collect();
    let unrecorded: Vec<_> = answered.difference(&recorded).collect();
    assert!(lost.is_empty(), "accepted (recorded) but never answered: {lost:?}");
    assert!(unrecorded.is_empty(), "answered without a run record: {unrecorded:?}");
}
