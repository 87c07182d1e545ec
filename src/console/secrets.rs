//! The secrets page: each injected reference, the triggers using it, its vault, and what
//! the cache holds (when it was fetched, fresh or stale, failing) — never a value. A
//! trigger whose `inject` is in its `private_fields` is left out for viewers, as `/policy`
//! leaves it out.

use super::html::e;
use crate::auth::AdminRole;
use crate::gateway::Gateway;
use crate::secrets::{CachePhase, CacheState};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::SystemTime;

/// The secrets page.
pub(super) fn page(gateway: &Gateway, role: AdminRole) -> String {
    let policy = gateway.policy();
    let mut hidden = 0;
    let mut visible = Vec::new();
    for trigger in policy.routes.triggers() {
        // The same test `/policy`'s effective view applies to this trigger's secrets.
        if trigger.summary.view(role.can_see_private())["secrets"] == "[private]" {
            hidden += 1;
        } else {
            visible.push(trigger);
        }
    }
    let mut by_reference: BTreeMap<String, (crate::secrets::SecretRef, Vec<&str>)> = BTreeMap::new();
    for trigger in &visible {
        for reference in trigger.injection.references() {
            let entry = by_reference.entry(reference.to_string()).or_insert_with(|| (reference.clone(), Vec::new()));
            if !entry.1.contains(&trigger.name.as_str()) {
                entry.1.push(&trigger.name);
            }
        }
    }
    let cache = policy.vaults.cache();
    let mut out = format!(
        "<h1>Secrets</h1><p class=\"muted\">References only: flowgate never shows a secret value. Cache: values are \
         used for {}, refreshed in the background {} before that, and served up to {} longer while a vault fails.</p>",
        e(humantime::format_duration(cache.ttl)),
        e(humantime::format_duration(cache.refresh_ahead)),
        e(humantime::format_duration(cache.max_stale)),
    );
    out.push_str(
        "<table class=\"stack\" id=\"secrets\"><thead><tr><th>Reference</th><th>Vault</th><th>Used by</th>\
         <th>Last fetch (UTC)</th><th>Cache</th></tr></thead><tbody>",
    );
    let now = gateway.clock.system_time();
    for (text, (reference, users)) in &by_reference {
        let vault = policy.vaults.get(&reference.vault).map_or("not configured", |v| v.kind().as_str());
        let state = gateway.secrets.state(reference, &policy.vaults);
        let (fetched, cache) = describe(state, now);
        let users: Vec<String> = users.iter().map(|u| e(u).to_string()).collect();
        let _ = write!(
            out,
            "<tr class=\"secret\"><td data-label=\"Reference\"><code>{}</code></td><td data-label=\"Vault\">{} ({})</td>\
             <td data-label=\"Used by\">{}</td><td data-label=\"Last fetch\">{}</td><td data-label=\"Cache\" class=\"cache\">{}</td></tr>",
            e(text),
            e(&reference.vault),
            e(vault),
            users.join(", "),
            e(fetched),
            e(cache),
        );
    }
    out.push_str("</tbody></table>");
    if by_reference.is_empty() {
        out.push_str("<p class=\"muted\">No trigger injects a secret.</p>");
    }
    if hidden > 0 {
        let _ = write!(
            out,
            "<p class=\"muted\" id=\"secrets-hidden\">{hidden} trigger{} list{} <code>inject</code> in \
             <code>private_fields</code>: {} references are hidden from viewers.</p>",
            if hidden == 1 { "" } else { "s" },
            if hidden == 1 { "s" } else { "" },
            if hidden == 1 { "its" } else { "their" },
        );
    }
    let report = crate::secrets::usage_report(visible.iter().map(|t| (t.name.as_str(), &t.injection)), &policy.vaults);
    let _ = write!(
        out,
        "<section class=\"card\"><h2>As <code>flowgate secrets</code> prints it</h2><pre id=\"usage-report\">{}</pre></section>",
        e(report)
    );
    out
}

/// (last fetch, cache state) in words.
fn describe(state: CacheState, now: SystemTime) -> (String, String) {
    match state {
        CacheState::Empty => ("never".to_owned(), "not fetched yet".to_owned()),
        CacheState::Failed { kind } => ("never succeeded".to_owned(), format!("fetch failed: {kind}")),
        CacheState::Cached { age, phase, refreshing, failing } => {
            let at = now.checked_sub(age).map_or_else(String::new, |at| {
                let mut text = crate::audit::format_time(at, String::new());
                text.truncate(19);
                text.replace('T', " ")
            });
            let mut words = match phase {
                CachePhase::Fresh => "fresh".to_owned(),
                CachePhase::Stale => "stale: served only while the vault fails".to_owned(),
                CachePhase::Expired => "expired: refetched on next use".to_owned(),
            };
            if refreshing {
                words.push_str(", refreshing");
            }
            if let Some(kind) = failing {
                words.push_str(&format!(", last fetch failed: {kind}"));
            }
            (format!("{at} ({} ago)", short_age(age.as_secs())), words)
        }
    }
}

/// Seconds as a short age: `42s`, `5m 3s`, `2h 1m`.
fn short_age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}
