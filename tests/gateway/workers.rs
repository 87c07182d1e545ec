//! Thread-per-core serving with two worker threads: connections are spread over both
//! workers, and what must be exact stays exact across them (rate-limit budgets, the
//! connection cap), graceful shutdown drains calls on both, a reload reaches both, and a
//! reload that tightens the TLS rules closes old connections on both.
//! Which worker took a connection is read from `flowgate_worker_connections_total{worker}`;
//! only these tests run two workers, and they take turns, so the `worker="1"` count moves
//! only by their connections.

use crate::common::{Fixture, Running, echo_trigger, metrics_text, start_echo, start_gateway_on};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Mutex, Notify, Semaphore};

/// Two-worker tests take turns, so the `worker="1"` count belongs to one test at a time.
static TURN: Mutex<()> = Mutex::const_new(());

async fn serve_on_two_workers(fx: &Fixture, text: &str) -> Running {
    fx.serve_issuer();
    start_gateway_on(&fx.write_policy(text), 2).await
}

/// Connections taken by worker 1 so far (every gateway's: see the module header).
async fn taken_by_worker_one(gw: &Running) -> u64 {
    metrics_text(gw)
        .await
        .lines()
        .find_map(|line| line.strip_prefix("flowgate_worker_connections_total{worker=\"1\"} "))
        .map_or(0, |n| n.trim().parse().expect("a counter"))
}

/// `calls` calls at once, each on a new connection (a client of its own); their statuses.
async fn one_call_per_connection(fx: &Fixture, gw: &Running, path: &str, calls: usize) -> Vec<u16> {
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let (client, url) = (fx.client(false), gw.url(path));
        running.spawn(async move { client.post(url).send().await.map(|r| r.status().as_u16()) });
    }
    let mut statuses = Vec::new();
    while let Some(done) = running.join_next().await {
        statuses.push(done.unwrap().expect("the call is answered"));
    }
    statuses
}

/// Asserts both workers took some of the `opened` connections made since `before` was read.
async fn both_workers_served(gw: &Running, before: u64, opened: u64) {
    let by_one = taken_by_worker_one(gw).await - before;
    assert!(by_one > 0 && by_one < opened, "worker 1 took {by_one} of {opened} connections: both must take some");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_over_both_workers() {
    let _turn = TURN.lock().await;
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = serve_on_two_workers(&fx, &fx.policy_text(&echo_trigger("t", "/t", echo, ""))).await;
    let before = taken_by_worker_one(&gw).await;
    let statuses = one_call_per_connection(&fx, &gw, "/t", 64).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    both_workers_served(&gw, before, 64).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_rate_limit_stays_exact_across_workers() {
    let _turn = TURN.lock().await;
    let fx = Fixture::new();
    let echo = start_echo().await;
    let limited = echo_trigger("limited", "/limited", echo, "rate_limit = { calls = 25, period = \"600s\" }");
    let gw = serve_on_two_workers(&fx, &fx.policy_text(&limited)).await;
    let before = taken_by_worker_one(&gw).await;
    let statuses = one_call_per_connection(&fx, &gw, "/limited", 80).await;
    let passed = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((passed, refused), (25, 55), "{statuses:?}");
    both_workers_served(&gw, before, 80).await;
    gw.shutdown().await;
}

/// An upstream that holds every request until the test lets it go, counting how many it
/// holds at once.
struct Gate {
    holding: AtomicUsize,
    most: AtomicUsize,
    arrived: Notify,
    release: Semaphore,
}

impl Gate {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            holding: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            arrived: Notify::new(),
            release: Semaphore::new(0),
        })
    }

    async fn start(self: &Arc<Self>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let gate = gate.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        let gate = gate.clone();
                        async move {
                            let now = gate.holding.fetch_add(1, Ordering::SeqCst) + 1;
                            gate.most.fetch_max(now, Ordering::SeqCst);
                            gate.arrived.notify_waiters();
                            gate.release.acquire().await.unwrap().forget();
                            gate.holding.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"{}"))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    /// Waits until `count` requests are held (a hang guard, not a timing assertion).
    async fn holding_at_least(&self, count: usize) {
        let wait = async {
            loop {
                let arrived = self.arrived.notified();
                if self.holding.load(Ordering::SeqCst) >= count {
                    return;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), wait).await.expect("the calls reach the upstream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_across_workers() {
    let _turn = TURN.lock().await;
    let fx = Fixture::new();
    let gate = Gate::new();
    let upstream = gate.start().await;
    let text = fx.policy_text(&format!(
        "[limits]\nmax_connections = 3\n\n{}",
        echo_trigger("held", "/held", upstream, "rate_limit = \"off\"")
    ));
    let gw = serve_on_two_workers(&fx, &text).await;
    let before = taken_by_worker_one(&gw).await;
    let calls: u16 = 24;
    let answered = tokio::spawn({
        let (fx_client, url) = ((0..calls).map(|_| fx.client(false)).collect::<Vec<_>>(), gw.url("/held"));
        async move {
            let mut running = tokio::task::JoinSet::new();
            for client in fx_client {
                let url = url.clone();
                // The client ends with its call, closing its connection and freeing its slot.
                running.spawn(async move { client.post(url).send().await.map(|r| r.status().as_u16()) });
            }
            let mut statuses = Vec::new();
            while let Some(done) = running.join_next().await {
                statuses.push(done.unwrap().expect("a queued connection is served, not refused"));
            }
            statuses
        }
    });
    // The cap fills first; then the calls go through one at a time.
    gate.holding_at_least(3).await;
    for _ in 0..calls {
        gate.holding_at_least(1).await;
        gate.release.add_permits(1);
    }
    let statuses = answered.await.unwrap();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let most = gate.most.load(Ordering::SeqCst);
    assert_eq!(most, 3, "at most 3 connections are served at once, whichever worker took them");
    both_workers_served(&gw, before, u64::from(calls)).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_calls_on_both_workers() {
    let _turn = TURN.lock().await;
    let fx = Fixture::new();
    let gate = Gate::new();
    let upstream = gate.start().await;
    let gw =
        serve_on_two_workers(&fx, &fx.policy_text(&echo_trigger("held", "/held", upstream, "rate_limit = \"off\"")))
            .await;
    let before = taken_by_worker_one(&gw).await;
    let calls: u16 = 32;
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let (client, url) = (fx.client(false), gw.url("/held"));
        running.spawn(async move { client.post(url).send().await.map(|r| r.status().as_u16()) });
    }
    gate.holding_at_least(usize::from(calls)).await;
    // Every call is in flight; both workers hold some.
    both_workers_served(&gw, before, u64::from(calls)).await;
    let https = gw.https;
    let stopping = tokio::spawn(gw.shutdown());
    // New connections are refused once the workers stopped accepting (a hang guard). Both
    // workers listen on the port (`SO_REUSEPORT`) and stop one after the other: one refusal
    // may come from the first while the second still accepts, so refusals must hold.
    let mut refused_in_a_row = 0;
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(https).await.is_err() {
            refused_in_a_row += 1;
            if refused_in_a_row == 5 {
                break;
            }
        } else {
            refused_in_a_row = 0;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert_eq!(refused_in_a_row, 5, "a stopped gateway still accepts");
    assert!(!stopping.is_finished(), "shutdown waits for the calls in flight");
    gate.release.add_permits(usize::from(calls));
    let mut statuses = Vec::new();
    while let Some(done) = running.join_next().await {
        statuses.push(done.unwrap().expect("a call in flight at shutdown is answered"));
    }
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_every_worker() {
    let _turn = TURN.lock().await;
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = serve_on_two_workers(&fx, &fx.policy_text(&echo_trigger("old", "/old", echo, ""))).await;
    let statuses = one_call_per_connection(&fx, &gw, "/new", 16).await;
    assert!(statuses.iter().all(|&s| s == 404), "no /new trigger before the reload: {statuses:?}");
    let both = format!("{}{}", echo_trigger("old", "/old", echo, ""), echo_trigger("new", "/new", echo, ""));
    fx.write_policy(&fx.policy_text(&both));
    gw.gateway.reload().expect("the new policy reloads");
    let before = taken_by_worker_one(&gw).await;
    let statuses = one_call_per_connection(&fx, &gw, "/new", 64).await;
    assert!(statuses.iter().all(|&s| s == 200), "every worker serves the reloaded policy: {statuses:?}");
    both_workers_served(&gw, before, 64).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tightening_tls_reload_closes_old_connections_on_every_worker() {
    let _turn = TURN.lock().await;
    let fx = Fixture::new();
    let echo = start_echo().await;
    // Any CA will do: the point is that a certificate becomes required.
    std::fs::write(fx.path().join("clients.pem"), &fx.ca_pem).unwrap();
    let plain = fx.policy_text(&echo_trigger("t", "/t", echo, ""));
    let mutual = plain.replacen(
        "key = \"server.key\" }",
        "key = \"server.key\", client_ca = \"clients.pem\", client_auth = \"required\" }",
        1,
    );
    assert_ne!(plain, mutual, "the policy variant did not take");
    let gw = serve_on_two_workers(&fx, &plain).await;
    let before = taken_by_worker_one(&gw).await;
    // Each client keeps its one connection open between calls.
    let clients: Vec<_> = (0..16).map(|_| fx.client(false)).collect();
    for client in &clients {
        assert_eq!(client.post(gw.url("/t")).send().await.unwrap().status(), 200);
    }
    both_workers_served(&gw, before, 16).await;
    fx.write_policy(&mutual);
    gw.gateway.reload().expect("the mutual-TLS policy reloads");
    // Every connection admitted under the looser rule is closed, whichever worker holds it:
    // the next call needs a new handshake, which this client cannot pass.
    for (n, client) in clients.iter().enumerate() {
        let mut closed = false;
        for _ in 0..50 {
            if client.post(gw.url("/t")).send().await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(closed, "connection {n}, accepted before client certificates were required, was still served");
    }
    gw.shutdown().await;
}
