//! Signing keys of the identities: fetched from JWKS endpoints (directly, through OIDC
//! discovery, or from a file), parsed once per rotation, refreshed in the background, and
//! kept across policy reloads in [`KeyStores`], which the `Gateway` owns.
//!
//! Rules enforced here: `Cache-Control: max-age` sets the refresh period within the
//! identity's bounds; an unknown `kid` causes at most one refetch per
//! `unknown_kid_refetch_interval`; when the identity provider is down the last good keys serve until
//! they are `max_key_age` old, after which no token can be judged (503, our fault).

use super::caller::Caller;
use super::key_set::{KeySet, VerifyKey};
use super::token::{Claims, TokenError, TokenRules, inspect, verify};
use crate::clock::{Clock, SystemClock};
use jsonwebtoken::jwk::JwkSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Largest JWKS or discovery document read from an identity provider.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Verified tokens remembered at most.
const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// Where an identity's keys come from; equal sources share one store across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeySource {
    /// OIDC discovery document whose `jwks_uri` is fetched.
    Discovery(String),
    /// A JWKS URL.
    JwksUri(String),
    /// A local JWKS file, re-read on each refresh.
    JwksFile(PathBuf),
}

/// A key source plus the transport settings used to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeySourceId {
    /// The source.
    pub source: KeySource,
    /// Extra CA file trusted for the identity provider.
    pub ca_file: Option<PathBuf>,
    /// Plain `http://` allowed (loopback only; checked at compile).
    pub allow_insecure_http: bool,
}

/// Refresh timing of one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefreshPolicy {
    /// Shortest refresh period, whatever `max-age` says.
    pub refresh_min: Duration,
    /// Longest refresh period (also used when no `max-age` is sent).
    pub refresh_max: Duration,
    /// At most one refetch per this interval for unknown `kid`s (and after failures).
    pub unknown_kid_refetch_interval: Duration,
    /// Last good keys serve at most this long after their fetch.
    pub max_key_age: Duration,
}

/// Why keys could not be fetched. Names URLs and files, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Transport failure or non-2xx answer.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The document is not what was expected.
    #[error("invalid document from {source_name}: {reason}")]
    Document {
        /// URL or file.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The JWKS holds no usable signing key.
    #[error("no usable signing key at {0}")]
    NoUsableKeys(String),
    /// The last good keys are older than `max_key_age`, or none were ever fetched.
    #[error("no keys younger than max_key_age for identity {identity}: {reason}")]
    Unavailable {
        /// The identity name.
        identity: String,
        /// Last error or state.
        reason: String,
    },
}

#[derive(Debug, Default)]
struct StoreState {
    keys: Option<Arc<KeySet>>,
    fetched_at_ms: u64,
    last_attempt_ms: Option<u64>,
    last_error: Option<String>,
    next_refresh: Option<Duration>,
}

/// The keys of one [`KeySourceId`], shared by every identity that uses it.
#[derive(Debug)]
pub(crate) struct KeyStore {
    id: KeySourceId,
    label: String,
    policy: RwLock<RefreshPolicy>,
    client: Result<reqwest::Client, ClientError>,
    state: RwLock<StoreState>,
    fetch_lock: tokio::sync::Mutex<()>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Why a key source's HTTP client could not be built; every fetch then fails with it.
#[derive(Debug, thiserror::Error)]
enum ClientError {
    #[error("reading {}: {source}", path.display())]
    ReadCa { path: std::path::PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    ParseCa { path: std::path::PathBuf, source: reqwest::Error },
    #[error(transparent)]
    Build(reqwest::Error),
}

fn build_client(id: &KeySourceId) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .https_only(!id.allow_insecure_http)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("flowgate/", env!("CARGO_PKG_VERSION")));
    if let Some(ca_file) = &id.ca_file {
        let pem = std::fs::read(ca_file).map_err(|source| ClientError::ReadCa { path: ca_file.clone(), source })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|source| ClientError::ParseCa { path: ca_file.clone(), source })?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(ClientError::Build)
}

/// `max-age` from a `Cache-Control` header value.
pub(crate) fn parse_max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|directive| {
        let (name, secs) = directive.trim().split_once('=')?;
        if name.trim().eq_ignore_ascii_case("max-age") {
            secs.trim().trim_matches('"').parse::<u64>().ok().map(Duration::from_secs)
        } else {
            None
        }
    })
}

impl KeyStore {
    fn new(id: KeySourceId, label: String, policy: RefreshPolicy) -> Self {
        let client = build_client(&id);
        Self {
            id,
            label,
            policy: RwLock::new(policy),
            client,
            state: RwLock::new(StoreState::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
            task: Mutex::new(None),
        }
    }

    pub(super) async fn get_document(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), KeyError> {
        let fetch_err = |reason: String| KeyError::Fetch { url: shown_url(url), reason };
        let client = self.client.as_ref().map_err(|e| fetch_err(e.to_string()))?;
        // `without_url`: reqwest's message would repeat the URL, query included.
        let mut response = client.get(url).send().await.map_err(|e| fetch_err(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(fetch_err(format!("status {}", response.status())));
        }
        let max_age =
            response.headers().get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(parse_max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fetch_err(e.without_url().to_string()))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(fetch_err("document too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }

    /// The HTTP client that reaches this identity provider (its CA file trusted), for the
    /// console sign-in's token exchange.
    pub(super) fn client(&self) -> Result<&reqwest::Client, KeyError> {
        self.client.as_ref().map_err(|e| KeyError::Fetch { url: self.label.clone(), reason: e.to_string() })
    }

    pub(super) fn check_url(&self, url: &str) -> Result<(), KeyError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| KeyError::Document { source_name: shown_url(url), reason: e.to_string() })?;
        let loopback = is_loopback_url(&parsed);
        match parsed.scheme() {
            "https" => Ok(()),
            "http" if self.id.allow_insecure_http && loopback => Ok(()),
            _ => Err(KeyError::Document {
                source_name: shown_url(url),
                reason: "jwks_uri must be https (plain http only on loopback with allow_insecure_http)".into(),
            }),
        }
    }

    async fn fetch_jwks(&self) -> Result<(JwkSet, Option<Duration>, String), KeyError> {
        let (bytes, max_age, name) = match &self.id.source {
            KeySource::JwksFile(path) => {
                let name = path.display().to_string();
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| KeyError::Fetch { url: name.clone(), reason: e.to_string() })?;
                (bytes, None, name)
            }
            KeySource::JwksUri(url) => {
                self.check_url(url)?;
                let (bytes, max_age) = self.get_document(url).await?;
                (bytes, max_age, shown_url(url))
            }
            KeySource::Discovery(url) => {
                self.check_url(url)?;
                let (bytes, _) = self.get_document(url).await?;
                let doc: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| KeyError::Document { source_name: shown_url(url), reason: e.to_string() })?;
                let jwks_uri = doc.get("jwks_uri").and_then(|v| v.as_str()).ok_or_else(|| KeyError::Document {
                    source_name: shown_url(url),
                    reason: "no jwks_uri string".into(),
                })?;
                self.check_url(jwks_uri)?;
                let (bytes, max_age) = self.get_document(jwks_uri).await?;
                (bytes, max_age, shown_url(jwks_uri))
            }
        };
        let set: JwkSet = serde_json::from_slice(&bytes)
            .map_err(|e| KeyError::Document { source_name: name.clone(), reason: e.to_string() })?;
        Ok((set, max_age, name))
    }

    /// Fetches now (single flight) and installs the keys on success.
    async fn refresh(&self, clock: &dyn Clock) -> Result<usize, KeyError> {
        let _guard = self.fetch_lock.lock().await;
        let started = clock.unix_millis();
        if let Ok(mut state) = self.state.write() {
            state.last_attempt_ms = Some(started);
        }
        let result = self.fetch_jwks().await;
        let now = clock.unix_millis();
        let mut state = self
            .state
            .write()
            .map_err(|_| KeyError::Unavailable { identity: self.label.clone(), reason: "poisoned".into() })?;
        match result {
            Ok((set, max_age, name)) => {
                let keys = KeySet::from_jwks(&set, state.keys.as_deref());
                if keys.is_empty() {
                    metrics::counter!("flowgate_jwks_fetch_errors_total", "identity" => self.label.clone())
                        .increment(1);
                    let err = KeyError::NoUsableKeys(name);
                    state.last_error = Some(err.to_string());
                    return Err(err);
                }
                let count = keys.len();
                state.keys = Some(Arc::new(keys));
                state.fetched_at_ms = now;
                state.last_error = None;
                let policy = self.policy();
                state.next_refresh =
                    Some(max_age.unwrap_or(policy.refresh_max).clamp(policy.refresh_min, policy.refresh_max));
                metrics::gauge!("flowgate_jwks_key_age_seconds", "identity" => self.label.clone()).set(0.0);
                tracing::debug!(identity = %self.label, keys = count, "signing keys refreshed");
                Ok(count)
            }
            Err(err) => {
                metrics::counter!("flowgate_jwks_fetch_errors_total", "identity" => self.label.clone()).increment(1);
                tracing::warn!(identity = %self.label, error = %err, "signing key fetch failed");
                state.last_error = Some(err.to_string());
                Err(err)
            }
        }
    }

    /// The keys if they are younger than `max_key_age`.
    fn current(&self, now_ms: u64) -> Result<Arc<KeySet>, KeyError> {
        let state = self
            .state
            .read()
            .map_err(|_| KeyError::Unavailable { identity: self.label.clone(), reason: "poisoned".into() })?;
        let unavailable = |reason: String| KeyError::Unavailable { identity: self.label.clone(), reason };
        let keys = state
            .keys
            .clone()
            .ok_or_else(|| unavailable(state.last_error.clone().unwrap_or_else(|| "keys not fetched yet".into())))?;
        let age = Duration::from_millis(now_ms.saturating_sub(state.fetched_at_ms));
        let max_key_age = self.policy().max_key_age;
        if age > max_key_age {
            return Err(unavailable(format!(
                "last good keys are {}s old (max_key_age {}s); last error: {}",
                age.as_secs(),
                max_key_age.as_secs(),
                state.last_error.as_deref().unwrap_or("none")
            )));
        }
        Ok(keys)
    }

    /// Why the last fetch failed, while the key source is failing.
    fn last_error(&self) -> Option<String> {
        self.state.read().ok()?.last_error.clone()
    }

    /// True when a refetch is allowed now (at most one per `unknown_kid_refetch_interval`).
    fn may_refetch(&self, now_ms: u64) -> bool {
        let Ok(state) = self.state.read() else { return false };
        let interval = u64::try_from(self.policy().unknown_kid_refetch_interval.as_millis()).unwrap_or(u64::MAX);
        state.last_attempt_ms.is_none_or(|last| now_ms.saturating_sub(last) >= interval)
    }

    fn key_age_secs(&self, now_ms: u64) -> Option<f64> {
        let state = self.state.read().ok()?;
        state.keys.as_ref()?;
        #[allow(clippy::cast_precision_loss)]
        Some(now_ms.saturating_sub(state.fetched_at_ms) as f64 / 1000.0)
    }

    fn next_delay(&self) -> Duration {
        let policy = self.policy();
        let Ok(state) = self.state.read() else { return policy.refresh_min };
        match (state.last_error.is_some(), state.next_refresh) {
            (false, Some(next)) => next,
            // After a failure retry soon, but never faster than the unknown-kid interval.
            _ => policy.unknown_kid_refetch_interval.min(policy.refresh_max),
        }
    }

    fn policy(&self) -> RefreshPolicy {
        match self.policy.read() {
            Ok(policy) => *policy,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn set_policy(&self, policy: RefreshPolicy) {
        if let Ok(mut current) = self.policy.write() {
            *current = policy;
        }
    }
}

impl Drop for KeyStore {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

/// A verified token: its claims and the caller they name, built once per token rather
/// than once per call (a repeat caller's call copies two pointers).
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub claims: Arc<Claims>,
    pub caller: Arc<Caller>,
}

struct CacheEntry {
    verified: Verified,
    exp: u64,
    key: Arc<VerifyKey>,
    store: std::sync::Weak<KeyStore>,
    /// The identity fingerprint and the token this entry was verified for: a hit needs
    /// both byte for byte, whatever the tag.
    fingerprint: [u8; 32],
    token: Box<str>,
}

impl std::fmt::Debug for CacheEntry {
    // A cached token is a live credential: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheEntry")
            .field("exp", &self.exp)
            .field("token_bytes", &self.token.len())
            .finish_non_exhaustive()
    }
}

/// Verified tokens by a tag (foldhash, seeded per process) of the identity fingerprint and
/// the token's signature. The tag only finds the entry: a hit requires the fingerprint and
/// the whole token to be equal byte for byte, so a tag collision is a miss, never another
/// caller's claims. foldhash, though a caller sends the token: only tokens the identity
/// provider signed are ever inserted, and a caller cannot choose a signature's bytes to
/// pile entries into one bucket; an unverified token is only looked up, which adds
/// nothing. An entry is used only before its `exp` and while the key that verified it is
/// still in its store's key set. (A SHA-256 of the whole token cost more than the rest of
/// a cached call's checks together.)
#[derive(Debug)]
struct TokenCache {
    entries: Mutex<CachedTokens>,
    capacity: usize,
    tagger: foldhash::fast::RandomState,
}

/// The cache's entries and the token bytes they hold.
#[derive(Debug, Default)]
struct CachedTokens {
    /// The tags are hashes already: foldhash spreads them at a fraction of `SipHash`.
    by_tag: foldhash::HashMap<u64, CacheEntry>,
    token_bytes: usize,
}

/// Token bytes the cache holds at most (tokens are at most a request head long).
const MAX_CACHED_TOKEN_BYTES: usize = 16 * 1024 * 1024;

/// The token's last bytes that make its cache tag (`TokenCache::tag`).
const TAG_BYTES: usize = 64;

impl TokenCache {
    fn new(capacity: usize) -> Self {
        Self { entries: Mutex::new(CachedTokens::default()), capacity, tagger: foldhash::fast::RandomState::default() }
    }

    /// The tag of a token under an identity: the token's last bytes, which are its
    /// signature's (the last segment) and tell one genuine token from another. A tag only
    /// finds the entry; `get` compares the whole token, and only a verified token is ever
    /// inserted, so a token made to share a tag neither passes nor evicts anything. 64
    /// bytes (384 bits of a signature) are plenty to tell tokens apart, and hashing them
    /// costs a fraction of hashing a 342-byte RS256 signature found by a backward scan.
    fn tag(&self, fingerprint: &[u8; 32], token: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        let tail = &token[token.len().saturating_sub(TAG_BYTES)..];
        self.tagger.hash_one((fingerprint, tail))
    }

    fn get(&self, tag: u64, fingerprint: &[u8; 32], token: &[u8], now_s: u64, keys: &KeySet) -> Option<Verified> {
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.by_tag.get(&tag)?;
        // No early exit on the token: how long a wrong one takes must not tell how much of a
        // cached credential it matched.
        let same_token = super::same_bytes(entry.token.as_bytes(), token);
        if entry.fingerprint != *fingerprint || !same_token {
            return None;
        }
        if entry.exp > now_s && keys.contains(&entry.key) && entry.store.strong_count() > 0 {
            return Some(entry.verified.clone());
        }
        if let Some(gone) = entries.by_tag.remove(&tag) {
            entries.token_bytes -= gone.token.len();
        }
        None
    }

    fn insert(&self, tag: u64, entry: CacheEntry, now_s: u64) {
        let Ok(mut entries) = self.entries.lock() else { return };
        let full = |e: &CachedTokens| {
            e.by_tag.len() >= self.capacity || e.token_bytes + entry.token.len() > MAX_CACHED_TOKEN_BYTES
        };
        if full(&entries) {
            entries.by_tag.retain(|_, e| e.exp > now_s && e.store.strong_count() > 0);
            entries.token_bytes = entries.by_tag.values().map(|e| e.token.len()).sum();
            if full(&entries) {
                // Still full of live entries: start over rather than grow without bound.
                entries.by_tag.clear();
                entries.token_bytes = 0;
            }
        }
        entries.token_bytes += entry.token.len();
        if let Some(replaced) = entries.by_tag.insert(tag, entry) {
            entries.token_bytes -= replaced.token.len();
        }
    }

    fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.by_tag.len())
    }
}

/// What [`KeyStores::verify_token`] needs to know about an identity.
#[derive(Debug, Clone)]
pub(crate) struct VerifySpec<'a> {
    /// Identity name (metrics, errors).
    pub name: &'a str,
    /// Where its keys come from.
    pub source: &'a KeySourceId,
    /// Timing of its store.
    pub refresh: RefreshPolicy,
    /// Header and claim checks.
    pub rules: &'a TokenRules,
    /// Hash of everything that changes what "valid" means for this identity.
    pub fingerprint: &'a [u8; 32],
    /// Where the identity's store was found the first time.
    pub hint: &'a StoreHint,
}

/// An identity's key store as first found, and in which [`KeyStores`]: a cached call finds
/// it without hashing and comparing the key source (URLs, file paths) in the stores' map.
/// Compiled with the identity, so a reload starts it afresh. A store the map let go (its
/// source left the policy) serves an older policy's calls only while one of them holds it;
/// after that the map finds, or makes, the store again, as it did before hints.
#[derive(Debug, Default)]
pub(crate) struct StoreHint(OnceLock<(u64, Weak<KeyStore>)>);

/// Why a token could not be verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VerifyError {
    /// The token is invalid (401).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No usable keys (503).
    #[error(transparent)]
    Keys(#[from] KeyError),
}

/// Every identity's key store plus the verified-token cache. Lives in the `Gateway` and
/// survives policy reloads: a store is keyed by its [`KeySourceId`], so an identity whose
/// key source did not change keeps its keys.
#[derive(Debug)]
pub struct KeyStores {
    /// foldhash: key sources come from the policy, never from a caller.
    stores: RwLock<foldhash::HashMap<KeySourceId, Arc<KeyStore>>>,
    cache: TokenCache,
    clock: Arc<dyn Clock>,
    /// Tells these stores from others (tests run several) in a [`StoreHint`].
    id: u64,
}

/// Ids of [`KeyStores`] made in this process.
static NEXT_STORES_ID: AtomicU64 = AtomicU64::new(1);

impl Default for KeyStores {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyStores {
    /// Empty stores on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock::default()))
    }

    /// Empty stores on the given clock (tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            stores: RwLock::default(),
            cache: TokenCache::new(DEFAULT_CACHE_ENTRIES),
            clock,
            id: NEXT_STORES_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The clock in use.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Verified tokens currently cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    pub(crate) fn store(&self, name: &str, id: &KeySourceId, policy: RefreshPolicy) -> Arc<KeyStore> {
        if let Ok(stores) = self.stores.read()
            && let Some(store) = stores.get(id)
        {
            return Arc::clone(store);
        }
        let mut stores = match self.stores.write() {
            Ok(stores) => stores,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(
            stores.entry(id.clone()).or_insert_with(|| Arc::new(KeyStore::new(id.clone(), name.to_owned(), policy))),
        )
    }

    /// Starts (once per store) the background refresh task of each key source; must run
    /// inside a tokio runtime. Call after every policy swap, then [`KeyStores::retain`].
    pub(crate) fn start_store(&self, store: &Arc<KeyStore>, policy: RefreshPolicy) {
        // Timing may change on reload while the key source stays: keep the keys, take the
        // new timing.
        store.set_policy(policy);
        let Ok(mut task) = store.task.lock() else { return };
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(store);
        let clock = Arc::clone(&self.clock);
        *task = Some(tokio::spawn(async move {
            loop {
                let Some(store) = weak.upgrade() else { return };
                let _ = store.refresh(clock.as_ref()).await;
                if let Some(age) = store.key_age_secs(clock.unix_millis()) {
                    metrics::gauge!("flowgate_jwks_key_age_seconds", "identity" => store.label.clone()).set(age);
                }
                let delay = store.next_delay();
                drop(store);
                tokio::time::sleep(delay).await;
            }
        }));
    }

    /// Drops the stores whose source is not in `used` (stopping their refresh tasks).
    pub(crate) fn retain_sources(&self, used: &[KeySourceId]) {
        if let Ok(mut stores) = self.stores.write() {
            stores.retain(|id, _| used.contains(id));
        }
    }

    /// Number of key stores held.
    pub fn store_count(&self) -> usize {
        self.stores.read().map_or(0, |s| s.len())
    }

    /// Fetches the keys of a source now, bypassing the refetch interval.
    ///
    /// # Errors
    /// The fetch failure.
    pub(crate) async fn refresh_source(&self, spec: &VerifySpec<'_>) -> Result<usize, KeyError> {
        let store = self.store(spec.name, spec.source, spec.refresh);
        store.refresh(self.clock.as_ref()).await
    }

    /// The store of `spec`'s identity: by its hint when that names a live store of these
    /// stores, else from the map (which then becomes the hint, if none was set).
    fn hinted_store(&self, spec: &VerifySpec<'_>) -> Arc<KeyStore> {
        if let Some((owner, store)) = spec.hint.0.get()
            && *owner == self.id
            && let Some(store) = store.upgrade()
        {
            return store;
        }
        let store = self.store(spec.name, spec.source, spec.refresh);
        let _ = spec.hint.0.set((self.id, Arc::downgrade(&store)));
        store
    }

    /// A repeat caller's token: these exact bytes passed every check under these exact rules
    /// (the fingerprint covers them) and their key is still served, so the token is not
    /// judged again. Byte checks of the credential's shape need not run on a hit either:
    /// a verified token is base64url and dots, which every such check admits.
    pub(crate) fn cached_token(&self, spec: &VerifySpec<'_>, token: &[u8]) -> Option<Verified> {
        let store = self.hinted_store(spec);
        let now_ms = self.clock.unix_millis();
        let keys = store.current(now_ms).ok()?;
        let tag = self.cache.tag(spec.fingerprint, token);
        self.cache.get(tag, spec.fingerprint, token, now_ms / 1000, &keys)
    }

    /// Verifies a token: cache (as [`KeyStores::cached_token`]), then keys (fetching them if
    /// none yet, and refetching once per interval for an unknown `kid`).
    ///
    /// # Errors
    /// [`VerifyError::Token`] for an invalid token, [`VerifyError::Keys`] when no key is
    /// usable.
    pub(crate) async fn verify_token(&self, spec: &VerifySpec<'_>, token: &[u8]) -> Result<Verified, VerifyError> {
        let store = self.hinted_store(spec);
        let now_ms = self.clock.unix_millis();
        let now_s = now_ms / 1000;
        let tag = self.cache.tag(spec.fingerprint, token);
        let current = store.current(now_ms);
        if let Ok(keys) = &current
            && let Some(verified) = self.cache.get(tag, spec.fingerprint, token, now_s, keys)
        {
            return Ok(verified);
        }
        // Read as text only now: a repeat caller's bytes were compared above, and the
        // request path hands over token68 bytes, ASCII, so this never refuses one of them.
        let token = std::str::from_utf8(token).map_err(|_| TokenError::Malformed)?;
        // Header checks before keys: a token with a refused header never touches the IdP.
        inspect(token, spec.rules)?;
        let keys = if let Ok(keys) = current {
            keys
        } else {
            if store.may_refetch(now_ms) {
                let _ = store.refresh(self.clock.as_ref()).await;
            } else {
                // A fetch may be in flight (first start, or a background refresh):
                // wait for it rather than fail while it is about to succeed.
                drop(store.fetch_lock.lock().await);
            }
            store.current(self.clock.unix_millis())?
        };
        let (claims, key, keys) = match verify(token, spec.rules, &keys, now_s) {
            Ok((claims, key)) => (claims, key, keys),
            Err(TokenError::UnknownKid) => {
                if store.may_refetch(now_ms) {
                    let _ = store.refresh(self.clock.as_ref()).await;
                } else {
                    // Another call's refetch may be in flight (a rotation reaches many
                    // callers at once): judge against its result rather than refuse now.
                    drop(store.fetch_lock.lock().await);
                }
                let keys = store.current(self.clock.unix_millis())?;
                match verify(token, spec.rules, &keys, now_s) {
                    Ok((claims, key)) => (claims, key, keys),
                    // The key may exist at an IdP we cannot reach: our fault (503), not the
                    // caller's (401).
                    Err(TokenError::UnknownKid) => {
                        return Err(match store.last_error() {
                            Some(reason) => KeyError::Unavailable { identity: store.label.clone(), reason }.into(),
                            None => TokenError::UnknownKid.into(),
                        });
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            Err(err) => return Err(err.into()),
        };
        let _ = keys;
        let caller = Arc::new(Caller::from_claims(&claims));
        let verified = Verified { claims: Arc::new(claims), caller };
        let entry = CacheEntry {
            exp: verified.claims.exp,
            verified: verified.clone(),
            key,
            store: Arc::downgrade(&store),
            fingerprint: *spec.fingerprint,
            token: token.into(),
        };
        self.cache.insert(tag, entry, now_s);
        Ok(verified)
    }
}

/// True when the URL's host is a loopback address or `localhost`.
pub(crate) fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A key URL as errors show it: `scheme://host[:port]/path`, never its query or user info.
pub(super) fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}{}", u.scheme(), u.host_str().unwrap_or(""), u.path())
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_urls_are_shown_without_query_or_user_info() {
        assert_eq!(shown_url("https://u:p@idp.example:8443/keys?code=SECRET"), "https://idp.example:8443/keys");
    }

    #[test]
    fn max_age_parsing() {
        assert_eq!(parse_max_age("public, max-age=3600"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_max_age("no-cache"), None);
        assert_eq!(parse_max_age("MAX-AGE=5, private"), Some(Duration::from_secs(5)));
    }
}
