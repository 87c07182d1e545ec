//! The exact sliding-window algorithm, as a pure function of time (microseconds).
//!
//! # Algorithm
//! Per key, admissions are kept in a short log of *buckets*: admissions whose times fall
//! in the same slot of `period / 100` are merged into one bucket that remembers only its
//! count and the time of its **latest** admission. A bucket counts as long as
//! `latest + period > now`; the key is admitted when the counted total is below `calls`.
//!
//! # Guarantees and error bound
//! * **Never over-admits.** Every admission in a bucket happened at or before the
//!   bucket's latest time, so it is still counted at every instant less than `period`
//!   after it happened: every half-open window `(t − period, t]` holds at most `calls`
//!   admissions.
//! * **Admits within 1 %.** An admission stops counting at most one slot (`period / 100`)
//!   after it left the window. A caller with fewer than `calls` admissions in the last
//!   `period + period/100` is admitted. (No limiter can promise "fewer than `calls` in the
//!   last `period − 1 %` is admitted" together with the hard bound above: `calls`
//!   admissions in the first 1 % of a window must still refuse.)
//! * **Evenly paced callers.** A caller spacing calls `(period + period/100) / calls`
//!   apart is never refused; when calls are at least a slot apart (`calls ≤ 100`) every
//!   bucket holds one admission and spacing `period / calls` exactly is never refused.
//! * **Retry-After is exact:** the time at which enough of the oldest buckets expire for
//!   one admission; at that instant the call is admitted (if nobody else spent the
//!   budget), one microsecond earlier it is not.
//! * **Memory:** at most `100 + 1` buckets of 16 bytes per key, whatever `calls` is.
//!
//! The Redis script in `redis.rs` implements exactly the same rules.

use std::collections::VecDeque;

/// Slots per period: the precision of the limiter (1 %).
pub const SLOTS_PER_PERIOD: u64 = 100;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    latest: u64,
    count: u32,
}

/// One key's admission log.
#[derive(Debug, Default, Clone)]
pub struct Window {
    buckets: VecDeque<Bucket>,
}

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

/// The slot width for a period (at least 1 µs).
pub fn slot_of(period_us: u64) -> u64 {
    (period_us / SLOTS_PER_PERIOD).max(1)
}

impl Window {
    /// Records an admission at `now` if fewer than `calls` count in the window.
    pub fn check(&mut self, now: u64, calls: u32, period_us: u64) -> Outcome {
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

    /// The instant (µs) after which nothing counts any more; `None` when empty.
    pub fn idle_at(&self, period_us: u64) -> Option<u64> {
        self.buckets.back().map(|b| b.latest.saturating_add(period_us))
    }

    /// Buckets held (for memory tests).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn burst_then_refuse_then_exact_retry() {
        let mut w = Window::default();
        let period = 60 * SEC;
        for i in 0..3 {
            let o = w.check(i, 3, period);
            assert!(o.admitted);
            assert_eq!(o.remaining, 2 - u32::try_from(i).unwrap());
        }
        let refused = w.check(10 * SEC, 3, period);
        assert!(!refused.admitted);
        let retry = refused.retry_us.unwrap();
        assert_eq!(retry, 50 * SEC + 2);
        assert!(!w.check(10 * SEC + retry - 1, 3, period).admitted);
        assert!(w.check(10 * SEC + retry, 3, period).admitted);
    }

    #[test]
    fn memory_is_bounded_by_slots() {
        let mut w = Window::default();
        let period = 60 * SEC;
        for i in 0..100_000u64 {
            w.check(i * 1_000, 1_000_000, period);
        }
        assert!(w.bucket_count() <= 101, "{}", w.bucket_count());
    }

    /// Admission times, in µs, of a sequence of arrivals.
    fn run(arrivals: &[u64], calls: u32, period: u64) -> Vec<(u64, Outcome)> {
        let mut w = Window::default();
        arrivals.iter().map(|&t| (t, w.check(t, calls, period))).collect()
    }

    fn arrivals(max_gap: u64, len: usize) -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(0..max_gap, 1..len).prop_map(|gaps| {
            gaps.iter()
                .scan(0u64, |t, g| {
                    *t += g;
                    Some(*t)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn never_over_admits_and_admits_within_one_percent(
            calls in 1u32..20,
            period_ms in 100u64..5_000,
            seq in arrivals(400_000, 300),
        ) {
            let period = period_ms * 1_000;
            let slot = slot_of(period);
            let results = run(&seq, calls, period);
            let admitted: Vec<u64> = results.iter().filter(|r| r.1.admitted).map(|r| r.0).collect();
            for (i, &t) in admitted.iter().enumerate() {
                // Admissions in (t - period, t], this one included.
                let in_window = admitted[..=i].iter().filter(|&&a| a + period > t).count();
                prop_assert!(in_window <= calls as usize, "{} admissions in the window ending {}", in_window, t);
            }
            for (t, outcome) in &results {
                if !outcome.admitted {
                    // Refusal is only allowed when `calls` admissions lie in the last period + 1 %.
                    let recent = admitted.iter().filter(|&&a| a <= *t && a + period + slot > *t).count();
                    prop_assert!(recent >= calls as usize, "refused at {} with {} recent admissions", t, recent);
                }
            }
        }

        #[test]
        fn retry_after_is_exact(
            calls in 1u32..20,
            period_ms in 100u64..5_000,
            seq in arrivals(200_000, 200),
        ) {
            let period = period_ms * 1_000;
            let mut w = Window::default();
            for &t in &seq {
                let outcome = w.check(t, calls, period);
                if let Some(retry) = outcome.retry_us {
                    prop_assert!(retry > 0);
                    let mut early = w.clone();
                    prop_assert!(!early.check(t + retry - 1, calls, period).admitted);
                    let mut on_time = w.clone();
                    prop_assert!(on_time.check(t + retry, calls, period).admitted);
                }
            }
        }

        #[test]
        fn evenly_paced_caller_is_never_refused(
            calls in 1u32..3_000,
            period_ms in 100u64..120_000,
            phase in 0u64..1_000_000,
        ) {
            let period = period_ms * 1_000;
            // Spacing of (period + 1 %) / calls; exactly period / calls when calls fit a slot each.
            let spacing = if u64::from(calls) <= SLOTS_PER_PERIOD {
                period.div_ceil(u64::from(calls))
            } else {
                (period + slot_of(period)).div_ceil(u64::from(calls))
            };
            let mut w = Window::default();
            for i in 0..u64::from(calls) * 3 {
                let t = phase + i * spacing;
                prop_assert!(w.check(t, calls, period).admitted, "call {} at {} refused", i, t);
            }
        }
    }
}
