//! Client certificates as identities over real TLS, with certificates made here (rcgen):
//! a chain through an intermediate, each `cert:` principal form admitted and refused, an
//! expired certificate, another CA's, one not for client authentication, RFC 8705 tokens
//! bound to this or another certificate, the proxy's forwarded-certificate header from a
//! trusted and an untrusted address, the run record's certificate field, HSTS, and a
//! reload that tightens `client_auth` closing older connections.

use crate::common;

use common::{Fixture, Running, runs_at_least, start_echo};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use sha2::Digest;

/// A CA that signs client certificates (and, for the chain, an intermediate CA).
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
}

impl Ca {
    fn intermediate(&self, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }
}

/// A client certificate: the identity PEM reqwest wants (leaf, chain, key) and the
/// leaf's DER.
struct Client {
    identity: String,
    der: Vec<u8>,
}

impl Client {
    fn sha256_hex(&self) -> String {
        hex::encode(sha2::Sha256::digest(&self.der))
    }

    fn x5t_s256(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&self.der))
    }
}

/// `CN=billing,O=Contoso` with `spiffe://contoso/billing`, signed by `by` (its PEM chain
/// `chain` sent along), after `edit`.
fn client_cert(by: &Ca, chain: &str, cn: &str, edit: impl FnOnce(&mut CertificateParams)) -> Client {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "Contoso");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = vec![SanType::URI(format!("spiffe://contoso/{cn}").try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    edit(&mut params);
    let cert = params.signed_by(&key, &by.issuer).unwrap();
    Client { identity: format!("{}{chain}{}", cert.pem(), key.serialize_pem()), der: cert.der().to_vec() }
}

/// A client of its own (one connection each) trusting the test server CA, from `local`,
/// with a certificate and a token when given.
fn client(fx: &Fixture, gw: &Running, cert: Option<&Client>, token: Option<&str>, local: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let server_ca = reqwest::Certificate::from_pem(fx.ca_pem.as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([server_ca])
        .default_headers(headers)
        .no_proxy()
        .http1_only()
        .resolve("localhost", gw.https)
        .local_address(Some(local.parse().unwrap()));
    if let Some(cert) = cert {
        builder = builder.identity(reqwest::Identity::from_pem(cert.identity.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// Status of a POST to `path`, or `None` when the handshake (or connection) failed.
async fn status(client: &reqwest::Client, gw: &Running, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
    let mut request = client.post(gw.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.ok().map(|r| r.status().as_u16())
}

fn trigger(name: &str, echo: std::net::SocketAddr, rules: &str) -> String {
    format!(
        "[[trigger]]\nname = \"{name}\"\npath = \"/{name}\"\nmethods = [\"POST\"]\n\
         upstream = \"http://{echo}/flows/{name}\"\n{rules}\n"
    )
}

struct Setup {
    fx: Fixture,
    gw: Running,
    root: Ca,
    chain: String,
    billing: Client,
}

/// A gateway asking for client certificates of a root CA, believing an Envoy XFCC
/// header from 127.0.0.2 only, with one trigger per rule.
async fn setup() -> Setup {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let root = ca("test client root");
    let intermediate = root.intermediate("test client intermediate");
    let chain = intermediate.pem.clone();
    let billing = client_cert(&intermediate, &chain, "billing", |_| {});
    std::fs::write(fx.path().join("clients.pem"), &root.pem).unwrap();
    let triggers = [
        trigger("cert-any", echo, "who = \"certificate\""),
        trigger(
            "cert-sha",
            echo,
            &format!("who = \"certificate\"\nprincipals = [\"cert:sha256:{}\"]", billing.sha256_hex()),
        ),
        trigger("cert-subject", echo, "who = \"certificate\"\nprincipals = [\"cert:subject:CN=billing,O=Contoso\"]"),
        trigger("cert-uri", echo, "who = \"certificate\"\nprincipals = [\"cert:san-uri:spiffe://contoso/billing\"]"),
        trigger("both", echo, "who = \"tenant_users\"\nidentity = \"test\"\nrequire_certificate = true"),
        trigger(
            "both-listed",
            echo,
            "who = \"tenant_users\"\nidentity = \"test\"\nprincipals = [\"cert:subject:CN=billing,O=Contoso\"]",
        ),
        trigger("bound", echo, "who = \"tenant_users\"\nidentity = \"test\"\nrequire_bound_token = true"),
        trigger("token", echo, "who = \"tenant_users\"\nidentity = \"test\""),
    ]
    .concat();
    let text = fx.policy_text(&triggers).replacen(
        "key = \"server.key\" }",
        "key = \"server.key\", client_ca = \"clients.pem\", client_auth = \"optional\" }\n\
             trusted_proxies = [\"127.0.0.2/32\"]\n\
             forwarded_client_cert = { header = \"x-forwarded-client-cert\", format = \"xfcc\" }\n\
             hsts = { max_age = \"365days\", include_subdomains = true }",
        1,
    );
    let gw = fx.serve_policy(&text).await;
    Setup { fx, gw, root, chain, billing }
}

#[tokio::test]
async fn each_certificate_principal_form_admits_its_certificate_and_refuses_others() {
    let Setup { fx, gw, root, chain, billing } = setup().await;
    let intermediate_signed = |cn: &str| {
        // Another certificate of the same chain: same CA, another name.
        let intermediate = root.intermediate("test client intermediate 2");
        let chain = intermediate.pem.clone();
        client_cert(&intermediate, &chain, cn, |_| {})
    };
    let payroll = intermediate_signed("payroll");
    let direct = client_cert(&root, "", "billing", |_| {});
    let _ = chain;

    let with = |cert: &Client| client(&fx, &gw, Some(cert), None, "127.0.0.1");
    // The billing certificate, through an intermediate, passes every form naming it.
    for path in ["/cert-any", "/cert-sha", "/cert-subject", "/cert-uri"] {
        assert_eq!(status(&with(&billing), &gw, path, &[]).await, Some(200), "{path}");
    }
    // Payroll: a certificate of the same root, named by none but `cert-any`.
    assert_eq!(status(&with(&payroll), &gw, "/cert-any", &[]).await, Some(200));
    for path in ["/cert-sha", "/cert-subject", "/cert-uri"] {
        assert_eq!(status(&with(&payroll), &gw, path, &[]).await, Some(403), "{path}");
    }
    // Same subject and URI signed directly by the root: the thumbprint tells them apart.
    assert_eq!(status(&with(&direct), &gw, "/cert-subject", &[]).await, Some(200));
    assert_eq!(status(&with(&direct), &gw, "/cert-sha", &[]).await, Some(403));
    // No certificate: 403 certificate_required, never the upstream.
    let anonymous = client(&fx, &gw, None, None, "127.0.0.1");
    assert_eq!(status(&anonymous, &gw, "/cert-any", &[]).await, Some(403));

    let runs = runs_at_least(&gw, "trigger=cert-sha&limit=100", 4).await;
    let refused = runs.iter().find(|r| r["decision"] == "certificate_forbidden").expect("a refusal recorded");
    assert_eq!(refused["reason"], "client certificate not listed");
    let admitted = runs.iter().find(|r| r["decision"] == "allowed").expect("an admission recorded");
    let shown = admitted["certificate"].as_str().unwrap();
    assert_eq!(shown, format!("sha256:{} CN=billing,O=Contoso", billing.sha256_hex()));
    assert_eq!(admitted["principal"], format!("cert:sha256:{}", billing.sha256_hex()));
    let text = serde_json::to_string(&runs).unwrap();
    assert!(!text.contains("BEGIN CERTIFICATE") && !text.contains("MII"), "a certificate reached the run history");
    let missing = runs_at_least(&gw, "trigger=cert-any&decision=certificate_required", 1).await;
    assert_eq!(missing[0]["status"], 403);
    gw.shutdown().await;
}

#[tokio::test]
async fn expired_foreign_and_non_client_certificates_are_refused() {
    let Setup { fx, gw, root, chain: _, billing: _ } = setup().await;
    let expired = client_cert(&root, "", "billing", |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let other_ca = ca("another CA");
    let foreign = client_cert(&other_ca, "", "billing", |_| {});
    let server_usage = client_cert(&root, "", "billing", |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    let no_usage = client_cert(&root, "", "billing", |p| p.extended_key_usages.clear());
    let with = |cert: &Client| client(&fx, &gw, Some(cert), None, "127.0.0.1");
    // The handshake refuses what rustls can judge: expiry, another CA, a usage that
    // excludes client authentication.
    assert_eq!(status(&with(&expired), &gw, "/cert-any", &[]).await, None, "expired");
    assert_eq!(status(&with(&foreign), &gw, "/cert-any", &[]).await, None, "another CA");
    assert_eq!(status(&with(&server_usage), &gw, "/cert-any", &[]).await, None, "serverAuth only");
    // A certificate without any extended key usage passes the handshake, but names no
    // caller: refused wherever a certificate is needed, ignored elsewhere.
    assert_eq!(status(&with(&no_usage), &gw, "/cert-any", &[]).await, Some(403));
    let with_token = client(&fx, &gw, Some(&no_usage), Some(&fx.token()), "127.0.0.1");
    assert_eq!(status(&with_token, &gw, "/token", &[]).await, Some(200));
    let runs = runs_at_least(&gw, "trigger=cert-any&decision=certificate_required", 1).await;
    assert!(runs[0]["reason"].as_str().unwrap().contains("clientAuth"), "{:?}", runs[0]);
    gw.shutdown().await;
}

#[tokio::test]
async fn certificates_and_tokens_together_and_rfc8705_bound_tokens() {
    let Setup { fx, gw, root, chain: _, billing } = setup().await;
    let other = client_cert(&root, "", "payroll", |_| {});
    let token = fx.token();
    let bound_to_billing = fx.token_with(|o| o.cnf_x5t_s256 = Some(billing.x5t_s256()));
    let call = |cert: Option<&Client>, token: &str| client(&fx, &gw, cert, Some(token), "127.0.0.1");

    // require_certificate: both, never either.
    assert_eq!(status(&call(Some(&billing), &token), &gw, "/both", &[]).await, Some(200));
    assert_eq!(status(&call(None, &token), &gw, "/both", &[]).await, Some(403));
    let cert_only = client(&fx, &gw, Some(&billing), None, "127.0.0.1");
    assert_eq!(status(&cert_only, &gw, "/both", &[]).await, Some(401));
    // cert: principals beside a token rule.
    assert_eq!(status(&call(Some(&billing), &token), &gw, "/both-listed", &[]).await, Some(200));
    assert_eq!(status(&call(Some(&other), &token), &gw, "/both-listed", &[]).await, Some(403));

    // Bound tokens: with its own certificate, admitted; with another, or none, 401
    // invalid_token, on every trigger (a binding is honoured even where not required).
    assert_eq!(status(&call(Some(&billing), &bound_to_billing), &gw, "/bound", &[]).await, Some(200));
    assert_eq!(status(&call(Some(&billing), &bound_to_billing), &gw, "/token", &[]).await, Some(200));
    for (cert, path) in [(Some(&other), "/bound"), (Some(&other), "/token"), (None, "/token")] {
        let response = call(cert, &bound_to_billing).post(gw.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains("invalid_token"), "{challenge}");
    }
    // require_bound_token: an unbound token is refused even with a certificate.
    assert_eq!(status(&call(Some(&billing), &token), &gw, "/bound", &[]).await, Some(401));
    let runs = runs_at_least(&gw, "trigger=bound&decision=unauthenticated", 2).await;
    let reasons: Vec<&str> = runs.iter().filter_map(|r| r["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("another certificate")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("not bound")), "{reasons:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_forwarded_certificate_header_counts_only_from_a_trusted_proxy() {
    let Setup { fx, gw, root: _, chain: _, billing } = setup().await;
    let hash = billing.sha256_hex();
    let xfcc = format!(
        "Hash={};Subject=\"CN=mallory,O=Contoso\",By=spiffe://lb;Hash={hash};Subject=\"CN=billing,O=Contoso\";URI=spiffe://contoso/billing",
        "ab".repeat(32)
    );
    let header = [("x-forwarded-client-cert", xfcc.as_str())];
    // From the trusted proxy (127.0.0.2) the rightmost element is the caller's certificate.
    let proxy = client(&fx, &gw, None, None, "127.0.0.2");
    for path in ["/cert-sha", "/cert-subject", "/cert-uri"] {
        assert_eq!(status(&proxy, &gw, path, &header).await, Some(200), "{path}");
    }
    // The header never reaches the upstream, in any spelling.
    let echoed: serde_json::Value = proxy
        .post(gw.url("/cert-any"))
        .header("x-forwarded-client-cert", xfcc.as_str())
        .header("x_forwarded_client_cert", "Hash=00")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let upstream_headers = echoed.to_string().to_ascii_lowercase();
    assert!(!upstream_headers.contains("forwarded-client-cert"), "{echoed}");
    assert!(!upstream_headers.contains("forwarded_client_cert"), "{echoed}");
    // An unreadable header from the trusted proxy is refused, not guessed at.
    assert_eq!(status(&proxy, &gw, "/cert-any", &[("x-forwarded-client-cert", "Hash=\"open")]).await, Some(400));
    // The same header from anyone else is ignored: no certificate.
    let caller = client(&fx, &gw, None, None, "127.0.0.1");
    assert_eq!(status(&caller, &gw, "/cert-sha", &header).await, Some(403));
    let runs = runs_at_least(&gw, "trigger=cert-sha&limit=100", 4).await;
    let from_caller = runs.iter().find(|r| r["client_ip"] == "127.0.0.1").expect("the caller's call");
    assert_eq!(from_caller["decision"], "certificate_required");
    let from_proxy = runs.iter().find(|r| r["client_ip"] == "127.0.0.2").expect("the proxy's call");
    assert_eq!(from_proxy["certificate"], format!("sha256:{hash} CN=billing,O=Contoso"));
    gw.shutdown().await;
}

#[tokio::test]
async fn https_answers_carry_hsts() {
    let Setup { fx, gw, .. } = setup().await;
    let response = client(&fx, &gw, None, Some(&fx.token()), "127.0.0.1").post(gw.url("/token")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["strict-transport-security"], "max-age=31536000; includeSubDomains");
    let refused = client(&fx, &gw, None, None, "127.0.0.1").post(gw.url("/token")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("strict-transport-security"), "refusals carry it too");
    gw.shutdown().await;
}
