//! The in-process store of admission logs: sharded maps with a hard cap on keys.
//!
//! A flood of distinct keys (one per spoofed principal or address) must not exhaust
//! memory: each shard holds at most `max_keys / SHARDS` logs and, when full, evicts the
//! least recently used of a few sampled entries (an approximate LRU, O(1) per insert).
//! Idle keys (nothing counted any more) are dropped by [`LocalStore::sweep`].

use super::window::{Outcome, Window};
use super::{RateKey, RuleId};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

const SHARDS: usize = 16;
const EVICTION_SAMPLE: usize = 8;

#[derive(Debug)]
struct Entry {
    window: Window,
    last_used: u64,
    period_us: u64,
}

type Shard = HashMap<(RuleId, RateKey), Entry>;

/// Admission logs by (rule, key).
#[derive(Debug)]
pub struct LocalStore {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: RandomState,
}

impl LocalStore {
    /// A store holding at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    /// Checks and records one call at `now_us`.
    pub fn check(&self, rule: RuleId, key: &RateKey, calls: u32, period_us: u64, now_us: u64) -> Outcome {
        let map_key = (rule, key.clone());
        let index = usize::try_from(self.hasher.hash_one(&map_key) % SHARDS as u64).unwrap_or(0);
        let mut shard = match self.shards[index].lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !shard.contains_key(&map_key) && shard.len() >= self.per_shard {
            evict_one(&mut shard, now_us);
        }
        let entry = shard.entry(map_key).or_insert_with(|| Entry {
            window: Window::new(calls, period_us),
            last_used: now_us,
            period_us,
        });
        entry.last_used = now_us;
        entry.period_us = period_us;
        entry.window.check(now_us, calls, period_us)
    }

    /// Drops keys whose admissions no longer count; returns how many were dropped.
    pub fn sweep(&self, now_us: u64) -> usize {
        let mut dropped = 0;
        for shard in &self.shards {
            let mut shard = match shard.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let before = shard.len();
            shard.retain(|_, e| e.window.idle_at(e.period_us).is_some_and(|idle| idle > now_us));
            dropped += before - shard.len();
        }
        dropped
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or_else(|p| p.into_inner().len(), |g| g.len())).sum()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes an idle entry if a sample holds one, else the least recently used sampled one.
fn evict_one(shard: &mut Shard, now_us: u64) {
    let victim = shard
        .iter()
        .take(EVICTION_SAMPLE)
        .min_by_key(|(_, e)| {
            let idle = e.window.idle_at(e.period_us).is_none_or(|idle| idle <= now_us);
            (!idle, e.last_used)
        })
        .map(|(k, _)| k.clone());
    if let Some(victim) = victim {
        shard.remove(&victim);
        metrics::counter!("flowgate_ratelimit_keys_evicted_total").increment(1);
    }
}
