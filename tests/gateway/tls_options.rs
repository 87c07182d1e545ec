//! The HTTPS listener's security options and the certificate rules `check` judges:
//! `client_ca` without `client_auth` refused with a hint, a certificate rule on a listener
//! that cannot receive certificates refused, each trigger's certificate rule printed,
//! `min_version = "1.3"` refusing a TLS 1.2 client, and a stapled OCSP response that
//! follows its file on reload.

use crate::common;

use common::{Fixture, echo_trigger, start_echo};
use std::process::Command;
use std::sync::{Arc, Mutex};

const BIN: &str = env!("CARGO_BIN_EXE_flowgate");

fn client_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

fn check(fx: &Fixture, text: &str) -> (bool, String, String) {
    let path = fx.write_policy(text);
    let out = Command::new(BIN).arg("check").arg(&path).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_refuses_unstated_client_auth_and_prints_certificate_rules() {
    let fx = Fixture::new();
    std::fs::write(fx.path().join("clients.pem"), client_ca_pem()).unwrap();
    let echo: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let triggers = [
        echo_trigger("t", "/t", echo, ""),
        "[[trigger]]\nname = \"c\"\npath = \"/c\"\nupstream = \"http://127.0.0.1:9/c\"\nwho = \"certificate\"\n\
         principals = [\"cert:subject:CN=billing,O=Contoso\"]\n"
            .to_owned(),
        echo_trigger("b", "/b", echo, "require_bound_token = true"),
    ]
    .concat();
    let with_ca = |client_auth: &str| {
        fx.policy_text(&triggers).replacen(
            "key = \"server.key\" }",
            &format!("key = \"server.key\", client_ca = \"clients.pem\"{client_auth} }}"),
            1,
        )
    };

    let (ok, _, stderr) = check(&fx, &with_ca(""));
    assert!(!ok, "client_ca without client_auth was accepted");
    assert!(stderr.contains("client_ca is set without client_auth"), "{stderr}");
    assert!(stderr.contains("hint: client_auth = \"required\""), "{stderr}");
    assert!(stderr.contains("policy.toml:3:"), "the error points at the tls line: {stderr}");

    let (ok, stdout, stderr) = check(&fx, &with_ca(", client_auth = \"optional\""));
    assert!(ok, "{stderr}");
    let line =
        |name: &str| stdout.lines().find(|l| l.starts_with(&format!("  {name}:"))).unwrap_or_default().to_owned();
    assert!(line("t").ends_with("| secrets: none"), "a trigger without a certificate rule prints none: {stdout}");
    assert!(
        line("c").contains(
            "who: a verified client certificate; certificate: required, one of cert:subject:CN=billing,O=Contoso"
        ),
        "{stdout}"
    );
    assert!(line("b").contains("certificate: required, any the client CA signed, token bound to it"), "{stdout}");

    // Without any way to receive a certificate, a certificate rule is refused.
    let (ok, _, stderr) = check(&fx, &fx.policy_text(&triggers));
    assert!(!ok);
    assert!(stderr.contains("no listener can receive one"), "{stderr}");
}

#[tokio::test]
async fn min_version_1_3_refuses_a_tls_1_2_client() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let text = fx.policy_text(&echo_trigger("t", "/t", echo, "")).replacen(
        "key = \"server.key\" }",
        "key = \"server.key\", min_version = \"1.3\" }",
        1,
    );
    let gw = fx.serve_policy(&text).await;
    let connect = |versions: &'static [&'static rustls::SupportedProtocolVersion]| {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(fx.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let addr = gw.https;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect("localhost".try_into().unwrap(), tcp).await
        }
    };
    static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    assert!(connect(TLS12_ONLY).await.is_err(), "a TLS 1.2 client was served");
    let tls13 = connect(TLS13_ONLY).await.expect("TLS 1.3 is served");
    assert_eq!(tls13.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    gw.shutdown().await;
}

/// Accepts the test server's certificate (checked by the inner verifier) and keeps the
/// OCSP response stapled to it.
#[derive(Debug)]
struct KeepsStaple {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    stapled: Arc<Mutex<Vec<u8>>>,
}

impl rustls::client::danger::ServerCertVerifier for KeepsStaple {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.stapled.lock().unwrap() = ocsp_response.to_vec();
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[tokio::test]
async fn the_ocsp_response_file_is_stapled_and_follows_reloads() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    // The server staples bytes as given: the operator's fetcher writes a real response.
    std::fs::write(fx.path().join("ocsp.der"), b"first OCSP response").unwrap();
    let text = fx.policy_text(&echo_trigger("t", "/t", echo, "")).replacen(
        "key = \"server.key\" }",
        "key = \"server.key\", ocsp = \"ocsp.der\" }",
        1,
    );
    let gw = fx.serve_policy(&text).await;
    let stapled = |fx: &Fixture, addr: std::net::SocketAddr| {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(fx.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(KeepsStaple { inner, stapled: seen.clone() }))
            .with_no_client_auth();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .expect("handshake");
            seen.lock().unwrap().clone()
        }
    };
    assert_eq!(stapled(&fx, gw.https).await, b"first OCSP response");
    std::fs::write(fx.path().join("ocsp.der"), b"refreshed OCSP response").unwrap();
    gw.gateway.reload_certificate().expect("the certificate and its OCSP response reload");
    assert_eq!(stapled(&fx, gw.https).await, b"refreshed OCSP response");
    gw.shutdown().await;
}
