//! A rate-limit rule as admins write it (`rate_limit = { calls, period, key }` or `"off"`)
//! and as the limiter keeps it: which caller property keys a budget, and the [`RuleId`]
//! that keeps budgets across a reload while the rule is unchanged.

use crate::config::{Diagnostics, HumanDuration, KeyPath};
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::Duration;

/// `rate_limit = { calls = 2000, period = "60s", key = "principal" }`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Calls admitted in any window of `period` (at least 1).
    pub calls: u32,
    /// The window length (at least 1 s), for example `"60s"`.
    pub period: HumanDuration,
    /// Whose budget a call spends: `"principal"` (default: the caller's tenant plus object
    /// or app id, per trigger), `"ip"` (client address), `"trigger"` (everyone together) or
    /// `"tcp_connection"` (one TCP/TLS connection).
    #[serde(default)]
    pub key: LimitKey,
    /// Record what would be refused (metric `flowgate_ratelimit_shadow_refusals_total`,
    /// audit reason) without refusing it.
    #[serde(default)]
    pub shadow: bool,
}

/// `rate_limit` as written: a rule, or `"off"`.
///
/// Where a policy writes no `rate_limit` at all, every trigger gets the built-in default,
/// `{ calls = 2000, period = "60s", key = "principal" }`, so the safe behaviour needs no
/// configuration; `"off"` turns limiting off explicitly, and `flowgate check` and the
/// admin API's `/policy` say so.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum RawRateLimitSetting {
    /// `"off"`: no rate limit (explicit; shown by `flowgate check` and `/policy`, and a
    /// loosening in `flowgate check --diff`).
    Off(RawOff),
    /// A rule: `{ calls = 2000, period = "60s", key = "principal" }`.
    Rule(RawRateLimit),
}

/// The word `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum RawOff {
    /// No rate limit.
    #[serde(rename = "off")]
    Off,
}

impl<'de> Deserialize<'de> for RawRateLimitSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Setting;
        impl<'de> serde::de::Visitor<'de> for Setting {
            type Value = RawRateLimitSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""off" or a table like { calls = 2000, period = "60s" }"#)
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                if text == "off" {
                    Ok(RawRateLimitSetting::Off(RawOff::Off))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(text), &self))
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawRateLimit::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawRateLimitSetting::Rule)
            }
        }
        deserializer.deserialize_any(Setting)
    }
}

/// Where a trigger's effective rate limit comes from (shown by `flowgate check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// The trigger's own `rate_limit`.
    Trigger,
    /// The policy's top-level `rate_limit`.
    Global,
    /// Neither is written: the built-in default.
    BuiltIn,
}

impl LimitSource {
    /// `trigger`, `global` or `built-in default`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Global => "global",
            Self::BuiltIn => "built-in default",
        }
    }
}

/// What a rate-limit budget belongs to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// The authenticated caller (tenant plus object or app id), per trigger.
    #[default]
    Principal,
    /// The client address.
    Ip,
    /// Every caller of the trigger together.
    Trigger,
    /// One TCP/TLS connection.
    TcpConnection,
}

impl LimitKey {
    /// The key kind as written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Principal => "principal",
            Self::Ip => "ip",
            Self::Trigger => "trigger",
            Self::TcpConnection => "tcp_connection",
        }
    }
}

/// Identifies a rule's budgets: the same for the same (trigger, calls, period, key kind),
/// so limiter state survives a reload that leaves the rule alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(u64);

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A compiled rate limit of one trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitRule {
    /// The trigger's name (the `RateLimit-Policy` name).
    pub name: String,
    /// Calls admitted in any window of `period`.
    pub calls: u32,
    /// The window length.
    pub period: Duration,
    /// Whose budget a call spends.
    pub key: LimitKey,
    /// Record refusals without refusing.
    pub shadow: bool,
    /// Stable identity of the budgets.
    pub id: RuleId,
    /// `name` as a structured-field string, the first item of the `RateLimit` header that
    /// every admitted call carries: written once here rather than on every call.
    sf_name: String,
}

impl RateLimitRule {
    /// Compiles a trigger's (or the global default) `rate_limit` for trigger `trigger`.
    /// `path` is the `rate_limit` key. `None` when invalid (reported in `diags`).
    pub fn compile(raw: &RawRateLimit, trigger: &str, path: &KeyPath, diags: &mut Diagnostics) -> Option<Self> {
        let mark = diags.mark();
        if raw.calls == 0 {
            diags.error_with_hint(&path.key("calls"), "calls must be at least 1", "to refuse every call, use deny_ips");
        }
        if raw.period.0 < Duration::from_secs(1) {
            diags.error_with_hint(&path.key("period"), "period must be at least 1s", "write it like \"60s\"");
        }
        if raw.period.0 > Duration::from_secs(31 * 24 * 3600) {
            diags.error_with_hint(&path.key("period"), "period must be at most 31 days", "write it like \"60s\"");
        }
        diags.ok_since(mark).then(|| Self::new(trigger, raw.calls, raw.period.0, raw.key, raw.shadow))
    }

    /// The rule of a trigger when the policy writes no `rate_limit` anywhere: 2000 calls
    /// per 60 s per principal.
    pub fn builtin_default(trigger: &str) -> Self {
        Self::new(trigger, 2000, Duration::from_secs(60), LimitKey::Principal, false)
    }

    /// A rule built directly (tests, benches, defaults).
    pub fn new(trigger: &str, calls: u32, period: Duration, key: LimitKey, shadow: bool) -> Self {
        let mut hash = Sha256::new();
        hash.update(trigger.as_bytes());
        hash.update([0]);
        hash.update(calls.to_be_bytes());
        hash.update(period.as_nanos().to_be_bytes());
        hash.update(key.as_str().as_bytes());
        let digest = hash.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        let sf_name = sf_string(trigger);
        Self { name: trigger.to_owned(), calls, period, key, shadow, id: RuleId(u64::from_be_bytes(id)), sf_name }
    }

    pub(super) fn period_us(&self) -> u64 {
        u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX)
    }

    /// The `RateLimit-Policy` header value: `"name";q=2000;w=60`.
    pub fn policy_header(&self) -> String {
        format!("{};q={};w={}", self.sf_name, self.calls, self.period.as_secs())
    }

    /// `name` as a structured-field string (`sf_string`).
    pub(super) fn sf_name(&self) -> &str {
        &self.sf_name
    }

    /// Which key of which rule, for the run history: `Principal key of rule NAME`.
    pub fn key_description(&self) -> String {
        format!("{:?} key of rule {}", self.key, self.name)
    }
}

/// An RFC 8941 string item: quoted, with `"` and `\` escaped, non-printable ASCII dropped.
pub(super) fn sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
