//! The shared limiter: the same sliding-window rules as `window.rs`, run atomically inside
//! Redis by one Lua script that reads Redis's own `TIME`, so every replica sees one clock.
//!
//! Exact log (`calls` ≤ 100,000): a key is a list of admission times (µs since the Unix
//! epoch, as integers), oldest first, never longer than `calls`; it expires once its newest
//! admission stops counting. Each call trims the admissions at or before `now − period`
//! (reading the head 16 at a time, so the cost is amortised O(1)), admits iff fewer than
//! `calls` remain, and otherwise answers `Retry-After = list[len − calls] + period − now`.
//! About 10 bytes per admission in Redis (listpack integers): ~20 kB for a saturated
//! 2000-per-60-s key.
//!
//! Bucketed fallback (`calls` > 100,000): a list of `"LATEST_US:COUNT"` buckets, as in
//! `window.rs`. Exact logs live under `PREFIX` + `x:` + key so that they never meet a
//! bucket list written by an older flowgate under the same rule id.

use super::window::{Outcome, is_exact, slot_of};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// The exact sliding log. ARGV: calls, period (µs). Reply: admitted, remaining, reset µs, retry µs.
const EXACT_SCRIPT: &str = r"
local key = KEYS[1]
local calls = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local expired = 0
while true do
  local head = redis.call('LRANGE', key, expired, expired + 15)
  local live = false
  for i = 1, #head do
    if tonumber(head[i]) + period <= now then
      expired = expired + 1
    else
      live = true
      break
    end
  end
  if live or #head < 16 then
    break
  end
end
if expired > 0 then
  redis.call('LTRIM', key, expired, -1)
end
local len = redis.call('LLEN', key)
if len >= calls then
  local oldest = tonumber(redis.call('LINDEX', key, 0))
  local blocking = tonumber(redis.call('LINDEX', key, len - calls))
  return {0, 0, oldest + period - now, blocking + period - now}
end
local at = now
local newest = redis.call('LINDEX', key, -1)
if newest and tonumber(newest) > at then
  at = tonumber(newest)
end
redis.call('RPUSH', key, string.format('%.0f', at))
redis.call('PEXPIRE', key, math.ceil((at + period - now) / 1000))
local oldest = tonumber(redis.call('LINDEX', key, 0))
return {1, calls - len - 1, oldest + period - now, 0}
";

/// The bucketed fallback for huge budgets. ARGV: calls, period (µs), slot (µs).
const BUCKETED_SCRIPT: &str = r"
local key = KEYS[1]
local calls = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local slot = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local items = redis.call('LRANGE', key, 0, -1)
local lasts = {}
local counts = {}
local total = 0
local drop = 0
for _, item in ipairs(items) do
  local sep = string.find(item, ':', 1, true)
  local last = tonumber(string.sub(item, 1, sep - 1))
  local count = tonumber(string.sub(item, sep + 1))
  if last + period <= now then
    drop = drop + 1
  else
    table.insert(lasts, last)
    table.insert(counts, count)
    total = total + count
  end
end
if drop > 0 then
  redis.call('LTRIM', key, drop, -1)
end
if total < calls then
  local n = #lasts
  if n > 0 and (math.floor(lasts[n] / slot) == math.floor(now / slot) or lasts[n] > now) then
    local latest = math.max(lasts[n], now)
    redis.call('LSET', key, -1, string.format('%.0f:%d', latest, counts[n] + 1))
    lasts[n] = latest
  else
    redis.call('RPUSH', key, string.format('%.0f:%d', now, 1))
    table.insert(lasts, now)
  end
  local newest = lasts[#lasts]
  redis.call('PEXPIREAT', key, math.ceil((newest + period) / 1000))
  return {1, calls - total - 1, lasts[1] + period - now, 0}
end
local need = total - calls + 1
local freed = 0
local retry = 0
for i = 1, #lasts do
  freed = freed + counts[i]
  if freed >= need then
    retry = lasts[i] + period - now
    break
  end
end
return {0, 0, lasts[1] + period - now, retry}
";

/// Compiled `[cluster]` connection settings. `Debug` hides the URL: it may carry a password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db`
    pub url: String,
    /// Longest wait for one script call.
    pub timeout: Duration,
    /// Longest wait to (re)connect.
    pub connect_timeout: Duration,
    /// Prefix of every key written.
    pub key_prefix: String,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// A lazily connected, automatically reconnecting Redis limiter.
#[derive(Clone)]
pub struct RedisBackend {
    conn: ConnectionManager,
    exact: redis::Script,
    bucketed: redis::Script,
    settings: RedisSettings,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Why the shared limiter could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimiterError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within the configured timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The script returned something unexpected.
    #[error("unexpected reply from the rate-limit script")]
    BadReply,
}

/// A lazily connecting Redis connection with `[cluster]`'s timeouts and one quick retry:
/// the one way flowgate talks to Redis (the rate limiter and the webhook replay guard).
/// Must be called inside a Tokio runtime.
///
/// # Errors
/// An invalid URL.
pub(crate) fn connection(settings: &RedisSettings) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(settings.url.as_str())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}

impl RedisBackend {
    /// Prepares a backend; connects on first use (must run inside a Tokio runtime).
    ///
    /// # Errors
    /// An invalid URL.
    pub fn new(settings: RedisSettings) -> Result<Self, RedisLimiterError> {
        let conn = connection(&settings)?;
        Ok(Self {
            conn,
            exact: redis::Script::new(EXACT_SCRIPT),
            bucketed: redis::Script::new(BUCKETED_SCRIPT),
            settings,
        })
    }

    /// The settings used.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Runs the script for one key.
    ///
    /// # Errors
    /// Redis errors, connection failures and timeouts.
    pub async fn check(&self, key: &str, calls: u32, period_us: u64) -> Result<Outcome, RedisLimiterError> {
        let mut conn = self.conn.clone();
        let exact = is_exact(calls);
        let mut invocation = if exact { self.exact.prepare_invoke() } else { self.bucketed.prepare_invoke() };
        if exact {
            invocation.key(format!("{}x:{key}", self.settings.key_prefix)).arg(calls).arg(period_us);
        } else {
            invocation
                .key(format!("{}{key}", self.settings.key_prefix))
                .arg(calls)
                .arg(period_us)
                .arg(slot_of(period_us));
        }
        let deadline = self.settings.timeout + self.settings.connect_timeout;
        let reply: Vec<i64> = tokio::time::timeout(deadline, invocation.invoke_async(&mut conn))
            .await
            .map_err(|_| RedisLimiterError::Timeout(deadline))??;
        let [admitted, remaining, reset, retry] = reply[..] else {
            return Err(RedisLimiterError::BadReply);
        };
        let to_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(Outcome {
            admitted: admitted == 1,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset_us: to_u64(reset),
            retry_us: (admitted != 1).then(|| to_u64(retry)),
        })
    }
}
