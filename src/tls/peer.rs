//! [`ClientCertificate`]: what a verified client certificate says about its holder, read
//! once per connection (or once per call, from a trusted proxy's header): its SHA-256
//! thumbprint, its subject as an RFC 4514 string, its URI and DNS subject alternative
//! names. Never the certificate itself: run records and logs carry the thumbprint and
//! subject only.
//!
//! Distinguished names are compared in one canonical text form ([`canonical_dn`]): the
//! RDNs in RFC 4514 order (the last RDN of the certificate first, as `openssl -nameopt
//! RFC2253` and Envoy print them), attribute types as their short names upper-cased
//! (`CN`, `O`, `OU`, ... or the dotted OID), no spaces around `,`, `+` and `=`, values
//! compared exactly with the RFC 4514 specials escaped by a backslash.

use base64::Engine;
use sha2::Digest;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The identity a client certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// SHA-256 of the certificate's DER encoding.
    pub sha256: [u8; 32],
    /// The subject in canonical RFC 4514 form (see the module header).
    pub subject: String,
    /// URI subject alternative names (SPIFFE ids, for example), as written.
    pub san_uris: Vec<String>,
    /// DNS subject alternative names, lower case.
    pub san_dns: Vec<String>,
}

/// Why a certificate cannot serve as an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerCertError {
    /// Not a parsable X.509 certificate.
    #[error("not a parsable X.509 certificate")]
    Unparsable,
    /// The certificate does not allow client authentication: it has no extended key
    /// usage, or one without `clientAuth`.
    #[error("the certificate's extended key usage does not include clientAuth")]
    NotForClientAuth,
    /// The subject alternative names could not be read.
    #[error("unreadable subject alternative names")]
    BadNames,
}

impl ClientCertificate {
    /// Reads the identity of a certificate the TLS layer (or a trusted proxy) verified.
    ///
    /// A certificate must say it is for client authentication (extended key usage
    /// `clientAuth`, or `anyExtendedKeyUsage`): a server or code-signing certificate from
    /// the same CA is not a caller's identity. rustls already refuses an extended key usage
    /// without `clientAuth` at the handshake; a certificate with none is refused here.
    ///
    /// # Errors
    /// [`PeerCertError`].
    pub fn from_der(der: &[u8]) -> Result<Self, PeerCertError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| PeerCertError::Unparsable)?;
        match cert.extended_key_usage() {
            Ok(Some(eku)) if eku.value.client_auth || eku.value.any => {}
            Ok(_) => return Err(PeerCertError::NotForClientAuth),
            Err(_) => return Err(PeerCertError::Unparsable),
        }
        let mut rdns = Vec::new();
        for rdn in cert.subject().iter() {
            let attributes: Vec<String> = rdn
                .iter()
                .map(|atv| {
                    let kind = attribute_name(&atv.attr_type().to_id_string());
                    let value = match atv.as_str() {
                        Ok(text) => escape_value(text),
                        // Other string types (BMPString, TeletexString...): RFC 4514's
                        // hex form of the value's bytes.
                        Err(_) => format!("#{}", hex::encode(atv.as_slice())),
                    };
                    format!("{kind}={value}")
                })
                .collect();
            rdns.push(attributes.join("+"));
        }
        rdns.reverse();
        let (mut san_uris, mut san_dns) = (Vec::new(), Vec::new());
        match cert.subject_alternative_name() {
            Ok(Some(san)) => {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::URI(uri) => san_uris.push((*uri).to_owned()),
                        GeneralName::DNSName(dns) => san_dns.push(dns.to_ascii_lowercase()),
                        _ => {}
                    }
                }
            }
            Ok(None) => {}
            Err(_) => return Err(PeerCertError::BadNames),
        }
        Ok(Self { sha256: sha2::Sha256::digest(der).into(), subject: rdns.join(","), san_uris, san_dns })
    }

    /// The thumbprint as lower-case hex (the `cert:sha256:` principal form).
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// The thumbprint as RFC 8705's `x5t#S256`: unpadded base64url.
    pub fn x5t_s256(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.sha256)
    }

    /// What run records and access lines show: `sha256:HEX subject`.
    pub fn summary(&self) -> String {
        format!("sha256:{} {}", self.sha256_hex(), self.subject)
    }
}

/// The short name RFC 4514 (and common practice) gives an attribute type, else its OID.
fn attribute_name(oid: &str) -> String {
    match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        other => other,
    }
    .to_owned()
}

/// Escapes an attribute value as RFC 4514 says: `,+"\<>;` anywhere, `#` or a space
/// first, a space last.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The canonical form of a distinguished name written as text (a policy's
/// `cert:subject:`, Envoy's `Subject="..."`): `None` when it is not one.
///
/// Attribute types are matched case-insensitively and named as [`ClientCertificate`]
/// names them (`cn` and `2.5.4.3` are both `CN`); spaces around separators are dropped;
/// escaped characters (`\,` or `\2C`) keep their meaning. RDN order is kept as written:
/// it is RFC 4514's, the reverse of the certificate's.
pub fn canonical_dn(text: &str) -> Option<String> {
    let mut rdns = Vec::new();
    for rdn in split_unescaped(text.trim(), ',') {
        let mut attributes = Vec::new();
        for attribute in split_unescaped(&rdn, '+') {
            let (kind, value) = split_once_unescaped(&attribute, '=')?;
            let kind = kind.trim();
            if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
                return None;
            }
            let upper = kind.to_ascii_uppercase();
            let kind = match upper.as_str() {
                "CN" | "C" | "L" | "ST" | "STREET" | "O" | "OU" | "UID" | "DC" | "SERIALNUMBER" | "EMAILADDRESS" => {
                    upper.clone()
                }
                "E" => "EMAILADDRESS".to_owned(),
                _ if upper.starts_with(|c: char| c.is_ascii_digit()) => attribute_name(&upper),
                _ => upper.clone(),
            };
            let value = unescape(value.trim_start())?;
            if value.is_empty() {
                return None;
            }
            attributes.push(format!("{kind}={}", escape_value(&value)));
        }
        if attributes.is_empty() {
            return None;
        }
        rdns.push(attributes.join("+"));
    }
    if rdns.is_empty() { None } else { Some(rdns.join(",")) }
}

/// Splits at `separator` where it is not escaped by a backslash.
fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            current.push(c);
            if let Some(next) = chars.next() {
                current.push(next);
            }
        } else if c == separator {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

fn split_once_unescaped(text: &str, separator: char) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            return Some((&text[..i], &text[i + c.len_utf8()..]));
        }
    }
    None
}

/// Undoes RFC 4514 escapes (`\,` and `\2C` alike); trailing unescaped spaces are dropped.
fn unescape(value: &str) -> Option<String> {
    let trimmed = {
        // A trailing space is part of the value only when escaped.
        let mut end = value.len();
        while end > 0 && value.as_bytes()[end - 1] == b' ' && !(end >= 2 && value.as_bytes()[end - 2] == b'\\') {
            end -= 1;
        }
        &value[..end]
    };
    let mut bytes = Vec::with_capacity(trimmed.len());
    let raw = trimmed.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            let next = *raw.get(i + 1)?;
            if next.is_ascii_hexdigit() {
                let pair = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
                bytes.push(u8::from_str_radix(pair, 16).ok()?);
                i += 3;
            } else {
                bytes.push(next);
                i += 2;
            }
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};

    fn cert(edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        edit(&mut params);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_yields_thumbprint_subject_and_names() {
        let der = cert(|p| {
            // In the certificate O comes first, as CAs write it; RFC 4514 reverses that.
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(DnType::OrganizationName, "Contoso");
            p.distinguished_name.push(DnType::CommonName, "billing, east");
            p.subject_alt_names = vec![
                SanType::URI("spiffe://contoso/billing".try_into().unwrap()),
                SanType::DnsName("Billing.Contoso.example".try_into().unwrap()),
            ];
        });
        let id = ClientCertificate::from_der(&der).unwrap();
        assert_eq!(id.sha256_hex(), hex::encode(sha2::Sha256::digest(&der)));
        assert_eq!(id.subject, "CN=billing\\, east,O=Contoso");
        assert_eq!(id.san_uris, ["spiffe://contoso/billing"]);
        assert_eq!(id.san_dns, ["billing.contoso.example"]);
        assert_eq!(id.x5t_s256().len(), 43);
        assert_eq!(canonical_dn("cn = billing\\2C east , o=Contoso").as_deref(), Some(id.subject.as_str()));
    }

    #[test]
    fn a_certificate_not_for_client_authentication_is_no_identity() {
        let server_only = cert(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]);
        assert_eq!(ClientCertificate::from_der(&server_only), Err(PeerCertError::NotForClientAuth));
        let no_usage = cert(|p| p.extended_key_usages.clear());
        assert_eq!(ClientCertificate::from_der(&no_usage), Err(PeerCertError::NotForClientAuth));
        assert_eq!(ClientCertificate::from_der(b"junk"), Err(PeerCertError::Unparsable));
    }

    #[test]
    fn distinguished_names_have_one_canonical_form() {
        assert_eq!(canonical_dn("CN=billing,O=Contoso").as_deref(), Some("CN=billing,O=Contoso"));
        assert_eq!(canonical_dn(" CN = billing ,  o = Contoso ").as_deref(), Some("CN=billing,O=Contoso"));
        assert_eq!(canonical_dn("2.5.4.3=x+OU=y").as_deref(), Some("CN=x+OU=y"));
        assert_eq!(canonical_dn("CN=a\\+b").as_deref(), Some("CN=a\\+b"));
        for bad in ["", "CN", "=x", "CN=", "CN=a,,O=b", "C N=x", "CN=\\"] {
            assert_eq!(canonical_dn(bad), None, "{bad:?}");
        }
    }
}
