//! [`handle`]: one request from start to end, top to bottom. The policy snapshot is loaded
//! once; [`admit`] runs every check; only an admitted call is [`forward`]ed; a refusal
//! settles what is left of the request body (`unread.rs`); the call's one record is
//! written when the response ends (`call.rs`).

use super::admit::admit;
use super::call::{self, Call, CallBody};
use super::forward::{Forwarding, forward};
use super::inbound::Connection;
use super::unread::{Unread, linger, settle_unread_body};
use crate::gateway::Gateway;
use crate::web::{REQUEST_ID, RequestBody, declared_length};
use http::{HeaderValue, Request, Response, Version, header};
use http_body_util::BodyExt;
use std::sync::Arc;

/// Handles one request from start to end.
///
/// # Errors
/// Never: every outcome is a response.
pub async fn handle<B: RequestBody>(
    gateway: Arc<Gateway>,
    connection: Arc<Connection>,
    request: Request<B>,
) -> Result<Response<CallBody>, std::convert::Infallible> {
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

    let outcome = match admit(&gateway, &policy, &connection, &parts, &mut body, &mut call).await {
        Ok(admitted) => {
            let context = Forwarding { gateway: &gateway, policy: &policy, connection: &connection, call: &mut call };
            forward(context, admitted, parts, &mut body).await
        }
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
    if let Ok(mut id) = HeaderValue::from_str(call.request_id()) {
        // Unique to this call, so an h2 HPACK table entry for it would never be used again:
        // it would only push out entries that repeat, and h2's encoder compares each new id
        // with every earlier one still in its table. Sensitive is the flag that makes h2
        // send it as a never-indexed literal (RFC 7541 §6.2.3); h1 ignores the flag, and
        // the run history's capture of the response is taken before this header is set.
        id.set_sensitive(true);
        response.headers_mut().insert(REQUEST_ID, id);
    }
    // HSTS means something only over TLS (RFC 6797 §7.2: never on plain HTTP).
    if let Some(hsts) = policy.server.hsts.as_ref().filter(|_| connection.tls) {
        response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    // A proxy answers in its own HTTP version (RFC 9110 §6.2), whatever the upstream spoke:
    // hyper writes an h1 response's version as given, so an HTTP/1.0 upstream would turn an
    // HTTP/1.1 caller's answer into `HTTP/1.0` and cost it keep-alive. (hyper still answers
    // an HTTP/1.0 caller in 1.0, and ignores the field on h2.)
    *response.version_mut() = Version::HTTP_11;
    Ok(call::record_on_end(call, response))
}
