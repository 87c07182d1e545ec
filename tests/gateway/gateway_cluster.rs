//! Two gateway instances sharing one real Redis (started by the test on a free loopback
//! port): together they admit exactly `calls` for one caller; with Redis stopped they fail
//! closed (503); with Redis back the shared budget resumes; `tcp_connection` budgets of
//! two replicas never meet in Redis.

use crate::common;

use common::redis::Redis;
use common::{Fixture, Running, echo_trigger, start_echo, start_gateway_for};

const CALLS: usize = 50;
/// Redis's answer may take longer than the default 100 ms when other tests load the
/// machine; a late answer would be a 503 (fail closed) and a budget spent without a 200.
/// This test is about sharing, not latency.
const REDIS_TIMEOUT: &str = "timeout = \"2s\"\n";

async fn fire(fx: &Fixture, gateways: [&Running; 2], total: usize) -> Vec<u16> {
    let clients = [fx.client(true), fx.client(true)];
    let mut tasks = Vec::new();
    for i in 0..total {
        let client = clients[i % 2].clone();
        let url = gateways[i % 2].url("/shared");
        tasks.push(tokio::spawn(async move { client.post(url).body("{}").send().await.unwrap().status().as_u16() }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test]
async fn two_gateways_share_one_exact_budget_through_redis() {
    let mut redis = Redis::start();
    let fx = Fixture::new();
    let echo = start_echo().await;
    let policy_text = fx.policy_text(&format!(
        "[cluster]\nredis = \"redis://127.0.0.1:{}/0\"\non_redis_error = \"fail_closed\"\n{REDIS_TIMEOUT}\n{}",
        redis.port,
        echo_trigger("shared", "/shared", echo, &format!("rate_limit = {{ calls = {CALLS}, period = \"60s\" }}"))
    ));
    // Two instances, each with its own policy file, listeners and local state.
    let first_path = fx.path().join("first.toml");
    let second_path = fx.path().join("second.toml");
    std::fs::write(&first_path, &policy_text).unwrap();
    std::fs::write(&second_path, &policy_text).unwrap();
    let first = start_gateway_for(&fx, &first_path).await;
    let second = start_gateway_for(&fx, &second_path).await;

    let statuses = fire(&fx, [&first, &second], 3 * CALLS).await;
    println!("shared budget: {} admitted, {} refused", count(&statuses, 200), count(&statuses, 429));
    assert_eq!(count(&statuses, 200), CALLS, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 2 * CALLS, "{statuses:?}");

    // Redis stopped: fail closed on both instances (never over-admit).
    redis.stop();
    let statuses = fire(&fx, [&first, &second], 4).await;
    assert_eq!(count(&statuses, 503), 4, "{statuses:?}");

    // Redis back on the same port (empty): the shared budget resumes, exactly.
    let _redis = Redis::start_on(redis.port);
    let mut statuses = Vec::new();
    for _ in 0..100 {
        statuses = fire(&fx, [&first, &second], 2).await;
        if statuses.iter().all(|s| *s == 200) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(statuses, vec![200, 200], "sharing never resumed");
    let statuses = fire(&fx, [&first, &second], 2 * CALLS).await;
    assert_eq!(count(&statuses, 200), CALLS - 2, "{statuses:?}");
    println!("after recovery: {} admitted, {} refused", count(&statuses, 200), count(&statuses, 429));
    first.shutdown().await;
    second.shutdown().await;
}

/// Connection ids count from 1 in every process: the first connection to each of two
/// replicas sharing Redis must still have a budget of its own.
#[tokio::test]
async fn tcp_connection_budgets_of_two_replicas_stay_apart() {
    let redis = Redis::start();
    let fx = Fixture::new();
    let echo = start_echo().await;
    let policy_text = fx.policy_text(&format!(
        "[cluster]\nredis = \"redis://127.0.0.1:{}/0\"\n\n{}",
        redis.port,
        echo_trigger("conn", "/conn", echo, "rate_limit = { calls = 2, period = \"60s\", key = \"tcp_connection\" }")
    ));
    let first_path = fx.path().join("first.toml");
    let second_path = fx.path().join("second.toml");
    std::fs::write(&first_path, &policy_text).unwrap();
    std::fs::write(&second_path, &policy_text).unwrap();
    let first = start_gateway_for(&fx, &first_path).await;
    let second = start_gateway_for(&fx, &second_path).await;
    let token = fx.token();
    for gw in [&first, &second] {
        // One client, one connection: the replica's connection number 1.
        let client = fx.client_at(true, Some(&token), None, gw.https);
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(client.post(gw.url("/conn")).body("{}").send().await.unwrap().status().as_u16());
        }
        assert_eq!(statuses, vec![200, 200, 429], "on {}", gw.https);
    }
    first.shutdown().await;
    second.shutdown().await;
}
