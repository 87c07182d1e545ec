//! Random bodies through a compiled payload contract (a Power Automate-style schema with
//! nested objects, arrays, a pattern and bounds): never panics, stays linear (the `regex`
//! engine cannot backtrack), and agrees with itself: a body the contract accepts is strict
//! JSON that plain serde_json reads to the same value, and every refusal lists at most 10
//! failures whose pointers resolve in the body (schema failures) or name a strict rule.
#![no_main]
use flowgate::config::{Diagnostics, KeyPath, SourceFile};
use flowgate::contract::{Contract, RawContract};
use flowgate::denial::{MAX_LISTED, PayloadStatus};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "invoiceId": { "type": "string", "pattern": "^INV-[0-9]{1,8}$" },
    "amount": { "type": "number", "minimum": 0, "maximum": 1000000, "multipleOf": 0.01 },
    "currency": { "enum": ["EUR", "USD", "NOK"] },
    "lines": {
      "type": "array", "maxItems": 50, "uniqueItems": true,
      "items": {
        "type": "object",
        "properties": { "sku": { "type": "string", "minLength": 1 }, "qty": { "type": "integer", "minimum": 1 } },
        "required": ["sku", "qty"],
        "additionalProperties": false
      }
    },
    "meta": { "anyOf": [ { "type": "null" }, { "type": "object", "maxProperties": 5 } ] }
  },
  "required": ["invoiceId", "amount"]
}"#;

fn contract() -> &'static Contract {
    static CONTRACT: OnceLock<(tempfile::TempDir, Contract)> = OnceLock::new();
    &CONTRACT
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("invoice.json"), SCHEMA).unwrap();
            let raw = RawContract { schema: Some("invoice.json".into()), ..RawContract::default() };
            let source = SourceFile { name: "fuzz.toml".into(), base_dir: dir.path().to_path_buf(), text: String::new() };
            let mut diags = Diagnostics::default();
            let contract = Contract::compile(&raw, u64::MAX, &source, &KeyPath::root(), &mut diags).expect("the schema compiles");
            (dir, contract)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    match contract().check_body(data) {
        Ok(()) => {
            let plain: serde_json::Value = serde_json::from_slice(data).expect("accepted what serde_json refuses");
            assert!(plain.is_object());
        }
        Err(refusal) => {
            assert!(!refusal.failures.is_empty() && refusal.failures.len() <= MAX_LISTED);
            assert!(refusal.total >= refusal.failures.len());
            if refusal.status == PayloadStatus::BreaksSchema {
                let plain: serde_json::Value = serde_json::from_slice(data).expect("a schema verdict on non-JSON");
                for failure in &refusal.failures {
                    assert!(plain.pointer(&failure.at).is_some(), "{} does not resolve", failure.at);
                }
            } else {
                assert_eq!(refusal.status, PayloadStatus::Malformed);
            }
        }
    }
});
