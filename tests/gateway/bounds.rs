//! Every hold is bounded in time whether or not the peer reads, over real
//! sockets with adversarial peers: an h1 caller that never reads its response and an h2
//! caller holding a zero window are dropped within `send_timeout`, and their upstream
//! connections with them; one caller cannot hold more than `max_calls_per_principal`
//! calls; silent admin connections are closed and capped; a connection's `tcp_connection`
//! rate-limit keys leave with it.
//!
//! Bounds are small and configured; the only time assertions are generous upper bounds.

use crate::common;

use common::{Fixture, Running, echo_trigger, raw_tls, start_echo, start_gateway_for, trigger_to};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that answers every request with an endless body (1 GiB declared), written
/// as fast as its peer takes it. `open` counts its connections still open: a connection
/// leaves when a write fails, that is when the gateway let go of it.
async fn start_firehose() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        counter.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                    head.push(byte[0]);
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut ok = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n").await.is_ok();
                while ok {
                    ok = stream.write_all(&chunk).await.is_ok();
                }
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

/// Polls `done` every 50 ms for at most `limit`; true once it held.
async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// A gateway with `limits` in its `[limits]` section and one trigger `/big` to the firehose.
async fn gateway_to_firehose(fx: &Fixture, limits: &str, firehose: SocketAddr) -> Running {
    let trigger = trigger_to("big", "/big", &format!("http://{firehose}/big"), "");
    let policy = fx.write_policy(&fx.policy_text(&format!("[limits]\n{limits}\n\n{trigger}")));
    start_gateway_for(fx, &policy).await
}

/// Seed: 20 h1 calls held 150 s with `idle_timeout = "5s"`. A caller that sends requests
/// and never reads is dropped within `send_timeout`, and the upstream connections go with it.
#[tokio::test]
async fn an_h1_caller_that_never_reads_is_dropped_within_send_timeout() {
    let fx = Fixture::new();
    let (firehose, open) = start_firehose().await;
    let gw = gateway_to_firehose(&fx, "send_timeout = \"1s\"\nidle_timeout = \"60s\"", firehose).await;

    let mut callers = Vec::new();
    for _ in 0..5 {
        let mut tls = raw_tls(&fx, &gw).await;
        let head = format!("GET /big HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\r\n", fx.token());
        tls.write_all(head.as_bytes()).await.unwrap();
        callers.push(tls);
    }
    assert!(eventually(Duration::from_secs(10), || open.load(Ordering::SeqCst) == 5).await, "calls reached upstream");
    // Nobody reads. Within send_timeout and slack, every upstream connection is let go.
    assert!(
        eventually(Duration::from_secs(15), || open.load(Ordering::SeqCst) == 0).await,
        "{} upstream connections still held by callers that never read",
        open.load(Ordering::SeqCst)
    );
    // And the callers' connections are closed: reading now drains what was buffered, then ends.
    for mut tls in callers {
        let mut sink = vec![0u8; 1 << 16];
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match tls.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the caller's connection was still open");
    }
    gw.shutdown().await;
}

/// Seed: one h2 connection with a zero flow-control window held 200 streams and 200
/// upstream sockets while answering PINGs. The connection is dropped within `send_timeout`.
#[tokio::test]
async fn an_h2_caller_holding_a_zero_window_is_dropped_within_send_timeout() {
    let fx = Fixture::new();
    let (firehose, open) = start_firehose().await;
    let gw = gateway_to_firehose(&fx, "send_timeout = \"1s\"\nmax_streams_per_connection = 8", firehose).await;

    let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(fx.rustls_client(&[b"h2"]))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    // A zero stream window: the gateway may send heads but no body byte. The client keeps
    // the connection alive with PINGs.
    let (sender, connection) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .initial_stream_window_size(0)
        .keep_alive_interval(Duration::from_millis(200))
        .keep_alive_while_idle(true)
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut sender = sender.clone();
        let request = http::Request::get(gw.url("/big"))
            .header("authorization", format!("Bearer {}", fx.token()))
            .body(http_body_util::Empty::new())
            .unwrap();
        held.push(tokio::spawn(async move { sender.send_request(request).await.map(|r| (r.status(), r.into_body())) }));
    }
    assert!(eventually(Duration::from_secs(10), || open.load(Ordering::SeqCst) == 8).await, "calls reached upstream");
    let ended = tokio::time::timeout(Duration::from_secs(15), connection).await;
    assert!(ended.is_ok(), "the zero-window h2 connection was still open");
    assert!(
        eventually(Duration::from_secs(10), || open.load(Ordering::SeqCst) == 0).await,
        "{} upstream connections still held",
        open.load(Ordering::SeqCst)
    );
    drop(held);
    gw.shutdown().await;
}

/// One caller holding responses cannot take more than `max_calls_per_principal` calls;
/// its slots come back when its calls end.
#[tokio::test]
async fn one_caller_holds_at_most_max_calls_per_principal() {
    let fx = Fixture::new();
    let (firehose, open) = start_firehose().await;
    let gw = gateway_to_firehose(&fx, "max_calls_per_principal = 2\nsend_timeout = \"60s\"", firehose).await;

    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut tls = raw_tls(&fx, &gw).await;
        let head = format!("GET /big HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\r\n", fx.token());
        tls.write_all(head.as_bytes()).await.unwrap();
        holders.push(tls);
    }
    assert!(eventually(Duration::from_secs(10), || open.load(Ordering::SeqCst) == 2).await, "calls reached upstream");
    let third = fx.client(false).get(gw.url("/big")).send().await.unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["error"], "too_many_in_flight");
    assert_eq!(open.load(Ordering::SeqCst), 2, "the refused call never reached the upstream");

    drop(holders);
    assert!(eventually(Duration::from_secs(10), || gw.gateway.in_flight.callers() == 0).await, "slots given back");
    gw.shutdown().await;
}

/// Seed: 50 silent admin connections stayed open after 75 s. The admin listener closes a
/// silent connection within `header_read_timeout`, and takes at most `[admin] max_connections`.
#[tokio::test]
async fn silent_admin_connections_are_closed_and_capped() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let text = fx
        .policy_text(&format!("[limits]\nheader_read_timeout = \"1s\"\n\n{}", echo_trigger("open", "/open", echo, "")))
        .replacen("[admin]\n", "[admin]\nmax_connections = 3\n", 1);
    let gw = start_gateway_for(&fx, &fx.write_policy(&text)).await;

    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(gw.admin).await.unwrap());
    }
    // Past the cap, a fourth connection waits in the accept queue: it is not served.
    let mut fourth = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    fourth.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let mut answer = vec![0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(300), fourth.read(&mut answer)).await;
    assert!(early.is_err(), "a connection past the admin cap was served at once");

    // The silent ones are closed by the header timeout; then the fourth is served.
    for mut stream in silent {
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0) | Err(_))), "a silent admin connection stayed open");
    }
    let served = tokio::time::timeout(Duration::from_secs(10), fourth.read(&mut answer)).await;
    let n = served.expect("the waiting admin connection was never served").unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    gw.shutdown().await;
}

/// Seed: `tcp_connection` keys outlived their connections, so one address opening
/// connections filled the rule's key table and other callers got 503 `limiter_full`.
#[tokio::test]
async fn tcp_connection_keys_leave_with_their_connection() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger =
        echo_trigger("conn", "/conn", echo, "rate_limit = { calls = 5, period = \"600s\", key = \"tcp_connection\" }");
    let text = fx.policy_text(&format!("[cluster]\nlocal_max_keys = 16\n\n{trigger}"));
    let gw = start_gateway_for(&fx, &fx.write_policy(&text)).await;

    for _ in 0..40 {
        // A fresh client each time: a new connection, one call, then closed.
        let client = fx.client(false);
        let status = client.post(gw.url("/conn")).body("{}").send().await.unwrap().status();
        assert_eq!(status, 200, "a new connection was refused: the key table filled");
        drop(client);
    }
    assert!(
        eventually(Duration::from_secs(10), || gw.gateway.limiters.local_keys() == 0).await,
        "{} tcp_connection keys outlived their connections",
        gw.gateway.limiters.local_keys()
    );
    gw.shutdown().await;
}

/// Seed: `/ui/runs?limit=1000` parsed every listed record's capture tree (RSS 167 → 788 MB).
/// The page lists summaries, at most 200 of them, whatever `limit` asks.
#[tokio::test]
async fn the_runs_page_lists_at_most_its_cap_from_summaries() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = start_gateway_for(&fx, &fx.write_policy(&fx.policy_text(&echo_trigger("open", "/open", echo, "")))).await;
    for i in 0..260 {
        #[expect(clippy::disallowed_methods, reason = "records stamped as a running gateway stamps them")]
        let mut record =
            flowgate::audit::RunRecord::new(format!("r{i}"), std::time::SystemTime::now(), "POST", "/open");
        let json = serde_json::json!({ "payload": "x".repeat(4096) });
        record.capture = Some(flowgate::audit::Captured {
            request: Some(flowgate::audit::CapturedMessage::Captured {
                headers: std::collections::BTreeMap::new(),
                body: Some(flowgate::audit::CapturedBody::Json { json }),
            }),
            response: None,
        });
        gw.gateway.audit.write(record);
    }
    let page = reqwest::get(gw.admin_url("/ui/runs?limit=1000")).await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert_eq!(html.matches("<tr class=\"run\"").count(), 200, "rows listed");
    assert!(html.contains("at most 200"), "the page says its cap");
    assert!(!html.contains("xxxxxxxx"), "a list shows no capture");
    gw.shutdown().await;
}
