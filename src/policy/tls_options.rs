//! The HTTPS listener's options a security team asks for, and the cross-field rules of
//! client certificates: `min_version`, HSTS, the trusted proxy's client-certificate header,
//! `client_ca` without an explicit `client_auth` (refused), and a trigger that needs a
//! certificate on a listener that has no way to receive one (refused).

use super::ServerSettings;
use super::raw::RawPolicy;
use crate::auth::certificate::CertificateRule;
use crate::config::{Diagnostics, HumanDuration, KeyPath};
use crate::tls::forwarded::ForwardedCert;
use schemars::JsonSchema;
use serde::Deserialize;

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// `[server] hsts`: the `Strict-Transport-Security` header.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHsts {
    /// How long browsers keep to HTTPS, for example `"365days"`.
    pub max_age: HumanDuration,
    /// Also for every subdomain.
    #[serde(default)]
    pub include_subdomains: bool,
    /// Ask to be preloaded into browsers (needs `include_subdomains` and a year or more).
    #[serde(default)]
    pub preload: bool,
}

/// `client_ca` without `client_auth`: refused. The old default (`"optional"`) admitted
/// callers without a certificate, which an admin adding a CA rarely means.
pub(super) fn refuse_unstated_client_auth(tls_path: &KeyPath, diags: &mut Diagnostics) {
    diags.error_with_hint(
        &tls_path.key("client_auth"),
        "client_ca is set without client_auth: say whether callers without a certificate are admitted",
        "client_auth = \"required\" refuses handshakes without a certificate; \"optional\" asks for one \
         and leaves it to triggers (who = \"certificate\", require_certificate, cert: principals)",
    );
}

/// The `Strict-Transport-Security` value.
pub(super) fn compile_hsts(raw: &RawHsts, path: &KeyPath, diags: &mut Diagnostics) -> Option<http::HeaderValue> {
    let secs = raw.max_age.0.as_secs();
    if raw.preload && (!raw.include_subdomains || secs < 31_536_000) {
        diags.error_with_hint(
            path,
            "preload needs include_subdomains and a max_age of a year or more",
            "set include_subdomains = true and max_age = \"365days\", or drop preload",
        );
    }
    let mut value = format!("max-age={secs}");
    if raw.include_subdomains {
        value.push_str("; includeSubDomains");
    }
    if raw.preload {
        value.push_str("; preload");
    }
    http::HeaderValue::from_str(&value).ok()
}

/// `forwarded_client_cert`: a valid header name, believed from `trusted_proxies` only,
/// so it needs some.
pub(super) fn compile_forwarded_cert(
    raw: &RawPolicy,
    path: &KeyPath,
    diags: &mut Diagnostics,
) -> Option<ForwardedCert> {
    let forwarded = raw.server.forwarded_client_cert.as_ref()?;
    let at = path.key("forwarded_client_cert");
    if raw.server.trusted_proxies.is_empty() {
        diags.error_with_hint(
            &at,
            "forwarded_client_cert is believed only from trusted_proxies, and there are none",
            "list the load balancer's addresses in [server] trusted_proxies",
        );
    }
    let Ok(header) = http::HeaderName::from_bytes(forwarded.header.to_ascii_lowercase().as_bytes()) else {
        diags.error(&at.key("header"), format!("{:?} is not a header name", forwarded.header));
        return None;
    };
    if matches!(header.as_str(), "authorization" | "cookie" | "host" | "x-forwarded-for" | "forwarded") {
        diags.error(&at.key("header"), format!("{header} carries something else"));
        return None;
    }
    Some(ForwardedCert { header, format: forwarded.format })
}

/// A trigger that needs a certificate needs a listener that can receive one: `client_ca`
/// on the HTTPS listener, or a trusted proxy's header.
pub(super) fn check_certificate_source(
    rule: &CertificateRule,
    server: Option<&ServerSettings>,
    path: &KeyPath,
    diags: &mut Diagnostics,
) {
    let Some(server) = server else { return };
    let has_ca = server.tls.as_ref().is_some_and(|tls| tls.client_certs.is_some());
    if rule.required && !has_ca && server.forwarded_client_cert.is_none() {
        diags.error_with_hint(
            &path.key("who"),
            "this trigger needs a client certificate, and no listener can receive one",
            "set [server] tls.client_ca (with client_auth), or [server] forwarded_client_cert behind a proxy",
        );
    }
}
