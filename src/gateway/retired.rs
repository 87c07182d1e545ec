//! Policies a reload replaced, held until no call uses them any more and then dropped
//! off the threads that serve calls.
//!
//! A call keeps the `Arc<Policy>` it started with. Without this, the last call to finish
//! after a swap would free the old policy on a runtime thread, and freeing a large one
//! (ten thousand triggers, hundreds of thousands of CIDR ranges, long principal sets) takes
//! long enough to stall every call on that thread. Holding one reference here makes every
//! call's drop a mere decrement; [`Retired::release_unused`] does the freeing, called from
//! the reload's blocking thread and from a blocking task of the housekeeping loop.

use std::sync::{Arc, Mutex, PoisonError};

/// Replaced policies (`T`: the gateway's `Policy`) still in use by calls in flight.
#[derive(Debug)]
pub(crate) struct Retired<T> {
    held: Mutex<Vec<Arc<T>>>,
}

impl<T> Default for Retired<T> {
    fn default() -> Self {
        Self { held: Mutex::new(Vec::new()) }
    }
}

impl<T> Retired<T> {
    /// Holds a policy that was just replaced.
    pub(crate) fn hold(&self, old: Arc<T>) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).push(old);
    }

    /// True when nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// Drops every held policy no call uses any more (this is the last reference: nothing
    /// can take a new one once the swap is done), outside the lock. Blocking work: call it
    /// where a stall serves no call. Returns how many are still in use.
    pub(crate) fn release_unused(&self) -> usize {
        let unused: Vec<Arc<T>> = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            let (unused, in_use) = held.drain(..).partition(|policy| Arc::strong_count(policy) == 1);
            *held = in_use;
            unused
        };
        drop(unused);
        self.held.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_dropped_only_when_no_call_holds_it() {
        let retired = Retired::default();
        let policy = Arc::new(String::from("a policy"));
        let watch = Arc::downgrade(&policy);
        let call = Arc::clone(&policy);
        retired.hold(policy);
        assert_eq!(retired.release_unused(), 1, "a call still uses it");
        assert!(watch.upgrade().is_some());
        // The call ends on a serving thread: a decrement, not the free.
        drop(call);
        assert!(watch.upgrade().is_some(), "still held for the blocking release");
        assert_eq!(retired.release_unused(), 0);
        assert!(watch.upgrade().is_none(), "freed by release_unused");
        assert!(retired.is_empty());
    }
}
