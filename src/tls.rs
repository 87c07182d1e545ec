//! TLS termination: rustls server configuration (TLS 1.2/1.3, ALPN h2 and http/1.1,
//! optional client certificates) that a reload swaps for new handshakes while open
//! connections keep what they negotiated (the certificate alone can also be swapped), and
//! development certificates for the demo and tests.

pub mod dev;
pub mod forwarded;
pub mod peer;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS material could not be loaded. Names files, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {cause}")]
    Pem {
        /// Which part (certificate chain, private key, client CA).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's or the OS's message.
        cause: String,
    },
    /// The file held no usable item.
    #[error("{path} holds no {what}")]
    Empty {
        /// Which part.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the material (key type unsupported, key and certificate mismatch...).
    #[error("{0}")]
    Rustls(String),
}

/// The files a listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// A DER OCSP response to staple, refreshed by the operator.
    pub ocsp: Option<PathBuf>,
}

/// Reads a PEM certificate chain.
///
/// # Errors
/// The file is unreadable or holds no certificate.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(std::iter::Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| TlsError::Pem { what: "certificate chain", path: path.into(), cause: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { what: "certificate", path: path.into() });
    }
    Ok(certs)
}

/// Loads a certificate chain and its private key into a signing-ready `CertifiedKey`.
///
/// # Errors
/// Unreadable files, no certificate, no key, or a key rustls cannot use.
pub(crate) fn load_certified_key(files: &CertFiles) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Pem {
        what: "private key",
        path: files.key.clone(),
        cause: e.to_string(),
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Rustls(e.to_string()))?;
    if let Some(path) = &files.ocsp {
        let response = std::fs::read(path).map_err(|e| TlsError::Pem {
            what: "OCSP response",
            path: path.clone(),
            cause: e.to_string(),
        })?;
        if response.is_empty() {
            return Err(TlsError::Empty { what: "OCSP response", path: path.clone() });
        }
        certified.ocsp = Some(response);
    }
    Ok(certified)
}

/// Reads a PEM CA bundle into a root store.
///
/// # Errors
/// Unreadable file, no certificate, or a certificate rustls rejects.
pub(crate) fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Rustls(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// Serves whichever certificate was loaded last: reloading swaps the pointer, so new
/// handshakes get the new certificate and open connections are untouched.
#[derive(Debug)]
pub struct ReloadableCert {
    current: ArcSwap<CertifiedKey>,
}

impl ReloadableCert {
    /// Starts with `key`.
    pub fn new(key: CertifiedKey) -> Self {
        Self { current: ArcSwap::from_pointee(key) }
    }

    /// Replaces the served certificate.
    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Client-certificate settings of the HTTPS listener, with the verifier built once at
/// policy compile time.
#[derive(Debug, Clone)]
pub struct ClientCertPolicy {
    /// Trusted client CAs.
    pub roots: Arc<RootCertStore>,
    /// Refuse handshakes without a certificate.
    pub required: bool,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientCertPolicy {
    /// Client certificates from `roots`, demanded when `required`, else asked for.
    ///
    /// # Errors
    /// rustls refuses the verifier settings (no usable root).
    pub fn new(roots: RootCertStore, required: bool) -> Result<Self, TlsError> {
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider);
        let verifier = if required { verifier } else { verifier.allow_unauthenticated() };
        let verifier = verifier.build().map_err(|e| TlsError::Rustls(e.to_string()))?;
        Ok(Self { roots, required, verifier })
    }
}

/// Builds the listener's rustls configuration: TLS 1.2 and 1.3 only, ALPN h2 then http/1.1.
///
/// # Errors
/// rustls refuses the protocol versions (it does not with its own provider).
pub fn server_config(
    cert: Arc<ReloadableCert>,
    client_certs: Option<&ClientCertPolicy>,
    tls13_only: bool,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        if tls13_only { &[&rustls::version::TLS13] } else { &[&rustls::version::TLS13, &rustls::version::TLS12] };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match client_certs {
        None => builder.with_no_client_auth(),
        Some(policy) => builder.with_client_cert_verifier(policy.verifier.clone()),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The HTTPS listener's TLS: the certificate (swappable on its own, for rotation) and the
/// whole rustls configuration, rebuilt on every policy swap so that `client_ca` and
/// `client_auth` changes apply to new handshakes. Each connection takes the configuration
/// current when it was accepted and keeps it.
#[derive(Debug)]
pub struct ServerTls {
    cert: Arc<ReloadableCert>,
    config: ArcSwap<ServerConfig>,
    strictness: std::sync::Mutex<Strictness>,
    tightened: tokio::sync::watch::Sender<u64>,
}

/// What a handshake had to show under one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Strictness {
    /// 0: no certificate asked for, 1: asked for, 2: required.
    client_auth: u8,
    /// The client CA bundle (SHA-256 of its subjects and keys), when one is set.
    client_ca: Option<[u8; 32]>,
    tls13_only: bool,
}

impl Strictness {
    fn of(client_certs: Option<&ClientCertPolicy>, tls13_only: bool) -> Self {
        use sha2::Digest;
        let client_ca = client_certs.map(|policy| {
            let mut digest = sha2::Sha256::new();
            for anchor in &policy.roots.roots {
                digest.update(anchor.subject.as_ref());
                digest.update(anchor.subject_public_key_info.as_ref());
            }
            digest.finalize().into()
        });
        let client_auth = match client_certs {
            None => 0,
            Some(policy) if policy.required => 2,
            Some(_) => 1,
        };
        Self { client_auth, client_ca, tls13_only }
    }

    /// True when a connection accepted under `old` might not be accepted under `self`.
    /// A certificate asked for where none was counts: triggers may now judge it.
    fn tightens(&self, old: &Self) -> bool {
        self.client_auth > old.client_auth
            || (self.client_ca.is_some() && old.client_ca.is_some() && self.client_ca != old.client_ca)
            || (self.tls13_only && !old.tls13_only)
    }
}

impl ServerTls {
    /// TLS serving `key`, with the given client-certificate settings.
    ///
    /// # Errors
    /// See [`server_config`].
    pub fn new(key: CertifiedKey, client_certs: Option<&ClientCertPolicy>, tls13_only: bool) -> Result<Self, TlsError> {
        let cert = Arc::new(ReloadableCert::new(key));
        let config = ArcSwap::from_pointee(server_config(cert.clone(), client_certs, tls13_only)?);
        let (tightened, _) = tokio::sync::watch::channel(0);
        Ok(Self {
            cert,
            config,
            strictness: std::sync::Mutex::new(Strictness::of(client_certs, tls13_only)),
            tightened,
        })
    }

    /// The certificate, for rotation without a policy change.
    pub fn cert(&self) -> &ReloadableCert {
        &self.cert
    }

    /// Applies a reloaded policy's certificate and client-certificate settings to new
    /// handshakes.
    ///
    /// # Errors
    /// See [`server_config`]; the running configuration then stays.
    /// A reload that tightens what a connection must have shown (a client certificate
    /// now required, another client CA, TLS 1.3 only) also closes, gracefully, every
    /// connection accepted before it: they were admitted under the looser settings.
    pub fn apply(
        &self,
        key: CertifiedKey,
        client_certs: Option<&ClientCertPolicy>,
        tls13_only: bool,
    ) -> Result<(), TlsError> {
        let config = server_config(self.cert.clone(), client_certs, tls13_only)?;
        self.cert.replace(key);
        self.config.store(Arc::new(config));
        let new = Strictness::of(client_certs, tls13_only);
        let mut old = self.strictness.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if new.tightens(&old) {
            tracing::info!("client-certificate or TLS version rules tightened: closing connections accepted before");
            self.tightened.send_modify(|generation| *generation += 1);
        }
        *old = new;
        Ok(())
    }

    /// Resolves when a reload tightens the rules after this call: the connection accepted
    /// now must then close.
    pub fn tightened(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut changes = self.tightened.subscribe();
        async move {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// An acceptor for one new connection, with the configuration current now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }
}
