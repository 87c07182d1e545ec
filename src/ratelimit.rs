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

mod clock;
mod local;
mod redis;
mod shield;
pub mod window;

pub use self::redis::{RedisBackend, RedisLimiterError, RedisSettings};
pub use clock::{Clock, ManualClock, SystemClock};
pub use local::LocalStore;
pub use shield::{Shield, ShieldSettings};

use crate::config::{Diagnostics, HumanDuration, KeyPath};
use crate::firewall::ClientIp;
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `rate_limit = { calls = 2000, period = "60s", key = "principal" }`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Calls admitted in any window of `period` (at least 1).
    pub calls: u32,
    /// The window length (at least 1 s), for example `"60s"`.
    pub period: HumanDuration,
    /// Whose budget a call spends: `"principal"` (default: the caller's tenant plus object
    /// or app id, per trigger), `"ip"` (client address), `"trigger"` (everyone together) or
    /// `"tcp_connection"` (one TCP/TLS connection).
    #[serde(default)]
    pub key: LimitKey,
    /// Record what would be refused (metric `flowgate_ratelimit_shadow_refusals_total`,
    /// audit reason) without refusing it.
    #[serde(default)]
    pub shadow: bool,
}

/// `rate_limit` as written: a rule, or `"off"`.
///
/// Where a policy writes no `rate_limit` at all, every trigger gets the built-in default,
/// `{ calls = 2000, period = "60s", key = "principal" }`, so the safe behaviour needs no
/// configuration; `"off"` turns limiting off explicitly, and `flowgate check` and the
/// admin API's `/policy` say so.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum RawRateLimitSetting {
    /// `"off"`: no rate limit (explicit; shown by `flowgate check` and `/policy`, and a
    /// loosening in `flowgate check --diff`).
    Off(RawOff),
    /// A rule: `{ calls = 2000, period = "60s", key = "principal" }`.
    Rule(RawRateLimit),
}

/// The word `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum RawOff {
    /// No rate limit.
    #[serde(rename = "off")]
    Off,
}

impl<'de> Deserialize<'de> for RawRateLimitSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Setting;
        impl<'de> serde::de::Visitor<'de> for Setting {
            type Value = RawRateLimitSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""off" or a table like { calls = 2000, period = "60s" }"#)
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                if text == "off" {
                    Ok(RawRateLimitSetting::Off(RawOff::Off))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(text), &self))
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawRateLimit::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawRateLimitSetting::Rule)
            }
        }
        deserializer.deserialize_any(Setting)
    }
}

/// Where a trigger's effective rate limit comes from (shown by `flowgate check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// The trigger's own `rate_limit`.
    Trigger,
    /// The policy's top-level `rate_limit`.
    Global,
    /// Neither is written: the built-in default.
    BuiltIn,
}

impl LimitSource {
    /// `trigger`, `global` or `built-in default`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Global => "global",
            Self::BuiltIn => "built-in default",
        }
    }
}

/// What a rate-limit budget belongs to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// The authenticated caller (tenant plus object or app id), per trigger.
    #[default]
    Principal,
    /// The client address.
    Ip,
    /// Every caller of the trigger together.
    Trigger,
    /// One TCP/TLS connection.
    TcpConnection,
}

impl LimitKey {
    /// The key kind as written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Principal => "principal",
            Self::Ip => "ip",
            Self::Trigger => "trigger",
            Self::TcpConnection => "tcp_connection",
        }
    }
}

/// `[shield]`: a per-client-address budget of refused credentials, consulted before any
/// token is checked. Calls refused by authentication or authorization (401/403) spend it;
/// calls whose credentials pass never do. An address that has spent it is refused (429)
/// before authentication until it refills.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShield {
    /// Turn the shield on (default) or off.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Refused calls per second per client address, sustained (default 1000).
    #[serde(default = "default_shield_rate")]
    pub per_second: u32,
    /// Refused calls allowed at once from an address with a full budget (default 3000).
    #[serde(default = "default_shield_burst")]
    pub burst: u32,
}

impl Default for RawShield {
    fn default() -> Self {
        Self { enabled: true, per_second: default_shield_rate(), burst: default_shield_burst() }
    }
}

fn yes() -> bool {
    true
}
fn default_shield_rate() -> u32 {
    1000
}
fn default_shield_burst() -> u32 {
    3000
}

/// What to do when the shared limiter (Redis) cannot answer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Refuse the call with 503 (default): the stated budget is never exceeded.
    #[default]
    FailClosed,
    /// Use this instance's own limiter, warn and count
    /// `flowgate_ratelimit_redis_fallback_total`: available, but replicas no longer share budgets.
    Local,
}

/// `[cluster]`: share budgets between replicas.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `redis://host:port/db`; unset means every instance limits on its own.
    pub redis: Option<String>,
    /// `"fail_closed"` (default: 503 while Redis is unreachable) or `"local"` (fall back to
    /// this instance's limiter, with a warning and a metric).
    #[serde(default)]
    pub on_redis_error: OnRedisError,
    /// Longest wait for Redis's answer per call (default `"100ms"`).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Longest wait to (re)connect to Redis (default `"1s"`).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Prefix of every Redis key written (default `"flowgate:rl:"`).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Keys the local limiter holds per rule at most (default 50000). Only keys whose
    /// admissions no longer count are ever dropped to make room (metric
    /// `flowgate_ratelimit_keys_evicted_total`), never a live budget, and one rule's keys
    /// never make room for another's; when a rule's table is full of live keys, a call
    /// with a new key is refused with 503 and `Retry-After` (metric
    /// `flowgate_ratelimit_keys_full_total`) until one goes idle. A key costs about 200
    /// bytes plus 4 bytes per admission still counting (8 for periods over 35 minutes).
    #[serde(default = "default_max_keys")]
    pub local_max_keys: usize,
}

/// `Debug` hides the Redis URL: it may carry a password.
impl std::fmt::Debug for RawCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawCluster")
            .field("redis", &self.redis.as_ref().map(|_| "[redacted]"))
            .field("on_redis_error", &self.on_redis_error)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("key_prefix", &self.key_prefix)
            .field("local_max_keys", &self.local_max_keys)
            .finish()
    }
}

impl Default for RawCluster {
    fn default() -> Self {
        Self {
            redis: None,
            on_redis_error: OnRedisError::default(),
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            key_prefix: default_key_prefix(),
            local_max_keys: default_max_keys(),
        }
    }
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_key_prefix() -> String {
    "flowgate:rl:".to_owned()
}
fn default_max_keys() -> usize {
    50_000
}

/// Identifies a rule's budgets: the same for the same (trigger, calls, period, key kind),
/// so limiter state survives a reload that leaves the rule alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(u64);

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A compiled rate limit of one trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitRule {
    /// The trigger's name (the `RateLimit-Policy` name).
    pub name: String,
    /// Calls admitted in any window of `period`.
    pub calls: u32,
    /// The window length.
    pub period: Duration,
    /// Whose budget a call spends.
    pub key: LimitKey,
    /// Record refusals without refusing.
    pub shadow: bool,
    /// Stable identity of the budgets.
    pub id: RuleId,
}

impl RateLimitRule {
    /// Compiles a trigger's (or the global default) `rate_limit` for trigger `trigger`.
    /// `path` is the `rate_limit` key. `None` when invalid (reported in `diags`).
    pub fn compile(raw: &RawRateLimit, trigger: &str, path: &KeyPath, diags: &mut Diagnostics) -> Option<Self> {
        let mut ok = true;
        if raw.calls == 0 {
            diags.error_with_hint(&path.key("calls"), "calls must be at least 1", "to refuse every call, use deny_ips");
            ok = false;
        }
        if raw.period.0 < Duration::from_secs(1) {
            diags.error_with_hint(&path.key("period"), "period must be at least 1s", "write it like \"60s\"");
            ok = false;
        }
        if raw.period.0 > Duration::from_secs(31 * 24 * 3600) {
            diags.error_with_hint(&path.key("period"), "period must be at most 31 days", "write it like \"60s\"");
            ok = false;
        }
        ok.then(|| Self::new(trigger, raw.calls, raw.period.0, raw.key, raw.shadow))
    }

    /// The rule of a trigger when the policy writes no `rate_limit` anywhere: 2000 calls
    /// per 60 s per principal.
    pub fn builtin_default(trigger: &str) -> Self {
        Self::new(trigger, 2000, Duration::from_secs(60), LimitKey::Principal, false)
    }

    /// A rule built directly (tests, benches, defaults).
    pub fn new(trigger: &str, calls: u32, period: Duration, key: LimitKey, shadow: bool) -> Self {
        let mut hash = Sha256::new();
        hash.update(trigger.as_bytes());
        hash.update([0]);
        hash.update(calls.to_be_bytes());
        hash.update(period.as_nanos().to_be_bytes());
        hash.update(key.as_str().as_bytes());
        let digest = hash.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self { name: trigger.to_owned(), calls, period, key, shadow, id: RuleId(u64::from_be_bytes(id)) }
    }

    fn period_us(&self) -> u64 {
        u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX)
    }

    /// The `RateLimit-Policy` header value: `"name";q=2000;w=60`.
    pub fn policy_header(&self) -> String {
        format!("{};q={};w={}", sf_string(&self.name), self.calls, self.period.as_secs())
    }
}

/// An RFC 8941 string item: quoted, with `"` and `\` escaped, non-printable ASCII dropped.
fn sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The budget a call spends, within a rule. Build it with the constructor that matches the
/// rule's [`LimitKey`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey(Arc<str>);

impl RateKey {
    /// `principal`: a scope (tenant or issuer) and an immutable id within it.
    pub fn principal(scope: &str, id: &str) -> Self {
        Self(format!("p:{scope}/{id}").into())
    }

    /// `principal` for an authenticated caller: its budget key (`TENANT/oid:…`,
    /// `ISSUER/sub:…`, or one signed URL), see [`crate::auth::Caller::budget_key`].
    pub fn subject(budget_key: &str) -> Self {
        Self(format!("p:{budget_key}").into())
    }

    /// `ip`: the client address (IPv4-mapped addresses normalised).
    pub fn ip(ip: IpAddr) -> Self {
        Self::client(ClientIp::new(ip))
    }

    /// `ip` for the client address the request path resolved (already normalised).
    pub fn client(ip: ClientIp) -> Self {
        Self(format!("i:{ip}").into())
    }

    /// `trigger`: everyone together.
    pub fn trigger() -> Self {
        Self("t".into())
    }

    /// `tcp_connection`: one connection of one gateway process. Build it with
    /// [`Limiters::connection_key`], which adds the process's random instance id: connection
    /// ids count from 1 in every process, and replicas sharing Redis (or a restarted
    /// process) must never share a connection's budget.
    fn connection(instance: u64, id: u64) -> Self {
        Self(format!("c:{instance:016x}-{id}").into())
    }

    /// The key text (used in Redis key names and audit reasons).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

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
        format!("{};r={};t={}", sf_string(&rule.name), self.remaining, self.reset_secs)
    }

    /// The `RateLimit-Policy` header value: `"name";q=CALLS;w=PERIOD_SECS`.
    pub fn policy_header(&self, rule: &RateLimitRule) -> String {
        rule.policy_header()
    }
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

/// Compiled `[cluster]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Redis connection, when budgets are shared.
    pub redis: Option<RedisSettings>,
    /// Behaviour while Redis cannot answer.
    pub on_redis_error: OnRedisError,
    /// Cap on keys held locally, per rule.
    pub local_max_keys: usize,
}

impl ClusterSettings {
    /// Compiles `[cluster]` (`path` is `cluster`), validating the Redis URL without connecting.
    pub fn compile(raw: &RawCluster, path: &KeyPath, diags: &mut Diagnostics) -> Self {
        let redis = raw.redis.as_ref().and_then(|url| match ::redis::Client::open(url.as_str()) {
            Ok(_) => Some(RedisSettings {
                url: url.clone(),
                timeout: raw.timeout.0,
                connect_timeout: raw.connect_timeout.0,
                key_prefix: raw.key_prefix.clone(),
            }),
            Err(e) => {
                diags.error_with_hint(
                    &path.key("redis"),
                    // The kind only: the URL may hold a password.
                    format!("invalid Redis URL ({:?})", e.kind()),
                    "write it like \"redis://127.0.0.1:6379/0\"",
                );
                None
            }
        });
        if raw.timeout.0.is_zero() {
            diags.error(&path.key("timeout"), "timeout must be above zero");
        }
        if raw.connect_timeout.0.is_zero() {
            diags.error(&path.key("connect_timeout"), "connect_timeout must be above zero");
        }
        if raw.local_max_keys == 0 {
            diags.error(&path.key("local_max_keys"), "local_max_keys must be at least 1");
        }
        Self { redis, on_redis_error: raw.on_redis_error, local_max_keys: raw.local_max_keys.max(1) }
    }
}

impl ShieldSettings {
    /// Compiles `[shield]` (`path` is `shield`).
    pub fn compile(raw: &RawShield, path: &KeyPath, diags: &mut Diagnostics) -> Self {
        let mut nonzero = |value: u32, key: &str| {
            NonZeroU32::new(value).unwrap_or_else(|| {
                diags.error_with_hint(&path.key(key), format!("{key} must be at least 1"), "use enabled = false");
                NonZeroU32::MIN
            })
        };
        let per_second = nonzero(raw.per_second, "per_second");
        let burst = nonzero(raw.burst, "burst");
        Self { enabled: raw.enabled, per_second, burst }
    }
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
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.clock.now().as_micros()).unwrap_or(u64::MAX)
    }

    /// The `tcp_connection` key of connection `id` of this process.
    pub fn connection_key(&self, id: u64) -> RateKey {
        RateKey::connection(self.instance, id)
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
            Some(redis) => {
                let redis_key = format!("{}:{}", rule.id, key.as_str());
                match redis.check(&redis_key, rule.calls, rule.period_us()).await {
                    Ok(outcome) => outcome,
                    Err(cause) => match self.on_redis_error {
                        OnRedisError::FailClosed => {
                            metrics::counter!("flowgate_ratelimit_redis_errors_total").increment(1);
                            return Err(LimiterError::Unavailable(cause));
                        }
                        OnRedisError::Local => {
                            metrics::counter!("flowgate_ratelimit_redis_fallback_total").increment(1);
                            self.warn_fallback(&cause);
                            self.check_local(rule, key)?
                        }
                    },
                }
            }
        };
        Ok(Self::decide(rule, outcome))
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
