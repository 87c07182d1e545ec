//! The request path. [`handle`] reads top to bottom:
//!
//! 1. load the policy snapshot once (a reload never changes the rules under a call);
//! 2. [`admit`]: every check, cheapest first, each a plain function returning
//!    `Result<_, Denial>`; success yields a [`Permit`];
//! 3. [`forward`] (`proxy/forward.rs`): only with a permit; render the upstream request,
//!    stream it, stream the answer back;
//! 4. exactly one access-log line and one run record, written when the response body
//!    ends (or is dropped), so the byte counts are real, or when the caller goes away
//!    first: both from `Call::finish` (`proxy/call.rs`).
//!
//! Beside this file: `call` (the call in progress and its one record), `forward` (one
//! function per step of sending upstream), `client` (the upstream pools, [`Upstreams`]),
//! `body` (read pace, size cap, buffered prefix, response observer), `headers` (hygiene),
//! `coding` (decoding for the scrubber), `permit` ([`Permit`]).

mod body;
mod call;
mod client;
pub mod coding;
mod forward;
mod headers;
mod permit;

pub use body::{BodyStats, BodyTooSlow, CappedBody, ObservedBody, Pace, PacedBody, Prefixed, StallGuard};
pub use call::Call;
pub use client::{BoxError, UpstreamBody, UpstreamClient, UpstreamError, Upstreams, build_client};
pub use forward::forward;
pub use headers::{REQUEST_ID, strip_hop_by_hop};
pub use permit::Permit;

use crate::auth::Caller;
use crate::denial::{Denial, Failure, Rejection};
use crate::firewall::{ClientIp, client_address};
use crate::gateway::Gateway;
use crate::policy::{Policy, Trigger};
use crate::ratelimit::{LimitKey, LimiterError, RateKey};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Version, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What [`handle`] accepts as a request body: hyper's `Incoming` from the server, or an
/// in-memory body in tests. Generic (monomorphised), so the server's path costs nothing.
pub trait RequestBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}

impl<B> RequestBody for B where B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}

/// The body type of every response flowgate sends.
pub(crate) type ResponseBody = UpstreamBody;

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
    pub client: ClientIp,
    /// The authenticated caller.
    pub caller: Arc<Caller>,
    /// The `RateLimit` header for the response, when the trigger has a limit.
    pub rate_limit_header: Option<HeaderValue>,
    /// Proof of admission.
    pub permit: Permit,
}

/// Handles one request from start to end.
///
/// # Errors
/// Never: every outcome is a response.
pub async fn handle<B: RequestBody>(
    gateway: Arc<Gateway>,
    upstreams: &Upstreams,
    connection: Arc<Connection>,
    request: Request<B>,
) -> Result<Response<ResponseBody>, std::convert::Infallible> {
    // One policy snapshot for the whole call: a reload never changes the rules under it.
    let policy = gateway.policy();
    let mut call = Call::begin(&gateway, &policy, &connection, &request);
    let (parts, body) = request.into_parts();
    let version = parts.version;
    let expects_continue =
        parts.headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = declared_length(&parts.headers);
    // `forward` takes the body only when it starts reading it; until then a refusal can
    // still settle it (below).
    let mut body = Some(body);

    let outcome = match admit(&gateway, &policy, &connection, &parts, &mut call).await {
        Ok(admitted) => forward(&gateway, upstreams, &policy, &connection, admitted, parts, &mut body, &mut call).await,
        Err(rejection) => Err(rejection),
    };

    let mut response = match outcome {
        Ok(response) => response,
        Err(rejection) => {
            call.record().reject(&rejection);
            let mut response =
                rejection.response(call.request_id()).map(|b| b.map_err(|never| match never {}).boxed_unsync());
            // A refusal usually comes before the body was read. The caller must still get
            // the status: see `settle_unread_body`.
            let mut unread = Unread { body: body.take(), expects_continue, declared };
            let settled = settle_unread_body(&mut unread, &call.request_body, policy.edge.body_read_timeout).await;
            if !settled {
                if version <= Version::HTTP_11 {
                    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                } else if let Some(rest) = unread.body.take() {
                    tokio::spawn(linger(rest));
                }
            }
            response
        }
    };
    if let Ok(id) = HeaderValue::from_str(call.request_id()) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    // A proxy answers in its own HTTP version (RFC 9110 §6.2), whatever the upstream spoke:
    // hyper writes an h1 response's version as given, so an HTTP/1.0 upstream would turn an
    // HTTP/1.1 caller's answer into `HTTP/1.0` and cost it keep-alive. (hyper still answers
    // an HTTP/1.0 caller in 1.0, and ignores the field on h2.)
    *response.version_mut() = Version::HTTP_11;
    Ok(call::record_on_end(call, response))
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

    // Client address: the trusted forwarding header is believed only from trusted proxies.
    // Every later rule and the run record use it.
    // An unreadable hop where the client should be is refused, never judged as the
    // proxy's own address (which trusted-proxy exemptions and allow lists may favour).
    let address =
        client_address(connection.peer.ip(), &parts.headers, &policy.trusted_proxies, policy.server.trusted_header)
            .map_err(|unreadable| Denial::BadRequest { reason: format!("client address unknown: {unreadable}") })?;
    call.record().client_ip = Some(address.client.ip());
    call.record().client_ip_note = address.note.map(str::to_owned);
    // Per-address budgets (shield, `ip` rate-limit key) count an IPv6 network, not a host.
    let accounted = address.client.accounting_unit(policy.edge.ipv6_prefix);

    // Path hygiene before routing: dot segments, empty segments, encoded separators, `;`
    // path parameters and segment ends a server would trim would let a prefix route reach
    // an upstream path the policy never named. Routing then compares the path's route key
    // (case, escapes and a trailing `/` do not count), so a narrower route cannot be
    // bypassed by another spelling of its path (`policy/path.rs`).
    let path = crate::policy::normalize_path(parts.uri.path())
        .map_err(|problem| Denial::BadRequest { reason: format!("path refused: {problem}") })?;

    // Global firewall: the cheapest refusal, before anything else is revealed.
    policy.firewall.check(address.client, address.peer).map_err(|refusal| ip_denial(&refusal))?;

    // Route: a miss is a bare 404 that says nothing about what exists.
    let found = policy.routes.find(request_host_of(parts), &path, &parts.method)?;
    let trigger = found.trigger.clone();
    call.record().trigger = Some(trigger.name.clone());
    call.trigger_label = Some(trigger.name_label.clone());

    // The trigger's own IP rules.
    trigger.ip_rules.check(address.client, address.peer).map_err(|refusal| ip_denial(&refusal))?;

    // A declared body over the limit is refused before any expensive check.
    if declared_length(&parts.headers).is_some_and(|len| len > trigger.max_body_bytes) {
        return Err(Denial::BodyTooLarge { limit: trigger.max_body_bytes }.into());
    }

    // Pre-authentication shield: an address that has spent its budget of refused
    // credentials stops here, before a flood of junk can burn CPU on signature checks.
    // Calls whose credentials pass never spend it (see `shield_charge` below).
    gateway.shield.check_client(accounted).map_err(|retry_after_secs| Denial::Shielded { retry_after_secs })?;

    // Authenticate and authorize: token (or signed URL), then tenant/principal/role rules.
    let started = call.steps.start();
    let authenticated = gateway.key_stores.authenticate_identified(&trigger.access, parts).await;
    call.steps.done(crate::trace::Step::Authenticate, started);
    let caller = match authenticated {
        Ok(caller) => caller,
        Err((error, identified)) => {
            // A valid token refused by a rule still names its caller in the run record.
            if let Some(caller) = identified {
                call.record().identify(&caller);
            }
            let rejection = error.into_rejection(trigger.access.realm());
            shield_charge(gateway, accounted, &rejection);
            return Err(rejection);
        }
    };
    call.record().identify(&caller);

    // Per-principal pinning needs the caller, so it runs right after authentication.
    if let Err(refusal) = trigger.pins.check(&caller.principal_ids, address.client.ip()) {
        let rejection = ip_denial(&refusal);
        shield_charge(gateway, accounted, &rejection);
        return Err(rejection);
    }

    // Calls in flight per caller, before the rate limit so that a refused call spends no
    // budget. The slot lives in the call, so it is held until the response's last byte.
    let limit = policy.limits.max_calls_per_principal;
    let slot = gateway.in_flight.try_begin(&caller.budget_key, limit).ok_or(Denial::TooManyInFlight { limit })?;
    call.in_flight = Some(slot);

    // Rate limit last among the checks: only calls that would otherwise be admitted spend
    // budget, so refused junk cannot exhaust a real caller's allowance.
    // (`rate_limit = "off"` is the only way to have no rule: see `policy::compile`.)
    let rate_limit_header = match &trigger.rate_limit {
        None => None,
        Some(rule) => {
            let key = match rule.key {
                // Immutable ids only: tenant + oid, else issuer + sub, or one signed URL.
                LimitKey::Principal => Some(RateKey::subject(&caller.budget_key)),
                LimitKey::Ip => Some(RateKey::client(accounted)),
                LimitKey::Trigger => Some(RateKey::trigger()),
                // The connection's key leaves with it (`Limiters::forget_connection`).
                LimitKey::TcpConnection => None,
            };
            let started = call.steps.start();
            let decision = match &key {
                Some(key) => gateway.limiters.check(rule, key).await,
                None => gateway.limiters.check_connection(rule, connection.id).await,
            };
            call.steps.done(crate::trace::Step::RateLimit, started);
            let decision = decision.map_err(|e| match e {
                LimiterError::Unavailable(_) => Failure::LimiterUnavailable { reason: e.to_string() },
                LimiterError::Full { retry_after_secs, .. } => {
                    Failure::LimiterFull { retry_after_secs, reason: e.to_string() }
                }
            })?;
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
                call.record().reason = Some(format!("shadow: would be rate limited ({})", which()));
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

/// At most this much of an unread request body is read (and discarded) before a refusal
/// is sent: the size of most flow payloads, and a bounded cost for a refused caller.
pub(crate) const DRAIN_MAX_BYTES: u64 = 64 * 1024;
/// At most this long is spent reading an unread body before a refusal is sent (less when
/// `body_read_timeout` is shorter).
pub(crate) const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// What is left of a refused call's request body.
struct Unread<B> {
    /// The body, unless `forward` already took it.
    body: Option<B>,
    /// The caller waits for `100 Continue` before sending it.
    expects_continue: bool,
    /// Its declared length.
    declared: Option<u64>,
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
async fn settle_unread_body<B: RequestBody>(
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
pub(crate) const LINGER_MAX_BYTES: u64 = 1024 * 1024;

/// Keeps reading (and discarding) a refused h2 call's body for a moment after the answer
/// was sent, within [`LINGER_MAX_BYTES`] and [`DRAIN_MAX_TIME`]. A client still uploading
/// stops once it sees the final status; resetting the stream before that makes some
/// clients (curl 7.x) drop the status and report a stream error. A client that keeps
/// sending past the bounds gets `RST_STREAM(NO_ERROR)` when the body is dropped here.
async fn linger<B: RequestBody>(mut body: B) {
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

/// The shield counts calls refused by authentication or authorization (401/403), never
/// calls whose credentials pass, nor our own failures (no signing keys: 503).
fn shield_charge(gateway: &Gateway, client: ClientIp, rejection: &Rejection) {
    if let Rejection::Denied(_) = rejection {
        gateway.shield.charge_client(client);
    }
}

fn ip_denial(refusal: &crate::firewall::IpRefusal) -> Rejection {
    Denial::IpForbidden { rule: refusal.to_string() }.into()
}

/// The host the caller asked for: `:authority` on h2, `Host` on h1.
pub(crate) fn request_host_of(parts: &http::request::Parts) -> Option<&str> {
    parts.uri.authority().map(http::uri::Authority::as_str).or_else(|| parts.headers.get(header::HOST)?.to_str().ok())
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A fresh request id: a time-ordered UUID, so ids sort by arrival.
pub(crate) fn new_request_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A response body from bytes (for local answers: echo, admin, errors).
pub(crate) fn full_body(bytes: impl Into<Bytes>) -> ResponseBody {
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

#[cfg(test)]
mod tests;
