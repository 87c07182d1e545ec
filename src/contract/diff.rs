//! How a trigger's contract moved between two policy texts, for `flowgate check --diff`:
//! a removed or widened contract (schema removed, media types or allowed names added,
//! `max_body` raised, a required name or pattern removed) loosens; the opposite tightens.
//! Compared as written and as it takes effect (defaults filled in); the schema file's
//! content is not compared, only its name.

use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Which way a change moves callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// More calls get through.
    Looser,
    /// Fewer calls get through.
    Tighter,
    /// Neither clearly.
    Other,
}

/// One change of a contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractChange {
    /// The field under `contract` (`schema`, `query.allowed`, ...), empty for the whole.
    pub field: String,
    /// Its direction.
    pub direction: Direction,
    /// What changed, from the policy text.
    pub detail: String,
}

/// The changes between two `contract` values (`None`: no contract).
pub fn compare(old: Option<&Value>, new: Option<&Value>) -> Vec<ContractChange> {
    let mut out = Vec::new();
    let mut push = |field: &str, direction, detail: String| {
        out.push(ContractChange { field: field.to_owned(), direction, detail });
    };
    let (was, now) = match (old.and_then(Value::as_object), new.and_then(Value::as_object)) {
        (None, None) => return out,
        // A whole contract gone or new is one change; its parts are in the policy text.
        (Some(_), None) => {
            push("", Direction::Looser, "contract removed".into());
            return out;
        }
        (None, Some(_)) => {
            push("", Direction::Tighter, "contract added".into());
            return out;
        }
        (Some(was), Some(now)) => (was, now),
    };
    let schema = |m: &Map<String, Value>| m.get("schema").and_then(Value::as_str).map(str::to_owned);
    match (schema(was), schema(now)) {
        (Some(before), None) => push("schema", Direction::Looser, format!("{before} removed")),
        (None, Some(after)) => push("schema", Direction::Tighter, format!("{after} added")),
        (Some(before), Some(after)) if before != after => {
            push("schema", Direction::Other, format!("{before} -> {after}"));
        }
        _ => {}
    }
    if was.get("draft") != now.get("draft") {
        push("draft", Direction::Other, format!("{} -> {}", show(was.get("draft")), show(now.get("draft"))));
    }
    match (media(was), media(now)) {
        (Some(_), None) => push("content_types", Direction::Looser, "-> any type".into()),
        (None, Some(after)) => push("content_types", Direction::Tighter, format!("any type -> {}", join(&after))),
        (Some(before), Some(after)) => sets(&mut push, "content_types", &before, &after, true),
        (None, None) => {}
    }
    match (max_body(was), max_body(now)) {
        (Some(_), None) => push("max_body", Direction::Looser, "-> the trigger's limit".into()),
        (None, Some(after)) => push("max_body", Direction::Tighter, format!("-> {after} bytes")),
        (Some(before), Some(after)) if after > before => {
            push("max_body", Direction::Looser, format!("{before} -> {after} bytes"));
        }
        (Some(before), Some(after)) if after < before => {
            push("max_body", Direction::Tighter, format!("{before} -> {after} bytes"));
        }
        _ => {}
    }
    for part in ["query", "headers"] {
        name_rules(&mut push, part, was.get(part), now.get(part));
    }
    out
}

/// The changes of one part's name rules (`query` or `headers`).
fn name_rules(push: &mut impl FnMut(&str, Direction, String), part: &str, was: Option<&Value>, now: Option<&Value>) {
    let empty = Map::new();
    let was = was.and_then(Value::as_object).unwrap_or(&empty);
    let now = now.and_then(Value::as_object).unwrap_or(&empty);
    let field = |name: &str| format!("{part}.{name}");
    sets(push, &field("required"), &names(was.get("required")), &names(now.get("required")), false);
    match (was.get("allowed"), now.get("allowed")) {
        (Some(_), None) => push(&field("allowed"), Direction::Looser, "-> any name".into()),
        (None, Some(list)) => {
            push(&field("allowed"), Direction::Tighter, format!("any name -> {}", join(&names(Some(list)))));
        }
        (Some(before), Some(after)) => {
            sets(push, &field("allowed"), &names(Some(before)), &names(Some(after)), true);
        }
        (None, None) => {}
    }
    let others = |m: &Map<String, Value>| m.get("others").and_then(Value::as_str).unwrap_or("refuse").to_owned();
    if others(was) != others(now) {
        let direction = if others(now) == "drop" { Direction::Looser } else { Direction::Tighter };
        push(&field("others"), direction, format!("{} -> {}", others(was), others(now)));
    }
    let patterns = |m: &Map<String, Value>| m.get("patterns").and_then(Value::as_object).cloned().unwrap_or_default();
    let (before, after) = (patterns(was), patterns(now));
    for name in before.keys().chain(after.keys()).collect::<BTreeSet<_>>() {
        let at = field(&format!("patterns.{name}"));
        match (before.get(name), after.get(name)) {
            (Some(_), None) => push(&at, Direction::Looser, "removed".into()),
            (None, Some(added)) => push(&at, Direction::Tighter, format!("added {}", show(Some(added)))),
            (Some(old), Some(new)) if old != new => {
                push(&at, Direction::Other, format!("{} -> {}", show(Some(old)), show(Some(new))));
            }
            _ => {}
        }
    }
}

/// Added entries move callers one way, removed ones the other (`more_admits`: whether an
/// added entry lets more calls through).
fn sets(
    push: &mut impl FnMut(&str, Direction, String),
    field: &str,
    old: &BTreeSet<String>,
    new: &BTreeSet<String>,
    more_admits: bool,
) {
    let added: BTreeSet<String> = new.difference(old).cloned().collect();
    let removed: BTreeSet<String> = old.difference(new).cloned().collect();
    let (on_add, on_remove) =
        if more_admits { (Direction::Looser, Direction::Tighter) } else { (Direction::Tighter, Direction::Looser) };
    if !added.is_empty() {
        push(field, on_add, format!("added {}", join(&added)));
    }
    if !removed.is_empty() {
        push(field, on_remove, format!("removed {}", join(&removed)));
    }
}

/// Media types as they take effect: the JSON types when a schema is set and none are
/// listed, any type (`None`) otherwise.
fn media(contract: &Map<String, Value>) -> Option<BTreeSet<String>> {
    match contract.get("content_types") {
        Some(list) => Some(names(Some(list))),
        None if contract.contains_key("schema") => {
            Some(["application/json".to_owned(), "application/*+json".to_owned()].into())
        }
        None => None,
    }
}

/// `max_body` in bytes as it takes effect (the default with a schema), `None` when the
/// trigger's own limit applies.
fn max_body(contract: &Map<String, Value>) -> Option<u64> {
    match contract.get("max_body") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(text)) => {
            serde_json::from_value::<super::raw::ByteSize>(Value::String(text.clone())).ok().map(|s| s.0)
        }
        _ if contract.contains_key("schema") => Some(super::compiled::DEFAULT_MAX_BODY),
        _ => None,
    }
}

fn names(value: Option<&Value>) -> BTreeSet<String> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect())
        .unwrap_or_default()
}

fn join(items: &BTreeSet<String>) -> String {
    items.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

fn show(value: Option<&Value>) -> String {
    match value {
        None => "(unset)".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn directions(old: Option<&Value>, new: Option<&Value>) -> Vec<(String, Direction)> {
        compare(old, new).into_iter().map(|c| (c.field, c.direction)).collect()
    }

    #[test]
    fn widening_loosens_and_narrowing_tightens() {
        let base = json!({ "schema": "s.json", "max_body": "64KiB", "query": { "allowed": ["a"] } });
        assert_eq!(directions(Some(&base), None), [(String::new(), Direction::Looser)]);
        assert_eq!(directions(None, Some(&base)), [(String::new(), Direction::Tighter)]);
        let wider = json!({ "max_body": "1MiB", "content_types": ["application/json", "text/plain"], "query": { "allowed": ["a", "b"] } });
        let found = directions(Some(&base), Some(&wider));
        assert!(found.contains(&("schema".into(), Direction::Looser)), "{found:?}");
        assert!(found.contains(&("content_types".into(), Direction::Looser)), "{found:?}");
        assert!(found.contains(&("max_body".into(), Direction::Looser)), "{found:?}");
        assert!(found.contains(&("query.allowed".into(), Direction::Looser)), "{found:?}");
        let narrower =
            json!({ "schema": "s.json", "max_body": 1024, "query": { "allowed": ["a"], "required": ["a"] } });
        let found = directions(Some(&base), Some(&narrower));
        assert_eq!(found, [("max_body".into(), Direction::Tighter), ("query.required".into(), Direction::Tighter)]);
    }
}
