//! The admin listener (loopback by default): `/healthz`, `/readyz`, `/metrics`
//! (Prometheus), `/runs`, `/runs/{id}`, `/policy`, `POST /reload`, and the console's
//! pages under `/ui` ([`crate::console`]).
//!
//! Who may use it: without an admin identity in the policy, only loopback peers, with
//! the role `[admin] loopback_role` (administrator by default: they are on the box). With
//! `[admin] identity`, every caller of the run and policy endpoints needs a bearer token
//! from that identity that passes the same tenant rule as a trigger's callers (`[admin]
//! tenants`, else the identity's) and, when listed, `[admin] principals`; its `roles` claim
//! then maps to viewer / owner / administrator. A token of another tenant is refused (403)
//! whatever roles it carries: that tenant's admins choose its roles. With `[admin.sign_in]`,
//! a browser without a bearer header may instead carry a console session cookie
//! ([`crate::signin`]): its role was mapped the same way at sign-in, and a `POST` also
//! needs the session's CSRF token (`X-Flowgate-Csrf`), so the cookie alone changes nothing.
//! Nobody, whatever the role, can read a secret value here: the policy view shows
//! references only.
//!
//! Browsers on the host are callers too. Every endpoint checks `Host` first: the listener
//! answers to `localhost`, loopback addresses, the address a connection reached it on and
//! `[admin] allowed_hosts`, so a page whose DNS name was rebound to this address cannot
//! read it (421). `POST /reload` must be a request a page cannot send without a CORS
//! preflight (which this API never grants): `Content-Type: application/json` or an
//! `X-Flowgate-Admin` header, and no other site's `Origin` (403).

use crate::audit::RunFilter;
/// Who is looking: defined beside the `[admin]` section it is compiled from (`policy` compiles
/// it, and `admin` imports `policy`), named here where it is applied.
pub use crate::auth::{AdminRole, UnknownRole};
use crate::denial::{Denial, Rejection};
use crate::gateway::{Gateway, ReloadOutcome};
use crate::policy::Policy;
use crate::web::{REQUEST_ID, ResponseBody, full_body, new_request_id};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The custom header that makes `POST /reload` a request a cross-site page cannot send.
pub(crate) const ADMIN_HEADER: &str = "x-flowgate-admin";

/// Serves the admin API until `stop` turns true. Connections are served by the main
/// listener's code (`connection::serve_connection`): the same header, idle and send
/// timeouts; past `[admin] max_connections` open ones, new connections wait in the
/// kernel's accept queue.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    if let Ok(bound) = listener.local_addr()
        && let Some(warning) = exposure_warning(&gateway.policy(), bound)
    {
        tracing::warn!("{warning}");
    }
    // Sized once, at start: like `[limits] max_connections`, a reload does not resize it.
    let slots = Arc::new(Semaphore::new(gateway.policy().admin.max_connections));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit,
            _ = stop.changed() => return,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // The address the caller dialled: a Host naming it is no rebound name.
        let local = stream.local_addr().map_or(peer.ip(), |a| a.ip());
        let gateway = gateway.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            metrics::gauge!("flowgate_admin_open_connections").increment(1.0);
            let limits = gateway.policy().limits.clone();
            let handler = move |request| {
                let gateway = gateway.clone();
                async move { route(&gateway, peer, local, request).await }
            };
            let stop = async move {
                let _ = stop.changed().await;
            };
            crate::connection::serve_connection(stream, None, peer, &limits, stop, handler, |_| {}).await;
            metrics::gauge!("flowgate_admin_open_connections").decrement(1.0);
            drop(permit);
        });
    }
}

/// Why a state-changing admin request could have been sent by a page of another site, if
/// it could. Such a page can send simple requests (form content types or none, no custom
/// header) without asking; anything else needs a CORS preflight, which this API never
/// grants. A browser also names the page's origin.
fn cross_site_risk(headers: &http::HeaderMap, local: IpAddr, allowed: &[String]) -> Option<&'static str> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest);
        if !host.is_some_and(|h| host_allowed(h, local, allowed)) {
            return Some("the Origin is another site");
        }
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if json || headers.contains_key(ADMIN_HEADER) {
        return None;
    }
    Some("a simple request (neither Content-Type: application/json nor an X-Flowgate-Admin header)")
}

/// Whether the listener answers to `host` (a `Host` value, port optional): `localhost`,
/// loopback addresses, the address the connection reached (`local`), and `allowed`.
/// Names compare ignoring case and a trailing dot.
fn host_allowed(host: &str, local: IpAddr, allowed: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(inside, _)| inside)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name == "localhost" || allowed.contains(&name) {
        return true;
    }
    let local = crate::firewall::normalize(local);
    name.parse::<IpAddr>().map(crate::firewall::normalize).is_ok_and(|ip| ip.is_loopback() || ip == local)
}

/// A refusal from the admin listener: the shared JSON body with a fresh request id, and
/// the private reason logged under that id.
fn refuse(denial: Denial) -> Response<ResponseBody> {
    let id = new_request_id();
    let rejection = Rejection::Denied(denial);
    tracing::info!(request_id = %id, kind = rejection.kind(), reason = %rejection.reason(), "admin API call refused");
    let mut response = rejection.response(&id).map(|b| b.map_err(|never| match never {}).boxed_unsync());
    if let Ok(id) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

/// The warning for an admin listener that takes bearer tokens over plain HTTP from other
/// machines, if `policy` sets one up on `listen`.
pub(crate) fn exposure_warning(policy: &Policy, listen: SocketAddr) -> Option<String> {
    let identity = policy.admin.identity.as_ref()?;
    (!crate::firewall::normalize(listen.ip()).is_loopback()).then(|| {
        format!(
            "the admin listener {listen} is not loopback and speaks plain HTTP, yet takes bearer \
             tokens of identity {identity:?}: anyone on the path can read and replay them; \
             listen on loopback behind a TLS-terminating proxy"
        )
    })
}

async fn route<B: crate::web::RequestBody>(
    gateway: &Arc<Gateway>,
    peer: SocketAddr,
    local: IpAddr,
    request: Request<B>,
) -> Response<ResponseBody> {
    let path = request.uri().path().to_owned();
    // Host before anything else: a rebound name must learn nothing, not even health.
    // (No Host at all is no browser: HTTP/1.0 probes send none.)
    // Both the request target's authority (h2, absolute-form h1) and `Host` are checked.
    let running = gateway.policy();
    let allowed = &running.admin.allowed_hosts;
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    let hosts =
        request.headers().get_all(header::HOST).iter().map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    if let Some(host) = authority.into_iter().chain(hosts).find(|host| !host_allowed(host, local, allowed)) {
        return refuse(Denial::MisdirectedHost { host });
    }
    if request.method() == Method::POST
        && path == "/reload"
        && let Some(reason) = cross_site_risk(request.headers(), local, allowed)
    {
        return refuse(Denial::CrossSiteRequest { reason: reason.to_owned() });
    }
    // Browser sign-in's own endpoints, which no role guards (the callback makes the role).
    if let Some(sign_in) = running.admin.sign_in.clone() {
        match (request.method(), path.as_str()) {
            (&Method::GET, "/ui/callback") => {
                let query = request.uri().query().unwrap_or("");
                return crate::console::sign_in::callback(gateway, &running, &sign_in, query, request.headers()).await;
            }
            (&Method::GET, "/ui/signed-out") => return crate::console::sign_in::signed_out(),
            (&Method::POST, "/ui/sign-out") => {
                let (parts, body) = request.into_parts();
                // A sign-out form holds one token: a few hundred bytes.
                let form = match http_body_util::Limited::new(body, 4096).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "sign-out form too large"),
                };
                return crate::console::sign_in::sign_out(gateway, &running, &sign_in, &parts.headers, &form).await;
            }
            _ => {}
        }
    }
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if gateway.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let mut response = text(StatusCode::OK, gateway.metrics.render());
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            response
        }
        (&Method::GET, "/runs" | "/policy") | (&Method::POST, "/reload") => {
            let (role, session) = match access_of(gateway, peer, &request).await {
                Ok(access) => access,
                Err(response) => return response,
            };
            // A browser session's cookie rides along with any request its browser sends:
            // a state change also needs the token only the session's own pages hold.
            if request.method() == Method::POST
                && let Some(session) = &session
                && !crate::console::sign_in::csrf_ok(session, request.headers(), None)
            {
                return refuse(Denial::CrossSiteRequest { reason: "no CSRF token of the session".to_owned() });
            }
            match path.as_str() {
                "/runs" => reading(gateway, |gateway| runs(gateway, request.uri().query().unwrap_or(""))),
                "/policy" => policy(gateway, role),
                _ => reload(gateway, role).await,
            }
        }
        (&Method::GET, p) if p.starts_with("/runs/") => {
            if let Err(response) = role_of(gateway, peer, &request).await {
                return response;
            }
            reading(gateway, |gateway| match gateway.audit.get_json(&p["/runs/".len()..]) {
                Some(record) => json_text(StatusCode::OK, record),
                None => error(StatusCode::NOT_FOUND, "no such run"),
            })
        }
        // The console: its assets hold no data; its pages need the same role as `/runs`.
        (&Method::GET, p) if crate::console::is_console_path(p) => {
            if let Some(asset) = crate::console::asset(p) {
                return asset;
            }
            let query = request.uri().query().unwrap_or("");
            // With sign-in on, a browser (no bearer header) is its session; without one, a
            // page request goes to the provider's sign-in.
            if let Some(sign_in) = &running.admin.sign_in
                && running.admin.identity.is_some()
                && !request.headers().contains_key(header::AUTHORIZATION)
            {
                let Some(session) = crate::console::sign_in::session_of(gateway, sign_in, request.headers()) else {
                    let target = request.uri().path_and_query().map_or(p, http::uri::PathAndQuery::as_str);
                    return crate::console::sign_in::start(gateway, &running, sign_in, target).await;
                };
                return reading(gateway, |gateway| {
                    crate::console::page(gateway, session.role, Some(&session), p, query)
                });
            }
            match access_of(gateway, peer, &request).await {
                Ok((role, session)) => {
                    reading(gateway, |gateway| crate::console::page(gateway, role, session.as_ref(), p, query))
                }
                Err(response) => response,
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The answer of `answer`, assembled and sent under one of the run history's reader
/// permits ([`crate::audit::AuditLog::reader`]); 503 with `Retry-After: 1` when all are
/// taken. The permit lives in the response body, so it is held until the answer is sent
/// (or the connection is dropped by its send timeout).
fn reading(gateway: &Gateway, answer: impl FnOnce(&Gateway) -> Response<ResponseBody>) -> Response<ResponseBody> {
    let Some(permit) = gateway.audit.reader() else {
        metrics::counter!("flowgate_admin_busy_total").increment(1);
        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "busy: too many run-history answers at once");
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    answer(gateway).map(|body| {
        body.map_frame(move |frame| {
            let _held = &permit;
            frame
        })
        .boxed_unsync()
    })
}

/// The caller's admin role, or the response refusing it.
async fn role_of<B>(
    gateway: &Gateway,
    peer: SocketAddr,
    request: &Request<B>,
) -> Result<AdminRole, Response<ResponseBody>> {
    access_of(gateway, peer, request).await.map(|(role, _)| role)
}

/// The caller's admin role and, for a browser signed in to the console (no bearer token,
/// a live session cookie), its session; or the response refusing it.
async fn access_of<B>(
    gateway: &Gateway,
    peer: SocketAddr,
    request: &Request<B>,
) -> Result<(AdminRole, Option<crate::signin::SessionView>), Response<ResponseBody>> {
    let policy = gateway.policy();
    let access = &policy.admin;
    // A bearer token wins: API clients are judged as they always were.
    if let Some(sign_in) = &access.sign_in
        && access.identity.is_some()
        && !request.headers().contains_key(header::AUTHORIZATION)
    {
        return match crate::console::sign_in::session_of(gateway, sign_in, request.headers()) {
            Some(session) => Ok((session.role, Some(session))),
            None => Err(error(StatusCode::UNAUTHORIZED, "a valid bearer token or console session is required")),
        };
    }
    if access.identity.is_some() {
        return token_role(gateway, access.rules.as_ref(), &access.token_roles, request.headers())
            .await
            .map(|role| (role, None))
            .map_err(|status| error(status, "a valid bearer token with an admin role is required"));
    }
    if peer.ip().is_loopback() {
        Ok((access.loopback_role, None))
    } else {
        Err(error(StatusCode::FORBIDDEN, "the admin API answers loopback callers only"))
    }
}

fn runs(gateway: &Gateway, query: &str) -> Response<ResponseBody> {
    match RunFilter::from_query_at(query, gateway.clock.system_time()) {
        // The ring hands out its records' JSON text; the answer is assembled after its lock
        // is released (calls writing their records never wait for it).
        Ok(filter) => json_text(StatusCode::OK, gateway.audit.query_json(&filter)),
        Err(message) => error(StatusCode::BAD_REQUEST, &message.to_string()),
    }
}

fn policy(gateway: &Gateway, role: AdminRole) -> Response<ResponseBody> {
    let policy = gateway.policy();
    match crate::policy::policy_view(&policy.text, role.can_see_private()) {
        Ok(view) => {
            // The effective rules (defaults included, `rate_limit = "off"` named), beside
            // the text as written.
            let effective: Vec<serde_json::Value> =
                policy.routes.triggers().iter().map(|t| t.summary.view(role.can_see_private())).collect();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "version": policy.version,
                    "role": role.as_str(),
                    "policy": view,
                    "effective": effective,
                }),
            )
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the running policy cannot be shown"),
    }
}

async fn reload(gateway: &Arc<Gateway>, role: AdminRole) -> Response<ResponseBody> {
    if !role.can_reload() {
        return error(StatusCode::FORBIDDEN, "reloading needs the owner or administrator role");
    }
    match crate::reload::reload_blocking(gateway).await {
        Ok(ReloadOutcome::Swapped { version }) => {
            json(StatusCode::OK, &serde_json::json!({ "result": "swapped", "version": version }))
        }
        Ok(ReloadOutcome::Unchanged { version }) => {
            json(StatusCode::OK, &serde_json::json!({ "result": "unchanged", "version": version }))
        }
        Err(errors) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({
                "result": "refused",
                "version": gateway.policy().version,
                "errors": errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        ),
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(format!("{value:#}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A JSON answer from text that is already JSON (the run history keeps records as text).
fn json_text(status: StatusCode, mut text: String) -> Response<ResponseBody> {
    text.push('\n');
    let mut response = Response::new(full_body(text));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    json(status, &serde_json::json!({ "error": message }))
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The strongest admin role granted by a bearer token that passes the admin `rules`
/// (identity, tenants, principals). Bad or missing tokens are 401, a valid token of a
/// tenant or principal the rules do not admit (or without a mapped role) 403, no usable
/// signing keys 503.
async fn token_role(
    gateway: &Gateway,
    rules: Option<&crate::auth::TriggerAccess>,
    token_roles: &[(String, AdminRole)],
    headers: &http::HeaderMap,
) -> Result<AdminRole, StatusCode> {
    let rules = rules.ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
    let claims = gateway.key_stores.authorize_bearer(rules, headers).await.map_err(|error| {
        // The reason names the failed check, never the token.
        tracing::info!(reason = %error, "admin API call refused");
        crate::refusal::auth(error, rules.realm()).status()
    })?;
    token_roles
        .iter()
        .filter(|(claim, _)| claims.roles.iter().any(|held| held == claim))
        .map(|(_, role)| *role)
        .max()
        .ok_or(StatusCode::FORBIDDEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn hosts_the_listener_answers_to() {
        let allowed = vec!["admin.internal".to_owned(), "10.9.9.9".to_owned()];
        let local = ip("10.0.0.5");
        for host in ["localhost", "LocalHost.:9901", "127.0.0.1:9901", "127.1.2.3", "[::1]:9901", "10.0.0.5:9901"] {
            assert!(host_allowed(host, local, &allowed), "{host}");
        }
        for host in ["admin.internal", "Admin.Internal.:80", "10.9.9.9:9901"] {
            assert!(host_allowed(host, local, &allowed), "{host}");
        }
        for host in
            ["attacker.example", "localhost.attacker.example:9901", "10.0.0.6", "[::2]:1", "", "admin.internal.evil"]
        {
            assert!(!host_allowed(host, local, &allowed), "{host}");
        }
        // An IPv4-mapped local address is the same address.
        assert!(host_allowed("10.0.0.5", ip("::ffff:10.0.0.5"), &[]));
    }

    #[test]
    fn simple_requests_and_other_origins_are_cross_site_risks() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = http::HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        let local = ip("127.0.0.1");
        assert!(cross_site_risk(&headers(&[]), local, &[]).is_some());
        assert!(cross_site_risk(&headers(&[("content-type", "text/plain")]), local, &[]).is_some());
        assert!(cross_site_risk(&headers(&[("content-type", "application/json")]), local, &[]).is_none());
        assert!(cross_site_risk(&headers(&[("x-flowgate-admin", "1")]), local, &[]).is_none());
        let json_from = |origin| headers(&[("content-type", "application/json"), ("origin", origin)]);
        assert!(cross_site_risk(&json_from("https://attacker.example"), local, &[]).is_some());
        assert!(cross_site_risk(&json_from("null"), local, &[]).is_some());
        assert!(cross_site_risk(&json_from("http://localhost:9901"), local, &[]).is_none());
    }
}
