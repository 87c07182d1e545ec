//! Logs cannot flood the disk: the real binary at `RUST_LOG=trace`, its log written into
//! the watched policy directory, while something else writes into that directory. Before
//! the fix, the file watcher's dependency traced every inotify event, including the ones
//! caused by writing its own trace lines: a feedback loop of gigabytes per minute.

use crate::common;

use common::ports::free_port;
use common::{Fixture, closed_port, echo_trigger, start_echo};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_flowgate");

/// Far above what a few seconds of an idle gateway's own trace lines take (a few kB),
/// far below what the feedback loop writes in the same time (many MB).
const LOG_BOUND_BYTES: u64 = 256 * 1024;

#[test]
fn trace_logging_into_the_watched_directory_stays_small() {
    let fx = Fixture::new();
    let policy = fx.write_policy(&fx.policy_text(&echo_trigger("quiet", "/quiet", closed_port(), "")));
    let log_path = fx.path().join("flowgate.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&policy)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();

    // Another writer in the watched directory: 3 s of small appends.
    let mut other = std::fs::File::create(fx.path().join("notes.txt")).unwrap();
    for i in 0..60 {
        writeln!(other, "line {i}").unwrap();
        other.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.try_wait().unwrap().is_none(), "the gateway exited early; see {}", log_path.display());
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();

    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(text.contains("flowgate"), "the gateway wrote no log at all; the test measured nothing:\n{text}");
    let size = std::fs::metadata(&log_path).unwrap().len();
    assert!(
        size < LOG_BOUND_BYTES,
        "{size} bytes of log in 3 s at TRACE; the first lines:\n{}",
        text.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}

/// Log lines are written by a writer thread, in batches: none may be lost. The real binary
/// at the default level answers a burst of concurrent calls and is stopped with SIGTERM;
/// by the time it exits, every answered call has its access line, with its request id.
#[tokio::test]
async fn every_answered_call_has_its_access_line_when_the_gateway_exits() {
    const CALLS: usize = 400;
    let fx = Fixture::new();
    fx.serve_issuer();
    let echo = start_echo().await;
    let port = free_port();
    // One caller sends the whole burst at once: this test is about log lines, so the cap
    // on calls in flight per caller is lifted above it.
    let limits = format!("[limits]\nmax_calls_per_principal = {}\n\n", 2 * CALLS);
    let text = fx
        .policy_text(&(limits + &echo_trigger("t", "/t", echo, "rate_limit = \"off\"")))
        .replace("listen = \"127.0.0.1:0\"\ntls", &format!("listen = \"127.0.0.1:{port}\"\ntls"));
    let policy = fx.write_policy(&text);
    let log_path = fx.path().join("access.log");
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&policy)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = fx.client_at(false, Some(&fx.token()), None, addr);
    let url = format!("https://localhost:{port}/t");
    let started = std::time::Instant::now();
    while client.post(&url).body("{}").send().await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(30), "the gateway never started; see {}", log_path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answers = futures_util::future::join_all((0..CALLS).map(|_| {
        let request = client.post(&url).body("{}");
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.headers()["x-request-id"].to_str().unwrap().to_owned()
        }
    }))
    .await;
    let _ = Command::new("kill").args(["-TERM", &child.id().unwrap().to_string()]).status();
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("exits").unwrap();
    assert!(exit.success(), "{exit:?}");

    let text = std::fs::read_to_string(&log_path).unwrap();
    let access: Vec<&str> = text.lines().filter(|l| l.contains("flowgate::access")).collect();
    assert!(!text.contains('\u{1b}'), "no colour codes in a log file");
    for id in &answers {
        assert!(access.iter().any(|line| line.contains(id.as_str())), "no access line for {id}");
    }
    assert!(access.len() > CALLS, "{} access lines for {} calls", access.len(), CALLS + 1);
}
