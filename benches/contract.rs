//! Payload contract cost per KiB of a typical flow payload: an invoice with N lines
//! checked by `Contract::check_body` (strict JSON read, then the Power Automate-style
//! schema), at 1, 16 and 64 KiB, reported as throughput so a row reads as time per KiB;
//! beside it the strict read alone, to show what the schema itself adds. Compare with the
//! cached bearer path in `benches/auth.rs` (docs/PERFORMANCE.md).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flowgate::config::{Diagnostics, KeyPath, SourceFile};
use flowgate::contract::{Contract, RawContract};
use serde_json::json;
use std::hint::black_box;

const SCHEMA: &str = r#"{
    "type": "object",
    "properties": {
        "invoiceId": { "type": "string" },
        "customer": {
            "type": "object",
            "properties": { "name": { "type": "string" }, "email": { "type": "string" } }
        },
        "amount": { "type": "number" },
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "sku": { "type": "string" },
                    "description": { "type": "string" },
                    "qty": { "type": "integer" },
                    "price": { "type": "number" }
                },
                "required": ["sku", "qty", "price"]
            }
        }
    },
    "required": ["invoiceId", "amount", "lines"]
}"#;

/// An invoice body of about `kib` KiB.
fn payload(kib: usize) -> Vec<u8> {
    let line = |i: usize| json!({ "sku": format!("SKU-{i:05}"), "description": "Standard widget, blue", "qty": i % 7 + 1, "price": 12.5 });
    let mut lines = Vec::new();
    loop {
        lines.push(line(lines.len()));
        let body = json!({
            "invoiceId": "INV-2026-0001",
            "customer": { "name": "Contoso Ltd", "email": "ap@contoso.example" },
            "amount": 1234.5,
            "lines": lines,
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        if bytes.len() >= kib * 1024 {
            return bytes;
        }
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("invoice.json"), SCHEMA).unwrap();
    let raw = RawContract { schema: Some("invoice.json".into()), ..RawContract::default() };
    let source = SourceFile { name: "bench.toml".into(), base_dir: dir.path().to_path_buf(), text: String::new() };
    let mut diags = Diagnostics::default();
    let contract = Contract::compile(&raw, u64::MAX, &source, &KeyPath::root(), &mut diags).expect("compiles");

    let mut group = c.benchmark_group("contract");
    for kib in [1, 16, 64] {
        let body = payload(kib);
        assert!(contract.check_body(&body).is_ok(), "the bench payload meets its schema");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("check_body", format!("{kib}KiB")), &body, |b, body| {
            b.iter(|| contract.check_body(black_box(body)));
        });
        group.bench_with_input(BenchmarkId::new("strict_read_only", format!("{kib}KiB")), &body, |b, body| {
            b.iter(|| flowgate::contract::strict::read(black_box(body)));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
