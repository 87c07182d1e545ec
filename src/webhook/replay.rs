//! The replay guard: a delivery's replay key is accepted once within its window, and
//! refused as `replayed` after that, exactly.
//!
//! In memory, keys are held until their window ends, under a bound in bytes
//! ([`DEFAULT_MEMORY_BYTES`]). Reaching the bound refuses new deliveries (503 with
//! `Retry-After`, counted in `flowgate_webhook_replay_full_total`) until the oldest key's
//! window ends: forgetting a live key would let its delivery be replayed, and a sender
//! retries a 503 later anyway. With `[cluster] redis`, every replica claims the key
//! through Redis (`SET key 1 NX PX window`), so two replicas never both forward one
//! delivery; when Redis cannot answer, `[cluster] on_redis_error` decides as it does for
//! the rate limiter: `fail_closed` refuses with 503, `local` falls back to this
//! replica's memory, warning and counting `flowgate_webhook_replay_redis_fallback_total`.
//!
//! Keys are SHA-256 digests of the trigger's name and the replay key, so neither memory
//! nor Redis holds a signature or a delivery's content.

use crate::ratelimit::{ClusterSettings, OnRedisError, RedisSettings};
use redis::aio::ConnectionManager;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes the in-memory guard may hold by default (about 160,000 keys).
pub const DEFAULT_MEMORY_BYTES: usize = 16 * 1024 * 1024;

/// What one held key costs, counted against the bound: the digest in the map and in the
/// expiry index, two instants, and the tables' overhead per entry.
pub const BYTES_PER_KEY: usize = 104;

/// A replay key's digest.
pub type Digest = [u8; 32];

/// The digest a replay key is held under, scoped to its trigger.
pub fn digest(trigger: &str, key: &[u8]) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::new().chain_update(trigger).chain_update([0]).chain_update(key).finalize().into()
}

/// The guard's verdict on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Seen for the first time in its window: forward it.
    Fresh,
    /// Already seen within its window.
    Replayed,
}

/// Why the guard could not judge a key.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The in-memory guard holds its bound of live keys.
    #[error("the replay guard holds its bound of {bytes} bytes of live keys")]
    Full {
        /// The bound.
        bytes: usize,
        /// Whole seconds until the oldest key's window ends.
        retry_after_secs: u64,
    },
    /// Redis could not answer and `on_redis_error = "fail_closed"`.
    #[error("the shared replay guard (redis) could not answer: {0}")]
    Unavailable(String),
}

/// Keys held in memory, with their window's end, under a bound in bytes.
#[derive(Debug)]
struct Held {
    until: HashMap<Digest, Instant>,
    by_expiry: BTreeSet<(Instant, Digest)>,
    max_bytes: usize,
}

impl Held {
    fn new(max_bytes: usize) -> Self {
        Self { until: HashMap::new(), by_expiry: BTreeSet::new(), max_bytes }
    }

    fn bytes(&self) -> usize {
        self.until.len() * BYTES_PER_KEY
    }

    fn forget_expired(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.by_expiry.first() {
            if at > now {
                break;
            }
            self.by_expiry.pop_first();
            self.until.remove(&key);
        }
    }

    fn claim(&mut self, key: Digest, window: Duration, now: Instant) -> Result<Claim, ReplayError> {
        self.forget_expired(now);
        if self.until.contains_key(&key) {
            return Ok(Claim::Replayed);
        }
        if self.bytes() + BYTES_PER_KEY > self.max_bytes {
            let oldest = self.by_expiry.first().map_or(now, |&(at, _)| at);
            let retry_after_secs = oldest.saturating_duration_since(now).as_secs().max(1);
            metrics::counter!("flowgate_webhook_replay_full_total").increment(1);
            return Err(ReplayError::Full { bytes: self.max_bytes, retry_after_secs });
        }
        let until = now + window;
        self.until.insert(key, until);
        self.by_expiry.insert((until, key));
        Ok(Claim::Fresh)
    }

    fn release(&mut self, key: &Digest) {
        if let Some(until) = self.until.remove(key) {
            self.by_expiry.remove(&(until, *key));
        }
    }
}

/// The shared guard's connection.
#[derive(Clone)]
struct Shared {
    conn: ConnectionManager,
    settings: RedisSettings,
}

/// The replay guard of a gateway: survives policy reloads.
pub struct ReplayGuard {
    held: Mutex<Held>,
    shared: Option<Shared>,
    on_redis_error: OnRedisError,
}

impl std::fmt::Debug for ReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayGuard").field("shared", &self.shared.is_some()).finish_non_exhaustive()
    }
}

impl ReplayGuard {
    /// A guard in memory only, holding at most `max_bytes` of keys.
    pub fn local(max_bytes: usize) -> Self {
        Self { held: Mutex::new(Held::new(max_bytes)), shared: None, on_redis_error: OnRedisError::FailClosed }
    }

    /// The guard `[cluster]` asks for: shared through Redis when it names one. Must run
    /// inside a Tokio runtime when it does (the connection is made lazily).
    ///
    /// # Errors
    /// An invalid Redis URL.
    pub fn new(cluster: &ClusterSettings, max_bytes: usize) -> Result<Self, redis::RedisError> {
        let shared = match &cluster.redis {
            None => None,
            Some(settings) => {
                Some(Shared { conn: crate::ratelimit::redis_connection(settings)?, settings: settings.clone() })
            }
        };
        Ok(Self { held: Mutex::new(Held::new(max_bytes)), shared, on_redis_error: cluster.on_redis_error })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims `key` for `window`: [`Claim::Fresh`] exactly once per window, across every
    /// replica sharing the Redis.
    ///
    /// # Errors
    /// [`ReplayError`]: the memory bound is reached, or Redis cannot answer and the policy
    /// says fail closed.
    pub async fn claim(&self, key: Digest, window: Duration) -> Result<Claim, ReplayError> {
        let Some(shared) = &self.shared else {
            return self.held().claim(key, window, Instant::now());
        };
        match shared.claim(&key, window).await {
            Ok(claim) => Ok(claim),
            Err(cause) => match self.on_redis_error {
                OnRedisError::FailClosed => {
                    metrics::counter!("flowgate_webhook_replay_redis_errors_total").increment(1);
                    Err(ReplayError::Unavailable(cause))
                }
                OnRedisError::Local => {
                    metrics::counter!("flowgate_webhook_replay_redis_fallback_total").increment(1);
                    tracing::warn!(error = %cause, "Redis replay guard unavailable; using this instance's memory");
                    self.held().claim(key, window, Instant::now())
                }
            },
        }
    }

    /// Gives `key` back: its delivery was not forwarded (the upstream failed), so the
    /// sender's retry must pass.
    pub async fn release(&self, key: Digest) {
        self.held().release(&key);
        if let Some(shared) = &self.shared {
            let _ = shared.release(&key).await;
        }
    }

    /// Bytes of keys held in memory now.
    pub fn memory_bytes(&self) -> usize {
        self.held().bytes()
    }
}

impl Shared {
    fn redis_key(&self, key: &Digest) -> String {
        format!("{}wh:{}", self.settings.key_prefix, hex::encode(key))
    }

    async fn claim(&self, key: &Digest, window: Duration) -> Result<Claim, String> {
        let mut conn = self.conn.clone();
        let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let command = redis::cmd("SET").arg(self.redis_key(key)).arg(1).arg("NX").arg("PX").arg(millis).clone();
        let deadline = self.settings.timeout + self.settings.connect_timeout;
        let reply: Option<String> = tokio::time::timeout(deadline, command.query_async(&mut conn))
            .await
            .map_err(|_| format!("no answer within {deadline:?}"))?
            .map_err(|e| e.to_string())?;
        Ok(if reply.is_some() { Claim::Fresh } else { Claim::Replayed })
    }

    async fn release(&self, key: &Digest) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let command = redis::cmd("DEL").arg(self.redis_key(key)).clone();
        let deadline = self.settings.timeout + self.settings.connect_timeout;
        let _: i64 = tokio::time::timeout(deadline, command.query_async(&mut conn))
            .await
            .map_err(|_| "timeout".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_fresh_once_per_window_exactly() {
        let mut held = Held::new(DEFAULT_MEMORY_BYTES);
        let t0 = Instant::now();
        let window = Duration::from_secs(300);
        let key = digest("t", b"id-1");
        assert_eq!(held.claim(key, window, t0).unwrap(), Claim::Fresh);
        assert_eq!(held.claim(key, window, t0 + window - Duration::from_millis(1)).unwrap(), Claim::Replayed);
        assert_eq!(held.claim(key, window, t0 + window).unwrap(), Claim::Fresh);
    }

    #[test]
    fn the_bound_refuses_rather_than_forgets() {
        let mut held = Held::new(BYTES_PER_KEY * 2);
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        for i in 0..2u8 {
            assert_eq!(held.claim(digest("t", &[i]), window, t0).unwrap(), Claim::Fresh);
        }
        let full = held.claim(digest("t", b"new"), window, t0).unwrap_err();
        assert!(matches!(full, ReplayError::Full { retry_after_secs: 60, .. }), "{full:?}");
        // The held keys are still refused as replays at the bound.
        assert_eq!(held.claim(digest("t", &[0]), window, t0).unwrap(), Claim::Replayed);
        assert_eq!(held.claim(digest("t", b"new"), window, t0 + window).unwrap(), Claim::Fresh);
    }

    #[test]
    fn released_keys_pass_again() {
        let mut held = Held::new(DEFAULT_MEMORY_BYTES);
        let t0 = Instant::now();
        let key = digest("t", b"x");
        held.claim(key, Duration::from_secs(5), t0).unwrap();
        held.release(&key);
        assert_eq!(held.claim(key, Duration::from_secs(5), t0).unwrap(), Claim::Fresh);
        assert_eq!(held.bytes(), BYTES_PER_KEY);
    }
}
