//! The sliding-window rate-limit algorithm, as a pure function of time (microseconds).
//!
//! # Algorithm: an exact sliding log
//! Per key, the limiter keeps the times of its last admissions, oldest first, in a ring
//! buffer (`VecDeque`) that holds at most `calls` entries. A call arriving at `now`:
//! 1. drops from the front every admission at or before `now − period` (it no longer counts:
//!    a window is half-open, an admission at `t` counts during `[t, t + period)`);
//! 2. is **admitted** iff fewer than `calls` admissions remain, and then appends `now`;
//! 3. is otherwise **refused** with `Retry-After = oldest + period − now`, where `oldest` is
//!    the admission whose expiry brings the count below `calls`.
//!
//! Times are stored as offsets from a per-key epoch (the first admission), in
//! microseconds: `u32` offsets (4 bytes) when `period ≤ 2³¹ µs` (about 35 minutes), `u64`
//! offsets (8 bytes) for longer periods (up to the 31-day maximum). A `u32` log is rebased
//! onto its oldest live admission when an offset would overflow (every 35 minutes or more,
//! O(entries)). Nothing is rounded: the limiter is exact to the microsecond of its clock.
//! (Should two concurrent calls reach the log out of clock order, the later-locked one is
//! recorded at the newest time already in the log: it counts slightly longer, never less.)
//!
//! # Guarantees (each checked by a property test below)
//! * **Never over-admits:** every half-open window of length `period` holds at most
//!   `calls` admissions.
//! * **Never under-admits:** a call with fewer than `calls` admissions in
//!   `(now − period, now]` is admitted, exactly (no slack).
//! * **Evenly paced callers are never refused:** calls exactly `period / calls` apart
//!   (for example 2000 per 60 s, one every 30 ms) always pass.
//! * **Retry-After is exact:** a retry at `oldest + period` is admitted (if nobody else
//!   spent the budget), one microsecond earlier it is refused. The HTTP header rounds it up
//!   to whole seconds, so a retry after the header's delay succeeds.
//!
//! # Memory
//! A log grows only as admissions happen (a key that called 3 times holds 3 entries) and
//! never beyond `calls` entries: at most `calls × 4` bytes per key (`calls × 8` for periods
//! over 35 minutes; the ring buffer at most doubles that), plus about 200 bytes of map
//! entry and key. Memory therefore follows the admissions still counting (4 B each, about
//! 8 B with slack), plus the keys held: at most `[cluster] local_max_keys` per rule
//! (default 50,000; see `local.rs` for what happens at the cap). A saturated 2000-per-60 s
//! key holds 8,000 bytes; lower `local_max_keys` for rules with a very large `calls`.
//!
//! **Huge budgets** (`calls > 100,000`, `EXACT_MAX_CALLS`) fall back to a bucketed log:
//! admissions in the same 1 % slot of the period are merged into one bucket remembering its
//! count and latest time (at most 101 buckets of 16 bytes per key). It still never over-admits and
//! Retry-After stays exact, but a caller is only guaranteed admission with fewer than
//! `calls` admissions in the last `period + 1 %`.
//!
//! The Redis script in `redis.rs` applies exactly the same rules, on Redis's clock.

use std::collections::VecDeque;

/// Largest `calls` kept as an exact log; larger budgets use the bucketed fallback.
pub(crate) const EXACT_MAX_CALLS: u32 = 100_000;

/// Longest period whose log stores 4-byte (`u32`) microsecond offsets.
pub(crate) const NARROW_MAX_PERIOD_US: u64 = 1 << 31;

/// Slots per period of the bucketed fallback: its precision (1 %).
pub(crate) const SLOTS_PER_PERIOD: u64 = 100;

/// The outcome of one check, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The call may proceed.
    pub admitted: bool,
    /// Admissions still possible now (after this one).
    pub remaining: u32,
    /// Until the oldest counted admission stops counting (0 when none counts).
    pub reset_us: u64,
    /// When refused: until one more admission becomes possible.
    pub retry_us: Option<u64>,
}

/// The slot width of the bucketed fallback for a period (at least 1 µs).
pub(crate) fn slot_of(period_us: u64) -> u64 {
    (period_us / SLOTS_PER_PERIOD).max(1)
}

/// True when a rule of `calls` per period is limited by the exact log (else bucketed).
pub(crate) fn is_exact(calls: u32) -> bool {
    calls <= EXACT_MAX_CALLS
}

/// One key's admission log. Build it with [`Window::new`] for the rule it serves and
/// always check it with that rule's `calls` and `period`.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Narrow(Log<u32>),
    Wide(Log<u64>),
    Buckets(Buckets),
}

impl Window {
    /// An empty log suited to a rule of `calls` per `period_us`.
    pub(crate) fn new(calls: u32, period_us: u64) -> Self {
        let kind = if !is_exact(calls) {
            Kind::Buckets(Buckets::default())
        } else if period_us <= NARROW_MAX_PERIOD_US {
            Kind::Narrow(Log::default())
        } else {
            Kind::Wide(Log::default())
        };
        Self { kind }
    }

    /// Records an admission at `now` if fewer than `calls` admissions count in
    /// `(now − period, now]`.
    pub(crate) fn check(&mut self, now: u64, calls: u32, period_us: u64) -> Outcome {
        match &mut self.kind {
            Kind::Narrow(log) => log.check(now, calls, period_us),
            Kind::Wide(log) => log.check(now, calls, period_us),
            Kind::Buckets(buckets) => buckets.check(now, calls, period_us),
        }
    }

    /// The instant (µs) from which nothing counts any more; `None` when empty.
    pub(crate) fn idle_at(&self, period_us: u64) -> Option<u64> {
        match &self.kind {
            Kind::Narrow(log) => log.newest(),
            Kind::Wide(log) => log.newest(),
            Kind::Buckets(buckets) => buckets.newest(),
        }
        .map(|newest| newest.saturating_add(period_us))
    }

    /// Entries held (admissions, or buckets for the fallback).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match &self.kind {
            Kind::Narrow(log) => log.times.len(),
            Kind::Wide(log) => log.times.len(),
            Kind::Buckets(buckets) => buckets.buckets.len(),
        }
    }

    /// Heap bytes reserved for entries (for memory tests and sizing).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.kind {
            Kind::Narrow(log) => log.times.capacity() * size_of::<u32>(),
            Kind::Wide(log) => log.times.capacity() * size_of::<u64>(),
            Kind::Buckets(buckets) => buckets.buckets.capacity() * size_of::<Bucket>(),
        }
    }
}

/// The exact sliding log: admission times as offsets (µs) from `epoch`, oldest first.
#[derive(Debug, Clone, Default)]
struct Log<T> {
    epoch: u64,
    times: VecDeque<T>,
}

impl<T: Copy + Into<u64> + TryFrom<u64>> Log<T> {
    fn at(&self, index: usize) -> u64 {
        self.epoch.saturating_add(self.times[index].into())
    }

    fn newest(&self) -> Option<u64> {
        self.times.back().map(|&t| self.epoch.saturating_add(t.into()))
    }

    fn check(&mut self, now: u64, calls: u32, period_us: u64) -> Outcome {
        while self.times.front().is_some_and(|&t| self.epoch.saturating_add(t.into()).saturating_add(period_us) <= now)
        {
            self.times.pop_front();
        }
        let calls_n = usize::try_from(calls).unwrap_or(usize::MAX);
        let expiry = |log: &Self, index: usize| log.at(index).saturating_add(period_us).saturating_sub(now);
        if self.times.len() >= calls_n {
            // Admission needs the count below `calls`: the entry at `len − calls` must expire.
            let retry = expiry(self, self.times.len() - calls_n);
            return Outcome { admitted: false, remaining: 0, reset_us: expiry(self, 0), retry_us: Some(retry) };
        }
        if self.times.is_empty() {
            self.epoch = now;
        }
        // Times stay sorted even if a concurrent caller read the clock a little earlier:
        // recording a later time only makes the admission count longer (never over-admits).
        let at = self.newest().map_or(now, |newest| newest.max(now));
        let Some(offset) = self.offset(at) else {
            // Unreachable with a monotonic clock (see `offset`); refusing is the safe answer.
            return Outcome { admitted: false, remaining: 0, reset_us: expiry(self, 0), retry_us: Some(1) };
        };
        if self.times.len() == self.times.capacity() {
            // Grow by doubling, but never beyond `calls` entries.
            let target = (self.times.len() * 2).max(4).min(calls_n);
            self.times.reserve_exact(target - self.times.len());
        }
        self.times.push_back(offset);
        let remaining = u32::try_from(calls_n - self.times.len()).unwrap_or(0);
        Outcome { admitted: true, remaining, reset_us: expiry(self, 0), retry_us: None }
    }

    /// The offset of `at`, rebasing the log onto its oldest entry when `at` is too far
    /// from the epoch for `T`. Live entries lie within one period of `now`, and a `u32`
    /// log serves periods of at most 2³¹ µs, so the rebased offset always fits.
    fn offset(&mut self, at: u64) -> Option<T> {
        if let Ok(offset) = T::try_from(at.saturating_sub(self.epoch)) {
            return Some(offset);
        }
        let base: u64 = self.times.front().map_or(0, |&t| t.into());
        let rebased: Option<VecDeque<T>> = self.times.iter().map(|&t| T::try_from(t.into() - base).ok()).collect();
        let mut rebased = rebased?;
        rebased.reserve_exact(self.times.capacity().saturating_sub(rebased.len()));
        self.times = rebased;
        self.epoch = self.epoch.saturating_add(base);
        T::try_from(at.saturating_sub(self.epoch)).ok()
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    latest: u64,
    count: u32,
}

/// The fallback for huge budgets: admissions merged per 1 % slot of the period.
#[derive(Debug, Default, Clone)]
struct Buckets {
    buckets: VecDeque<Bucket>,
}

impl Buckets {
    fn newest(&self) -> Option<u64> {
        self.buckets.back().map(|b| b.latest)
    }

    fn check(&mut self, now: u64, calls: u32, period_us: u64) -> Outcome {
        let slot = slot_of(period_us);
        while self.buckets.front().is_some_and(|b| b.latest.saturating_add(period_us) <= now) {
            self.buckets.pop_front();
        }
        let total: u64 = self.buckets.iter().map(|b| u64::from(b.count)).sum();
        let reset = |buckets: &VecDeque<Bucket>| {
            buckets.front().map_or(0, |b| b.latest.saturating_add(period_us).saturating_sub(now))
        };
        if total < u64::from(calls) {
            match self.buckets.back_mut() {
                Some(back) if back.latest / slot == now / slot || back.latest > now => {
                    back.count += 1;
                    back.latest = back.latest.max(now);
                }
                _ => self.buckets.push_back(Bucket { latest: now, count: 1 }),
            }
            let remaining = u32::try_from(u64::from(calls) - total - 1).unwrap_or(0);
            return Outcome { admitted: true, remaining, reset_us: reset(&self.buckets), retry_us: None };
        }
        // Refused: find the bucket whose expiry brings the total below `calls`.
        let need = total - u64::from(calls) + 1;
        let mut freed = 0u64;
        let mut retry = 0;
        for bucket in &self.buckets {
            freed += u64::from(bucket.count);
            if freed >= need {
                retry = bucket.latest.saturating_add(period_us).saturating_sub(now);
                break;
            }
        }
        Outcome { admitted: false, remaining: 0, reset_us: reset(&self.buckets), retry_us: Some(retry) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000;
    const DAY: u64 = 86_400 * SEC;

    #[test]
    fn burst_then_refuse_then_exact_retry() {
        let period = 60 * SEC;
        let mut w = Window::new(3, period);
        for i in 0..3 {
            let o = w.check(i, 3, period);
            assert!(o.admitted);
            assert_eq!(o.remaining, 2 - u32::try_from(i).unwrap());
        }
        let refused = w.check(10 * SEC, 3, period);
        assert!(!refused.admitted);
        // The first admission (t = 0) stops counting at exactly t = 60 s.
        let retry = refused.retry_us.unwrap();
        assert_eq!(retry, 50 * SEC);
        assert_eq!(refused.reset_us, 50 * SEC);
        assert!(!w.check(10 * SEC + retry - 1, 3, period).admitted);
        assert!(w.check(10 * SEC + retry, 3, period).admitted);
    }

    #[test]
    fn paced_2000_per_minute_is_never_refused_and_memory_stays_at_calls() {
        let (calls, period) = (2000u32, 60 * SEC);
        let mut w = Window::new(calls, period);
        for i in 0..u64::from(calls) * 5 {
            let t = 7 + i * 30_000;
            assert!(w.check(t, calls, period).admitted, "call {i} refused");
        }
        assert_eq!(w.len(), 2000);
        assert!(w.heap_bytes() <= 2000 * 4, "{} bytes", w.heap_bytes());
        // One microsecond faster than period / calls is too fast: refused within a period.
        let mut w = Window::new(calls, period);
        let refusals = (0..=u64::from(calls)).filter(|i| !w.check(i * 29_999, calls, period).admitted).count();
        assert_eq!(refusals, 1);
    }

    #[test]
    fn a_one_shot_key_holds_one_entry() {
        let mut w = Window::new(2000, 60 * SEC);
        w.check(5, 2000, 60 * SEC);
        assert!(w.heap_bytes() <= 4 * 4, "{}", w.heap_bytes());
    }

    #[test]
    fn long_periods_use_wide_offsets_and_short_ones_rebase() {
        // 31 days with u64 offsets.
        let period = 31 * DAY;
        let mut w = Window::new(2, period);
        assert!(w.check(0, 2, period).admitted);
        assert!(w.check(DAY, 2, period).admitted);
        let refused = w.check(2 * DAY, 2, period);
        assert_eq!(refused.retry_us, Some(29 * DAY));
        assert!(!w.check(31 * DAY - 1, 2, period).admitted);
        assert!(w.check(31 * DAY, 2, period).admitted);
        assert!(matches!(w.kind, Kind::Wide(_)));
        // 30 minutes with u32 offsets, paced exactly over 10 hours: rebased many times.
        let period = 30 * 60 * SEC;
        let mut w = Window::new(7, period);
        let at = |i: u64| 3 + i * period / 7;
        for i in 0..7 * 20 {
            assert!(w.check(at(i), 7, period).admitted, "call {i}");
        }
        let Kind::Narrow(log) = &w.kind else { panic!("30 minutes use u32 offsets") };
        assert!(log.epoch > 4 * 3600 * SEC, "rebased (epoch {})", log.epoch);
        assert!(!w.check(at(7 * 20 - 1) + 1, 7, period).admitted);
        assert!(w.check(at(7 * 20), 7, period).admitted);
    }

    #[test]
    fn huge_budgets_use_bounded_buckets() {
        let calls = EXACT_MAX_CALLS + 1;
        let period = 60 * SEC;
        let mut w = Window::new(calls, period);
        for i in 0..200_000u64 {
            w.check(i * 1_000, calls, period);
        }
        assert!(w.len() <= 101, "{}", w.len());
    }

    /// Times of a sequence of arrivals: gaps are multiples of `quantum` (so that arrivals
    /// often fall exactly one period after an admission) or free microseconds.
    fn arrivals(len: usize) -> impl Strategy<Value = (bool, Vec<u64>)> {
        (any::<bool>(), prop::collection::vec(0u64..1_000, 1..len))
    }

    fn times(quantized: bool, raw: &[u64], calls: u32, period: u64) -> Vec<u64> {
        // Mean gap about 1.5 × period / calls: both saturated and idle stretches.
        let quantum = (period / u64::from(calls) / 2).max(1);
        let mut t = 0u64;
        raw.iter()
            .map(|&g| {
                t += if quantized { (g % 7) * quantum } else { g * 3 * period / u64::from(calls) / 1_000 };
                t
            })
            .collect()
    }

    fn period_strategy() -> impl Strategy<Value = u64> {
        prop_oneof![
            1_000u64..10 * SEC,
            (NARROW_MAX_PERIOD_US - 2_000)..(NARROW_MAX_PERIOD_US + 2_000),
            (NARROW_MAX_PERIOD_US + 2_000)..31 * DAY,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// (1) No half-open window of length `period` holds more than `calls` admissions;
        /// (2) an arrival with fewer than `calls` admissions in `(now − period, now]` is
        /// admitted — exactly, without slack; (4) Retry-After is exact.
        #[test]
        fn exact_sliding_window(
            calls in prop_oneof![1u32..12, 90u32..300],
            period in period_strategy(),
            (quantized, raw) in arrivals(400),
        ) {
            let seq = times(quantized, &raw, calls, period);
            let mut w = Window::new(calls, period);
            let mut admitted: Vec<u64> = Vec::new();
            for &t in &seq {
                let before = w.clone();
                let outcome = w.check(t, calls, period);
                let in_window = admitted.iter().filter(|&&a| a + period > t).count();
                // (2): admitted exactly when fewer than `calls` count.
                prop_assert_eq!(outcome.admitted, in_window < calls as usize, "at {} with {} in window", t, in_window);
                if outcome.admitted {
                    admitted.push(t);
                    // (1): the window ending now (the densest ones end at an admission).
                    prop_assert!(in_window < calls as usize);
                    prop_assert_eq!(outcome.remaining as usize, calls as usize - in_window - 1);
                } else {
                    // (4): at oldest + period the retry passes; one microsecond earlier it does not.
                    let retry = outcome.retry_us.unwrap();
                    prop_assert!(retry > 0);
                    let mut early = before.clone();
                    prop_assert!(!early.check(t + retry - 1, calls, period).admitted);
                    let mut on_time = before;
                    prop_assert!(on_time.check(t + retry, calls, period).admitted);
                }
            }
            // (1) again, over the whole run: any `calls + 1` consecutive admissions span at
            // least one period.
            for pair in admitted.windows(calls as usize + 1) {
                prop_assert!(pair[calls as usize] - pair[0] >= period);
            }
        }

        /// (3) A caller pacing itself exactly `period / calls` apart is never refused.
        #[test]
        fn evenly_paced_caller_is_never_refused(
            calls in 1u32..3_000,
            period in prop_oneof![1_000u64..120 * SEC, (NARROW_MAX_PERIOD_US - 1_000)..31 * DAY],
            phase in 0u64..1_000_000,
        ) {
            let mut w = Window::new(calls, period);
            for i in 0..u64::from(calls) * 3 {
                // Call i at i × period / calls (rounded down): calls i and i + calls are
                // exactly one period apart.
                let t = phase + i * period / u64::from(calls);
                prop_assert!(w.check(t, calls, period).admitted, "call {} at {} refused", i, t);
            }
        }

        /// The fallback for huge budgets never over-admits, admits within 1 %, and its
        /// Retry-After is exact.
        #[test]
        fn bucketed_fallback_bounds(
            calls in 1u32..20,
            period_ms in 100u64..5_000,
            raw in prop::collection::vec(0u64..400_000, 1..300),
        ) {
            let period = period_ms * 1_000;
            let slot = slot_of(period);
            let mut b = Buckets::default();
            let mut admitted: Vec<u64> = Vec::new();
            let mut t = 0;
            for g in raw {
                t += g;
                let before = b.clone();
                let outcome = b.check(t, calls, period);
                if outcome.admitted {
                    admitted.push(t);
                    let in_window = admitted.iter().filter(|&&a| a + period > t).count();
                    prop_assert!(in_window <= calls as usize);
                } else {
                    let recent = admitted.iter().filter(|&&a| a + period + slot > t).count();
                    prop_assert!(recent >= calls as usize);
                    let retry = outcome.retry_us.unwrap();
                    prop_assert!(!before.clone().check(t + retry - 1, calls, period).admitted);
                    prop_assert!(before.clone().check(t + retry, calls, period).admitted);
                }
            }
        }
    }
}
