//! The demo's development certificates satisfy strict clients: Python's default TLS
//! context with X.509 strict checking (Python 3.13's default; set explicitly on older
//! versions) against a listener serving them, and `openssl verify -x509_strict` (the
//! OpenSSL command line is a checker here only; the product links no OpenSSL). Material
//! written by older versions is renewed.

use crate::common;

use common::{Fixture, start_echo};
use std::process::Command;

/// What older versions of flowgate wrote into certs/: rcgen's defaults (no key
/// identifiers, no usages, valid from 1975 to 4096).
fn write_old_style(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let server = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("dev-ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("dev-server.crt"), server.pem()).unwrap();
    std::fs::write(dir.join("dev-server.key"), key.serialize_pem()).unwrap();
}

fn openssl_strict(ca: &std::path::Path, cert: &std::path::Path) -> std::process::Output {
    Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(ca)
        .arg(cert)
        .output()
        .expect("the openssl command line is needed as a checker: apt-get install -y openssl")
}

const STRICT_CLIENT: &str = "import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
# Python 3.13 sets these by default; older versions are told explicitly.
ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
with socket.create_connection(('127.0.0.1', int(sys.argv[2]))) as raw:
    with ctx.wrap_socket(raw, server_hostname=sys.argv[3]) as tls:
        print(tls.version())
";

#[tokio::test]
async fn the_development_certificate_satisfies_strict_clients_and_old_ones_are_renewed() {
    let fx = Fixture::new();
    let certs = fx.path().join("certs");
    write_old_style(&certs);
    let old = openssl_strict(&certs.join("dev-ca.crt"), &certs.join("dev-server.crt"));
    assert!(!old.status.success(), "the old-style certificate passed -x509_strict: the check proves nothing");

    let paths = flowgate::tls::dev::ensure_dev_certs(&certs).unwrap();
    let new = openssl_strict(&paths.ca_cert, &paths.server_cert);
    assert!(
        new.status.success(),
        "openssl verify -x509_strict: {}{}",
        String::from_utf8_lossy(&new.stdout),
        String::from_utf8_lossy(&new.stderr)
    );

    let echo = start_echo().await;
    let text = fx.policy_text(&common::echo_trigger("t", "/t", echo, "")).replacen(
        "cert = \"server.crt\", key = \"server.key\"",
        "cert = \"certs/dev-server.crt\", key = \"certs/dev-server.key\"",
        1,
    );
    let gw = fx.serve_policy(&text).await;
    let port = gw.https.port().to_string();
    for host in ["localhost", "127.0.0.1"] {
        let out = tokio::task::spawn_blocking({
            let (ca, port) = (paths.ca_cert.clone(), port.clone());
            move || {
                Command::new("python3")
                    .args(["-c", STRICT_CLIENT])
                    .arg(ca)
                    .args([port.as_str(), host])
                    .output()
                    .expect("python3 is needed as a strict TLS client")
            }
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "Python's strict client refused the development certificate for {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    gw.shutdown().await;
}
