//! flowgate's upstream connection pool on real sockets (`web/client.rs`): connections are
//! reused across calls, an upstream closing an idle keep-alive connection costs the next
//! call nothing, a request the upstream may have read is never sent twice, and an upstream
//! behind its own CA is reached over TLS with it (and refused without it).
//!
//! The upstream here is a raw HTTP/1.1 server counting accepted connections and requests,
//! so what the gateway did on the wire is visible. The tests run on one thread (the
//! default test runtime), so every call sees the same per-thread pool.

use crate::common::{Fixture, read_message, start_gateway_for, trigger_to};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// What the raw upstream does after reading a request.
#[derive(Clone, Copy)]
enum After {
    /// Answers 200 and keeps the connection open.
    Answer,
    /// Answers 200 (keep-alive), then closes the connection.
    AnswerThenClose,
    /// Answers the first request of a connection, closes on the second without answering.
    CloseOnSecond,
}

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

async fn serve_connection(mut io: impl AsyncRead + AsyncWrite + Unpin, after: After, seen: Arc<Seen>) {
    let mut served = 0;
    while read_message(&mut io).await.is_some() {
        seen.requests.fetch_add(1, Ordering::SeqCst);
        served += 1;
        if matches!(after, After::CloseOnSecond) && served == 2 {
            return;
        }
        if io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
            return;
        }
        let _ = io.flush().await;
        if matches!(after, After::AnswerThenClose) {
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// A raw upstream on loopback, plain or TLS (with `tls`).
async fn start_upstream(after: After, tls: Option<tokio_rustls::TlsAcceptor>) -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counted = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.connections.fetch_add(1, Ordering::SeqCst);
            let seen = counted.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve_connection(stream, after, seen).await;
                        }
                    }
                    None => serve_connection(tcp, after, seen).await,
                }
            });
        }
    });
    (addr, seen)
}

async fn gateway_to(fx: &Fixture, triggers: &str) -> crate::common::Running {
    let policy = fx.write_policy(&fx.policy_text(triggers));
    start_gateway_for(fx, &policy).await
}

async fn call(client: &reqwest::Client, url: &str) -> u16 {
    let response = client.post(url).body("{}").send().await.unwrap();
    let status = response.status().as_u16();
    // Read to the end: only then may the upstream connection be reused.
    let _ = response.bytes().await.unwrap();
    status
}

#[tokio::test]
async fn sequential_calls_reuse_one_upstream_connection() {
    let fx = Fixture::new();
    let (upstream, seen) = start_upstream(After::Answer, None).await;
    let gw = gateway_to(&fx, &trigger_to("t", "/t", &format!("http://{upstream}/x"), "")).await;
    let client = fx.client(false);
    for _ in 0..10 {
        assert_eq!(call(&client, &gw.url("/t")).await, 200);
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 10);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "every call opened its own upstream connection");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_does_not_fail_the_next_call() {
    let fx = Fixture::new();
    let (upstream, seen) = start_upstream(After::AnswerThenClose, None).await;
    let gw = gateway_to(&fx, &trigger_to("t", "/t", &format!("http://{upstream}/x"), "")).await;
    let client = fx.client(false);
    for round in 1..=5 {
        assert_eq!(call(&client, &gw.url("/t")).await, 200, "round {round}");
        // The close reaches the gateway while the connection sits idle in the pool.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 5, "a call was sent twice or lost");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 5);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_request_the_upstream_may_have_read_is_not_sent_again() {
    let fx = Fixture::new();
    let (upstream, seen) = start_upstream(After::CloseOnSecond, None).await;
    let gw = gateway_to(&fx, &trigger_to("t", "/t", &format!("http://{upstream}/x"), "")).await;
    let client = fx.client(false);
    assert_eq!(call(&client, &gw.url("/t")).await, 200);
    // The second call goes out on the pooled connection; the upstream reads it and
    // closes without answering. It may have acted on it: 502, never a second send.
    assert_eq!(call(&client, &gw.url("/t")).await, 502);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 2, "the read request was sent again");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_upstream_behind_its_own_ca_is_reached_with_it_and_refused_without() {
    let fx = Fixture::new();
    // The upstream's certificate comes from a CA of its own, not the gateway's.
    let pki = flowgate::tls::dev::DevPki::generate().unwrap();
    std::fs::write(fx.path().join("upstream-ca.crt"), &pki.ca_cert_pem).unwrap();
    let acceptor = {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes()).map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    };
    let (upstream, seen) = start_upstream(After::Answer, Some(acceptor)).await;
    let url = format!("https://localhost:{}/x", upstream.port());
    let triggers = format!(
        "{}{}",
        trigger_to("own", "/own", &url, "upstream_ca = \"upstream-ca.crt\""),
        trigger_to("plain", "/plain", &url, "")
    );
    let gw = gateway_to(&fx, &triggers).await;
    let client = fx.client(false);
    for _ in 0..3 {
        assert_eq!(call(&client, &gw.url("/own")).await, 200);
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "the TLS connection was not reused");
    // Same origin, without the CA: the handshake fails (no connection of the other pool
    // is borrowed), and the run record says so without naming the host.
    assert_eq!(call(&client, &gw.url("/plain")).await, 502);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
    let runs = crate::common::runs_at_least(&gw, "trigger=plain", 1).await;
    let reason = runs[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("upstream connect error (TLS: certificate refused)"), "{reason}");
    gw.shutdown().await;
}
