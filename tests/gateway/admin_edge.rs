//! The reload and admin edges over real sockets: client-certificate settings follow a
//! reload (a tightening one closes older connections), the admin listener refuses a `Host` it does not answer
//! to (DNS rebinding), and `POST /reload` refuses what a cross-site form can send.

use crate::common;

use common::{Fixture, Running, echo_trigger, start_echo, start_gateway_for};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client CA (PEM) and a client certificate with its key (one PEM) that it signed.
fn client_pki() -> (String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "test client CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "test client");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// A fresh client (its own connection) trusting the test CA, with an optional client
/// certificate.
fn fresh_client(fx: &Fixture, identity: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {}", fx.token()).parse().unwrap());
    let ca = reqwest::Certificate::from_pem(fx.ca_pem.as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder().tls_certs_only([ca]).default_headers(headers).no_proxy();
    if let Some(pem) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn client_certificate_settings_follow_a_reload_and_tightening_closes_older_connections() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let (client_ca, client_identity) = client_pki();
    std::fs::write(fx.path().join("clients.pem"), &client_ca).unwrap();
    let plain = fx.policy_text(&echo_trigger("t", "/t", echo, ""));
    let mutual = plain.replacen(
        "key = \"server.key\" }",
        "key = \"server.key\", client_ca = \"clients.pem\", client_auth = \"required\" }",
        1,
    );
    assert_ne!(plain, mutual, "the policy variant did not take");
    let path = fx.write_policy(&plain);
    let gw = start_gateway_for(&fx, &path).await;
    let opened_before = fx.client(true);
    assert_eq!(opened_before.post(gw.url("/t")).send().await.unwrap().status(), 200);

    std::fs::write(&path, &mutual).unwrap();
    gw.gateway.reload().expect("the mutual-TLS policy reloads");
    let refused = fresh_client(&fx, None).post(gw.url("/t")).send().await;
    assert!(refused.is_err(), "a new connection without a client certificate was served: {refused:?}");
    let with_cert = fresh_client(&fx, Some(&client_identity)).post(gw.url("/t")).send().await.unwrap();
    assert_eq!(with_cert.status(), 200);
    // The connection opened before the reload was admitted under the looser rule: the
    // tightening reload closes it, so its client's next call must show a certificate.
    let mut closed = false;
    for _ in 0..50 {
        if opened_before.post(gw.url("/t")).send().await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "a connection accepted before client certificates were required was still served");

    // And back: without client_ca, certificates are no longer asked for.
    std::fs::write(&path, &plain).unwrap();
    gw.gateway.reload().expect("the plain policy reloads");
    assert_eq!(fresh_client(&fx, None).post(gw.url("/t")).send().await.unwrap().status(), 200);
    gw.shutdown().await;
}

/// One raw HTTP/1.1 request to the admin listener; the answer's status and body.
async fn admin_raw(gw: &Running, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

async fn admin_gateway(fx: &Fixture, admin_extra: &str) -> Running {
    let echo = start_echo().await;
    let text = fx.policy_text(&echo_trigger("t", "/t", echo, "")).replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\n{admin_extra}\n"),
        1,
    );
    let policy = fx.write_policy(&text);
    start_gateway_for(fx, &policy).await
}

#[tokio::test]
async fn the_admin_listener_answers_only_its_own_host_names() {
    let fx = Fixture::new();
    let gw = admin_gateway(&fx, "allowed_hosts = [\"flowgate-admin.internal\"]").await;
    let port = gw.admin.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        format!("[::1]:{port}"),
        "127.0.0.7".to_owned(),
        format!("flowgate-admin.internal:{port}"),
        "Flowgate-Admin.Internal.".to_owned(),
    ] {
        let (status, body) = admin_raw(&gw, "GET", "/runs", &[("Host", &host)]).await;
        assert_eq!(status, 200, "Host: {host}: {body}");
    }
    // A page on attacker.example whose name was rebound to 127.0.0.1 reaches the listener
    // with its own name as Host: refused, for every endpoint.
    for path in ["/runs", "/policy", "/metrics", "/healthz"] {
        for host in [format!("attacker.example:{port}"), "localhost.attacker.example".to_owned()] {
            let (status, body) = admin_raw(&gw, "GET", path, &[("Host", &host)]).await;
            assert_eq!(status, 421, "{path} with Host: {host}: {body}");
            assert!(body.contains("request_id") && !body.contains("attacker"), "{body}");
        }
    }
    let (status, _) =
        admin_raw(&gw, "POST", "/reload", &[("Host", "rebound.example"), ("Content-Type", "application/json")]).await;
    assert_eq!(status, 421);
    gw.shutdown().await;
}

#[tokio::test]
async fn reload_refuses_what_a_cross_site_form_can_send() {
    let fx = Fixture::new();
    let gw = admin_gateway(&fx, "").await;
    let host = format!("127.0.0.1:{}", gw.admin.port());
    for content_type in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("text/plain"),
        Some("Text/Plain; charset=utf-8"),
    ] {
        let mut headers = vec![("Host", host.as_str())];
        if let Some(content_type) = content_type {
            headers.push(("Content-Type", content_type));
        }
        let (status, body) = admin_raw(&gw, "POST", "/reload", &headers).await;
        assert_eq!(status, 403, "{content_type:?}: {body}");
        assert!(body.contains("request_id"), "{body}");
    }
    // A page's fetch cannot send these without a CORS preflight, which the admin API never
    // grants.
    let accepted: [&[(&str, &str)]; 3] = [
        &[("Content-Type", "application/json")],
        &[("Content-Type", "application/json; charset=utf-8")],
        &[("X-Flowgate-Admin", "reload")],
    ];
    for extra in accepted {
        let mut headers = vec![("Host", host.as_str())];
        headers.extend_from_slice(extra);
        let (status, body) = admin_raw(&gw, "POST", "/reload", &headers).await;
        assert_eq!(status, 200, "{extra:?}: {body}");
    }
    // A browser names the page it runs on: another site's page is refused even with JSON.
    let (status, _) = admin_raw(
        &gw,
        "POST",
        "/reload",
        &[("Host", &host), ("Content-Type", "application/json"), ("Origin", "https://attacker.example")],
    )
    .await;
    assert_eq!(status, 403);
    // The way the README says to reload.
    let response = reqwest::Client::new()
        .post(gw.admin_url("/reload"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    gw.shutdown().await;
}

#[test]
fn an_admin_identity_on_a_plain_non_loopback_listener_is_warned_about() {
    let fx = Fixture::new();
    let text = fx.policy_text(&echo_trigger("t", "/t", "127.0.0.1:9".parse().unwrap(), ""));
    let check = |listen: &str, identity: bool| {
        let admin = format!(
            "[admin]\nlisten = \"{listen}\"\n{}",
            if identity { "identity = \"test\"\ntoken_roles = { viewer = [\"Flowgate.Viewer\"] }\n" } else { "" }
        );
        let path = fx.write_policy(&text.replacen("[admin]\nlisten = \"127.0.0.1:0\"\n", &admin, 1));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowgate")).arg("check").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let warned = check("0.0.0.0:9901", true);
    assert!(warned.contains("warning") && warned.contains("plain HTTP"), "{warned}");
    assert_eq!(check("127.0.0.1:9901", true), "", "loopback is not exposed");
    assert_eq!(check("0.0.0.0:9901", false), "", "without an identity no token crosses the network");
}
