//! The long lists of a trigger's rules (principals, tenants, roles and scopes) as hash
//! sets, so that judging a caller costs the same with ten entries or ten thousand.
//!
//! Each set is keyed by the form the rule compares, normalised once at compile time: a
//! call only normalises its own claim (borrowed when already in that form) and looks it
//! up. The semantics are those of a scan over the list; `tests` checks that against a
//! naive scan over generated lists and tokens.

use super::token::Claims;
// foldhash: the policy makes these sets; a caller only looks its claims up, which cannot
// lengthen a chain (ARCHITECTURE.md, "Hash maps").
use foldhash::{HashMap, HashSet};
use std::borrow::Cow;

/// `text` lower-cased as `str::to_lowercase` does, without a copy when nothing changes.
fn lower(text: &str) -> Cow<'_, str> {
    if text.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.to_lowercase())
    }
}

/// Principals accepted by `who = "specific_users"`, normalized for matching.
///
/// Each form matches a claim that neither a foreign tenant nor the user can choose:
/// `oid` (assigned by the directory), `sub` together with the `iss` it is unique in, the
/// application id of an app-only token, or of a delegated token for `users_of_app:`. The
/// one name form, `upn:`, matches only the `upn` claim and compiles only where a tenant
/// rule already keeps other tenants out; `email`, `preferred_username` and `unique_name`
/// are never matched (mutable, and not verified: the "nOAuth" pattern).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct PrincipalSet {
    /// Object ids, lower case.
    oids: HashSet<String>,
    /// Subjects by the issuer they are unique in (both as written: case-sensitive).
    subs: HashMap<String, HashSet<String>>,
    /// `upn` names, lower case.
    upns: HashSet<String>,
    /// Applications calling as themselves, lower case.
    apps: HashSet<String>,
    /// Applications whose signed-in users are accepted, lower case.
    app_users: HashSet<String>,
}

impl PrincipalSet {
    /// Adds an `oid:` entry.
    pub(super) fn add_oid(&mut self, oid: &str) {
        self.oids.insert(oid.to_lowercase());
    }

    /// Adds a `sub:` entry bound to its issuer.
    pub(super) fn add_sub(&mut self, iss: &str, sub: &str) {
        self.subs.entry(iss.to_owned()).or_default().insert(sub.to_owned());
    }

    /// Adds a `upn:` entry.
    pub(super) fn add_upn(&mut self, upn: &str) {
        self.upns.insert(upn.to_lowercase());
    }

    /// Adds an `app:` entry.
    pub(super) fn add_app(&mut self, app: &str) {
        self.apps.insert(app.to_lowercase());
    }

    /// Adds a `users_of_app:` entry.
    pub(super) fn add_app_users(&mut self, app: &str) {
        self.app_users.insert(app.to_lowercase());
    }

    /// True when the verified claims name one of the principals.
    pub(super) fn matches(&self, claims: &Claims) -> bool {
        let app = || claims.app_id.as_deref().map(lower);
        claims.oid.as_deref().is_some_and(|oid| self.oids.contains(lower(oid).as_ref()))
            || claims
                .sub
                .as_deref()
                .is_some_and(|sub| self.subs.get(claims.iss.as_str()).is_some_and(|subs| subs.contains(sub)))
            || claims.upn.as_deref().is_some_and(|upn| self.upns.contains(lower(upn).as_ref()))
            || (claims.app_only && app().is_some_and(|app| self.apps.contains(app.as_ref())))
            || (claims.delegated && app().is_some_and(|app| self.app_users.contains(app.as_ref())))
    }
}

/// The tenants a trigger admits (GUIDs, lower case); empty means no tenant rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct TenantSet(HashSet<String>);

impl TenantSet {
    /// The set of `tenants`, each already lower-cased by its compile step.
    pub(super) fn new(tenants: Vec<String>) -> Self {
        Self(tenants.into_iter().map(|t| t.to_ascii_lowercase()).collect())
    }

    /// True when there is no tenant rule.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `tid` is listed (ASCII case ignored, as GUIDs are compared).
    pub(super) fn contains(&self, tid: &str) -> bool {
        let key = if tid.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(tid.to_ascii_lowercase())
        } else {
            Cow::Borrowed(tid)
        };
        self.0.contains(key.as_ref())
    }
}

/// Role or scope names: every one of `all_of`, and one of `any_of` when it is not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NameRule {
    /// Distinct names, so that more of them than the token holds fails without a scan.
    all_of: Vec<String>,
    any_of: HashSet<String>,
}

impl NameRule {
    /// The rule of two lists as written (exact, case-sensitive names).
    pub(super) fn new(any_of: &[String], all_of: &[String]) -> Self {
        let mut distinct = HashSet::default();
        let all_of = all_of.iter().filter(|name| distinct.insert(name.as_str())).cloned().collect();
        Self { all_of, any_of: any_of.iter().cloned().collect() }
    }

    /// True when `held` (the token's names) satisfies the rule. The cost is bounded by the
    /// token: a scan of `held` for each of `all_of`, which cannot be longer than `held` and
    /// still be met, and one lookup per held name for `any_of`.
    pub(super) fn is_met(&self, held: &[String]) -> bool {
        if self.all_of.len() > held.len() {
            return false;
        }
        self.all_of.iter().all(|want| held.contains(want))
            && (self.any_of.is_empty() || held.iter().any(|name| self.any_of.contains(name)))
    }
}

#[cfg(test)]
mod tests;
