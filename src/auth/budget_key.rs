//! [`BudgetKey`]: whose budgets a call spends (rate limits, calls in flight), with its
//! keyed hash taken once.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, LazyLock};

/// The process's keyed hash for budget keys (`SipHash` under a random key): callers
/// choose the keys' text, so the tables indexed by them must not let them choose
/// collisions. One key for the process, so a key's hash is taken once and serves every
/// table (the in-flight slots and each rule's local budgets).
static KEY_HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// A key's text with its keyed hash, taken once when the key is made. A caller's budget
/// key is made when its token is verified, and a cached token's calls share it: the
/// tables it indexes hash nothing per call.
#[derive(Clone)]
pub struct BudgetKey {
    text: Arc<str>,
    hash: u64,
}

impl BudgetKey {
    /// The key `text`, hashed now.
    pub fn new(text: impl Into<Arc<str>>) -> Self {
        let text = text.into();
        let hash = KEY_HASHER.hash_one(&*text);
        Self { text, hash }
    }

    /// The key's keyed hash (equal texts, equal hashes).
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

impl PartialEq for BudgetKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for BudgetKey {}

impl Hash for BudgetKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for BudgetKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BudgetKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl std::fmt::Debug for BudgetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.text, f)
    }
}

impl std::fmt::Display for BudgetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<&str> for BudgetKey {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for BudgetKey {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}
