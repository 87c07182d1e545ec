//! The `[shield]` and `[cluster]` sections: the pre-authentication flood shield's rate,
//! and sharing budgets between replicas through Redis.

use super::{RedisSettings, ShieldSettings};
use crate::config::{Diagnostics, HumanDuration, KeyPath};
use schemars::JsonSchema;
use serde::Deserialize;
use std::num::NonZeroU32;
use std::time::Duration;

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
