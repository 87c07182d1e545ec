//! [`RunRecord`]: one call as kept in the run history, its summary for listings, and what
//! was captured of it.

use super::capture::CapturedMessage;
use crate::denial::Rejection;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::SystemTime;

/// The decision value of an admitted call.
pub(crate) const ALLOWED: &str = "allowed";

/// One call through the gateway, as kept in the run history.
///
/// Written exactly once per call, whatever the outcome. It never holds a token, a
/// signature, a query string or a secret value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The request id (also sent as `X-Request-Id`).
    pub id: String,
    /// When the call arrived: RFC 3339, UTC, milliseconds.
    pub time: String,
    /// The matched trigger, if any route matched.
    pub trigger: Option<String>,
    /// The request method.
    pub method: String,
    /// The request path WITHOUT the query string (signed URLs carry signatures there).
    pub path: String,
    /// `allowed`, or the rejection kind from [`Rejection::kind`].
    pub decision: String,
    /// The private reason of a rejection.
    pub reason: Option<String>,
    /// The status sent to the caller.
    pub status: u16,
    /// The resolved client address (forwarded-for from trusted proxies, else the peer).
    pub client_ip: Option<IpAddr>,
    /// The TCP peer's address.
    pub peer_ip: Option<IpAddr>,
    /// How the client address was derived, when it is not simply the peer.
    pub client_ip_note: Option<String>,
    /// The caller's tenant.
    pub tenant: Option<String>,
    /// The caller's principal (`oid:…`, `app:…`, …).
    pub principal: Option<String>,
    /// The caller's app (client) id.
    pub app_id: Option<String>,
    /// The caller's client certificate as `sha256:THUMBPRINT SUBJECT` (never the
    /// certificate itself), when one was presented and could name a caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The upstream's status, when the call was forwarded.
    pub upstream_status: Option<u16>,
    /// Time from arrival to the end of the response, in milliseconds.
    pub latency_ms: f64,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// The version of the policy that judged the call.
    pub policy_version: String,
    /// The W3C trace id (32 hex digits): the caller's, when it sent a valid `traceparent`,
    /// else a fresh one; the upstream got the same trace id.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Captured request and response, for triggers with `capture = true`.
    pub capture: Option<Captured>,
    /// A webhook trigger's delivery: its scheme and the sender's delivery id, or the
    /// handshake answered (never a signature or a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookDelivery>,
}

/// String buffers a record's text is written into: empty for a new record, a written
/// record's own for a renewed one (their capacity kept).
#[derive(Default)]
struct Buffers {
    time: String,
    method: String,
    path: String,
    decision: String,
    policy_version: String,
}

/// What the run history keeps of a webhook delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The scheme (`github`, `standard`, …).
    pub scheme: String,
    /// The sender's delivery id, when it sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// The handshake answered at the edge, when this call was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake: Option<String>,
}

impl RunRecord {
    /// A record for a call that arrived at `at`, decided `allowed` with status 200 until
    /// told otherwise. Any query string in `path` is cut off here, so a signed URL's
    /// signature can never reach the run history.
    pub fn new(id: impl Into<String>, at: SystemTime, method: &str, path: &str) -> Self {
        Self::fresh(id.into(), Buffers::default(), at, method, path)
    }

    /// Makes this record what [`RunRecord::new`] makes for a new call, in place: every
    /// field set afresh (none keeps a value of the call before), the string buffers kept.
    /// A call's record is taken from those its thread wrote before (`proxy/call.rs`), so a
    /// call allocates no strings for its record. `write_id` writes the request id.
    pub(crate) fn renew(&mut self, write_id: impl FnOnce(&mut String), at: SystemTime, method: &str, path: &str) {
        let mut id = std::mem::take(&mut self.id);
        id.clear();
        write_id(&mut id);
        let buffers = Buffers {
            time: std::mem::take(&mut self.time),
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            decision: std::mem::take(&mut self.decision),
            policy_version: std::mem::take(&mut self.policy_version),
        };
        *self = Self::fresh(id, buffers, at, method, path);
    }

    /// What a new call's record holds, its text written into `buffers` (the one place that
    /// says so: [`RunRecord::new`] and [`RunRecord::renew`] both build it here).
    fn fresh(id: String, buffers: Buffers, at: SystemTime, method: &str, path: &str) -> Self {
        let Buffers { time, method: mut record_method, path: mut record_path, mut decision, mut policy_version } =
            buffers;
        method.clone_into(&mut record_method);
        path.split_once('?').map_or(path, |(p, _)| p).clone_into(&mut record_path);
        ALLOWED.clone_into(&mut decision);
        policy_version.clear();
        Self {
            id,
            time: format_time(at, time),
            trigger: None,
            method: record_method,
            path: record_path,
            decision,
            reason: None,
            status: 200,
            client_ip: None,
            peer_ip: None,
            client_ip_note: None,
            tenant: None,
            principal: None,
            app_id: None,
            certificate: None,
            upstream_status: None,
            latency_ms: 0.0,
            bytes_in: 0,
            bytes_out: 0,
            policy_version,
            trace_id: None,
            capture: None,
            webhook: None,
        }
    }

    /// Makes this record a copy of `from`, reusing this record's string buffers where they
    /// are large enough (the ring recycles its oldest record this way, so that it allocates
    /// nothing per call once full: docs/PERFORMANCE.md, "The run history's ring").
    pub(crate) fn overwrite_with(&mut self, from: &RunRecord) {
        // Destructured, so that a field added to the record cannot be forgotten here.
        let RunRecord {
            id,
            time,
            trigger,
            method,
            path,
            decision,
            reason,
            status,
            client_ip,
            peer_ip,
            client_ip_note,
            tenant,
            principal,
            app_id,
            certificate,
            upstream_status,
            latency_ms,
            bytes_in,
            bytes_out,
            policy_version,
            trace_id,
            capture,
            webhook,
        } = from;
        self.id.clone_from(id);
        self.time.clone_from(time);
        self.trigger.clone_from(trigger);
        self.method.clone_from(method);
        self.path.clone_from(path);
        self.decision.clone_from(decision);
        self.reason.clone_from(reason);
        self.status = *status;
        self.client_ip = *client_ip;
        self.peer_ip = *peer_ip;
        self.client_ip_note.clone_from(client_ip_note);
        self.tenant.clone_from(tenant);
        self.principal.clone_from(principal);
        self.app_id.clone_from(app_id);
        self.certificate.clone_from(certificate);
        self.upstream_status = *upstream_status;
        self.latency_ms = *latency_ms;
        self.bytes_in = *bytes_in;
        self.bytes_out = *bytes_out;
        self.policy_version.clone_from(policy_version);
        self.trace_id.clone_from(trace_id);
        self.capture.clone_from(capture);
        self.webhook.clone_from(webhook);
    }

    /// Records a rejection: its kind as the decision, its private reason and status.
    pub fn reject(&mut self, rejection: &Rejection) {
        rejection.kind().clone_into(&mut self.decision);
        self.reason = Some(rejection.reason());
        self.status = rejection.status().as_u16();
    }

    /// Names the authenticated caller.
    pub fn identify(&mut self, caller: &crate::auth::Caller) {
        self.tenant.clone_from(&caller.tenant);
        match &mut self.principal {
            Some(principal) => principal.clone_from(&caller.principal),
            None => self.principal = Some(caller.principal.clone()),
        }
        self.app_id.clone_from(&caller.app_id);
    }

    /// When the call arrived, parsed back from [`RunRecord::time`].
    pub fn at(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(&self.time).ok()
    }
}

/// The fields of a run that lists show (the console's runs and triggers pages): a few
/// short strings, read from the ring without parsing or copying any capture.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The request id.
    pub id: String,
    /// When the call arrived (RFC 3339).
    pub time: String,
    /// The matched trigger.
    pub trigger: Option<String>,
    /// The request method.
    pub method: String,
    /// The request path, without query.
    pub path: String,
    /// `allowed` or the rejection kind.
    pub decision: String,
    /// The status sent.
    pub status: u16,
    /// The caller's principal.
    pub principal: Option<String>,
    /// Arrival to end of response, in milliseconds.
    pub latency_ms: f64,
}

impl RunSummary {
    /// The summary of `record`.
    pub fn of(record: &RunRecord) -> Self {
        Self {
            id: record.id.clone(),
            time: record.time.clone(),
            trigger: record.trigger.clone(),
            method: record.method.clone(),
            path: record.path.clone(),
            decision: record.decision.clone(),
            status: record.status,
            principal: record.principal.clone(),
            latency_ms: record.latency_ms,
        }
    }
}

/// What was captured of one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Captured {
    /// The request as received (after every protection was applied).
    pub request: Option<CapturedMessage>,
    /// The response as sent (after every protection was applied).
    pub response: Option<CapturedMessage>,
}

/// RFC 3339 in UTC with milliseconds, as used in [`RunRecord::time`].
pub(crate) fn format_time(at: SystemTime, mut text: String) -> String {
    // Every call's record is stamped: the date and time of day are formatted (by humantime)
    // once per second and thread, and each stamp only adds its milliseconds.
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let Ok(since_epoch) = at.duration_since(SystemTime::UNIX_EPOCH) else {
        return humantime::format_rfc3339_millis(at).to_string();
    };
    let (seconds, millis) = (since_epoch.as_secs(), since_epoch.subsec_millis());
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != seconds {
            // `…T00:28:07Z` without its `Z`: the milliseconds go before it.
            let whole =
                humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds));
            *prefix = whole.to_string();
            prefix.pop();
            *cached = seconds;
        }
        text.clear();
        text.reserve(prefix.len() + 5);
        text.push_str(prefix);
        text.push('.');
        for digit in [millis / 100, millis / 10 % 10, millis % 10] {
            text.push(char::from_digit(digit, 10).unwrap_or('0'));
        }
        text.push('Z');
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::denial::Denial;
    use std::time::Duration;

    proptest::proptest! {
        /// The stamp built from a per-second prefix is humantime's own millisecond format,
        /// for any instant from 1970 to 9999, in any order (the cached second changes back and
        /// forth), and for the same second twice with other milliseconds.
        #[test]
        fn a_record_time_is_rfc3339_with_milliseconds(
            instants in proptest::collection::vec((0u64..253_402_300_800, 0u32..1_000_000_000), 1..20),
        ) {
            for (seconds, nanos) in instants {
                for nanos in [nanos, 999_999_999 - nanos] {
                    let at = SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos);
                    proptest::prop_assert_eq!(format_time(at, String::new()), humantime::format_rfc3339_millis(at).to_string());
                }
            }
        }
    }

    /// A record of an earlier call with every field set (as any call could leave it).
    fn used_record(text: &str, number: u16) -> RunRecord {
        let mut record =
            RunRecord::new(text, SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(number)), text, text);
        let some = || Some(text.to_owned());
        (record.trigger, record.reason, record.client_ip_note) = (some(), some(), some());
        (record.tenant, record.principal, record.app_id, record.certificate) = (some(), some(), some(), some());
        (record.trace_id, record.policy_version, record.decision) = (some(), text.to_owned(), text.to_owned());
        record.status = number;
        record.upstream_status = Some(number);
        record.client_ip = Some(std::net::IpAddr::from([10, 0, 0, 1]));
        record.peer_ip = record.client_ip;
        (record.latency_ms, record.bytes_in, record.bytes_out) = (f64::from(number), 7, 9);
        record.capture = Some(Captured { request: None, response: None });
        record.webhook = Some(WebhookDelivery { scheme: text.to_owned(), delivery_id: some(), handshake: some() });
        record
    }

    proptest::proptest! {
        /// A renewed record is exactly a new one (`RunRecord::new` with the same id, time,
        /// method and path): nothing of the call before survives, whatever it set. Seed: a
        /// record with every optional field set, renewed for a path with a query.
        #[test]
        fn a_renewed_record_is_a_new_one(
            before in "[a-z/?=]{0,40}",
            number in 0u16..600,
            id in "[0-9a-f]{32}",
            seconds in 0u64..4_000_000_000,
            method in "[A-Z]{3,7}",
            path in "/[a-z/?=&]{0,40}",
        ) {
            let at = SystemTime::UNIX_EPOCH + Duration::from_millis(seconds * 1000 + u64::from(number));
            let mut renewed = used_record(&before, number);
            renewed.renew(|out| out.push_str(&id), at, &method, &path);
            proptest::prop_assert_eq!(renewed, RunRecord::new(id.clone(), at, &method, &path));
        }
    }

    #[test]
    fn new_record_strips_query_and_formats_time() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let record = RunRecord::new("r1", at, "POST", "/t/invoice?sig=abc&se=1");
        assert_eq!(record.path, "/t/invoice");
        assert_eq!(record.time, "2023-11-14T22:13:20.123Z");
        assert_eq!(record.at(), Some(at));
        let json = serde_json::to_string(&record).expect("serializes");
        assert!(!json.contains("sig="), "{json}");
    }

    #[test]
    fn reject_sets_kind_reason_and_status() {
        let mut record = RunRecord::new("r2", SystemTime::UNIX_EPOCH, "GET", "/x");
        record.reject(&Rejection::Denied(Denial::Forbidden { reason: "tenant not listed".into() }));
        assert_ne!(record.decision, ALLOWED);
        assert_eq!(record.status, 403);
        assert_eq!(record.reason.as_deref(), Some("tenant not listed"));
    }
}
