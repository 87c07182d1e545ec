//! Client certificates as identities: a trigger's certificate rule (`who = "certificate"`,
//! `cert:` principals, `require_certificate`, `require_bound_token`), its compile step, and
//! its judgement of the certificate a call presented, including RFC 8705's binding of an
//! access token to the certificate (`cnf.x5t#S256`).
//!
//! Principals are looked up in hash sets: the cost per call grows with the certificate's
//! own names, never with the length of the policy's list.

use super::caller::Caller;
use super::error::AuthError;
use super::token::Claims;
use crate::config::{Diagnostics, KeyPath};
use crate::tls::peer::{ClientCertificate, PeerCertError, canonical_dn};
use std::collections::HashSet;
use std::sync::Arc;

/// What a call presented: no certificate, one that names a caller, or one that cannot
/// (not for client authentication, unreadable).
pub type Presented<'a> = Option<&'a Result<Arc<ClientCertificate>, PeerCertError>>;

/// The `cert:` principal forms, for messages.
pub(crate) const CERT_PRINCIPAL_FORMS: &str = "write cert:sha256:HEX (64 hex digits of the certificate's SHA-256), \
     cert:subject:CN=NAME,O=ORG (RFC 4514 order), cert:san-uri:URI or cert:san-dns:NAME";

/// Certificate principals, each form in its own hash set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertPrincipals {
    sha256: HashSet<[u8; 32]>,
    subjects: HashSet<String>,
    san_uris: HashSet<String>,
    san_dns: HashSet<String>,
}

impl CertPrincipals {
    /// True when no principal is listed.
    pub fn is_empty(&self) -> bool {
        self.sha256.is_empty() && self.subjects.is_empty() && self.san_uris.is_empty() && self.san_dns.is_empty()
    }

    /// True when `cert` is one of the listed principals: its thumbprint, its subject, or
    /// one of its URI or DNS names. One hash lookup per name the certificate carries.
    pub fn matches(&self, cert: &ClientCertificate) -> bool {
        self.sha256.contains(&cert.sha256)
            || self.subjects.contains(&cert.subject)
            || cert.san_uris.iter().any(|uri| self.san_uris.contains(uri))
            || cert.san_dns.iter().any(|dns| self.san_dns.contains(dns))
    }

    /// Adds one `cert:` principal (`entry` without the `cert:` prefix).
    ///
    /// # Errors
    /// A message saying what is wrong with the entry.
    pub fn add(&mut self, entry: &str) -> Result<(), String> {
        let (kind, value) = entry.split_once(':').ok_or_else(|| format!("cert:{entry} has no form"))?;
        match kind.to_ascii_lowercase().as_str() {
            "sha256" => {
                let hex_digits: String = value.chars().filter(|c| *c != ':').collect();
                let bytes = hex::decode(&hex_digits)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| "cert:sha256: needs the 64 hex digits of a SHA-256 thumbprint".to_owned())?;
                self.sha256.insert(bytes);
            }
            "subject" => {
                let dn = canonical_dn(value).ok_or_else(|| format!("{value:?} is not a distinguished name"))?;
                self.subjects.insert(dn);
            }
            "san-uri" if !value.is_empty() => {
                self.san_uris.insert(value.to_owned());
            }
            "san-dns" if !value.is_empty() => {
                self.san_dns.insert(value.to_ascii_lowercase());
            }
            _ => return Err(format!("cert:{entry} is not a certificate principal")),
        }
        Ok(())
    }

    /// The principals, for `check` and `/policy`: one line per principal.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self.sha256.iter().map(|t| format!("cert:sha256:{}", hex::encode(t))).collect();
        out.extend(self.subjects.iter().map(|s| format!("cert:subject:{s}")));
        out.extend(self.san_uris.iter().map(|s| format!("cert:san-uri:{s}")));
        out.extend(self.san_dns.iter().map(|s| format!("cert:san-dns:{s}")));
        out.sort();
        out
    }
}

/// What a trigger demands of the caller's client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateRule {
    /// A verified client certificate is needed (set by `who = "certificate"`,
    /// `require_certificate`, any `cert:` principal, or `require_bound_token`).
    pub required: bool,
    /// When not empty, the certificate must be one of these.
    pub principals: CertPrincipals,
    /// The access token must be bound to the certificate (RFC 8705 `cnf.x5t#S256`).
    pub bound_token: bool,
}

impl CertificateRule {
    /// True when the rule asks for nothing.
    pub fn is_off(&self) -> bool {
        !self.required && self.principals.is_empty() && !self.bound_token
    }

    /// Judges the presented certificate. `Ok(None)`: no certificate, none needed.
    ///
    /// # Errors
    /// [`AuthError::CertificateMissing`], [`AuthError::CertificateUnusable`] or
    /// [`AuthError::CertificateNotListed`].
    pub fn check<'a>(&self, presented: Presented<'a>) -> Result<Option<&'a Arc<ClientCertificate>>, AuthError> {
        match presented {
            None if self.required => Err(AuthError::CertificateMissing),
            Some(Err(problem)) if self.required => Err(AuthError::CertificateUnusable(problem.clone())),
            // An unusable certificate where none is needed is no identity, and no refusal.
            None | Some(Err(_)) => Ok(None),
            Some(Ok(cert)) if !self.principals.is_empty() && !self.principals.matches(cert) => {
                Err(AuthError::CertificateNotListed)
            }
            Some(Ok(cert)) => Ok(Some(cert)),
        }
    }

    /// RFC 8705: a token that carries `cnf.x5t#S256` is valid only with the certificate it
    /// names; with `bound_token`, a token without one is refused.
    ///
    /// # Errors
    /// [`AuthError::TokenNotBound`] or [`AuthError::TokenBoundElsewhere`].
    pub fn check_binding(&self, claims: &Claims, cert: Option<&ClientCertificate>) -> Result<(), AuthError> {
        self.check_binding_of(&claims.all, cert)
    }

    fn check_binding_of(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
        cert: Option<&ClientCertificate>,
    ) -> Result<(), AuthError> {
        let bound_to = claims.get("cnf").and_then(|cnf| cnf.get("x5t#S256"));
        match bound_to {
            None if self.bound_token => Err(AuthError::TokenNotBound),
            None => Ok(()),
            Some(serde_json::Value::String(thumbprint)) => match cert {
                Some(cert) if super::same_bytes(thumbprint.as_bytes(), cert.x5t_s256().as_bytes()) => Ok(()),
                _ => Err(AuthError::TokenBoundElsewhere),
            },
            // A confirmation we cannot read cannot be honoured.
            Some(_) => Err(AuthError::TokenBoundElsewhere),
        }
    }

    /// One line for `check`: the trigger's certificate rule.
    pub fn describe(&self) -> String {
        if self.is_off() {
            return "no certificate needed".to_owned();
        }
        let mut parts = Vec::new();
        if self.required {
            parts.push("client certificate required".to_owned());
        }
        if !self.principals.is_empty() {
            parts.push(format!("one of {}", self.principals.describe().join(", ")));
        }
        if self.bound_token {
            parts.push("token bound to it (RFC 8705)".to_owned());
        }
        parts.join("; ")
    }
}

/// A trigger's `require_certificate` and `require_bound_token`, as written.
#[derive(Debug, Clone, Copy, Default)]
pub struct CertificateFlags {
    /// `require_certificate`.
    pub require_certificate: bool,
    /// `require_bound_token`.
    pub require_bound_token: bool,
}

/// The certificate fields of a trigger, as written.
#[derive(Debug, Clone, Copy, Default)]
pub struct CertificateInput<'a> {
    /// `who = "certificate"`.
    pub certificate_only: bool,
    /// The flags.
    pub flags: CertificateFlags,
    /// The `cert:` entries of `principals`, with their index in the list.
    pub principals: &'a [(usize, &'a str)],
}

/// Compiles a trigger's certificate rule. `principals_path` is the trigger's `principals`.
pub(crate) fn compile_certificate_rule(
    input: CertificateInput<'_>,
    path: &KeyPath,
    diags: &mut Diagnostics,
) -> CertificateRule {
    let mut principals = CertPrincipals::default();
    for (index, entry) in input.principals {
        let value = &entry["cert:".len()..];
        if let Err(message) = principals.add(value) {
            diags.error_with_hint(&path.key("principals").index(*index), message, CERT_PRINCIPAL_FORMS);
        }
    }
    if input.certificate_only && input.flags.require_bound_token {
        diags.error_with_hint(
            &path.key("require_bound_token"),
            "who = \"certificate\" reads no token, so none can be bound",
            "remove it, or use a token trigger with require_certificate = true",
        );
    }
    if input.certificate_only && principals.is_empty() {
        tracing::warn!(
            at = %path,
            "who = \"certificate\" with no cert: principals: every certificate the client CA signed may call"
        );
    }
    CertificateRule {
        required: input.certificate_only
            || input.flags.require_certificate
            || input.flags.require_bound_token
            || !principals.is_empty(),
        principals,
        bound_token: input.flags.require_bound_token,
    }
}

impl Caller {
    /// The caller a certificate names (`who = "certificate"`): its thumbprint is the
    /// principal and the rate-limit budget; its subject and names are pinnable ids.
    pub(crate) fn certificate(cert: &ClientCertificate) -> Self {
        let thumbprint = cert.sha256_hex();
        let mut ids =
            vec![format!("cert:sha256:{thumbprint}"), format!("cert:subject:{}", cert.subject.to_lowercase())];
        ids.extend(cert.san_uris.iter().map(|u| format!("cert:san-uri:{}", u.to_lowercase())));
        ids.extend(cert.san_dns.iter().map(|d| format!("cert:san-dns:{d}")));
        Self {
            tenant: None,
            principal: format!("cert:sha256:{thumbprint}"),
            app_id: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            principal_ids: ids,
            budget_key: format!("cert/sha256:{thumbprint}").into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> ClientCertificate {
        ClientCertificate {
            sha256: [7; 32],
            subject: "CN=billing,O=Contoso".into(),
            san_uris: vec!["spiffe://contoso/billing".into()],
            san_dns: vec!["billing.contoso.example".into()],
        }
    }

    #[test]
    fn each_principal_form_admits_its_certificate_and_no_other() {
        let forms = [
            format!("sha256:{}", hex::encode([7; 32])),
            format!("SHA256:{}", hex::encode_upper([7; 32])),
            "subject:cn=billing, o=Contoso".to_owned(),
            "san-uri:spiffe://contoso/billing".to_owned(),
            "san-dns:Billing.Contoso.Example".to_owned(),
        ];
        for form in forms {
            let mut set = CertPrincipals::default();
            set.add(&form).unwrap();
            assert!(set.matches(&cert()), "{form}");
            let mut other = cert();
            other.sha256 = [8; 32];
            other.subject = "CN=billing,O=Fabrikam".into();
            other.san_uris = vec!["spiffe://contoso/billing/x".into()];
            other.san_dns = vec!["billing.contoso.example.evil".into()];
            assert!(!set.matches(&other), "{form} admitted another certificate");
        }
        for bad in ["sha256:abc", "subject:", "subject:nonsense", "san-uri:", "issuer:x", "nothing"] {
            assert!(CertPrincipals::default().add(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bound_token_needs_its_own_certificate() {
        let claims = |cnf: Option<serde_json::Value>| {
            let mut all = serde_json::Map::new();
            if let Some(cnf) = cnf {
                all.insert("cnf".into(), cnf);
            }
            all
        };
        let mine = cert();
        let rule = CertificateRule::default();
        let bound = claims(Some(serde_json::json!({ "x5t#S256": mine.x5t_s256() })));
        assert_eq!(rule.check_binding_of(&bound, Some(&mine)), Ok(()));
        let mut theirs = cert();
        theirs.sha256 = [9; 32];
        assert_eq!(rule.check_binding_of(&bound, Some(&theirs)), Err(AuthError::TokenBoundElsewhere));
        assert_eq!(rule.check_binding_of(&bound, None), Err(AuthError::TokenBoundElsewhere));
        assert_eq!(rule.check_binding_of(&claims(None), None), Ok(()));
        let strict = CertificateRule { bound_token: true, required: true, ..CertificateRule::default() };
        assert_eq!(strict.check_binding_of(&claims(None), Some(&mine)), Err(AuthError::TokenNotBound));
        let odd = claims(Some(serde_json::json!({ "x5t#S256": 5 })));
        assert_eq!(rule.check_binding_of(&odd, Some(&mine)), Err(AuthError::TokenBoundElsewhere));
    }
}
