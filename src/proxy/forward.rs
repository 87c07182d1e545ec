//! [`forward`]: an admitted call sent upstream and its answer streamed back, one function
//! per step in the order they run: capture set up, secrets rendered, upstream URI and
//! headers built, request body read (paced, capped, perhaps buffered or JSON-injected),
//! the request sent, the response shaped. Failures are typed (`web::BodyRefusal`,
//! `web::UpstreamFailure`, `secrets::SecretError`); the refusal table (`refusal.rs`)
//! decides their status.

use super::admit::Admitted;
use super::body::{self, BodyStats, CappedBody, Pace, PacedBody, Prefixed, StallGuard};
use super::call::{Call, Capture};
use super::coding;
use super::headers::{self, strip_hop_by_hop};
use super::inbound::Connection;
use super::payload::{Checked, check_contract};
use crate::auth::Caller;
use crate::denial::{Failure, Rejection};
use crate::gateway::Gateway;
use crate::policy::{Policy, Trigger};
use crate::secrets::{Redactor, Rendered};
use crate::web::{
    BodyRefusal, BoxError, RequestBody, ResponseBody, UpstreamError, UpstreamFailure, UpstreamResponse, full_body,
    request_host_of,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version, header};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What a call is forwarded within: the gateway (secrets, upstream pools), the policy
/// snapshot of the call, the connection it came in on, and the call in progress.
pub struct Forwarding<'a> {
    /// The running gateway.
    pub gateway: &'a Gateway,
    /// The call's policy snapshot.
    pub policy: &'a Arc<Policy>,
    /// The client connection.
    pub connection: &'a Connection,
    /// The call in progress, and its record.
    pub call: &'a mut Call,
}

/// Sends an admitted call upstream and streams the answer back.
///
/// # Errors
/// 503 when a secret cannot be resolved; 413 when the body crosses the limit; 408 when it
/// arrives too slowly; 400 when it is malformed or cut short; 502 when the upstream cannot
/// be reached; 504 when it does not answer in time. The body is taken out of `body` only
/// when it starts being read, so a refusal before that leaves it to the caller.
pub async fn forward<B: RequestBody>(
    context: Forwarding<'_>,
    admitted: Admitted,
    mut parts: http::request::Parts,
    body: &mut Option<B>,
) -> Result<Response<ResponseBody>, Rejection> {
    let Forwarding { gateway, policy, connection, call } = context;
    let Admitted { trigger, rest, client, caller, rate_limit_header, permit, delivery } = admitted;
    // A handshake the webhook trigger expects is answered here and never goes upstream.
    if let Some(answer) = delivery.as_ref().and_then(|d| d.answer.clone()) {
        let mut response = Response::new(full_body(answer.body));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
        response.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        return Ok(response);
    }
    let host = request_host_of(&parts).map(str::to_owned);
    start_capture(&trigger, &parts.headers, call);

    // The payload contract after every admission check and before the permit's first use:
    // a refused payload never fetches a secret nor reaches the upstream, and an anonymous
    // caller never makes the gateway read a body. What it read is what is forwarded.
    let replay_key = delivery.as_ref().and_then(|d| d.replay);
    let mut verified = delivery.map(|d| d.body);
    let checked =
        check_contract(policy, &trigger, &mut parts, body, &mut verified, &call.request_body, &permit).await?;

    // Secrets are resolved only now, with the permit: unadmitted calls never reach a vault.
    let started = call.steps.start();
    let rendered = trigger.injection.render(&permit, &gateway.secrets, &policy.vaults).await;
    call.steps.done(crate::trace::Step::Secrets, started);
    let rendered = rendered?;
    // One redactor for the call: what the caller receives and what the record keeps are
    // cleaned from the same values. Only a capture holds headers and bodies, so only a
    // capturing call gathers the values its record must not hold.
    let redactor = Redactor::new(&rendered);
    if let Some(capture) = &mut call.capture {
        let caller_credential = crate::auth::bearer_credential(&parts.headers);
        capture.redactor =
            redactor.clone().recording(&rendered, caller_credential, &trigger.upstream.credential_values);
    }

    let uri = upstream_uri(&trigger, &rendered, &rest, parts.uri.query())?;
    let mut headers = parts.headers;
    let forwarded_for = headers::ForwardedFor {
        client: connection.ip_header(client.ip()),
        proto: if connection.tls { "https" } else { "http" },
        host: host.as_deref(),
        request_id: call.request_id(),
    };
    upstream_headers(&mut headers, &trigger, &rendered, &caller, &forwarded_for, &call.trace);
    super::certificate::strip_forwarded_cert(&mut headers, policy);
    let scrub_body = trigger.scrub_responses && !redactor.scrubber().is_empty();
    if scrub_body {
        // The scrubber reads the body as sent: no compression, no byte ranges.
        coding::ask_for_scrubbable(&mut headers);
    }

    let request_stats = call.request_body.clone();
    let body = if let Some(checked) = checked {
        checked_body(&trigger, &rendered, checked, &mut headers)?
    } else if let Some(verified) = verified {
        // A webhook delivery's body was read and verified in `admit`: exactly those bytes
        // go upstream (through the same injection, capture and accounting).
        request_body(policy, &trigger, &rendered, http_body_util::Full::new(verified), &mut headers, &request_stats)
            .await?
    } else {
        let Some(body) = body.take() else {
            return Err(Failure::Internal { reason: "the request body was taken twice".into() }.into());
        };
        request_body(policy, &trigger, &rendered, body, &mut headers, &request_stats).await?
    };
    let request = upstream_request(&trigger, parts.method, uri, headers, body);

    let started = call.steps.start();
    // Pinned here and lent: the exchange's future (over a kilobyte) lives in this future
    // once, not moved into `response_head` and again into its pinned slot.
    let send = std::pin::pin!(gateway.upstreams.send(policy, &trigger, request));
    let sent = response_head(send, trigger.response_timeout, &request_stats).await;
    call.steps.done(crate::trace::Step::Upstream, started);
    // A delivery the upstream did not take (no answer, or a 5xx) is forgotten by the
    // replay guard: the sender will retry it, and that retry must pass.
    if let Some(key) = replay_key
        && !matches!(&sent, Some(Ok(response)) if !response.status().is_server_error())
    {
        gateway.replay_guard.release(key).await;
    }
    let response = match sent {
        None => return Err(upstream_timeout(&trigger)),
        Some(Err(error)) => return Err(upstream_failure(&trigger, &request_stats, &error)),
        Some(Ok(response)) => response,
    };
    call.record().upstream_status = Some(response.status().as_u16());
    shape_response(&trigger, response, rate_limit_header, &redactor, scrub_body, call)
}

/// A capturing trigger keeps the request's headers and a prefix of both bodies.
fn start_capture(trigger: &Arc<Trigger>, request_headers: &HeaderMap, call: &mut Call) {
    if !trigger.capture.enabled {
        return;
    }
    call.request_body =
        Arc::new(BodyStats { tap: Some(body::Tap::new(trigger.capture.max_bytes)), ..BodyStats::default() });
    call.capture = Some(Capture {
        trigger: trigger.clone(),
        request_headers: request_headers.clone(),
        response_headers: HeaderMap::new(),
        response_body: Arc::new(body::Tap::new(trigger.capture.max_bytes)),
        redactor: Redactor::default(),
    });
}

/// The upstream URL: its own path and query win; the caller's signature parameters and
/// parameters of injected names are dropped, then injected parameters are appended.
fn upstream_uri(trigger: &Trigger, rendered: &Rendered, rest: &str, query: Option<&str>) -> Result<Uri, Rejection> {
    let injected_query: Vec<(&str, &str)> =
        rendered.query().iter().map(|(name, value)| (name.as_str(), value.expose_secret())).collect();
    // A webhook URL whose path carries its credential takes that path from the vault.
    let vault_path = rendered.upstream_path().map(crate::secrets::SecretValue::expose_secret);
    trigger
        .upstream
        .uri_for_path(vault_path, rest, query, &trigger.reserved_query, &injected_query)
        .map_err(Rejection::from)
}

/// The caller's headers made fit for the upstream: hygiene and forwarding headers, the
/// call's trace, identity headers if asked, then the injected headers.
fn upstream_headers(
    headers: &mut HeaderMap,
    trigger: &Trigger,
    rendered: &Rendered,
    caller: &Caller,
    forwarded_for: &headers::ForwardedFor<'_>,
    trace: &crate::trace::TraceContext,
) {
    // A caller cannot pre-set an injected header, nor one that folds to its name.
    headers::upstream_request_headers(
        headers,
        trigger.access.forward_authorization,
        forwarded_for,
        &trigger.injected_names.headers,
    );
    // The upstream continues the call's trace, with flowgate's span as its parent; the
    // caller's own `traceparent`/`tracestate` never pass unchecked.
    trace.apply(headers);
    if trigger.access.forward_identity {
        for (name, value) in crate::auth::identity_headers(caller) {
            headers.insert(name, value);
        }
    }
    rendered.apply_headers(headers);
}

/// The request body as the upstream will get it: paced, capped, read whole when small (or
/// when JSON fields are injected into it), else streamed.
///
/// # Errors
/// 413 over the limit, 408 too slow, 400 malformed or cut short (or JSON injection
/// impossible), 503 when an injected value is unavailable.
async fn request_body<B: RequestBody>(
    policy: &Policy,
    trigger: &Trigger,
    rendered: &Rendered,
    body: B,
    headers: &mut HeaderMap,
    request_stats: &Arc<BodyStats>,
) -> Result<ResponseBody, Rejection> {
    // Every request body is held to the read pace: a trickling caller cannot hold a call
    // (and the upstream's connection) open.
    let pace = Pace { timeout: policy.edge.body_read_timeout, min_rate: policy.edge.body_min_rate };
    let body = PacedBody::new(body, pace, request_stats.clone());
    if trigger.injection.has_json() {
        // JSON field injection needs the whole body: bounded in size and in time.
        let limit = trigger.max_body_bytes.min(trigger.injection.json_max_bytes() as u64);
        let capped = CappedBody::new(body, limit, request_stats.clone());
        let collected = match tokio::time::timeout(trigger.response_timeout, capped.collect()).await {
            Err(_elapsed) => {
                return Err(
                    BodyRefusal::TooSlow { reason: "the JSON body to inject into arrived too slowly".into() }.into()
                );
            }
            Ok(Err(_)) if request_stats.exceeded.load(Ordering::Relaxed) => {
                return Err(BodyRefusal::TooLarge { limit }.into());
            }
            Ok(Err(error)) => return Err(body_refusal(request_stats, &*error).into()),
            Ok(Ok(collected)) => collected,
        };
        return inject_json(rendered, collected.to_bytes(), headers);
    }
    let capped = CappedBody::new(body, trigger.max_body_bytes, request_stats.clone());
    // Small bodies are read whole first, so a body that turns out malformed, too slow
    // or too large never reaches the upstream (it would see a truncated message).
    match buffer_body(capped, policy.edge.buffer_request_body).await {
        Buffered::Whole(bytes) => {
            if !bytes.is_empty() || headers.contains_key(header::CONTENT_LENGTH) {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            }
            Ok(full_body(bytes))
        }
        Buffered::Streaming(prefix, rest) => Ok(Prefixed::new(prefix, rest).boxed_unsync()),
        Buffered::Failed(_) if request_stats.exceeded.load(Ordering::Relaxed) => {
            Err(BodyRefusal::TooLarge { limit: trigger.max_body_bytes }.into())
        }
        Buffered::Failed(error) => Err(body_refusal(request_stats, &*error).into()),
    }
}

/// A body the contract read whole and judged, as the upstream gets it: the same bytes,
/// with their length (or with injected JSON fields, the one change the policy makes).
///
/// # Errors
/// 400 when JSON injection is impossible, 503 when an injected value is unavailable.
fn checked_body(
    trigger: &Trigger,
    rendered: &Rendered,
    checked: Checked,
    headers: &mut HeaderMap,
) -> Result<ResponseBody, Rejection> {
    let bytes = checked.into_bytes();
    if trigger.injection.has_json() {
        return inject_json(rendered, bytes, headers);
    }
    if !bytes.is_empty() || headers.contains_key(header::CONTENT_LENGTH) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    headers.remove(header::TRANSFER_ENCODING);
    Ok(full_body(bytes))
}

/// Writes the trigger's injected JSON fields into a whole body.
fn inject_json(rendered: &Rendered, bytes: Bytes, headers: &mut HeaderMap) -> Result<ResponseBody, Rejection> {
    let injected = rendered.apply_json(bytes)?;
    headers.remove(header::CONTENT_LENGTH);
    Ok(full_body(injected))
}

/// The request the upstream gets.
fn upstream_request(
    trigger: &Trigger,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: ResponseBody,
) -> Request<ResponseBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    // Upstreams speak HTTP/1.1: an h2 caller's request must be re-versioned, and Host is
    // set from the upstream URL, never from the caller.
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request.headers_mut().insert(header::HOST, trigger.upstream.host_header.clone());
    request
}

/// The limit header (draft-ietf-httpapi-ratelimit-headers), made once.
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// How often a response deadline that fell while the upstream was waiting for the
/// caller's body looks again.
const CALLER_WAIT_RECHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Waits for the upstream's response head within `timeout`, or `None`.
///
/// A deadline that falls while the upstream is itself waiting for the caller's streaming
/// body is not the upstream's fault: the body's own pace rules (`body_read_timeout`,
/// `body_min_rate`) bound that wait and answer 408, so the deadline is looked at again
/// shortly instead of answering 504. Time the upstream spends not reading, or not
/// answering, counts in full.
async fn response_head<F: std::future::Future>(
    mut send: std::pin::Pin<&mut F>,
    timeout: std::time::Duration,
    request_stats: &BodyStats,
) -> Option<F::Output> {
    let mut deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            // The answer first: it wins over a deadline reached in the same poll, and no
            // random draw is made on every call to pick the order.
            biased;
            answer = send.as_mut() => return Some(answer),
            () = tokio::time::sleep_until(deadline) => {
                if !request_stats.waiting_for_caller.load(Ordering::Relaxed) {
                    return None;
                }
                deadline = tokio::time::Instant::now() + CALLER_WAIT_RECHECK;
            }
        }
    }
}

/// No response head within the trigger's `upstream_response_timeout`: 504. The reason
/// names the trigger, never the upstream (its URL may be a private field).
fn upstream_timeout(trigger: &Trigger) -> Rejection {
    let failure = UpstreamFailure::Timeout { trigger: trigger.name.clone(), after: trigger.response_timeout };
    metrics::counter!("flowgate_upstream_errors_total", "kind" => failure.kind()).increment(1);
    failure.into()
}

/// A failed exchange, by who is at fault: the caller's body (413/408/400), else the
/// upstream (502).
fn upstream_failure(trigger: &Trigger, request_stats: &BodyStats, error: &UpstreamError) -> Rejection {
    if request_stats.exceeded.load(Ordering::Relaxed) {
        return BodyRefusal::TooLarge { limit: trigger.max_body_bytes }.into();
    }
    if request_stats.errored.load(Ordering::Relaxed) {
        // The caller's upload broke off, was malformed or too slow: their side, not
        // the upstream's. hyper's client closes that upstream connection (never
        // pooled again), so the upstream sees an incomplete message.
        return body_refusal(request_stats, error).into();
    }
    let failure = UpstreamFailure::exchange(&trigger.name, error);
    metrics::counter!("flowgate_upstream_errors_total", "kind" => failure.kind()).increment(1);
    // The reason is shown to every viewer of the run history: it names the trigger and a
    // fixed kind of error, never the upstream URL, host or address (`web/fault.rs`).
    failure.into()
}

/// The upstream's response made fit for the caller: transfer codings undone, hop-by-hop
/// headers and the reason phrase dropped, the `RateLimit` header set, injected values
/// scrubbed from headers and trailers, the body guarded against stalls (and decoded and
/// scrubbed when the trigger asks).
///
/// # Errors
/// 502 when the body has a transfer coding other than gzip/deflate, or a body to scrub has
/// a content coding that cannot be decoded.
fn shape_response(
    trigger: &Trigger,
    response: Response<UpstreamResponse>,
    rate_limit_header: Option<HeaderValue>,
    redactor: &Redactor,
    scrub_body: bool,
    call: &mut Call,
) -> Result<Response<ResponseBody>, Rejection> {
    let scrubber = redactor.scrubber();
    let (mut parts, body) = response.into_parts();
    // hyper undid only a final `chunked`; any other transfer coding is still in the body and
    // its header goes with the hop-by-hop ones: read it now, undo it below (or refuse).
    let transfer = coding::transfer_codings(&parts.headers).map_err(|e| unreadable(trigger, &e))?;
    strip_hop_by_hop(&mut parts.headers);
    // hyper would send an upstream's own reason phrase on to HTTP/1.1 callers verbatim, and
    // it may repeat what the upstream received: the standard phrase is sent instead.
    parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    if let Some(mut value) = rate_limit_header {
        // Its remaining count makes it new on every call: kept out of h2's HPACK table, as
        // the request id is (see `handle`).
        value.set_sensitive(true);
        parts.headers.insert(RATELIMIT, value);
    }
    // Injected values never reach the caller in a response header (a redirect's
    // `Location` echoing the query, say), whatever `scrub_responses` says: it is cheap.
    scrubber.scrub_headers(&mut parts.headers);
    let body = StallGuard::new(body.map_err(|e| -> BoxError { Box::new(e) }), trigger.response_timeout).boxed_unsync();
    let body = coding::decode_transfer(body, &transfer, &mut parts.headers);
    let body = if scrub_body {
        // An upstream that echoes an injected value must not hand it to the caller, even
        // compressed: the body is decoded first, or refused when it cannot be.
        let codings = coding::codings(&parts.headers).map_err(|e| unreadable(trigger, &e))?;
        let body = coding::decode(body, &codings, &mut parts.headers);
        parts.headers.remove(header::CONTENT_LENGTH);
        scrubber.wrap(body).boxed_unsync()
    } else if !scrubber.is_empty() {
        // Trailers are headers: scrubbed whatever `scrub_responses` says.
        scrubber.wrap_trailers(body).boxed_unsync()
    } else {
        body
    };
    if let Some(capture) = &mut call.capture {
        capture.response_headers = parts.headers.clone();
        // The run history keeps the limit header: it is sensitive only to h2's encoder
        // (capture leaves out sensitive values).
        if let Some(value) = capture.response_headers.get_mut(RATELIMIT) {
            value.set_sensitive(false);
        }
    }
    Ok(Response::from_parts(parts, body))
}

/// An upstream answer in a coding flowgate cannot undo: 502.
fn unreadable(trigger: &Trigger, problem: &coding::UnsupportedCoding) -> Rejection {
    UpstreamFailure::Unreadable { trigger: trigger.name.clone(), problem: problem.to_string() }.into()
}

/// A request body after [`buffer_body`].
enum Buffered<B> {
    /// Read to its end, within the bound.
    Whole(Bytes),
    /// Larger than the bound (or declared so): what was read, and the rest to stream.
    Streaming(Bytes, B),
    /// Reading failed (too large, too slow, malformed, cut short).
    Failed(BoxError),
}

/// Reads `body` whole when it ends within `bound` bytes; otherwise returns what was read
/// and the rest, to stream. A body declared longer than `bound` streams from the start.
async fn buffer_body<B>(mut body: B, bound: u64) -> Buffered<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    if body.is_end_stream() {
        return Buffered::Whole(Bytes::new());
    }
    if bound == 0 || body.size_hint().lower() > bound {
        return Buffered::Streaming(Bytes::new(), body);
    }
    let mut read = bytes::BytesMut::new();
    loop {
        match body.frame().await {
            None => return Buffered::Whole(read.freeze()),
            Some(Err(error)) => return Buffered::Failed(error),
            Some(Ok(frame)) => {
                // Trailers of a buffered body are dropped: hyper's HTTP/1.1 client would
                // not send them upstream either.
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
            }
        }
        if body.is_end_stream() {
            return Buffered::Whole(read.freeze());
        }
        if read.len() as u64 > bound {
            return Buffered::Streaming(read.freeze(), body);
        }
    }
}

/// Why a request body could not be read: too slow, or malformed, reset or cut short.
fn body_refusal(stats: &BodyStats, error: &(dyn std::error::Error + 'static)) -> BodyRefusal {
    if stats.timed_out.load(Ordering::Relaxed) {
        return BodyRefusal::TooSlow { reason: error_chain(error) };
    }
    BodyRefusal::Unreadable { body: BodyRefusal::REQUEST_BODY, reason: error_chain(error) }
}

/// An error and its causes on one line (for private reasons only).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
