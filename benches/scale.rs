//! Cost per call against the size of the policy: the in-process pipeline
//! (`flowgate::proxy::handle`, every check, the upstream call over loopback to the echo
//! upstream, the run record) on the last exact and the last prefix route of a large policy
//! (`scripts/perf/scale-policy.py`: 10,000 exact and 1,000 prefix triggers, 100,000 CIDRs
//! global and per trigger, 10,000 principals on the trigger, 100 identities, 1,000 file
//! secrets) against the same triggers in a minimal policy, in the same process and run.
//!
//! Rows: an admitted call (`exact`, `prefix`), and a call refused by the principal rule
//! (`refused`: a valid token of another user; no upstream, so the policy-dependent work
//! is most of it). Criterion measures each row; then the two policies are measured
//! interleaved (round by round, so a change in the machine's load falls on both) and the
//! ratio of the medians is printed: it is the figure to read on a shared machine.
//!
//! `cargo bench --bench scale` runs the full scale; under `cargo test --benches` (no
//! `--bench` argument) criterion runs each row once and the interleaved pass runs on a
//! policy of 1 % scale, so the harness stays tested in a few seconds. Knob: `SCALE` (the
//! generator's `--scale`; default 1 when benching, 0.01 otherwise), `ROUNDS` and `BATCH` (of
//! the interleaved pass; default 21 × 2,000 when benching, 2 × 20 otherwise).
#![allow(clippy::disallowed_methods, reason = "the bench's scale is chosen in the environment")]

use bytes::Bytes;
use criterion::Criterion;
use flowgate::auth::dev_issuer::{DevIssuer, MintOptions};
use flowgate::gateway::Gateway;
use flowgate::proxy::Connection;
use http_body_util::{BodyExt, Full};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One policy under test, ready to take calls in process.
struct Subject {
    name: &'static str,
    gateway: Arc<Gateway>,
}

/// One kind of call: path and token.
#[derive(Clone, Copy)]
struct Shape {
    row: &'static str,
    stranger: bool,
    status: u16,
}

const SHAPES: [Shape; 3] = [
    Shape { row: "exact", stranger: false, status: 200 },
    Shape { row: "prefix", stranger: false, status: 200 },
    Shape { row: "refused", stranger: true, status: 403 },
];

struct Calls {
    token: String,
    stranger: String,
    exact: String,
    prefix: String,
    connection: Arc<Connection>,
}

impl Calls {
    fn path(&self, shape: Shape) -> &str {
        match shape.row {
            "prefix" => &self.prefix,
            _ => &self.exact,
        }
    }

    async fn call(&self, subject: &Subject, shape: Shape) {
        let token = if shape.stranger { &self.stranger } else { &self.token };
        let request = http::Request::post(format!("https://localhost{}", self.path(shape)))
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"hello\":\"flowgate\"}")))
            .expect("request");
        let response = flowgate::proxy::handle(subject.gateway.clone(), self.connection.clone(), request)
            .await
            .expect("infallible");
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        assert_eq!(status, shape.status, "{} on the {} policy", shape.row, subject.name);
    }
}

fn generate(dir: &Path, base: &Path, upstream: &str, oid: &str, scale: f64, small: bool) -> Arc<Gateway> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/perf/scale-policy.py");
    let mut command = std::process::Command::new("python3");
    command.arg(&script).arg(dir).arg("--base").arg(base).arg("--upstream").arg(upstream).arg("--oid").arg(oid);
    command.arg("--scale").arg(scale.to_string());
    if small {
        command.arg("--small");
    }
    let status = command.status().expect("python3 runs scripts/perf/scale-policy.py (apt-get install -y python3)");
    assert!(status.success(), "scale-policy.py failed");
    let started = Instant::now();
    let policy = flowgate::policy::load(&dir.join("policy.toml")).unwrap_or_else(|e| panic!("{e:?}"));
    println!("compiled the {} policy in {:?}", if small { "minimal" } else { "large" }, started.elapsed());
    Gateway::new(policy, None).expect("gateway")
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`): the runtime is
/// single-threaded, so this is the whole call's cost, the echo upstream's and the loopback
/// kernel work included, without the time other processes held the CPU.
fn thread_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux with /proc/thread-self/schedstat");
    text.split_whitespace().next().and_then(|n| n.parse().ok()).expect("schedstat's first field")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let scale: f64 =
        std::env::var("SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(if benching { 1.0 } else { 0.01 });
    // One thread, as the gateway runs pinned to one core: the echo upstream shares it.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (subjects, calls) = runtime.block_on(async {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream_url = format!("http://{}/invoke?api-version=1", upstream.local_addr().expect("addr"));
        tokio::spawn(flowgate::demo::serve_echo(upstream));
        let issuer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind issuer");
        let issuer_url = format!("http://{}", issuer_listener.local_addr().expect("addr"));
        let issuer = Arc::new(DevIssuer::load_or_create(dir.path(), &issuer_url).expect("issuer"));
        tokio::spawn(issuer.clone().serve(issuer_listener, std::future::pending::<()>()));
        let mine = MintOptions::default();
        let token = issuer.mint(&mine).expect("token");
        let other = MintOptions { oid: "0d2d3b0e-0000-4000-8000-ffffffffffff".into(), ..MintOptions::default() };
        let stranger = issuer.mint(&other).expect("token");
        let base = dir.path().join("base.toml");
        std::fs::write(
            &base,
            format!(
                "[server]\nplain_http_listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"off\"\n[shield]\nenabled = false\n{}\n",
                issuer.identity_toml("bench")
            ),
        )
        .expect("write base");
        let mut subjects = Vec::new();
        for (name, small) in [("minimal", true), ("large", false)] {
            let out = dir.path().join(name);
            let gateway = generate(&out, &base, &upstream_url, &mine.oid, scale, small);
            subjects.push(Subject { name, gateway });
        }
        let exact = 10_000.0 * scale;
        let prefix = 1_000.0 * scale;
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "small positive counts")]
        let (exact, prefix) = ((exact as u64).max(2) - 1, (prefix as u64).max(2) - 1);
        let calls = Calls {
            token,
            stranger,
            exact: format!("/scale/exact/{exact}"),
            prefix: format!("/scale/prefix/{prefix}/run"),
            connection: Arc::new(Connection::new("127.0.0.1:40000".parse().expect("addr"), true, 1)),
        };
        // The first call of each fetches the keys and fills the token and secret caches.
        for subject in &subjects {
            for shape in SHAPES {
                calls.call(subject, shape).await;
            }
        }
        (subjects, calls)
    });

    let mut criterion = Criterion::default().configure_from_args();
    for shape in SHAPES {
        for subject in &subjects {
            criterion.bench_function(&format!("scale/{}/{}", shape.row, subject.name), |b| {
                b.to_async(&runtime).iter(|| calls.call(subject, shape));
            });
        }
    }
    criterion.final_summary();

    // Interleaved: each round times a batch on each policy, so both see the same machine.
    let knob = |name: &str, bench: u32, smoke: u32| {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(if benching { bench } else { smoke })
    };
    let (rounds, batch) = (knob("ROUNDS", 21, 2), knob("BATCH", 2_000, 20));
    println!("\nscale bench at scale {scale}: {rounds} rounds of {batch} calls per policy and row, interleaved");
    println!("(CPU: this thread's run time, the figure for a loaded machine; wall: elapsed time)");
    for shape in SHAPES {
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
        let mut wall: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
        for _ in 0..rounds {
            for (i, subject) in subjects.iter().enumerate() {
                let (started, cpu_started) = (Instant::now(), thread_cpu_ns());
                runtime.block_on(async {
                    for _ in 0..batch {
                        calls.call(subject, shape).await;
                    }
                });
                #[expect(clippy::cast_precision_loss, reason = "nanoseconds of a batch stay far below 2^52")]
                cpu[i].push((thread_cpu_ns() - cpu_started) as f64 / 1e3 / f64::from(batch));
                wall[i].push(started.elapsed().as_secs_f64() * 1e6 / f64::from(batch));
            }
        }
        let cpu: Vec<f64> = cpu.into_iter().map(median).collect();
        let wall: Vec<f64> = wall.into_iter().map(median).collect();
        println!(
            "{:<8} CPU minimal {:>8.2} µs/call  large {:>8.2} µs/call  ratio {:.3}   \
             wall minimal {:>8.2}  large {:>8.2}  ratio {:.3}",
            shape.row,
            cpu[0],
            cpu[1],
            cpu[1] / cpu[0],
            wall[0],
            wall[1],
            wall[1] / wall[0]
        );
    }
    drop(subjects);
    runtime.shutdown_timeout(Duration::from_secs(1));
}
