//! `[admin.sign_in]`: the console's OIDC client as written ([`RawSignIn`]) and compiled
//! ([`SignIn`]), with the rules that keep a browser session safe to hand out: a secret
//! only by reference, a redirect URL the admin listener answers on and a browser treats
//! as a secure context (so `Secure` `__Host-` cookies stick), bounded sessions.

use crate::auth::Identity;
use crate::config::{Diagnostics, HumanDuration, KeyPath};
use crate::secrets::{SecretRef, Vaults};
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// `[admin.sign_in]`: people sign in to the console (`/ui`) with their browser, through the
/// admin identity's provider (OIDC authorization code flow with PKCE), instead of a proxy
/// adding a bearer header. Needs `[admin] identity` with a `discovery` URL. API clients keep
/// sending bearer tokens.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSignIn {
    /// The console's client id (application id) registered at the provider. The ID token's
    /// audience must be this id.
    pub client_id: String,
    /// The client secret, as a reference only: `"secret://VAULT/PATH#FIELD"`, resolved
    /// through the vault cache at each sign-in and never logged or shown. Leave it out for a
    /// public client (PKCE alone).
    pub client_secret: Option<String>,
    /// Where the provider sends the browser back: the admin listener's `/ui/callback` as
    /// the browser reaches it, for example `"http://127.0.0.1:9901/ui/callback"` or, behind
    /// a TLS-terminating proxy, `"https://flowgate-admin.internal/ui/callback"`. Plain
    /// `http` only on a loopback host (browsers keep `Secure` cookies only in a secure
    /// context); its host must be one the admin listener answers to. Register it, and the
    /// same origin's `/ui/signed-out` as the post-logout redirect, at the provider.
    pub redirect_url: String,
    /// Scopes asked for; must include `openid`. Default `["openid", "profile"]`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// A session unused this long ends. Default `"15m"`.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// A session ends this long after sign-in, however busy. Default `"8h"`.
    #[serde(default = "default_absolute_timeout")]
    pub absolute_timeout: HumanDuration,
    /// Signed-in sessions held at most (about 1 KiB each); at the cap, a new sign-in is
    /// refused (503) until one ends, and counted in
    /// `flowgate_console_sign_in_refused_total{reason="sessions_full"}`. Default 1000.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".to_owned(), "profile".to_owned()]
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration::from_secs(15 * 60)
}
fn default_absolute_timeout() -> HumanDuration {
    HumanDuration::from_secs(8 * 3600)
}
fn default_max_sessions() -> usize {
    1000
}

/// The compiled sign-in settings.
#[derive(Clone)]
pub struct SignIn {
    /// The client id.
    pub client_id: String,
    /// The provider's discovery document (the admin identity's), for `check`.
    pub discovery: String,
    /// The client secret's reference (never its value), for a confidential client.
    pub client_secret: Option<SecretRef>,
    /// The redirect URL, exactly as registered.
    pub redirect_url: String,
    /// `scheme://host[:port]` of the redirect URL: where the console lives for the browser.
    pub origin: String,
    /// The scopes, space-separated as the authorization request sends them.
    pub scopes: String,
    /// Idle expiry.
    pub idle_timeout: Duration,
    /// Absolute expiry.
    pub absolute_timeout: Duration,
    /// Sessions at most.
    pub max_sessions: usize,
    /// A hash of the admin identity, rules and these settings: sessions made under another
    /// generation end (a reload that changes who may sign in, or how, signs everyone out).
    pub generation: [u8; 32],
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(ToString::to_string))
            .field("redirect_url", &self.redirect_url)
            .finish_non_exhaustive()
    }
}

impl SignIn {
    /// Where the provider sends the browser after signing out: the signed-out page.
    pub fn post_logout_url(&self) -> String {
        format!("{}/ui/signed-out", self.origin)
    }

    /// One line for `flowgate check`: client, redirect, expiry; the secret's reference
    /// only by whether it is set.
    pub fn line(&self, identity: &str) -> String {
        format!(
            "console sign-in: identity {identity} (discovery {}), client_id {}, {} client, redirect {}, scopes \"{}\", idle {}, absolute {}, max {} sessions",
            self.discovery,
            self.client_id,
            if self.client_secret.is_some() { "confidential (secret from the vault)" } else { "public (PKCE only)" },
            self.redirect_url,
            self.scopes,
            humantime::format_duration(self.idle_timeout),
            humantime::format_duration(self.absolute_timeout),
            self.max_sessions,
        )
    }
}

/// What the sign-in compile needs from `[admin]`.
#[derive(Debug, Clone, Copy)]
pub struct SignInContext<'a> {
    /// The admin identity, when set and defined.
    pub identity: Option<&'a Identity>,
    /// Whether `[admin] identity` is written at all (a missing definition is reported
    /// elsewhere).
    pub identity_set: bool,
    /// `[admin] allowed_hosts`, compiled (lower case).
    pub allowed_hosts: &'a [String],
    /// The configured vaults.
    pub vaults: &'a Vaults,
    /// Everything else about admin access that decides who signs in with which role
    /// (tenants, principals, token roles), as text for the generation hash.
    pub rules_text: &'a str,
}

/// Compiles `[admin.sign_in]`.
pub fn compile_sign_in(
    raw: &RawSignIn,
    context: SignInContext<'_>,
    path: &KeyPath,
    diags: &mut Diagnostics,
) -> Option<SignIn> {
    let mark = diags.mark();
    if !context.identity_set {
        diags.error_with_hint(
            path,
            "sign_in needs an admin identity whose provider people sign in with",
            "set identity = \"NAME\" in [admin]",
        );
    }
    let discovery = context.identity.and_then(|identity| match &identity.key_source().source {
        crate::auth::keys::KeySource::Discovery(url) => Some(url.clone()),
        _ => None,
    });
    if let Some(identity) = context.identity
        && discovery.is_none()
    {
        diags.error_with_hint(
            path,
            format!("identity {:?} has no discovery URL, so its sign-in endpoints are unknown", identity.name()),
            "set discovery = \"https://…/.well-known/openid-configuration\" on the identity",
        );
    }
    if raw.client_id.trim().is_empty() {
        diags.error(&path.key("client_id"), "must not be empty");
    }
    let client_secret = raw.client_secret.as_ref().and_then(|text| {
        let at = path.key("client_secret");
        // Never echo the text when it does not parse: it may be the secret itself.
        let Ok(reference) = SecretRef::parse(text) else {
            diags.error_with_hint(
                &at,
                "must be a secret reference, never the secret itself",
                "write client_secret = \"secret://VAULT/PATH#FIELD\" and keep the value in the vault",
            );
            return None;
        };
        match context.vaults.check_ref(&reference) {
            Ok(()) => Some(reference),
            Err((message, hint)) => {
                diags.error_with_hint(&at, message, hint);
                None
            }
        }
    });
    let origin = compile_redirect(&raw.redirect_url, context.allowed_hosts, &path.key("redirect_url"), diags);
    if !raw.scopes.iter().any(|s| s == "openid") {
        diags.error_with_hint(&path.key("scopes"), "must include \"openid\"", "scopes = [\"openid\", \"profile\"]");
    }
    if let Some(i) = raw
        .scopes
        .iter()
        .position(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'))
    {
        diags.error(&path.key("scopes").index(i), "a scope is printable ASCII without spaces, quotes or backslashes");
    }
    let (idle, absolute) = (raw.idle_timeout.0, raw.absolute_timeout.0);
    if idle < Duration::from_secs(1) {
        diags.error(&path.key("idle_timeout"), "must be at least 1s");
    }
    if absolute < idle {
        diags.error_with_hint(
            &path.key("absolute_timeout"),
            "is shorter than idle_timeout",
            "the absolute expiry bounds a session's whole life: make it at least idle_timeout",
        );
    }
    if absolute > Duration::from_secs(7 * 24 * 3600) {
        diags.error_with_hint(
            &path.key("absolute_timeout"),
            "is longer than 7 days",
            "admin sessions are short-lived: sign in again",
        );
    }
    if raw.max_sessions == 0 {
        diags.error(&path.key("max_sessions"), "must be greater than zero");
    }
    let origin = origin?;
    if !diags.ok_since(mark) {
        return None;
    }
    let mut hasher = Sha256::new();
    hasher.update(context.identity.map_or(&[0u8; 32], Identity::fingerprint));
    hasher.update(context.rules_text.as_bytes());
    hasher.update(format!("\n{raw:?}").as_bytes());
    Some(SignIn {
        client_id: raw.client_id.clone(),
        discovery: discovery.unwrap_or_default(),
        client_secret,
        redirect_url: raw.redirect_url.clone(),
        origin,
        scopes: raw.scopes.join(" "),
        idle_timeout: idle,
        absolute_timeout: absolute,
        max_sessions: raw.max_sessions,
        generation: hasher.finalize().into(),
    })
}

/// Checks the redirect URL and returns its origin.
fn compile_redirect(text: &str, allowed_hosts: &[String], path: &KeyPath, diags: &mut Diagnostics) -> Option<String> {
    let Ok(url) = url::Url::parse(text) else {
        diags.error_with_hint(path, "is not a URL", "for example \"http://127.0.0.1:9901/ui/callback\"");
        return None;
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    let host = url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            diags.error_with_hint(
                path,
                "must be https, or http on a loopback host: browsers keep the Secure session cookie only in a secure context",
                "put a TLS-terminating proxy in front of the admin listener and name its https URL, or sign in on the box through http://127.0.0.1",
            );
            return None;
        }
    }
    if !loopback && !allowed_hosts.contains(&host) {
        diags.error_with_hint(
            path,
            format!("the admin listener does not answer to host {host:?}, so the callback would be refused"),
            format!("add \"{host}\" to [admin] allowed_hosts"),
        );
        return None;
    }
    if url.path() != "/ui/callback" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        diags.error_with_hint(
            path,
            "must end in /ui/callback, without query, fragment or user",
            "for example \"http://127.0.0.1:9901/ui/callback\"",
        );
        return None;
    }
    Some(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(text: &str, allowed: &[&str]) -> Option<String> {
        let allowed: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
        let mut diags = Diagnostics::default();
        compile_redirect(text, &allowed, &KeyPath::root().key("redirect_url"), &mut diags)
    }

    #[test]
    fn redirect_urls_must_be_secure_contexts_the_listener_answers_on() {
        assert_eq!(redirect("http://127.0.0.1:9901/ui/callback", &[]).as_deref(), Some("http://127.0.0.1:9901"));
        assert_eq!(redirect("http://localhost:9901/ui/callback", &[]).as_deref(), Some("http://localhost:9901"));
        assert_eq!(redirect("http://[::1]:9901/ui/callback", &[]).as_deref(), Some("http://[::1]:9901"));
        assert_eq!(
            redirect("https://admin.internal/ui/callback", &["admin.internal"]).as_deref(),
            Some("https://admin.internal")
        );
        // Plain http off the box: the Secure cookie would not stick, and tokens travel in clear.
        assert_eq!(redirect("http://admin.internal/ui/callback", &["admin.internal"]), None);
        // A host the listener refuses (421).
        assert_eq!(redirect("https://admin.internal/ui/callback", &[]), None);
        assert_eq!(redirect("http://127.0.0.1:9901/callback", &[]), None);
        assert_eq!(redirect("http://127.0.0.1:9901/ui/callback?x=1", &[]), None);
        assert_eq!(redirect("not a url", &[]), None);
    }
}
