//! Benches for the secrets hot path: a cached lookup, template rendering, and response
//! scrubbing. Uses an `env` vault (reading `HOME`), so nothing external is needed.
//!
//! Scrubbing's cost per MiB (quoted in the README) is read from the `scrub_1MiB_*` benches,
//! which report throughput: a plain JSON body, a body dense in the characters that may
//! start an escaped value (`%`, `\`, `&`: the scrubber's slow path), and a gzip body
//! decoded then scrubbed (what a compressing upstream costs).

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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
        b.to_async(&runtime).iter(|| async { black_box(store.lookup(&reference, &vaults).await.expect("lookup")) });
    });
    c.bench_function("secrets/render_template_cached", |b| {
        b.to_async(&runtime).iter(|| async { black_box(template.render(&store, &vaults).await.expect("render")) });
    });

    let scrubber =
        Scrubber::new(["a-secret-value-of-32-characters!", "another-one"].map(|s| SecretValue::new(s.into())));
    let body = Bytes::from("x".repeat(16 * 1024) + "a-secret-value-of-32-characters!");
    c.bench_function("secrets/scrub_16KiB_body", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(scrubber.wrap(Full::new(body.clone())).collect().await.expect("collect").to_bytes())
        });
    });

    // Cost per MiB, in 16 KiB frames as a streamed upstream body arrives.
    const MIB: usize = 1024 * 1024;
    let plain = Bytes::from(r#"{"id":12345,"name":"an ordinary echo","tags":["x","y"]},"#.repeat(MIB / 56 + 1));
    let escaped = Bytes::from(r"a%20b\n&amp;c%2F".repeat(MIB / 17 + 1));
    let gzip = runtime.block_on(async {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        async_compression::tokio::bufread::GzipEncoder::new(&plain[..]).read_to_end(&mut out).await.expect("gzip");
        Bytes::from(out)
    });
    let frames = |body: &Bytes| -> Vec<Bytes> { body.chunks(16 * 1024).map(Bytes::copy_from_slice).collect() };
    let streamed = |chunks: Vec<Bytes>| {
        let frames = chunks.into_iter().map(|c| Ok::<_, flowgate::proxy::BoxError>(http_body::Frame::data(c)));
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    };
    let mut group = c.benchmark_group("secrets/scrub_1MiB");
    group.throughput(Throughput::Bytes(MIB as u64));
    for (name, body) in [("plain_json", &plain), ("escape_dense", &escaped)] {
        let chunks = frames(body);
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                black_box(scrubber.wrap(streamed(chunks.clone())).collect().await.expect("collect").to_bytes().len())
            });
        });
    }
    let chunks = frames(&gzip);
    group.bench_function("gzip_decoded_then_scrubbed", |b| {
        b.to_async(&runtime).iter(|| async {
            let mut headers = http::HeaderMap::new();
            let coding = [flowgate::proxy::coding::Coding::Gzip];
            let decoded = flowgate::proxy::coding::decode(streamed(chunks.clone()), &coding, &mut headers);
            black_box(scrubber.wrap(decoded).collect().await.expect("collect").to_bytes().len())
        });
    });
    group.finish();
}

criterion_group!(secrets, benches);
criterion_main!(secrets);
