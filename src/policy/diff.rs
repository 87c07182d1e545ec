//! Admin tooling over the raw policy: what a policy change changes
//! (`flowgate check --diff OLD NEW`) and the JSON Schema of the policy file
//! (`flowgate schema`).
//!
//! The diff works on the policy TEXT (through [`crate::policy::policy_view_table`]), so it
//! follows the file as written while the typed structs evolve, and it can only ever print
//! what the admin view shows: secret references, never values; literal credentials and
//! literal inject values as `[literal]`; URL signatures as `[redacted]`.

use super::view::{policy_view_tagged, untag_literals};
use crate::policy::RawPolicy;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;

/// The JSON Schema of the policy file, generated from the types that parse it.
pub(crate) fn policy_schema() -> Value {
    schemars::schema_for!(RawPolicy).to_value()
}

/// The schema as committed in `config/flowgate.schema.json` (pretty, trailing newline).
pub(crate) fn policy_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&policy_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// How a change affects who gets through or what is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    /// A trigger or section appeared.
    Added,
    /// A trigger or section disappeared.
    Removed,
    /// More callers, more calls, or less protection than before.
    Loosened,
    /// Fewer callers, fewer calls, or more protection than before.
    Tightened,
    /// Changed, with no clear direction.
    Changed,
}

impl Effect {
    /// Upper-case label used by [`render`].
    pub fn label(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Removed => "REMOVED",
            Self::Loosened => "LOOSENED",
            Self::Tightened => "TIGHTENED",
            Self::Changed => "CHANGED",
        }
    }
}

/// One difference between two policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `trigger "NAME"` or `[section]`.
    pub scope: String,
    /// The option, dotted (`rate_limit`, `inject.headers.x-api-key`); `None` for a whole
    /// trigger or section.
    pub field: Option<String>,
    /// Its direction.
    pub effect: Effect,
    /// What changed, secret-free (`specific_users -> anyone`).
    pub detail: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<9} {}", self.effect.label(), self.scope)?;
        if let Some(field) = &self.field {
            write!(f, " {field}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// A policy text that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{which} policy is not valid TOML: {source}")]
pub struct DiffError {
    /// `old` or `new`.
    pub which: &'static str,
    /// The parse error.
    #[source]
    pub source: toml::de::Error,
}

/// `diff_policies` over two policy texts.
///
/// # Errors
/// Either text is not valid TOML.
pub fn diff_texts(old: &str, new: &str) -> Result<Vec<Change>, DiffError> {
    let old: toml::Table = toml::from_str(old).map_err(|source| DiffError { which: "old", source })?;
    let new: toml::Table = toml::from_str(new).map_err(|source| DiffError { which: "new", source })?;
    Ok(diff_policies(&old, &new))
}

/// Every difference between two parsed policies: triggers added and removed, and per
/// option whether a rule was loosened or tightened. Never resolves a secret.
pub(crate) fn diff_policies(old: &toml::Table, new: &toml::Table) -> Vec<Change> {
    // A fresh random key per diff: a changed literal shows as changed, yet the output
    // carries no stable fingerprint of it (and `short` prints plain `[literal]`).
    let key: [u8; 32] = rand::random();
    let old = policy_view_tagged(old, true, Some(&key));
    let new = policy_view_tagged(new, true, Some(&key));
    let mut changes = Vec::new();
    let empty = Map::new();
    let old_map = old.as_object().unwrap_or(&empty);
    let new_map = new.as_object().unwrap_or(&empty);
    let (old_global, new_global) = (old_map.get("rate_limit"), new_map.get("rate_limit"));
    // Rate limits compare as what takes effect: unset means the built-in default, and
    // `"off"` is the loosest of all.
    if let Some(change) = rate_limit_change(
        "[rate_limit]",
        None,
        &effective(old_global, None, "global"),
        &effective(new_global, None, "global"),
    ) {
        changes.push(change);
    }
    for key in union(old_map, new_map) {
        if key == "trigger" || key == "rate_limit" {
            continue;
        }
        let scope = format!("[{key}]");
        match (old_map.get(&key), new_map.get(&key)) {
            (None, Some(v)) => changes.push(whole(&scope, Effect::Added, v)),
            (Some(v), None) => changes.push(whole(&scope, Effect::Removed, v)),
            (Some(a), Some(b)) if a != b => match (a, b) {
                (Value::Object(a), Value::Object(b)) => rules(&scope, "", a, b, &mut changes),
                _ => changes.push(changed(&scope, None, a, b)),
            },
            _ => {}
        }
    }
    let old_triggers = triggers(old_map);
    let new_triggers = triggers(new_map);
    for (name, old_trigger) in &old_triggers {
        let scope = format!("trigger {name:?}");
        match new_triggers.iter().find(|(n, _)| n == name) {
            None => changes.push(Change {
                scope,
                field: None,
                effect: Effect::Removed,
                detail: summary(old_trigger, old_global),
            }),
            Some((_, new_trigger)) => {
                let without_limit = |t: &Map<String, Value>| {
                    let mut t = t.clone();
                    t.remove("rate_limit");
                    t
                };
                rules(&scope, "", &without_limit(old_trigger), &without_limit(new_trigger), &mut changes);
                let old_limit = effective(old_trigger.get("rate_limit"), old_global, "trigger");
                let new_limit = effective(new_trigger.get("rate_limit"), new_global, "trigger");
                if let Some(change) = rate_limit_change(&scope, Some("rate_limit".into()), &old_limit, &new_limit) {
                    changes.push(change);
                }
            }
        }
    }
    for (name, new_trigger) in &new_triggers {
        if !old_triggers.iter().any(|(n, _)| n == name) {
            changes.push(Change {
                scope: format!("trigger {name:?}"),
                field: None,
                effect: Effect::Added,
                detail: summary(new_trigger, new_global),
            });
        }
    }
    changes
}

/// A readable report: one line per change and a closing count.
pub fn render(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes\n".to_owned();
    }
    let mut out = String::new();
    for change in changes {
        out.push_str(&change.to_string());
        out.push('\n');
    }
    let count = |effect| changes.iter().filter(|c| c.effect == effect).count();
    out.push_str(&format!(
        "{} changes: {} loosened, {} tightened, {} added, {} removed, {} other\n",
        changes.len(),
        count(Effect::Loosened),
        count(Effect::Tightened),
        count(Effect::Added),
        count(Effect::Removed),
        count(Effect::Changed),
    ));
    out
}

fn triggers(policy: &Map<String, Value>) -> Vec<(String, Map<String, Value>)> {
    let Some(Value::Array(items)) = policy.get("trigger") else { return Vec::new() };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let map = item.as_object()?;
            let name = map.get("name").and_then(Value::as_str).map_or_else(|| format!("#{i}"), str::to_owned);
            Some((name, map.clone()))
        })
        .collect()
}

fn summary(trigger: &Map<String, Value>, global_limit: Option<&Value>) -> String {
    let get = |k: &str| trigger.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    let limit = effective(trigger.get("rate_limit"), global_limit, "trigger");
    format!("path {}, who {}, rate limit {}", get("path"), get("who"), limit.text)
}

fn union(a: &Map<String, Value>, b: &Map<String, Value>) -> BTreeSet<String> {
    a.keys().chain(b.keys()).cloned().collect()
}

fn whole(scope: &str, effect: Effect, value: &Value) -> Change {
    Change { scope: scope.to_owned(), field: None, effect, detail: short(value) }
}

fn changed(scope: &str, field: Option<String>, old: &Value, new: &Value) -> Change {
    Change {
        scope: scope.to_owned(),
        field,
        effect: Effect::Changed,
        detail: format!("{} -> {}", short(old), short(new)),
    }
}

fn short(value: &Value) -> String {
    let text = untag_literals(&match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    if text.chars().count() > 120 { format!("{}…", text.chars().take(119).collect::<String>()) } else { text }
}

fn dotted(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

/// How a list-valued option moves callers through.
#[derive(Clone, Copy)]
enum ListKind {
    /// More entries admit more callers (principals, methods).
    Admits,
    /// Like `Admits`, but an empty list admits anyone (`allow_ips`).
    AdmitsEmptyAny,
    /// More entries refuse more callers or hide more (`deny_ips`, `private_parameters`).
    Restricts,
}

fn list_kind(key: &str) -> Option<ListKind> {
    match key {
        "principals" | "methods" | "tenants" => Some(ListKind::Admits),
        "allow_ips" | "allow_ip_files" | "peer_allow_ips" => Some(ListKind::AdmitsEmptyAny),
        "deny_ips" | "deny_ip_files" | "peer_deny_ips" | "private_parameters" | "private_fields" => {
            Some(ListKind::Restricts)
        }
        _ => None,
    }
}

/// Booleans where turning the option ON loosens (`true`) or tightens (`false`).
fn flag_on_loosens(key: &str) -> Option<bool> {
    match key {
        "forward_authorization" | "accept_v1" => Some(true),
        "capture"
        | "secure_inputs"
        | "secure_outputs"
        | "scrub_responses"
        | "require_certificate"
        | "require_bound_token" => Some(false),
        _ => None,
    }
}

/// Compares two tables option by option, with the direction rules for known options.
fn rules(scope: &str, prefix: &str, old: &Map<String, Value>, new: &Map<String, Value>, out: &mut Vec<Change>) {
    for key in union(old, new) {
        let (a, b) = (old.get(&key), new.get(&key));
        if a == b {
            continue;
        }
        let field = dotted(prefix, &key);
        if key == "principals" {
            principals(scope, &field, a, b, out);
        } else if let Some(kind) = list_kind(&key) {
            list(scope, &field, kind, a, b, out);
        } else if let Some(on_loosens) = flag_on_loosens(&key) {
            let (was, is) = if key == "scrub_responses" {
                // Unset, it is on for a trigger that injects: `false` there loosens.
                (a.and_then(Value::as_bool).unwrap_or(injects(old)), b.and_then(Value::as_bool).unwrap_or(injects(new)))
            } else {
                // `accept_v1` is on unless written off (signed-URL rollover).
                let default = key == "accept_v1";
                let flag = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(default);
                (flag(a), flag(b))
            };
            if was != is {
                let loosened = is == on_loosens;
                let effect = if loosened { Effect::Loosened } else { Effect::Tightened };
                out.push(Change {
                    scope: scope.to_owned(),
                    field: Some(field),
                    effect,
                    detail: format!("{was} -> {is}"),
                });
            }
        } else if let Some(change) = sign_in_change(scope, &field, a, b) {
            out.push(change);
        } else {
            match key.as_str() {
                "who" => who(scope, field, a, b, out),
                // Ranked from loosest to strictest.
                "client_auth" => ranked(scope, field, &["optional", "required"], a, b, out),
                "min_version" => ranked(scope, field, &["1.2", "1.3"], a, b, out),
                "roles" | "scopes" => requirement(scope, &field, a, b, out),
                "claims" => claims(scope, &field, a, b, out),
                "max_body_bytes" | "per_second" => larger_loosens(scope, field, a, b, out),
                "webhook" => webhook(scope, &field, a, b, out),
                "contract" => contract(scope, &field, a, b, out),
                _ => match (a, b) {
                    (Some(Value::Object(a)), Some(Value::Object(b))) => rules(scope, &field, a, b, out),
                    _ => out.push(changed(scope, Some(field), a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null))),
                },
            }
        }
    }
}

/// `[admin.sign_in]`: turning browser sign-in on opens a way in (sessions that live up to
/// `absolute_timeout`), so it loosens and removing it tightens; longer expiries and more
/// sessions loosen. Other fields (client, redirect, scopes) fall through to the generic
/// comparison.
fn sign_in_change(scope: &str, field: &str, a: Option<&Value>, b: Option<&Value>) -> Option<Change> {
    let expiry_default = match field {
        "sign_in" => {
            let effect = match (a, b) {
                (None, Some(_)) => Effect::Loosened,
                (Some(_), None) => Effect::Tightened,
                _ => return None,
            };
            let detail = if b.is_some() { "browser sign-in turned on" } else { "browser sign-in removed" };
            return Some(Change {
                scope: scope.to_owned(),
                field: Some(field.to_owned()),
                effect,
                detail: detail.into(),
            });
        }
        // Asked of the provider, not required of a caller (unlike a trigger's `scopes`).
        "sign_in.scopes" => {
            return Some(changed(scope, Some(field.to_owned()), a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null)));
        }
        "sign_in.idle_timeout" => "15m",
        "sign_in.absolute_timeout" => "8h",
        "sign_in.max_sessions" => {
            let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(1000);
            let (x, y) = (count(a), count(b));
            let effect = if y > x { Effect::Loosened } else { Effect::Tightened };
            return Some(Change {
                scope: scope.to_owned(),
                field: Some(field.to_owned()),
                effect,
                detail: format!("{x} -> {y}"),
            });
        }
        _ => return None,
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or(expiry_default).to_owned();
    let (x, y) = (text(a), text(b));
    let effect = match (humantime::parse_duration(&x), humantime::parse_duration(&y)) {
        (Ok(x), Ok(y)) if y > x => Effect::Loosened,
        (Ok(x), Ok(y)) if y < x => Effect::Tightened,
        _ => Effect::Changed,
    };
    Some(Change { scope: scope.to_owned(), field: Some(field.to_owned()), effect, detail: format!("{x} -> {y}") })
}

/// A trigger's payload contract, compared as it takes effect (`contract::diff`).
fn contract(scope: &str, field: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    use crate::contract::diff::Direction;
    for change in crate::contract::diff::compare(a, b) {
        let effect = match change.direction {
            Direction::Looser => Effect::Loosened,
            Direction::Tighter => Effect::Tightened,
            Direction::Other => Effect::Changed,
        };
        let field = if change.field.is_empty() { field.to_owned() } else { format!("{field}.{}", change.field) };
        out.push(Change { scope: scope.to_owned(), field: Some(field), effect, detail: change.detail });
    }
}

/// Whether a trigger table injects anything (its `scrub_responses` then defaults to on).
fn injects(trigger: &Map<String, Value>) -> bool {
    let tables = trigger.get("inject").and_then(Value::as_object).is_some_and(|inject| {
        ["headers", "query", "json"]
            .iter()
            .any(|k| inject.get(*k).and_then(Value::as_object).is_some_and(|m| !m.is_empty()))
            || inject.contains_key("basic_auth")
    });
    tables || trigger.get("upstream").and_then(Value::as_str).is_some_and(|u| u.contains("{{"))
}

fn strings(value: Option<&Value>) -> BTreeSet<String> {
    match value {
        Some(Value::Array(items)) => items.iter().map(short).collect(),
        Some(Value::Null) | None => BTreeSet::new(),
        Some(other) => BTreeSet::from([short(other)]),
    }
}

fn list(scope: &str, field: &str, kind: ListKind, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    let (old, new) = (strings(a), strings(b));
    let push = |out: &mut Vec<Change>, effect, detail: String| {
        out.push(Change { scope: scope.to_owned(), field: Some(field.to_owned()), effect, detail });
    };
    if let ListKind::AdmitsEmptyAny = kind {
        if old.is_empty() && !new.is_empty() {
            return push(out, Effect::Tightened, format!("any address -> only {}", join(&new)));
        }
        if !old.is_empty() && new.is_empty() {
            return push(out, Effect::Loosened, format!("only {} -> any address", join(&old)));
        }
    }
    let added: BTreeSet<String> = new.difference(&old).cloned().collect();
    let removed: BTreeSet<String> = old.difference(&new).cloned().collect();
    let admits = !matches!(kind, ListKind::Restricts);
    if !added.is_empty() {
        let effect = if admits { Effect::Loosened } else { Effect::Tightened };
        push(out, effect, format!("added {}", join(&added)));
    }
    if !removed.is_empty() {
        let effect = if admits { Effect::Tightened } else { Effect::Loosened };
        push(out, effect, format!("removed {}", join(&removed)));
    }
}

fn join(items: &BTreeSet<String>) -> String {
    items.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

fn who(scope: &str, field: String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    fn rank(value: Option<&Value>) -> Option<u8> {
        match value.and_then(Value::as_str)? {
            "specific_users" | "certificate" => Some(0),
            "tenant_users" => Some(1),
            "anyone" => Some(2),
            _ => None,
        }
    }
    let detail =
        format!("{} -> {}", a.map_or_else(|| "(unset)".into(), short), b.map_or_else(|| "(unset)".into(), short));
    let effect = match (rank(a), rank(b)) {
        (Some(x), Some(y)) if y > x => Effect::Loosened,
        (Some(x), Some(y)) if y < x => Effect::Tightened,
        _ => Effect::Changed,
    };
    out.push(Change { scope: scope.to_owned(), field: Some(field), effect, detail });
}

/// `principals`: token principals admit more as the list grows; `cert:` principals too,
/// except that none at all admits any certificate (no certificate rule).
fn principals(scope: &str, field: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    let part = |value: Option<&Value>, certs: bool| -> Option<Value> {
        let items: Vec<Value> = value?
            .as_array()?
            .iter()
            .filter(|v| {
                v.as_str().is_some_and(|s| s.get(..5).is_some_and(|k| k.eq_ignore_ascii_case("cert:"))) == certs
            })
            .cloned()
            .collect();
        (!items.is_empty()).then_some(Value::Array(items))
    };
    let (token_a, token_b) = (part(a, false), part(b, false));
    if token_a != token_b {
        list(scope, field, ListKind::Admits, token_a.as_ref(), token_b.as_ref(), out);
    }
    let (cert_a, cert_b) = (part(a, true), part(b, true));
    if cert_a != cert_b {
        list(scope, field, ListKind::AdmitsEmptyAny, cert_a.as_ref(), cert_b.as_ref(), out);
    }
}

/// An option whose values are ranked from loosest to strictest; unset is the loosest.
fn ranked(scope: &str, field: String, order: &[&str], a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    let rank = |v: Option<&Value>| v.and_then(Value::as_str).and_then(|s| order.iter().position(|o| *o == s));
    let detail =
        format!("{} -> {}", a.map_or_else(|| "(unset)".into(), short), b.map_or_else(|| "(unset)".into(), short));
    let effect = match (rank(a).unwrap_or(0), rank(b).unwrap_or(0)) {
        (x, y) if y > x => Effect::Tightened,
        (x, y) if y < x => Effect::Loosened,
        _ => Effect::Changed,
    };
    out.push(Change { scope: scope.to_owned(), field: Some(field), effect, detail });
}

fn number(value: Option<&Value>) -> Option<f64> {
    value.and_then(Value::as_f64)
}

fn larger_loosens(scope: &str, field: String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    let effect = match (number(a), number(b)) {
        (Some(x), Some(y)) if y > x => Effect::Loosened,
        (Some(x), Some(y)) if y < x => Effect::Tightened,
        _ => Effect::Changed,
    };
    let show = |v: Option<&Value>| v.map_or_else(|| "(default)".to_owned(), short);
    out.push(Change {
        scope: scope.to_owned(),
        field: Some(field),
        effect,
        detail: format!("{} -> {}", show(a), show(b)),
    });
}

/// A rate limit as it takes effect, described for the report.
struct Effective {
    /// Admissions per second at most; infinite when off or in shadow mode (never refuses).
    per_second: Option<f64>,
    /// The key kind (`principal` when unset).
    key: String,
    /// `2000 per 60s by principal (built-in default)`, `off (trigger)`, ...
    text: String,
}

/// The effective limit of `own` (a trigger's `rate_limit`, or the global one: `own_source`
/// names which), falling back to `global`, then to the built-in default.
fn effective(own: Option<&Value>, global: Option<&Value>, own_source: &'static str) -> Effective {
    let (value, source) = match (own, global) {
        (Some(v), _) => (Some(v), own_source),
        (None, Some(v)) => (Some(v), "global"),
        (None, None) => (None, "built-in default"),
    };
    match value {
        None => Effective {
            per_second: Some(2000.0 / 60.0),
            key: "principal".into(),
            text: format!("2000 per 60s by principal ({source})"),
        },
        Some(Value::String(s)) if s == "off" => {
            Effective { per_second: Some(f64::INFINITY), key: String::new(), text: format!("off ({source})") }
        }
        Some(Value::Object(m)) => {
            let calls = m.get("calls").and_then(Value::as_f64);
            let period = m.get("period").and_then(Value::as_str).and_then(|p| humantime::parse_duration(p).ok());
            let shadow = m.get("shadow").and_then(Value::as_bool).unwrap_or(false);
            let key = m.get("key").and_then(Value::as_str).unwrap_or("principal").to_owned();
            let per_second = match (calls, period) {
                _ if shadow => Some(f64::INFINITY),
                (Some(c), Some(p)) if p.as_secs_f64() > 0.0 => Some(c / p.as_secs_f64()),
                _ => None,
            };
            let show = |k: &str| m.get(k).map_or_else(|| "?".to_owned(), short);
            let shadow = if shadow { ", shadow" } else { "" };
            Effective {
                per_second,
                text: format!("{} per {} by {key}{shadow} ({source})", show("calls"), show("period")),
                key,
            }
        }
        Some(other) => Effective { per_second: None, key: String::new(), text: format!("{} ({source})", short(other)) },
    }
}

/// The change between two effective limits, if they differ: more calls per second (or
/// off, or shadow) loosens, fewer tightens, a new key kind alone is a change.
fn rate_limit_change(scope: &str, field: Option<String>, old: &Effective, new: &Effective) -> Option<Change> {
    let same_rate = old.per_second == new.per_second;
    if same_rate && old.key == new.key {
        return None;
    }
    let effect = match (old.per_second, new.per_second) {
        (Some(p), Some(q)) if q > p => Effect::Loosened,
        (Some(p), Some(q)) if q < p => Effect::Tightened,
        _ => Effect::Changed,
    };
    Some(Change { scope: scope.to_owned(), field, effect, detail: format!("{} -> {}", old.text, new.text) })
}

fn requirement(scope: &str, field: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    // `{ any_of, all_of }`, or a plain list read as `any_of`.
    fn split(value: Option<&Value>) -> (BTreeSet<String>, BTreeSet<String>) {
        match value {
            Some(Value::Object(m)) => (strings(m.get("any_of")), strings(m.get("all_of"))),
            other => (strings(other), BTreeSet::new()),
        }
    }
    let (old_any, old_all) = split(a);
    let (new_any, new_all) = split(b);
    // any_of behaves like an allow list where empty means "no requirement".
    let any = |v: &BTreeSet<String>| Value::Array(v.iter().cloned().map(Value::String).collect());
    list(scope, &format!("{field}.any_of"), ListKind::AdmitsEmptyAny, Some(&any(&old_any)), Some(&any(&new_any)), out);
    list(scope, &format!("{field}.all_of"), ListKind::Restricts, Some(&any(&old_all)), Some(&any(&new_all)), out);
    let own = format!("{field}.");
    for change in out.iter_mut().filter(|c| c.scope == scope && c.field.as_deref().is_some_and(|f| f.starts_with(&own)))
    {
        if change.detail.contains("any address") {
            change.detail = change.detail.replace("any address", "no requirement");
        }
    }
}

fn claims(scope: &str, field: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    let empty = Map::new();
    let old = a.and_then(Value::as_object).unwrap_or(&empty);
    let new = b.and_then(Value::as_object).unwrap_or(&empty);
    for key in union(old, new) {
        let claim = format!("{field}.{key}");
        match (old.get(&key), new.get(&key)) {
            (None, Some(v)) => out.push(Change {
                scope: scope.to_owned(),
                field: Some(claim),
                effect: Effect::Tightened,
                detail: format!("now required = {}", short(v)),
            }),
            (Some(v), None) => out.push(Change {
                scope: scope.to_owned(),
                field: Some(claim),
                effect: Effect::Loosened,
                detail: format!("no longer required (was {})", short(v)),
            }),
            (Some(x), Some(y)) if x != y => out.push(changed(scope, Some(claim), x, y)),
            _ => {}
        }
    }
}

/// `webhook = { … }`: losing the signature or replay protection, a longer tolerance and an
/// extra accepted secret loosen; their opposites tighten; a new scheme or handshake is a
/// change (`field` is the option's dotted name).
fn webhook(scope: &str, field: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    let push = |out: &mut Vec<Change>, field: String, effect, detail: String| {
        out.push(Change { scope: scope.to_owned(), field: Some(field), effect, detail });
    };
    let (old, new) = match (a.and_then(Value::as_object), b.and_then(Value::as_object)) {
        (None, None) => return,
        (Some(_), None) => {
            return push(out, field.to_owned(), Effect::Loosened, "signature verification removed".into());
        }
        (None, Some(_)) => {
            return push(out, field.to_owned(), Effect::Tightened, "signature verification required".into());
        }
        (Some(old), Some(new)) => (old, new),
    };
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (a, b) = (old.get(key), new.get(key));
        if a == b {
            continue;
        }
        let at = format!("{field}.{key}");
        let shown = |v: Option<&Value>| v.map_or_else(|| "(unset)".to_owned(), ToString::to_string);
        let detail = format!("{} -> {}", shown(a), shown(b));
        let effect = match key.as_str() {
            "replay" => {
                let off = |v: Option<&Value>| v.and_then(Value::as_str) == Some("off");
                match (off(a), off(b)) {
                    (false, true) => Effect::Loosened,
                    (true, false) => Effect::Tightened,
                    _ => Effect::Changed,
                }
            }
            "tolerance" => {
                let seconds = |v: Option<&Value>| {
                    v.and_then(Value::as_str)
                        .and_then(|t| humantime::parse_duration(t).ok())
                        .unwrap_or(crate::webhook::DEFAULT_TOLERANCE)
                };
                match seconds(b).cmp(&seconds(a)) {
                    std::cmp::Ordering::Greater => Effect::Loosened,
                    std::cmp::Ordering::Less => Effect::Tightened,
                    std::cmp::Ordering::Equal => Effect::Changed,
                }
            }
            "secret" | "secrets" => {
                let all = |m: &Map<String, Value>| -> std::collections::BTreeSet<String> {
                    let one = m.get("secret").and_then(Value::as_str).map(str::to_owned);
                    let many = m.get("secrets").and_then(Value::as_array).into_iter().flatten();
                    many.filter_map(Value::as_str).map(str::to_owned).chain(one).collect()
                };
                let (was, is) = (all(old), all(new));
                if key == "secrets" && old.contains_key("secret") != new.contains_key("secret") && was == is {
                    continue;
                }
                if is.is_superset(&was) && is != was {
                    Effect::Loosened
                } else if was.is_superset(&is) && is != was {
                    Effect::Tightened
                } else {
                    Effect::Changed
                }
            }
            _ => Effect::Changed,
        };
        push(out, at, effect, detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/flowgate.schema.json");

    /// Fails when `config/flowgate.schema.json` no longer matches the types. With
    /// `FLOWGATE_WRITE_SCHEMA=1` it rewrites the file instead.
    #[test]
    fn committed_schema_is_fresh() {
        let generated = policy_schema_text();
        #[expect(clippy::disallowed_methods, reason = "a developer's switch to rewrite the committed schema")]
        let rewrite = std::env::var_os("FLOWGATE_WRITE_SCHEMA").is_some();
        if rewrite {
            std::fs::write(SCHEMA_FILE, &generated).expect("writes the schema file");
        }
        let committed = std::fs::read_to_string(SCHEMA_FILE).unwrap_or_default();
        let committed: Value = serde_json::from_str(&committed).unwrap_or(Value::Null);
        assert!(
            committed == policy_schema(),
            "config/flowgate.schema.json is stale; run: cargo run -- schema > config/flowgate.schema.json"
        );
    }

    #[test]
    fn schema_documents_capture_options() {
        let text = policy_schema_text();
        for option in ["secure_inputs", "private_parameters", "private_fields", "capture_max_bytes"] {
            assert!(text.contains(option), "{option} missing from the schema");
        }
    }

    const BASE: &str = r#"
        [[trigger]]
        name = "inv"
        path = "/t/inv"
        upstream = "https://flows.example/invoke?sig=SIGVALUE"
        who = "specific_users"
        principals = ["oid:1"]
        deny_ips = ["198.51.100.0/24"]
        roles = { any_of = ["Flows.Invoke"] }
        rate_limit = { calls = 10, period = "60s" }
        secure_inputs = true
        inject.headers."x-api-key" = "secret://kv/flows#api_key"
        inject.headers."x-literal" = "LITERALVALUE"
    "#;

    fn diff(old: &str, new: &str) -> Vec<Change> {
        diff_texts(old, new).expect("both parse")
    }

    fn find<'a>(changes: &'a [Change], field: &str) -> &'a Change {
        changes
            .iter()
            .find(|c| c.field.as_deref() == Some(field))
            .unwrap_or_else(|| panic!("no {field} in {changes:?}"))
    }

    #[test]
    fn turning_scrubbing_off_on_an_injecting_trigger_loosens() {
        let off = format!("{BASE}        scrub_responses = false\n");
        assert_eq!(find(&diff(BASE, &off), "scrub_responses").effect, Effect::Loosened);
        let on = format!("{BASE}        scrub_responses = true\n");
        assert!(diff(BASE, &on).iter().all(|c| c.field.as_deref() != Some("scrub_responses")));
        assert_eq!(find(&diff(&off, BASE), "scrub_responses").effect, Effect::Tightened);
    }

    #[test]
    fn browser_sign_in_on_and_longer_sessions_loosen() {
        let base = "[admin]\nidentity = \"c\"\n";
        let with = |extra: &str| {
            format!(
                "{base}sign_in = {{ client_id = \"x\", redirect_url = \"http://127.0.0.1:9901/ui/callback\"{extra} }}\n"
            )
        };
        assert_eq!(find(&diff(base, &with("")), "sign_in").effect, Effect::Loosened);
        assert_eq!(find(&diff(&with(""), base), "sign_in").effect, Effect::Tightened);
        let longer = diff(&with(""), &with(", idle_timeout = \"1h\", absolute_timeout = \"1h\", max_sessions = 5"));
        assert_eq!(find(&longer, "sign_in.idle_timeout").effect, Effect::Loosened);
        assert_eq!(find(&longer, "sign_in.absolute_timeout").effect, Effect::Tightened);
        assert_eq!(find(&longer, "sign_in.max_sessions").effect, Effect::Tightened);
        let scopes = diff(&with(""), &with(", scopes = [\"openid\"]"));
        assert_eq!(find(&scopes, "sign_in.scopes").effect, Effect::Changed);
    }

    #[test]
    fn identical_policies_have_no_changes() {
        assert!(diff(BASE, BASE).is_empty());
        assert_eq!(render(&[]), "no changes\n");
    }

    #[test]
    fn triggers_added_and_removed() {
        let other = BASE.replace("\"inv\"", "\"other\"");
        let changes = diff(BASE, &other);
        assert!(changes.iter().any(|c| c.effect == Effect::Removed && c.scope == "trigger \"inv\""));
        assert!(changes.iter().any(|c| c.effect == Effect::Added && c.scope == "trigger \"other\""));
    }

    #[test]
    fn methods_claims_and_body_limit_directions() {
        let old = BASE.replace("principals", "methods = [\"POST\"]\nclaims = { idtyp = \"app\" }\nprincipals");
        let new = BASE.replace(
            "principals",
            "methods = [\"POST\", \"GET\"]\nmax_body_bytes = 10\nforward_authorization = true\nprincipals",
        );
        let changes = diff(&old, &new);
        assert_eq!(find(&changes, "methods").effect, Effect::Loosened);
        assert_eq!(find(&changes, "claims.idtyp").effect, Effect::Loosened);
        assert_eq!(find(&changes, "max_body_bytes").effect, Effect::Changed);
        assert_eq!(find(&changes, "forward_authorization").effect, Effect::Loosened);
        let tighter = BASE.replace("calls = 10, period = \"60s\"", "calls = 10, period = \"120s\"");
        assert_eq!(find(&diff(BASE, &tighter), "rate_limit").effect, Effect::Tightened);
        let no_limit = BASE.replace("rate_limit = { calls = 10, period = \"60s\" }", "");
        assert_eq!(find(&diff(BASE, &no_limit), "rate_limit").effect, Effect::Loosened);
    }

    #[test]
    fn certificate_rules_have_directions() {
        let with_cert = BASE.replace("[\"oid:1\"]", "[\"oid:1\", \"cert:sha256:aa\"]");
        let changes = diff(BASE, &with_cert);
        assert_eq!(find(&changes, "principals").effect, Effect::Tightened, "{changes:#?}");
        assert_eq!(find(&diff(&with_cert, BASE), "principals").effect, Effect::Loosened);
        let two = with_cert.replace("\"cert:sha256:aa\"", "\"cert:sha256:aa\", \"cert:sha256:bb\"");
        assert_eq!(find(&diff(&with_cert, &two), "principals").effect, Effect::Loosened);
        let required = BASE.replace("secure_inputs = true", "secure_inputs = true\nrequire_bound_token = true");
        assert_eq!(find(&diff(BASE, &required), "require_bound_token").effect, Effect::Tightened);
        let server =
            |auth: &str| format!("[server]\ntls = {{ client_auth = \"{auth}\", min_version = \"1.3\" }}\n{BASE}");
        let changes = diff(&server("required"), &server("optional").replace("\"1.3\"", "\"1.2\""));
        assert_eq!(find(&changes, "tls.client_auth").effect, Effect::Loosened, "{changes:#?}");
        assert_eq!(find(&changes, "tls.min_version").effect, Effect::Loosened);
    }

    #[test]
    fn losing_a_webhook_signature_or_replay_protection_loosens() {
        let hook = "[vault.kv]\nkind = \"file\"\npath = \"s.toml\"\n[[trigger]]\nname = \"hook\"\npath = \"/h\"\n\
                    upstream = \"http://x\"\nwho = \"webhook\"\nwebhook = { scheme = \"github\", secrets = [\"secret://kv/a#b\"] }\n";
        let no_replay = hook.replace("scheme = \"github\"", "scheme = \"github\", replay = \"off\"");
        assert_eq!(find(&diff(hook, &no_replay), "webhook.replay").effect, Effect::Loosened);
        assert_eq!(find(&diff(&no_replay, hook), "webhook.replay").effect, Effect::Tightened);
        let longer = hook.replace("scheme = \"github\"", "scheme = \"github\", tolerance = \"1h\"");
        assert_eq!(find(&diff(hook, &longer), "webhook.tolerance").effect, Effect::Loosened);
        let rotated = hook.replace("[\"secret://kv/a#b\"]", "[\"secret://kv/a#b\", \"secret://kv/a#c\"]");
        assert_eq!(find(&diff(hook, &rotated), "webhook.secrets").effect, Effect::Loosened);
        assert_eq!(find(&diff(&rotated, hook), "webhook.secrets").effect, Effect::Tightened);
        let unsigned = hook
            .replace("who = \"webhook\"", "who = \"anyone\"")
            .replace("webhook = { scheme = \"github\", secrets = [\"secret://kv/a#b\"] }\n", "");
        let changes = diff(hook, &unsigned);
        assert_eq!(find(&changes, "webhook").effect, Effect::Loosened, "{changes:?}");
    }

    #[test]
    fn ending_the_signed_url_rollover_tightens() {
        let old = "[signed_urls]\nkeys = { a = \"env:K\" }\nprimary = \"a\"\n";
        let new = format!("{old}accept_v1 = false\n");
        let changes = diff(old, &new);
        assert_eq!(find(&changes, "accept_v1").effect, Effect::Tightened);
        assert_eq!(find(&diff(&new, old), "accept_v1").effect, Effect::Loosened);
    }

    /// Rate limits compare as they take effect: unset is the built-in default, `"off"` is
    /// a loosening wherever it comes from.
    #[test]
    fn rate_limit_off_and_the_default_compare_as_they_take_effect() {
        let unset = BASE.replace("rate_limit = { calls = 10, period = \"60s\" }", "");
        let off = BASE.replace("rate_limit = { calls = 10, period = \"60s\" }", "rate_limit = \"off\"");
        let change = find(&diff(&unset, &off), "rate_limit").clone();
        assert_eq!(change.effect, Effect::Loosened);
        assert_eq!(change.detail, "2000 per 60s by principal (built-in default) -> off (trigger)");
        assert!(render(&[change]).starts_with("LOOSENED  trigger \"inv\" rate_limit: "));
        assert_eq!(find(&diff(&off, BASE), "rate_limit").effect, Effect::Tightened);

        // A global "off" loosens the global default and every trigger that sets none.
        let changes = diff(&unset, &format!("rate_limit = \"off\"\n{unset}"));
        let global = changes.iter().find(|c| c.scope == "[rate_limit]").expect("a global change");
        assert_eq!(
            (global.effect, global.detail.as_str()),
            (Effect::Loosened, "2000 per 60s by principal (built-in default) -> off (global)")
        );
        assert_eq!(find(&changes, "rate_limit").effect, Effect::Loosened);
        // ... but not a trigger with its own rule.
        assert!(diff(BASE, &format!("rate_limit = \"off\"\n{BASE}")).iter().all(|c| c.scope == "[rate_limit]"));
        // Writing the default out changes nothing that takes effect.
        let explicit =
            BASE.replace("calls = 10, period = \"60s\"", "calls = 2000, period = \"60s\", key = \"principal\"");
        assert!(diff(&unset, &explicit).is_empty(), "{:?}", diff(&unset, &explicit));
        // Shadow mode never refuses: turning it on loosens.
        let shadow = BASE.replace("period = \"60s\" }", "period = \"60s\", shadow = true }");
        assert_eq!(find(&diff(BASE, &shadow), "rate_limit").effect, Effect::Loosened);
    }
}
