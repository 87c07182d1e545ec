//! The in-process store of admission logs: one table per rule, sharded, each with a hard
//! cap on keys.
//!
//! A flood of distinct keys (one per connection or address) must not exhaust memory, and
//! it must not let anyone out of a budget either. So:
//! - **Per rule.** Each rule has its own table and its own cap (`local_max_keys`): a flood
//!   of new keys on one trigger can never touch another rule's budgets.
//! - **Only idle keys are dropped.** A key whose admissions no longer count is worth
//!   nothing (it behaves exactly like an absent key), so dropping it is lossless. A key
//!   with admissions still counting is never dropped: churning other keys cannot reset a
//!   spent budget.
//! - **At the cap, a new key waits.** When a rule's shard is full of live keys, a call
//!   with a new key is refused ([`Full`], 503 with `Retry-After` until the first key goes
//!   idle) instead of being admitted untracked. Callers with a known key are unaffected.
//!
//! Each shard keeps a min-heap of its keys by the instant they go idle, so finding room
//! (or knowing there is none) costs O(log n); entries made stale by later admissions are
//! refreshed lazily when they reach the top. [`LocalStore::sweep`] drops idle keys and
//! tables no rule uses any more.

use super::window::{Outcome, Window};
use super::{RateKey, RuleId};
use hashbrown::HashTable;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

const SHARDS: usize = 16;

/// A new key could not be tracked: its rule's table is full of keys still counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// Until the first key of the full shard goes idle (µs).
    pub retry_us: u64,
}

#[derive(Debug, Default)]
struct Shard {
    logs: HashTable<Log>,
    /// Each held key once (with its hash, to find its log), by the instant (µs) it goes
    /// idle as last seen: never later than the real instant, which only moves forward as
    /// admissions happen.
    idle_order: BinaryHeap<Reverse<(u64, u64, RateKey)>>,
    /// Set when the table was dropped by `sweep`: a check that still holds it looks again.
    retired: bool,
}

/// One key's admission log, with the key's hash: a call hashes its key once, and that
/// picks the shard and finds the log (the table grows without hashing keys again).
#[derive(Debug)]
struct Log {
    key: RateKey,
    hash: u64,
    window: Window,
}

impl Shard {
    fn log(&self, hash: u64, key: &RateKey) -> Option<&Log> {
        self.logs.find(hash, |log| log.key == *key)
    }

    fn remove_log(&mut self, hash: u64, key: &RateKey) -> bool {
        let Ok(entry) = self.logs.find_entry(hash, |log| log.key == *key) else { return false };
        entry.remove();
        true
    }

    /// The idle order rebuilt from the logs held.
    fn refile(&mut self, period_us: u64) {
        self.idle_order = self
            .logs
            .iter()
            .map(|log| Reverse((log.window.idle_at(period_us).unwrap_or(0), log.hash, log.key.clone())))
            .collect();
    }

    /// Drops one idle key to make room, or says when the first one goes idle.
    fn make_room(&mut self, now_us: u64, period_us: u64) -> Result<(), Full> {
        while let Some(Reverse((at, hash, key))) = self.idle_order.peek() {
            let Some(log) = self.log(*hash, key) else {
                self.idle_order.pop();
                continue;
            };
            let idle_at = log.window.idle_at(period_us).unwrap_or(0);
            if idle_at <= now_us {
                let Some(Reverse((_, hash, key))) = self.idle_order.pop() else { break };
                self.remove_log(hash, &key);
                metrics::counter!("flowgate_ratelimit_keys_evicted_total").increment(1);
                return Ok(());
            }
            if idle_at > *at {
                // Admissions since it was filed moved its idle instant: file it again.
                let Some(Reverse((_, hash, key))) = self.idle_order.pop() else { break };
                self.idle_order.push(Reverse((idle_at, hash, key)));
                continue;
            }
            return Err(Full { retry_us: idle_at - now_us });
        }
        // Nothing filed (cannot happen while the shard is full); refusing is the safe answer.
        Err(Full { retry_us: 1 })
    }

    /// Drops idle keys and refiles the rest; returns how many were dropped.
    fn sweep(&mut self, now_us: u64, period_us: u64) -> usize {
        let before = self.logs.len();
        self.logs.retain(|log| log.window.idle_at(period_us).is_some_and(|idle| idle > now_us));
        self.refile(period_us);
        before - self.logs.len()
    }
}

/// One rule's keys. A rule id fixes `calls` and `period`.
#[derive(Debug)]
struct Table {
    shards: Vec<Mutex<Shard>>,
    period_us: u64,
}

impl Table {
    fn new(period_us: u64) -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(), period_us }
    }
}

/// The shard of a key's hash: bits a shard's table does not probe with (it takes the lowest
/// bits for the bucket and the top seven as a tag), so one shard's keys still spread.
fn shard_index(hash: u64) -> usize {
    usize::try_from((hash >> 32) % SHARDS as u64).unwrap_or(0)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Admission logs by rule and key.
#[derive(Debug)]
pub struct LocalStore {
    /// foldhash: rules come from the policy. The keys within a rule (callers) are indexed
    /// by their own keyed hashes ([`RateKey::hash`]: `SipHash` under the process's random
    /// key, taken when the key was made), which a caller cannot steer into collisions.
    tables: RwLock<foldhash::HashMap<RuleId, Arc<Table>>>,
    per_shard: usize,
    max_keys: usize,
}

impl LocalStore {
    /// A store holding at most about `max_keys` keys per rule.
    pub fn new(max_keys: usize) -> Self {
        Self { tables: RwLock::default(), per_shard: max_keys.div_ceil(SHARDS).max(1), max_keys }
    }

    /// The cap on keys per rule.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    fn table(&self, rule: RuleId, period_us: u64) -> Arc<Table> {
        if let Some(table) = self.tables.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&rule) {
            return table.clone();
        }
        let mut tables = self.tables.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        tables.entry(rule).or_insert_with(|| Arc::new(Table::new(period_us))).clone()
    }

    /// Checks and records one call at `now_us`.
    ///
    /// # Errors
    /// `Full` when `key` is new and its rule's shard holds only live keys.
    pub fn check(&self, rule: RuleId, key: &RateKey, calls: u32, period_us: u64, now_us: u64) -> Result<Outcome, Full> {
        let hash = key.hash();
        let index = shard_index(hash);
        loop {
            let table = self.table(rule, period_us);
            let mut shard = lock(&table.shards[index]);
            if shard.retired {
                // `sweep` dropped this table after we found it: use the current one.
                continue;
            }
            if let Some(log) = shard.logs.find_mut(hash, |log| log.key == *key) {
                return Ok(log.window.check(now_us, calls, period_us));
            }
            if shard.logs.len() >= self.per_shard {
                shard.make_room(now_us, period_us)?;
            }
            let mut window = Window::new(calls, period_us);
            let outcome = window.check(now_us, calls, period_us);
            let idle_at = window.idle_at(period_us).unwrap_or(0);
            shard.logs.insert_unique(hash, Log { key: key.clone(), hash, window }, |log| log.hash);
            shard.idle_order.push(Reverse((idle_at, hash, key.clone())));
            return Ok(outcome);
        }
    }

    /// Removes `key` from `rule`'s table (a key that can never be used again); true when it
    /// was held.
    pub fn remove(&self, rule: RuleId, key: &RateKey) -> bool {
        let Some(table) = self.tables.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&rule).cloned()
        else {
            return false;
        };
        let hash = key.hash();
        let mut shard = lock(&table.shards[shard_index(hash)]);
        let removed = shard.remove_log(hash, key);
        // The idle order forgets removed keys lazily; rebuilt before it outgrows the keys.
        if shard.idle_order.len() > 2 * shard.logs.len() + 16 {
            shard.refile(table.period_us);
        }
        removed
    }

    /// Drops keys whose admissions no longer count, and tables left empty; returns how
    /// many keys were dropped.
    pub fn sweep(&self, now_us: u64) -> usize {
        let tables: Vec<(RuleId, Arc<Table>)> = self
            .tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(id, t)| (*id, t.clone()))
            .collect();
        let mut dropped = 0;
        let mut empty = Vec::new();
        for (id, table) in &tables {
            let mut left = 0;
            for shard in &table.shards {
                let mut shard = lock(shard);
                dropped += shard.sweep(now_us, table.period_us);
                left += shard.logs.len();
            }
            if left == 0 {
                empty.push(*id);
            }
        }
        if !empty.is_empty() {
            let mut current = self.tables.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for id in empty {
                let Some(table) = current.get(&id).cloned() else { continue };
                // Checked again under every shard's lock: a call may have arrived meanwhile.
                let mut shards: Vec<_> = table.shards.iter().map(lock).collect();
                if shards.iter().all(|s| s.logs.is_empty()) {
                    for shard in &mut shards {
                        shard.retired = true;
                    }
                    drop(shards);
                    current.remove(&id);
                }
            }
        }
        dropped
    }

    /// Keys currently held, over every rule.
    pub fn len(&self) -> usize {
        let tables = self.tables.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        tables.values().flat_map(|t| t.shards.iter()).map(|s| lock(s).logs.len()).sum()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{LimitKey, RateLimitRule};
    use std::time::Duration;

    const PERIOD_US: u64 = 10_000_000;

    fn rule(name: &str, key: LimitKey) -> RuleId {
        RateLimitRule::new(name, 2, Duration::from_micros(PERIOD_US), key, false).id
    }

    fn key(i: u32) -> RateKey {
        RateKey::ip(std::net::IpAddr::from(i.to_be_bytes()))
    }

    /// A spent budget survives any amount of churn on other keys, of its own rule or of
    /// another: live keys are never evicted, and a full table refuses new keys instead.
    #[test]
    fn churn_never_resets_a_live_budget() {
        let store = LocalStore::new(32);
        let (victim_rule, churn_rule) = (rule("victim", LimitKey::Principal), rule("churn", LimitKey::Ip));
        let alice = RateKey::principal("t", "oid:alice");
        let spent = key(0);
        for _ in 0..2 {
            assert!(store.check(victim_rule, &alice, 2, PERIOD_US, 0).unwrap().admitted);
            assert!(store.check(churn_rule, &spent, 2, PERIOD_US, 0).unwrap().admitted);
        }
        let (mut admitted, mut full) = (0, 0);
        for i in 1..10_000 {
            match store.check(churn_rule, &key(i), 2, PERIOD_US, 1 + u64::from(i)) {
                Ok(outcome) => admitted += usize::from(outcome.admitted),
                Err(Full { retry_us }) => {
                    assert!(retry_us > 0 && retry_us <= PERIOD_US, "{retry_us}");
                    full += 1;
                }
            }
        }
        assert!(admitted < 40 && full > 9_000, "admitted {admitted}, full {full}");
        let now = 20_000;
        assert!(!store.check(victim_rule, &alice, 2, PERIOD_US, now).unwrap().admitted, "another rule's churn");
        assert!(!store.check(churn_rule, &spent, 2, PERIOD_US, now).unwrap().admitted, "its own rule's churn");
        // Once the period has passed the keys are idle: new keys find room again, losslessly.
        let later = PERIOD_US + 20_000;
        assert!(store.check(churn_rule, &key(123_456), 2, PERIOD_US, later).unwrap().admitted);
        assert!(store.check(churn_rule, &spent, 2, PERIOD_US, later).unwrap().admitted);
    }

    proptest::proptest! {
        /// Below the cap, the store is a window per key: generated checks, removals and
        /// sweeps over up to 40 keys (two rules) answer as a plain map of windows does.
        #[test]
        fn below_the_cap_the_store_is_a_window_per_key(
            events in proptest::collection::vec((0u8..4, 0u32..40, 0u64..3_000_000), 1..300),
        ) {
            use std::collections::HashMap;
            let store = LocalStore::new(10_000);
            let rules = [rule("a", LimitKey::Ip), rule("b", LimitKey::Principal)];
            let mut model: HashMap<(usize, u32), Window> = HashMap::new();
            let mut now = 0;
            for (kind, k, step) in events {
                now += step;
                let r = usize::from(kind % 2);
                match kind {
                    0 | 1 => {
                        let outcome = store.check(rules[r], &key(k), 3, PERIOD_US, now).unwrap();
                        let window = model.entry((r, k)).or_insert_with(|| Window::new(3, PERIOD_US));
                        proptest::prop_assert_eq!(outcome, window.check(now, 3, PERIOD_US));
                    }
                    2 => {
                        let held = store.remove(rules[r], &key(k));
                        proptest::prop_assert_eq!(held, model.remove(&(r, k)).is_some());
                    }
                    _ => {
                        store.sweep(now);
                        model.retain(|_, w| w.idle_at(PERIOD_US).is_some_and(|idle| idle > now));
                    }
                }
                proptest::prop_assert_eq!(store.len(), model.len());
            }
        }
    }

    #[test]
    fn sweep_drops_idle_keys_and_empty_tables() {
        let store = LocalStore::new(1000);
        let id = rule("s", LimitKey::Ip);
        for i in 0..100 {
            store.check(id, &key(i), 2, PERIOD_US, u64::from(i)).unwrap();
        }
        assert_eq!(store.sweep(PERIOD_US), 1, "only the key admitted at 0 is idle at the period");
        assert_eq!(store.len(), 99);
        assert_eq!(store.sweep(2 * PERIOD_US), 99);
        assert!(store.is_empty());
        assert!(store.tables.read().unwrap().is_empty(), "the empty table is dropped");
        assert!(store.check(id, &key(1), 2, PERIOD_US, 2 * PERIOD_US).unwrap().admitted);
        assert_eq!(store.len(), 1);
    }
}
