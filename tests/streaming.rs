//! A 1 GiB body streams through the gateway (client → TLS h2 → gateway → h1 upstream)
//! with bounded memory. Its own test binary, so no other test shares the process's RSS.

mod common;

use common::Fixture;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[tokio::test]
async fn a_one_gib_body_streams_through_with_bounded_memory() {
    let fx = Fixture::new();
    let sink = start_sink().await;
    let total: u64 = 1024 * 1024 * 1024;
    let gw = fx
        .serve_policy(&fx.policy_text(&format!(
            "[[trigger]]\nname = \"big\"\npath = \"/big\"\nupstream = \"http://{sink}/sink\"\nwho = \"tenant_users\"\nidentity = \"test\"\nmax_body_bytes = {}\n",
            2 * total
        )))
        .await;
    let rss_before = rss_bytes();
    // Sample the peak while the body streams: the end value alone could hide a spike.
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let chunk = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    let count = total / chunk.len() as u64;
    let chunks = futures_util::stream::iter((0..count).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let response = fx.client(true).post(gw.url("/big")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let received: u64 = response.text().await.unwrap().trim().parse().unwrap();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(received, total);
    let growth = peak.load(Ordering::Relaxed).saturating_sub(rss_before);
    assert!(growth < 128 * 1024 * 1024, "memory grew by {growth} bytes for a {total}-byte body");
    gw.shutdown().await;
}

/// An upstream that reads the whole body and answers with its length.
async fn start_sink() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                    let mut body = request.into_body();
                    let mut total = 0u64;
                    while let Some(frame) = body.frame().await {
                        if let Ok(data) = frame.unwrap().into_data() {
                            total += data.len() as u64;
                        }
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(total.to_string()),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}
