//! Filters over the in-memory ring, for the admin API's `/runs` and `flowgate runs`.

use super::RunRecord;
use std::time::{Duration, SystemTime};

/// Records returned when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;

/// Records returned at most, whatever `limit` asks (a larger limit is lowered to this).
pub const MAX_LIMIT: usize = 1000;

/// Which runs to return. Every set field must match; results are newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Trigger name, exactly.
    pub trigger: Option<String>,
    /// Decision (`allowed` or a rejection kind), exactly.
    pub decision: Option<String>,
    /// Principal, exactly.
    pub principal: Option<String>,
    /// W3C trace id, exactly (finds a flow run from the caller's trace).
    pub trace_id: Option<String>,
    /// Only runs at or after this time.
    pub since: Option<SystemTime>,
    /// Only runs before this time.
    pub until: Option<SystemTime>,
    /// At most this many records ([`DEFAULT_LIMIT`] when unset, never more than [`MAX_LIMIT`]).
    pub limit: Option<usize>,
}

/// Why a run-history query cannot be read; the message names the key or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A key that filters nothing.
    #[error("unknown filter {0:?} (expected trigger, decision, principal, trace_id, since, until or limit)")]
    UnknownKey(String),
    /// `limit` is not a whole number.
    #[error("limit: {0:?} is not a whole number")]
    Limit(String),
    /// `since`/`until` is neither a time nor an age.
    #[error("{0:?} is neither an RFC 3339 time nor an age such as \"15m\"")]
    Time(String),
}

impl RunFilter {
    /// Parses `trigger=..&decision=..&principal=..&trace_id=..&since=..&until=..&limit=..`.
    /// `since`/`until` take RFC 3339 (`2026-01-02T03:04:05Z`) or an age such as `15m`
    /// (that long before now).
    ///
    /// # Errors
    /// A message naming the unknown key or the unparsable value.
    #[expect(
        clippy::disallowed_methods,
        reason = "the callers' ages count from the real time; `from_query_at` takes a clock's reading"
    )]
    pub fn from_query(query: &str) -> Result<Self, FilterError> {
        Self::from_query_at(query, SystemTime::now())
    }

    /// [`RunFilter::from_query`] with ages measured from `now`.
    ///
    /// # Errors
    /// A message naming the unknown key or the unparsable value.
    pub fn from_query_at(query: &str, now: SystemTime) -> Result<Self, FilterError> {
        let mut filter = Self::default();
        let query = query.strip_prefix('?').unwrap_or(query);
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = value.into_owned();
            match key.as_ref() {
                "trigger" => filter.trigger = Some(value),
                "decision" => filter.decision = Some(value),
                "principal" => filter.principal = Some(value),
                "trace_id" => filter.trace_id = Some(value.to_ascii_lowercase()),
                "since" => filter.since = Some(parse_time(&value, now)?),
                "until" => filter.until = Some(parse_time(&value, now)?),
                "limit" => {
                    filter.limit = Some(value.parse().map_err(|_| FilterError::Limit(value))?);
                }
                other => {
                    return Err(FilterError::UnknownKey(other.to_owned()));
                }
            }
        }
        Ok(filter)
    }

    /// Whether `record` passes every set field (ignores `limit`).
    pub fn matches(&self, record: &RunRecord) -> bool {
        let fields = (
            record.trigger.as_deref(),
            record.decision.as_str(),
            record.principal.as_deref(),
            record.trace_id.as_deref(),
        );
        self.matches_fields(fields, || record.at())
    }

    /// [`RunFilter::matches`] over a record's filtered fields (trigger, decision, principal,
    /// trace id); `at` is asked only when a time bound is set.
    pub fn matches_fields(
        &self,
        (trigger, decision, principal, trace_id): (Option<&str>, &str, Option<&str>, Option<&str>),
        at: impl FnOnce() -> Option<SystemTime>,
    ) -> bool {
        fn same(want: Option<&String>, have: Option<&str>) -> bool {
            want.is_none_or(|w| have == Some(w.as_str()))
        }
        if !same(self.trigger.as_ref(), trigger)
            || !same(self.decision.as_ref(), Some(decision))
            || !same(self.principal.as_ref(), principal)
            || !same(self.trace_id.as_ref(), trace_id)
        {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(at) = at() else { return false };
        self.since.is_none_or(|since| at >= since) && self.until.is_none_or(|until| at < until)
    }

    /// The effective limit: [`DEFAULT_LIMIT`] when unset, at most [`MAX_LIMIT`].
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT)
    }
}

fn parse_time(value: &str, now: SystemTime) -> Result<SystemTime, FilterError> {
    if let Ok(at) = humantime::parse_rfc3339_weak(value) {
        return Ok(at);
    }
    let age: Duration = humantime::parse_duration(value).map_err(|_| FilterError::Time(value.to_owned()))?;
    Ok(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key_and_rejects_unknown() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let filter = RunFilter::from_query_at(
            "?trigger=inv&decision=allowed&principal=oid%3Aabc&since=1h&until=1970-01-01T02:00:00Z&limit=5",
            now,
        )
        .expect("parses");
        assert_eq!(filter.trigger.as_deref(), Some("inv"));
        assert_eq!(filter.principal.as_deref(), Some("oid:abc"));
        assert_eq!(filter.since, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(6_400)));
        assert_eq!(filter.until, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(7_200)));
        assert_eq!(filter.limit(), 5);
        assert_eq!(RunFilter::from_query("limit=100000000").unwrap().limit(), MAX_LIMIT);
        assert!(RunFilter::from_query("tenant=x").unwrap_err().to_string().contains("tenant"));
        assert!(RunFilter::from_query("limit=many").is_err());
        assert!(RunFilter::from_query("since=yesterday").is_err());
    }
}
