//! The soak behind `scripts/checks/soak.sh` (ignored by `cargo test`: it runs for minutes). The
//! real binary serves a steady rate of calls on loopback for `SOAK_SECONDS` (default 600):
//! valid calls carrying a secret from a `file` vault that is rotated every 10 s, and
//! refusals (no token: 401; unknown path: 404; a small budget: 429); the policy file is
//! rewritten every 30 s (the watcher reloads it). Samples of the process's RSS and open
//! file descriptors, the run-history ring's size and the valid calls' p99 are printed as a
//! one-screen summary, then checked: RSS growth under 5 % after warm-up, descriptors flat,
//! the ring at its bound, no connection failure, no call with a wrong secret.
#![allow(clippy::disallowed_methods, reason = "the soak length and rate are chosen in the environment")]

use crate::common;
use common::load;

use common::bao::write_private;
use common::ports::free_port;
use common::upstream::{sha, start_reporter};
use common::{Fixture, trigger_to};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The run-history ring's bound: no larger than one `/runs` answer (`MAX_LIMIT`), which
/// is how the soak counts the ring's records. At 2,000 the count stopped at 1,000, so the
/// warm-up (the ring full) was never seen and the bound check could not pass.
const RING: usize = flowgate::audit::MAX_LIMIT;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn policy(fx: &Fixture, https: u16, admin: u16, upstream: &str, generation: u64) -> String {
    let triggers = format!(
        "{}{}",
        trigger_to(
            "t",
            "/t",
            &format!("{upstream}/report"),
            "inject.headers.\"x-api-key\" = \"secret://files/flows#api_key\"\nrate_limit = \"off\""
        ),
        trigger_to(
            "limited",
            "/limited",
            &format!("{upstream}/report"),
            &format!("rate_limit = {{ calls = {}, period = \"10s\" }}", 5 + generation % 2)
        ),
    );
    // The driver keeps 64 calls of one caller open; a call's slot at the gateway is given
    // back a moment after the client saw its last byte, so the per-caller cap sits above that.
    fx.policy_text(&format!(
        "[limits]\nmax_calls_per_principal = 256\n\n[audit]\nring = {RING}\n\n[vault.files]\nkind = \"file\"\npath = \"secrets.toml\"\n\n\
         [secrets]\nttl = \"2s\"\nrefresh_ahead = \"500ms\"\nmax_stale = \"10s\"\n\n{triggers}"
    ))
    .replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{https}\""), 1)
    .replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{admin}\""), 1)
}

fn write_secret(fx: &Fixture, value: &str) {
    let tmp = fx.path().join("secrets.toml.new");
    write_private(&tmp, &format!("[flows]\napi_key = \"{value}\""));
    std::fs::rename(&tmp, fx.path().join("secrets.toml")).unwrap();
}

/// RSS (kB) and open descriptors of `pid`.
fn process_figures(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, std::iter::Iterator::count);
    (rss, fds)
}

fn p99(latencies: &mut [Duration]) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

struct Sample {
    at: Duration,
    rss_kb: u64,
    fds: usize,
    ring: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for minutes: scripts/checks/soak.sh"]
async fn soak() {
    let seconds = env_u64("SOAK_SECONDS", 600);
    let rate = env_u64("SOAK_RATE", 40).max(1);
    let fx = Fixture::new();
    fx.serve_issuer();
    let upstream = format!("http://{}", start_reporter().await);
    let (https, admin) = (free_port(), free_port());
    let mut generation = 0;
    let mut secret_version = 0;
    write_secret(&fx, "soak-secret-0");
    let written: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::from([sha("soak-secret-0")])));
    let path = fx.write_policy(&policy(&fx, https, admin, &upstream, generation));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
    let admin_url = format!("http://127.0.0.1:{admin}");
    let token = fx.token();
    let valid = fx.client_at(true, Some(&token), None, addr);
    let anonymous = fx.client_at(true, None, None, addr);
    let url = |p: &str| format!("https://localhost:{https}{p}");
    let start = Instant::now();
    while load::one(valid.post(url("/t")).body("{}")).await.status != Some(200) {
        assert!(start.elapsed() < Duration::from_secs(20), "the gateway never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // (seconds since start, latency) of every valid call; every outcome by kind.
    let latencies: Arc<Mutex<Vec<(Duration, Duration)>>> = Arc::default();
    let outcomes: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let wrong_secret = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let mut skipped = 0usize;
    let mut samples: Vec<Sample> = Vec::new();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let began = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate).unwrap());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut next_sample, mut next_reload, mut next_rotation) =
        (Duration::ZERO, Duration::from_secs(30), Duration::from_secs(10));
    let mut n = 0u64;
    while began.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let now = began.elapsed();
        if now >= next_sample {
            next_sample += Duration::from_secs(5);
            let (rss_kb, fds) = process_figures(pid);
            let ring = match http.get(format!("{admin_url}/runs?limit=1000000")).send().await {
                Ok(r) => r.json::<Vec<serde_json::Value>>().await.map_or(0, |v| v.len()),
                Err(_) => 0,
            };
            samples.push(Sample { at: now, rss_kb, fds, ring });
        }
        if now >= next_reload {
            next_reload += Duration::from_secs(30);
            generation += 1;
            let text = policy(&fx, https, admin, &upstream, generation);
            let tmp = fx.path().join("policy.toml.new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
        if now >= next_rotation {
            next_rotation += Duration::from_secs(10);
            secret_version += 1;
            let value = format!("soak-secret-{secret_version}");
            written.lock().unwrap().insert(sha(&value));
            write_secret(&fx, &value);
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        n += 1;
        let (kind, request) = match n % 10 {
            0 => ("anonymous", anonymous.post(url("/t")).body("{}")),
            1 => ("unknown_path", valid.post(url("/nope")).body("{}")),
            2 => ("limited", valid.post(url("/limited")).body("{}")),
            _ => ("valid", valid.post(url("/t")).body("{}")),
        };
        let (latencies, outcomes, written, wrong_secret) =
            (latencies.clone(), outcomes.clone(), written.clone(), wrong_secret.clone());
        tokio::spawn(async move {
            let outcome = load::one(request).await;
            drop(permit);
            let status = outcome.status.map_or_else(|| "failed".to_owned(), |s| s.to_string());
            *outcomes.lock().unwrap().entry(format!("{kind} {status}")).or_insert(0) += 1;
            if kind == "valid" && outcome.status == Some(200) {
                latencies.lock().unwrap().push((now, outcome.done - outcome.sent));
                let known = outcome.digest.as_ref().is_some_and(|d| written.lock().unwrap().contains(d));
                if !known {
                    wrong_secret.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
    }
    // Let the last calls finish, take the last sample, read the counters, stop the process.
    let _ = in_flight.acquire_many(64).await;
    let (rss_kb, fds) = process_figures(pid);
    let ring = http
        .get(format!("{admin_url}/runs?limit=1000000"))
        .send()
        .await
        .unwrap()
        .json::<Vec<serde_json::Value>>()
        .await
        .unwrap()
        .len();
    samples.push(Sample { at: began.elapsed(), rss_kb, fds, ring });
    let metrics = http.get(format!("{admin_url}/metrics")).send().await.unwrap().text().await.unwrap();
    let reloads: Vec<&str> = metrics.lines().filter(|l| l.starts_with("flowgate_policy_reloads_total")).collect();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(40), child.wait()).await.unwrap().unwrap();

    // The summary.
    let outcomes = outcomes.lock().unwrap().clone();
    let latencies = latencies.lock().unwrap().clone();
    let total: usize = outcomes.values().sum();
    // Warm-up ends once the ring is full (it grows until then, by design) and at least a
    // sixth of the run (at most a minute) has passed; failing that, at a third of the run.
    let warm_min = Duration::from_secs((seconds / 6).clamp(5, 60));
    let warm = samples
        .iter()
        .find(|s| s.ring >= RING && s.at >= warm_min)
        .or_else(|| samples.iter().find(|s| s.at >= Duration::from_secs(seconds / 3)))
        .unwrap();
    let last = samples.last().unwrap();
    let after_warm: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm.at).collect();
    let fds_min = after_warm.iter().map(|s| s.fds).min().unwrap();
    let fds_max = after_warm.iter().map(|s| s.fds).max().unwrap();
    let rss_max = after_warm.iter().map(|s| s.rss_kb).max().unwrap();
    #[allow(clippy::cast_precision_loss)]
    let growth = (last.rss_kb as f64 - warm.rss_kb as f64) / warm.rss_kb as f64 * 100.0;
    println!("== soak: {seconds} s at {rate} calls/s (debug build of the binary, loopback)");
    println!("calls: {total} sent, {skipped} ticks skipped (64 in flight)");
    for (kind, count) in &outcomes {
        println!("  {kind}: {count}");
    }
    println!("wrong or empty secret on a valid call: {}", wrong_secret.load(std::sync::atomic::Ordering::SeqCst));
    println!("secret rotations: {secret_version}; policy rewrites: {generation}; {}", reloads.join("; "));
    println!(
        "RSS: {} kB at warm-up ({:?}), {} kB at the end, max {rss_max} kB after warm-up: growth {growth:+.1} %",
        warm.rss_kb, warm.at, last.rss_kb
    );
    let series: Vec<String> = samples
        .iter()
        .filter(|s| s.at.as_secs() % 60 < 5 || std::ptr::eq(*s, last))
        .map(|s| format!("{}s {}", s.at.as_secs(), s.rss_kb / 1024))
        .collect();
    println!("RSS over time (MB): {}", series.join(", "));
    println!("open fds after warm-up: min {fds_min}, max {fds_max}, end {}", last.fds);
    println!("run-history ring: {} records at the end (bound {RING})", last.ring);
    let window = Duration::from_secs((seconds / 10).max(10));
    let mut line = String::from("p99 of valid calls per");
    line.push_str(&format!(" {window:?}:"));
    let mut p99s = Vec::new();
    let mut from = Duration::ZERO;
    while from < Duration::from_secs(seconds) {
        let mut slice: Vec<Duration> =
            latencies.iter().filter(|(at, _)| *at >= from && *at < from + window).map(|(_, l)| *l).collect();
        let p = p99(&mut slice);
        p99s.push(p);
        line.push_str(&format!(" {}", p.as_millis()));
        from += window;
    }
    println!("{line} (ms)");
    println!("exit after SIGTERM: {:?}", exit.code());
    println!("== end of soak");

    assert_eq!(exit.code(), Some(0));
    assert!(!outcomes.keys().any(|k| k.ends_with("failed")), "connection-level failures: {outcomes:?}");
    assert!(!outcomes.keys().any(|k| k.starts_with("valid") && k != "valid 200"), "valid calls refused: {outcomes:?}");
    assert!(!outcomes.keys().any(|k| k.starts_with("anonymous") && k != "anonymous 401"), "{outcomes:?}");
    assert!(!outcomes.keys().any(|k| k.starts_with("unknown_path") && k != "unknown_path 404"), "{outcomes:?}");
    assert!(outcomes.get("limited 429").copied().unwrap_or(0) > 0, "the small budget never refused: {outcomes:?}");
    assert_eq!(wrong_secret.load(std::sync::atomic::Ordering::SeqCst), 0, "a valid call carried a wrong secret");
    assert!(growth < 5.0, "RSS grew {growth:.1} % after warm-up");
    assert!(fds_max - fds_min <= 16, "open descriptors not flat: {fds_min}..{fds_max}");
    if total > RING * 2 {
        assert_eq!(last.ring, RING, "the run-history ring is not at its bound");
    }
}
