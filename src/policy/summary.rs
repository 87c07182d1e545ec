//! What the gateway will do for each trigger, in one line: who may call, IP rules, the
//! effective rate limit with where it comes from, and the secret references injected.
//! `flowgate check` prints it and the admin API's `/policy` shows it, so an admin sees the
//! effective rules (defaults included) before a reload, not only what the file says.
//!
//! Built once at compile time from the trigger's raw options and its compiled rate limit
//! and injection; never holds a secret value (references only).

use crate::auth::Who;
use crate::policy::RawTrigger;
use crate::ratelimit::{LimitSource, RateLimitRule};
use serde_json::{Value, json};
use std::time::Duration;

/// One trigger's effective rules, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSummary {
    /// The trigger's name.
    pub name: String,
    /// Methods, host and path.
    pub route: String,
    /// Who may call.
    pub who: String,
    /// The trigger's own IP rules and principal pins (the global `[firewall]` applies first).
    pub ips: String,
    /// The effective rate limit and its source, or `off`.
    pub rate_limit: String,
    /// Injected secret references (`none` when there are none).
    pub secrets: String,
    /// The trigger's `private_fields`: parts derived from them are hidden from viewers.
    private_fields: Vec<String>,
}

impl TriggerSummary {
    /// Summarises a trigger from its raw options and compiled parts.
    pub fn new(
        raw: &RawTrigger,
        rate_limit: Option<&RateLimitRule>,
        source: LimitSource,
        injection: &crate::secrets::Injection,
    ) -> Self {
        let methods = raw.methods.iter().map(|m| m.to_ascii_uppercase()).collect::<Vec<_>>().join(",");
        let prefix = if raw.path_match == crate::policy::PathMatch::Prefix { " (and below)" } else { "" };
        let route = format!("{methods} {}{}{prefix}", raw.host.as_deref().unwrap_or(""), raw.path);
        let references: Vec<String> = injection.references().iter().map(ToString::to_string).collect();
        Self {
            name: raw.name.clone(),
            route,
            who: who(raw),
            ips: ips(raw),
            rate_limit: rate_limit_text(rate_limit, source, matches!(raw.who, Who::Anyone)),
            secrets: if references.is_empty() { "none".to_owned() } else { list(&references) },
            private_fields: raw.private_fields.clone(),
        }
    }

    /// A webhook trigger's `who`: its scheme, secret references and replay window.
    #[must_use]
    pub fn with_webhook(mut self, description: Option<String>) -> Self {
        if let Some(description) = description {
            self.who = description;
        }
        self
    }

    /// The one-line form printed by `flowgate check`.
    pub fn line(&self) -> String {
        format!(
            "  {}: {} | who: {} | ips: {} | rate limit: {} | secrets: {}",
            self.name, self.route, self.who, self.ips, self.rate_limit, self.secrets
        )
    }

    /// The admin API's form; without `include_private`, parts that come from the
    /// trigger's `private_fields` read `[private]`.
    pub fn view(&self, include_private: bool) -> Value {
        let show = |text: &str, fields: &[&str]| -> Value {
            let private = !include_private
                && self.private_fields.iter().any(|p| {
                    fields.iter().any(|f| p == f || p.strip_prefix(f).is_some_and(|rest| rest.starts_with('.')))
                });
            Value::String(if private { "[private]".to_owned() } else { text.to_owned() })
        };
        json!({
            "name": self.name,
            "route": show(&self.route, &["path", "host", "methods", "path_match"]),
            "who": show(&self.who, &["who", "identity", "tenants", "principals", "roles", "scopes", "claims"]),
            "ips": show(&self.ips, &[
                "allow_ips", "deny_ips", "allow_ip_files", "deny_ip_files",
                "peer_allow_ips", "peer_deny_ips", "principal_ips",
            ]),
            "rate_limit": show(&self.rate_limit, &["rate_limit"]),
            "secrets": show(&self.secrets, &["inject"]),
        })
    }
}

/// Lists longer than this are summarised as their count and first few entries: an admin
/// with 10,000 principals needs to see that they are there, not one line of 400 KB.
const LIST_SHOWN: usize = 5;

fn list(items: &[String]) -> String {
    if items.len() <= LIST_SHOWN {
        return items.join(", ");
    }
    let shown = LIST_SHOWN - 2;
    format!("{}, … and {} more ({} in all)", items[..shown].join(", "), items.len() - shown, items.len())
}

fn who(raw: &RawTrigger) -> String {
    let identity = raw.identity.as_deref().unwrap_or("?");
    let mut text = match raw.who {
        Who::Anyone => return "anyone holding a valid signed URL".to_owned(),
        // Replaced by the compiled rule's description (`with_webhook`).
        Who::Webhook => return "webhook".to_owned(),
        Who::TenantUsers => format!("tenant_users of identity {identity}"),
        Who::SpecificUsers if raw.principals.is_empty() => {
            format!("specific_users of identity {identity}: NOBODY (principals is empty)")
        }
        Who::SpecificUsers => format!("specific_users of identity {identity}: {}", list(&token_principals(raw))),
        Who::Certificate => "a verified client certificate".to_owned(),
    };
    if !raw.tenants.is_empty() {
        text.push_str(&format!("; tenants {}", list(&raw.tenants)));
    }
    for (name, requirement) in [("roles", &raw.roles), ("scopes", &raw.scopes)] {
        if let Some(r) = requirement {
            if !r.any_of.is_empty() {
                text.push_str(&format!("; {name} any of {}", list(&r.any_of)));
            }
            if !r.all_of.is_empty() {
                text.push_str(&format!("; {name} all of {}", list(&r.all_of)));
            }
        }
    }
    if !raw.claims.is_empty() {
        let claims: Vec<String> = raw.claims.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
        text.push_str(&format!("; claims {}", list(&claims)));
    }
    if let Some(rule) = certificate_rule(raw) {
        text.push_str(&format!("; certificate: {rule}"));
    }
    text
}

fn is_cert_principal(principal: &str) -> bool {
    principal.get(..5).is_some_and(|kind| kind.eq_ignore_ascii_case("cert:"))
}

fn token_principals(raw: &RawTrigger) -> Vec<String> {
    raw.principals.iter().filter(|p| !is_cert_principal(p)).cloned().collect()
}

/// The trigger's certificate rule, when it has one: what `check` prints for it.
fn certificate_rule(raw: &RawTrigger) -> Option<String> {
    let listed: Vec<String> = raw.principals.iter().filter(|p| is_cert_principal(p)).cloned().collect();
    let required = raw.who == Who::Certificate || raw.require_certificate || raw.require_bound_token;
    if !required && listed.is_empty() {
        return None;
    }
    let mut parts = vec!["required".to_owned()];
    if listed.is_empty() {
        parts.push("any the client CA signed".to_owned());
    } else {
        parts.push(format!("one of {}", list(&listed)));
    }
    if raw.require_bound_token {
        parts.push("token bound to it (RFC 8705 cnf.x5t#S256)".to_owned());
    }
    Some(parts.join(", "))
}

fn ips(raw: &RawTrigger) -> String {
    let mut parts = Vec::new();
    let mut add = |label: &str, items: &[String]| {
        if !items.is_empty() {
            parts.push(format!("{label} {}", list(items)));
        }
    };
    add("allow", &raw.allow_ips);
    add("allow from files", &raw.allow_ip_files);
    add("deny", &raw.deny_ips);
    add("deny from files", &raw.deny_ip_files);
    add("peer allow", &raw.peer_allow_ips);
    add("peer deny", &raw.peer_deny_ips);
    for (principal, ranges) in raw.principal_ips.iter().take(LIST_SHOWN) {
        parts.push(format!("pin {principal} to {}", list(ranges)));
    }
    if raw.principal_ips.len() > LIST_SHOWN {
        parts.push(format!("… and {} more pins", raw.principal_ips.len() - LIST_SHOWN));
    }
    if parts.is_empty() { "any address".to_owned() } else { parts.join("; ") }
}

fn period(period: Duration) -> String {
    if period.subsec_nanos() == 0 {
        format!("{}s", period.as_secs())
    } else {
        humantime::format_duration(period).to_string()
    }
}

fn rate_limit_text(rule: Option<&RateLimitRule>, source: LimitSource, signed_urls: bool) -> String {
    match rule {
        None => format!("OFF ({})", source.as_str()),
        Some(rule) => {
            let shadow = if rule.shadow { ", shadow: records refusals, never refuses" } else { "" };
            // The principal of a `who = "anyone"` trigger is the signed URL itself.
            let key = match rule.key {
                crate::ratelimit::LimitKey::Principal if signed_urls => "signed URL",
                other => other.as_str(),
            };
            format!("{} per {} by {key}{shadow} ({})", rule.calls, period(rule.period), source.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::LimitKey;
    use crate::secrets::Injection;

    fn raw(extra: &str) -> RawTrigger {
        toml::from_str(&format!(
            "name = \"t\"\npath = \"/api\"\nupstream = \"https://u/\"\nwho = \"specific_users\"\nidentity = \"id\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn a_line_names_the_effective_rules() {
        let raw = raw("path_match = \"prefix\"\nmethods = [\"get\"]\ndeny_ips = [\"192.0.2.0/24\"]");
        let rule = RateLimitRule::new("t", 5, Duration::from_millis(1500), LimitKey::Ip, true);
        let summary = TriggerSummary::new(&raw, Some(&rule), LimitSource::Global, &Injection::default());
        assert_eq!(
            summary.line(),
            "  t: GET /api (and below) | who: specific_users of identity id: NOBODY (principals is empty) \
             | ips: deny 192.0.2.0/24 \
             | rate limit: 5 per 1s 500ms by ip, shadow: records refusals, never refuses (global) | secrets: none"
        );
        let off = TriggerSummary::new(&raw, None, LimitSource::Trigger, &Injection::default());
        assert!(off.line().contains("| rate limit: OFF (trigger) |"), "{}", off.line());
    }

    #[test]
    fn long_lists_show_their_count_and_first_entries() {
        let principals: Vec<String> = (0..10_000).map(|i| format!("\"oid:0d2d3b0e-0000-4000-8000-{i:012}\"")).collect();
        let pins: Vec<String> = (0..8).map(|i| format!("\"upn:u{i}@x\" = [\"10.0.0.{i}\"]")).collect();
        let raw = raw(&format!(
            "principals = [{}]\ndeny_ips = [\"192.0.2.1\", \"192.0.2.2\"]\n[principal_ips]\n{}",
            principals.join(", "),
            pins.join("\n")
        ));
        let line = TriggerSummary::new(&raw, None, LimitSource::Trigger, &Injection::default()).line();
        assert!(
            line.contains(
                "specific_users of identity id: oid:0d2d3b0e-0000-4000-8000-000000000000, \
                 oid:0d2d3b0e-0000-4000-8000-000000000001, oid:0d2d3b0e-0000-4000-8000-000000000002, \
                 … and 9997 more (10000 in all) |"
            ),
            "{line}"
        );
        assert!(!line.contains("000000009999"), "{line}");
        assert!(line.contains("deny 192.0.2.1, 192.0.2.2;"), "short lists are shown whole: {line}");
        assert!(line.contains("pin upn:u4@x to 10.0.0.4; … and 3 more pins"), "{line}");
        assert!(line.len() < 1_000, "{line}");
    }
}
