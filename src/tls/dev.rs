//! Development certificates: a local CA and a server certificate for 127.0.0.1,
//! `::1` and localhost, generated with rcgen. Used by `flowgate demo` (written into
//! `certs/` on first run, and renewed when what is there would fail a strict client) and
//! by tests (generated in memory at test time).
//!
//! Strict clients (Python 3.13's default context, `openssl verify -x509_strict`) want what
//! a public CA issues: a CA with `basicConstraints` CA (critical), `keyCertSign`/`cRLSign`
//! and a Subject Key Identifier; a server certificate valid for a year at most with an
//! Authority Key Identifier, a Subject Key Identifier, `digitalSignature` key usage (an
//! ECDSA key encrypts nothing, so no `keyEncipherment`), `serverAuth` extended key usage
//! and the names as subject alternative names.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long the development server certificate is valid (browsers cap public ones at
/// 398 days).
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long the development CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Certificates are dated from a day back, so a clock a little behind accepts them.
const BACKDATE: Duration = Duration::from_secs(24 * 3600);
/// A server certificate this close to its end is renewed.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// A CA and a server certificate it signed, as PEM text.
pub struct DevPki {
    /// The CA certificate clients should trust.
    pub ca_cert_pem: String,
    /// The server certificate (leaf only).
    pub server_cert_pem: String,
    /// The server's private key (PKCS#8).
    pub server_key_pem: String,
}

impl std::fmt::Debug for DevPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPki").finish_non_exhaustive()
    }
}

/// Errors generating or writing development certificates.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// rcgen failed.
    #[error("cannot generate a development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The files could not be written.
    #[error("cannot write {path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS's message.
        cause: std::io::Error,
    },
}

impl DevPki {
    /// Generates a fresh CA and a server certificate for loopback names.
    ///
    /// # Errors
    /// rcgen fails (it does not on supported platforms).
    pub fn generate() -> Result<Self, DevCertError> {
        #[expect(clippy::disallowed_methods, reason = "a certificate is dated from the real time it is made")]
        let now = SystemTime::now();
        let from = time::OffsetDateTime::from(now - BACKDATE);
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "flowgate development CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = from;
        ca_params.not_after = time::OffsetDateTime::from(now + CA_VALIDITY);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])?;
        server_params.distinguished_name.push(DnType::CommonName, "flowgate development server");
        server_params.is_ca = IsCa::ExplicitNoCa;
        server_params.use_authority_key_identifier_extension = true;
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.not_before = from;
        server_params.not_after = time::OffsetDateTime::from(now + SERVER_VALIDITY);
        let server_cert = server_params.signed_by(&server_key, &issuer)?;
        Ok(Self {
            ca_cert_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        })
    }
}

/// Where `ensure_dev_certs` keeps its files.
#[derive(Debug, Clone)]
pub struct DevCertPaths {
    /// CA certificate (give it to `curl --cacert`).
    pub ca_cert: PathBuf,
    /// Server certificate.
    pub server_cert: PathBuf,
    /// Server private key (mode 0600).
    pub server_key: PathBuf,
}

impl DevCertPaths {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("dev-ca.crt"),
            server_cert: dir.join("dev-server.crt"),
            server_key: dir.join("dev-server.key"),
        }
    }
}

/// Generates the demo's CA and server certificate into `dir` unless usable ones exist:
/// files made by older versions (no key identifiers or usages, a validity of centuries)
/// or near their end are replaced, CA included.
///
/// # Errors
/// Generation or writing fails.
pub fn ensure_dev_certs(dir: &Path) -> Result<DevCertPaths, DevCertError> {
    let paths = DevCertPaths::in_dir(dir);
    if paths.server_key.exists() && renewal_reason(&paths).is_none() {
        return Ok(paths);
    }
    if let Some(reason) = paths.server_key.exists().then(|| renewal_reason(&paths)).flatten() {
        tracing::warn!(dir = %dir.display(), %reason, "renewing the development certificates; trust the new dev-ca.crt");
    }
    let pki = DevPki::generate()?;
    write_file(dir, &paths.ca_cert, pki.ca_cert_pem.as_bytes(), 0o644)?;
    write_file(dir, &paths.server_cert, pki.server_cert_pem.as_bytes(), 0o644)?;
    write_file(dir, &paths.server_key, pki.server_key_pem.as_bytes(), 0o600)?;
    Ok(paths)
}

/// Writes a file with the given unix mode, creating `dir` first.
///
/// # Errors
/// The directory or file cannot be written.
pub(crate) fn write_file(dir: &Path, path: &Path, contents: &[u8], mode: u32) -> Result<(), DevCertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let wrap = |cause| DevCertError::Write { path: path.to_path_buf(), cause };
    std::fs::create_dir_all(dir).map_err(wrap)?;
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path).map_err(wrap)?;
    file.write_all(contents).map_err(wrap)
}

/// Why the development certificates in `paths` must be made again, or `None` when they
/// would satisfy a strict client.
pub fn renewal_reason(paths: &DevCertPaths) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let read = |path: &Path| -> Result<Vec<u8>, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_file(path).map(|der| der.to_vec()).map_err(|e| format!("{}: {e}", path.display()))
    };
    let (ca_der, server_der) = match (read(&paths.ca_cert), read(&paths.server_cert)) {
        (Ok(ca), Ok(server)) => (ca, server),
        (Err(e), _) | (_, Err(e)) => return Some(e),
    };
    let (Ok((_, ca)), Ok((_, server))) = (X509Certificate::from_der(&ca_der), X509Certificate::from_der(&server_der))
    else {
        return Some("unparsable certificate".to_owned());
    };
    #[expect(clippy::disallowed_methods, reason = "a certificate's validity is judged against the real time")]
    let now = SystemTime::now();
    let epoch = |t: &x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
    let now_secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    use x509_parser::extensions::ParsedExtension;
    let ski = |cert: &X509Certificate<'_>| {
        cert.extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
    };
    let aki = |cert: &X509Certificate<'_>| {
        cert.extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(id) => id.key_identifier.as_ref().map(|k| k.0.to_vec()),
            _ => None,
        })
    };
    let ca_ok = ca.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca)
        && ca.key_usage().ok().flatten().is_some_and(|ku| ku.value.key_cert_sign())
        && ski(&ca).is_some()
        && epoch(&ca.validity().not_after) > now_secs + RENEW_BEFORE.as_secs();
    if !ca_ok {
        return Some("the CA lacks basicConstraints, keyCertSign, a key identifier or time".to_owned());
    }
    let lifetime = epoch(&server.validity().not_after).saturating_sub(epoch(&server.validity().not_before));
    let checks = [
        (aki(&server).is_some(), "no Authority Key Identifier"),
        (ski(&server).is_some(), "no Subject Key Identifier"),
        (server.key_usage().ok().flatten().is_some_and(|ku| ku.value.digital_signature()), "no key usage"),
        (server.extended_key_usage().ok().flatten().is_some_and(|eku| eku.value.server_auth), "no serverAuth usage"),
        (lifetime <= 398 * 24 * 3600, "valid for longer than 398 days"),
        (epoch(&server.validity().not_after) > now_secs + RENEW_BEFORE.as_secs(), "expires within 30 days"),
        (server.issuer() == ca.subject(), "not issued by dev-ca.crt"),
        (aki(&server) == ski(&ca), "its Authority Key Identifier is not dev-ca.crt's key"),
    ];
    checks.iter().find(|(ok, _)| !ok).map(|(_, why)| format!("dev-server.crt: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_certificates_are_kept_and_old_style_ones_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ensure_dev_certs(dir.path()).unwrap();
        assert_eq!(renewal_reason(&paths), None);
        let first = std::fs::read(&paths.server_cert).unwrap();
        ensure_dev_certs(dir.path()).unwrap();
        assert_eq!(std::fs::read(&paths.server_cert).unwrap(), first, "usable certificates were replaced");

        // What older versions wrote: rcgen's defaults (no usages, 1975 to 4096).
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let old = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
        std::fs::write(&paths.ca_cert, ca_cert.pem()).unwrap();
        std::fs::write(&paths.server_cert, old.pem()).unwrap();
        assert!(renewal_reason(&paths).is_some());
        ensure_dev_certs(dir.path()).unwrap();
        assert_eq!(renewal_reason(&paths), None, "old certificates were not renewed");
        assert_ne!(std::fs::read(&paths.server_cert).unwrap(), old.pem().into_bytes());
    }
}
