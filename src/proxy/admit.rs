//! [`admit`]: every check a call must pass, cheapest first; each check's own typed error
//! becomes a [`Rejection`] through the refusal table (`refusal.rs`, by `?`). A call that
//! passes every one leaves as [`Admitted`], with the [`Permit`] that secret resolution
//! and forwarding require.

use super::call::Call;
use super::inbound::Connection;
use super::permit::Permit;
use crate::auth::Caller;
use crate::denial::{Denial, Rejection};
use crate::firewall::{ClientIp, client_address};
use crate::gateway::Gateway;
use crate::policy::{Policy, Trigger};
use crate::ratelimit::{LimitKey, RateKey};
use crate::web::BodyRefusal;
use crate::web::{declared_length, request_host_of};
use http::HeaderValue;
use std::sync::Arc;

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
    /// A webhook trigger's verified delivery: the body to forward, or the handshake to
    /// answer.
    pub delivery: Option<super::delivery::VerifiedDelivery>,
}

/// Every check a call must pass, cheapest first, so that a flood of bad calls never
/// reaches signature verification, the rate-limit store or the vault.
///
/// # Errors
/// The first check that refuses the call.
pub async fn admit<B: crate::web::RequestBody>(
    gateway: &Gateway,
    policy: &Policy,
    connection: &Connection,
    parts: &http::request::Parts,
    body: &mut Option<B>,
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
        client_address(connection.peer.ip(), &parts.headers, &policy.trusted_proxies, policy.server.trusted_header)?;
    call.record().client_ip = Some(address.client.ip());
    call.record().client_ip_note = address.note.map(str::to_owned);
    // Per-address budgets (shield, `ip` rate-limit key) count an IPv6 network, not a host.
    let accounted = address.client.accounting_unit(policy.edge.ipv6_prefix);

    // Path hygiene before routing: dot segments, empty segments, encoded separators, `;`
    // path parameters and segment ends a server would trim would let a prefix route reach
    // an upstream path the policy never named. Routing then compares the path's route key
    // (case, escapes and a trailing `/` do not count), so a narrower route cannot be
    // bypassed by another spelling of its path (`policy/path.rs`).
    let path = crate::policy::normalize_path(parts.uri.path())?;

    // Global firewall: the cheapest refusal, before anything else is revealed.
    policy.firewall.check(address.client, address.peer)?;

    // Route: a miss is a bare 404 that says nothing about what exists.
    let found = policy.routes.find(request_host_of(parts), &path, &parts.method)?;
    let trigger = found.trigger.clone();
    call.record().trigger = Some(trigger.name.clone());
    call.trigger_label = Some(trigger.name_label.clone());

    // The trigger's own IP rules.
    trigger.ip_rules.check(address.client, address.peer)?;

    // A declared body over the limit is refused before any expensive check.
    if declared_length(&parts.headers).is_some_and(|len| len > trigger.max_body_bytes) {
        return Err(BodyRefusal::TooLarge { limit: trigger.max_body_bytes }.into());
    }

    // Pre-authentication shield: an address that has spent its budget of refused
    // credentials stops here, before a flood of junk can burn CPU on signature checks.
    // Calls whose credentials pass never spend it (see `shield_charge` below).
    gateway.shield.check_client(accounted)?;

    // The client certificate: verified by our TLS layer, or named by a trusted proxy's
    // header (`proxy/certificate.rs`). Read before authentication, which judges it.
    let presented = super::certificate::presented(policy, connection, address.peer, parts)?;
    if let Some(Ok(cert)) = &presented {
        call.record().certificate = Some(cert.summary());
    }

    // A webhook delivery authenticates by its signature over the body, read whole here,
    // after the cheap checks and the shield and before any budget is spent.
    let mut delivery = None;
    if let Some(rule) = &trigger.webhook {
        let started = call.steps.start();
        // Boxed, as only webhook triggers take this path: inline, every call's future would
        // carry (and move) the size of a body read and a signature check.
        let checked =
            Box::pin(super::delivery::check_delivery(gateway, policy, &trigger, rule, parts, body, call)).await;
        call.steps.done(crate::trace::Step::Authenticate, started);
        match checked {
            Ok(verified) => delivery = Some(verified),
            Err(rejection) => {
                shield_charge(gateway, accounted, &rejection);
                return Err(rejection);
            }
        }
    }

    // Authenticate and authorize: a webhook's verified signature, or certificate, token
    // (or signed URL), then tenant, principal and role rules.
    let started = call.steps.start();
    let authenticated = match &trigger.webhook {
        Some(rule) => Ok(Arc::new(super::delivery::webhook_caller(&trigger, rule))),
        None => gateway.key_stores.authenticate_identified(&trigger.access, parts, presented.as_ref()).await,
    };
    call.steps.done(crate::trace::Step::Authenticate, started);
    let caller = match authenticated {
        Ok(caller) => caller,
        Err((error, identified)) => {
            // A valid token refused by a rule still names its caller in the run record.
            if let Some(caller) = identified {
                call.record().identify(&caller);
            }
            let rejection = crate::refusal::auth(error, trigger.access.realm());
            shield_charge(gateway, accounted, &rejection);
            return Err(rejection);
        }
    };
    call.record().identify(&caller);

    // Per-principal pinning needs the caller, so it runs right after authentication.
    if let Err(refusal) = trigger.pins.check(&caller.principal_ids, address.client.ip()) {
        let rejection = Rejection::from(refusal);
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
            let decision = decision?;
            if let Some(spent) = decision.refusal(rule) {
                return Err(spent.into());
            }
            if decision.shadowed {
                // Shadow mode admits, but the run history says what would have been refused.
                call.record().reason = Some(format!("shadow: would be rate limited ({})", rule.key_description()));
            }
            HeaderValue::try_from(decision.limit_header(rule)).ok()
        }
    };

    // A delivery's replay key is claimed last: a delivery refused by any other check
    // (a spent budget, say) is not remembered, so the sender's retry can pass.
    if let (Some(rule), Some(key)) = (&trigger.webhook, delivery.as_ref().and_then(|d| d.replay)) {
        Box::pin(super::delivery::claim_replay(gateway, rule, call, key)).await?;
    }

    Ok(Admitted {
        delivery,
        trigger,
        rest: found.rest.to_owned(),
        client: address.client,
        caller,
        rate_limit_header,
        permit: Permit::issue(),
    })
}

/// The shield counts calls refused by authentication or authorization (401/403), never
/// calls whose credentials pass, nor our own failures (no signing keys: 503).
fn shield_charge(gateway: &Gateway, client: ClientIp, rejection: &Rejection) {
    if let Rejection::Denied(_) = rejection {
        gateway.shield.charge_client(client);
    }
}
