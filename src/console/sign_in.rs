//! The console's browser sign-in over HTTP (`[admin.sign_in]`): a page request without a
//! session is sent to the provider; `/ui/callback` checks `state` (once, and only from the
//! browser that started it: the login cookie), exchanges the code with its PKCE verifier,
//! checks the ID token (identity keys, the client id as audience, `nonce`, the admin
//! tenant and principal rules), maps its `roles` claim to an admin role, and hands out a
//! session cookie; `POST /ui/sign-out` (CSRF token required) ends the session here and
//! then at the provider when it advertises `end_session_endpoint`.
//!
//! Every answer is `no-store`, sends no `Referer` (the callback's URL holds a code), and
//! carries a CSP that allows nothing but the console's stylesheet. What is refused is
//! logged by reason, never with a code, token, cookie or secret.

use super::html::e;
use crate::auth::{CodeExchange, ProviderEndpoints, ProviderError};
use crate::gateway::Gateway;
use crate::policy::Policy;
use crate::signin::{
    CookieLookup, LOGIN_COOKIE, PENDING_LIFETIME, SESSION_COOKIE, SessionLimits, SessionView, SignIn, clear_cookie,
    find_id, set_cookie,
};
use crate::web::{ResponseBody, full_body};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use std::sync::Arc;
use std::time::Duration;

/// The header (or form field `csrf`) that carries a session's CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-flowgate-csrf";
/// Provider endpoints are read again after this long.
const ENDPOINTS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Longest console path remembered to return to after sign-in.
const MAX_RETURN_PATH: usize = 2048;
const CSP: &str = "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The header the console's script sends on requests it makes by itself (auto-refresh).
const BACKGROUND_HEADER: &str = "x-flowgate-background";

/// The session the request's cookie names, if it is live under the running sign-in
/// settings; its idle deadline is renewed unless the page's script made the request by
/// itself (auto-refresh), so an open tab nobody looks at still times out.
pub(crate) fn session_of(gateway: &Gateway, sign_in: &SignIn, headers: &HeaderMap) -> Option<SessionView> {
    match find_id(headers, SESSION_COOKIE) {
        CookieLookup::Id(id) if headers.contains_key(BACKGROUND_HEADER) => {
            gateway.sessions.peek(&sign_in.generation, &id)
        }
        CookieLookup::Id(id) => gateway.sessions.lookup(&sign_in.generation, &id),
        CookieLookup::Absent | CookieLookup::Unusable => None,
    }
}

/// True when `headers` (or a form body's `csrf` field) carry `session`'s CSRF token, compared
/// without an early exit.
pub(crate) fn csrf_ok(session: &SessionView, headers: &HeaderMap, form: Option<&[u8]>) -> bool {
    let from_header = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let from_form =
        || url::form_urlencoded::parse(form?).find(|(name, _)| name == "csrf").map(|(_, value)| value.into_owned());
    from_header
        .or_else(from_form)
        .is_some_and(|token| crate::auth::same_bytes(token.as_bytes(), session.csrf.as_bytes()))
}

/// Sends the browser to the provider's sign-in page; it comes back to `return_to`.
pub(crate) async fn start(
    gateway: &Gateway,
    policy: &Policy,
    sign_in: &SignIn,
    return_to: &str,
) -> Response<ResponseBody> {
    let endpoints = match endpoints(gateway, policy, sign_in).await {
        Ok(endpoints) => endpoints,
        Err(response) => return response,
    };
    let return_to =
        if return_to.len() <= MAX_RETURN_PATH && return_to.starts_with("/ui") && !return_to.starts_with("/ui/callback")
        {
            return_to
        } else {
            "/ui/runs"
        };
    let begun = gateway.sessions.begin(&sign_in.generation, return_to);
    let Ok(mut url) = url::Url::parse(&endpoints.authorization) else {
        return page(
            StatusCode::BAD_GATEWAY,
            "Sign-in unavailable",
            "<p>The provider's sign-in address is not a URL.</p>",
        );
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &sign_in.client_id)
        .append_pair("redirect_uri", &sign_in.redirect_url)
        .append_pair("scope", &sign_in.scopes)
        .append_pair("state", &begun.state)
        .append_pair("nonce", &begun.nonce)
        .append_pair("code_challenge", &begun.challenge)
        .append_pair("code_challenge_method", "S256");
    let mut response = redirect(url.as_str());
    add_cookie(&mut response, &set_cookie(LOGIN_COOKIE, &begun.login, PENDING_LIFETIME));
    response
}

/// `GET /ui/callback`: the provider's answer to a sign-in.
pub(crate) async fn callback(
    gateway: &Gateway,
    policy: &Policy,
    sign_in: &SignIn,
    query: &str,
    headers: &HeaderMap,
) -> Response<ResponseBody> {
    let mut params = CallbackParams::default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "code" => &mut params.code,
            "state" => &mut params.state,
            "error" => &mut params.error,
            "iss" => &mut params.iss,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return refused(
                StatusCode::BAD_REQUEST,
                "a callback parameter is repeated",
                "The sign-in answer is malformed.",
            );
        }
    }
    let Some(state) = params.state.as_deref() else {
        return refused(StatusCode::BAD_REQUEST, "callback without state", "The sign-in answer is malformed.");
    };
    let login = match find_id(headers, LOGIN_COOKIE) {
        CookieLookup::Id(id) => Some(id),
        CookieLookup::Absent | CookieLookup::Unusable => None,
    };
    let pending = match gateway.sessions.take_pending(&sign_in.generation, state, login.as_ref()) {
        Ok(pending) => pending,
        Err(error) => {
            return refused(
                StatusCode::BAD_REQUEST,
                &error.to_string(),
                "This sign-in is unknown, was already used, expired, or was started in another browser.",
            );
        }
    };
    if let Some(error) = params.error.as_deref() {
        let code: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        return refused(
            StatusCode::UNAUTHORIZED,
            &format!("the provider answered error {code}"),
            &format!("The provider did not sign you in ({}).", e(&code)),
        );
    }
    let endpoints = match endpoints(gateway, policy, sign_in).await {
        Ok(endpoints) => endpoints,
        Err(response) => return response,
    };
    // RFC 9207: an answer naming another issuer is a mix-up, whatever else it holds.
    if params.iss.as_deref().is_some_and(|iss| iss != endpoints.issuer) {
        return refused(StatusCode::BAD_REQUEST, "callback iss is another issuer", "The sign-in answer is malformed.");
    }
    let Some(code) = params.code.as_deref() else {
        return refused(StatusCode::BAD_REQUEST, "callback without code", "The sign-in answer is malformed.");
    };
    let (Some(rules), Some(identity)) =
        (policy.admin.rules.as_ref(), policy.admin.rules.as_ref().and_then(|r| r.identity()))
    else {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "no admin rules", "Sign-in is not configured.");
    };
    let secret = match &sign_in.client_secret {
        Some(reference) => match gateway.secrets.lookup(reference, &policy.vaults).await {
            Ok(value) => Some(value),
            Err(error) => {
                return refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("client secret: {error}"),
                    "Sign-in is unavailable: the console's client secret cannot be read.",
                );
            }
        },
        None => None,
    };
    let exchange = CodeExchange {
        code,
        verifier: &pending.verifier,
        redirect_uri: &sign_in.redirect_url,
        client_id: &sign_in.client_id,
        client_secret: secret.as_ref().map(crate::secrets::SecretValue::expose_secret),
    };
    let id_token = match gateway.key_stores.exchange_code(identity, &endpoints, exchange).await {
        Ok(token) => token,
        Err(error @ ProviderError::Refused(_)) => {
            return refused(
                StatusCode::UNAUTHORIZED,
                &error.to_string(),
                "The provider refused this sign-in; sign in again.",
            );
        }
        Err(error) => {
            return refused(StatusCode::BAD_GATEWAY, &error.to_string(), "The provider could not be reached.");
        }
    };
    let claims = match gateway.key_stores.verify_id_token(rules, &id_token, &sign_in.client_id, &pending.nonce).await {
        Ok(claims) => claims,
        Err(error) => {
            let status = crate::refusal::auth(error.clone(), rules.realm()).status();
            return refused(status, &format!("ID token: {error}"), "You are not admitted to this console.");
        }
    };
    let Some(role) = policy
        .admin
        .token_roles
        .iter()
        .filter(|(claim, _)| claims.roles.iter().any(|held| held == claim))
        .map(|(_, role)| *role)
        .max()
    else {
        return refused(StatusCode::FORBIDDEN, "no mapped admin role", "Your account holds no role for this console.");
    };
    let who = claims
        .all
        .get("name")
        .and_then(serde_json::Value::as_str)
        .or(claims.upn.as_deref())
        .or(claims.user_names.first().map(String::as_str))
        .or(claims.sub.as_deref())
        .unwrap_or("signed in");
    let limits = SessionLimits {
        idle: sign_in.idle_timeout,
        absolute: sign_in.absolute_timeout,
        max_sessions: sign_in.max_sessions,
    };
    let Some((id, _)) = gateway.sessions.create(&sign_in.generation, limits, role, who) else {
        let mut response = refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "session table full",
            "Too many people are signed in; try again later.",
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return response;
    };
    tracing::info!(role = role.as_str(), "console sign-in");
    let mut response = redirect(&pending.return_to);
    add_cookie(&mut response, &set_cookie(SESSION_COOKIE, &id, sign_in.absolute_timeout));
    add_cookie(&mut response, &clear_cookie(LOGIN_COOKIE));
    response
}

#[derive(Default)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

/// `POST /ui/sign-out` with the session's CSRF token (form field or header): ends the
/// session here, then sends the browser to the provider's sign-out when it has one.
pub(crate) async fn sign_out(
    gateway: &Gateway,
    policy: &Policy,
    sign_in: &SignIn,
    headers: &HeaderMap,
    form: &[u8],
) -> Response<ResponseBody> {
    let cookie = find_id(headers, SESSION_COOKIE);
    if let CookieLookup::Id(id) = &cookie
        && let Some(session) = gateway.sessions.lookup(&sign_in.generation, id)
    {
        if !csrf_ok(&session, headers, Some(form)) {
            return refused(
                StatusCode::FORBIDDEN,
                "sign-out without the CSRF token",
                "Sign-out needs the page's token.",
            );
        }
        gateway.sessions.end(id);
        tracing::info!("console sign-out");
    }
    // No session cookie came along: a page of another site posted here (a Lax cookie is
    // not sent with a cross-site POST), or nobody was signed in. Nothing to end, and no
    // reason to send the browser to sign out at the provider.
    if cookie == CookieLookup::Absent {
        return signed_out();
    }
    let provider = endpoints(gateway, policy, sign_in).await.ok().and_then(|endpoints| endpoints.end_session.clone());
    let mut response = match provider.and_then(|end| url::Url::parse(&end).ok()) {
        Some(mut url) => {
            url.query_pairs_mut()
                .append_pair("client_id", &sign_in.client_id)
                .append_pair("post_logout_redirect_uri", &sign_in.post_logout_url());
            // A page, not a redirect: the console's CSP limits where a form may lead
            // (`form-action 'self'`), redirects included.
            let body = format!(
                "<h1>Signing out</h1><p>Your console session has ended. \
                 <a id=\"provider-sign-out\" href=\"{0}\">Sign out at the provider</a>.</p>\
                 <meta http-equiv=\"refresh\" content=\"0;url={0}\">",
                e(url.as_str())
            );
            page(StatusCode::OK, "Signing out", &body)
        }
        None => signed_out(),
    };
    add_cookie(&mut response, &clear_cookie(SESSION_COOKIE));
    response
}

/// `GET /ui/signed-out`: where the provider sends the browser after signing out.
pub(crate) fn signed_out() -> Response<ResponseBody> {
    page(
        StatusCode::OK,
        "Signed out",
        "<h1>Signed out</h1><p>You signed out of the flowgate console.</p>\
         <p><a id=\"sign-in-again\" href=\"/ui\">Sign in again</a></p>",
    )
}

/// The provider's endpoints, from the cache or discovery.
async fn endpoints(
    gateway: &Gateway,
    policy: &Policy,
    sign_in: &SignIn,
) -> Result<Arc<ProviderEndpoints>, Response<ResponseBody>> {
    if let Some(endpoints) = gateway.sessions.endpoints(&sign_in.generation, ENDPOINTS_MAX_AGE) {
        return Ok(endpoints);
    }
    let Some(identity) = policy.admin.rules.as_ref().and_then(|rules| rules.identity()) else {
        return Err(refused(StatusCode::SERVICE_UNAVAILABLE, "no admin identity", "Sign-in is not configured."));
    };
    match gateway.key_stores.discover_endpoints(identity).await {
        Ok(endpoints) => {
            let endpoints = Arc::new(endpoints);
            gateway.sessions.remember_endpoints(&sign_in.generation, Arc::clone(&endpoints));
            Ok(endpoints)
        }
        Err(error) => Err(refused(
            StatusCode::BAD_GATEWAY,
            &format!("discovery: {error}"),
            "The identity provider cannot be reached; try again shortly.",
        )),
    }
}

/// A refusal page, its reason logged.
fn refused(status: StatusCode, reason: &str, message: &str) -> Response<ResponseBody> {
    tracing::info!(status = status.as_u16(), reason, "console sign-in refused");
    page(
        status,
        "Sign-in refused",
        &format!(
            "<h1>Sign-in refused</h1><p id=\"refusal\">{message}</p><p><a id=\"sign-in-again\" href=\"/ui\">Sign in again</a></p>"
        ),
    )
}

fn redirect(location: &str) -> Response<ResponseBody> {
    let mut response = page(StatusCode::SEE_OTHER, "Redirecting", "");
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn add_cookie(response: &mut Response<ResponseBody>, line: &str) {
    if let Ok(value) = HeaderValue::from_str(line) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn page(status: StatusCode, title: &str, body: &str) -> Response<ResponseBody> {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · flowgate</title><link rel=\"stylesheet\" href=\"/ui/console.css\"></head>\n\
         <body><header><span class=\"brand\">flowgate</span></header><main>{body}</main></body></html>\n",
        e(title)
    );
    let mut response = Response::new(full_body(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
