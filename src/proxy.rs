//! The request path. [`handle`] reads top to bottom:
//!
//! 1. load the policy snapshot once (a reload never changes the rules under a call);
//! 2. [`admit`]: every check, cheapest first, each a plain function returning
//!    `Result<_, Denial>`; success yields a [`Permit`];
//! 3. [`forward`]: only with a permit; render the upstream request, stream it, stream the
//!    answer back;
//! 4. exactly one access-log line and one run record, written when the response body
//!    ends (or is dropped), so the byte counts are real.

mod body;
pub mod coding;
mod headers;
mod permit;

pub use body::{BodyStats, CappedBody, ObservedBody, StallGuard};
pub use headers::{REQUEST_ID, strip_hop_by_hop};
pub use permit::Permit;

use crate::audit::RunRecord;
use crate::auth::Caller;
use crate::denial::{Denial, Failure, Rejection};
use crate::firewall::client_address;
use crate::gateway::Gateway;
use crate::policy::upstream_types::{BoxError, UpstreamBody};
use crate::policy::{Policy, Trigger};
use crate::ratelimit::{LimitKey, RateKey};
use crate::secrets::Scrubber;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, Version, header};
use http_body_util::BodyExt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

/// The body type of every response flowgate sends.
pub type ResponseBody = UpstreamBody;

/// What we know about the client connection a request came in on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// A process-unique id of the connection (for `tcp_connection` rate-limit keys).
    pub id: u64,
}

/// A call that passed `admit`: where it goes, who is calling, and the proof that it may.
pub struct Admitted {
    /// The matched trigger.
    pub trigger: Arc<Trigger>,
    /// The rest of the path after a prefix match.
    pub rest: String,
    /// The client address we settled on.
    pub client: IpAddr,
    /// The authenticated caller.
    pub caller: Caller,
    /// The `RateLimit` header for the response, when the trigger has a limit.
    pub rate_limit_header: Option<HeaderValue>,
    /// Proof of admission.
    pub permit: Permit,
}

/// One call in progress: its run record, filled in step by step, and what capture needs.
pub struct Call {
    /// The run record, written exactly once when the response ends.
    pub record: RunRecord,
    started: Instant,
    request_body: Arc<BodyStats>,
    capture: Option<Capture>,
    /// Until the response is handed over, dropping the call (the caller went away while
    /// it was being judged or forwarded) writes its record as `client_closed`.
    unfinished: Option<Arc<Gateway>>,
}

/// What a capturing trigger keeps of a call until the response ends.
struct Capture {
    trigger: Arc<Trigger>,
    request_headers: http::HeaderMap,
    response_headers: http::HeaderMap,
    response_body: Arc<body::Tap>,
    /// Injected secret values: redacted wherever they appear in the record.
    secrets: Vec<crate::secrets::SecretValue>,
}

impl Call {
    fn begin<B>(gateway: &Arc<Gateway>, policy: &Policy, connection: &Connection, request: &Request<B>) -> Self {
        let mut record =
            RunRecord::new(new_request_id(), SystemTime::now(), request.method().as_str(), request.uri().path());
        record.peer_ip = Some(connection.peer.ip());
        record.policy_version = policy.version.clone();
        Self {
            record,
            started: Instant::now(),
            request_body: Arc::new(BodyStats::default()),
            capture: None,
            unfinished: Some(gateway.clone()),
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let Some(gateway) = self.unfinished.take() else { return };
        // The upstream may already have the request: the run history must still say so.
        let mut record = std::mem::replace(&mut self.record, RunRecord::new("", SystemTime::UNIX_EPOCH, "", ""));
        record.decision = "client_closed".to_owned();
        record.reason = Some("the caller went away before the response".to_owned());
        record.status = 499;
        record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        record.bytes_in = self.request_body.bytes.load(Ordering::Relaxed);
        tracing::info!(
            target: "flowgate::access",
            request_id = %record.id,
            trigger = record.trigger.as_deref().unwrap_or("-"),
            method = %record.method,
            path = %record.path,
            status = record.status,
            decision = %record.decision,
            "call"
        );
        gateway.audit.write(record);
    }
}

/// Handles one request from start to end. Never fails: every outcome is a response.
pub async fn handle(
    gateway: Arc<Gateway>,
    connection: Arc<Connection>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<ResponseBody>, std::convert::Infallible> {
    // One policy snapshot for the whole call: a reload never changes the rules under it.
    let policy = gateway.policy();
    let mut call = Call::begin(&gateway, &policy, &connection, &request);
    let (parts, body) = request.into_parts();

    let outcome = match admit(&gateway, &policy, &connection, &parts, &mut call).await {
        Ok(admitted) => forward(&gateway, &policy, &connection, admitted, parts, body, &mut call).await,
        Err(rejection) => Err(rejection),
    };

    let mut response = match outcome {
        Ok(response) => response,
        Err(rejection) => {
            call.record.reject(&rejection);
            rejection.response(&call.record.id).map(|b| b.map_err(|never| match never {}).boxed_unsync())
        }
    };
    if let Ok(id) = HeaderValue::from_str(&call.record.id) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    Ok(record_on_end(gateway, call, response))
}

/// Every check a call must pass, cheapest first, so that a flood of bad calls never
/// reaches signature verification, the rate-limit store or the vault.
///
/// # Errors
/// The first check that refuses the call.
pub async fn admit(
    gateway: &Gateway,
    policy: &Policy,
    connection: &Connection,
    parts: &http::request::Parts,
    call: &mut Call,
) -> Result<Admitted, Rejection> {
    // hyper caps the head at its buffer size (at least 8 KiB); the policy's own, possibly
    // smaller, limit is enforced before any header is interpreted.
    let head_bytes: usize = parts.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if head_bytes > policy.limits.max_header_bytes {
        return Err(Denial::HeadersTooLarge { limit: policy.limits.max_header_bytes }.into());
    }

    // Client address: forwarded-for is believed only from trusted proxies. Every later
    // rule and the run record use it.
    let address = client_address(connection.peer.ip(), &parts.headers, &policy.trusted_proxies);
    call.record.client_ip = Some(address.client);
    call.record.client_ip_note = address.note.clone();

    // Path hygiene before routing: dot segments, empty segments and encoded separators
    // would let a prefix route reach an upstream path the policy never named.
    if let Some(problem) = unsafe_path(parts.uri.path()) {
        return Err(Denial::BadRequest { reason: format!("path refused: {problem}") }.into());
    }

    // Global firewall: the cheapest refusal, before anything else is revealed.
    policy.firewall.check(address.client, address.peer).map_err(ip_denial)?;

    // Route: a miss is a bare 404 that says nothing about what exists.
    let found = policy.routes.find(request_host_of(parts), parts.uri.path(), &parts.method)?;
    let trigger = found.trigger.clone();
    call.record.trigger = Some(trigger.name.clone());

    // The trigger's own IP rules.
    trigger.ip_rules.check(address.client, address.peer).map_err(ip_denial)?;

    // A declared body over the limit is refused before any expensive check.
    if declared_length(&parts.headers).is_some_and(|len| len > trigger.max_body_bytes) {
        return Err(Denial::BodyTooLarge { limit: trigger.max_body_bytes }.into());
    }

    // Pre-authentication shield: a flood from one address stops here, before it can burn
    // CPU on signature checks.
    gateway.shield.check(address.client).map_err(|retry_after_secs| Denial::Shielded { retry_after_secs })?;

    // Authenticate and authorize: token (or signed URL), then tenant/principal/role rules.
    let caller = match gateway.key_stores.authenticate_identified(&trigger.access, parts).await {
        Ok(caller) => caller,
        Err((error, identified)) => {
            // A valid token refused by a rule still names its caller in the run record.
            if let Some(caller) = identified {
                call.record.identify(&caller);
            }
            return Err(error.into_rejection(trigger.access.realm()));
        }
    };
    call.record.identify(&caller);

    // Per-principal pinning needs the caller, so it runs right after authentication.
    trigger.pins.check(&caller.principal_ids, address.client).map_err(ip_denial)?;

    // Rate limit last among the checks: only calls that would otherwise be admitted spend
    // budget, so refused junk cannot exhaust a real caller's allowance.
    let rate_limit_header = match &trigger.rate_limit {
        None => None,
        Some(rule) => {
            let key = match rule.key {
                LimitKey::Principal => RateKey::principal(caller.tenant.as_deref().unwrap_or("-"), &caller.principal),
                LimitKey::Ip => RateKey::ip(address.client),
                LimitKey::Trigger => RateKey::trigger(),
                LimitKey::TcpConnection => RateKey::connection(connection.id),
            };
            let decision = gateway
                .limiters
                .check(rule, &key)
                .await
                .map_err(|e| Failure::LimiterUnavailable { reason: e.to_string() })?;
            let which = || format!("{:?} key of rule {}", rule.key, rule.name);
            if !decision.admitted {
                return Err(Denial::RateLimited {
                    retry_after_secs: decision.retry_after_secs.unwrap_or(1),
                    policy: decision.policy_header(rule),
                    limit: decision.limit_header(rule),
                    reason: which(),
                }
                .into());
            }
            if decision.shadowed {
                // Shadow mode admits, but the run history says what would have been refused.
                call.record.reason = Some(format!("shadow: would be rate limited ({})", which()));
            }
            HeaderValue::from_str(&decision.limit_header(rule)).ok()
        }
    };

    Ok(Admitted {
        trigger,
        rest: found.rest.to_owned(),
        client: address.client,
        caller,
        rate_limit_header,
        permit: Permit::issue(),
    })
}

fn ip_denial(refusal: crate::firewall::IpRefusal) -> Rejection {
    Denial::IpForbidden { rule: refusal.to_string() }.into()
}

/// Sends an admitted call upstream and streams the answer back.
///
/// # Errors
/// 503 when a secret cannot be resolved; 413 when the body crosses the limit while
/// streaming; 502 when the upstream cannot be reached; 504 when it does not answer in time.
pub async fn forward(
    gateway: &Gateway,
    policy: &Policy,
    connection: &Connection,
    admitted: Admitted,
    parts: http::request::Parts,
    body: hyper::body::Incoming,
    call: &mut Call,
) -> Result<Response<ResponseBody>, Rejection> {
    let Admitted { trigger, rest, client, caller, rate_limit_header, permit } = admitted;
    let host = request_host_of(&parts).map(str::to_owned);
    if trigger.capture.enabled {
        call.request_body =
            Arc::new(BodyStats { tap: Some(body::Tap::new(trigger.capture.max_bytes)), ..BodyStats::default() });
        call.capture = Some(Capture {
            trigger: trigger.clone(),
            request_headers: parts.headers.clone(),
            response_headers: http::HeaderMap::new(),
            response_body: Arc::new(body::Tap::new(trigger.capture.max_bytes)),
            secrets: Vec::new(),
        });
    }

    // Secrets are resolved only now, with the permit: unadmitted calls never reach a vault.
    let rendered = trigger
        .injection
        .render(&permit, &gateway.secrets, &policy.vaults)
        .await
        .map_err(|e| Failure::SecretUnavailable { reason: e.to_string() })?;
    if let Some(capture) = &mut call.capture {
        capture.secrets = rendered.secret_values().to_vec();
    }

    // The upstream URL: its own path and query win; the caller's signature parameters and
    // parameters of injected names are dropped, then injected parameters are appended.
    let injected_query: Vec<(&str, &str)> =
        rendered.query().iter().map(|(name, value)| (name.as_str(), value.expose_secret())).collect();
    // A webhook URL whose path carries its credential takes that path from the vault.
    let vault_path = rendered.upstream_path().map(crate::secrets::SecretValue::expose_secret);
    let uri = trigger
        .upstream
        .uri_for_path(vault_path, &rest, parts.uri.query(), &trigger.reserved_query, &injected_query)
        .map_err(|e| Denial::BadRequest { reason: format!("cannot build the upstream URI: {e}") })?;

    let mut headers = parts.headers;
    headers::upstream_request_headers(
        &mut headers,
        trigger.access.forward_authorization,
        &headers::ForwardedFor {
            client,
            proto: if connection.tls { "https" } else { "http" },
            host: host.as_deref(),
            request_id: &call.record.id,
        },
    );
    // A caller cannot pre-set an injected header.
    for name in &trigger.injected_names.headers {
        headers.remove(name);
    }
    if trigger.access.forward_identity {
        for (name, value) in crate::auth::identity_headers(&caller) {
            headers.insert(name, value);
        }
    }
    rendered.apply_headers(&mut headers);
    let scrubber = rendered.scrubber();
    let scrub_body = trigger.scrub_responses && !scrubber.is_empty();
    if scrub_body {
        // The scrubber reads the body as sent: no compression, no byte ranges.
        coding::ask_for_scrubbable(&mut headers);
    }

    let request_stats = call.request_body.clone();
    let body = if trigger.injection.has_json() {
        // JSON field injection needs the whole body: bounded in size and in time.
        let limit = trigger.max_body_bytes.min(trigger.injection.json_max_bytes() as u64);
        let capped = CappedBody::new(body, limit, request_stats.clone());
        let collected = match tokio::time::timeout(trigger.response_timeout, capped.collect()).await {
            Err(_elapsed) => {
                return Err(Denial::RequestTimeout {
                    reason: "the JSON body to inject into arrived too slowly".into(),
                }
                .into());
            }
            Ok(Err(_)) if request_stats.exceeded.load(Ordering::Relaxed) => {
                return Err(Denial::BodyTooLarge { limit }.into());
            }
            Ok(Err(_)) => return Err(Denial::BadRequest { reason: "the request body could not be read".into() }.into()),
            Ok(Ok(collected)) => collected,
        };
        let injected = rendered.apply_json(collected.to_bytes()).map_err(|e| match e {
            crate::secrets::SecretError::JsonBody { .. } => {
                Rejection::from(Denial::BadRequest { reason: format!("JSON injection: {e}") })
            }
            other => Failure::SecretUnavailable { reason: other.to_string() }.into(),
        })?;
        headers.remove(header::CONTENT_LENGTH);
        full_body(injected)
    } else {
        CappedBody::new(body, trigger.max_body_bytes, request_stats.clone()).boxed_unsync()
    };

    let mut upstream_request = Request::new(body);
    *upstream_request.method_mut() = parts.method;
    *upstream_request.uri_mut() = uri;
    // Upstreams speak HTTP/1.1: an h2 caller's request must be re-versioned, and Host is
    // set from the upstream URL, never from the caller.
    *upstream_request.version_mut() = Version::HTTP_11;
    *upstream_request.headers_mut() = headers;
    upstream_request.headers_mut().insert(header::HOST, trigger.upstream.host_header.clone());

    let client_pool = trigger.client(&gateway.upstream);
    let sent = tokio::time::timeout(trigger.response_timeout, client_pool.request(upstream_request)).await;
    let response = match sent {
        Err(_elapsed) => {
            metrics::counter!("flowgate_upstream_errors_total", "kind" => "timeout").increment(1);
            return Err(Failure::UpstreamTimeout {
                reason: format!(
                    "no response head from {} within {:?}",
                    trigger.upstream.display, trigger.response_timeout
                ),
            }
            .into());
        }
        Ok(Err(error)) => {
            if request_stats.exceeded.load(Ordering::Relaxed) {
                return Err(Denial::BodyTooLarge { limit: trigger.max_body_bytes }.into());
            }
            if request_stats.errored.load(Ordering::Relaxed) {
                // The caller's upload broke off: their side, not the upstream's.
                return Err(Denial::BadRequest { reason: "the request body ended early".into() }.into());
            }
            let kind = if error.is_connect() { "connect" } else { "exchange" };
            metrics::counter!("flowgate_upstream_errors_total", "kind" => kind).increment(1);
            return Err(Failure::UpstreamUnreachable {
                reason: format!("{kind} error with {}: {}", trigger.upstream.display, error_chain(&error)),
            }
            .into());
        }
        Ok(Ok(response)) => response,
    };
    call.record.upstream_status = Some(response.status().as_u16());
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // hyper would send an upstream's own reason phrase on to HTTP/1.1 callers verbatim, and
    // it may repeat what the upstream received: the standard phrase is sent instead.
    parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    if let Some(value) = rate_limit_header {
        parts.headers.insert(HeaderName::from_static("ratelimit"), value);
    }
    // Injected values never reach the caller in a response header (a redirect's
    // `Location` echoing the query, say), whatever `scrub_responses` says: it is cheap.
    scrubber.scrub_headers(&mut parts.headers);
    let body = StallGuard::new(body.map_err(|e| -> BoxError { Box::new(e) }), trigger.response_timeout).boxed_unsync();
    let body = if scrub_body {
        // An upstream that echoes an injected value must not hand it to the caller, even
        // compressed: the body is decoded first, or refused when it cannot be.
        let codings = coding::codings(&parts.headers)
            .map_err(|e| Failure::UpstreamUnreachable { reason: format!("{}: {e}", trigger.upstream.display) })?;
        let body = coding::decode(body, &codings, &mut parts.headers);
        parts.headers.remove(header::CONTENT_LENGTH);
        scrubber.wrap(body).boxed_unsync()
    } else {
        body
    };
    if let Some(capture) = &mut call.capture {
        capture.response_headers = parts.headers.clone();
    }
    Ok(Response::from_parts(parts, body))
}

/// Wraps the response body so that the access-log line and the run record are written
/// exactly once, when the body ends or is dropped, with real byte counts.
fn record_on_end(gateway: Arc<Gateway>, call: Call, response: Response<ResponseBody>) -> Response<ResponseBody> {
    let mut call = call;
    call.unfinished = None;
    let mut record = std::mem::replace(&mut call.record, RunRecord::new("", SystemTime::UNIX_EPOCH, "", ""));
    let (started, request_body, capture) = (call.started, call.request_body.clone(), call.capture.take());
    record.status = response.status().as_u16();
    metrics::counter!(
        "flowgate_requests_total",
        "trigger" => record.trigger.clone().unwrap_or_else(|| "-".to_owned()),
        "method" => method_class(&record.method),
        "status" => record.status.to_string()
    )
    .increment(1);
    metrics::histogram!("flowgate_request_duration_seconds").record(started.elapsed().as_secs_f64());
    let tap = capture.as_ref().map(|c| c.response_body.clone());
    let (parts, body) = response.into_parts();
    let observed = ObservedBody::new(
        body,
        tap,
        Box::new(move |bytes_out, completed| {
            record.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            record.bytes_in = request_body.bytes.load(Ordering::Relaxed);
            record.bytes_out = bytes_out;
            if let Some(capture) = capture {
                let rules = &capture.trigger.capture;
                let request_prefix = request_body.tap.as_ref().map(body::Tap::bytes).unwrap_or_default();
                // Values of dropped request fields are redacted wherever they reappear
                // (an upstream echoing its input), like injected secrets.
                let private = crate::audit::private_values(rules, &request_prefix);
                let hidden: Vec<&[u8]> = private
                    .iter()
                    .map(Vec::as_slice)
                    .chain(capture.secrets.iter().map(|s| s.expose_secret().as_bytes()))
                    .chain(capture.trigger.upstream.credential_values.iter().map(|v| v.as_bytes()))
                    .collect();
                let (response_body, response_len) =
                    redacted_for_capture(&capture.secrets, capture.response_body.bytes(), bytes_out);
                record.capture = Some(crate::audit::Captured {
                    request: Some(crate::audit::capture_request(
                        rules,
                        &capture.request_headers,
                        &request_prefix,
                        record.bytes_in,
                        &hidden,
                    )),
                    response: Some(crate::audit::capture_response(
                        rules,
                        &capture.response_headers,
                        &response_body,
                        response_len,
                        &hidden,
                    )),
                });
            }
            tracing::info!(
                target: "flowgate::access",
                request_id = %record.id,
                trigger = record.trigger.as_deref().unwrap_or("-"),
                method = %record.method,
                path = %record.path,
                status = record.status,
                duration_ms = record.latency_ms as u64,
                bytes_in = record.bytes_in,
                bytes_out,
                completed,
                decision = %record.decision,
                client = %record.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                "call"
            );
            gateway.audit.write(record);
        }),
    );
    Response::from_parts(parts, observed.boxed_unsync())
}

/// The captured response with injected values redacted in every escaped form the
/// scrubber knows (the caller may have had them unscrubbed), and the length to record.
fn redacted_for_capture(secrets: &[crate::secrets::SecretValue], tapped: Vec<u8>, sent: u64) -> (Vec<u8>, u64) {
    if secrets.is_empty() {
        return (tapped, sent);
    }
    let whole = tapped.len() as u64 == sent;
    let redacted = Scrubber::new(secrets.iter().cloned()).scrub_bytes(&tapped);
    let len = if whole { redacted.len() as u64 } else { sent };
    (redacted, len)
}

/// The host the caller asked for: `:authority` on h2, `Host` on h1.
pub fn request_host_of(parts: &http::request::Parts) -> Option<&str> {
    parts.uri.authority().map(|a| a.as_str()).or_else(|| parts.headers.get(header::HOST)?.to_str().ok())
}

/// Why a request path is refused before routing, if it is: `.`/`..` or empty segments
/// (also percent-encoded), encoded `/` or `\`, or a backslash. Such paths mean different
/// things to different servers, so a prefix route could otherwise forward a path that
/// resolves outside the trigger's upstream path.
fn unsafe_path(path: &str) -> Option<&'static str> {
    if path.contains('\\') {
        return Some("backslash");
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Some("encoded separator");
    }
    if lower.contains("%00") {
        return Some("encoded NUL");
    }
    if path.contains("//") {
        return Some("empty segment");
    }
    let dot_segment = lower.split('/').any(|segment| matches!(segment.replace("%2e", ".").as_str(), "." | ".."));
    dot_segment.then_some("dot segment")
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A fresh request id: a time-ordered UUID, so ids sort by arrival.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
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

/// A response body from bytes (for local answers: echo, admin, errors).
pub fn full_body(bytes: impl Into<Bytes>) -> ResponseBody {
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::unsafe_path;

    #[test]
    fn paths_that_could_escape_a_prefix_are_refused() {
        for bad in [
            "/api/a/../b",
            "/api/a/%2e%2e/b",
            "/api/a/%2E./b",
            "/api/a/./b",
            "/api//b",
            "/api/a%2fb",
            "/a\\b",
            "/a%5Cb",
        ] {
            assert!(unsafe_path(bad).is_some(), "{bad} was accepted");
        }
        for good in ["/", "/api/a", "/api/a/", "/api/a.b/c..d", "/api/%20x"] {
            assert_eq!(unsafe_path(good), None, "{good} was refused");
        }
    }
}
