//! Test fixtures: a development PKI generated at test time, an echo upstream on
//! loopback, and the real gateway started in-process on 127.0.0.1:0 over real TLS.
#![allow(dead_code)] // each test binary uses a different subset

pub(crate) mod auth;
pub(crate) mod bao;
pub(crate) mod browser;
pub(crate) mod leak;
pub(crate) mod load;
pub(crate) mod ports;
pub(crate) mod redis;
pub(crate) mod upstream;

use flowgate::auth::dev_issuer::{DevIssuer, MintOptions};
use flowgate::gateway::Gateway;
use flowgate::server::{self, Listeners};
use flowgate::tls::dev::DevPki;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A temporary directory with a CA and a server certificate for loopback, and a
/// development token issuer (ES256) whose discovery and JWKS tests serve on loopback.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub issuer: Arc<DevIssuer>,
    issuer_listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = DevPki::generate().expect("dev pki");
        std::fs::write(dir.path().join("ca.crt"), &pki.ca_cert_pem).unwrap();
        std::fs::write(dir.path().join("server.crt"), &pki.server_cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &pki.server_key_pem).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let issuer = Arc::new(DevIssuer::load_or_create(dir.path(), &url).expect("dev issuer"));
        Self { dir, ca_pem: pki.ca_cert_pem, issuer, issuer_listener: std::sync::Mutex::new(Some(listener)) }
    }

    /// Serves the issuer's discovery and JWKS (once; later calls do nothing).
    pub(crate) fn serve_issuer(&self) {
        if let Some(listener) = self.issuer_listener.lock().unwrap().take() {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::spawn(self.issuer.clone().serve(listener, std::future::pending::<()>()));
        }
    }

    /// A token the test triggers accept (the demo tenant, role `Flows.Invoke`).
    pub(crate) fn token(&self) -> String {
        self.issuer.mint(&MintOptions::default()).unwrap()
    }

    /// A token minted with `edit` applied to the default options.
    pub(crate) fn token_with(&self, edit: impl FnOnce(&mut MintOptions)) -> String {
        let mut opts = MintOptions::default();
        edit(&mut opts);
        self.issuer.mint(&opts).unwrap()
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The `[server]` and `[admin]` sections for a gateway on port 0, the test identity,
    /// plus `extra` TOML.
    pub(crate) fn policy_text(&self, extra: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"server.crt\", key = \"server.key\" }}\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n{}\n{extra}",
            self.issuer.identity_toml("test")
        )
    }

    /// Writes `policy.toml` and returns its path.
    pub(crate) fn write_policy(&self, text: &str) -> PathBuf {
        let path = self.path().join("policy.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A reqwest client trusting the test CA and sending a valid token by default. `http2`
    /// lets ALPN pick h2, else h1 only.
    pub(crate) fn client(&self, http2: bool) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {}", self.token()).parse().unwrap());
        self.client_with_headers(http2, headers)
    }

    /// A client trusting the test CA with no credentials.
    pub(crate) fn anonymous_client(&self, http2: bool) -> reqwest::Client {
        self.client_with_headers(http2, reqwest::header::HeaderMap::new())
    }

    fn client_with_headers(&self, http2: bool, headers: reqwest::header::HeaderMap) -> reqwest::Client {
        let cert = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let builder = reqwest::Client::builder().tls_certs_only([cert]).default_headers(headers).no_proxy();
        let builder = if http2 { builder } else { builder.http1_only() };
        builder.build().unwrap()
    }

    /// A rustls client config trusting the test CA (for raw-socket tests).
    pub(crate) fn rustls_client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// Starts the demo echo upstream on a free loopback port.
pub(crate) async fn start_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(flowgate::demo::serve_echo(listener));
    addr
}

/// A raw TLS (http/1.1) connection to the gateway, for requests an HTTP client library
/// would refuse or normalise.
pub(crate) async fn raw_tls(fx: &Fixture, gw: &Running) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(fx.rustls_client(&[b"http/1.1"]));
    connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap()
}

/// Reads one HTTP/1.1 message from `io`: its head, then as many body bytes as its
/// `content-length` declares (none without one). `None` when the stream ends first.
pub(crate) async fn read_message(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut message = Vec::new();
    let mut byte = [0u8; 1];
    while !message.ends_with(b"\r\n\r\n") {
        match io.read(&mut byte).await {
            Ok(1) => message.push(byte[0]),
            _ => return None,
        }
    }
    let length = String::from_utf8_lossy(&message)
        .to_ascii_lowercase()
        .lines()
        .find_map(|line| line.strip_prefix("content-length:").map(|value| value.trim().parse::<usize>().unwrap()))
        .unwrap_or(0);
    let head = message.len();
    message.resize(head + length, 0);
    io.read_exact(&mut message[head..]).await.ok()?;
    Some(message)
}

/// A running in-process gateway.
pub(crate) struct Running {
    pub gateway: Arc<Gateway>,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<()>,
}

impl Running {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.https.port(), path)
    }

    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Signals shutdown (SIGTERM's path) and waits for the server to return.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.done).await;
    }
}

impl Fixture {
    /// Writes `text` as `policy.toml` and starts the gateway on it (serving the issuer):
    /// the setup most tests share, usually with `text` from [`Fixture::policy_text`].
    pub(crate) async fn serve_policy(&self, text: &str) -> Running {
        let policy = self.write_policy(text);
        start_gateway_for(self, &policy).await
    }
}

/// Serves the fixture's issuer, compiles the policy file at `path` and serves it on the
/// ports it names (0 = any).
pub(crate) async fn start_gateway_for(fx: &Fixture, path: &Path) -> Running {
    fx.serve_issuer();
    start_gateway(path).await
}

/// Compiles the policy file at `path` and serves it on the ports it names (0 = any).
pub(crate) async fn start_gateway(path: &Path) -> Running {
    start_gateway_on(path, 0).await
}

/// As [`start_gateway`], served thread-per-core by `workers` worker threads (0: on the
/// test's runtime).
pub(crate) async fn start_gateway_on(path: &Path, workers: usize) -> Running {
    let policy = match flowgate::policy::load(path) {
        Ok(policy) => policy,
        Err(errors) => panic!("test policy refused: {errors:#?}"),
    };
    let listeners = if workers == 0 {
        Listeners::bind(&policy).await.unwrap()
    } else {
        Listeners::bind_workers(&policy, workers).await.unwrap()
    };
    let https = listeners.https_addr().unwrap();
    let admin = listeners.admin_addr().unwrap();
    let gateway = Gateway::new(policy, Some(path.to_path_buf())).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = gateway.clone();
    let done = tokio::spawn(async move {
        server::run(serving, listeners, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running { gateway, https, admin, stop: Some(stop), done }
}

/// One `[[trigger]]` to the echo upstream, open to the test tenant's users.
pub(crate) fn echo_trigger(name: &str, path: &str, echo: SocketAddr, extra: &str) -> String {
    format!(
        "[[trigger]]\nname = \"{name}\"\npath = \"{path}\"\nmethods = [\"POST\", \"GET\"]\n\
         upstream = \"http://{echo}/flows/{name}/invoke?api-version=1&sig=UPSTREAMSIG\"\n\
         who = \"tenant_users\"\nidentity = \"test\"\n{extra}\n"
    )
}

impl Fixture {
    /// A client trusting the test CA whose connections leave from `local` (a loopback
    /// source address such as 127.0.0.2) and whose `localhost` resolves to `target`,
    /// sending `Authorization: Bearer <token>` when a token is given.
    pub(crate) fn client_at(
        &self,
        http2: bool,
        token: Option<&str>,
        local: Option<std::net::IpAddr>,
        target: SocketAddr,
    ) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let cert = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let builder = reqwest::Client::builder()
            .tls_certs_only([cert])
            .default_headers(headers)
            .no_proxy()
            .resolve("localhost", target)
            .local_address(local);
        let builder = if http2 { builder } else { builder.http1_only() };
        builder.build().unwrap()
    }
}

/// The run records matching the admin API `query`, polled until at least `count` are
/// there (records are written when a response body ends) or a few seconds passed.
pub(crate) async fn runs_at_least(gw: &Running, query: &str, count: usize) -> Vec<serde_json::Value> {
    let mut last = Vec::new();
    for _ in 0..100 {
        last = reqwest::get(gw.admin_url(&format!("/runs?{query}"))).await.unwrap().json().await.unwrap();
        if last.len() >= count {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    last
}

/// The admin API's Prometheus text.
pub(crate) async fn metrics_text(gw: &Running) -> String {
    reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap()
}

/// An address on which nothing listens: a free port outside the ephemeral range, which no
/// other socket is given meanwhile (`ports`).
pub(crate) fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ports::free_port()))
}

/// One `[[trigger]]` to `upstream` (a full URL), open to the test tenant's users, plus `extra`.
pub(crate) fn trigger_to(name: &str, path: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[trigger]]\nname = \"{name}\"\npath = \"{path}\"\nmethods = [\"POST\", \"GET\"]\n\
         upstream = \"{upstream}\"\nwho = \"tenant_users\"\nidentity = \"test\"\n{extra}\n"
    )
}

/// Polls the admin API for the run record of request `id` (written when the body ends).
pub(crate) async fn run_record(gw: &Running, id: &str) -> serde_json::Value {
    for _ in 0..100 {
        let response = reqwest::get(gw.admin_url(&format!("/runs/{id}"))).await.unwrap();
        if response.status().is_success() {
            return response.json().await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no run record for {id}");
}
