//! The run history cannot exhaust memory (every buffer has a bound in bytes): 10,000
//! captured calls whose JSON bodies are built to blow up as parsed trees (long arrays of small numbers) go
//! through the real gateway while `/runs` is read with an absurd `limit` the whole time;
//! the ring never holds more than `[audit] ring_max_bytes`, evictions are counted in the
//! metrics, `/runs` answers at most `MAX_LIMIT` records and keeps answering meanwhile.

use crate::common;

use common::{Fixture, echo_trigger, metrics_text, start_echo, start_gateway_for};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const RING_MAX_BYTES: usize = 1024 * 1024;
const CALLS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_adversarial_captures_stay_within_the_ring_bound() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let policy = fx.write_policy(&fx.policy_text(&format!(
        "[shield]\nenabled = false\n\n[audit]\nring_max_bytes = {RING_MAX_BYTES}\n\n{}",
        echo_trigger("cap", "/cap", echo, "capture = true\nrate_limit = \"off\"")
    )));
    let gw = Arc::new(start_gateway_for(&fx, &policy).await);
    // 1,000 zeros: 2 KiB of text, some 32 KiB as a tree; echoed back, so captured twice.
    let body = format!("[{}0]", "0,".repeat(1000));

    // While the calls run, `/runs` is asked for everything, again and again.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (gw, done) = (gw.clone(), done.clone());
        tokio::spawn(async move {
            let admin = reqwest::Client::builder().no_proxy().build().unwrap();
            let mut answers = 0;
            while !done.load(Ordering::Relaxed) {
                let answer = tokio::time::timeout(
                    Duration::from_secs(20),
                    admin.get(gw.admin_url("/runs?limit=100000000")).send(),
                )
                .await
                .expect("/runs must keep answering while records are written")
                .unwrap();
                assert_eq!(answer.status(), 200);
                let runs: Vec<serde_json::Value> = answer.json().await.unwrap();
                assert!(runs.len() <= flowgate::audit::MAX_LIMIT, "{} runs in one answer", runs.len());
                assert!(gw.gateway.audit.ring_bytes() <= RING_MAX_BYTES);
                answers += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answers
        })
    };

    let client = fx.client(true);
    let statuses: Vec<u16> = futures_util::stream::iter(0..CALLS)
        .map(|_| {
            let request = client.post(gw.url("/cap")).header("content-type", "application/json").body(body.clone());
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                response.bytes().await.unwrap();
                status
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    done.store(true, Ordering::Relaxed);
    let answers = reader.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", statuses.iter().find(|s| **s != 200));
    assert!(answers > 0);

    let audit = &gw.gateway.audit;
    assert!(audit.stats().records >= CALLS as u64);
    assert!(audit.ring_bytes() <= RING_MAX_BYTES, "{} bytes", audit.ring_bytes());
    let evictions = audit.stats().ring_evictions;
    assert!(evictions > 0);
    let metrics = metrics_text(&gw).await;
    assert!(metrics.contains("flowgate_audit_ring_evictions_total"), "{metrics}");

    // The newest records are there, each with its capture, as JSON.
    let runs: Vec<serde_json::Value> =
        reqwest::get(gw.admin_url("/runs?limit=100000000")).await.unwrap().json().await.unwrap();
    assert!(!runs.is_empty() && runs.len() <= flowgate::audit::MAX_LIMIT);
    let json = &runs[0]["capture"]["request"]["body"]["json"];
    assert_eq!(json.as_array().map(Vec::len), Some(1001), "{}", runs[0]);
    let Ok(gw) = Arc::try_unwrap(gw) else { panic!("the gateway is still shared") };
    gw.shutdown().await;
}
