//! Exact sliding-window rate limiting (local and shared through Redis) and the
//! pre-authentication flood shield.
//!
//! (Skeleton: the rate-limit work fills this module in.)

use crate::config::HumanDuration;
use schemars::JsonSchema;
use serde::Deserialize;

/// `rate_limit = { calls = 2000, period = "60s", key = "principal" }`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Calls admitted in any window of `period`.
    pub calls: u32,
    /// The window length.
    pub period: HumanDuration,
}

/// `[shield]`: per-client-address limiter applied before token checks.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShield {
    /// Requests per second per client address.
    pub per_second: Option<u32>,
}

/// `[cluster]`: share budgets between replicas.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `redis://host:port/db`
    pub redis: Option<String>,
}
