//! Reloading a large policy keeps serving calls. The gateway runs on one thread (as when
//! pinned to one core) with the policy of `scripts/perf/scale-policy.py`; clients call its
//! last route without pause while the policy is reloaded several times through the admin
//! API, and no call fails.
//!
//! That calls are served *while* the policy compiles is shown without a clock: the reloaded
//! policy names a deny list that is a FIFO, so each compile blocks reading it until a
//! helper thread writes it, and the helper writes only once it has seen calls answered
//! after the compile opened the FIFO (opening it for writing waits for that). A compile on the serving thread would hold that
//! thread in the read: no call would be answered and the helper would give up (after a
//! generous 60 s), failing the test.

use crate::common::{Fixture, start_echo, start_gateway_for};
use flowgate::auth::dev_issuer::DEMO_OID;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A tenth of the estate the generator writes by default (1,000 exact triggers, 10,000
/// CIDRs in each list, 1,000 principals, 100 secrets...).
const SCALE: f64 = 0.1;
const RELOADS: usize = 3;
const CLIENTS: usize = 4;
/// Calls the helper waits to see answered while a compile is blocked on the FIFO.
const CALLS_DURING_COMPILE: u64 = 10;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

#[tokio::test(flavor = "current_thread")]
async fn reloading_a_large_policy_loses_no_call_and_stalls_none() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let base = fx.path().join("base.toml");
    std::fs::write(&base, fx.policy_text("")).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/perf/scale-policy.py");
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg(fx.path())
        .args(["--base", base.to_str().unwrap(), "--upstream", &format!("http://{echo}/invoke")])
        .args(["--oid", DEMO_OID, "--scale", &SCALE.to_string()])
        .status()
        .expect("python3 runs scripts/perf/scale-policy.py (install it: apt-get install -y python3)");
    assert!(status.success(), "scale-policy.py failed");
    let policy_path = fx.path().join("policy.toml");
    let gw = start_gateway_for(&fx, &policy_path).await;
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a small positive count")]
    let last = (10_000.0 * SCALE) as u64 - 1;
    let url = gw.url(&format!("/scale/exact/{last}"));

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, tally, stop) = (fx.client(false), url.clone(), tally.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = match client.post(&url).body("{}").send().await {
                    Ok(response) => {
                        let status = response.status();
                        response.bytes().await.map(|_| status)
                    }
                    Err(error) => Err(error),
                };
                match answer {
                    Ok(status) if status == 200 => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Ok(status) => {
                        eprintln!("call answered {status}");
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(error) => {
                        eprintln!("call failed: {error}");
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    while tally.ok.load(Ordering::Relaxed) < 20 {
        assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "calls failed before any reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // From now on every compile of the policy reads the FIFO, which the helper feeds.
    let fifo = fx.path().join("gate.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo (coreutils) runs");
    assert!(made.success(), "mkfifo failed");
    let text = std::fs::read_to_string(&policy_path).unwrap();
    // One trigger only: each compile then opens the FIFO once.
    let list = "deny_ip_files = [\"deny-trigger.txt\"]";
    let gated = text.replacen(list, "deny_ip_files = [\"deny-trigger.txt\", \"gate.fifo\"]", 1);
    assert_ne!(gated, text, "the generated policy's measured triggers have a deny_ip_files list");
    std::fs::write(&policy_path, gated).unwrap();
    let (next, go) = std::sync::mpsc::channel::<()>();
    let helper = {
        let tally = tally.clone();
        std::thread::spawn(move || {
            let mut answered_during = Vec::new();
            for _ in 0..RELOADS {
                // Opening for writing waits until the compile opens the FIFO to read it.
                // The reload is asked for only after `go`, once the previous compile has
                // finished and closed the FIFO, so this open pairs with the new compile.
                if go.recv().is_err() {
                    break;
                }
                let mut gate = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                let seen = tally.ok.load(Ordering::Relaxed);
                // After one stall the point is made: later rounds do not wait again.
                let patience = if answered_during.iter().any(|n| *n < CALLS_DURING_COMPILE) { 0 } else { 60 };
                let deadline = Instant::now() + Duration::from_secs(patience);
                while tally.ok.load(Ordering::Relaxed) < seen + CALLS_DURING_COMPILE && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                answered_during.push(tally.ok.load(Ordering::Relaxed) - seen);
                gate.write_all(b"192.0.2.1\n").unwrap();
            }
            answered_during
        })
    };
    let admin = reqwest::Client::new();
    for round in 0..RELOADS {
        next.send(()).unwrap();
        let response =
            admin.post(gw.admin_url("/reload")).header("content-type", "application/json").send().await.unwrap();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["result"], "swapped", "reload {round}: {body}");
    }
    let answered_during = tokio::task::spawn_blocking(move || helper.join().unwrap()).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failed) = (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    println!("{ok} calls, {failed} failed; answered while each compile was held open: {answered_during:?}");
    assert_eq!(failed, 0, "calls were lost while reloading");
    for (round, during) in answered_during.iter().enumerate() {
        assert!(
            *during >= CALLS_DURING_COMPILE,
            "reload {round}: {during} calls answered while the policy compiled: the compile held the serving thread"
        );
    }
    gw.shutdown().await;
}
