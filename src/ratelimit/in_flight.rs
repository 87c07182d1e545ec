//! Calls in flight per authenticated caller (`[limits] max_calls_per_principal`).
//!
//! A rate limit counts calls over a period; it does not stop one caller from holding many
//! calls open at once (slow upstreams, responses it reads slowly), each holding an upstream
//! connection. This table counts open calls per budget key and refuses one more past the
//! cap (429 `too_many_in_flight`). A slot is given back when its guard drops, which the
//! request path ties to the end of the response body. Keys without open calls are removed
//! at once, so the table never holds more entries than there are calls in flight.

use super::BudgetKey;
use hashbrown::HashTable;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

const SHARDS: usize = 16;

/// Open calls per caller; lives in the `Gateway`.
#[derive(Debug)]
pub struct InFlight {
    /// Indexed by the keys' own keyed hashes ([`BudgetKey::hash`], taken when the caller
    /// was made), which pick the shard, find the entry and give the slot back.
    shards: Vec<Mutex<HashTable<Open>>>,
}

/// One caller's open calls, under its key as its slots hold it.
#[derive(Debug)]
struct Open {
    key: BudgetKey,
    count: usize,
}

impl Default for InFlight {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InFlight {
    fn shard(&self, hash: u64) -> &Mutex<HashTable<Open>> {
        // Bits a shard's table does not probe with (it takes the lowest bits for the bucket
        // and the top seven as a tag), so one shard's keys still spread over its buckets.
        let index = usize::try_from((hash >> 32) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// Takes a slot for `key` unless it already holds `max` open calls.
    pub fn try_begin(self: &Arc<Self>, key: &BudgetKey, max: usize) -> Option<InFlightSlot> {
        let hash = key.hash();
        let mut shard = lock(self.shard(hash));
        if let Some(open) = shard.find_mut(hash, |open| open.key == *key) {
            if open.count >= max {
                return None;
            }
            open.count += 1;
            return Some(InFlightSlot { table: self.clone(), key: key.clone() });
        }
        if max == 0 {
            return None;
        }
        shard.insert_unique(hash, Open { key: key.clone(), count: 1 }, |open| open.key.hash());
        Some(InFlightSlot { table: self.clone(), key: key.clone() })
    }

    /// Open calls of `key` now.
    pub fn open(&self, key: &BudgetKey) -> usize {
        let hash = key.hash();
        lock(self.shard(hash)).find(hash, |open| open.key == *key).map_or(0, |open| open.count)
    }

    /// Callers with open calls now (the table's entries).
    pub fn callers(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

/// One open call of one caller; gives its slot back when dropped.
#[derive(Debug)]
pub struct InFlightSlot {
    table: Arc<InFlight>,
    key: BudgetKey,
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let hash = self.key.hash();
        let mut shard = lock(self.table.shard(hash));
        if let Ok(mut entry) = shard.find_entry(hash, |open| open.key == self.key) {
            let open = entry.get_mut();
            open.count -= 1;
            if open.count == 0 {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a model (a count per key): a slot is granted exactly when the key holds
        /// fewer than `max`, counts follow begins and drops, and empty keys leave the table.
        #[test]
        fn slots_follow_a_counting_model(max in 0usize..4, events in proptest::collection::vec((0u8..3, any::<bool>()), 0..200)) {
            let table = Arc::new(InFlight::default());
            let mut held: Vec<Vec<InFlightSlot>> = (0..3).map(|_| Vec::new()).collect();
            let mut model = [0usize; 3];
            for (key, begin) in events {
                let k = usize::from(key);
                let name = BudgetKey::new(format!("tenant/oid:{key}"));
                if begin {
                    let slot = table.try_begin(&name, max);
                    prop_assert_eq!(slot.is_some(), model[k] < max);
                    if let Some(slot) = slot {
                        held[k].push(slot);
                        model[k] += 1;
                    }
                } else if held[k].pop().is_some() {
                    model[k] -= 1;
                }
                prop_assert_eq!(table.open(&name), model[k]);
                prop_assert_eq!(table.callers(), model.iter().filter(|&&n| n > 0).count());
            }
        }

        /// Many callers at once (tables grow and shards fill): each holds its own count,
        /// and every slot given back, in any order, leaves the table empty.
        #[test]
        fn many_callers_come_and_go(keys in 1usize..300, per_key in 1usize..4, seed: u64) {
            let table = Arc::new(InFlight::default());
            let mut slots = Vec::new();
            let name = |k: usize| BudgetKey::new(format!("tenant/oid:{k}"));
            for k in 0..keys {
                for _ in 0..per_key {
                    slots.push(table.try_begin(&name(k), per_key).unwrap());
                }
                prop_assert!(table.try_begin(&name(k), per_key).is_none());
            }
            prop_assert_eq!(table.callers(), keys);
            prop_assert!((0..keys).all(|k| table.open(&name(k)) == per_key));
            // A fixed shuffle from the seed: slots end in an order unrelated to their start.
            let mut state = seed | 1;
            while !slots.is_empty() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = usize::try_from(state % slots.len() as u64).unwrap();
                drop(slots.swap_remove(at));
            }
            prop_assert_eq!(table.callers(), 0);
        }
    }
}
