//! The shared limiter against a real `redis-server` started by the test on a free
//! loopback port: exact totals across two instances, both failure modes, and recovery.

use crate::common;

use common::redis::Redis;

use flowgate::ratelimit::{
    ClusterSettings, LimitKey, Limiters, OnRedisError, RateKey, RateLimitRule, RedisSettings, SystemClock,
};
use std::sync::Arc;
use std::time::Duration;

fn limiters(port: u16, mode: OnRedisError) -> Limiters {
    let settings = ClusterSettings {
        redis: Some(RedisSettings {
            url: format!("redis://127.0.0.1:{port}/0"),
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
            key_prefix: "flowgate-test:".into(),
        }),
        on_redis_error: mode,
        local_max_keys: 10_000,
    };
    Limiters::new(&settings, Arc::new(SystemClock::default())).unwrap()
}

/// Fires `n` concurrent checks spread over the instances; returns (admitted, refused).
async fn flood(instances: &[Arc<Limiters>], rule: &RateLimitRule, key: &RateKey, n: usize) -> (usize, usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let limiters = instances[i % instances.len()].clone();
        let (rule, key) = (rule.clone(), key.clone());
        tasks.push(tokio::spawn(async move { limiters.check(&rule, &key).await }));
    }
    let mut admitted = 0;
    let mut refused = 0;
    for task in tasks {
        let decision = task.await.unwrap().expect("redis answers");
        if decision.admitted {
            admitted += 1;
        } else {
            assert!(decision.retry_after_secs.is_some_and(|s| (1..=60).contains(&s)), "{decision:?}");
            refused += 1;
        }
    }
    (admitted, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_exact_budget_and_survive_redis_outages() {
    let mut redis = Redis::start();
    let port = redis.port;
    let closed = Arc::new(limiters(port, OnRedisError::FailClosed));
    let local = Arc::new(limiters(port, OnRedisError::Local));
    let instances = [closed.clone(), local.clone()];
    let rule = RateLimitRule::new("shared", 50, Duration::from_secs(60), LimitKey::Principal, false);

    let alice = RateKey::principal("tenant", "oid:alice");
    let (admitted, refused) = flood(&instances, &rule, &alice, 300).await;
    assert_eq!((admitted, refused), (50, 250), "exactly `calls` admitted across both instances");

    // Another key has its own full budget.
    let bob = RateKey::principal("tenant", "oid:bob");
    assert_eq!(flood(&instances, &rule, &bob, 60).await, (50, 10));

    // Redis goes away.
    redis.stop();
    let carol = RateKey::principal("tenant", "oid:carol");
    let err = closed.check(&rule, &carol).await.expect_err("fail_closed refuses while redis is down");
    assert!(err.to_string().contains("unavailable"), "{err}");
    let fallback = local.check(&rule, &carol).await.expect("local falls back");
    assert!(fallback.admitted);
    assert_eq!(fallback.remaining, 49, "the local budget is this instance's own");
    assert_eq!(local.local_keys(), 1);

    // Redis comes back on the same port: sharing resumes (the manager reconnects).
    let _redis = Redis::start_on(port);
    let mut recovered = false;
    for _ in 0..100 {
        if closed.check(&rule, &RateKey::principal("tenant", "oid:probe")).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "fail_closed instance reconnects to redis");
    // Wait until the local-mode instance is back on Redis too (no new local key) before measuring.
    let mut back = false;
    for i in 0..100 {
        let before = local.local_keys();
        let _ = local.check(&rule, &RateKey::principal("tenant", &format!("oid:probe{i}"))).await;
        if local.local_keys() == before {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "local-mode instance returns to redis");
    let dave = RateKey::principal("tenant", "oid:dave");
    assert_eq!(flood(&instances, &rule, &dave, 120).await, (50, 70), "sharing resumes after the outage");
}

#[tokio::test]
async fn redis_retry_after_lets_the_retry_through() {
    let redis = Redis::start();
    let limiters = limiters(redis.port, OnRedisError::FailClosed);
    let rule = RateLimitRule::new("retry", 2, Duration::from_secs(2), LimitKey::Trigger, false);
    let key = RateKey::trigger();
    assert!(limiters.check(&rule, &key).await.unwrap().admitted);
    let second = limiters.check(&rule, &key).await.unwrap();
    assert!(second.admitted);
    assert_eq!(second.remaining, 0);
    let refused = limiters.check(&rule, &key).await.unwrap();
    assert!(!refused.admitted);
    let retry = refused.retry_after_secs.unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert!(limiters.check(&rule, &key).await.unwrap().admitted, "a retry after Retry-After succeeds");
}

/// An evenly paced caller is never refused by the shared limiter, across two instances.
/// Call `j` is sent no earlier than one period (+1 ms for clock-rate differences between
/// Tokio's monotonic clock and Redis's `TIME`) after call `j − calls` completed, and no
/// earlier than `start + j × period / calls`: in Redis time, calls `j − calls` and `j` are
/// at least one period apart, with about 1 ms to spare. (The former 1 %-slot design
/// refused this caller: it counted admissions up to one 10 ms slot too long.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_never_refuses_an_evenly_paced_caller() {
    let redis = Redis::start();
    let instances = [limiters(redis.port, OnRedisError::FailClosed), limiters(redis.port, OnRedisError::FailClosed)];
    let calls = 200usize;
    let period = Duration::from_secs(1);
    let rule = RateLimitRule::new("paced", u32::try_from(calls).unwrap(), period, LimitKey::Principal, false);
    let key = RateKey::principal("tenant", "oid:paced");
    let spacing = period / u32::try_from(calls).unwrap();
    let start = tokio::time::Instant::now();
    let mut done = Vec::new();
    let mut min_remaining = u32::MAX;
    for j in 0..calls * 3 / 2 {
        let mut send_at = start + spacing * u32::try_from(j).unwrap();
        if j >= calls {
            send_at = send_at.max(done[j - calls] + period + Duration::from_millis(1));
        }
        tokio::time::sleep_until(send_at).await;
        let decision = instances[j % 2].check(&rule, &key).await.expect("redis answers");
        done.push(tokio::time::Instant::now());
        assert!(decision.admitted, "paced call {j} refused: {decision:?}");
        min_remaining = min_remaining.min(decision.remaining);
    }
    // The caller did run at (about) the limit: the shared window was (nearly) full.
    assert!(min_remaining <= 20, "min remaining {min_remaining}");
}

/// Budgets above 100,000 calls use the bucketed script: it answers and counts.
#[tokio::test]
async fn redis_huge_budget_uses_the_bucketed_script() {
    let redis = Redis::start();
    let limiters = limiters(redis.port, OnRedisError::FailClosed);
    let rule = RateLimitRule::new("huge", 100_001, Duration::from_secs(60), LimitKey::Trigger, false);
    let key = RateKey::trigger();
    for expected in [100_000, 99_999, 99_998] {
        let decision = limiters.check(&rule, &key).await.unwrap();
        assert!(decision.admitted);
        assert_eq!(decision.remaining, expected);
    }
}
