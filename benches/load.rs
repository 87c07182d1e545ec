//! Load bench for the whole proxy: the real gateway (TLS, HTTP/1.1 keep-alive) in
//! front of a small upstream, driven by concurrent clients, side by side with the same
//! clients calling the upstream directly, in the same run. Reports requests/s and
//! p50/p99 latency for both and their ratios.
//!
//! `cargo bench --bench load` runs 10 s per side with 32 connections; under `cargo test`
//! (no `--bench` argument) it runs a 1 s smoke pass so the harness itself stays tested.
//! Knobs: `LOAD_SECONDS`, `LOAD_CONNECTIONS`.
#![allow(clippy::disallowed_methods, reason = "the load shape is chosen in the environment")]

use flowgate::gateway::Gateway;
use flowgate::server::{self, Listeners};
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Side {
    name: &'static str,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

#[expect(clippy::cast_precision_loss, reason = "request counts and microseconds stay far below 2^52")]
impl Side {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn p(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

async fn drive(name: &'static str, client: reqwest::Client, url: String, connections: usize, seconds: u64) -> Side {
    // Warm the pool so connection setup is not measured.
    for _ in 0..connections {
        let _ = client.post(&url).body("{}").send().await.map(reqwest::Response::bytes);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (mut ok, mut errors) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match client.post(&url).body("{\"hello\":\"flowgate\"}").send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok += 1;
                        let _ = latency.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                    _ => errors += 1,
                }
            }
            (ok, errors, latency)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut side = Side {
        name,
        requests: 0,
        errors: 0,
        elapsed: started.elapsed(),
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    };
    for task in tasks {
        let (ok, errors, latency) = task.await.expect("load task");
        side.requests += ok;
        side.errors += errors;
        side.latency.add(latency).expect("histogram add");
    }
    side
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let seconds = env("LOAD_SECONDS", if benching { 10 } else { 1 });
    let connections =
        usize::try_from(env("LOAD_CONNECTIONS", if benching { 32 } else { 4 })).expect("LOAD_CONNECTIONS fits a usize");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = flowgate::tls::dev::DevPki::generate().expect("pki");
        std::fs::write(dir.path().join("server.crt"), &pki.server_cert_pem).expect("write");
        std::fs::write(dir.path().join("server.key"), &pki.server_key_pem).expect("write");
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream_addr = upstream.local_addr().expect("addr");
        tokio::spawn(flowgate::demo::serve_echo(upstream));
        // One principal drives far more than 2000 calls a minute: the trigger turns the
        // built-in rate limit off, so the bench measures the proxy, as before the default.
        // (The shield counts only refused credentials; it is off as before.)
        // Callers present a token, as real ones do (verified once, then served from the
        // verified-token cache).
        let issuer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind issuer");
        let issuer_url = format!("http://{}", issuer_listener.local_addr().expect("addr"));
        let issuer = std::sync::Arc::new(
            flowgate::auth::dev_issuer::DevIssuer::load_or_create(dir.path(), &issuer_url).expect("issuer"),
        );
        tokio::spawn(issuer.clone().serve(issuer_listener, std::future::pending::<()>()));
        let token = issuer.mint(&flowgate::auth::dev_issuer::MintOptions::default()).expect("token");
        let policy_path = dir.path().join("policy.toml");
        std::fs::write(
            &policy_path,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"server.crt\", key = \"server.key\" }}\n\
                 [admin]\nlisten = \"off\"\n[shield]\nenabled = false\n{}\n\
                 [[trigger]]\nname = \"bench\"\npath = \"/bench\"\nupstream = \"http://{upstream_addr}/invoke?api-version=1\"\n\
                 who = \"tenant_users\"\nidentity = \"bench\"\nrate_limit = \"off\"\n",
                issuer.identity_toml("bench")
            ),
        )
        .expect("write policy");
        let policy = flowgate::policy::load(&policy_path).unwrap_or_else(|e| panic!("{e:?}"));
        let listeners = Listeners::bind(&policy).await.expect("bind gateway");
        let https = listeners.https_addr().expect("https");
        let gateway = Gateway::new(policy, None).expect("gateway");
        tokio::spawn(server::run(gateway, listeners, std::future::pending::<()>()));

        let ca = reqwest::Certificate::from_pem(pki.ca_cert_pem.as_bytes()).expect("ca");
        let mut auth = reqwest::header::HeaderMap::new();
        auth.insert("authorization", format!("Bearer {token}").parse().expect("header"));
        let tls_client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .default_headers(auth)
            .http1_only()
            .no_proxy()
            .build()
            .expect("client");
        let plain_client = reqwest::Client::builder().http1_only().no_proxy().build().expect("client");

        let direct = drive("direct upstream (http/1.1)", plain_client, format!("http://{upstream_addr}/invoke?api-version=1"), connections, seconds).await;
        let through = drive("through flowgate (https/1.1)", tls_client, format!("https://localhost:{}/bench", https.port()), connections, seconds).await;

        println!("load bench: {connections} connections, {seconds} s per side, same run, same client");
        for side in [&direct, &through] {
            println!(
                "{:<30} {:>10.0} req/s   p50 {:>8.3} ms   p99 {:>8.3} ms   errors {}",
                side.name,
                side.rps(),
                side.p(0.50),
                side.p(0.99),
                side.errors
            );
        }
        println!(
            "ratio gateway/direct: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
            through.rps() / direct.rps(),
            through.p(0.50) / direct.p(0.50),
            through.p(0.99) / direct.p(0.99)
        );
        assert_eq!(through.errors, 0, "the gateway refused or failed calls under load");
    });
}
