//! Shared fixtures of the auth integration tests: keys generated at test time, raw token
//! signing (so tests can sign deliberately broken headers and payloads), a JWKS server on
//! 127.0.0.1:0 that can be taken down, and a manual clock.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods, reason = "tokens are checked by a gateway that runs on the real clock")]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use flowgate::clock::Clock;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// A signing key and its public JWK.
pub(crate) struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
    pub public_pem: String,
}

impl TestKey {
    pub(crate) fn rsa(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
        let encoding = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).unwrap();
        Self::finish(Algorithm::RS256, kid, encoding, pair.public_key_pem())
    }

    pub(crate) fn ec(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        Self::finish(Algorithm::ES256, kid, encoding, pair.public_key_pem())
    }

    fn finish(alg: Algorithm, kid: &str, encoding: EncodingKey, public_pem: String) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::from(alg));
        Self { alg, kid: kid.to_owned(), encoding, jwk, public_pem }
    }

    /// A token with this key's alg and kid over the given claims.
    pub(crate) fn token(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": format!("{:?}", self.alg), "kid": self.kid, "typ": "JWT"});
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    /// Signs raw header and payload JSON text (which may be deliberately invalid).
    pub(crate) fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        self.sign_input(&input)
    }

    /// Signs an already encoded `header.payload`.
    pub(crate) fn sign_input(&self, input: &str) -> String {
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.alg).unwrap();
        format!("{input}.{signature}")
    }
}

pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn jwks(keys: &[&TestKey]) -> String {
    serde_json::to_string(&JwkSet { keys: keys.iter().map(|k| k.jwk.clone()).collect() }).unwrap()
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The library's manual clock (`flowgate::clock::ManualClock`), read and moved in whole
/// seconds as token claims are.
#[derive(Debug)]
pub(crate) struct ManualClock(flowgate::clock::ManualClock);

impl ManualClock {
    pub(crate) fn at(secs: u64) -> Arc<Self> {
        Arc::new(Self(flowgate::clock::ManualClock::starting_at(std::time::Duration::from_secs(secs))))
    }
    pub(crate) fn advance(&self, secs: u64) {
        self.0.advance(std::time::Duration::from_secs(secs));
    }
    pub(crate) fn secs(&self) -> u64 {
        self.0.unix_time().as_secs()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> std::time::Duration {
        self.0.now()
    }
    fn unix_time(&self) -> std::time::Duration {
        self.0.unix_time()
    }
}

/// A JWKS endpoint on 127.0.0.1:0 whose body can change and which can go down (500).
pub(crate) struct JwksServer {
    pub addr: SocketAddr,
    body: Arc<Mutex<String>>,
    up: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    scheme: &'static str,
}

/// A test CA and a server certificate for 127.0.0.1 / localhost that it issued.
pub(crate) struct TestCa {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub(crate) fn generate() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "flowgate auth test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![leaf.der().clone()], key)
                .unwrap();
        Self { ca_pem: ca_cert.pem(), server_config: Arc::new(config) }
    }
}

impl JwksServer {
    pub(crate) async fn start(body: String) -> Self {
        Self::start_with(body, None).await
    }

    /// The same over HTTPS, with a certificate for 127.0.0.1 issued by the returned test CA.
    pub(crate) async fn start_tls(body: String) -> (Self, TestCa) {
        let ca = TestCa::generate();
        let server = Self::start_with(body, Some(tokio_rustls::TlsAcceptor::from(Arc::clone(&ca.server_config)))).await;
        (server, ca)
    }

    async fn start_with(body: String, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(body));
        let up = Arc::new(AtomicBool::new(true));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, u, h) = (Arc::clone(&body), Arc::clone(&up), Arc::clone(&hits));
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (b, u, h) = (Arc::clone(&b), Arc::clone(&u), Arc::clone(&h));
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let mut response = http::Response::new(Full::new(Bytes::from(b.lock().unwrap().clone())));
                        if !u.load(Ordering::SeqCst) {
                            *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        response.headers_mut().insert("cache-control", "public, max-age=600".parse().unwrap());
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Self { addr, body, up, hits, scheme }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}://{}/jwks", self.scheme, self.addr)
    }
    pub(crate) fn set_body(&self, body: String) {
        *self.body.lock().unwrap() = body;
    }
    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Request parts for `uri`, with a bearer token when given.
pub(crate) fn request(uri: &str, token: Option<&str>) -> http::request::Parts {
    let mut builder = http::Request::builder().method("POST").uri(uri);
    if let Some(token) = token {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(()).unwrap().into_parts().0
}
