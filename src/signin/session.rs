//! [`Sessions`]: the server-side state behind the console's cookies, owned by the
//! `Gateway` so it survives reloads that leave sign-in alone.
//!
//! Two bounded tables under one lock:
//! - sign-ins in progress (`state` → nonce, PKCE verifier, the page to return to, and a
//!   hash of the login cookie that binds them to one browser), each usable once and for
//!   [`PENDING_LIFETIME`]; anyone who reaches `/ui` can start one, so at
//!   [`MAX_PENDING`] the oldest is dropped (counted) rather than refusing everyone;
//! - signed-in sessions, keyed by a hash of the cookie's id (a copy of this table names no
//!   usable cookie), each with its role, display name, CSRF token, and idle and absolute
//!   deadlines; at `max_sessions` live ones a new sign-in is refused (counted), so one
//!   user signing in in a loop cannot sign others out.
//!
//! Every entry belongs to a *generation*, a hash of the admin identity, the admin rules
//! and the sign-in settings: the first call that sees another generation empties both
//! tables, so a reload that changes who may sign in, or how, ends every session.

use super::cookie::OpaqueId;
use crate::auth::AdminRole;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// Sign-ins in progress held at most.
pub const MAX_PENDING: usize = 1024;
/// How long a sign-in may take at the provider.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(600);
/// Longest display name kept per session.
const MAX_WHO_CHARS: usize = 128;

/// What a request may know about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The admin role granted at sign-in.
    pub role: AdminRole,
    /// The signed-in person's display name (display only; never judged).
    pub who: String,
    /// The token every state-changing request of this session must carry.
    pub csrf: String,
}

struct Session {
    view: SessionView,
    created: Instant,
    last_used: Instant,
    idle: Duration,
    absolute: Duration,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_used) < self.idle
            && now.saturating_duration_since(self.created) < self.absolute
    }
}

/// A sign-in in progress, as the callback gets it back.
pub struct Pending {
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: Zeroizing<String>,
    /// The console path to return to.
    pub return_to: String,
    binding: [u8; 32],
    created: Instant,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("return_to", &self.return_to).finish_non_exhaustive()
    }
}

/// What the authorization request needs from a new sign-in.
#[derive(Debug)]
pub struct Begun {
    /// The `state` parameter.
    pub state: String,
    /// The `nonce` parameter.
    pub nonce: String,
    /// The PKCE `code_challenge` (S256 of the verifier).
    pub challenge: String,
    /// The login cookie's id, binding the sign-in to this browser.
    pub login: OpaqueId,
}

/// Why a callback's `state` is not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PendingError {
    /// No such sign-in: never started here, already used, expired, or dropped.
    #[error("unknown, used or expired sign-in state")]
    Unknown,
    /// Started by another browser (the login cookie does not match).
    #[error("the sign-in was started by another browser")]
    OtherBrowser,
}

/// The sign-in and session tables.
#[derive(Default)]
pub struct Sessions {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    generation: Option<[u8; 32]>,
    sessions: HashMap<[u8; 32], Session>,
    pending: HashMap<[u8; 32], Pending>,
    endpoints: Option<(Arc<crate::auth::ProviderEndpoints>, Instant)>,
}

impl State {
    fn sync(&mut self, generation: &[u8; 32]) {
        if self.generation.as_ref() != Some(generation) {
            if !self.sessions.is_empty() {
                tracing::info!(sessions = self.sessions.len(), "console sign-in settings changed: every session ended");
            }
            self.sessions.clear();
            self.pending.clear();
            self.endpoints = None;
            self.generation = Some(*generation);
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn random_text() -> String {
    OpaqueId::random().to_text()
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("sessions", &self.len()).finish_non_exhaustive()
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Signed-in sessions held (live or not yet purged).
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The provider's endpoints, when fetched for this generation within `max_age`.
    pub fn endpoints(&self, generation: &[u8; 32], max_age: Duration) -> Option<Arc<crate::auth::ProviderEndpoints>> {
        let mut state = self.lock();
        state.sync(generation);
        let (endpoints, at) = state.endpoints.as_ref()?;
        (at.elapsed() < max_age).then(|| Arc::clone(endpoints))
    }

    /// Remembers the provider's endpoints for this generation.
    pub fn remember_endpoints(&self, generation: &[u8; 32], endpoints: Arc<crate::auth::ProviderEndpoints>) {
        let mut state = self.lock();
        state.sync(generation);
        state.endpoints = Some((endpoints, Instant::now()));
    }

    /// Starts a sign-in that returns to `return_to`.
    pub fn begin(&self, generation: &[u8; 32], return_to: &str) -> Begun {
        let now = Instant::now();
        let login = OpaqueId::random();
        let state_text = random_text();
        let nonce = random_text();
        let verifier = Zeroizing::new(random_text());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut state = self.lock();
        state.sync(generation);
        if state.pending.len() >= MAX_PENDING {
            state.pending.retain(|_, p| now.saturating_duration_since(p.created) < PENDING_LIFETIME);
        }
        if state.pending.len() >= MAX_PENDING
            && let Some(oldest) = state.pending.iter().min_by_key(|(_, p)| p.created).map(|(k, _)| *k)
        {
            state.pending.remove(&oldest);
            metrics::counter!("flowgate_console_sign_in_dropped_total").increment(1);
        }
        state.pending.insert(
            digest(state_text.as_bytes()),
            Pending {
                nonce: nonce.clone(),
                verifier,
                return_to: return_to.to_owned(),
                binding: digest(&login.0),
                created: now,
            },
        );
        Begun { state: state_text, nonce, challenge, login }
    }

    /// Takes the sign-in named by a callback's `state` (once: a second callback with the
    /// same state finds nothing), if the browser's login cookie started it.
    ///
    /// # Errors
    /// [`PendingError`].
    pub fn take_pending(
        &self,
        generation: &[u8; 32],
        state_text: &str,
        login: Option<&OpaqueId>,
    ) -> Result<Pending, PendingError> {
        let mut state = self.lock();
        state.sync(generation);
        let pending = state.pending.remove(&digest(state_text.as_bytes())).ok_or(PendingError::Unknown)?;
        if Instant::now().saturating_duration_since(pending.created) >= PENDING_LIFETIME {
            return Err(PendingError::Unknown);
        }
        if login.map(|id| digest(&id.0)) != Some(pending.binding) {
            return Err(PendingError::OtherBrowser);
        }
        Ok(pending)
    }

    /// A new session for a person signed in with `role`; `None` when `max_sessions` live
    /// sessions exist (counted).
    pub fn create(
        &self,
        generation: &[u8; 32],
        limits: SessionLimits,
        role: AdminRole,
        who: &str,
    ) -> Option<(OpaqueId, SessionView)> {
        let now = Instant::now();
        let id = OpaqueId::random();
        let who: String = who.chars().filter(|c| !c.is_control()).take(MAX_WHO_CHARS).collect();
        let view = SessionView { role, who, csrf: random_text() };
        let mut state = self.lock();
        state.sync(generation);
        if state.sessions.len() >= limits.max_sessions {
            state.sessions.retain(|_, s| s.live(now));
        }
        if state.sessions.len() >= limits.max_sessions {
            metrics::counter!("flowgate_console_sign_in_refused_total", "reason" => "sessions_full").increment(1);
            return None;
        }
        state.sessions.insert(
            digest(&id.0),
            Session { view: view.clone(), created: now, last_used: now, idle: limits.idle, absolute: limits.absolute },
        );
        Some((id, view))
    }

    /// The live session `id` names, its idle deadline renewed; an expired one is removed.
    pub fn lookup(&self, generation: &[u8; 32], id: &OpaqueId) -> Option<SessionView> {
        self.find(generation, id, true)
    }

    /// [`Sessions::lookup`] without renewing the idle deadline: for requests a page makes on
    /// its own (the runs page's auto-refresh), which are no sign that someone is there.
    pub fn peek(&self, generation: &[u8; 32], id: &OpaqueId) -> Option<SessionView> {
        self.find(generation, id, false)
    }

    fn find(&self, generation: &[u8; 32], id: &OpaqueId, renew: bool) -> Option<SessionView> {
        let now = Instant::now();
        let key = digest(&id.0);
        let mut state = self.lock();
        state.sync(generation);
        let session = state.sessions.get_mut(&key)?;
        if !session.live(now) {
            state.sessions.remove(&key);
            return None;
        }
        if renew {
            session.last_used = now;
        }
        Some(session.view.clone())
    }

    /// Ends the session `id` names (sign-out). True when there was one.
    pub fn end(&self, id: &OpaqueId) -> bool {
        self.lock().sessions.remove(&digest(&id.0)).is_some()
    }
}

/// The bounds a session is created under.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Idle expiry.
    pub idle: Duration,
    /// Absolute expiry.
    pub absolute: Duration,
    /// Sessions at most.
    pub max_sessions: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEN: [u8; 32] = [1; 32];
    const LIMITS: SessionLimits =
        SessionLimits { idle: Duration::from_secs(60), absolute: Duration::from_secs(300), max_sessions: 2 };

    #[tokio::test(start_paused = true)]
    async fn sessions_end_when_idle_or_old_and_when_signed_out() {
        let sessions = Sessions::default();
        let (id, view) = sessions.create(&GEN, LIMITS, AdminRole::Viewer, "alice").unwrap();
        assert_eq!(sessions.lookup(&GEN, &id), Some(view.clone()));
        // Used every 50 s, it outlives the idle timeout but not the absolute one.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(50)).await;
            assert!(sessions.lookup(&GEN, &id).is_some());
        }
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(sessions.lookup(&GEN, &id), None, "past the absolute expiry");
        let (id, _) = sessions.create(&GEN, LIMITS, AdminRole::Viewer, "alice").unwrap();
        // A page refreshing itself is nobody using the session.
        for _ in 0..11 {
            tokio::time::advance(Duration::from_secs(5)).await;
            assert!(sessions.peek(&GEN, &id).is_some());
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(sessions.peek(&GEN, &id), None, "past the idle expiry, however often peeked");
        let (id, _) = sessions.create(&GEN, LIMITS, AdminRole::Viewer, "alice").unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(sessions.lookup(&GEN, &id), None, "past the idle expiry");
        let (id, _) = sessions.create(&GEN, LIMITS, AdminRole::Viewer, "alice").unwrap();
        assert!(sessions.end(&id));
        assert_eq!(sessions.lookup(&GEN, &id), None, "signed out");
    }

    #[tokio::test(start_paused = true)]
    async fn the_session_cap_refuses_while_sessions_live_and_a_new_generation_ends_all() {
        let sessions = Sessions::default();
        let (a, _) = sessions.create(&GEN, LIMITS, AdminRole::Administrator, "a").unwrap();
        let (_b, _) = sessions.create(&GEN, LIMITS, AdminRole::Viewer, "b").unwrap();
        assert!(sessions.create(&GEN, LIMITS, AdminRole::Viewer, "c").is_none());
        assert!(sessions.lookup(&GEN, &a).is_some(), "a refused sign-in signs nobody out");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(sessions.create(&GEN, LIMITS, AdminRole::Viewer, "c").is_some(), "expired ones make room");
        let (d, _) = sessions.create(&GEN, LIMITS, AdminRole::Viewer, "d").unwrap();
        assert_eq!(sessions.lookup(&[2; 32], &d), None);
        assert!(sessions.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sign_in_is_taken_once_by_the_browser_that_started_it() {
        let sessions = Sessions::default();
        let begun = sessions.begin(&GEN, "/ui/runs");
        let verifier_hash = |p: &Pending| URL_SAFE_NO_PAD.encode(Sha256::digest(p.verifier.as_bytes()));
        let other = OpaqueId::random();
        assert_eq!(sessions.take_pending(&GEN, &begun.state, Some(&other)).unwrap_err(), PendingError::OtherBrowser);
        // Used up by the failed attempt: a state is never tried twice.
        assert_eq!(sessions.take_pending(&GEN, &begun.state, Some(&begun.login)).unwrap_err(), PendingError::Unknown);
        let begun = sessions.begin(&GEN, "/ui/runs");
        let pending = sessions.take_pending(&GEN, &begun.state, Some(&begun.login)).unwrap();
        assert_eq!(verifier_hash(&pending), begun.challenge);
        assert_eq!(pending.nonce, begun.nonce);
        assert_eq!(sessions.take_pending(&GEN, &begun.state, Some(&begun.login)).unwrap_err(), PendingError::Unknown);
        let late = sessions.begin(&GEN, "/ui");
        tokio::time::advance(PENDING_LIFETIME).await;
        assert_eq!(sessions.take_pending(&GEN, &late.state, Some(&late.login)).unwrap_err(), PendingError::Unknown);
    }

    #[tokio::test(start_paused = true)]
    async fn sign_ins_in_progress_are_bounded() {
        let sessions = Sessions::default();
        let first = sessions.begin(&GEN, "/ui");
        tokio::time::advance(Duration::from_millis(1)).await;
        let second = sessions.begin(&GEN, "/ui");
        for _ in 0..MAX_PENDING {
            tokio::time::advance(Duration::from_millis(1)).await;
            sessions.begin(&GEN, "/ui");
        }
        assert_eq!(sessions.lock().pending.len(), MAX_PENDING);
        assert!(sessions.take_pending(&GEN, &first.state, Some(&first.login)).is_err(), "the oldest made room");
        let _ = second;
    }
}
