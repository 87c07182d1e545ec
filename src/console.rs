//! The console: server-rendered HTML pages on the admin listener under `/ui`, for people
//! used to a workflow engine's run history. Runs (filtered, auto-refreshed), one run with
//! its captured request and response, triggers with their effective rules and counts,
//! secret references with their cache state, and the policy with a reload button.
//!
//! It shows nothing the admin API does not: [`crate::admin`] checks `Host` and the
//! caller's role exactly as for `/runs` and `/policy` before any page is built, and every
//! page reads the same data the API serves (run records as recorded, `/policy`'s redacted
//! view and per-trigger summaries by role). Secret values are never at hand here: the
//! secrets page reads references and [`crate::secrets::SecretStore::state`].
//!
//! Every value is HTML-escaped (`html::e`); the stylesheet and the one script are
//! embedded in the binary and served from `/ui/`, and every page carries a
//! `Content-Security-Policy` that allows only those (no inline script or style, nothing
//! from another origin). The reload button posts to the API's own `POST /reload`.
//!
//! With `[admin.sign_in]`, people sign in with their browser (`sign_in`): a page then
//! names who is signed in, offers a sign-out form, and carries the session's CSRF token
//! (a `<meta>` the script sends back as `X-Flowgate-Csrf`).

mod html;
mod runs;
mod secrets;
pub(crate) mod sign_in;
mod triggers;

use crate::auth::AdminRole;
use crate::gateway::Gateway;
use crate::web::{ResponseBody, full_body};
use html::e;
use http::{HeaderValue, Response, StatusCode, header};
use std::fmt::Write;

/// The policy every console response carries: only same-origin scripts, styles and
/// fetches, no framing, no plugins, forms posting back here only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const STYLESHEET: &str = include_str!("console/console.css");
const SCRIPT: &str = include_str!("console/console.js");

/// Whether `path` belongs to the console.
pub(crate) fn is_console_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The embedded stylesheet or script for `path`, if it names one. Served to anyone the
/// listener answers (they hold no data), so that refusal pages can be styled.
pub(crate) fn asset(path: &str) -> Option<Response<ResponseBody>> {
    let (body, kind) = match path {
        "/ui/console.css" => (STYLESHEET, "text/css; charset=utf-8"),
        "/ui/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    let mut response = respond(StatusCode::OK, body.to_owned(), kind);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

/// The page at `path` for a caller holding `role` (already checked by the admin listener),
/// signed in through `session` when the caller came with a session cookie.
pub fn page(
    gateway: &Gateway,
    role: AdminRole,
    session: Option<&crate::signin::SessionView>,
    path: &str,
    query: &str,
) -> Response<ResponseBody> {
    let (status, tab, title, body) = match path {
        "/ui" | "/ui/" | "/ui/runs" => {
            let (status, body) = runs::list(gateway, query);
            (status, Tab::Runs, "Runs".to_owned(), body)
        }
        "/ui/triggers" => (StatusCode::OK, Tab::Triggers, "Triggers".to_owned(), triggers::page(gateway, role)),
        "/ui/secrets" => (StatusCode::OK, Tab::Secrets, "Secrets".to_owned(), secrets::page(gateway, role)),
        "/ui/policy" => (StatusCode::OK, Tab::Policy, "Policy".to_owned(), policy_page(gateway, role)),
        p if p.starts_with("/ui/runs/") => {
            let id = &p["/ui/runs/".len()..];
            match gateway.audit.get(id) {
                Some(record) => {
                    let title = format!("Run {id}");
                    (StatusCode::OK, Tab::Runs, title, runs::one(&gateway.policy(), role, &record))
                }
                None => (
                    StatusCode::NOT_FOUND,
                    Tab::Runs,
                    "No such run".to_owned(),
                    format!(
                        "<h1>No such run</h1><p>No run {} is in the run history (it keeps the most recent calls).</p>",
                        e(id)
                    ),
                ),
            }
        }
        _ => (StatusCode::NOT_FOUND, Tab::None, "Not found".to_owned(), "<h1>Not found</h1>".to_owned()),
    };
    let version = gateway.policy().version.clone();
    respond(status, layout(&title, tab, role, session, &version, &body), "text/html; charset=utf-8")
}

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tab {
    Runs,
    Triggers,
    Secrets,
    Policy,
    None,
}

/// The page frame: head (stylesheet, deferred script), navigation, role and version.
fn layout(
    title: &str,
    tab: Tab,
    role: AdminRole,
    session: Option<&crate::signin::SessionView>,
    version: &str,
    body: &str,
) -> String {
    let mut nav = String::new();
    for (entry, href, label) in [
        (Tab::Runs, "/ui/runs", "Runs"),
        (Tab::Triggers, "/ui/triggers", "Triggers"),
        (Tab::Secrets, "/ui/secrets", "Secrets"),
        (Tab::Policy, "/ui/policy", "Policy"),
    ] {
        let current = if entry == tab { " aria-current=\"page\"" } else { "" };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{label}</a>");
    }
    // Signed in with a browser: who, a sign-out form, and the CSRF token for the script.
    let (csrf, signed_in) = session.map_or((String::new(), String::new()), |session| {
        (
            format!("<meta name=\"flowgate-csrf\" content=\"{}\">", e(&session.csrf)),
            format!(
                " · <span id=\"signed-in\">{}</span> <form class=\"sign-out\" method=\"post\" action=\"/ui/sign-out\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button id=\"sign-out\" type=\"submit\">Sign out</button></form>",
                e(&session.who),
                e(&session.csrf)
            ),
        )
    });
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{csrf}\
         <title>{} · flowgate</title>\
         <link rel=\"stylesheet\" href=\"/ui/console.css\">\
         <script src=\"/ui/console.js\" defer></script></head>\n<body>\
         <header><span class=\"brand\">flowgate</span><nav>{nav}</nav>\
         <span class=\"who\">role <strong id=\"role\">{}</strong> · policy <code>{}</code>{signed_in}</span></header>\n\
         <main>{body}</main></body></html>\n",
        e(title),
        e(role.as_str()),
        e(version),
    )
}

/// Version, role, the reload button for those who may reload, and `/policy`'s view.
fn policy_page(gateway: &Gateway, role: AdminRole) -> String {
    let policy = gateway.policy();
    let mut out = String::from("<h1>Policy</h1><section class=\"card\"><dl class=\"fields\">");
    let _ = write!(
        out,
        "<dt>Version</dt><dd><code id=\"policy-version\">{}</code></dd><dt>Your role</dt><dd>{}</dd></dl>",
        e(&policy.version),
        e(role.as_str())
    );
    if role.can_reload() {
        out.push_str(
            "<div class=\"toolbar\"><button id=\"reload\" type=\"button\">Reload policy</button>\
             <span class=\"muted\">re-reads the policy file; swaps only if it compiles</span></div>\
             <pre id=\"reload-result\" aria-live=\"polite\"></pre>",
        );
    } else {
        out.push_str("<p class=\"muted\" id=\"no-reload\">Reloading needs the owner or administrator role.</p>");
    }
    out.push_str("</section>");
    match crate::policy::policy_view(&policy.text, role.can_see_private()) {
        Ok(view) => {
            let text = serde_json::to_string_pretty(&view).unwrap_or_default();
            let _ = write!(
                out,
                "<section class=\"card\"><h2>Running policy</h2><p class=\"muted\">As <code>GET /policy</code> \
                 shows it to your role: secret references, never values; literal credentials as \
                 <code>[literal]</code>{}.</p><pre id=\"policy-view\">{}</pre></section>",
                if role.can_see_private() { "" } else { "; private fields left out" },
                e(text)
            );
        }
        Err(_) => out.push_str("<p class=\"error\">The running policy cannot be shown.</p>"),
    }
    out
}

fn respond(status: StatusCode, body: String, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
