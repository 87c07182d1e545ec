//! What is left of a refused call's request body: read within bounds before the refusal
//! is sent ([`settle_unread_body`]), or after it on HTTP/2 ([`linger`]), so the caller
//! gets the status instead of a reset or a dead connection.

use super::body::BodyStats;
use crate::web::RequestBody;
use http_body::Body as _;
use http_body_util::BodyExt;
use std::sync::atomic::Ordering;

/// At most this much of an unread request body is read (and discarded) before a refusal
/// is sent: the size of most flow payloads, and a bounded cost for a refused caller.
const DRAIN_MAX_BYTES: u64 = 64 * 1024;
/// At most this long is spent reading an unread body before a refusal is sent (less when
/// `body_read_timeout` is shorter).
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// What is left of a refused call's request body.
pub(super) struct Unread<B> {
    /// The body, unless `forward` already took it.
    pub(super) body: Option<B>,
    /// The caller waits for `100 Continue` before sending it.
    pub(super) expects_continue: bool,
    /// Its declared length.
    pub(super) declared: Option<u64>,
}

/// Reads what is left of a refused call's body, within [`DRAIN_MAX_BYTES`] and
/// [`DRAIN_MAX_TIME`], and says whether the body is now complete.
///
/// A refusal is usually decided before the body is read. On HTTP/1.1 an unread body leaves
/// the connection unusable: hyper would close it after a response that promised keep-alive,
/// and a pooled client's next request meets EOF. On HTTP/2 the stream would be reset while
/// the caller is still sending, which some clients (curl) report as an error instead of the
/// status. A small body is therefore read first; when that is not possible (too large, too
/// slow, or the caller waits for `100 Continue`, which a refusal must not send) this
/// answers `false`, leaves the body in `unread`, and the caller sends the h1 response with
/// `Connection: close`, or on h2 [`linger`]s on the body after the complete response (the
/// stream then ends with the client's own reset or `RST_STREAM(NO_ERROR)`, RFC 9113 §8.1).
pub(super) async fn settle_unread_body<B: RequestBody>(
    unread: &mut Unread<B>,
    stats: &BodyStats,
    body_read_timeout: std::time::Duration,
) -> bool {
    let Some(body) = unread.body.as_mut() else {
        // `forward` took it: complete only if it was read to its end.
        return stats.ended.load(Ordering::Relaxed);
    };
    if body.is_end_stream() {
        return true;
    }
    if unread.expects_continue || unread.declared.is_some_and(|len| len > DRAIN_MAX_BYTES) {
        return false;
    }
    let limit = DRAIN_MAX_TIME.min(body_read_timeout);
    tokio::time::timeout(limit, discard(body, DRAIN_MAX_BYTES)).await.unwrap_or(false)
}

/// At most this much more of a refused h2 call's body is read after the answer was sent.
const LINGER_MAX_BYTES: u64 = 1024 * 1024;

/// Keeps reading (and discarding) a refused h2 call's body for a moment after the answer
/// was sent, within [`LINGER_MAX_BYTES`] and [`DRAIN_MAX_TIME`]. A client still uploading
/// stops once it sees the final status; resetting the stream before that makes some
/// clients (curl 7.x) drop the status and report a stream error. A client that keeps
/// sending past the bounds gets `RST_STREAM(NO_ERROR)` when the body is dropped here.
pub(super) async fn linger<B: RequestBody>(mut body: B) {
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, discard(&mut body, LINGER_MAX_BYTES)).await;
}

/// Reads and discards `body` to its end, unless more than `max` bytes come; true when it
/// ended.
async fn discard<B: RequestBody>(body: &mut B, max: u64) -> bool {
    let mut read = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
            if read > max {
                return false;
            }
        }
        if body.is_end_stream() {
            return true;
        }
    }
    true
}
