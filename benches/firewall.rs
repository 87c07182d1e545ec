//! CIDR lookup cost at 10, 1k and 100k prefixes (sorted merged ranges + binary search).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use flowgate::firewall::{IpSet, IpSetBuilder};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn set_of(prefixes: u32) -> IpSet {
    let mut builder = IpSetBuilder::default();
    for i in 0..prefixes {
        // Disjoint /24s spread over the space, plus IPv6 /48s.
        let v4 = Ipv4Addr::from(i.wrapping_mul(2_654_435_761) & 0xffff_ff00);
        builder.add(&format!("{v4}/24")).expect("valid");
        if i % 4 == 0 {
            let v6 = Ipv6Addr::from((0x2001_0db8_u128 << 96) | (u128::from(i) << 80));
            builder.add(&format!("{v6}/48")).expect("valid");
        }
    }
    builder.build()
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("firewall_lookup");
    for prefixes in [10u32, 1_000, 100_000] {
        let set = set_of(prefixes);
        let probes: Vec<IpAddr> = (0..1024u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_246_822_519))))
            .chain((0..1024u32).map(|i| IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | (u128::from(i) << 70)))))
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(prefixes), &set, |b, set| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) % probes.len();
                black_box(set.contains(black_box(probes[i])))
            });
        });
    }
    group.finish();
    c.bench_function("firewall_compile_100k", |b| b.iter(|| black_box(set_of(100_000))));
}

criterion_group!(benches, lookup);
criterion_main!(benches);
