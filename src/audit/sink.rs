//! Where run records go: an in-memory ring (queried by the admin API), and a JSON-lines
//! file with size-based rotation and/or stdout, written by one writer thread.
//!
//! The ring keeps a record without a capture as written, and turns it into JSON only when
//! it is read or streamed (by the writer thread): most records are never read, and the
//! call that wrote one should not pay for its text. A captured record is kept as its JSON
//! text (never as a parsed tree: a captured body of small numbers grows twentyfold as a
//! tree). The ring is bounded by a record count (`ring`) AND by the bytes its records keep
//! alive (`ring_max_bytes`); the oldest records go first and every eviction is counted
//! (`flowgate_audit_ring_evictions_total`). A query copies only pointers to the matching
//! records while it holds the ring's lock; the answer is assembled after the lock is
//! released, so a large `/runs` answer never delays the calls writing their records.
//!
//! [`AuditLog::write`] never fails and never waits for the disk: the ring is updated in
//! memory and the line is handed to the writer through a bounded channel. A full channel
//! drops the line (counted in `flowgate_audit_dropped_total`); a failing sink (disk full,
//! read-only directory) is counted in `flowgate_audit_write_errors_total` and logged at
//! most once per `error_log_interval`.

use super::{RunFilter, RunRecord, RunSummary};
use crate::config::{Diagnostics, HumanDuration, KeyPath};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// `[audit]`: where run records go.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// JSON-lines file for run records (relative to the policy file). Unset: no file.
    pub file: Option<String>,
    /// Rotate the file when it reaches this many bytes.
    #[serde(default = "default_audit_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept.
    #[serde(default = "default_audit_keep")]
    pub keep: usize,
    /// Also write run records to stdout.
    #[serde(default)]
    pub stdout: bool,
    /// Records kept in memory for the admin API (`/runs`); 0 keeps none.
    #[serde(default = "default_audit_ring")]
    pub ring: usize,
    /// Bytes the in-memory records may take at most (a record with a capture is kept as its
    /// JSON text, one without as written); the oldest are evicted first and counted in
    /// `flowgate_audit_ring_evictions_total`. Default 64 MiB.
    #[serde(default = "default_audit_ring_max_bytes")]
    pub ring_max_bytes: usize,
    /// Body bytes captured at most per message (triggers with `capture = true`); longer
    /// bodies are stored as a hash and length.
    #[serde(default = "default_audit_capture_max_bytes")]
    pub capture_max_bytes: usize,
    /// Records waiting for the writer at most; more are dropped and counted
    /// (`flowgate_audit_dropped_total`) rather than slowing calls down.
    #[serde(default = "default_audit_queue")]
    pub queue: usize,
    /// A failing sink (disk full) is logged at most once per this interval; every failure
    /// is counted in `flowgate_audit_write_errors_total`.
    #[serde(default = "default_error_log_interval")]
    pub error_log_interval: HumanDuration,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            file: None,
            max_bytes: default_audit_max_bytes(),
            keep: default_audit_keep(),
            stdout: false,
            ring: default_audit_ring(),
            ring_max_bytes: default_audit_ring_max_bytes(),
            capture_max_bytes: default_audit_capture_max_bytes(),
            queue: default_audit_queue(),
            error_log_interval: default_error_log_interval(),
        }
    }
}

fn default_audit_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_audit_keep() -> usize {
    5
}
fn default_audit_ring() -> usize {
    10_000
}
fn default_audit_ring_max_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_audit_capture_max_bytes() -> usize {
    64 * 1024
}
fn default_audit_queue() -> usize {
    8192
}

fn default_error_log_interval() -> HumanDuration {
    HumanDuration::from_secs(60)
}

/// The compiled `[audit]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// JSON-lines file, resolved against the policy file's directory.
    pub file: Option<PathBuf>,
    /// Rotate the file before it would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`file.1` newest … `file.KEEP` oldest).
    pub keep: usize,
    /// Also write records to stdout.
    pub stdout: bool,
    /// Records kept in memory for the admin API (0 disables the ring).
    pub ring: usize,
    /// Bytes the ring may hold (what its records keep alive plus bookkeeping).
    pub ring_max_bytes: usize,
    /// Body bytes captured at most per message.
    pub capture_max_bytes: usize,
    /// Lines waiting for the writer at most (fixed when the [`AuditLog`] is created).
    pub queue: usize,
    /// A failing sink is logged at most once per this interval.
    pub error_log_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        let mut diags = Diagnostics::default();
        Self::compile(&RawAudit::default(), Path::new("."), &KeyPath::root().key("audit"), &mut diags)
    }
}

impl AuditConfig {
    /// Compiles `[audit]`; `base_dir` is the policy file's directory, against which a
    /// relative `file` is resolved. Every problem is reported to `diags` under `path`.
    pub fn compile(raw: &RawAudit, base_dir: &Path, path: &KeyPath, diags: &mut Diagnostics) -> Self {
        let file = match raw.file.as_deref() {
            Some("") => {
                diags.error_with_hint(&path.key("file"), "empty audit file name", "remove `file` or name a file");
                None
            }
            Some(name) => Some(base_dir.join(name)),
            None => None,
        };
        if raw.max_bytes < 1024 {
            diags.error_with_hint(
                &path.key("max_bytes"),
                format!("max_bytes = {} is too small to hold a run record", raw.max_bytes),
                "use at least 1024 (the default is 64 MiB)",
            );
        }
        if raw.ring > 0 && raw.ring_max_bytes < 64 * 1024 {
            diags.error_with_hint(
                &path.key("ring_max_bytes"),
                format!("ring_max_bytes = {} is too small for the run history", raw.ring_max_bytes),
                "use at least 65536 (the default is 64 MiB), or ring = 0 to keep no history in memory",
            );
        }
        if raw.queue == 0 {
            diags.error_with_hint(&path.key("queue"), "queue must hold at least one record", "the default is 8192");
        }
        Self {
            file,
            max_bytes: raw.max_bytes,
            keep: raw.keep,
            stdout: raw.stdout,
            ring: raw.ring,
            ring_max_bytes: raw.ring_max_bytes,
            capture_max_bytes: raw.capture_max_bytes,
            queue: raw.queue.max(1),
            error_log_interval: raw.error_log_interval.0,
        }
    }

    fn has_stream_sink(&self) -> bool {
        self.file.is_some() || self.stdout
    }
}

/// Counters of an [`AuditLog`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records accepted by [`AuditLog::write`].
    pub records: u64,
    /// Lines dropped because the writer's queue was full.
    pub dropped: u64,
    /// Failed writes to a file or stdout.
    pub write_errors: u64,
    /// Records evicted from the ring to stay within its count and byte bounds.
    pub ring_evictions: u64,
}

#[derive(Debug, Default)]
struct Counters {
    records: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    ring_evictions: AtomicU64,
}

impl Counters {
    fn write_error(&self) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("flowgate_audit_write_errors_total").increment(1);
    }
}

enum Message {
    /// A record for the file/stdout, serialised by the writer thread.
    Record(Arc<Entry>),
    Reconfigure(Box<AuditConfig>),
    Flush(SyncSender<()>),
}

/// Bookkeeping bytes charged per ring entry besides its strings (the entry, its `Arc`
/// and its slot in the queue), so that the byte bound holds for tiny records too.
const ENTRY_OVERHEAD: usize = 160;

/// Largest `/runs` answer assembled, in bytes of JSON: past it the answer stops early
/// (always holding at least one record), whatever `limit` says.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Answers assembled from the ring at the same time at most; more are refused (503) and
/// retried by the caller.
pub const MAX_CONCURRENT_READS: usize = 4;

/// One record in the ring (and on its way to the file/stdout).
#[derive(Debug)]
enum Entry {
    /// A record without a capture, as written: serialised only when read or streamed.
    Record(Box<RunRecord>),
    /// A captured record as JSON text, with the fields filters read.
    Json(Box<JsonEntry>),
}

/// A captured record kept as JSON text, with the fields filters and lists read.
#[derive(Debug)]
struct JsonEntry {
    summary: RunSummary,
    trace_id: Option<Box<str>>,
    at: Option<std::time::SystemTime>,
    json: Box<str>,
}

impl Entry {
    fn new(record: RunRecord) -> serde_json::Result<Self> {
        if record.capture.is_none() {
            return Ok(Self::Record(Box::new(record)));
        }
        let json = serde_json::to_string(&record)?;
        Ok(Self::Json(Box::new(JsonEntry {
            summary: RunSummary::of(&record),
            trace_id: record.trace_id.as_deref().map(Into::into),
            at: record.at(),
            json: json.into_boxed_str(),
        })))
    }

    /// The record's summary, never touching its capture.
    fn summary(&self) -> RunSummary {
        match self {
            Self::Record(record) => RunSummary::of(record),
            Self::Json(entry) => entry.summary.clone(),
        }
    }

    fn id(&self) -> &str {
        match self {
            Self::Record(record) => &record.id,
            Self::Json(entry) => &entry.summary.id,
        }
    }

    /// The record as JSON text; `None` if it cannot be serialised (counted by the caller).
    fn json(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Self::Record(record) => serde_json::to_string(record).ok().map(std::borrow::Cow::Owned),
            Self::Json(entry) => Some(std::borrow::Cow::Borrowed(&entry.json)),
        }
    }

    /// Bytes this entry keeps alive: its strings' buffers plus fixed bookkeeping.
    fn cost(&self) -> usize {
        match self {
            Self::Record(record) => {
                let optional = |text: &Option<String>| text.as_ref().map_or(0, String::capacity);
                ENTRY_OVERHEAD
                    + std::mem::size_of::<RunRecord>()
                    + record.id.capacity()
                    + record.time.capacity()
                    + record.method.capacity()
                    + record.path.capacity()
                    + record.decision.capacity()
                    + record.policy_version.capacity()
                    + optional(&record.trigger)
                    + optional(&record.reason)
                    + optional(&record.client_ip_note)
                    + optional(&record.tenant)
                    + optional(&record.principal)
                    + optional(&record.app_id)
                    + optional(&record.trace_id)
            }
            Self::Json(entry) => {
                let summary = &entry.summary;
                let optional = |text: &Option<String>| text.as_ref().map_or(0, String::capacity);
                ENTRY_OVERHEAD
                    + std::mem::size_of::<JsonEntry>()
                    + summary.id.capacity()
                    + summary.time.capacity()
                    + summary.method.capacity()
                    + summary.path.capacity()
                    + summary.decision.capacity()
                    + optional(&summary.trigger)
                    + optional(&summary.principal)
                    + entry.trace_id.as_ref().map_or(0, |t| t.len())
                    + entry.json.len()
            }
        }
    }

    fn matches(&self, filter: &RunFilter) -> bool {
        match self {
            Self::Record(record) => filter.matches(record),
            Self::Json(entry) => {
                let summary = &entry.summary;
                let fields = (
                    summary.trigger.as_deref(),
                    summary.decision.as_str(),
                    summary.principal.as_deref(),
                    entry.trace_id.as_deref(),
                );
                filter.matches_fields(fields, || entry.at)
            }
        }
    }
}

#[derive(Debug)]
struct Ring {
    records: VecDeque<Arc<Entry>>,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
}

impl Ring {
    /// Drops the oldest records until the bounds hold with `room` more bytes and
    /// `one_more` more records; returns how many were dropped.
    fn make_room(&mut self, room: usize, one_more: usize) -> u64 {
        let mut evicted = 0;
        while self.records.len() + one_more > self.capacity || self.bytes + room > self.max_bytes {
            let Some(old) = self.records.pop_front() else { break };
            self.bytes -= old.cost();
            evicted += 1;
        }
        evicted
    }

    /// Adds `entry` as the newest record, dropping the oldest as the bounds require; returns
    /// how many records that cost. An entry larger than the whole ring is not kept (it is
    /// kept in the file/stdout only) and counts as one.
    fn push(&mut self, entry: Arc<Entry>) -> u64 {
        let cost = entry.cost();
        if cost > self.max_bytes {
            return 1;
        }
        let evicted = self.make_room(cost, 1);
        self.bytes += cost;
        self.records.push_back(entry);
        evicted
    }
}

/// The run history's sinks. Lives in the `Gateway` and survives policy reloads;
/// [`AuditLog::reconfigure`] applies a new `[audit]` section.
#[derive(Debug)]
pub struct AuditLog {
    sender: SyncSender<Message>,
    ring: Mutex<Ring>,
    stream: AtomicBool,
    counters: Arc<Counters>,
    /// `flowgate_audit_records_total`, resolved once (every call writes a record).
    records_total: metrics::Counter,
    /// `flowgate_audit_ring_evictions_total`, resolved once: once the ring is full, every
    /// call's record evicts the oldest.
    ring_evictions_total: metrics::Counter,
    /// Answers being assembled from the ring at most ([`AuditLog::reader`]).
    readers: Arc<tokio::sync::Semaphore>,
}

impl AuditLog {
    /// Starts the writer thread for `cfg`. Build it after the metrics recorder is installed
    /// (`telemetry::metrics_handle`), as `Gateway::new` does.
    ///
    /// # Errors
    /// The operating system refused to start a thread.
    pub fn new(cfg: &AuditConfig) -> io::Result<Self> {
        let (sender, receiver) = sync_channel(cfg.queue);
        let counters = Arc::new(Counters::default());
        let writer = Writer::new(cfg.clone(), Arc::clone(&counters));
        std::thread::Builder::new().name("flowgate-audit".into()).spawn(move || writer.run(&receiver))?;
        Ok(Self {
            sender,
            ring: Mutex::new(Ring {
                records: VecDeque::with_capacity(cfg.ring.min(1024)),
                capacity: cfg.ring,
                max_bytes: cfg.ring_max_bytes,
                bytes: 0,
            }),
            stream: AtomicBool::new(cfg.has_stream_sink()),
            counters,
            records_total: metrics::counter!("flowgate_audit_records_total"),
            ring_evictions_total: metrics::counter!("flowgate_audit_ring_evictions_total"),
            readers: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_READS)),
        })
    }

    /// Records one call. Never fails and never blocks on I/O: a full queue drops the
    /// line for the file/stdout (counted), the ring always gets the record.
    pub fn write(&self, record: RunRecord) {
        if self.write_in_place(&record) {
            return;
        }
        self.write_moved(record);
    }

    /// Records one call by copying it over the ring's oldest record, when the ring is full
    /// and no sink needs the record itself (no capture, no stream); false (nothing
    /// written) otherwise, and the caller then hands the record to
    /// [`AuditLog::write_moved`].
    pub fn write_in_place(&self, record: &RunRecord) -> bool {
        let written = record.capture.is_none() && !self.stream.load(Ordering::Relaxed) && self.write_in_oldest(record);
        if written {
            self.counted();
        }
        written
    }

    fn counted(&self) {
        self.counters.records.fetch_add(1, Ordering::Relaxed);
        self.records_total.increment(1);
    }

    /// Records one call that [`AuditLog::write_in_place`] could not write, moving it in.
    pub fn write_moved(&self, record: RunRecord) {
        self.counted();
        // Before any lock: a captured record is serialised here, once, for both sinks.
        let Ok(entry) = Entry::new(record) else {
            self.counters.write_error();
            return;
        };
        let entry = Arc::new(entry);
        if self.stream.load(Ordering::Relaxed) {
            match self.sender.try_send(Message::Record(Arc::clone(&entry))) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("flowgate_audit_dropped_total").increment(1);
                }
                Err(TrySendError::Disconnected(_)) => self.counters.write_error(),
            }
        }
        let evicted = {
            let mut ring = lock(&self.ring);
            if ring.capacity == 0 {
                return;
            }
            ring.push(entry)
        };
        self.evicted(evicted);
    }

    /// Writes `record` over the ring's oldest record when the ring is full by count and no
    /// reader holds that record; false when it could not. Why: the ring keeps thousands of
    /// records, and a fresh record per call meant freeing a dozen blocks last touched
    /// thousands of calls before, which the allocator then handed to the next calls' own
    /// values, each a read of cold memory (docs/PERFORMANCE.md, "The run history's ring").
    /// Recycled, the ring's memory stays its own and a full ring allocates nothing.
    fn write_in_oldest(&self, record: &RunRecord) -> bool {
        let mut ring = lock(&self.ring);
        if ring.capacity == 0 || ring.records.len() < ring.capacity {
            return false;
        }
        let Some(mut oldest) = ring.records.pop_front() else { return false };
        let old_cost = oldest.cost();
        let Some(Entry::Record(slot)) = Arc::get_mut(&mut oldest) else {
            ring.records.push_front(oldest);
            return false;
        };
        slot.overwrite_with(record);
        ring.bytes -= old_cost;
        // The oldest record is gone either way; the new one is pushed as `write` would.
        let evicted = 1 + ring.push(oldest);
        drop(ring);
        self.evicted(evicted);
        true
    }

    fn evicted(&self, count: u64) {
        if count > 0 {
            self.counters.ring_evictions.fetch_add(count, Ordering::Relaxed);
            self.ring_evictions_total.increment(count);
        }
    }

    /// Applies a reloaded `[audit]` section: the ring is resized (oldest dropped) and the
    /// writer switches file, rotation and stdout settings. `queue` keeps its first value.
    /// Waits for a place in the queue, so call it from the reload path, not per request.
    pub fn reconfigure(&self, cfg: &AuditConfig) {
        let evicted = {
            let mut ring = lock(&self.ring);
            ring.capacity = cfg.ring;
            ring.max_bytes = cfg.ring_max_bytes;
            ring.make_room(0, 0)
        };
        self.evicted(evicted);
        // The writer learns the new sinks before any line meant for them is queued.
        if self.sender.send(Message::Reconfigure(Box::new(cfg.clone()))).is_err() {
            self.counters.write_error();
        }
        self.stream.store(cfg.has_stream_sink(), Ordering::Relaxed);
    }

    /// Waits until every line queued so far is written and flushed, for at most
    /// `timeout`. Returns false on timeout. For shutdown and tests, not the request path.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = sync_channel(1);
        let deadline = Instant::now() + timeout;
        let mut message = Message::Flush(ack);
        loop {
            match self.sender.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        !matches!(done.recv_timeout(left), Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected))
    }

    /// The ring entries matching `filter`, newest first, at most `filter.limit()`: only
    /// pointers are copied while the lock is held.
    fn matching(&self, filter: &RunFilter) -> Vec<Arc<Entry>> {
        let ring = lock(&self.ring);
        ring.records.iter().rev().filter(|e| e.matches(filter)).take(filter.limit()).cloned().collect()
    }

    /// Records in the ring matching `filter`, newest first, at most `filter.limit()`.
    pub fn query(&self, filter: &RunFilter) -> Vec<RunRecord> {
        self.matching(filter).iter().filter_map(|e| serde_json::from_str(&e.json()?).ok()).collect()
    }

    /// Summaries of the records matching `filter`, newest first, at most `filter.limit()`:
    /// for lists, which must never parse or copy captures.
    pub fn summaries(&self, filter: &RunFilter) -> Vec<RunSummary> {
        self.matching(filter).iter().map(|e| e.summary()).collect()
    }

    /// A permit to assemble one answer from the ring (`/runs`, the console's run pages),
    /// or `None` when [`MAX_CONCURRENT_READS`] are being assembled or sent: each can hold up
    /// to [`MAX_ANSWER_BYTES`], and a page that refreshes itself must not multiply that.
    /// Keep it until the answer is sent (its body holds it).
    pub fn reader(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.readers.clone().try_acquire_owned().ok()
    }

    /// [`AuditLog::query`] as a JSON array, assembled after the ring's lock is released
    /// and at most about [`MAX_ANSWER_BYTES`] long (at least one record).
    pub fn query_json(&self, filter: &RunFilter) -> String {
        render_array(&self.matching(filter))
    }

    /// The record with this request id, if still in the ring.
    pub fn get(&self, id: &str) -> Option<RunRecord> {
        self.get_json(id).and_then(|json| serde_json::from_str(&json).ok())
    }

    /// The record with this request id as JSON text, if still in the ring.
    pub fn get_json(&self, id: &str) -> Option<String> {
        let entry = lock(&self.ring).records.iter().rev().find(|e| e.id() == id).cloned();
        entry.and_then(|e| e.json().map(std::borrow::Cow::into_owned))
    }

    /// Bytes the ring holds now (never more than `ring_max_bytes`).
    pub fn ring_bytes(&self) -> usize {
        lock(&self.ring).bytes
    }

    /// Counters since creation.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            records: self.counters.records.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            write_errors: self.counters.write_errors.load(Ordering::Relaxed),
            ring_evictions: self.counters.ring_evictions.load(Ordering::Relaxed),
        }
    }
}

/// A JSON array of the entries' texts, stopping once it would pass [`MAX_ANSWER_BYTES`].
/// It takes entries, not the ring: it cannot hold the ring's lock.
fn render_array(entries: &[Arc<Entry>]) -> String {
    let mut out = String::from('[');
    for json in entries.iter().filter_map(|entry| entry.json()) {
        if out.len() > 1 && out.len() + json.len() > MAX_ANSWER_BYTES {
            break;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&json);
    }
    out.push(']');
    out
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer thread's state.
struct Writer {
    cfg: AuditConfig,
    file: Option<File>,
    size: u64,
    counters: Arc<Counters>,
    last_logged: Option<Instant>,
}

impl Writer {
    fn new(cfg: AuditConfig, counters: Arc<Counters>) -> Self {
        Self { cfg, file: None, size: 0, counters, last_logged: None }
    }

    fn run(mut self, receiver: &Receiver<Message>) {
        while let Ok(message) = receiver.recv() {
            match message {
                Message::Record(entry) => match entry.json() {
                    Some(line) => self.write_line(&line),
                    None => self.counters.write_error(),
                },
                Message::Reconfigure(cfg) => {
                    if cfg.file != self.cfg.file {
                        self.file = None;
                    }
                    self.cfg = *cfg;
                }
                Message::Flush(ack) => {
                    if let Some(file) = self.file.as_mut()
                        && let Err(e) = file.flush()
                    {
                        self.failed(&e);
                    }
                    // The caller may have given up waiting; nothing to do then.
                    let _ = ack.send(());
                }
            }
        }
    }

    fn write_line(&mut self, line: &str) {
        if self.cfg.stdout {
            let mut out = io::stdout().lock();
            if let Err(e) = writeln!(out, "{line}") {
                self.failed(&e);
            }
        }
        if self.cfg.file.is_some()
            && let Err(e) = self.write_file(line)
        {
            // Reopen on the next record: the directory may come back.
            self.file = None;
            self.failed(&e);
        }
    }

    fn write_file(&mut self, line: &str) -> io::Result<()> {
        let Some(path) = self.cfg.file.clone() else { return Ok(()) };
        let len = line.len() as u64 + 1;
        if self.file.is_none() {
            self.open(&path)?;
        }
        if self.size > 0 && self.size + len > self.cfg.max_bytes && Self::is_regular(&path) {
            self.file = None;
            rotate(&path, self.cfg.keep)?;
            self.open(&path)?;
        }
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        file.write_all(&buf)?;
        self.size += len;
        Ok(())
    }

    fn open(&mut self, path: &Path) -> io::Result<()> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Only regular files are rotated (never a device such as `/dev/stdout`).
    fn is_regular(path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.is_file())
    }

    fn failed(&mut self, error: &io::Error) {
        self.counters.write_error();
        let due = self.last_logged.is_none_or(|at| at.elapsed() >= self.cfg.error_log_interval);
        if due {
            self.last_logged = Some(Instant::now());
            tracing::warn!(
                error = %error,
                file = ?self.cfg.file,
                "run history sink failed; calls go on, further failures are counted in flowgate_audit_write_errors_total"
            );
        }
    }
}

/// `file` → `file.1`, `file.1` → `file.2`, …; the oldest beyond `keep` is overwritten.
/// With `keep = 0` the full file is simply removed.
fn rotate(path: &Path, keep: usize) -> io::Result<()> {
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    for i in (1..keep).rev() {
        match std::fs::rename(numbered(path, i), numbered(path, i + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(path, numbered(path, 1))
}

/// `path` with `.N` appended.
pub(crate) fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "test records are stamped with the real time")]
mod tests {
    use super::*;
    use crate::audit::MAX_LIMIT;
    use std::time::SystemTime;

    fn config(ring: usize) -> AuditConfig {
        AuditConfig { ring, ..AuditConfig::default() }
    }

    #[test]
    fn ring_keeps_newest_and_get_finds_by_id() {
        let log = AuditLog::new(&config(2)).expect("starts");
        for id in ["a", "b", "c"] {
            log.write(RunRecord::new(id, SystemTime::UNIX_EPOCH, "POST", "/t"));
        }
        assert!(log.get("a").is_none());
        assert_eq!(log.get("c").map(|r| r.id), Some("c".to_owned()));
        let ids: Vec<String> = log.query(&RunFilter::default()).into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["c", "b"]);
        log.reconfigure(&config(1));
        assert_eq!(log.query(&RunFilter::default()).len(), 1);
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(log.stats().records, 3);
    }

    /// A record whose captured response is a JSON array of `n` small numbers: a few bytes
    /// per element as text, tens as a parsed tree.
    fn adversarial(id: &str, n: usize) -> RunRecord {
        let mut record = RunRecord::new(id, SystemTime::now(), "POST", "/t");
        let body = format!("[{}0]", "0,".repeat(n));
        let rules = crate::audit::CaptureRules { enabled: true, max_bytes: body.len(), ..Default::default() };
        let response = crate::audit::capture_response(&rules, &http::HeaderMap::new(), body.as_bytes(), 0, &[]);
        record.capture = Some(crate::audit::Captured { request: None, response: Some(response) });
        record
    }

    #[test]
    fn ring_stays_within_its_byte_bound_and_counts_evictions() {
        let max = 256 * 1024;
        let log = AuditLog::new(&AuditConfig { ring: 10_000, ring_max_bytes: max, ..AuditConfig::default() })
            .expect("starts");
        for i in 0..500 {
            log.write(adversarial(&format!("r{i}"), 2000));
            assert!(log.ring_bytes() <= max, "{} bytes after {i} records", log.ring_bytes());
        }
        let kept = log.query(&RunFilter { limit: Some(MAX_LIMIT), ..RunFilter::default() });
        assert!(kept.len() > 10 && kept.len() < 100, "{} kept", kept.len());
        assert_eq!(kept[0].id, "r499");
        assert_eq!(log.stats().ring_evictions, 500 - kept.len() as u64);
        // A record larger than the whole ring is not kept (and counted).
        log.write(adversarial("huge", 200_000));
        assert!(log.get("huge").is_none());
        assert_eq!(log.stats().ring_evictions, 501 - kept.len() as u64);
        // Shrinking the bound on reload evicts at once.
        log.reconfigure(&AuditConfig { ring: 10_000, ring_max_bytes: 64 * 1024, ..AuditConfig::default() });
        assert!(log.ring_bytes() <= 64 * 1024);
    }

    proptest::proptest! {
        /// Lists read summaries: for generated records, captured or not, the summaries
        /// equal the model (`RunSummary::of` each record written, newest first, filtered),
        /// and the capture is never parsed for them (a captured entry keeps its summary).
        #[test]
        fn summaries_are_the_records_fields_without_captures(
            records in proptest::collection::vec((0u8..3, proptest::bool::ANY, 0usize..300, 100u16..600), 1..40),
            want in proptest::option::of(0u8..3),
            limit in 1usize..50,
        ) {
            let log = AuditLog::new(&config(1000)).expect("starts");
            let mut model = Vec::new();
            for (i, (trigger, captured, size, status)) in records.into_iter().enumerate() {
                let mut record = if captured { adversarial(&format!("r{i}"), size) } else {
                    RunRecord::new(format!("r{i}"), SystemTime::now(), "POST", "/t")
                };
                record.trigger = Some(format!("t{trigger}"));
                record.status = status;
                record.latency_ms = f64::from(status) / 7.0;
                model.push(RunSummary::of(&record));
                log.write(record);
            }
            let filter = RunFilter { trigger: want.map(|t| format!("t{t}")), limit: Some(limit), ..RunFilter::default() };
            let expected: Vec<RunSummary> = model
                .into_iter()
                .rev()
                .filter(|s| filter.trigger.is_none() || s.trigger == filter.trigger)
                .take(limit)
                .collect();
            proptest::prop_assert_eq!(log.summaries(&filter), expected);
        }
    }

    proptest::proptest! {
        /// A full ring writes each new record over its oldest one: what it answers is
        /// still exactly the last `ring` records written, field for field, whatever the
        /// fields held before (present, absent, longer or shorter).
        #[test]
        fn a_full_ring_reusing_its_oldest_record_keeps_the_last_records(
            ring in 1usize..5,
            records in proptest::collection::vec(
                (proptest::option::of("[a-z]{0,12}"), proptest::option::of("[a-z:]{0,40}"), "[a-z/]{1,30}", 100u16..600),
                1..30,
            ),
        ) {
            let log = AuditLog::new(&config(ring)).expect("starts");
            let mut written = Vec::new();
            for (i, (trigger, principal, path, status)) in records.into_iter().enumerate() {
                let mut record = RunRecord::new(format!("r{i}"), SystemTime::UNIX_EPOCH, "POST", &path);
                record.trigger = trigger;
                record.principal = principal;
                record.status = status;
                written.push(record.clone());
                log.write(record);
            }
            let expected: Vec<RunRecord> = written.iter().rev().take(ring).cloned().collect();
            let all = RunFilter { limit: Some(MAX_LIMIT), ..RunFilter::default() };
            proptest::prop_assert_eq!(log.query(&all), expected);
            proptest::prop_assert_eq!(log.stats().ring_evictions, written.len().saturating_sub(ring) as u64);
        }
    }

    #[test]
    fn a_record_a_reader_holds_is_never_written_over() {
        let log = AuditLog::new(&config(2)).expect("starts");
        for id in ["a", "b"] {
            log.write(RunRecord::new(id, SystemTime::UNIX_EPOCH, "POST", "/t"));
        }
        let held = log.matching(&RunFilter::default());
        let before = render_array(&held);
        for id in ["c", "d", "e"] {
            log.write(RunRecord::new(id, SystemTime::UNIX_EPOCH, "POST", "/other"));
        }
        assert_eq!(render_array(&held), before, "an answer being assembled keeps what it read");
        let ids: Vec<String> = log.query(&RunFilter::default()).into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["e", "d"]);
    }

    #[test]
    fn at_most_max_concurrent_reads_answers_are_held() {
        let log = AuditLog::new(&config(10)).expect("starts");
        let held: Vec<_> = (0..MAX_CONCURRENT_READS).map(|_| log.reader().expect("a free reader")).collect();
        assert!(log.reader().is_none(), "one more answer than the bound");
        drop(held);
        assert!(log.reader().is_some(), "permits come back when answers are sent");
    }

    #[test]
    fn answers_are_assembled_without_the_ring_lock() {
        let log = AuditLog::new(&config(100)).expect("starts");
        for id in ["a", "b", "c"] {
            log.write(RunRecord::new(id, SystemTime::UNIX_EPOCH, "POST", "/t"));
        }
        // `query_json` is `render_array(&matching(..))`: the lock is released once the
        // pointers are copied, and rendering only sees the entries, never the ring.
        let entries = log.matching(&RunFilter::default());
        assert!(log.ring.try_lock().is_ok(), "the ring must be free while an answer is rendered");
        log.write(RunRecord::new("d", SystemTime::UNIX_EPOCH, "POST", "/t"));
        let text = render_array(&entries);
        let ids: Vec<String> =
            serde_json::from_str::<Vec<RunRecord>>(&text).expect("a JSON array").into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert_eq!(
            log.query_json(&RunFilter { limit: Some(1), ..RunFilter::default() }),
            log.get_json("d").map(|j| format!("[{j}]")).unwrap()
        );
    }

    #[test]
    fn records_kept_as_written_read_and_stream_as_their_json() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("runs.jsonl");
        let log = AuditLog::new(&AuditConfig { file: Some(file.clone()), ..config(10) }).expect("starts");
        let mut plain = RunRecord::new("plain", SystemTime::now(), "POST", "/t");
        plain.trigger = Some("t".into());
        plain.principal = Some("oid:abc".into());
        plain.reason = Some("a reason".into());
        plain.latency_ms = 1.25;
        let captured = adversarial("captured", 3);
        log.write(plain.clone());
        log.write(captured.clone());
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(log.get("plain"), Some(plain.clone()));
        assert_eq!(log.get("captured"), Some(captured.clone()));
        let expected = [serde_json::to_string(&plain).unwrap(), serde_json::to_string(&captured).unwrap()];
        let lines: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(str::to_owned).collect();
        assert_eq!(lines, expected);
        assert_eq!(log.get_json("plain").as_deref(), Some(expected[0].as_str()));
        // Filters read the fields of either kind of entry.
        let by_principal = RunFilter { principal: Some("oid:abc".into()), ..RunFilter::default() };
        assert_eq!(log.query(&by_principal), [plain]);
        // Each entry is charged at least its strings.
        assert!(log.ring_bytes() > 2 * ENTRY_OVERHEAD + expected[1].len());
    }

    #[test]
    fn compile_rejects_bad_values() {
        let raw: RawAudit =
            toml::from_str("file = \"\"\nmax_bytes = 10\nqueue = 0\nring_max_bytes = 1000\n").expect("parses");
        let mut diags = Diagnostics::default();
        let cfg = AuditConfig::compile(&raw, Path::new("/etc/flowgate"), &KeyPath::root().key("audit"), &mut diags);
        assert_eq!(diags.into_vec().len(), 4);
        assert_eq!(cfg.file, None);
        let raw: RawAudit = toml::from_str("file = \"runs.jsonl\"").expect("parses");
        let mut diags = Diagnostics::default();
        let cfg = AuditConfig::compile(&raw, Path::new("/etc/flowgate"), &KeyPath::root(), &mut diags);
        assert!(diags.is_empty());
        assert_eq!(cfg.file, Some(PathBuf::from("/etc/flowgate/runs.jsonl")));
    }
}
