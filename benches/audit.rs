//! Hot paths of the run history: capturing a JSON body with every protection applied,
//! and handing a record to the log (ring plus queue), which a call pays for inline.
#![allow(
    clippy::disallowed_methods,
    reason = "run records are stamped as a running gateway stamps them, with the real time"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use flowgate::audit::{AuditConfig, AuditLog, CaptureRules, RunRecord, capture_response};
use http::{HeaderMap, HeaderValue};
use std::hint::black_box;
use std::time::SystemTime;

fn body() -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..40)
        .map(|i| serde_json::json!({"id": i, "name": "widget", "_private_cost": 3, "password": "pw", "echo": "k-SECRET"}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"items": items, "total": 40})).unwrap_or_default()
}

fn capture(c: &mut Criterion) {
    let rules = CaptureRules {
        enabled: true,
        max_bytes: 64 * 1024,
        private_parameters: ["password".to_owned()].into_iter().collect(),
        ..CaptureRules::default()
    };
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("authorization", HeaderValue::from_static("Bearer abc"));
    let body = body();
    let secret: &[u8] = b"k-SECRET";
    c.bench_function(&format!("audit/capture_json_{}b", body.len()), |b| {
        b.iter(|| capture_response(&rules, &headers, black_box(&body), body.len() as u64, &[secret]));
    });
}

fn write(c: &mut Criterion) {
    let Ok(log) = AuditLog::new(&AuditConfig { ring: 10_000, ..AuditConfig::default() }) else {
        return;
    };
    let record = RunRecord::new("req", SystemTime::now(), "POST", "/t/invoice");
    c.bench_function("audit/write_ring_only", |b| b.iter(|| log.write(black_box(record.clone()))));
}

criterion_group!(benches, capture, write);
criterion_main!(benches);
