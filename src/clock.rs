//! Time, injectable: the one [`Clock`] every part of flowgate that reads the time takes, so
//! tests move it by hand ([`ManualClock`]) and nothing reads the system clock behind their
//! back (`clippy.toml` bans `SystemTime::now` outside this file).
//!
//! Two readings, because they answer different questions: [`Clock::now`] is monotonic, for
//! intervals flowgate measures itself (rate-limit windows, the shield); [`Clock::unix_time`]
//! is the wall clock, for comparing with times others wrote (a token's `exp`, a signed
//! URL's expiry, a run record's timestamp). A manual clock gives the same value for both.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync + Debug {
    /// Monotonic time since the clock's origin (an arbitrary, fixed instant).
    fn now(&self) -> Duration;

    /// Wall-clock time since the Unix epoch.
    fn unix_time(&self) -> Duration;

    /// [`Clock::unix_time`] in whole milliseconds.
    fn unix_millis(&self) -> u64 {
        u64::try_from(self.unix_time().as_millis()).unwrap_or(u64::MAX)
    }

    /// [`Clock::unix_time`] as a `SystemTime`.
    fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + self.unix_time()
    }
}

/// The real clocks: `Instant` since the clock was made, and `SystemTime`.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    #[expect(clippy::disallowed_methods, reason = "the clock abstraction itself")]
    fn unix_time(&self) -> Duration {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
    }
}

/// A clock that only moves when told to (tests, simulations). Both readings are the
/// same value: time since its origin, which [`ManualClock::starting_at`] may set to a
/// Unix time.
#[derive(Debug, Default)]
pub struct ManualClock {
    micros: AtomicU64,
}

impl ManualClock {
    /// A clock reading `since_epoch` (for code comparing with Unix times).
    pub fn starting_at(since_epoch: Duration) -> Self {
        let clock = Self::default();
        clock.set(since_epoch);
        clock
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.micros.fetch_add(u64::try_from(by.as_micros()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Sets the time since the origin.
    pub fn set(&self, to: Duration) {
        self.micros.store(u64::try_from(to.as_micros()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::SeqCst))
    }

    fn unix_time(&self) -> Duration {
        self.now()
    }
}
