//! The pre-authentication flood shield: a GCRA budget of **failed** calls per client
//! address, consulted before any token is verified so that junk cannot burn CPU on
//! signatures.
//!
//! It counts what it exists for: calls refused by authentication or authorization (no
//! credential, a bad token or signed URL, a valid token the trigger's rules refuse). A
//! caller whose credentials pass never spends it, so a load test or a busy NAT address
//! presenting valid tokens is governed by its rate limit alone. Once an address has spent
//! its budget (`burst` failures at once, refilled at `per_second`), every call from it is
//! refused before authentication until the budget refills: from that moment a flood of
//! junk costs a map lookup per call, not a signature check. (Calls already past the
//! check when the budget runs out still finish: the overshoot is bounded by the calls in
//! flight from that address.)

use crate::clock::Clock;
use crate::firewall::ClientIp;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 16;

/// An address that has spent its budget of refused credentials (the refusal table,
/// `refusal.rs`, answers 429 with `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pre-authentication shield")]
pub struct Shielded {
    /// Whole seconds (at least 1) until the address may fail once more.
    pub retry_after_secs: u64,
}

/// Compiled `[shield]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShieldSettings {
    /// Off: every check passes.
    pub enabled: bool,
    /// Failed calls per second per client address, sustained.
    pub per_second: NonZeroU32,
    /// Failed calls admitted at once from an address with a full budget.
    pub burst: NonZeroU32,
}

/// Per-address GCRA state: the theoretical arrival time (µs on the shield's clock) of the
/// next failure. An address is absent when its budget is full.
#[derive(Debug)]
pub struct Shield {
    settings: ShieldSettings,
    shards: Vec<Mutex<HashMap<ClientIp, u64>>>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    /// Time one failure takes to refill (µs).
    emission_us: u64,
    /// `burst × emission`: how far ahead of now the arrival time may run.
    tolerance_us: u64,
}

impl Shield {
    /// A shield with the given settings, on the system clock.
    pub fn new(settings: ShieldSettings) -> Self {
        Self::with_clock(settings, Arc::new(crate::clock::SystemClock::default()))
    }

    /// A shield on the given clock (tests move a manual clock by hand).
    pub fn with_clock(settings: ShieldSettings, clock: Arc<dyn Clock>) -> Self {
        let emission_us = (1_000_000 / u64::from(settings.per_second.get())).max(1);
        Self {
            settings,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            clock,
            emission_us,
            tolerance_us: emission_us.saturating_mul(u64::from(settings.burst.get())),
        }
    }

    /// The settings this shield was built with (to tell whether a reload changed them).
    pub fn settings(&self) -> ShieldSettings {
        self.settings
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.clock.now().as_micros()).unwrap_or(u64::MAX)
    }

    fn shard(&self, ip: ClientIp) -> MutexGuard<'_, HashMap<ClientIp, u64>> {
        let index = usize::try_from(self.hasher.hash_one(ip) % SHARDS as u64).unwrap_or(0);
        self.shards[index].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`Shield::check_client`] for a plain address (normalised here).
    ///
    /// # Errors
    /// [`Shielded`] until the address may fail once more.
    pub fn check(&self, ip: IpAddr) -> Result<(), Shielded> {
        self.check_client(ClientIp::new(ip))
    }

    /// Whether a call from `ip` may go on to authentication: true unless the address has
    /// spent its budget of failed calls. Spends nothing.
    ///
    /// # Errors
    /// [`Shielded`] until the address may fail once more.
    pub fn check_client(&self, ip: ClientIp) -> Result<(), Shielded> {
        if !self.settings.enabled {
            return Ok(());
        }
        let now = self.now_us();
        let Some(&tat) = self.shard(ip).get(&ip) else { return Ok(()) };
        let next = tat.max(now).saturating_add(self.emission_us);
        if next - now <= self.tolerance_us {
            return Ok(());
        }
        metrics::counter!("flowgate_shield_refused_total").increment(1);
        let wait_us = next - now - self.tolerance_us;
        Err(Shielded { retry_after_secs: wait_us.div_ceil(1_000_000).max(1) })
    }

    /// [`Shield::charge_client`] for a plain address (normalised here).
    pub fn charge(&self, ip: IpAddr) {
        self.charge_client(ClientIp::new(ip));
    }

    /// Records one call from `ip` refused by authentication or authorization.
    pub fn charge_client(&self, ip: ClientIp) {
        if !self.settings.enabled {
            return;
        }
        let now = self.now_us();
        let mut shard = self.shard(ip);
        let tat = shard.entry(ip).or_insert(now);
        // Capped at a spent budget: concurrent failures cannot pile up a penalty longer
        // than the time one more failure takes to refill.
        *tat = (*tat).max(now).saturating_add(self.emission_us).min(now.saturating_add(self.tolerance_us));
    }

    /// Forgets addresses whose budget is full again; call every few seconds from a
    /// background task so that a flood of addresses does not grow memory forever.
    pub fn retain_recent(&self) {
        let now = self.now_us();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            shard.retain(|_, tat| *tat > now);
            if shard.capacity() > 4 * shard.len().max(16) {
                shard.shrink_to_fit();
            }
        }
    }

    /// Addresses currently tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or_else(|p| p.into_inner().len(), |g| g.len())).sum()
    }

    /// True when no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::ManualClock;
    use std::time::Duration;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn shield(clock: &Arc<ManualClock>, per_second: u32, burst: u32) -> Shield {
        Shield::with_clock(
            ShieldSettings { enabled: true, per_second: nz(per_second), burst: nz(burst) },
            clock.clone(),
        )
    }

    #[test]
    fn only_failures_spend_the_budget() {
        let clock = Arc::new(ManualClock::default());
        let shield = shield(&clock, 1, 3);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        // Any number of calls that pass authentication: never refused.
        for _ in 0..10_000 {
            assert!(shield.check(a).is_ok());
        }
        assert!(shield.is_empty(), "checking spends nothing");
        for _ in 0..3 {
            assert!(shield.check(a).is_ok());
            shield.charge(a);
        }
        assert_eq!(shield.check(a), Err(Shielded { retry_after_secs: 1 }));
        assert!(shield.check("::1".parse().unwrap()).is_ok(), "addresses are independent");
        assert!(shield.check("::ffff:127.0.0.2".parse().unwrap()).is_err(), "the mapped form is the same address");
        // One failure refills per second.
        clock.advance(Duration::from_secs(1));
        assert!(shield.check(a).is_ok());
        shield.charge(a);
        assert!(shield.check(a).is_err());
        // A burst of concurrent failures does not pile up a longer penalty.
        for _ in 0..100 {
            shield.charge(a);
        }
        clock.advance(Duration::from_secs(1));
        assert!(shield.check(a).is_ok());
        clock.advance(Duration::from_secs(3));
        shield.retain_recent();
        assert!(shield.is_empty());
    }

    #[test]
    fn disabled_shield_admits_everything() {
        let shield = Shield::new(ShieldSettings { enabled: false, per_second: nz(1), burst: nz(1) });
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..10 {
            shield.charge(a);
            assert!(shield.check(a).is_ok());
        }
    }
}
