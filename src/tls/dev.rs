//! Development certificates: a local CA and a server certificate for 127.0.0.1,
//! `::1` and localhost, generated with rcgen. Used by `flowgate demo` (written into
//! `certs/` on first run) and by tests (generated in memory at test time).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

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
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "flowgate development CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])?;
        server_params.distinguished_name.push(DnType::CommonName, "flowgate development server");
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

/// Generates the demo's CA and server certificate into `dir` unless they exist.
///
/// # Errors
/// Generation or writing fails.
pub fn ensure_dev_certs(dir: &Path) -> Result<DevCertPaths, DevCertError> {
    let paths = DevCertPaths::in_dir(dir);
    if paths.ca_cert.exists() && paths.server_cert.exists() && paths.server_key.exists() {
        return Ok(paths);
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
