//! The run history's sinks: size-based rotation with a retention count, failing sinks
//! that never fail the call (errors counted), reconfiguration, and ring queries.
//!
//! A read-only directory is no obstacle to root (tests here may run as root), so the
//! unwritable sink is simulated by a path whose parent is a regular file (every write
//! fails for every user), and disk-full by `/dev/full` (ENOSPC on every write).

use flowgate::audit::{AuditConfig, AuditLog, RunFilter, RunRecord};
use std::path::Path;
use std::time::{Duration, SystemTime};

const FLUSH: Duration = Duration::from_secs(10);

fn record(id: &str, at_secs: u64) -> RunRecord {
    RunRecord::new(id, SystemTime::UNIX_EPOCH + Duration::from_secs(at_secs), "POST", "/t")
}

fn ids_in(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str::<RunRecord>(line).expect("a JSON record per line").id)
        .collect()
}

fn numbered(path: &Path, n: usize) -> std::path::PathBuf {
    path.with_file_name(format!("runs.jsonl.{n}"))
}

#[test]
fn file_rotates_by_size_and_keeps_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("runs.jsonl");
    let one_line = serde_json::to_string(&record("r0", 1)).expect("json").len() as u64 + 1;
    // Room for exactly two records per file.
    let cfg = AuditConfig { file: Some(file.clone()), max_bytes: one_line * 2, keep: 2, ..AuditConfig::default() };
    let log = AuditLog::new(&cfg).expect("starts");
    for i in 0..9 {
        log.write(record(&format!("r{i}"), i));
    }
    assert!(log.flush(FLUSH));
    assert_eq!(ids_in(&file), ["r8"]);
    assert_eq!(ids_in(&numbered(&file, 1)), ["r6", "r7"]);
    assert_eq!(ids_in(&numbered(&file, 2)), ["r4", "r5"]);
    assert!(!numbered(&file, 3).exists(), "only `keep` rotated files are kept");
    assert_eq!(log.stats().write_errors, 0);
}

#[test]
fn rotation_continues_from_an_existing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("runs.jsonl");
    let one_line = serde_json::to_string(&record("r0", 1)).expect("json").len() as u64 + 1;
    std::fs::write(&file, "x".repeat(usize::try_from(one_line).unwrap() * 2 - 1) + "\n").expect("seed");
    let cfg = AuditConfig { file: Some(file.clone()), max_bytes: one_line * 2, keep: 1, ..AuditConfig::default() };
    let log = AuditLog::new(&cfg).expect("starts");
    log.write(record("new", 1));
    assert!(log.flush(FLUSH));
    assert_eq!(ids_in(&file), ["new"]);
    assert!(std::fs::read_to_string(numbered(&file, 1)).expect("rotated").starts_with("xxx"));
}

#[test]
fn unwritable_directory_does_not_fail_writes_and_counts_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, b"").expect("seed");
    let cfg = AuditConfig { file: Some(not_a_dir.join("runs.jsonl")), ..AuditConfig::default() };
    let log = AuditLog::new(&cfg).expect("starts");
    for i in 0..3 {
        log.write(record(&format!("r{i}"), i));
    }
    assert!(log.flush(FLUSH));
    let stats = log.stats();
    assert_eq!(stats.records, 3);
    assert_eq!(stats.write_errors, 3, "each failed write is counted");
    assert!(log.get("r2").is_some(), "the ring still serves the admin API");
}

#[cfg(target_os = "linux")]
#[test]
fn disk_full_does_not_fail_writes_and_counts_errors() {
    let cfg = AuditConfig { file: Some("/dev/full".into()), max_bytes: 1024, ..AuditConfig::default() };
    let log = AuditLog::new(&cfg).expect("starts");
    log.write(record("a", 1));
    log.write(record("b", 2));
    assert!(log.flush(FLUSH));
    assert!(log.stats().write_errors >= 2, "{:?}", log.stats());
    assert!(Path::new("/dev/full").exists(), "a device is never rotated away");
}

#[test]
fn reconfigure_switches_file_and_ring_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("first.jsonl");
    let second = dir.path().join("second.jsonl");
    let log = AuditLog::new(&AuditConfig { file: Some(first.clone()), ..AuditConfig::default() }).expect("starts");
    log.write(record("one", 1));
    log.reconfigure(&AuditConfig { file: Some(second.clone()), ring: 1, ..AuditConfig::default() });
    log.write(record("two", 2));
    log.write(record("three", 3));
    assert!(log.flush(FLUSH));
    assert_eq!(ids_in(&first), ["one"]);
    assert_eq!(ids_in(&second), ["two", "three"]);
    let ring: Vec<String> = log.query(&RunFilter::default()).into_iter().map(|r| r.id).collect();
    assert_eq!(ring, ["three"]);
}

#[test]
fn ring_filters_by_trigger_decision_principal_time_and_limit() {
    let log = AuditLog::new(&AuditConfig::default()).expect("starts");
    let rows = [
        ("a", 100, "inv", "allowed", Some("oid:1")),
        ("b", 200, "inv", "forbidden", Some("oid:2")),
        ("c", 300, "pay", "allowed", Some("oid:1")),
        ("d", 400, "inv", "allowed", None),
        ("e", 500, "inv", "allowed", Some("oid:1")),
    ];
    for (id, at, trigger, decision, principal) in rows {
        let mut r = record(id, at);
        r.trigger = Some(trigger.into());
        r.decision = decision.into();
        r.principal = principal.map(Into::into);
        log.write(r);
    }
    let ids = |query: &str| -> Vec<String> {
        let filter = RunFilter::from_query(query).expect("filter parses");
        log.query(&filter).into_iter().map(|r| r.id).collect()
    };
    assert_eq!(ids(""), ["e", "d", "c", "b", "a"], "newest first");
    assert_eq!(ids("trigger=inv"), ["e", "d", "b", "a"]);
    assert_eq!(ids("decision=forbidden"), ["b"]);
    assert_eq!(ids("principal=oid%3A1"), ["e", "c", "a"]);
    assert_eq!(ids("trigger=inv&decision=allowed&principal=oid:1"), ["e", "a"]);
    assert_eq!(ids("since=1970-01-01T00:03:20Z&until=1970-01-01T00:06:40Z"), ["c", "b"]);
    assert_eq!(ids("limit=2"), ["e", "d"]);
    assert_eq!(log.get("c").and_then(|r| r.trigger), Some("pay".to_owned()));
    assert!(log.get("zzz").is_none());
    assert!(RunFilter::from_query("color=red").is_err());
}

/// A sink that blocks (a FIFO nobody reads) must not block `write`: once the queue is
/// full, further lines are dropped and counted while the ring still gets every record.
#[cfg(unix)]
#[test]
fn blocked_sink_drops_and_counts_instead_of_blocking_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("runs.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap_or_else(|e| panic!("mkfifo is needed for this test (apt-get install coreutils): {e}"));
    assert!(made.success(), "mkfifo failed");
    let cfg = AuditConfig { file: Some(fifo.clone()), queue: 1, ..AuditConfig::default() };
    let log = AuditLog::new(&cfg).expect("starts");
    // The writer blocks opening the FIFO; one line can sit in its hand, one in the queue.
    for i in 0..5 {
        log.write(record(&format!("r{i}"), i));
    }
    let stats = log.stats();
    assert_eq!(stats.records, 5);
    assert!(stats.dropped >= 3, "{stats:?}");
    assert_eq!(log.query(&RunFilter::default()).len(), 5, "the ring got every record");
    // Unblock the writer so the test leaves no thread stuck in open(2).
    let reader = std::thread::spawn(move || std::fs::read(&fifo).map(|b| b.len()));
    assert!(log.flush(FLUSH));
    drop(log);
    let read = reader.join().expect("reader thread").expect("reads the FIFO");
    assert!(read > 0, "the lines that were queued reached the sink");
}
