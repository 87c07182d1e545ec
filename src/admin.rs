//! The admin listener (loopback by default): `/healthz`, `/readyz`, `/metrics`
//! (Prometheus), `/runs`, `/runs/{id}`, `/policy` and `POST /reload`.
//!
//! Who may use it: without an admin identity in the policy, only loopback peers, with
//! the role `[admin] loopback_role` (administrator by default: they are on the box). With
//! `[admin] identity`, every caller of the run and policy endpoints needs a bearer token
//! from that identity, and its `roles` claim maps to viewer / owner / administrator.
//! Nobody, whatever the role, can read a secret value here: the policy view shows
//! references only.

use crate::audit::{AdminRole, RunFilter};
use crate::gateway::{Gateway, ReloadOutcome};
use crate::proxy::{ResponseBody, full_body};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves the admin API until `stop` turns true.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&gateway, peer, request).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn route<B>(gateway: &Arc<Gateway>, peer: SocketAddr, request: Request<B>) -> Response<ResponseBody> {
    let path = request.uri().path().to_owned();
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
        (&Method::GET, "/runs") | (&Method::GET, "/policy") | (&Method::POST, "/reload") => {
            let role = match role_of(gateway, peer, &request).await {
                Ok(role) => role,
                Err(response) => return response,
            };
            match path.as_str() {
                "/runs" => runs(gateway, request.uri().query().unwrap_or("")),
                "/policy" => policy(gateway, role),
                _ => reload(gateway, role).await,
            }
        }
        (&Method::GET, p) if p.starts_with("/runs/") => {
            if let Err(response) = role_of(gateway, peer, &request).await {
                return response;
            }
            match gateway.audit.get_json(&p["/runs/".len()..]) {
                Some(record) => json_text(StatusCode::OK, record),
                None => error(StatusCode::NOT_FOUND, "no such run"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The caller's admin role, or the response refusing it.
async fn role_of<B>(
    gateway: &Gateway,
    peer: SocketAddr,
    request: &Request<B>,
) -> Result<AdminRole, Response<ResponseBody>> {
    let policy = gateway.policy();
    let access = &policy.admin;
    if let Some(identity) = &access.identity {
        return token_role(gateway, identity, &access.token_roles, request.headers())
            .await
            .map_err(|status| error(status, "a valid bearer token with an admin role is required"));
    }
    if peer.ip().is_loopback() {
        Ok(access.loopback_role)
    } else {
        Err(error(StatusCode::FORBIDDEN, "the admin API answers loopback callers only"))
    }
}

fn runs(gateway: &Gateway, query: &str) -> Response<ResponseBody> {
    match RunFilter::from_query(query) {
        // The ring hands out its records' JSON text; the answer is assembled after its lock
        // is released (calls writing their records never wait for it).
        Ok(filter) => json_text(StatusCode::OK, gateway.audit.query_json(&filter)),
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

fn policy(gateway: &Gateway, role: AdminRole) -> Response<ResponseBody> {
    let policy = gateway.policy();
    match crate::audit::policy_view(&policy.text, role.can_see_private()) {
        Ok(view) => json(
            StatusCode::OK,
            &serde_json::json!({ "version": policy.version, "role": role.as_str(), "policy": view }),
        ),
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

/// The strongest admin role granted by a bearer token of `identity`.
async fn token_role(
    gateway: &Gateway,
    identity: &str,
    token_roles: &[(String, AdminRole)],
    headers: &http::HeaderMap,
) -> Result<AdminRole, StatusCode> {
    let policy = gateway.policy();
    let identity = policy.identities.get(identity).ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
    let claims = gateway.key_stores.verify_bearer(identity, headers).await.map_err(|error| {
        tracing::info!(reason = %error, "admin API call refused");
        StatusCode::UNAUTHORIZED
    })?;
    token_roles
        .iter()
        .filter(|(claim, _)| claims.roles.iter().any(|held| held == claim))
        .map(|(_, role)| *role)
        .max()
        .ok_or(StatusCode::FORBIDDEN)
}
