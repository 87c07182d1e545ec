//! Idle upstream connections waiting for their next call: newest first, at most
//! a cap per origin, each until its expiry. Plain data with time passed in, so
//! a property test can hold it against a model; `web/client.rs` keeps one per thread.

use std::collections::VecDeque;
use std::hash::Hash;
use std::time::Instant;

/// Idle connections by key (an origin and the TLS settings that reach it).
pub(super) struct IdlePool<K, C> {
    /// Hashed, not scanned: a policy may give many triggers their own CA, and each is a
    /// key of its own, so a scan would make a call's cost grow with the policy. foldhash,
    /// not the standard keyed hash: the keys come from the policy, never from a caller
    /// (ARCHITECTURE.md, "Hash maps").
    slots: foldhash::HashMap<K, VecDeque<Idle<C>>>,
    cap: usize,
    /// When expired connections of every key are next dropped (a key nobody calls again,
    /// such as one of a replaced policy, would otherwise keep its sockets).
    next_sweep: Option<Instant>,
}

struct Idle<C> {
    conn: C,
    expires: Instant,
}

/// How often a pool drops the expired connections of every key.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl<K: Hash + Eq, C> IdlePool<K, C> {
    /// An empty pool keeping at most `cap` idle connections per key.
    pub(super) fn new(cap: usize) -> Self {
        Self { slots: foldhash::HashMap::default(), cap, next_sweep: None }
    }

    /// The newest idle connection of `key` that has not expired and that `usable` accepts;
    /// the ones passed over on the way are dropped (closed).
    pub(super) fn checkout(&mut self, key: &K, now: Instant, mut usable: impl FnMut(&mut C) -> bool) -> Option<C> {
        // Oldest first in each list: checkout takes from the back, the cap drops from the front.
        let idle_list = self.slots.get_mut(key)?;
        while let Some(mut idle) = idle_list.pop_back() {
            if idle.expires > now && usable(&mut idle.conn) {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Keeps `conn` idle under `key` until `expires`. Expired connections of the key go
    /// first; when the key is at its cap, its oldest idle connection is dropped.
    pub(super) fn checkin(&mut self, key: K, conn: C, expires: Instant, now: Instant) {
        if self.next_sweep.is_none_or(|at| now >= at) {
            self.sweep(now);
        }
        if self.cap == 0 {
            return;
        }
        let idle_list = self.slots.entry(key).or_default();
        // A key's connections share one idle timeout, so expiries rise from the front.
        while idle_list.front().is_some_and(|idle| idle.expires <= now) {
            idle_list.pop_front();
        }
        if idle_list.len() >= self.cap {
            idle_list.pop_front();
        }
        idle_list.push_back(Idle { conn, expires });
    }

    /// Drops expired connections of every key, and keys left without any.
    fn sweep(&mut self, now: Instant) {
        self.slots.retain(|_, idle_list| {
            idle_list.retain(|idle| idle.expires > now);
            !idle_list.is_empty()
        });
        self.next_sweep = Some(now + SWEEP_EVERY);
    }

    /// The idle connections kept for `key`, expired or not.
    #[cfg(test)]
    pub(super) fn idle(&self, key: &K) -> usize {
        self.slots.get(key).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;
    use std::collections::HashSet;
    use std::rc::Rc;
    use std::time::Duration;

    /// A connection the test can close behind the pool's back.
    struct Fake {
        id: u32,
        key: u8,
        closed: Rc<Cell<bool>>,
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A call dials a new connection to `key`.
        Dial(u8),
        /// The call holding connection `n` (modulo held) ends and returns it.
        Return(usize),
        /// A call to `key` asks for an idle connection.
        Checkout(u8),
        /// The upstream closes connection `n` (modulo all opened).
        Close(usize),
        /// Time passes.
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3).prop_map(Op::Dial),
            (0usize..8).prop_map(Op::Return),
            (0u8..3).prop_map(Op::Checkout),
            (0usize..16).prop_map(Op::Close),
            (0u64..1500).prop_map(Op::Wait),
        ]
    }

    const CAP: usize = 3;
    const TIMEOUT: Duration = Duration::from_secs(1);

    proptest! {
        /// Against a model (per key, a list of (id, expiry), newest last): the pool hands
        /// out exactly the connection the model picks, never a closed, expired or busy one,
        /// and never keeps more than its cap.
        #[test]
        fn the_pool_follows_its_model(ops in proptest::collection::vec(op(), 1..120)) {
            let start = Instant::now();
            let mut now = start;
            let mut pool: IdlePool<u8, Fake> = IdlePool::new(CAP);
            let mut model: Vec<Vec<(u32, Instant)>> = vec![Vec::new(); 3];
            let mut held: Vec<Fake> = Vec::new();
            let mut closed: Vec<Rc<Cell<bool>>> = Vec::new();
            let mut next_id = 0;
            for op in ops {
                match op {
                    Op::Dial(key) => {
                        let flag = Rc::new(Cell::new(false));
                        closed.push(flag.clone());
                        held.push(Fake { id: next_id, key, closed: flag });
                        next_id += 1;
                    }
                    Op::Return(n) if !held.is_empty() => {
                        let conn = held.remove(n % held.len());
                        let key = conn.key;
                        let entries = &mut model[usize::from(key)];
                        entries.retain(|(_, expires)| *expires > now);
                        if entries.len() >= CAP {
                            entries.remove(0);
                        }
                        entries.push((conn.id, now + TIMEOUT));
                        pool.checkin(key, conn, now + TIMEOUT, now);
                    }
                    Op::Checkout(key) => {
                        let entries = &mut model[usize::from(key)];
                        let mut expected = None;
                        while let Some((id, expires)) = entries.pop() {
                            if expires > now && !closed[id as usize].get() {
                                expected = Some(id);
                                break;
                            }
                        }
                        let got = pool.checkout(&key, now, |conn| !conn.closed.get());
                        prop_assert_eq!(got.as_ref().map(|c| c.id), expected);
                        if let Some(conn) = got {
                            prop_assert_eq!(conn.key, key);
                            prop_assert!(!conn.closed.get(), "handed out a closed connection");
                            prop_assert!(held.iter().all(|h| h.id != conn.id), "handed out a busy connection");
                            held.push(conn);
                        }
                    }
                    Op::Close(n) if !closed.is_empty() => closed[n % closed.len()].set(true),
                    Op::Return(_) | Op::Close(_) => {}
                    Op::Wait(ms) => now += Duration::from_millis(ms),
                }
                let mut seen = HashSet::new();
                for key in 0..3u8 {
                    prop_assert!(pool.idle(&key) <= CAP, "over the cap");
                    for (id, _) in &model[usize::from(key)] {
                        prop_assert!(seen.insert(*id), "one connection idle twice");
                    }
                }
            }
        }
    }

    #[test]
    fn a_sweep_drops_expired_connections_of_keys_nobody_calls() {
        let start = Instant::now();
        let mut pool: IdlePool<u8, ()> = IdlePool::new(2);
        pool.checkin(1, (), start + TIMEOUT, start);
        assert_eq!(pool.idle(&1), 1);
        // Another key's checkin after the expiry and the sweep interval drops key 1's.
        let later = start + TIMEOUT + SWEEP_EVERY;
        pool.checkin(2, (), later + TIMEOUT, later);
        assert_eq!(pool.idle(&1), 0);
        assert_eq!(pool.idle(&2), 1);
    }
}
