//! Calls in flight per authenticated caller (`[limits] max_calls_per_principal`).
//!
//! A rate limit counts calls over a period; it does not stop one caller from holding many
//! calls open at once (slow upstreams, responses it reads slowly), each holding an upstream
//! connection. This table counts open calls per budget key and refuses one more past the
//! cap (429 `too_many_in_flight`). A slot is given back when its guard drops, which the
//! request path ties to the end of the response body. Keys without open calls are removed
//! at once, so the table never holds more entries than there are calls in flight.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

const SHARDS: usize = 16;

/// Open calls per caller; lives in the `Gateway`.
#[derive(Debug)]
pub struct InFlight {
    shards: Vec<Mutex<HashMap<Arc<str>, Open>>>,
    hasher: RandomState,
}

/// One caller's open calls, and its key as its slots hold it: a caller with calls open
/// takes another slot with one lookup, without hashing its key again to find the held copy.
#[derive(Debug)]
struct Open {
    key: Arc<str>,
    count: usize,
}

impl Default for InFlight {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), hasher: RandomState::new() }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InFlight {
    fn shard(&self, key: &str) -> &Mutex<HashMap<Arc<str>, Open>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// Takes a slot for `key` unless it already holds `max` open calls.
    pub fn try_begin(self: &Arc<Self>, key: &str, max: usize) -> Option<InFlightSlot> {
        let mut shard = lock(self.shard(key));
        if let Some(open) = shard.get_mut(key) {
            if open.count >= max {
                return None;
            }
            open.count += 1;
            return Some(InFlightSlot { table: self.clone(), key: open.key.clone() });
        }
        if max == 0 {
            return None;
        }
        let key: Arc<str> = key.into();
        shard.insert(key.clone(), Open { key: key.clone(), count: 1 });
        Some(InFlightSlot { table: self.clone(), key })
    }

    /// Open calls of `key` now.
    pub fn open(&self, key: &str) -> usize {
        lock(self.shard(key)).get(key).map_or(0, |open| open.count)
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
    key: Arc<str>,
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let mut shard = lock(self.table.shard(&self.key));
        if let Some(open) = shard.get_mut(&self.key) {
            open.count -= 1;
            if open.count == 0 {
                shard.remove(&self.key);
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
                let name = format!("tenant/oid:{key}");
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
    }
}
