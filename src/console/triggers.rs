//! The triggers page: each trigger's effective rules in words (the summary `/policy`
//! shows under `effective`, by role), its calls counted by the metrics since the process
//! started, and today's calls in the run history.

use super::html::{e, query_value};
use crate::audit::{ALLOWED, RunFilter};
use crate::auth::AdminRole;
use crate::gateway::Gateway;
use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Calls of one trigger as the metrics count them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct MetricCounts {
    /// `flowgate_requests_total`, every status.
    pub calls: u64,
    /// The same by status class: index 0 = 1xx … 4 = 5xx.
    pub by_class: [u64; 5],
    /// `flowgate_ratelimit_refused_total`.
    pub rate_limited: u64,
}

/// The triggers page.
pub(super) fn page(gateway: &Gateway, role: AdminRole) -> String {
    let policy = gateway.policy();
    let counts = metric_counts(&gateway.metrics.render());
    let (today, complete) = today_in_history(gateway);
    let at_least = if complete { "" } else { "at least " };
    let mut out = String::from(
        "<h1>Triggers</h1><p class=\"muted\">Effective rules (defaults included) as <code>flowgate check</code> \
         prints them; parts a trigger lists in <code>private_fields</code> read <code>[private]</code> for viewers. \
         The global <code>[firewall]</code> applies before a trigger's own IP rules.</p>",
    );
    for trigger in policy.routes.triggers() {
        let view = trigger.summary.view(role.can_see_private());
        let text = |key: &str| view.get(key).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        let metrics = counts.get(&trigger.name).cloned().unwrap_or_default();
        let (allowed, refused) = today.get(&trigger.name).copied().unwrap_or_default();
        let _ = write!(
            out,
            "<section class=\"card trigger\" data-trigger=\"{}\"><h2>{}</h2><dl class=\"fields\">",
            e(&trigger.name),
            e(&trigger.name)
        );
        for (label, key) in [
            ("Route", "route"),
            ("Who may call", "who"),
            ("IP rules", "ips"),
            ("Rate limit", "rate_limit"),
            ("Injected secrets", "secrets"),
        ] {
            let _ = write!(out, "<dt>{label}</dt><dd class=\"rule-{key}\">{}</dd>", e(text(key)));
        }
        let classes: Vec<String> = metrics
            .by_class
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| format!("{}xx {n}", i + 1))
            .collect();
        let _ = write!(
            out,
            "<dt>Today (UTC)</dt><dd class=\"today\">{at_least}{allowed} allowed · {refused} refused \
             <span class=\"muted\">(run history)</span></dd>\
             <dt>Since start</dt><dd class=\"metrics\">{} call{}{} · {} rate-limited \
             <span class=\"muted\">(metrics)</span></dd></dl>",
            metrics.calls,
            if metrics.calls == 1 { "" } else { "s" },
            if classes.is_empty() { String::new() } else { format!(" ({})", classes.join(", ")) },
            metrics.rate_limited,
        );
        let _ = write!(
            out,
            "<p><a href=\"/ui/runs?trigger={}\">runs of this trigger</a></p></section>",
            e(query_value(&trigger.name))
        );
    }
    out
}

/// Per trigger: (allowed, refused) among today's (UTC) records in the run history, and
/// whether those are all of today's calls: a full ring holding nothing older than midnight
/// may have dropped some.
fn today_in_history(gateway: &Gateway) -> (HashMap<String, (u64, u64)>, bool) {
    let now = gateway.clock.unix_time().as_secs();
    let midnight = UNIX_EPOCH + Duration::from_secs(now - now % 86_400);
    let filter = RunFilter { since: Some(midnight), limit: Some(usize::MAX), ..RunFilter::default() };
    let records = gateway.audit.summaries(&filter);
    let before = RunFilter { until: Some(midnight), limit: Some(1), ..RunFilter::default() };
    let complete = records.len() < gateway.policy().audit.ring || !gateway.audit.summaries(&before).is_empty();
    let mut today: HashMap<String, (u64, u64)> = HashMap::new();
    for record in records {
        let Some(trigger) = record.trigger else { continue };
        let entry = today.entry(trigger).or_default();
        if record.decision == ALLOWED {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    (today, complete)
}

/// Per-trigger counts read from the Prometheus text of `/metrics`.
pub(super) fn metric_counts(text: &str) -> HashMap<String, MetricCounts> {
    let mut counts: HashMap<String, MetricCounts> = HashMap::new();
    for line in text.lines() {
        let Some((name, labels, value)) = parse_sample(line) else { continue };
        let label = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let Some(trigger) = label("trigger") else { continue };
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a counter sample: clamped at 0, and whole counts stay far below 2^53"
        )]
        let value = value.max(0.0) as u64;
        match name {
            "flowgate_requests_total" => {
                let entry = counts.entry(trigger.to_owned()).or_default();
                entry.calls += value;
                let class = label("status").and_then(|s| s.chars().next()).and_then(|c| c.to_digit(10));
                if let Some(class @ 1..=5) = class {
                    entry.by_class[class as usize - 1] += value;
                }
            }
            "flowgate_ratelimit_refused_total" => counts.entry(trigger.to_owned()).or_default().rate_limited += value,
            _ => {}
        }
    }
    counts
}

/// A sample's label pairs, in order.
type Labels = Vec<(String, String)>;

/// One Prometheus sample line: `name{k="v",…} value` (labels optional, values with
/// `\\`, `\"` and `\n` escapes).
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inner.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let consumed = loop {
                let (at, c) = chars.next()?;
                match c {
                    '\\' => {
                        let (_, escaped) = chars.next()?;
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                    '"' => break at + 1,
                    other => value.push(other),
                }
            };
            labels.push((key.to_owned(), value));
            inner = &after[consumed..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_by_trigger_and_status_class() {
        let text = "# TYPE flowgate_requests_total counter\n\
            flowgate_requests_total{trigger=\"inv\",method=\"post\",status=\"200\"} 3\n\
            flowgate_requests_total{trigger=\"inv\",method=\"get\",status=\"429\"} 2\n\
            flowgate_requests_total{trigger=\"we\\\"ird, one\",method=\"post\",status=\"502\"} 1\n\
            flowgate_requests_total{trigger=\"-\",method=\"get\",status=\"404\"} 7\n\
            flowgate_ratelimit_refused_total{trigger=\"inv\"} 2\n\
            flowgate_open_connections 4\n";
        let counts = metric_counts(text);
        let inv = &counts["inv"];
        assert_eq!((inv.calls, inv.by_class, inv.rate_limited), (5, [0, 3, 0, 2, 0], 2));
        assert_eq!(counts["we\"ird, one"].by_class[4], 1);
        assert_eq!(counts["-"].calls, 7);
        assert_eq!(counts.len(), 3);
    }
}
