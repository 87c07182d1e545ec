//! Logs cannot flood the disk: the real binary at `RUST_LOG=trace`, its log written into
//! the watched policy directory, while something else writes into that directory. Before
//! the fix, the file watcher's dependency traced every inotify event, including the ones
//! caused by writing its own trace lines: a feedback loop of gigabytes per minute.

mod common;

use common::{Fixture, closed_port, echo_trigger};
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
