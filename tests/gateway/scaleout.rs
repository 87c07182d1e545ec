//! Scale-out on loopback: two replicas of the real `flowgate` binary behind `HAProxy` in TCP
//! mode (TLS passes through to the replicas), one real Redis. A caller through the
//! balancer gets exactly `calls` admitted per window in total; one replica killed mid-run
//! resets no budget and callers reconnect through the other; the replica restarted rejoins
//! with the shared budget (it admits nothing more in the same window).

use crate::common;

use common::ports::free_port;
use common::redis::Redis;
use common::{Fixture, echo_trigger, start_echo};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_flowgate");
/// The shared budget: small, in a window far longer than the test.
const CALLS: usize = 12;

/// One replica: the real binary on fixed ports, so a restart comes back on the same ones.
struct Replica {
    child: Option<Child>,
    config: PathBuf,
    https: u16,
    admin: u16,
    log: PathBuf,
}

impl Replica {
    fn new(fx: &Fixture, name: &str, redis: u16, echo: SocketAddr) -> Self {
        let (https, admin) = (free_port(), free_port());
        let text = fx
            .policy_text(&format!(
                "[cluster]\nredis = \"redis://127.0.0.1:{redis}/0\"\non_redis_error = \"fail_closed\"\n\n{}",
                echo_trigger(
                    "shared",
                    "/shared",
                    echo,
                    &format!("rate_limit = {{ calls = {CALLS}, period = \"600s\" }}")
                )
            ))
            .replacen("listen = \"127.0.0.1:0\"\ntls", &format!("listen = \"127.0.0.1:{https}\"\ntls"), 1)
            .replacen("[admin]\nlisten = \"127.0.0.1:0\"", &format!("[admin]\nlisten = \"127.0.0.1:{admin}\""), 1);
        let config = fx.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log = fx.path().join(format!("{name}.log"));
        let mut replica = Self { child: None, config, https, admin, log };
        replica.start();
        replica
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no drain, no goodbye.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin);
        for _ in 0..200 {
            if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("replica on {} never became ready; log:\n{}", self.https, std::fs::read_to_string(&self.log).unwrap());
    }

    /// The run records this replica (this process) wrote for the shared trigger.
    async fn runs(&self) -> Vec<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/runs?trigger=shared&limit=1000", self.admin);
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `HAProxy` in TCP mode in front of the replicas; dropped, it is killed and reaped.
struct Balancer {
    child: Child,
    port: u16,
}

impl Balancer {
    fn start(dir: &Path, replicas: &[&Replica]) -> Self {
        let port = free_port();
        let servers: String =
            replicas.iter().enumerate().map(|(i, r)| format!("  server r{i} 127.0.0.1:{} check\n", r.https)).collect();
        // Failed connects are retried on another server (redispatch); health checks take a
        // dead replica out after two failed connects and back after two good ones.
        let config = format!(
            "global\n  maxconn 512\n\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  \
             retries 3\n  option redispatch\n\n\
             frontend gateway\n  bind 127.0.0.1:{port}\n  default_backend replicas\n\n\
             backend replicas\n  balance roundrobin\n  default-server inter 200ms fall 2 rise 2\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let check = Command::new("haproxy").arg("-c").arg("-f").arg(&path).output().unwrap_or_else(|e| {
            panic!("cannot run haproxy ({e}); install it: apt-get install -y haproxy (scripts/deps/haproxy.sh)")
        });
        assert!(check.status.success(), "haproxy refused its config: {}", String::from_utf8_lossy(&check.stderr));
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let balancer = Self { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return balancer;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("haproxy never listened on {port}");
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A caller through the balancer: a new connection per call, so the balancer spreads calls
/// over the replicas. A call whose connection breaks is sent again (as any caller would),
/// at most a few times; the statuses and the number of resends are returned.
async fn fire(client: &reqwest::Client, url: &str, calls: usize) -> (Vec<u16>, usize) {
    let mut statuses = Vec::new();
    let mut resends = 0;
    for _ in 0..calls {
        let mut attempt = 0;
        loop {
            match client.post(url).body("{}").send().await {
                Ok(response) => {
                    statuses.push(response.status().as_u16());
                    break;
                }
                Err(error) => {
                    attempt += 1;
                    resends += 1;
                    assert!(attempt < 5, "a call failed {attempt} times through the balancer: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    (statuses, resends)
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_haproxy_share_one_budget_through_kill_and_restart() {
    let redis = Redis::start();
    let fx = Fixture::new();
    fx.serve_issuer();
    let echo = start_echo().await;
    let mut first = Replica::new(&fx, "first", redis.port, echo);
    let second = Replica::new(&fx, "second", redis.port, echo);
    first.wait_ready().await;
    second.wait_ready().await;
    let balancer = Balancer::start(fx.path(), &[&first, &second]);

    let token = fx.token();
    let caller = |keep_alive: bool| {
        let cert = reqwest::Certificate::from_pem(fx.ca_pem.as_bytes()).unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let builder = reqwest::Client::builder().tls_certs_only([cert]).default_headers(headers).no_proxy();
        let builder = if keep_alive { builder } else { builder.http1_only().pool_max_idle_per_host(0) };
        builder.build().unwrap()
    };
    // Two callers that keep their connection (h2): round robin puts one on each replica.
    let kept = [caller(true), caller(true)];
    // And one that connects anew for every call, spread over both.
    let client = caller(false);
    let url = format!("https://localhost:{}/shared", balancer.port);

    // Half the budget, spread over both replicas.
    let mut statuses = Vec::new();
    for kept in &kept {
        statuses.extend(fire(kept, &url, 1).await.0);
    }
    statuses.extend(fire(&client, &url, CALLS / 2 - kept.len()).await.0);
    assert_eq!(count(&statuses, 200), CALLS / 2, "{statuses:?}");
    let (on_first, on_second) = (first.runs().await.len(), second.runs().await.len());
    assert!(on_first > 0 && on_second > 0, "the balancer did not spread calls: {on_first} / {on_second}");

    // One replica dies mid-window: callers reach the other (the kept connection to the
    // dead one is replaced), and no budget is reset.
    first.kill();
    let mut statuses = Vec::new();
    let mut resends = 0;
    for kept in &kept {
        let (answered, resent) = fire(kept, &url, 1).await;
        statuses.extend(answered);
        resends += resent;
    }
    let (answered, resent) = fire(&client, &url, 2 * CALLS - kept.len()).await;
    statuses.extend(answered);
    resends += resent;
    println!("after the kill: {statuses:?}, {resends} resend(s)");
    assert_eq!(count(&statuses, 200), CALLS - CALLS / 2, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 2 * CALLS - (CALLS - CALLS / 2), "{statuses:?}");
    assert!(resends <= kept.len(), "more resends than broken kept connections: {resends}");

    // Restarted (an empty process: no local state), it rejoins with the shared budget:
    // nothing more is admitted in this window, whichever replica answers.
    first.start();
    first.wait_ready().await;
    let mut after_restart = Vec::new();
    for _ in 0..40 {
        let (statuses, _) = fire(&client, &url, 2).await;
        after_restart.extend(statuses);
        if !first.runs().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = first.runs().await;
    assert!(!records.is_empty(), "the balancer never sent a call to the restarted replica");
    assert_eq!(count(&after_restart, 200), 0, "a budget was reset: {after_restart:?}");
    assert!(records.iter().all(|r| r["decision"] == "rate_limited"), "{records:#?}");
    println!(
        "after the restart: {} call(s), {} on the restarted replica, all refused",
        after_restart.len(),
        records.len()
    );
}
