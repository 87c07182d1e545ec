//! The local limiter under concurrency: exact totals per key, independent keys, and the
//! `ip` / `tcp_connection` key kinds, with a manual clock (no timing assertions).

use flowgate::ratelimit::{ClusterSettings, LimitKey, Limiters, ManualClock, OnRedisError, RateKey, RateLimitRule};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

fn limiters(clock: Arc<ManualClock>) -> Arc<Limiters> {
    let settings = ClusterSettings { redis: None, on_redis_error: OnRedisError::FailClosed, local_max_keys: 100_000 };
    Arc::new(Limiters::new(&settings, clock).expect("local limiters"))
}

async fn flood(limiters: &Arc<Limiters>, rule: &RateLimitRule, key: &RateKey, n: usize) -> (usize, usize) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (limiters, rule, key) = (limiters.clone(), rule.clone(), key.clone());
            tokio::spawn(async move { limiters.check(&rule, &key).await.expect("local never fails") })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        if task.await.expect("task").admitted {
            admitted += 1;
        }
    }
    (admitted, n - admitted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_thousand_concurrent_calls_admit_exactly_the_budget() {
    let clock = Arc::new(ManualClock::default());
    let limiters = limiters(clock.clone());
    let rule = RateLimitRule::new("limited", 2000, Duration::from_secs(60), LimitKey::Principal, false);
    let alice = RateKey::principal("tenant", "oid:alice");
    assert_eq!(flood(&limiters, &rule, &alice, 5000).await, (2000, 3000));
    let bob = RateKey::principal("tenant", "oid:bob");
    assert_eq!(flood(&limiters, &rule, &bob, 2500).await, (2000, 500), "keys are independent");
    clock.advance(Duration::from_secs(60));
    assert_eq!(flood(&limiters, &rule, &alice, 2500).await, (2000, 500), "a full period later the budget is back");
}

#[tokio::test]
async fn ip_and_connection_keys() {
    let clock = Arc::new(ManualClock::default());
    let limiters = limiters(clock);
    let by_ip = RateLimitRule::new("by-ip", 1, Duration::from_secs(10), LimitKey::Ip, false);
    let a: IpAddr = "127.0.0.2".parse().expect("ip");
    let mapped: IpAddr = "::ffff:127.0.0.2".parse().expect("ip");
    assert!(limiters.check(&by_ip, &RateKey::ip(a)).await.expect("check").admitted);
    assert!(!limiters.check(&by_ip, &RateKey::ip(mapped)).await.expect("check").admitted, "same client");
    assert!(limiters.check(&by_ip, &RateKey::ip("::1".parse().expect("ip"))).await.expect("check").admitted);

    let by_conn = RateLimitRule::new("by-conn", 1, Duration::from_secs(10), LimitKey::TcpConnection, false);
    assert!(limiters.check(&by_conn, &limiters.connection_key(1)).await.expect("check").admitted);
    assert!(!limiters.check(&by_conn, &limiters.connection_key(1)).await.expect("check").admitted);
    assert!(limiters.check(&by_conn, &limiters.connection_key(2)).await.expect("check").admitted);
}

#[tokio::test]
async fn an_unchanged_rule_keeps_its_budget_across_a_reload() {
    let clock = Arc::new(ManualClock::default());
    let limiters = limiters(clock);
    let key = RateKey::trigger();
    let before = RateLimitRule::new("t", 1, Duration::from_secs(60), LimitKey::Trigger, false);
    assert!(limiters.check(&before, &key).await.expect("check").admitted);
    // The reloaded policy compiles the same rule again: same id, same budget.
    let after = RateLimitRule::new("t", 1, Duration::from_secs(60), LimitKey::Trigger, false);
    assert!(!limiters.check(&after, &key).await.expect("check").admitted);
    // A changed rule starts afresh.
    let changed = RateLimitRule::new("t", 2, Duration::from_secs(60), LimitKey::Trigger, false);
    assert!(limiters.check(&changed, &key).await.expect("check").admitted);
}

/// 2000 calls per 60 s, one call exactly every 30 ms for five periods: never refused;
/// one call more within the period is.
#[tokio::test]
async fn an_evenly_paced_caller_is_never_refused() {
    let clock = Arc::new(ManualClock::default());
    let limiters = limiters(clock.clone());
    let rule = RateLimitRule::new("paced", 2000, Duration::from_secs(60), LimitKey::Principal, false);
    let key = RateKey::principal("tenant", "oid:paced");
    for i in 0..10_000 {
        let decision = limiters.check(&rule, &key).await.expect("check");
        assert!(decision.admitted, "paced call {i} refused: {decision:?}");
        assert_eq!(decision.remaining, if i < 2000 { 1999 - i } else { 0 });
        clock.advance(Duration::from_millis(30));
    }
    // Now = 300 s: the call made at 240 s stops counting exactly now (half-open window).
    assert!(limiters.check(&rule, &key).await.expect("check").admitted);
    let refused = limiters.check(&rule, &key).await.expect("check");
    assert!(!refused.admitted);
    assert_eq!(refused.retry_after_secs, Some(1), "{refused:?}");
}
