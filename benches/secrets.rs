//! Benches for the secrets hot path: a cached lookup, template rendering, and response
//! scrubbing. Uses an `env` vault (reading `HOME`), so nothing external is needed.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use flowgate::secrets::{CacheSettings, Scrubber, SecretRef, SecretStore, SecretValue, Template, Vault, Vaults};
use http_body_util::{BodyExt, Full};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let vaults = Vaults::from_parts(vec![Vault::env_for_tests("env", "")], CacheSettings::default());
    let store = SecretStore::new();
    let reference = SecretRef::parse("secret://env/home").expect("reference");
    let template = Template::parse("Bearer {{secret://env/home}}").expect("template");
    runtime.block_on(store.lookup(&reference, &vaults)).expect("HOME must be set for this bench");

    c.bench_function("secrets/cached_lookup", |b| {
        b.to_async(&runtime).iter(|| async { black_box(store.lookup(&reference, &vaults).await.expect("lookup")) })
    });
    c.bench_function("secrets/render_template_cached", |b| {
        b.to_async(&runtime).iter(|| async { black_box(template.render(&store, &vaults).await.expect("render")) })
    });

    let scrubber =
        Scrubber::new(["a-secret-value-of-32-characters!", "another-one"].map(|s| SecretValue::new(s.into())));
    let body = Bytes::from("x".repeat(16 * 1024) + "a-secret-value-of-32-characters!");
    c.bench_function("secrets/scrub_16KiB_body", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(scrubber.wrap(Full::new(body.clone())).collect().await.expect("collect").to_bytes())
        })
    });
}

criterion_group!(secrets, benches);
criterion_main!(secrets);
