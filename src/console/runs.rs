//! The runs list (newest first, filtered like `GET /runs`) and one run: the record as the
//! admin API returns it, with its captured request and response as recorded (secured
//! messages and dropped fields shown as hidden, never recovered).

use super::html::{e, query_value};
use crate::audit::{ALLOWED, CapturedBody, CapturedMessage, RunFilter, RunRecord};
use crate::auth::AdminRole;
use crate::gateway::Gateway;
use crate::policy::Policy;
use http::StatusCode;
use std::fmt::Write;

/// Runs one page lists at most, whatever `limit` asks (the page refreshes itself).
pub(super) const PAGE_MAX_LIMIT: usize = 200;

/// The filter keys the form offers, in `GET /runs`'s names.
const KEYS: [&str; 6] = ["trigger", "decision", "principal", "since", "until", "limit"];

/// Decisions offered by the form (any other value can be typed).
const DECISIONS: [&str; 15] = [
    ALLOWED,
    "unauthenticated",
    "forbidden",
    "insufficient_scope",
    "ip_forbidden",
    "rate_limited",
    "too_many_in_flight",
    "shielded",
    "not_found",
    "method_not_allowed",
    "bad_request",
    "secret_unavailable",
    "upstream_timeout",
    "upstream_unreachable",
    "client_closed",
];

/// The runs page for `query` (the form's fields; empty ones mean "any").
pub(super) fn list(gateway: &Gateway, query: &str) -> (StatusCode, String) {
    let given: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(key, value)| KEYS.contains(&key.as_ref()) && !value.trim().is_empty())
        .map(|(key, value)| (key.into_owned(), value.trim().to_owned()))
        .collect();
    let value = |key: &str| given.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str());
    let api_query: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&given).finish();
    let policy = gateway.policy();

    let mut out = String::from("<h1>Runs</h1><form class=\"filters card\" method=\"get\" action=\"/ui/runs\">");
    let _ = write!(out, "<label>Trigger<select name=\"trigger\" id=\"f-trigger\"><option value=\"\">any</option>");
    let mut names: Vec<&str> = policy.routes.triggers().iter().map(|t| t.name.as_str()).collect();
    if !value("trigger").is_empty() && !names.contains(&value("trigger")) {
        names.push(value("trigger"));
    }
    for name in names {
        let selected = if name == value("trigger") { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{}\"{selected}>{}</option>", e(name), e(name));
    }
    out.push_str("</select></label>");
    for (key, label, hint) in [
        ("decision", "Decision", "allowed, unauthenticated, rate_limited…"),
        ("principal", "Caller (principal)", "oid:…"),
        ("since", "Since", "15m, 2h or 2026-01-02T03:04:05Z"),
        ("until", "Until", "RFC 3339 time or age"),
        ("limit", "Limit", "100"),
    ] {
        let list = if key == "decision" { " list=\"decisions\"" } else { "" };
        let _ = write!(
            out,
            "<label>{label}<input name=\"{key}\" id=\"f-{key}\" value=\"{}\" placeholder=\"{}\"{list}></label>",
            e(value(key)),
            e(hint)
        );
    }
    out.push_str("<datalist id=\"decisions\">");
    for decision in DECISIONS {
        let _ = write!(out, "<option value=\"{decision}\">");
    }
    out.push_str("</datalist><button type=\"submit\" id=\"apply\">Filter</button></form>");
    let _ = write!(
        out,
        "<div class=\"toolbar\"><label><input type=\"checkbox\" id=\"auto-refresh\" checked> auto-refresh</label>\
         <span class=\"muted\" id=\"refreshed\"></span><a href=\"/ui/runs\">clear filters</a>\
         <a href=\"/runs?{}\">as JSON</a></div>",
        e(&api_query)
    );

    let filter = match RunFilter::from_query_at(&api_query, gateway.clock.system_time()) {
        Ok(filter) => RunFilter { limit: Some(filter.limit().min(PAGE_MAX_LIMIT)), ..filter },
        Err(message) => {
            let _ = write!(out, "<p class=\"error\" id=\"filter-error\">{}</p>", e(message));
            return (StatusCode::BAD_REQUEST, out);
        }
    };
    // Summaries only: a list never parses or copies a capture.
    let records = gateway.audit.summaries(&filter);
    out.push_str(
        "<div id=\"runs\"><table class=\"stack\"><thead><tr><th>Time (UTC)</th><th>Trigger</th><th>Request</th>\
         <th>Decision</th><th>Status</th><th>Caller</th><th>Latency</th></tr></thead><tbody>",
    );
    for record in &records {
        let _ = write!(
            out,
            "<tr class=\"run\" data-id=\"{id}\"><td data-label=\"Time\"><a class=\"run-link\" href=\"/ui/runs/{link}\">{time}</a></td>\
             <td data-label=\"Trigger\">{trigger}</td><td data-label=\"Request\">{method} {path}</td>\
             <td data-label=\"Decision\">{decision}</td><td data-label=\"Status\">{status}</td>\
             <td data-label=\"Caller\">{caller}</td><td data-label=\"Latency\">{latency:.1} ms</td></tr>",
            id = e(&record.id),
            link = e(query_value(&record.id)),
            time = e(&record.time),
            trigger = e(record.trigger.as_deref().unwrap_or("—")),
            method = e(&record.method),
            path = e(&record.path),
            decision = decision_badge(&record.decision),
            status = record.status,
            caller = e(record.principal.as_deref().unwrap_or("—")),
            latency = record.latency_ms,
        );
    }
    out.push_str("</tbody></table>");
    let _ = write!(
        out,
        "<p class=\"muted\" id=\"run-count\">{} run{} shown (newest first, at most {}).</p></div>",
        records.len(),
        if records.len() == 1 { "" } else { "s" },
        filter.limit()
    );
    (StatusCode::OK, out)
}

fn decision_badge(decision: &str) -> String {
    let class = if decision == ALLOWED { "ok" } else { "bad" };
    format!("<span class=\"badge {class}\">{}</span>", e(decision))
}

/// One run: every field of the record, then what was captured.
pub(super) fn one(policy: &Policy, role: AdminRole, record: &RunRecord) -> String {
    let mut out = format!("<h1>Run <code id=\"run-id\">{}</code></h1>", e(&record.id));
    let _ = write!(
        out,
        "<div class=\"toolbar\"><a href=\"/ui/runs\">all runs</a><a href=\"/runs/{}\">as JSON</a></div>",
        e(query_value(&record.id))
    );
    out.push_str("<section class=\"card\"><h2>Decision</h2><dl class=\"fields\" id=\"run-fields\">");
    let optional = |value: Option<String>| value.unwrap_or_else(|| "—".to_owned());
    let rows: [(&str, String); 18] = [
        ("Time (UTC)", record.time.clone()),
        ("Trigger", optional(record.trigger.clone())),
        ("Request", format!("{} {}", record.method, record.path)),
        ("Decision", record.decision.clone()),
        ("Reason", optional(record.reason.clone())),
        ("Status", record.status.to_string()),
        ("Upstream status", optional(record.upstream_status.map(|s| s.to_string()))),
        ("Latency", format!("{:.1} ms (arrival to end of response)", record.latency_ms)),
        ("Bytes in / out", format!("{} / {}", record.bytes_in, record.bytes_out)),
        ("Client address", optional(record.client_ip.map(|ip| ip.to_string()))),
        ("Peer address", optional(record.peer_ip.map(|ip| ip.to_string()))),
        ("Address note", optional(record.client_ip_note.clone())),
        ("Tenant", optional(record.tenant.clone())),
        ("Caller (principal)", optional(record.principal.clone())),
        ("App id", optional(record.app_id.clone())),
        ("Policy version", record.policy_version.clone()),
        ("Request id", record.id.clone()),
        ("Captured", if record.capture.is_some() { "yes".to_owned() } else { "no".to_owned() }),
    ];
    for (label, value) in rows {
        if label == "Decision" {
            let _ = write!(out, "<dt>{label}</dt><dd id=\"run-decision\">{}</dd>", decision_badge(&value));
        } else {
            let _ = write!(out, "<dt>{label}</dt><dd>{}</dd>", e(value));
        }
    }
    out.push_str("</dl></section>");

    let Some(capture) = &record.capture else {
        out.push_str(
            "<section class=\"card\"><h2>Request and response</h2><p class=\"muted\">Not captured: the trigger \
             does not set <code>capture = true</code> (or the call was refused before a trigger matched).</p></section>",
        );
        return out;
    };
    let trigger = record.trigger.as_deref().and_then(|name| policy.routes.triggers().iter().find(|t| t.name == name));
    let hidden = hidden_fields(trigger.map(|t| &t.capture), role);
    for (label, id, message, secure_option) in [
        ("Request", "capture-request", capture.request.as_ref(), "secure_inputs"),
        ("Response", "capture-response", capture.response.as_ref(), "secure_outputs"),
    ] {
        let _ = write!(out, "<section class=\"card\" id=\"{id}\"><h2>{label}</h2>");
        message_html(&mut out, message, secure_option, &hidden);
        out.push_str("</section>");
    }
    out
}

/// The note naming what capture drops from JSON bodies: `_private*` fields always, and
/// the trigger's private parameters, named only to roles that `/policy` shows them to.
/// They are read from the running policy: a record keeps no list of what it dropped.
fn hidden_fields(rules: Option<&crate::audit::CaptureRules>, role: AdminRole) -> String {
    let mut note =
        String::from("<p class=\"hidden-fields\">Hidden, never recorded: JSON fields named <code>_private…</code>");
    match rules {
        Some(rules) if !rules.private_parameters.is_empty() => {
            if role.can_see_private() {
                let mut names: Vec<&String> = rules.private_parameters.iter().collect();
                names.sort();
                note.push_str("; private parameters ");
                let list: Vec<String> =
                    names.iter().map(|n| format!("<code class=\"private-parameter\">{}</code>", e(n))).collect();
                note.push_str(&list.join(", "));
            } else {
                note.push_str("; this trigger's private parameters (their names are hidden from viewers)");
            }
        }
        _ => {}
    }
    note.push_str(". Their values are also redacted wherever they reappear, like injected secrets.</p>");
    note
}

fn message_html(out: &mut String, message: Option<&CapturedMessage>, secure_option: &str, hidden: &str) {
    match message {
        None => out.push_str("<p class=\"muted\">Nothing was captured.</p>"),
        Some(CapturedMessage::Secured { .. }) => {
            let _ = write!(
                out,
                "<p class=\"hidden-note secured\">Hidden: <code>{secure_option} = true</code> on this trigger, so \
                 nothing of it was recorded.</p>"
            );
        }
        Some(CapturedMessage::Captured { headers, body }) => {
            out.push_str(
                "<h3>Headers</h3><table class=\"stack headers\"><thead><tr><th>Name</th><th>Value</th></tr></thead><tbody>",
            );
            for (name, values) in headers {
                for value in values {
                    let _ = write!(
                        out,
                        "<tr><td data-label=\"Name\"><code>{}</code></td><td data-label=\"Value\">{}</td></tr>",
                        e(name),
                        e(value)
                    );
                }
            }
            out.push_str(
                "</tbody></table><p class=\"muted\">Credentials (Authorization, cookies, API-key headers) and \
                 injected secrets are never recorded.</p><h3>Body</h3>",
            );
            match body {
                None => out.push_str("<p class=\"muted\">(empty)</p>"),
                Some(CapturedBody::Json { json }) => {
                    let text = serde_json::to_string_pretty(json).unwrap_or_default();
                    let _ = write!(out, "<pre class=\"body json\">{}</pre>", e(text));
                    out.push_str(hidden);
                }
                Some(CapturedBody::Hashed { sha256, length, truncated }) => {
                    let _ = write!(
                        out,
                        "<p class=\"hidden-note\">Not shown: {}; only its SHA-256 <code>{}</code> and length {} bytes \
                         were recorded.</p>",
                        if *truncated { "longer than the capture bound" } else { "not JSON" },
                        e(sha256),
                        length
                    );
                }
            }
        }
    }
}
