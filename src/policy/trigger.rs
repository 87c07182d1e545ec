//! [`Trigger`]: one guarded trigger as compiled (`compile_trigger` in `policy.rs`).

use super::raw::PathMatch;
use super::summary;
use super::upstream::Upstream;
use crate::ratelimit::{LimitSource, RateLimitRule};
use http::Method;
use std::sync::Arc;
use std::time::Duration;

/// One guarded trigger.
pub struct Trigger {
    /// Its unique name.
    pub name: String,
    /// Its name as a shared metric label value: counting a call allocates no string.
    pub name_label: Arc<str>,
    /// Lower-case host it answers, without port.
    pub host: Option<String>,
    /// Its path, normalised (`policy/path.rs`).
    pub path: String,
    /// Its path's route key: what routing compares (`policy/path.rs`).
    pub route_key: String,
    /// Exact or prefix match.
    pub path_match: PathMatch,
    /// Accepted methods.
    pub methods: Vec<Method>,
    /// Where admitted calls go.
    pub upstream: Upstream,
    /// Largest body accepted.
    pub max_body_bytes: u64,
    /// Upstream response-head timeout.
    pub response_timeout: Duration,
    /// What the run history captures of this trigger's calls.
    pub capture: crate::audit::CaptureRules,
    /// Who may call it.
    pub access: crate::auth::TriggerAccess,
    /// Its own IP rules.
    pub ip_rules: crate::firewall::IpRules,
    /// Principals accepted only from given ranges.
    pub pins: crate::firewall::PrincipalPins,
    /// Its rate limit; `None` only when the policy says `rate_limit = "off"`.
    pub rate_limit: Option<RateLimitRule>,
    /// Where the rate limit (or its absence) comes from.
    pub rate_limit_source: LimitSource,
    /// One line of what the gateway will do for this trigger (`flowgate check`, `/policy`).
    pub summary: summary::TriggerSummary,
    /// Values written into the upstream request.
    pub injection: crate::secrets::Injection,
    /// Header and query names the injection writes: a caller's copies are removed.
    pub injected_names: crate::secrets::NamesToStrip,
    /// Lower-case query names a caller may not send upstream: injected names and the
    /// signed-URL parameters.
    pub reserved_query: std::collections::HashSet<String>,
    /// Replace injected values echoed by the upstream in the response body (headers are
    /// always scrubbed). On by default when the trigger injects.
    pub scrub_responses: bool,
    /// How a `who = "webhook"` trigger verifies its deliveries.
    pub webhook: Option<crate::webhook::WebhookRule>,
    /// What the trigger accepts from a caller (body schema, media types, size, names).
    pub contract: Option<crate::contract::Contract>,
}

impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trigger").field("name", &self.name).field("path", &self.path).finish_non_exhaustive()
    }
}
