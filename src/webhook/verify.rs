//! What every scheme is given and gives back: a [`Delivery`] (headers, the body read
//! whole, the query) checked against the trigger's signing secrets, into a [`Verified`]
//! delivery or a [`Refusal`]. Each scheme's own rules live in its file; `scheme.rs`
//! dispatches to them.

use http::HeaderMap;

/// A delivery as received: what a signature may cover.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The body, read whole: the bytes that are verified are the bytes forwarded.
    pub body: &'a [u8],
    /// The request's query string, if any (Twilio signs the URL it called).
    pub query: Option<&'a str>,
}

impl Delivery<'_> {
    /// The one value of header `name`, as text. A repeated signature header is refused:
    /// two values could be read two ways.
    ///
    /// # Errors
    /// [`Refusal::MissingHeader`] when absent; [`Refusal::Malformed`] when repeated or not
    /// visible ASCII.
    pub fn header(&self, name: &'static str) -> Result<&str, Refusal> {
        let mut values = self.headers.get_all(name).iter();
        let value = values.next().ok_or(Refusal::MissingHeader(name))?;
        if values.next().is_some() {
            return Err(Refusal::Malformed("a signature header is repeated"));
        }
        value.to_str().map_err(|_| Refusal::Malformed("a signature header is not ASCII"))
    }

    /// The first of `names` present (a scheme's header and its aliases).
    ///
    /// # Errors
    /// As [`Delivery::header`], naming the first of `names` when none is present.
    pub fn header_any(&self, names: &[&'static str]) -> Result<&str, Refusal> {
        for name in names {
            if self.headers.contains_key(*name) {
                return self.header(name);
            }
        }
        Err(Refusal::MissingHeader(names[0]))
    }
}

/// A delivery whose signature matched one of the trigger's secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's delivery id, for the run record (it may or may not be signed).
    pub delivery_id: Option<String>,
    /// True when the signature covers `delivery_id`, so it may key the replay guard.
    pub id_signed: bool,
    /// The signed timestamp (Unix seconds), when the scheme signs one.
    pub timestamp: Option<i64>,
    /// The signature that matched, as sent (decoded): a replay key for schemes whose id
    /// is not signed. Never recorded.
    pub signature: Vec<u8>,
}

/// Why a delivery is refused. Messages name headers and checks, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A header the scheme requires is absent.
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    /// A header is present but cannot be read.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// No signature matched any secret.
    #[error("no signature matches a configured secret")]
    SignatureInvalid,
    /// The signature matched, but its timestamp is outside the tolerance.
    #[error("timestamp {age_secs} s away from now, beyond the tolerance")]
    TimestampStale {
        /// Seconds between the timestamp and now (negative: in the future).
        age_secs: i64,
    },
}

impl Refusal {
    /// The short public reason: `timestamp_stale` or `signature_invalid` (a missing or
    /// unreadable header is a delivery that is not signed as the trigger expects).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TimestampStale { .. } => "timestamp_stale",
            Self::MissingHeader(_) | Self::Malformed(_) | Self::SignatureInvalid => "signature_invalid",
        }
    }
}

/// Parses a Unix timestamp in seconds as senders write it (digits only).
///
/// # Errors
/// [`Refusal::Malformed`].
pub(super) fn parse_timestamp(text: &str) -> Result<i64, Refusal> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::Malformed("the timestamp is not a number of seconds"));
    }
    text.parse().map_err(|_| Refusal::Malformed("the timestamp is not a number of seconds"))
}
