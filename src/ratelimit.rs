//! Exact sliding-window rate limiting (local, or shared between replicas through Redis)
//! and the pre-authentication flood shield.
//!
//! Semantics (see [`window`] for the algorithm, its guarantees and memory bound): per key,
//! an exact sliding log. At most `calls` admissions in any half-open window of `period`; a
//! call with fewer than `calls` admissions in `(now − period, now]` is admitted, so a caller
//! pacing itself exactly `period / calls` apart is never refused; `Retry-After` is exact
//! (rounded up to whole seconds in the header). Budgets above 100,000 calls use a bounded
//! bucketed log that admits within 1 % of the period.
//!
//! State that must survive a policy reload lives in [`Limiters`] (hung off the `Gateway`);
//! a rule keeps its budgets across a reload when its [`RuleId`] (trigger name, calls,
//! period, key kind) did not change.

mod in_flight;
mod key;
mod local;
mod redis;
pub(crate) use redis::connection as redis_connection;
mod rule;
mod settings;
mod shield;
pub mod window;

pub use self::redis::{RedisBackend, RedisLimiterError, RedisSettings};
/// Kept at their old paths for the tests and benches that name them here.
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use in_flight::{InFlight, InFlightSlot};
pub use key::{BudgetKey, RateKey};
pub use local::LocalStore;
pub use rule::{LimitKey, LimitSource, RateLimitRule, RawOff, RawRateLimit, RawRateLimitSetting, RuleId};
pub use settings::{ClusterSettings, OnRedisError, RawCluster, RawShield};
pub use shield::{Shield, ShieldSettings, Shielded};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The limiter's answer for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The call proceeds (also when `shadowed`).
    pub admitted: bool,
    /// The limiter would have refused, but the rule is in shadow mode.
    pub shadowed: bool,
    /// The rule's `calls`.
    pub limit: u32,
    /// Admissions still possible now.
    pub remaining: u32,
    /// Whole seconds until the oldest counted admission stops counting.
    pub reset_secs: u64,
    /// When refused (or shadowed): whole seconds, rounded up, until a retry succeeds if
    /// nobody else spends the budget.
    pub retry_after_secs: Option<u64>,
}

impl Decision {
    /// The `RateLimit` header value: `"name";r=REMAINING;t=RESET`.
    pub fn limit_header(&self, rule: &RateLimitRule) -> String {
        // Written on every admitted call: pieces pushed, not formatted.
        let mut numbers = itoa::Buffer::new();
        let mut value = String::with_capacity(rule.sf_name().len() + 26);
        value.push_str(rule.sf_name());
        value.push_str(";r=");
        value.push_str(numbers.format(self.remaining));
        value.push_str(";t=");
        value.push_str(numbers.format(self.reset_secs));
        value
    }

    /// The `RateLimit-Policy` header value: `"name";q=CALLS;w=PERIOD_SECS`.
    pub fn policy_header(&self, rule: &RateLimitRule) -> String {
        rule.policy_header()
    }

    /// The refusal when `rule` refuses the call; `None` when it is admitted (a shadowed
    /// refusal included).
    pub fn refusal(&self, rule: &RateLimitRule) -> Option<BudgetSpent> {
        (!self.admitted).then(|| BudgetSpent {
            retry_after_secs: self.retry_after_secs.unwrap_or(1),
            policy: self.policy_header(rule),
            limit: self.limit_header(rule),
            which: rule.key_description(),
        })
    }
}

/// A call over its rate-limit budget (the refusal table, `refusal.rs`, answers 429 with
/// `Retry-After` and the `RateLimit` headers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{which}")]
pub struct BudgetSpent {
    /// Whole seconds until a retry succeeds if nobody else spends the budget.
    pub retry_after_secs: u64,
    /// The `RateLimit-Policy` header value.
    pub policy: String,
    /// The `RateLimit` header value.
    pub limit: String,
    /// Which key of which rule (private).
    pub which: String,
}

fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// Why the limiter could not decide a call (→ 503; never an admission).
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    /// The shared limiter (Redis) could not answer and `on_redis_error = "fail_closed"`.
    #[error("rate limiter unavailable: {0}")]
    Unavailable(#[source] RedisLimiterError),
    /// The rule's local key table is full of keys whose admissions still count: a new key
    /// cannot be tracked, and tracking none would let it through unlimited.
    #[error("rate-limit keys of rule {rule} are all in use ({max_keys} keys with admissions still counting)")]
    Full {
        /// The rule's trigger.
        rule: String,
        /// The cap (`local_max_keys`).
        max_keys: usize,
        /// Whole seconds (at least 1) until the first key of the full table goes idle.
        retry_after_secs: u64,
    },
}

/// Every rate-limit budget of this instance; lives in the `Gateway` and survives reloads.
#[derive(Debug)]
pub struct Limiters {
    local: LocalStore,
    redis: Option<RedisBackend>,
    on_redis_error: OnRedisError,
    clock: Arc<dyn Clock>,
    last_fallback_warn_us: AtomicU64,
    /// Random per process: makes `tcp_connection` keys unique across replicas and restarts.
    instance: u64,
    /// The rules each open connection holds a local `tcp_connection` key in, so that
    /// [`Limiters::forget_connection`] removes exactly those (at most one entry per open
    /// connection that made a call under such a rule).
    connection_rules: std::sync::Mutex<std::collections::HashMap<u64, Vec<RuleId>>>,
}

/// Fallback warnings are logged at most this often.
const FALLBACK_WARN_EVERY_US: u64 = 10_000_000;

impl Limiters {
    /// Builds the limiters and logs the Redis failure mode in force. Must run inside a Tokio
    /// runtime when Redis is configured (the connection is made lazily).
    ///
    /// # Errors
    /// An invalid Redis URL.
    pub fn new(settings: &ClusterSettings, clock: Arc<dyn Clock>) -> Result<Self, RedisLimiterError> {
        let redis = settings.redis.clone().map(RedisBackend::new).transpose()?;
        if redis.is_some() {
            tracing::info!(
                on_redis_error = ?settings.on_redis_error,
                "rate limits shared through Redis; when Redis cannot answer: {}",
                match settings.on_redis_error {
                    OnRedisError::FailClosed => "refuse calls with 503 (fail_closed)",
                    OnRedisError::Local => "fall back to this instance's limiter (local)",
                }
            );
        } else {
            tracing::info!("rate limits kept by this instance only (no [cluster] redis)");
        }
        Ok(Self {
            local: LocalStore::new(settings.local_max_keys),
            redis,
            on_redis_error: settings.on_redis_error,
            clock,
            last_fallback_warn_us: AtomicU64::new(0),
            instance: rand::random(),
            connection_rules: std::sync::Mutex::default(),
        })
    }

    /// Local-only limiters on the system clock.
    pub fn local_only(max_keys: usize) -> Self {
        Self {
            local: LocalStore::new(max_keys),
            redis: None,
            on_redis_error: OnRedisError::FailClosed,
            clock: Arc::new(SystemClock::default()),
            last_fallback_warn_us: AtomicU64::new(0),
            instance: rand::random(),
            connection_rules: std::sync::Mutex::default(),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.clock.now().as_micros()).unwrap_or(u64::MAX)
    }

    /// The `tcp_connection` key of connection `id` of this process.
    pub fn connection_key(&self, id: u64) -> RateKey {
        RateKey::connection(self.instance, id)
    }

    /// Spends one call of connection `id`'s budget under `rule` (a `tcp_connection` rule),
    /// remembering the rule so that the key leaves with the connection.
    ///
    /// # Errors
    /// As [`Limiters::check`].
    pub async fn check_connection(&self, rule: &RateLimitRule, id: u64) -> Result<Decision, LimiterError> {
        {
            let mut rules = self.connection_rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let held = rules.entry(id).or_default();
            if !held.contains(&rule.id) {
                held.push(rule.id);
            }
        }
        self.check(rule, &self.connection_key(id)).await
    }

    /// Removes connection `id`'s `tcp_connection` keys: call when the connection closes.
    /// Its ids are never reused, so the keys could never be spent again; kept, they would
    /// fill their rule's table (`local_max_keys`) and refuse other callers. Shared budgets
    /// in Redis expire on their own after one period.
    pub fn forget_connection(&self, id: u64) {
        let held = self.connection_rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
        let key = self.connection_key(id);
        for rule in held.unwrap_or_default() {
            self.local.remove(rule, &key);
        }
    }

    /// Spends one call of `key`'s budget under `rule`.
    ///
    /// # Errors
    /// [`LimiterError::Unavailable`] when Redis cannot answer and the policy says
    /// `fail_closed`; [`LimiterError::Full`] when the rule's local key table holds only
    /// live budgets and `key` is new.
    pub async fn check(&self, rule: &RateLimitRule, key: &RateKey) -> Result<Decision, LimiterError> {
        let outcome = match &self.redis {
            None => self.check_local(rule, key)?,
            // Boxed: a round trip's state would otherwise be carried (and moved) by every
            // call's future, shared budgets or not.
            Some(redis) => Box::pin(self.check_shared(redis, rule, key)).await?,
        };
        Ok(Self::decide(rule, outcome))
    }

    /// Spends one call in Redis; when Redis cannot answer, refuses or falls back to the
    /// local budget as the policy says.
    async fn check_shared(
        &self,
        redis: &RedisBackend,
        rule: &RateLimitRule,
        key: &RateKey,
    ) -> Result<window::Outcome, LimiterError> {
        let redis_key = format!("{}:{key}", rule.id);
        match redis.check(&redis_key, rule.calls, rule.period_us()).await {
            Ok(outcome) => Ok(outcome),
            Err(cause) => match self.on_redis_error {
                OnRedisError::FailClosed => {
                    metrics::counter!("flowgate_ratelimit_redis_errors_total").increment(1);
                    Err(LimiterError::Unavailable(cause))
                }
                OnRedisError::Local => {
                    metrics::counter!("flowgate_ratelimit_redis_fallback_total").increment(1);
                    self.warn_fallback(&cause);
                    self.check_local(rule, key)
                }
            },
        }
    }

    fn check_local(&self, rule: &RateLimitRule, key: &RateKey) -> Result<window::Outcome, LimiterError> {
        self.local.check(rule.id, key, rule.calls, rule.period_us(), self.now_us()).map_err(|full| {
            metrics::counter!("flowgate_ratelimit_keys_full_total", "trigger" => rule.name.clone()).increment(1);
            LimiterError::Full {
                rule: rule.name.clone(),
                max_keys: self.local.max_keys(),
                retry_after_secs: ceil_secs(full.retry_us).max(1),
            }
        })
    }

    fn warn_fallback(&self, cause: &RedisLimiterError) {
        let now = self.now_us();
        let last = self.last_fallback_warn_us.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= FALLBACK_WARN_EVERY_US;
        if due
            && self
                .last_fallback_warn_us
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %cause, "Redis rate limiter unavailable; using this instance's limiter");
        }
    }

    fn decide(rule: &RateLimitRule, outcome: window::Outcome) -> Decision {
        let shadowed = !outcome.admitted && rule.shadow;
        if shadowed {
            metrics::counter!("flowgate_ratelimit_shadow_refusals_total", "trigger" => rule.name.clone()).increment(1);
        } else if !outcome.admitted {
            metrics::counter!("flowgate_ratelimit_refused_total", "trigger" => rule.name.clone()).increment(1);
        }
        Decision {
            admitted: outcome.admitted || shadowed,
            shadowed,
            limit: rule.calls,
            remaining: outcome.remaining,
            reset_secs: ceil_secs(outcome.reset_us),
            retry_after_secs: outcome.retry_us.map(|us| ceil_secs(us).max(1)),
        }
    }

    /// Drops idle local keys; call every few seconds from a background task.
    pub fn sweep(&self) -> usize {
        self.local.sweep(self.now_us())
    }

    /// Keys held by the local limiter.
    pub fn local_keys(&self) -> usize {
        self.local.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Diagnostics, KeyPath};
    use std::net::IpAddr;
    use std::time::Duration;

    fn limiters(clock: Arc<ManualClock>, max_keys: usize) -> Limiters {
        let settings =
            ClusterSettings { redis: None, on_redis_error: OnRedisError::FailClosed, local_max_keys: max_keys };
        Limiters::new(&settings, clock).unwrap()
    }

    #[tokio::test]
    async fn refusal_carries_exact_retry_after_and_headers() {
        let clock = Arc::new(ManualClock::default());
        let limiters = limiters(clock.clone(), 1000);
        let rule = RateLimitRule::new("demo \"limited\"", 2, Duration::from_secs(60), LimitKey::Principal, false);
        let alice = RateKey::principal("t1", "oid:a");
        let first = limiters.check(&rule, &alice).await.unwrap();
        assert!(first.admitted);
        assert_eq!(first.remaining, 1);
        assert_eq!(first.limit_header(&rule), r#""demo \"limited\"";r=1;t=60"#);
        assert_eq!(first.policy_header(&rule), r#""demo \"limited\"";q=2;w=60"#);
        clock.advance(Duration::from_millis(10_500));
        assert!(limiters.check(&rule, &alice).await.unwrap().admitted);
        clock.advance(Duration::from_secs(1));
        let refused = limiters.check(&rule, &alice).await.unwrap();
        assert!(!refused.admitted && !refused.shadowed);
        // The first admission (t = 0) expires at t = 60 s; now is 11.5 s → 48.5 s → 49.
        assert_eq!(refused.retry_after_secs, Some(49));
        assert_eq!(refused.remaining, 0);
        // Another key has its own budget.
        assert!(limiters.check(&rule, &RateKey::principal("t1", "oid:b")).await.unwrap().admitted);
        clock.advance(Duration::from_secs(49));
        assert!(limiters.check(&rule, &alice).await.unwrap().admitted);
    }

    #[tokio::test]
    async fn shadow_mode_admits_but_says_so() {
        let clock = Arc::new(ManualClock::default());
        let limiters = limiters(clock, 1000);
        let rule = RateLimitRule::new("s", 1, Duration::from_secs(10), LimitKey::Trigger, true);
        assert!(!limiters.check(&rule, &RateKey::trigger()).await.unwrap().shadowed);
        let second = limiters.check(&rule, &RateKey::trigger()).await.unwrap();
        assert!(second.admitted && second.shadowed);
        assert_eq!(second.retry_after_secs, Some(10));
    }

    #[tokio::test]
    async fn a_full_key_table_refuses_new_keys_and_idle_keys_are_swept() {
        let clock = Arc::new(ManualClock::default());
        let limiters = limiters(clock.clone(), 64);
        let rule = RateLimitRule::new("cap", 5, Duration::from_secs(10), LimitKey::Ip, false);
        let mut full = 0;
        for i in 0..10_000u32 {
            let key = RateKey::ip(IpAddr::from(i.to_be_bytes()));
            match limiters.check(&rule, &key).await {
                Ok(decision) => assert!(decision.admitted),
                Err(LimiterError::Full { retry_after_secs, max_keys, .. }) => {
                    assert_eq!((retry_after_secs, max_keys), (10, 64));
                    full += 1;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert!(limiters.local_keys() <= 64, "{}", limiters.local_keys());
        assert!(full >= 10_000 - 64, "{full}");
        assert_eq!(limiters.sweep(), 0);
        clock.advance(Duration::from_secs(10));
        assert!(limiters.sweep() > 0);
        assert_eq!(limiters.local_keys(), 0);
    }

    #[tokio::test]
    async fn connection_keys_differ_between_instances() {
        let clock = Arc::new(ManualClock::default());
        let (first, second) = (limiters(clock.clone(), 10), limiters(clock, 10));
        assert_eq!(first.connection_key(7), first.connection_key(7));
        assert_ne!(first.connection_key(7), second.connection_key(7), "connection 7 of two processes");
        assert_ne!(first.connection_key(7), first.connection_key(8));
    }

    /// One connection's life as the server sees it.
    #[derive(Debug, Clone)]
    enum Event {
        Call(u8),
        Close(u8),
    }

    fn event() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        prop_oneof![(0u8..12).prop_map(Event::Call), (0u8..12).prop_map(Event::Close)]
    }

    /// Drives generated calls and closes through the limiter; the local table must hold
    /// exactly the keys of open connections that called (the model), and a closed
    /// connection's id is never reused (as in the server).
    fn run_events(events: &[Event], max_keys: usize) -> Result<(), proptest::test_runner::TestCaseError> {
        use proptest::prelude::*;
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let clock = Arc::new(ManualClock::default());
        let limiters = limiters(clock.clone(), max_keys);
        let rules = [
            RateLimitRule::new("a", 1000, Duration::from_secs(600), LimitKey::TcpConnection, false),
            RateLimitRule::new("b", 1000, Duration::from_secs(600), LimitKey::TcpConnection, false),
        ];
        // Slot → the connection id open there (a close opens a fresh id in its slot).
        let mut ids: Vec<u64> = (1..=12).collect();
        let mut next = 13;
        let mut model: std::collections::BTreeSet<(u64, usize)> = std::collections::BTreeSet::new();
        for (step, event) in events.iter().enumerate() {
            match *event {
                Event::Call(slot) => {
                    let id = ids[usize::from(slot)];
                    let which = step % 2;
                    let decided = runtime.block_on(limiters.check_connection(&rules[which], id));
                    prop_assert!(decided.is_ok(), "a call was refused: {decided:?}");
                    model.insert((id, which));
                }
                Event::Close(slot) => {
                    let id = ids[usize::from(slot)];
                    limiters.forget_connection(id);
                    model.retain(|(held, _)| *held != id);
                    ids[usize::from(slot)] = next;
                    next += 1;
                }
            }
            clock.advance(Duration::from_millis(1));
            prop_assert_eq!(limiters.local_keys(), model.len());
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn connection_keys_follow_open_connections(events in proptest::collection::vec(event(), 0..300)) {
            // Twelve open connections at most, two rules: never more than 24 live keys, so
            // no shard of a table (a sixteenth of `max_keys`) fills.
            run_events(&events, 16 * 24)?;
        }
    }

    /// The seed: one address opening connections one after another (a call each, then
    /// closed) filled a rule's table of 16 keys and others got `limiter_full`.
    #[test]
    fn connections_opened_one_after_another_never_fill_the_table() {
        let events: Vec<Event> = (0..200).flat_map(|_| [Event::Call(0), Event::Close(0)]).collect();
        run_events(&events, 16).unwrap();
    }

    #[test]
    fn rule_id_is_stable_and_distinguishes_changes() {
        let a = RateLimitRule::new("t", 2000, Duration::from_secs(60), LimitKey::Principal, false);
        let b = RateLimitRule::new("t", 2000, Duration::from_secs(60), LimitKey::Principal, true);
        let c = RateLimitRule::new("t", 2001, Duration::from_secs(60), LimitKey::Principal, false);
        let d = RateLimitRule::new("t", 2000, Duration::from_secs(60), LimitKey::Ip, false);
        assert_eq!(a.id, b.id, "shadow does not reset budgets");
        assert_ne!(a.id, c.id);
        assert_ne!(a.id, d.id);
    }

    #[test]
    fn compile_reports_every_problem() {
        let raw: RawRateLimit = toml::from_str("calls = 0\nperiod = \"500ms\"\nkey = \"ip\"").unwrap();
        let mut diags = Diagnostics::default();
        let path = KeyPath::root().key("trigger").index(0).key("rate_limit");
        assert!(RateLimitRule::compile(&raw, "t", &path, &mut diags).is_none());
        let paths: Vec<String> = diags.into_vec().iter().map(|d| d.path.to_string()).collect();
        assert_eq!(paths, ["trigger[0].rate_limit.calls", "trigger[0].rate_limit.period"]);
        let raw: RawRateLimit = toml::from_str("calls = 2000\nperiod = \"60s\"").unwrap();
        let mut diags = Diagnostics::default();
        let rule = RateLimitRule::compile(&raw, "t", &path, &mut diags).unwrap();
        assert_eq!((rule.key, rule.calls, rule.period), (LimitKey::Principal, 2000, Duration::from_secs(60)));
    }

    #[test]
    fn cluster_and_shield_defaults() {
        let mut diags = Diagnostics::default();
        let cluster: RawCluster = toml::from_str("redis = \"redis://127.0.0.1:6379\"").unwrap();
        let settings = ClusterSettings::compile(&cluster, &KeyPath::root().key("cluster"), &mut diags);
        assert_eq!(settings.on_redis_error, OnRedisError::FailClosed);
        assert_eq!(settings.local_max_keys, 50_000);
        assert_eq!(settings.redis.unwrap().timeout, Duration::from_millis(100));
        let bad: RawCluster = toml::from_str("redis = \"nonsense://x\"").unwrap();
        ClusterSettings::compile(&bad, &KeyPath::root().key("cluster"), &mut diags);
        let shield = ShieldSettings::compile(&RawShield::default(), &KeyPath::root().key("shield"), &mut diags);
        assert_eq!((shield.per_second.get(), shield.burst.get(), shield.enabled), (1000, 3000, true));
        let problems = diags.into_vec();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path.to_string(), "cluster.redis");
    }
}
