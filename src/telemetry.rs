//! Logging (tracing; human-readable or JSON, level from `RUST_LOG`) and the Prometheus
//! metrics recorder.
//!
//! The `metrics` crate keeps its recorder process-wide by design; flowgate installs it
//! once and every `Gateway` in the process shares it. All metric names start with
//! `flowgate_`, and no label ever carries a token, a query string or a secret.

use metrics::{Counter, Histogram, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Pretty,
    /// One JSON object per event.
    Json,
}

/// Log lines queued for the writer thread at most.
pub(crate) const LOG_QUEUE_LINES: usize = 8192;

/// Installs the tracing subscriber for the binary. Level from `RUST_LOG` (default `info`),
/// read through [`scoped_directives`] so a bare `debug`/`trace` raises flowgate's own
/// level only. Colours only when stderr is a terminal.
///
/// Lines reach stderr through a writer thread that writes whatever has queued in one
/// system call: one `write` per line (the access log writes one per call) cost about a
/// third of the throughput when stderr is a file. Nothing is dropped: a full queue
/// ([`LOG_QUEUE_LINES`], a few MiB of lines at most while stderr is stalled) makes the
/// logging call wait. Keep the returned guard until the process ends; dropping it writes
/// out what is queued.
pub(crate) fn init_logging(format: LogFormat) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use std::io::IsTerminal;
    #[expect(clippy::disallowed_methods, reason = "RUST_LOG is the tracing ecosystem's switch, read before the policy")]
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let filter = tracing_subscriber::EnvFilter::try_new(scoped_directives(&spec))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("flowgate-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    // A second call (tests) keeps the first subscriber; that is fine.
    let installed = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.ok().map(|()| guard)
}

/// Rewrites a `RUST_LOG` spec so that a bare level above `info` (`debug`, `trace`) applies to
/// flowgate's own targets while dependencies stay at `info`. Dependencies at TRACE are a
/// flood, and one of them is a loop: the file watcher (`notify`) traces every inotify event
/// in the policy directory, including the writes of its own trace lines when the log file
/// lives there. Directives that name a target are kept as written: an operator who asks for
/// `hyper=trace` gets it. An empty spec means `info`.
pub(crate) fn scoped_directives(spec: &str) -> String {
    let mut out = Vec::new();
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.parse::<tracing_subscriber::filter::LevelFilter>() {
            Ok(level) if level > tracing_subscriber::filter::LevelFilter::INFO => {
                out.push("info".to_owned());
                out.push(format!("flowgate={level}"));
            }
            _ => out.push(directive.to_owned()),
        }
    }
    if out.is_empty() {
        out.push("info".to_owned());
    }
    out.join(",")
}

/// Latency buckets in seconds, for request and upstream histograms.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The process's Prometheus handle, installing the recorder on first use.
pub(crate) fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); we still render ours.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!("flowgate_requests_total", "Calls by trigger, method class and status.");
    metrics::describe_histogram!("flowgate_request_duration_seconds", "Time from request head to response head.");
    metrics::describe_counter!("flowgate_upstream_errors_total", "Upstream failures by kind.");
    metrics::describe_gauge!("flowgate_open_connections", "Client connections currently open.");
    metrics::describe_counter!(
        "flowgate_worker_connections_total",
        "Connections served, by the worker thread that accepted them (0 when one runtime serves)."
    );
    metrics::describe_counter!(
        "flowgate_connections_refused_total",
        "Connections closed at accept, by reason (firewall, per_ip)."
    );
    metrics::describe_counter!(
        "flowgate_connections_closed_total",
        "Connections dropped by the gateway, by reason (no_request, send_timeout)."
    );
    metrics::describe_gauge!("flowgate_admin_open_connections", "Admin listener connections currently open.");
    metrics::describe_counter!("flowgate_admin_busy_total", "Run-history answers refused: too many at once.");
    metrics::describe_counter!(
        "flowgate_trace_spans_dropped_total",
        "Calls whose spans were dropped: the export queue was full (count or bytes)."
    );
    metrics::describe_counter!("flowgate_policy_reloads_total", "Policy reloads by result.");
    metrics::describe_gauge!("flowgate_policy_info", "The running policy version (label), value 1.");
}

/// The handles of the metrics every call updates, resolved once per (trigger, method
/// class, status) rather than per call: a registry lookup builds the key's label list and
/// hashes the name and every label. Build it after `metrics_handle` installed the
/// recorder (a handle resolved before then counts nothing).
#[derive(Debug)]
pub struct RequestMetrics {
    duration: Histogram,
    /// foldhash: the policy makes the trigger labels; method classes and statuses are few.
    totals: RwLock<foldhash::HashMap<RequestKey, Counter>>,
}

/// Trigger label (`-` when no trigger matched), method class, status.
type RequestKey = (Option<Arc<str>>, &'static str, u16);

impl RequestMetrics {
    /// Resolves the handles with labels known now; the rest on first use.
    pub fn new() -> Self {
        Self { duration: metrics::histogram!("flowgate_request_duration_seconds"), totals: RwLock::default() }
    }

    /// Counts one answered call in `flowgate_requests_total` and its head-to-head time.
    pub fn answered(&self, trigger: Option<&Arc<str>>, method: &str, status: u16, seconds: f64) {
        self.duration.record(seconds);
        let key = (trigger.cloned(), method_class(method), status);
        let known = self.totals.read().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
        let counter = known.unwrap_or_else(|| {
            let counter = metrics::counter!(
                "flowgate_requests_total",
                "trigger" => key.0.clone().map_or(SharedString::const_str("-"), SharedString::from),
                "method" => key.1,
                "status" => status_label(status)
            );
            self.totals.write().unwrap_or_else(PoisonError::into_inner).insert(key, counter.clone());
            counter
        });
        counter.increment(1);
    }
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// "100" to "599", three digits each, so that a status label is a static slice.
const STATUS_DIGITS: [u8; 1500] = {
    let mut digits = [0u8; 1500];
    let mut i = 0;
    while i < 500 {
        let status = 100 + i;
        #[expect(clippy::cast_possible_truncation, reason = "each is one decimal digit")]
        let (hundreds, tens, ones) = ((status / 100) as u8, (status / 10 % 10) as u8, (status % 10) as u8);
        digits[3 * i] = b'0' + hundreds;
        digits[3 * i + 1] = b'0' + tens;
        digits[3 * i + 2] = b'0' + ones;
        i += 1;
    }
    digits
};

static STATUS_TEXT: &str = match std::str::from_utf8(&STATUS_DIGITS) {
    Ok(text) => text,
    Err(_) => panic!("status digits are ASCII"),
};

/// The `status` label: `status` in decimal, static for every valid status code.
fn status_label(status: u16) -> SharedString {
    if (100..600).contains(&status) {
        let at = usize::from(status - 100) * 3;
        SharedString::const_str(&STATUS_TEXT[at..at + 3])
    } else {
        SharedString::from(status.to_string())
    }
}

fn method_class(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::{scoped_directives, status_label};

    #[test]
    fn status_labels_are_the_decimal_status() {
        for status in [0u16, 99, 100, 200, 404, 499, 503, 599, 600, 999] {
            assert_eq!(&*status_label(status), status.to_string(), "{status}");
        }
    }

    #[test]
    fn a_bare_verbose_level_applies_to_flowgate_only() {
        assert_eq!(scoped_directives("trace"), "info,flowgate=trace");
        assert_eq!(scoped_directives("DEBUG"), "info,flowgate=debug");
        assert_eq!(scoped_directives("trace,hyper=debug"), "info,flowgate=trace,hyper=debug");
    }

    #[test]
    fn quiet_levels_and_named_targets_are_kept() {
        assert_eq!(scoped_directives(""), "info");
        assert_eq!(scoped_directives("warn"), "warn");
        assert_eq!(scoped_directives("notify=trace"), "notify=trace");
        assert_eq!(scoped_directives("flowgate::access=off, info"), "flowgate::access=off,info");
    }
}
