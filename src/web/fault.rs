//! Why an admitted call could not be completed on the wire: the caller's request body
//! ([`BodyRefusal`]) or the upstream exchange ([`UpstreamFailure`]). The refusal table
//! (`refusal.rs`) turns each into its one response; this file only says what happened.
//!
//! Reasons are shown to every viewer of the run history, so an upstream failure names the
//! trigger and a fixed phrase for its cause, never the upstream's URL, host or address
//! (the URL may be a private field; a TLS or resolver message would repeat the host).

use super::client::UpstreamError;
use std::time::Duration;

/// Why the caller's request body could not be taken whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyRefusal {
    /// Declared or found longer than the trigger's limit.
    #[error("body over {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// It arrived slower than the read pace allows.
    #[error("{reason}")]
    TooSlow {
        /// What was being waited for.
        reason: String,
    },
    /// Malformed, reset or cut short.
    #[error("{body} could not be read: {reason}")]
    Unreadable {
        /// Which body, as the reason names it: [`BodyRefusal::REQUEST_BODY`] when the
        /// call forwards it, or the step that read it whole (a webhook, a contract).
        body: &'static str,
        /// The error, on one line.
        reason: String,
    },
}

impl BodyRefusal {
    /// The body a call forwards as it streams, as an unreadable one's reason names it.
    pub const REQUEST_BODY: &'static str = "the request body";
}

/// Why the upstream gave no answer flowgate can pass on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamFailure {
    /// No response head within the trigger's `upstream_response_timeout`.
    #[error("trigger {trigger}: no response head from the upstream within {after:?}")]
    Timeout {
        /// The trigger's name.
        trigger: String,
        /// The timeout.
        after: Duration,
    },
    /// The connection could not be made, or the exchange broke.
    #[error("trigger {trigger}: upstream {kind} error ({cause})")]
    Exchange {
        /// The trigger's name.
        trigger: String,
        /// `connect` or `exchange`.
        kind: &'static str,
        /// A fixed phrase for the cause, read from the error chain's kinds.
        cause: String,
    },
    /// The answer is in a coding flowgate cannot undo, so it cannot be scrubbed.
    #[error("trigger {trigger}: {problem}")]
    Unreadable {
        /// The trigger's name.
        trigger: String,
        /// Which coding.
        problem: String,
    },
}

impl UpstreamFailure {
    /// A failed exchange of `trigger`, its cause read from the error chain's kinds.
    pub fn exchange(trigger: &str, error: &UpstreamError) -> Self {
        let kind = if error.is_connect() { "connect" } else { "exchange" };
        Self::Exchange { trigger: trigger.to_owned(), kind, cause: error_cause(error) }
    }

    /// The `kind` label of `flowgate_upstream_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::Exchange { kind, .. } => kind,
            Self::Unreadable { .. } => "coding",
        }
    }
}

/// What went wrong in an upstream exchange, as a fixed phrase: the first cause in the
/// chain that names a kind (TLS, an I/O kind, an HTTP framing fault), never the text of
/// an error, which may name the host or address.
fn error_cause(error: &UpstreamError) -> String {
    use std::error::Error as _;
    let tls = |e: &(dyn std::error::Error + 'static)| {
        e.downcast_ref::<rustls::Error>().map(|tls| match tls {
            rustls::Error::InvalidCertificate(_) => "TLS: certificate refused",
            rustls::Error::AlertReceived(_) => "TLS: alert from the upstream",
            _ => "TLS handshake failed",
        })
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(phrase) = tls(cause) {
            return phrase.to_owned();
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            // A TLS error travels inside an I/O error (whose `source` skips it).
            if let Some(phrase) = io.get_ref().and_then(|inner| tls(inner)) {
                return phrase.to_owned();
            }
            return io.kind().to_string();
        }
        if let Some(http) = cause.downcast_ref::<hyper::Error>() {
            let phrase = if http.is_incomplete_message() {
                "closed before a complete response"
            } else if http.is_parse() || http.is_parse_status() {
                "malformed response"
            } else if http.is_timeout() {
                "timed out"
            } else if http.is_closed() || http.is_canceled() {
                "connection closed"
            } else if http.is_body_write_aborted() {
                "request body aborted"
            } else {
                "HTTP error"
            };
            if http.source().is_none() || !matches!(phrase, "HTTP error") {
                return phrase.to_owned();
            }
        }
        source = cause.source();
    }
    "unknown cause".to_owned()
}
