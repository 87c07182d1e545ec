//! The closed set of reasons a call does not reach its upstream, each mapped to
//! exactly one HTTP response by one exhaustive `match`.
//!
//! A [`Denial`] is the caller's side of the ledger (4xx); a [`Failure`] is ours or the
//! upstream's (5xx). Both carry a private reason for the run history; the caller only
//! ever sees a fixed public message and the request id. This module sits low so that
//! both `proxy` and `audit` use it without importing each other.

mod payload;

pub use payload::{MAX_LISTED, PayloadFailure, PayloadPart, PayloadRefusal, PayloadStatus};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// A refusal decided by policy or caused by the caller's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No trigger matches host and path. No hint of what exists.
    RouteNotFound,
    /// A trigger matches the path but not the method.
    MethodNotAllowed {
        /// Methods the trigger accepts, for the `Allow` header.
        allow: String,
    },
    /// The request is malformed in a way the HTTP parser let through.
    BadRequest {
        /// What was wrong (private).
        reason: String,
    },
    /// The client or peer address is refused by an IP rule.
    IpForbidden {
        /// The rule that refused it (private).
        rule: String,
    },
    /// No valid credential: no token, a bad token, or a bad signed URL.
    Unauthenticated {
        /// `realm` for `WWW-Authenticate`.
        realm: String,
        /// A credential was presented (adds `error="invalid_token"`).
        presented: bool,
        /// Which check failed (private): signature, exp, aud, ...
        reason: String,
    },
    /// A valid caller that the trigger's tenant/principal/claim/IP-pin rules refuse.
    Forbidden {
        /// Which rule refused it (private).
        reason: String,
    },
    /// A valid caller lacking a required role or scope.
    InsufficientScope {
        /// `realm` for `WWW-Authenticate`.
        realm: String,
        /// Which requirement failed (private).
        reason: String,
    },
    /// The caller's rate-limit budget is spent.
    RateLimited {
        /// Whole seconds until a retry succeeds if nobody else spends the budget.
        retry_after_secs: u64,
        /// The `RateLimit-Policy` header value.
        policy: String,
        /// The `RateLimit` header value.
        limit: String,
        /// Which key and rule (private).
        reason: String,
    },
    /// The caller already has `[limits] max_calls_per_principal` calls in flight.
    TooManyInFlight {
        /// The cap (private).
        limit: usize,
    },
    /// The pre-authentication shield refused a flood from one address.
    Shielded {
        /// Whole seconds until the shield admits again.
        retry_after_secs: u64,
    },
    /// The request head exceeds `max_header_bytes`.
    HeadersTooLarge {
        /// The limit in bytes (private).
        limit: usize,
    },
    /// The caller did not finish sending a body flowgate must read whole in time.
    RequestTimeout {
        /// What was being waited for (private).
        reason: String,
    },
    /// The request body exceeds the trigger's limit.
    BodyTooLarge {
        /// The limit in bytes (private).
        limit: u64,
    },
    /// The admin listener was reached under a host name it does not answer to: a web page
    /// whose name was rebound to its address (DNS rebinding).
    MisdirectedHost {
        /// The `Host` sent (private).
        host: String,
    },
    /// A state-changing admin call in a form a cross-site page can send (a simple request,
    /// or another site's `Origin`).
    CrossSiteRequest {
        /// What made it one (private).
        reason: String,
    },
    /// The trigger needs a client certificate that names a caller, and the call presented
    /// none (or one not for client authentication). 403: no HTTP challenge exists for it.
    CertificateRequired {
        /// What was missing (private).
        reason: String,
    },
    /// The client certificate is valid but not one the trigger admits.
    CertificateForbidden {
        /// Which rule refused it (private).
        reason: String,
    },
    /// A webhook delivery whose signature is missing, unreadable or matches no secret.
    SignatureInvalid {
        /// Scheme, delivery id and the check that failed (private; never a signature).
        reason: String,
    },
    /// A webhook delivery correctly signed, but with a timestamp outside the tolerance.
    TimestampStale {
        /// Scheme, delivery id and the timestamp's age (private).
        reason: String,
    },
    /// A webhook delivery already forwarded within its replay window.
    Replayed {
        /// Scheme and delivery id (private).
        reason: String,
    },
    /// The call breaks its trigger's contract (`contract`): media type, size, query or
    /// header rules, or the JSON body. Answered as `application/problem+json`.
    InvalidPayload(Box<PayloadRefusal>),
}

/// A call that passed admission but could not be completed, or that could not be judged
/// because something we depend on is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The identity's signing keys are unavailable, so no token can be judged (503).
    KeysUnavailable {
        /// Why (private).
        reason: String,
    },
    /// A secret needed for injection could not be resolved (503). Names the reference,
    /// never a value.
    SecretUnavailable {
        /// Why, naming the secret reference (private).
        reason: String,
    },
    /// The shared rate limiter is unreachable and the policy says fail closed (503).
    LimiterUnavailable {
        /// Why (private).
        reason: String,
    },
    /// The rule's local key table holds only live budgets, so a new key cannot be
    /// tracked; admitting it untracked would escape the limit (503 with `Retry-After`).
    LimiterFull {
        /// Whole seconds until the first key of the table goes idle.
        retry_after_secs: u64,
        /// Which rule (private).
        reason: String,
    },
    /// The upstream could not be reached or broke the exchange (502).
    UpstreamUnreachable {
        /// Why (private).
        reason: String,
    },
    /// The upstream did not answer in time (504).
    UpstreamTimeout {
        /// Which timeout (private).
        reason: String,
    },
    /// The webhook replay guard cannot judge a delivery: Redis is unreachable and the
    /// policy says fail closed, or the in-memory guard holds its bound of live keys (503).
    ReplayGuardUnavailable {
        /// Whole seconds until a retry may pass, when known.
        retry_after_secs: Option<u64>,
        /// Why (private).
        reason: String,
    },
    /// A bug or impossible state on our side (500).
    Internal {
        /// What happened (private).
        reason: String,
    },
}

/// Either kind of refusal: what `handle` turns into the one response of a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Refused by policy or because of the caller's request.
    Denied(Denial),
    /// Not completed through no fault of the caller.
    Failed(Failure),
}

impl From<Denial> for Rejection {
    fn from(denial: Denial) -> Self {
        Self::Denied(denial)
    }
}

impl From<Failure> for Rejection {
    fn from(failure: Failure) -> Self {
        Self::Failed(failure)
    }
}

/// Extra headers a rejection carries.
enum Extra<'a> {
    None,
    Allow(&'a str),
    Challenge(String),
    RetryAfter { secs: u64, policy: Option<&'a str>, limit: Option<&'a str> },
    Problem(&'a PayloadRefusal),
}

impl Rejection {
    /// Status, stable kind (for the run history and metrics), public message, private
    /// reason and extra headers: the one place a rejection's response is decided.
    fn parts(&self) -> (StatusCode, &'static str, &'static str, String, Extra<'_>) {
        use Denial as D;
        use Failure as F;
        match self {
            Self::Denied(D::RouteNotFound) => {
                (StatusCode::NOT_FOUND, "not_found", "not found", "no trigger matches".into(), Extra::None)
            }
            Self::Denied(D::MethodNotAllowed { allow }) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
                format!("method not in {allow}"),
                Extra::Allow(allow),
            ),
            Self::Denied(D::BadRequest { reason }) => {
                (StatusCode::BAD_REQUEST, "bad_request", "bad request", reason.clone(), Extra::None)
            }
            Self::Denied(D::IpForbidden { rule }) => {
                (StatusCode::FORBIDDEN, "ip_forbidden", "forbidden", rule.clone(), Extra::None)
            }
            Self::Denied(D::Unauthenticated { realm, presented, reason }) => {
                let challenge = if *presented {
                    format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
                } else {
                    format!("Bearer realm=\"{realm}\"")
                };
                (
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "unauthorized",
                    reason.clone(),
                    Extra::Challenge(challenge),
                )
            }
            Self::Denied(D::Forbidden { reason }) => {
                (StatusCode::FORBIDDEN, "forbidden", "forbidden", reason.clone(), Extra::None)
            }
            Self::Denied(D::InsufficientScope { realm, reason }) => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "forbidden",
                reason.clone(),
                Extra::Challenge(format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\"")),
            ),
            Self::Denied(D::RateLimited { retry_after_secs, policy, limit, reason }) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests",
                reason.clone(),
                Extra::RetryAfter { secs: *retry_after_secs, policy: Some(policy), limit: Some(limit) },
            ),
            Self::Denied(D::TooManyInFlight { limit }) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_in_flight",
                "too many requests",
                format!("the caller already has {limit} calls in flight"),
                Extra::RetryAfter { secs: 1, policy: None, limit: None },
            ),
            Self::Denied(D::Shielded { retry_after_secs }) => (
                StatusCode::TOO_MANY_REQUESTS,
                "shielded",
                "too many requests",
                "pre-authentication shield".into(),
                Extra::RetryAfter { secs: *retry_after_secs, policy: None, limit: None },
            ),
            Self::Denied(D::HeadersTooLarge { limit }) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "request header fields too large",
                format!("headers over {limit} bytes"),
                Extra::None,
            ),
            Self::Denied(D::RequestTimeout { reason }) => {
                (StatusCode::REQUEST_TIMEOUT, "request_timeout", "request timeout", reason.clone(), Extra::None)
            }
            Self::Denied(D::BodyTooLarge { limit }) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body too large",
                format!("body over {limit} bytes"),
                Extra::None,
            ),
            Self::Denied(D::MisdirectedHost { host }) => (
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
                "misdirected request",
                format!("Host {host:?} is not a name this listener answers to"),
                Extra::None,
            ),
            Self::Denied(D::CrossSiteRequest { reason }) => {
                (StatusCode::FORBIDDEN, "cross_site_request", "forbidden", reason.clone(), Extra::None)
            }
            Self::Denied(D::CertificateRequired { reason }) => {
                (StatusCode::FORBIDDEN, "certificate_required", "forbidden", reason.clone(), Extra::None)
            }
            Self::Denied(D::CertificateForbidden { reason }) => {
                (StatusCode::FORBIDDEN, "certificate_forbidden", "forbidden", reason.clone(), Extra::None)
            }
            Self::Denied(D::SignatureInvalid { reason }) => {
                (StatusCode::UNAUTHORIZED, "signature_invalid", "unauthorized", reason.clone(), Extra::None)
            }
            Self::Denied(D::TimestampStale { reason }) => {
                (StatusCode::UNAUTHORIZED, "timestamp_stale", "unauthorized", reason.clone(), Extra::None)
            }
            Self::Denied(D::Replayed { reason }) => {
                (StatusCode::UNAUTHORIZED, "replayed", "unauthorized", reason.clone(), Extra::None)
            }
            Self::Failed(F::ReplayGuardUnavailable { retry_after_secs, reason }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "replay_guard_unavailable",
                "service unavailable",
                reason.clone(),
                retry_after_secs.map_or(Extra::None, |secs| Extra::RetryAfter { secs, policy: None, limit: None }),
            ),
            // 422 for well-formed JSON that breaks the schema (the request was understood,
            // its content is wrong, RFC 9110 §15.5.21); 400 when the body is not strict JSON
            // or a query/header rule is broken: a caller can tell "fix the data" from "fix
            // the encoding".
            Self::Denied(D::InvalidPayload(refusal)) => {
                let (status, kind, message) = match refusal.status {
                    PayloadStatus::Malformed => (StatusCode::BAD_REQUEST, "invalid_payload", "bad request"),
                    PayloadStatus::BreaksSchema => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload", "unprocessable content")
                    }
                    PayloadStatus::TooLarge => {
                        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "request body too large")
                    }
                    PayloadStatus::UnsupportedMediaType => {
                        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "unsupported media type")
                    }
                };
                (status, kind, message, refusal.reason(), Extra::Problem(refusal))
            }
            Self::Failed(F::KeysUnavailable { reason }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "keys_unavailable",
                "service unavailable",
                reason.clone(),
                Extra::None,
            ),
            Self::Failed(F::SecretUnavailable { reason }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "secret_unavailable",
                "service unavailable",
                reason.clone(),
                Extra::None,
            ),
            Self::Failed(F::LimiterUnavailable { reason }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "limiter_unavailable",
                "service unavailable",
                reason.clone(),
                Extra::None,
            ),
            Self::Failed(F::LimiterFull { retry_after_secs, reason }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "limiter_full",
                "service unavailable",
                reason.clone(),
                Extra::RetryAfter { secs: *retry_after_secs, policy: None, limit: None },
            ),
            Self::Failed(F::UpstreamUnreachable { reason }) => {
                (StatusCode::BAD_GATEWAY, "upstream_unreachable", "bad gateway", reason.clone(), Extra::None)
            }
            Self::Failed(F::UpstreamTimeout { reason }) => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "gateway timeout", reason.clone(), Extra::None)
            }
            Self::Failed(F::Internal { reason }) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error", reason.clone(), Extra::None)
            }
        }
    }

    /// The HTTP status of this rejection.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// A stable `snake_case` name for the run history and metrics.
    pub fn kind(&self) -> &'static str {
        self.parts().1
    }

    /// The private reason, for the run history only.
    pub fn reason(&self) -> String {
        self.parts().3
    }

    /// The one response for this rejection: a short JSON body with the public message and
    /// the request id, never internals.
    pub fn response(&self, request_id: &str) -> Response<Full<Bytes>> {
        let (status, kind, message, _, extra) = self.parts();
        let (body, content_type) = match &extra {
            Extra::Problem(refusal) => (refusal.problem(status.as_u16(), request_id), "application/problem+json"),
            _ => (
                serde_json::json!({ "error": kind, "message": message, "request_id": request_id }).to_string(),
                "application/json",
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let mut set = |name: header::HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        match extra {
            Extra::None | Extra::Problem(_) => {}
            Extra::Allow(allow) => set(header::ALLOW, allow),
            Extra::Challenge(challenge) => set(header::WWW_AUTHENTICATE, &challenge),
            Extra::RetryAfter { secs, policy, limit } => {
                set(header::RETRY_AFTER, &secs.to_string());
                if let Some(policy) = policy {
                    set(header::HeaderName::from_static("ratelimit-policy"), policy);
                }
                if let Some(limit) = limit {
                    set(header::HeaderName::from_static("ratelimit"), limit);
                }
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn bodies_are_short_and_carry_no_private_reason() {
        let rejection = Rejection::Failed(Failure::SecretUnavailable { reason: "vault kv: sealed".into() });
        let response = rejection.response("req-1");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("req-1"));
        assert!(!text.contains("sealed"));
    }

    #[test]
    fn unauthenticated_carries_a_challenge() {
        let rejection = Rejection::Denied(Denial::Unauthenticated {
            realm: "flowgate".into(),
            presented: true,
            reason: "exp".into(),
        });
        let response = rejection.response("r");
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"flowgate\", error=\"invalid_token\"");
    }

    #[test]
    fn a_full_key_table_is_ours_503_with_retry_after_and_no_rate_limit_policy() {
        let rejection =
            Rejection::Failed(Failure::LimiterFull { retry_after_secs: 12, reason: "keys of rule t in use".into() });
        assert_eq!(rejection.kind(), "limiter_full");
        let response = rejection.response("r");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "12");
        assert!(response.headers().get("ratelimit-policy").is_none(), "the caller's budget is not spent");
    }

    #[test]
    fn too_many_in_flight_is_429_with_retry_after_and_no_rate_limit_policy() {
        let rejection = Rejection::Denied(Denial::TooManyInFlight { limit: 64 });
        assert_eq!(rejection.kind(), "too_many_in_flight");
        let response = rejection.response("r");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(response.headers().get("ratelimit-policy").is_none(), "no rate budget was spent");
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let rejection = Rejection::Denied(Denial::RateLimited {
            retry_after_secs: 7,
            policy: "\"default\";q=2000;w=60".into(),
            limit: "\"default\";r=0;t=7".into(),
            reason: "principal".into(),
        });
        let response = rejection.response("r");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
