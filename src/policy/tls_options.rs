//! The HTTPS listener's options a security team asks for, and the cross-field rules of
//! client certificates: `min_version`, HSTS, the trusted proxy's client-certificate header,
//! `client_ca` without an explicit `client_auth` (refused), and a trigger that needs a
//! certificate on a listener that has no way to receive one (refused).

use super::raw::{RawHsts, RawPolicy};
use crate::auth::certificate::CertificateRule;
use crate::config::{Diagnostics, KeyPath};
use crate::tls::forwarded::ForwardedCert;

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
/// `can_receive`: the listener has a client CA or a forwarded certificate header.
pub(super) fn check_certificate_source(
    rule: &CertificateRule,
    can_receive: bool,
    path: &KeyPath,
    diags: &mut Diagnostics,
) {
    if rule.required && !can_receive {
        diags.error_with_hint(
            &path.key("who"),
            "this trigger needs a client certificate, and no listener can receive one",
            "set [server] tls.client_ca (with client_auth), or [server] forwarded_client_cert behind a proxy",
        );
    }
}
