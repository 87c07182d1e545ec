//! The network edge over real sockets, with real clients: every refusal reaches curl as a
//! status over h2 and h1; a pooled Python `http.client` keeps its connections through
//! 429s; an idle h2 connection is closed even while it answers PINGs; one address cannot
//! take every connection; a trickling body is closed within its bound; a malformed body
//! never reaches the upstream as a complete request.

use crate::common;

use common::{Fixture, Running, echo_trigger, metrics_text, raw_tls, start_echo, start_gateway_for, trigger_to};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `fx.policy_text(extra)` with `server` lines added to its `[server]` section.
fn policy_with_server(fx: &Fixture, server: &str, extra: &str) -> String {
    fx.policy_text(extra).replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
}

/// Everything a raw connection sends until it closes (or `limit` passes).
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> (String, bool) {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

fn need(tool: &str, how: &str) -> ! {
    panic!("this test needs `{tool}` on PATH; install it with: {how}")
}

/// One curl call; returns (exit code, HTTP status, HTTP version) as curl reports them.
async fn curl(
    fx: &Fixture,
    http2: bool,
    method: &str,
    url: &str,
    headers: &[String],
    body: &std::path::Path,
) -> (i32, String, String) {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-sS", "--cacert"])
        .arg(fx.path().join("ca.crt"))
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}", "-X", method, "--data-binary"])
        .arg(format!("@{}", body.display()));
    for header in headers {
        command.args(["-H", header]);
    }
    let Ok(output) = command.arg(url).output().await else { need("curl", "apt-get install curl") };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, version) = stdout.split_once(' ').unwrap_or((&stdout, ""));
    let code = output.status.code().unwrap_or(-1);
    if code != 0 {
        eprintln!("curl {method} {url}: {}", String::from_utf8_lossy(&output.stderr));
    }
    (code, status.to_owned(), version.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_reaches_curl_as_a_status_over_h2_and_h1() {
    // 400, 401, 403, 404, 405, 413, 429 and 431, each with a small and a large body.
    let fx = Fixture::new();
    let echo = start_echo().await;
    let triggers = [
        echo_trigger("open", "/open", echo, ""),
        echo_trigger("fenced", "/fenced", echo, "allow_ips = [\"10.0.0.0/8\"]"),
        echo_trigger("small", "/small", echo, "max_body_bytes = 16"),
        echo_trigger("limited", "/limited", echo, "rate_limit = { calls = 1, period = \"60s\" }"),
    ]
    .concat();
    let policy = fx.write_policy(&fx.policy_text(&format!("[limits]\nmax_header_bytes = 4096\n\n{triggers}")));
    let gw = start_gateway_for(&fx, &policy).await;
    // A typical flow payload (drained before the answer), and one too large for that.
    let body = fx.path().join("body.json");
    std::fs::write(&body, format!("{{\"payload\":\"{}\"}}", "x".repeat(2000))).unwrap();
    let large = fx.path().join("large.json");
    std::fs::write(&large, format!("{{\"payload\":\"{}\"}}", "x".repeat(1 << 20))).unwrap();
    let bearer = format!("authorization: Bearer {}", fx.token());
    let json = "content-type: application/json".to_owned();
    let big = format!("x-big: {}", "b".repeat(5000));

    // The one call the rate limit admits; every later call to /limited is refused.
    let (code, status, _) = curl(&fx, true, "POST", &gw.url("/limited"), std::slice::from_ref(&bearer), &body).await;
    assert_eq!((code, status.as_str()), (0, "200"));

    let cases: Vec<(&str, &str, &str, Vec<String>)> = vec![
        ("400", "POST", "/open/%2e%2e/open", vec![bearer.clone()]),
        ("401", "POST", "/open", vec![json.clone()]),
        ("403", "POST", "/fenced", vec![bearer.clone()]),
        ("404", "POST", "/nowhere", vec![bearer.clone()]),
        ("405", "PUT", "/open", vec![bearer.clone()]),
        ("413", "POST", "/small", vec![bearer.clone()]),
        ("429", "POST", "/limited", vec![bearer.clone()]),
        ("431", "POST", "/open", vec![bearer.clone(), big.clone()]),
    ];
    let mut failures = Vec::new();
    for http2 in [true, false] {
        let want_version = if http2 { "2" } else { "1.1" };
        for (want, method, path, headers) in &cases {
            for body in [&body, &large] {
                // The failure this guards against was intermittent: try each a few times.
                for attempt in 0..3 {
                    let (code, status, version) = curl(&fx, http2, method, &gw.url(path), headers, body).await;
                    if (code, status.as_str(), version.as_str()) != (0, *want, want_version) {
                        failures.push(format!(
                            "{method} {path} over HTTP/{want_version} with {} (attempt {attempt}): curl exit \
                             {code}, status {status}, version {version}; wanted {want}",
                            body.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    gw.shutdown().await;
}

const POOLED_CLIENT: &str = r#"
import http.client, json, ssl, sys, threading
port, token, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# Over 2,920 bytes, http.client sends the body in its own write, after the head.
payload = b'{"flow":"' + b"x" * 4000 + b'"}'
ctx = ssl.create_default_context(cafile=ca)
statuses, errors, lock = [], [], threading.Lock()
def worker(calls):
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
    for _ in range(calls):
        try:
            conn.request("POST", "/limited", body=payload,
                         headers={"authorization": "Bearer " + token, "content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            with lock:
                statuses.append(response.status)
        except Exception as e:
            with lock:
                errors.append(repr(e))
            conn.close()
            conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
    conn.close()
threads = [threading.Thread(target=worker, args=(210,)) for _ in range(10)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"ok": statuses.count(200), "limited": statuses.count(429),
                  "other": [s for s in statuses if s not in (200, 429)], "errors": errors}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_keep_alive_client_gets_every_429_as_a_status() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let trigger = echo_trigger("limited", "/limited", echo, "rate_limit = { calls = 2000, period = \"60s\" }");
    let policy = fx.write_policy(&fx.policy_text(&trigger));
    let gw = start_gateway_for(&fx, &policy).await;
    let output = tokio::process::Command::new("python3")
        .args(["-c", POOLED_CLIENT])
        .arg(gw.https.port().to_string())
        .arg(fx.token())
        .arg(fx.path().join("ca.crt"))
        .output()
        .await
        .unwrap_or_else(|_| need("python3", "apt-get install python3"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let errors = report["errors"].as_array().unwrap();
    assert!(errors.is_empty(), "{} calls failed on the connection, first: {:?}", errors.len(), errors.first());
    assert_eq!((report["ok"].as_u64(), report["limited"].as_u64()), (Some(2000), Some(100)), "{report}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_even_while_it_answers_pings() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let policy = fx.write_policy(
        &fx.policy_text(&format!("[limits]\nidle_timeout = \"1s\"\n\n{}", echo_trigger("open", "/open", echo, ""))),
    );
    let gw = start_gateway_for(&fx, &policy).await;

    let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(fx.rustls_client(&[b"h2"]))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    // The client answers the gateway's PINGs and sends its own every 200 ms: the connection
    // is alive at the transport level but carries no call.
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(200))
        .keep_alive_while_idle(true)
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(gw.url("/open"))
        .header("authorization", format!("Bearer {}", fx.token()))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    http_body_util::BodyExt::collect(response.into_body()).await.unwrap();

    let idle_since = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(8), connection).await;
    assert!(ended.is_ok(), "the idle h2 connection was still open after 8 s (idle_timeout 1 s)");
    assert!(idle_since.elapsed() >= Duration::from_millis(500), "closed before it was idle");
    gw.shutdown().await;
}

/// A TLS connection to the gateway from the loopback address `from`, or why there is none.
async fn tls_from(
    fx: &Fixture,
    gw: &Running,
    from: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    let tcp = socket.connect(gw.https).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(fx.rustls_client(&[b"http/1.1"]));
    let handshake = connector.connect("localhost".try_into().unwrap(), tcp);
    match tokio::time::timeout(Duration::from_secs(5), handshake).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".into()),
    }
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a counter sample: a whole, non-negative number"
)]
fn refused_per_ip(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("flowgate_connections_refused_total{reason=\"per_ip\"} "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let policy = fx.write_policy(&policy_with_server(
        &fx,
        "max_connections_per_ip = 2",
        &echo_trigger("open", "/open", echo, ""),
    ));
    let gw = start_gateway_for(&fx, &policy).await;
    let refused_before = refused_per_ip(&metrics_text(&gw).await);

    let first = tls_from(&fx, &gw, "127.0.0.1").await.expect("first connection");
    let _second = tls_from(&fx, &gw, "127.0.0.1").await.expect("second connection");
    let third = tls_from(&fx, &gw, "127.0.0.1").await;
    assert!(third.is_err(), "a third connection from 127.0.0.1 was accepted");

    // Another address still gets in and is served.
    let other = fx.client_at(false, Some(&fx.token()), Some("127.0.0.2".parse::<IpAddr>().unwrap()), gw.https);
    assert_eq!(other.post(gw.url("/open")).body("{}").send().await.unwrap().status(), 200);
    assert!(refused_per_ip(&metrics_text(&gw).await) > refused_before, "the refusal was not counted");

    // A closed connection gives its slot back.
    drop(first);
    let mut again = Err(String::new());
    for _ in 0..50 {
        again = tls_from(&fx, &gw, "127.0.0.1").await;
        if again.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_ok(), "the slot of a closed connection was not given back: {again:?}", again = again.err());
    gw.shutdown().await;
}

/// Sends `head` then the body one byte every 250 ms; returns the answer and when it ended.
async fn trickle(fx: &Fixture, gw: &Running, length: usize) -> (String, bool, Duration) {
    let started = Instant::now();
    let tls = raw_tls(fx, gw).await;
    let (mut read, mut write) = tokio::io::split(tls);
    let head = format!(
        "POST /open HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: {length}\r\n\r\n",
        fx.token()
    );
    write.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        for _ in 0..length {
            if write.write_all(b"x").await.is_err() || write.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let (answer, closed) = read_until_closed(&mut read, Duration::from_secs(20)).await;
    writer.abort();
    (answer, closed, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_closed_within_its_bound_while_others_are_served() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let policy = fx.write_policy(&policy_with_server(
        &fx,
        "body_read_timeout = \"2s\"",
        &echo_trigger("open", "/open", echo, ""),
    ));
    let gw = start_gateway_for(&fx, &policy).await;
    let client = fx.client(false);
    assert_eq!(client.post(gw.url("/open")).body("{}").send().await.unwrap().status(), 200);

    // One body small enough to be buffered, one large enough to stream to the upstream.
    let small = trickle(&fx, &gw, 1_000);
    let large = trickle(&fx, &gw, 1_000_000);
    let normal = async {
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            let started = Instant::now();
            let response = client.post(gw.url("/open")).body("{}").send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        slowest
    };
    let ((small, small_closed, small_took), (large, large_closed, large_took), slowest) =
        tokio::join!(small, large, normal);
    for (answer, closed, took) in [(small, small_closed, small_took), (large, large_closed, large_took)] {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        assert!(closed, "the connection stayed open");
        // 2 s of allowance (plus a few bytes' worth of rate): closed well before 10 s.
        assert!(took < Duration::from_secs(10), "closed only after {took:?}");
    }
    assert!(slowest < Duration::from_secs(1), "a normal call took {slowest:?} meanwhile");
    gw.shutdown().await;
}

/// What a counting upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    peer: SocketAddr,
    complete: bool,
    bytes: usize,
}

/// An upstream that records every request it sees (and whether its body arrived whole).
async fn start_counter() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let body = http_body_util::BodyExt::collect(request.into_body()).await;
                        let (complete, bytes) = match body {
                            Ok(collected) => (true, collected.to_bytes().len()),
                            Err(_) => (false, 0),
                        };
                        log.lock().unwrap().push(Seen { peer, complete, bytes });
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"counted"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_malformed_body_never_reaches_the_upstream_as_a_complete_request() {
    let fx = Fixture::new();
    let (counter, seen) = start_counter().await;
    let policy =
        fx.write_policy(&fx.policy_text(&trigger_to("count", "/count", &format!("http://{counter}/count"), "")));
    let gw = start_gateway_for(&fx, &policy).await;
    let head = format!(
        "POST /count HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        fx.token()
    );
    let chunk = |data: &[u8]| [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat();
    let big = vec![b'a'; 100 * 1024];
    // Chunk data longer than its declared size; a small body (buffered) and a large one
    // (streamed) that turns bad after 100 KiB; and a large one that ends early.
    let bodies: Vec<(&str, Vec<u8>, bool)> = vec![
        ("small, chunk longer than declared", b"3\r\nhello\r\n0\r\n\r\n".to_vec(), false),
        ("large, chunk longer than declared", [chunk(&big), b"3\r\nhello\r\n0\r\n\r\n".to_vec()].concat(), false),
        ("large, ends early", [chunk(&big), b"400\r\nshort".to_vec()].concat(), true),
    ];
    for (what, body, hang_up) in bodies {
        let mut tls = raw_tls(&fx, &gw).await;
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(&body).await.unwrap();
        tls.flush().await.unwrap();
        if hang_up {
            let _ = tls.shutdown().await;
        }
        let (answer, _) = read_until_closed(&mut tls, Duration::from_secs(10)).await;
        assert!(!answer.contains(" 200 "), "{what}: {answer}");
    }
    // Give the upstream time to record what it saw of the streamed ones.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let broken: Vec<Seen> = seen.lock().unwrap().clone();
    assert!(broken.iter().all(|s| !s.complete), "a malformed body reached the upstream whole: {broken:?}");
    assert!(broken.len() <= 2, "the small malformed body reached the upstream: {broken:?}");

    // The next call, on a fresh connection, is forwarded exactly once, over an upstream
    // connection that carried none of the aborted requests.
    let response = fx.client(false).post(gw.url("/count")).body("{\"fine\":true}").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "counted");
    let all = seen.lock().unwrap().clone();
    let fresh: Vec<&Seen> = all.iter().skip(broken.len()).collect();
    assert_eq!(fresh.len(), 1, "{all:?}");
    assert!(fresh[0].complete && fresh[0].bytes == 13, "{all:?}");
    assert!(broken.iter().all(|b| b.peer != fresh[0].peer), "an aborted upstream connection was reused: {all:?}");
    gw.shutdown().await;
}

/// A caller that stops sending a streaming body gets its 408 from `body_read_timeout`, even
/// when the upstream's `upstream_response_timeout` is shorter: the upstream is waiting for
/// the caller's bytes, which is not the upstream's fault (a 504 would blame it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_before_the_upstream_deadline_blames_the_upstream() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let policy = fx.write_policy(&policy_with_server(
        &fx,
        "body_read_timeout = \"3s\"",
        &format!("[limits]\nupstream_response_timeout = \"1s\"\n\n{}", echo_trigger("open", "/open", echo, "")),
    ));
    let gw = start_gateway_for(&fx, &policy).await;
    let tls = raw_tls(&fx, &gw).await;
    let (mut read, mut write) = tokio::io::split(tls);
    let head = format!(
        "POST /open HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 1000000\r\n\r\n",
        fx.token()
    );
    write.write_all(head.as_bytes()).await.unwrap();
    // More than `buffer_request_body` (64 KiB), so the body streams to the upstream; then
    // nothing more.
    write.write_all(&vec![b'x'; 100_000]).await.unwrap();
    write.flush().await.unwrap();
    let (answer, closed) = read_until_closed(&mut read, Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(closed, "the connection stayed open");
    drop(write);
    gw.shutdown().await;
}

/// An upstream that answers in HTTP/1.0 (and closes). A proxy answers in its own version
/// (RFC 9110 §6.2): the HTTP/1.1 caller gets `HTTP/1.1` and keeps its connection.
#[tokio::test]
async fn a_caller_gets_the_gateways_http_version_not_the_upstreams() {
    let fx = Fixture::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold").await;
            });
        }
    });
    let policy = fx.write_policy(&fx.policy_text(&trigger_to("old", "/old", &format!("http://{upstream}/"), "")));
    let gw = start_gateway_for(&fx, &policy).await;
    let mut tls = raw_tls(&fx, &gw).await;
    for round in 0..2 {
        let request = format!("GET /old HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n", fx.token());
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // One complete response: its head, then the body it announces (chunked here, since
        // the upstream's own length was "until close").
        while !answer.ends_with(b"0\r\n\r\n") && !answer.ends_with(b"old") {
            let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await.unwrap().unwrap();
            assert_ne!(n, 0, "round {round}: the connection closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "round {round}: {text}");
        assert!(!text.to_ascii_lowercase().contains("connection: close"), "round {round}: {text}");
    }
    gw.shutdown().await;
}
