//! The refusal table: every error a domain returns on the request path (and the admin
//! API's token check), and the one [`Rejection`] it becomes. Together with
//! `Rejection::parts` in `denial.rs` (rejection → status, kind, message, headers), this
//! file is the whole 4xx/5xx contract: what flowgate can answer, and why.
//!
//! Each domain says only what happened, in its own typed error (`firewall::IpRefusal`,
//! `auth::AuthError`, `ratelimit::BudgetSpent`, `secrets::SecretError`,
//! `webhook::DeliveryError`, the contract's `PayloadRefusal`, ...); whose
//! fault it is, and so which status, is decided here and nowhere else. The proxy's own
//! comparisons of a request with a `[limits]` number (head size, calls in flight) and its
//! impossible states build their `Denial`/`Failure` in place: the check and the refusal
//! are the same fact there. The admin listener's `Host` and cross-site checks likewise.
//!
//! This module sits above the domains and below `proxy` and `admin`: `denial` is imported
//! by the domains' parents (`audit` records rejections), so it cannot import them back.
//! The conversions are side-effect free: counting and logging stay with the caller.

use crate::auth::{AuthError, SignedUrlError};
use crate::contract::QueryUnbuildable;
use crate::denial::{Denial, Failure, PayloadRefusal, Rejection};
use crate::firewall::{IpRefusal, UnreadableHop};
use crate::policy::{PathRefusal, RouteMiss, UpstreamUriError};
use crate::ratelimit::{BudgetSpent, LimiterError, Shielded};
use crate::secrets::SecretError;
use crate::tls::forwarded::UnreadableForwardedCert;
use crate::web::{BodyRefusal, UpstreamFailure};
use crate::webhook::{DeliveryError, Refusal, ReplayError};

/// Authentication and authorization, judged against a rule whose challenge names `realm`:
/// a missing or bad credential is 401 with an RFC 6750 challenge (`invalid_token` once
/// one was presented), a rule is 403, a role or scope 403 `insufficient_scope`, no
/// usable signing keys 503, a trigger that cannot be judged 500.
#[expect(
    clippy::needless_pass_by_value,
    reason = "an error is consumed where it is answered, like the conversions below"
)]
pub fn auth(error: AuthError, realm: &str) -> Rejection {
    use AuthError as E;
    let reason = error.to_string();
    let realm = realm.to_owned();
    match error {
        E::MissingToken | E::SignedUrl(SignedUrlError::Missing) => {
            Denial::Unauthenticated { realm, presented: false, reason }.into()
        }
        // RFC 8705 §6: a token used without the certificate it is bound to is an invalid token.
        E::TokenInQuery
        | E::BadAuthorization(_)
        | E::InvalidToken(_)
        | E::NoSubject
        | E::TokenNotBound
        | E::TokenBoundElsewhere
        | E::SignedUrl(_) => Denial::Unauthenticated { realm, presented: true, reason }.into(),
        E::KeysUnavailable(_) => Failure::KeysUnavailable { reason }.into(),
        E::Tenant | E::Principal | E::Claim(_) => Denial::Forbidden { reason }.into(),
        E::Role | E::Scope => Denial::InsufficientScope { realm, reason }.into(),
        // No HTTP authentication scheme challenges for a TLS client certificate, so a
        // missing one is a 403 like an unlisted one (a 401 would need a challenge).
        E::CertificateMissing | E::CertificateUnusable(_) => Denial::CertificateRequired { reason }.into(),
        E::CertificateNotListed => Denial::CertificateForbidden { reason }.into(),
        E::Misconfigured => Failure::Internal { reason }.into(),
    }
}

/// A forwarding header whose client hop cannot be read: 400, never judged as the proxy.
impl From<UnreadableHop> for Rejection {
    fn from(unreadable: UnreadableHop) -> Self {
        Denial::BadRequest { reason: format!("client address unknown: {unreadable}") }.into()
    }
}

/// A trusted proxy's client-certificate header that names no certificate: 400, never a
/// guess at which one it meant.
impl From<UnreadableForwardedCert> for Rejection {
    fn from(unreadable: UnreadableForwardedCert) -> Self {
        Denial::BadRequest { reason: unreadable.to_string() }.into()
    }
}

/// A path spelling servers read differently: 400 before routing.
impl From<PathRefusal> for Rejection {
    fn from(problem: PathRefusal) -> Self {
        Denial::BadRequest { reason: format!("path refused: {problem}") }.into()
    }
}

/// An IP rule (global, trigger, or a principal's pin): 403.
impl From<IpRefusal> for Rejection {
    fn from(refusal: IpRefusal) -> Self {
        Denial::IpForbidden { rule: refusal.to_string() }.into()
    }
}

/// No trigger: a bare 404; a trigger without the method: 405 with `Allow`.
impl From<RouteMiss> for Rejection {
    fn from(miss: RouteMiss) -> Self {
        match miss {
            RouteMiss::NotFound => Denial::RouteNotFound,
            RouteMiss::MethodNotAllowed { allow } => Denial::MethodNotAllowed { allow },
        }
        .into()
    }
}

/// An address that spent its budget of refused credentials: 429 with `Retry-After`.
impl From<Shielded> for Rejection {
    fn from(shielded: Shielded) -> Self {
        Denial::Shielded { retry_after_secs: shielded.retry_after_secs }.into()
    }
}

/// A caller over its rate-limit budget: 429 with `Retry-After` and the `RateLimit` headers.
impl From<BudgetSpent> for Rejection {
    fn from(spent: BudgetSpent) -> Self {
        let BudgetSpent { retry_after_secs, policy, limit, which } = spent;
        Denial::RateLimited { retry_after_secs, policy, limit, reason: which }.into()
    }
}

/// A limiter that cannot decide: ours, 503 (with `Retry-After` when the key table is full).
impl From<LimiterError> for Rejection {
    fn from(error: LimiterError) -> Self {
        let reason = error.to_string();
        match error {
            LimiterError::Unavailable(_) => Failure::LimiterUnavailable { reason },
            LimiterError::Full { retry_after_secs, .. } => Failure::LimiterFull { retry_after_secs, reason },
        }
        .into()
    }
}

/// A secret that cannot be had: ours, 503. A request body that cannot take the injected
/// JSON values is the caller's: 400.
impl From<SecretError> for Rejection {
    fn from(error: SecretError) -> Self {
        match error {
            SecretError::JsonBody { .. } => Denial::BadRequest { reason: format!("JSON injection: {error}") }.into(),
            other => Failure::SecretUnavailable { reason: other.to_string() }.into(),
        }
    }
}

/// A webhook delivery: a signature that does not verify 401 `signature_invalid`, a stale
/// timestamp 401 `timestamp_stale`, a replay 401 `replayed`, no readable replay key 400;
/// a signing secret or a replay guard that cannot be had is ours, 503 (the full in-memory
/// guard with `Retry-After`).
impl From<DeliveryError> for Rejection {
    fn from(error: DeliveryError) -> Self {
        let reason = error.to_string();
        match error {
            DeliveryError::Unverified { refusal: Refusal::TimestampStale { .. }, .. } => {
                Denial::TimestampStale { reason }.into()
            }
            DeliveryError::Unverified {
                refusal: Refusal::MissingHeader(_) | Refusal::Malformed(_) | Refusal::SignatureInvalid,
                ..
            } => Denial::SignatureInvalid { reason }.into(),
            DeliveryError::SecretUnavailable(_) => Failure::SecretUnavailable { reason }.into(),
            DeliveryError::NoReplayKey { .. } => Denial::BadRequest { reason }.into(),
            DeliveryError::Replayed { .. } => Denial::Replayed { reason }.into(),
            DeliveryError::ReplayGuard(guard) => {
                let retry_after_secs = match guard {
                    ReplayError::Full { retry_after_secs, .. } => Some(retry_after_secs),
                    ReplayError::Unavailable(_) => None,
                };
                Failure::ReplayGuardUnavailable { retry_after_secs, reason }.into()
            }
        }
    }
}

/// A body or head the trigger's contract refuses: 415, 400, 413 or 422 with its problem
/// document (the status is the refusal's own `PayloadStatus`).
impl From<PayloadRefusal> for Rejection {
    fn from(refusal: PayloadRefusal) -> Self {
        Denial::InvalidPayload(Box::new(refusal)).into()
    }
}

/// A query the contract kept that makes no URI: 400.
impl From<QueryUnbuildable> for Rejection {
    fn from(error: QueryUnbuildable) -> Self {
        Denial::BadRequest { reason: error.to_string() }.into()
    }
}

/// A caller path that makes no upstream URI: 400.
impl From<UpstreamUriError> for Rejection {
    fn from(error: UpstreamUriError) -> Self {
        Denial::BadRequest { reason: error.to_string() }.into()
    }
}

/// The caller's body: over the limit 413, too slow 408, malformed or cut short 400.
impl From<BodyRefusal> for Rejection {
    fn from(refusal: BodyRefusal) -> Self {
        match refusal {
            BodyRefusal::TooLarge { limit } => Denial::BodyTooLarge { limit },
            BodyRefusal::TooSlow { reason } => Denial::RequestTimeout { reason },
            unreadable @ BodyRefusal::Unreadable { .. } => Denial::BadRequest { reason: unreadable.to_string() },
        }
        .into()
    }
}

/// The upstream: no answer in time 504; unreachable, broken or unreadable 502.
impl From<UpstreamFailure> for Rejection {
    fn from(failure: UpstreamFailure) -> Self {
        let reason = failure.to_string();
        match failure {
            UpstreamFailure::Timeout { .. } => Failure::UpstreamTimeout { reason },
            UpstreamFailure::Exchange { .. } | UpstreamFailure::Unreadable { .. } => {
                Failure::UpstreamUnreachable { reason }
            }
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenError;
    use crate::auth::keys::KeyError;
    use http::StatusCode;

    #[test]
    fn auth_rejections_map_to_the_right_status() {
        let status = |e: AuthError| auth(e, "r").status();
        assert_eq!(status(AuthError::MissingToken), StatusCode::UNAUTHORIZED);
        assert_eq!(status(AuthError::InvalidToken(TokenError::Expired)), StatusCode::UNAUTHORIZED);
        assert_eq!(status(AuthError::TokenInQuery), StatusCode::UNAUTHORIZED);
        assert_eq!(status(AuthError::Tenant), StatusCode::FORBIDDEN);
        assert_eq!(status(AuthError::Role), StatusCode::FORBIDDEN);
        assert_eq!(auth(AuthError::Scope, "r").kind(), "insufficient_scope");
        let keys = AuthError::KeysUnavailable(KeyError::NoUsableKeys("u".into()));
        assert_eq!(status(keys), StatusCode::SERVICE_UNAVAILABLE);
        let missing = auth(AuthError::MissingToken, "contoso").response("id");
        assert_eq!(missing.headers()[http::header::WWW_AUTHENTICATE], "Bearer realm=\"contoso\"");
    }

    #[test]
    fn each_domain_error_has_its_status() {
        let status = |r: Rejection| r.status();
        assert_eq!(status(RouteMiss::NotFound.into()), StatusCode::NOT_FOUND);
        assert_eq!(status(RouteMiss::MethodNotAllowed { allow: "POST".into() }.into()), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(status(IpRefusal { scope: "global", rule: "deny_ips".into() }.into()), StatusCode::FORBIDDEN);
        assert_eq!(status(Shielded { retry_after_secs: 2 }.into()), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status(BodyRefusal::TooLarge { limit: 1 }.into()), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status(BodyRefusal::TooSlow { reason: "slow".into() }.into()), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            status(BodyRefusal::Unreadable { body: BodyRefusal::REQUEST_BODY, reason: "cut".into() }.into()),
            StatusCode::BAD_REQUEST
        );
        let timeout = UpstreamFailure::Timeout { trigger: "t".into(), after: std::time::Duration::from_secs(1) };
        assert_eq!(status(timeout.into()), StatusCode::GATEWAY_TIMEOUT);
        let coding = UpstreamFailure::Unreadable { trigger: "t".into(), problem: "zstd".into() };
        assert_eq!(status(coding.into()), StatusCode::BAD_GATEWAY);
        let json = SecretError::JsonBody { problem: "not an object".into() };
        assert_eq!(status(json.into()), StatusCode::BAD_REQUEST);
        let sealed = SecretError::Sealed { reference: "secret://kv/a".into() };
        assert_eq!(status(sealed.into()), StatusCode::SERVICE_UNAVAILABLE);
    }

    /// Status, kind and reason of each webhook refusal: the reason names the scheme and the
    /// delivery id, never a signature or a secret.
    #[test]
    fn webhook_deliveries_map_to_their_status_kind_and_reason() {
        let unverified = |refusal, delivery_id: Option<&str>| -> Rejection {
            DeliveryError::Unverified { scheme: "github", delivery_id: delivery_id.map(str::to_owned), refusal }.into()
        };
        let bad = unverified(Refusal::SignatureInvalid, Some("d-1"));
        assert_eq!((bad.status(), bad.kind()), (StatusCode::UNAUTHORIZED, "signature_invalid"));
        assert_eq!(bad.reason(), "webhook github delivery d-1: no signature matches a configured secret");
        let missing = unverified(Refusal::MissingHeader("x-hub-signature-256"), None);
        assert_eq!((missing.status(), missing.kind()), (StatusCode::UNAUTHORIZED, "signature_invalid"));
        assert_eq!(missing.reason(), "webhook github: header x-hub-signature-256 is missing");
        let stale = unverified(Refusal::TimestampStale { age_secs: 600 }, None);
        assert_eq!((stale.status(), stale.kind()), (StatusCode::UNAUTHORIZED, "timestamp_stale"));

        let sealed = DeliveryError::SecretUnavailable(SecretError::Sealed { reference: "secret://kv/hook".into() });
        let sealed: Rejection = sealed.into();
        assert_eq!((sealed.status(), sealed.kind()), (StatusCode::SERVICE_UNAVAILABLE, "secret_unavailable"));

        let no_key: Rejection =
            DeliveryError::NoReplayKey { scheme: "standard", problem: "the delivery has no signed id" }.into();
        assert_eq!((no_key.status(), no_key.kind()), (StatusCode::BAD_REQUEST, "bad_request"));
        assert_eq!(no_key.reason(), "webhook standard: the delivery has no signed id");

        let replayed: Rejection = DeliveryError::Replayed { scheme: "stripe", delivery_id: None }.into();
        assert_eq!((replayed.status(), replayed.kind()), (StatusCode::UNAUTHORIZED, "replayed"));
        assert_eq!(replayed.reason(), "webhook stripe delivery -: already forwarded");

        let full: Rejection = DeliveryError::from(ReplayError::Full { bytes: 1, retry_after_secs: 7 }).into();
        assert_eq!((full.status(), full.kind()), (StatusCode::SERVICE_UNAVAILABLE, "replay_guard_unavailable"));
        assert_eq!(full.response("id").headers()[http::header::RETRY_AFTER], "7");
        let down: Rejection = DeliveryError::from(ReplayError::Unavailable("refused".into())).into();
        assert_eq!((down.status(), down.kind()), (StatusCode::SERVICE_UNAVAILABLE, "replay_guard_unavailable"));
        assert!(!down.response("id").headers().contains_key(http::header::RETRY_AFTER));
    }

    #[test]
    fn contract_refusals_map_to_their_status_and_kind() {
        use crate::denial::{PayloadFailure, PayloadStatus};
        let refusal = |status| -> Rejection { PayloadRefusal::one(status, PayloadFailure::body("/a", "type")).into() };
        let schema = refusal(PayloadStatus::BreaksSchema);
        assert_eq!((schema.status(), schema.kind()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload"));
        let large = refusal(PayloadStatus::TooLarge);
        assert_eq!((large.status(), large.kind()), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
        let media = refusal(PayloadStatus::UnsupportedMediaType);
        assert_eq!((media.status(), media.kind()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));

        let bad_query = http::Uri::builder().path_and_query("no spaces allowed").build().unwrap_err();
        let query: Rejection = QueryUnbuildable(bad_query).into();
        assert_eq!((query.status(), query.kind()), (StatusCode::BAD_REQUEST, "bad_request"));
        assert!(query.reason().starts_with("contract: cannot rebuild the query: "), "{}", query.reason());
    }

    #[test]
    fn a_step_that_reads_the_body_whole_names_it_in_the_reason() {
        let unreadable: Rejection =
            BodyRefusal::Unreadable { body: "the webhook body", reason: "error reading a body from connection".into() }
                .into();
        assert_eq!((unreadable.status(), unreadable.kind()), (StatusCode::BAD_REQUEST, "bad_request"));
        assert_eq!(unreadable.reason(), "the webhook body could not be read: error reading a body from connection");
    }

    #[test]
    fn an_unreadable_forwarded_certificate_is_a_bad_request() {
        use crate::tls::forwarded::ForwardedCertError;
        let header = http::HeaderName::from_static("x-forwarded-client-cert");
        let rejection: Rejection =
            UnreadableForwardedCert { header, problem: ForwardedCertError::Malformed("open quote") }.into();
        assert_eq!((rejection.status(), rejection.kind()), (StatusCode::BAD_REQUEST, "bad_request"));
        assert_eq!(rejection.reason(), "x-forwarded-client-cert: malformed forwarded certificate header: open quote");
    }
}
