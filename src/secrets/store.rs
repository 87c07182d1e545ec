//! [`SecretStore`]: the cache in front of the vaults. It lives in the `Gateway` and survives
//! policy reloads; entries are keyed by reference *and* the vault's config fingerprint, so an
//! unchanged vault keeps its values across a reload and a changed one refetches.
//!
//! Semantics: a value is used for `ttl`; within `refresh_ahead` of the end one background
//! task refetches it (callers keep getting the cached value, so none waits in steady
//! state); concurrent misses share one backend call (single flight); when the backend fails
//! the last value is served until `ttl + max_stale`, then the error is returned (fail closed).
//!
//! The store's settings live here too: `[secrets]` ([`RawSecretCache`] → [`CacheSettings`])
//! and [`Vaults`], a policy's vaults together with the settings the store applies to them
//! ([`compile_vaults`] assembles it from the dispatcher's per-vault compile). Keeping the
//! settings out of `vault.rs` leaves the dispatcher free of cache concerns, so the only arrow
//! between the two is store → vault.

use super::backend::RawVault;
use super::error::SecretError;
use super::reference::SecretRef;
use super::value::SecretValue;
use super::vault::{self, Vault};
use crate::config::{Diagnostics, HumanDuration, KeyPath, SourceFile};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// `[secrets]`: cache tuning.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecretCache {
    /// How long a fetched value is used. Default `"60s"`: a rotated secret is in use within it.
    pub ttl: Option<HumanDuration>,
    /// Refresh in the background this long before the TTL ends. Default a quarter of `ttl`.
    pub refresh_ahead: Option<HumanDuration>,
    /// When the vault fails, keep serving the last value this long past its TTL; after that
    /// the call fails closed (503). Default `"5m"`.
    pub max_stale: Option<HumanDuration>,
    /// Time allowed for one vault fetch (login included). Default `"5s"`.
    pub fetch_timeout: Option<HumanDuration>,
}

/// Compiled `[secrets]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a fetched value is used.
    pub ttl: Duration,
    /// Background refresh starts this long before `ttl` ends.
    pub refresh_ahead: Duration,
    /// How long past `ttl` a value is still served while the vault fails.
    pub max_stale: Duration,
    /// Time allowed for one backend fetch.
    pub fetch_timeout: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            refresh_ahead: Duration::from_secs(15),
            max_stale: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Compiles `[secrets]`, reporting inconsistent durations.
pub fn compile_cache(raw: &RawSecretCache, path: &KeyPath, diags: &mut Diagnostics) -> CacheSettings {
    let d = CacheSettings::default();
    let ttl = raw.ttl.map_or(d.ttl, |t| t.0);
    if ttl.is_zero() {
        diags.error_with_hint(&path.key("ttl"), "ttl must be positive", "for example \"60s\"");
    }
    let refresh_ahead = raw.refresh_ahead.map_or(ttl / 4, |t| t.0);
    if raw.refresh_ahead.is_some() && refresh_ahead >= ttl && !ttl.is_zero() {
        diags.error_with_hint(
            &path.key("refresh_ahead"),
            "refresh_ahead must be shorter than ttl",
            "for example a quarter of ttl",
        );
    }
    let fetch_timeout = raw.fetch_timeout.map_or(d.fetch_timeout, |t| t.0);
    if fetch_timeout.is_zero() {
        diags.error(&path.key("fetch_timeout"), "fetch_timeout must be positive");
    }
    CacheSettings { ttl, refresh_ahead, max_stale: raw.max_stale.map_or(d.max_stale, |t| t.0), fetch_timeout }
}

/// All vaults of a policy, by name, plus the cache settings that apply to them.
#[derive(Debug, Default)]
pub struct Vaults {
    vaults: BTreeMap<String, Arc<Vault>>,
    cache: CacheSettings,
}

impl Vaults {
    /// The vault of that name.
    pub fn get(&self, name: &str) -> Option<&Arc<Vault>> {
        self.vaults.get(name)
    }

    /// Vault names, sorted.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.vaults.keys().map(String::as_str)
    }

    /// Sets the cache settings (from [`compile_cache`]).
    #[must_use]
    pub fn with_cache(mut self, cache: CacheSettings) -> Self {
        self.cache = cache;
        self
    }

    /// The cache settings.
    pub fn cache(&self) -> &CacheSettings {
        &self.cache
    }

    /// Compile-time check of a reference against the configured vaults: the vault exists
    /// and the version suits its kind. Returns `(message, hint)` on failure.
    pub(crate) fn check_ref(&self, reference: &SecretRef) -> Result<(), (String, String)> {
        let Some(vault) = self.vaults.get(&reference.vault) else {
            let known: Vec<&str> = self.names().collect();
            return Err((
                format!("{reference}: no [vault.{}] is configured", reference.vault),
                format!("configured vaults: {}", if known.is_empty() { "none".into() } else { known.join(", ") }),
            ));
        };
        vault.check_ref(reference)
    }

    /// A set of vaults built directly, for tests and benches (feature `test-util`).
    #[cfg(any(test, feature = "test-util"))]
    #[doc(hidden)]
    pub fn from_parts(vaults: Vec<Vault>, cache: CacheSettings) -> Self {
        Self { vaults: vaults.into_iter().map(|v| (v.name().to_owned(), Arc::new(v))).collect(), cache }
    }
}

/// Compiles `[vault.*]`: builds every backend client, checks credentials are indirections
/// and the `file` vault's permissions, and reports every problem with its key path.
pub fn compile_vaults(
    raw: &BTreeMap<String, RawVault>,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> Vaults {
    let vaults = raw
        .iter()
        .filter_map(|(name, rv)| {
            let vault = vault::compile(name, rv, &path.key(name), source, diags)?;
            Some((name.clone(), Arc::new(vault)))
        })
        .collect();
    Vaults { vaults, cache: CacheSettings::default() }
}

/// What the cache holds for one reference ([`SecretStore::state`]); never a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// Nothing fetched yet (or dropped by a reload that changed the vault).
    Empty,
    /// A value is cached.
    Cached {
        /// Time since it was fetched.
        age: Duration,
        /// Whether it is used, served only while the vault fails, or unusable.
        phase: CachePhase,
        /// A background refresh is running.
        refreshing: bool,
        /// The kind of the last fetch's failure, if it failed.
        failing: Option<&'static str>,
    },
    /// The last fetch failed and nothing is cached.
    Failed {
        /// The failure's kind ([`SecretError::kind`]).
        kind: &'static str,
    },
}

/// Where a cached value stands against `ttl` and `max_stale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePhase {
    /// Younger than `ttl`: used.
    Fresh,
    /// Past `ttl`, within `ttl + max_stale`: served only while the vault fails.
    Stale,
    /// Past `ttl + max_stale`: never served again.
    Expired,
}

/// Entries by reference, then by the vault's config fingerprint: a call finds its entry by
/// borrowed keys, without building a key string. foldhash: both keys come from the policy.
type Entries = foldhash::HashMap<SecretRef, foldhash::HashMap<String, Arc<Entry>>>;

#[derive(Default)]
struct State {
    /// The last good value and when it was fetched.
    value: Option<(SecretValue, Instant)>,
    /// A background refresh is running.
    refreshing: bool,
    /// After a failed background refresh, do not start another before this.
    next_refresh: Option<Instant>,
    /// Why the last fetch failed (cleared by a success).
    failure: Option<SecretError>,
    /// Completed fetches: a waiter that sees it change shares that fetch's outcome.
    generation: u64,
}

#[derive(Default)]
struct Entry {
    state: Mutex<State>,
    /// Held while a fetch runs: concurrent misses wait here and reuse its result.
    flight: tokio::sync::Mutex<()>,
    /// `flowgate_secret_cache_hits_total` and `flowgate_secret_age_seconds{vault}`,
    /// resolved on the first hit rather than on every call.
    hit_metrics: std::sync::OnceLock<(metrics::Counter, metrics::Histogram)>,
}

impl Entry {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The secret cache (see the module docs). Cheap to clone; clones share the cache.
#[derive(Clone, Default)]
pub struct SecretStore {
    entries: Arc<Mutex<Entries>>,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore").field("entries", &self.len()).finish()
    }
}

/// Delay before retrying a failed background refresh.
const REFRESH_RETRY: Duration = Duration::from_secs(1);

impl SecretStore {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cached entries (for `/readyz` and tests).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).values().map(std::collections::HashMap::len).sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// After a reload: drops entries of vaults that no longer exist or whose configuration
    /// changed (their values are zeroized when the last user drops them).
    pub fn retain_vaults(&self, vaults: &Vaults) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).retain(|reference, by_fingerprint| {
            let current = vaults.get(&reference.vault).map(|v| v.fingerprint());
            by_fingerprint.retain(|fingerprint, _| current == Some(fingerprint.as_str()));
            !by_fingerprint.is_empty()
        });
    }

    /// What the cache holds for `reference`, never its value: for the admin console's
    /// secrets page. Creates no entry and contacts no vault.
    pub fn state(&self, reference: &SecretRef, vaults: &Vaults) -> CacheState {
        let Some(vault) = vaults.get(&reference.vault) else { return CacheState::Empty };
        let found = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(reference)
            .and_then(|by_fingerprint| by_fingerprint.get(vault.fingerprint()))
            .cloned();
        let Some(entry) = found else {
            return CacheState::Empty;
        };
        let state = entry.state();
        let failing = state.failure.as_ref().map(SecretError::kind);
        match &state.value {
            Some((_, fetched)) => {
                let age = Instant::now().saturating_duration_since(*fetched);
                let settings = vaults.cache();
                let phase = if age < settings.ttl {
                    CachePhase::Fresh
                } else if age < settings.ttl + settings.max_stale {
                    CachePhase::Stale
                } else {
                    CachePhase::Expired
                };
                CacheState::Cached { age, phase, refreshing: state.refreshing, failing }
            }
            None => failing.map_or(CacheState::Empty, |kind| CacheState::Failed { kind }),
        }
    }

    fn entry(&self, reference: &SecretRef, fingerprint: &str) -> Arc<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get(reference).and_then(|by_fingerprint| by_fingerprint.get(fingerprint)) {
            return Arc::clone(entry);
        }
        let by_fingerprint = entries.entry(reference.clone()).or_default();
        Arc::clone(by_fingerprint.entry(fingerprint.to_owned()).or_default())
    }

    /// The value of `reference`, from the cache when fresh. Injection goes through
    /// [`super::Injection::render`] (which requires a permit); this is the layer below, also
    /// used by `flowgate secrets --check`-style tooling and tests.
    ///
    /// # Errors
    /// [`SecretError`] when the vault is unknown, or the fetch failed and no value within
    /// `ttl + max_stale` is cached.
    pub async fn lookup(&self, reference: &SecretRef, vaults: &Vaults) -> Result<SecretValue, SecretError> {
        let vault = vaults
            .get(&reference.vault)
            .ok_or_else(|| SecretError::UnknownVault { reference: reference.to_string() })?;
        let settings = vaults.cache();
        let entry = self.entry(reference, vault.fingerprint());
        let started = Instant::now();
        let seen;
        {
            let mut state = entry.state();
            seen = state.generation;
            if let Some((value, fetched)) = &state.value {
                let age = started.saturating_duration_since(*fetched);
                if age < settings.ttl {
                    let value = value.clone();
                    let (hits, ages) = entry.hit_metrics.get_or_init(|| {
                        let ages =
                            metrics::histogram!("flowgate_secret_age_seconds", "vault" => vault.name().to_owned());
                        (metrics::counter!("flowgate_secret_cache_hits_total"), ages)
                    });
                    hits.increment(1);
                    ages.record(age.as_secs_f64());
                    let due = age >= settings.ttl.saturating_sub(settings.refresh_ahead)
                        && !state.refreshing
                        && state.next_refresh.is_none_or(|t| started >= t);
                    if due && let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        state.refreshing = true;
                        runtime.spawn(refresh(entry.clone(), vault.clone(), reference.clone(), settings.fetch_timeout));
                    }
                    return Ok(value);
                }
            }
        }
        metrics::counter!("flowgate_secret_cache_misses_total").increment(1);
        // Boxed: the fetch's state (a vault's HTTP exchange) is large and rare; inline, every
        // call's future would carry and move it.
        Box::pin(Self::fetch_into(entry, vault, reference, settings, seen)).await
    }

    /// A miss: one fetch per entry at a time; waiters share its outcome.
    async fn fetch_into(
        entry: Arc<Entry>,
        vault: &Vault,
        reference: &SecretRef,
        settings: &CacheSettings,
        seen: u64,
    ) -> Result<SecretValue, SecretError> {
        let _flight = entry.flight.lock().await;
        {
            let state = entry.state();
            if let Some((value, fetched)) = &state.value
                && Instant::now().saturating_duration_since(*fetched) < settings.ttl
            {
                return Ok(value.clone());
            }
            if let Some(error) = &state.failure
                && state.generation != seen
            {
                // Another caller's fetch failed while we waited: share its outcome.
                return stale_or(&state, error.clone(), settings.ttl + settings.max_stale, reference);
            }
        }
        let result = fetch(vault, reference, settings.fetch_timeout).await;
        let mut state = entry.state();
        state.generation += 1;
        match result {
            Ok(value) => {
                state.value = Some((value.clone(), Instant::now()));
                state.failure = None;
                Ok(value)
            }
            Err(error) => {
                state.failure = Some(error.clone());
                stale_or(&state, error, settings.ttl + settings.max_stale, reference)
            }
        }
    }
}

async fn fetch(vault: &Vault, reference: &SecretRef, timeout: Duration) -> Result<SecretValue, SecretError> {
    tokio::time::timeout(timeout, vault.fetch(reference))
        .await
        .unwrap_or_else(|_| Err(SecretError::Timeout { reference: reference.to_string() }))
}

/// The cached value while it is younger than `limit`, else the error.
fn stale_or(
    state: &State,
    error: SecretError,
    limit: Duration,
    reference: &SecretRef,
) -> Result<SecretValue, SecretError> {
    match &state.value {
        Some((value, fetched)) if Instant::now().saturating_duration_since(*fetched) < limit => {
            tracing::warn!(reference = %reference, error = %error, "vault failing; serving the cached value");
            metrics::counter!("flowgate_secret_stale_served_total").increment(1);
            Ok(value.clone())
        }
        _ => Err(error),
    }
}

async fn refresh(entry: Arc<Entry>, vault: Arc<Vault>, reference: SecretRef, timeout: Duration) {
    let _flight = entry.flight.lock().await;
    let result = fetch(&vault, &reference, timeout).await;
    let mut state = entry.state();
    state.refreshing = false;
    state.generation += 1;
    match result {
        Ok(value) => {
            state.value = Some((value, Instant::now()));
            state.failure = None;
            state.next_refresh = None;
        }
        Err(error) => {
            tracing::debug!(reference = %reference, error = %error, "background refresh failed");
            state.next_refresh = Some(Instant::now() + REFRESH_RETRY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::vault::TestBackend;
    use std::sync::atomic::Ordering;

    fn settings() -> CacheSettings {
        CacheSettings {
            ttl: Duration::from_secs(60),
            refresh_ahead: Duration::from_secs(10),
            max_stale: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }

    fn r() -> SecretRef {
        SecretRef::parse("secret://t/flows/token").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn hundred_concurrent_misses_make_one_backend_call() {
        let (vaults, backend) = TestBackend::vaults("t", settings(), Duration::from_millis(200));
        let store = SecretStore::new();
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (store, vaults) = (store.clone(), vaults.clone());
                tokio::spawn(async move { store.lookup(&r(), &vaults).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().expose_secret(), "v1");
        }
        assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_share_a_failure() {
        let (vaults, backend) = TestBackend::vaults("t", settings(), Duration::from_millis(200));
        backend.fail(true);
        let store = SecretStore::new();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (store, vaults) = (store.clone(), vaults.clone());
                tokio::spawn(async move { store.lookup(&r(), &vaults).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap_err().kind(), "sealed");
        }
        assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_ahead_serves_stale_then_fails_closed_then_recovers() {
        let (vaults, backend) = TestBackend::vaults("t", settings(), Duration::ZERO);
        let store = SecretStore::new();
        assert_eq!(store.lookup(&r(), &vaults).await.unwrap().expose_secret(), "v1");
        backend.set("v2");
        // Still fresh: cached, no call.
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(store.lookup(&r(), &vaults).await.unwrap().expose_secret(), "v1");
        assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
        // Inside refresh_ahead: served from cache while a background refresh runs.
        tokio::time::advance(Duration::from_secs(12)).await;
        assert_eq!(store.lookup(&r(), &vaults).await.unwrap().expose_secret(), "v1");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(backend.calls.load(Ordering::SeqCst), 2);
        assert_eq!(store.lookup(&r(), &vaults).await.unwrap().expose_secret(), "v2");
        // Backend down: stale value served up to ttl + max_stale.
        backend.fail(true);
        tokio::time::advance(Duration::from_secs(70)).await;
        assert_eq!(store.lookup(&r(), &vaults).await.unwrap().expose_secret(), "v2");
        tokio::time::advance(Duration::from_secs(25)).await;
        let err = store.lookup(&r(), &vaults).await.unwrap_err();
        assert_eq!(err.kind(), "sealed");
        assert!(!err.to_string().contains("v2"));
        // Back up: recovers.
        backend.fail(false);
        backend.set("v3");
        assert_eq!(store.lookup(&r(), &vaults).await.unwrap().expose_secret(), "v3");
    }

    #[tokio::test(start_paused = true)]
    async fn state_reports_age_and_phase_without_fetching() {
        let (vaults, backend) = TestBackend::vaults("t", settings(), Duration::ZERO);
        let store = SecretStore::new();
        assert_eq!(store.state(&r(), &vaults), CacheState::Empty);
        assert!(store.is_empty(), "looking created an entry");
        store.lookup(&r(), &vaults).await.unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        let CacheState::Cached { age, phase, failing, .. } = store.state(&r(), &vaults) else { panic!("not cached") };
        assert_eq!((age, phase, failing), (Duration::from_secs(5), CachePhase::Fresh, None));
        backend.fail(true);
        tokio::time::advance(Duration::from_secs(60)).await;
        store.lookup(&r(), &vaults).await.unwrap();
        let CacheState::Cached { phase, failing, .. } = store.state(&r(), &vaults) else { panic!("not cached") };
        assert_eq!((phase, failing), (CachePhase::Stale, Some("sealed")));
        assert_eq!(backend.calls.load(Ordering::SeqCst), 2, "state() fetched");
    }

    #[tokio::test(start_paused = true)]
    async fn reload_keeps_unchanged_vaults_and_drops_changed_ones() {
        let (vaults, _backend) = TestBackend::vaults("t", settings(), Duration::ZERO);
        let store = SecretStore::new();
        store.lookup(&r(), &vaults).await.unwrap();
        store.retain_vaults(&vaults);
        assert_eq!(store.len(), 1);
        store.retain_vaults(&Vaults::default());
        assert!(store.is_empty());
    }

    #[test]
    fn compiles_cache_settings() {
        let mut diags = Diagnostics::default();
        let raw: RawSecretCache = toml::from_str("ttl = \"10s\"\nrefresh_ahead = \"20s\"").unwrap();
        let s = compile_cache(&raw, &KeyPath::root().key("secrets"), &mut diags);
        assert_eq!(s.ttl, Duration::from_secs(10));
        assert_eq!(diags.into_vec()[0].path.to_string(), "secrets.refresh_ahead");
        let mut diags = Diagnostics::default();
        let s = compile_cache(&RawSecretCache::default(), &KeyPath::root(), &mut diags);
        assert!(diags.is_empty());
        assert_eq!(s, CacheSettings::default());
    }
}
