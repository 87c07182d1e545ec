//! The policy as shown to admins (`/policy`, `flowgate check --diff`): built from the
//! policy TEXT so that it stays decoupled from the typed structs, with secret references
//! shown, literal credential values never, and private options omitted unless the viewer
//! may see them.
//!
//! What is hidden:
//! - the value of a credential-like option (`*secret*`, `*password*`, `*token*`, `key`,
//!   `keys`, `*_key`, …) unless it is a secret reference (`secret://…`, `env:…`,
//!   `file:…`): shown as `"[literal]"`;
//! - inject templates (`inject.*`) that hold no `secret://` reference: `"[literal]"`;
//! - passwords in URLs and credential-like query parameters (`sig`, `code`, `token`, …):
//!   `[redacted]`;
//! - unless `include_private`: each trigger's `private_parameters` and the options named
//!   in its `private_fields` (dotted paths inside the trigger).

use crate::secrets::redact_url;
use serde_json::{Map, Value};

/// Shown instead of a literal credential value.
pub(super) const LITERAL: &str = "[literal]";

/// Parses the policy text and builds its admin view.
///
/// # Errors
/// The text is not valid TOML.
pub fn policy_view(text: &str, include_private: bool) -> Result<Value, toml::de::Error> {
    let table: toml::Table = toml::from_str(text)?;
    Ok(policy_view_table(&table, include_private))
}

/// [`policy_view`] over an already parsed table.
pub fn policy_view_table(table: &toml::Table, include_private: bool) -> Value {
    policy_view_tagged(table, include_private, None)
}

/// [`policy_view_table`] where, with `tag_key`, each literal is shown as
/// `[literal:TAG]`, TAG being a keyed hash of the value: two views made with the same
/// (random, short-lived) key show whether a literal changed, without a stable
/// fingerprint of the value. [`untag_literals`] turns the tags back into `[literal]`.
pub(crate) fn policy_view_tagged(table: &toml::Table, include_private: bool, tag_key: Option<&[u8]>) -> Value {
    let mut view = convert_table(table, &mut Vec::new(), false, tag_key);
    if !include_private && let Some(Value::Array(triggers)) = view.get_mut("trigger") {
        triggers.iter_mut().for_each(hide_private);
    }
    view
}

/// Whether `value` names a secret rather than holding one: `secret://…`, `env:NAME`, `file:PATH`.
pub fn is_secret_reference(value: &str) -> bool {
    value.starts_with("secret://") || value.starts_with("env:") || value.starts_with("file:")
}

fn hide_private(trigger: &mut Value) {
    let Value::Object(map) = trigger else { return };
    map.remove("private_parameters");
    let fields: Vec<String> = match map.get("private_fields") {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    for field in fields {
        if field != "name" {
            remove_dotted(map, &field);
        }
    }
}

fn remove_dotted(map: &mut Map<String, Value>, dotted: &str) {
    match dotted.split_once('.') {
        None => {
            map.remove(dotted);
        }
        Some((head, rest)) => {
            if let Some(Value::Object(child)) = map.get_mut(head) {
                remove_dotted(child, rest);
            }
        }
    }
}

/// Whether an option's name says it holds a credential. `parent` is the enclosing key.
fn is_credential_key(name: &str, parent: Option<&str>) -> bool {
    let name = name.to_ascii_lowercase();
    const WORDS: [&str; 8] =
        ["secret", "password", "passwd", "token", "credential", "apikey", "api_key", "private_key"];
    if WORDS.iter().any(|w| name.contains(w)) || name == "keys" || name.ends_with("_key") {
        return true;
    }
    // `tls.key` is a file path and `rate_limit.key` a limiter key kind, not credentials.
    name == "key" && !matches!(parent, Some("tls" | "rate_limit"))
}

fn convert_table(table: &toml::Table, path: &mut Vec<String>, secret: bool, tag: Option<&[u8]>) -> Value {
    let mut map = Map::with_capacity(table.len());
    for (key, value) in table {
        let parent = path.last().map(String::as_str);
        let child_secret = secret || is_credential_key(key, parent);
        path.push(key.clone());
        map.insert(key.clone(), convert(value, path, child_secret, tag));
        path.pop();
    }
    Value::Object(map)
}

fn convert(value: &toml::Value, path: &mut Vec<String>, secret: bool, tag: Option<&[u8]>) -> Value {
    match value {
        toml::Value::String(text) => Value::String(show_string(text, path, secret, tag)),
        toml::Value::Integer(_) | toml::Value::Float(_) if secret => Value::String(literal(&value.to_string(), tag)),
        toml::Value::Integer(n) => Value::from(*n),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(|item| convert(item, path, secret, tag)).collect()),
        toml::Value::Table(table) => convert_table(table, path, secret, tag),
    }
}

fn show_string(text: &str, path: &[String], secret: bool, tag: Option<&[u8]>) -> String {
    let in_inject = path.iter().any(|segment| segment == "inject");
    if (secret && !is_secret_reference(text)) || (in_inject && !text.contains("secret://")) {
        return literal(text, tag);
    }
    redact_url(text)
}

/// What stands for a literal credential: `[literal]`, or `[literal:TAG]` with a tag key.
fn literal(text: &str, tag: Option<&[u8]>) -> String {
    use hmac::{Hmac, Mac};
    let Some(key) = tag else { return LITERAL.to_owned() };
    match <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(text.as_bytes());
            format!("[literal:{}]", hex::encode(&mac.finalize().into_bytes()[..8]))
        }
        Err(_) => LITERAL.to_owned(),
    }
}

/// Replaces every `[literal:TAG]` in `text` by `[literal]`.
pub(crate) fn untag_literals(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("[literal:") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(end) = after.find(']') {
            out.push_str(LITERAL);
            rest = &after[end + 1..];
        } else {
            out.push_str(after);
            rest = "";
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_every_credential_like_part() {
        for url in [
            "https://h/p?api-version=1&subscription-key=SUBKEY&client-secret=CS",
            "redis+unix:///run/redis.sock?pass=REDISPASS",
            "https://TOKENUSER@h/p",
        ] {
            let shown = redact_url(url);
            for leaked in ["SUBKEY", "CS", "REDISPASS", "TOKENUSER"] {
                assert!(!shown.contains(leaked), "{leaked} shown: {shown}");
            }
        }
        assert!(redact_url("https://h/p?api-version=1&sig=x").contains("api-version=1"));
        assert_eq!(
            redact_url("https://hooks.example/s/{{secret://kv/hook#path}}?sig=SIGVALUE&v=1"),
            "https://hooks.example/s/{{secret://kv/hook#path}}?sig=[redacted]&v=1"
        );
    }

    const POLICY: &str = r#"
        [vault.kv]
        kind = "openbao"
        address = "https://127.0.0.1:8200"
        auth = { method = "approle", role_id = "r-1", secret_id = "env:FLOWGATE_SECRET_ID", password = "hunter2" }

        [signed_urls.keys]
        k1 = "secret://kv/sign#k1"
        k2 = "plainly-secret-literal"

        [cluster]
        redis = "redis://:redispass@127.0.0.1:6379/0"

        [[trigger]]
        name = "inv"
        path = "/t/inv"
        upstream = "https://flows.example/invoke?api-version=1&sig=SIGVALUE&sp=run"
        who = "anyone"
        rate_limit = { calls = 5, period = "60s", key = "principal" }
        private_parameters = ["password"]
        private_fields = ["upstream", "inject.query"]
        inject.headers."x-api-key" = "secret://kv/flows#api_key"
        inject.headers."x-static" = "static-literal"
        inject.query.code = "secret://kv/code"
    "#;

    #[test]
    fn secrets_never_shown_references_are() {
        let view = policy_view(POLICY, true).expect("parses").to_string();
        for leaked in ["hunter2", "plainly-secret-literal", "redispass", "SIGVALUE", "static-literal"] {
            assert!(!view.contains(leaked), "{leaked} leaked: {view}");
        }
        for shown in ["env:FLOWGATE_SECRET_ID", "secret://kv/sign#k1", "secret://kv/flows#api_key", "principal"] {
            assert!(view.contains(shown), "{shown} missing: {view}");
        }
        assert!(view.contains("api-version=1"), "{view}");
    }

    #[test]
    fn private_fields_hidden_unless_included() {
        let hidden = policy_view(POLICY, false).expect("parses");
        let trigger = &hidden["trigger"][0];
        assert!(trigger.get("private_parameters").is_none());
        assert!(trigger.get("upstream").is_none());
        assert!(trigger["inject"].get("query").is_none());
        assert!(trigger["inject"].get("headers").is_some());
        let shown = policy_view(POLICY, true).expect("parses");
        assert_eq!(shown["trigger"][0]["private_parameters"][0], "password");
        assert!(shown["trigger"][0]["upstream"].is_string());
    }

    #[test]
    fn tagged_literals_compare_but_print_plain() {
        let table: toml::Table = toml::from_str("[a]\npassword = \"one\"\n[b]\npassword = \"two\"").expect("parses");
        let view = policy_view_tagged(&table, true, Some(b"k"));
        assert_ne!(view["a"]["password"], view["b"]["password"]);
        let text = view.to_string();
        assert!(!text.contains("one") && !text.contains("two"), "{text}");
        assert_eq!(untag_literals(&text), r#"{"a":{"password":"[literal]"},"b":{"password":"[literal]"}}"#);
    }
}
