//! Plain HTTP pieces every part of flowgate speaks, whichever listener it serves: the
//! body types (`ResponseBody`, [`BoxError`], [`RequestBody`]), local answers
//! (`full_body`), the request id (`new_request_id`, [`REQUEST_ID`]), what a request's
//! head says about itself (`request_host_of`, `declared_length`), and the upstream
//! client with its pools (`web/client.rs`, [`Upstreams`]; `web/pool.rs`, `web/dial.rs`), and what can go wrong on the
//! wire after admission (`web/fault.rs`: [`BodyRefusal`], [`UpstreamFailure`]).
//!
//! Nothing here judges a call: the data plane (`proxy`) and the control plane (`admin`,
//! `console`) both build on this module, so neither needs to import the other for these.

mod client;
mod dial;
mod fault;
mod pool;

pub use client::{BoxError, UpstreamBody, UpstreamError, UpstreamResponse, Upstreams};
pub use fault::{BodyRefusal, UpstreamFailure};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, header};
use http_body_util::BodyExt;

/// What the request path accepts as a request body: hyper's `Incoming` from the server, or
/// an in-memory body in tests. Generic (monomorphised), so the server's path costs nothing.
pub trait RequestBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}

impl<B> RequestBody for B where B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}

/// The body type of every response flowgate sends.
pub(crate) type ResponseBody = UpstreamBody;

/// A response body from bytes (for local answers: echo, admin, errors).
pub(crate) fn full_body(bytes: impl Into<Bytes>) -> ResponseBody {
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// The request id header, in both directions.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A fresh request id: a time-ordered UUID (version 7). Ids made on one thread sort by arrival;
/// ids made on different threads sort by their millisecond.
pub(crate) fn new_request_id() -> String {
    let mut id = String::with_capacity(uuid::fmt::Simple::LENGTH);
    write_request_id(&mut id);
    id
}

/// Appends a new request id (as [`new_request_id`] makes) to `out`.
pub(crate) fn write_request_id(out: &mut String) {
    // Written into place: `to_string` would go through the formatting machinery every call.
    let mut text = [0u8; uuid::fmt::Simple::LENGTH];
    let sequence = uuid::timestamp::context::ThreadLocalContext::new(&REQUEST_ID_SEQUENCE);
    let id = uuid::Uuid::new_v7(uuid::Timestamp::now(sequence));
    out.push_str(id.simple().encode_lower(&mut text));
}

thread_local! {
    /// Each thread keeps its own version-7 counter: `Uuid::now_v7` shares one behind a
    /// process-wide mutex, which every call on every worker thread would take.
    static REQUEST_ID_SEQUENCE: uuid::timestamp::context::ContextV7 =
        const { uuid::timestamp::context::ContextV7::new() };
}

/// The host the caller asked for: `:authority` on h2, `Host` on h1.
pub(crate) fn request_host_of(parts: &http::request::Parts) -> Option<&str> {
    parts.uri.authority().map(http::uri::Authority::as_str).or_else(|| parts.headers.get(header::HOST)?.to_str().ok())
}

/// The request's declared body length (`Content-Length`), when it declares a readable one.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_request_id_is_a_uuid_v7_in_simple_lower_case_form_and_ids_sort_by_arrival() {
        let first = super::new_request_id();
        let second = super::new_request_id();
        for id in [&first, &second] {
            let parsed = uuid::Uuid::try_parse(id).unwrap();
            assert_eq!(parsed.get_version_num(), 7, "{id}");
            assert_eq!(*id, parsed.simple().to_string(), "32 lower-case hex digits");
        }
        assert!(first < second, "{first} then {second}");
    }

    #[test]
    fn ids_made_on_many_threads_at_once_are_distinct_and_each_threads_own_sort_by_arrival() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..5_000).map(|_| super::new_request_id()).collect::<Vec<_>>()))
            .collect();
        let mut every = std::collections::HashSet::new();
        for thread in threads {
            let ids = thread.join().unwrap();
            assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "one thread's ids ascend");
            every.extend(ids);
        }
        assert_eq!(every.len(), 4 * 5_000, "no id repeats across threads");
    }
}
