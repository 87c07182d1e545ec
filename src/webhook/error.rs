//! [`DeliveryError`]: why a webhook delivery is refused on the request path, as the
//! request path's step found it. Whose fault each is, and so its status, is decided in
//! the refusal table (`refusal.rs`). Reasons name the scheme, the sender's delivery id
//! and a fixed phrase, never a signature, a secret or a body value.

use super::replay::ReplayError;
use super::verify::Refusal;
use crate::secrets::SecretError;

/// Why a webhook delivery is refused.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The signature or its timestamp does not verify.
    #[error("webhook {scheme}{}: {refusal}", .delivery_id.as_ref().map(|id| format!(" delivery {id}")).unwrap_or_default())]
    Unverified {
        /// The scheme's name.
        scheme: &'static str,
        /// The delivery id the sender's header names, if any.
        delivery_id: Option<String>,
        /// What the scheme found.
        refusal: Refusal,
    },
    /// A signing secret could not be resolved, and none of the others verified: it may be
    /// the one the delivery is signed with.
    #[error("{0}")]
    SecretUnavailable(SecretError),
    /// The verified delivery lacks the key the replay guard recognises it by.
    #[error("webhook {scheme}: {problem}")]
    NoReplayKey {
        /// The scheme's name.
        scheme: &'static str,
        /// A fixed phrase.
        problem: &'static str,
    },
    /// The delivery was already forwarded within its replay window.
    #[error("webhook {scheme} delivery {}: already forwarded", .delivery_id.as_deref().unwrap_or("-"))]
    Replayed {
        /// The scheme's name.
        scheme: &'static str,
        /// The delivery id the sender's header names, if any.
        delivery_id: Option<String>,
    },
    /// The replay guard cannot judge.
    #[error(transparent)]
    ReplayGuard(#[from] ReplayError),
}

impl DeliveryError {
    /// The `reason` label of `flowgate_webhook_refusals_total`, or `None` for a refusal
    /// that is not counted there.
    pub fn counted_as(&self) -> Option<&'static str> {
        match self {
            Self::Unverified { refusal, .. } => Some(refusal.kind()),
            Self::SecretUnavailable(_) => Some("secret_unavailable"),
            Self::NoReplayKey { .. } => None,
            Self::Replayed { .. } => Some("replayed"),
            Self::ReplayGuard(_) => Some("replay_guard_unavailable"),
        }
    }
}
