//! Conformance of the contract path: for each supported draft, the official
//! JSON-Schema-Test-Suite cases for the keywords the policy reference lists (vendored in
//! `tests/data/json-schema-test-suite`, see its README) go through `Contract::compile`
//! (the schema written to a file, as a policy names it) and `Contract::check_body` (the
//! case's data as JSON text). A case's data holding a whole number beyond ±(2^53−1) must be
//! refused as not strict JSON whatever the suite expects; every other case must get the
//! suite's verdict; a schema holding such a number must be refused at load. Beside them,
//! schemas Power Automate generates from sample payloads.

use flowgate::config::{Diagnostics, KeyPath, SourceFile};
use flowgate::contract::{Contract, RawContract, SchemaDraft};
use flowgate::denial::PayloadStatus;
use serde_json::{Value, json};
use std::path::Path;

/// Compiles a contract whose schema is `schema`, read as `draft` unless it says otherwise.
fn contract(dir: &Path, name: &str, schema: &Value, draft: SchemaDraft) -> Result<Contract, String> {
    std::fs::write(dir.join(name), schema.to_string()).unwrap();
    let raw = RawContract { schema: Some(name.to_owned()), draft: Some(draft), ..RawContract::default() };
    let source = SourceFile { name: "policy.toml".into(), base_dir: dir.to_path_buf(), text: String::new() };
    let mut diags = Diagnostics::default();
    let compiled = Contract::compile(&raw, u64::MAX, &source, &KeyPath::root().key("contract"), &mut diags);
    compiled.ok_or_else(|| format!("{:?}", diags.into_vec()))
}

/// Whether `value` holds a whole number beyond the safe range anywhere.
fn has_unsafe_number(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() > 9_007_199_254_740_991.0),
        Value::Array(items) => items.iter().any(has_unsafe_number),
        Value::Object(map) => map.values().any(has_unsafe_number),
        _ => false,
    }
}

fn run_draft(directory: &str, draft: SchemaDraft) -> (usize, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new("tests/data/json-schema-test-suite").join(directory);
    let mut files: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 20, "{directory}: the vendored sample is missing");
    let (mut cases, mut wrong) = (0, Vec::new());
    for file in files {
        let groups: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let keyword = file.file_stem().unwrap().to_string_lossy().into_owned();
        for (g, group) in groups.iter().enumerate() {
            let description = group["description"].as_str().unwrap_or("");
            let compiled = match contract(dir.path(), &format!("{keyword}-{g}.json"), &group["schema"], draft) {
                Ok(compiled) => compiled,
                // A schema holding a whole number no reader holds exactly is refused at
                // load, like a body holding one: every body it would compare is refused.
                Err(e) if has_unsafe_number(&group["schema"]) && e.contains("unsafe_integer") => continue,
                Err(e) => {
                    wrong.push(format!("{directory}/{keyword}: {description}: schema refused: {e}"));
                    continue;
                }
            };
            for case in group["tests"].as_array().unwrap() {
                cases += 1;
                let data = &case["data"];
                let bytes = serde_json::to_vec(data).unwrap();
                let verdict = compiled.check_body(&bytes);
                let expected_valid = case["valid"].as_bool().unwrap();
                let right = if has_unsafe_number(data) {
                    verdict.as_ref().is_err_and(|r| r.status == PayloadStatus::Malformed)
                } else {
                    match &verdict {
                        Ok(()) => expected_valid,
                        Err(refusal) => !expected_valid && refusal.status == PayloadStatus::BreaksSchema,
                    }
                };
                if !right {
                    wrong.push(format!(
                        "{directory}/{keyword}: {description}: {}: expected valid={expected_valid}, got {verdict:?}",
                        case["description"].as_str().unwrap_or("")
                    ));
                }
            }
        }
    }
    (cases, wrong)
}

#[test]
fn the_official_suite_passes_through_the_contract_path_for_every_draft() {
    for (directory, draft) in [
        ("draft4", SchemaDraft::Draft4),
        ("draft6", SchemaDraft::Draft6),
        ("draft7", SchemaDraft::Draft7),
        ("draft2019-09", SchemaDraft::Draft201909),
        ("draft2020-12", SchemaDraft::Draft202012),
    ] {
        let (cases, wrong) = run_draft(directory, draft);
        assert!(cases > 300, "{directory}: only {cases} cases ran");
        assert!(wrong.is_empty(), "{directory}: {} of {cases} cases wrong:\n{}", wrong.len(), wrong.join("\n"));
    }
}

/// What Power Automate's "Use sample payload to generate schema" writes (no `$schema`,
/// draft-04 style, `required` on objects inside arrays), pasted unchanged.
#[test]
fn power_automate_generated_schemas_work_pasted_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // Generated from {"id": 7, "name": "Ada", "active": true, "score": 9.5, "tags": ["a"],
    //   "address": {"city": "Oslo", "zip": "0150"}, "orders": [{"orderId": "O-1", "total": 12.5}]}
    let generated = json!({
        "type": "object",
        "properties": {
            "id": { "type": "integer" },
            "name": { "type": "string" },
            "active": { "type": "boolean" },
            "score": { "type": "number" },
            "tags": { "type": "array", "items": { "type": "string" } },
            "address": {
                "type": "object",
                "properties": { "city": { "type": "string" }, "zip": { "type": "string" } }
            },
            "orders": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": { "orderId": { "type": "string" }, "total": { "type": "number" } },
                    "required": ["orderId", "total"]
                }
            }
        }
    });
    // The default draft (4) and an explicit `$schema` draft-04 read it the same way.
    let mut with_schema = generated.clone();
    with_schema["$schema"] = json!("http://json-schema.org/draft-04/schema#");
    for (name, schema) in [("generated.json", &generated), ("declared.json", &with_schema)] {
        let compiled = contract(dir.path(), name, schema, SchemaDraft::default()).unwrap();
        let sample = br#"{"id": 7, "name": "Ada", "active": true, "score": 9.5, "tags": ["a"],
            "address": {"city": "Oslo", "zip": "0150"}, "orders": [{"orderId": "O-1", "total": 12.5}]}"#;
        assert!(compiled.check_body(sample).is_ok(), "the sample it was generated from");
        // Draft 4, like Newtonsoft (a `Float` token) in Logic Apps: 7.0 is not an integer.
        assert_eq!(compiled.check_body(br#"{"id": 7.0}"#).unwrap_err().status, PayloadStatus::BreaksSchema);
        let broken = compiled.check_body(br#"{"id": "7", "orders": [{"orderId": "O-1"}], "tags": [1]}"#).unwrap_err();
        assert_eq!(broken.status, PayloadStatus::BreaksSchema);
        let mut found: Vec<(String, String)> =
            broken.failures.iter().map(|f| (f.at.clone(), f.keyword.clone())).collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("/id".to_owned(), "type".to_owned()),
                ("/orders/0".to_owned(), "required".to_owned()),
                ("/tags/0".to_owned(), "type".to_owned())
            ]
        );
    }
    // A Logic Apps schema that says draft-04 in its own words, with the boolean
    // `exclusiveMaximum` only draft 4 has.
    let logic_apps = json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": { "percent": { "type": "number", "maximum": 100, "exclusiveMaximum": true } }
    });
    let compiled = contract(dir.path(), "logic.json", &logic_apps, SchemaDraft::Draft202012).unwrap();
    assert!(compiled.check_body(br#"{"percent": 99.5}"#).is_ok());
    assert!(compiled.check_body(br#"{"percent": 100}"#).is_err(), "$schema wins over the contract's draft");
}

#[test]
fn broken_schemas_are_refused_at_load_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let unsupported = json!({ "$schema": "https://example.com/my-meta", "type": "object" });
    let e = contract(dir.path(), "meta.json", &unsupported, SchemaDraft::default()).unwrap_err();
    assert!(e.contains("not a supported draft"), "{e}");
    let invalid = json!({ "type": "objekt" });
    let e = contract(dir.path(), "invalid.json", &invalid, SchemaDraft::default()).unwrap_err();
    assert!(e.contains("not a valid schema"), "{e}");
    let remote = json!({ "$ref": "https://example.com/other.json" });
    assert!(contract(dir.path(), "remote.json", &remote, SchemaDraft::Draft202012).is_err(), "no network");
    let lookaround = json!({ "type": "string", "pattern": "^(?!admin).*$" });
    assert!(contract(dir.path(), "look.json", &lookaround, SchemaDraft::Draft7).is_err(), "linear-time regex only");
}
