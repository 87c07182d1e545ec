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

/// A fresh request id: a time-ordered UUID, so ids sort by arrival.
pub(crate) fn new_request_id() -> String {
    let mut id = String::with_capacity(uuid::fmt::Simple::LENGTH);
    write_request_id(&mut id);
    id
}

/// Appends a new request id (as [`new_request_id`] makes) to `out`.
pub(crate) fn write_request_id(out: &mut String) {
    // Written into place: `to_string` would go through the formatting machinery every call.
    let mut text = [0u8; uuid::fmt::Simple::LENGTH];
    out.push_str(uuid::Uuid::now_v7().simple().encode_lower(&mut text));
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
}
