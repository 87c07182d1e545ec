//! The pre-authentication flood shield: a coarse GCRA limiter per client address, checked
//! before any token is verified so that junk tokens cannot burn CPU on signatures.

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;

/// Compiled `[shield]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShieldSettings {
    /// Off: every check passes.
    pub enabled: bool,
    /// Sustained requests per second per client address.
    pub per_second: NonZeroU32,
    /// Requests admitted at once from an idle address.
    pub burst: NonZeroU32,
}

/// A per-address GCRA limiter (governor). Build one per settings value; it keeps its
/// state across policy reloads as long as the lead keeps the value.
#[derive(Debug)]
pub struct Shield {
    settings: ShieldSettings,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl Shield {
    /// A shield with the given settings.
    pub fn new(settings: ShieldSettings) -> Self {
        let quota = Quota::per_second(settings.per_second).allow_burst(settings.burst);
        Self { settings, limiter: RateLimiter::keyed(quota), clock: DefaultClock::default() }
    }

    /// The settings this shield was built with (to tell whether a reload changed them).
    pub fn settings(&self) -> ShieldSettings {
        self.settings
    }

    /// Admits or refuses one request from `ip`.
    ///
    /// # Errors
    /// Whole seconds (at least 1) until the address is admitted again.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if !self.settings.enabled {
            return Ok(());
        }
        match self.limiter.check_key(&crate::firewall::normalize(ip)) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                metrics::counter!("flowgate_shield_refused_total").increment(1);
                let wait = not_until.wait_time_from(self.clock.now());
                Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0 || wait.is_zero()))
            }
        }
    }

    /// Forgets addresses that are back to a full burst; call every few seconds from a
    /// background task so that a flood of addresses does not grow memory forever.
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Addresses currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// True when no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn burst_then_refusal_per_address() {
        let shield = Shield::new(ShieldSettings { enabled: true, per_second: nz(1), burst: nz(3) });
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        for _ in 0..3 {
            assert!(shield.check(a).is_ok());
        }
        let retry = shield.check(a).unwrap_err();
        assert!((1..=2).contains(&retry), "{retry}");
        assert!(shield.check(b).is_ok(), "addresses are independent");
        // The mapped form is the same address.
        assert!(shield.check("::ffff:127.0.0.2".parse().unwrap()).is_err());
        shield.retain_recent();
        assert!(!shield.is_empty());
    }

    #[test]
    fn disabled_shield_admits_everything() {
        let shield = Shield::new(ShieldSettings { enabled: false, per_second: nz(1), burst: nz(1) });
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..10 {
            assert!(shield.check(a).is_ok());
        }
    }
}
