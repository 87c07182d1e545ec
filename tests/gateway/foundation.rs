//! The foundation over real sockets and real TLS: h1 and h2 proxying, streaming,
//! header hygiene, each error status, slow clients, reload, and graceful shutdown.

use crate::common;

use common::{Fixture, echo_trigger, raw_tls, read_message, start_echo, start_gateway_for};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn h1_and_h2_both_proxy_and_carry_a_request_id() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = fx.serve_policy(&fx.policy_text(&echo_trigger("t", "/t", echo, ""))).await;
    for (http2, version) in [(false, reqwest::Version::HTTP_11), (true, reqwest::Version::HTTP_2)] {
        let response = fx.client(http2).post(gw.url("/t?x=1&sig=caller")).body("{}").send().await.unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let echoed: serde_json::Value = response.json().await.unwrap();
        assert_eq!(echoed["path"], "/flows/t/invoke");
        assert_eq!(echoed["headers"]["x-request-id"], id.as_str());
        assert_eq!(echoed["headers"]["host"], format!("{echo}"));
        assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
        // The upstream's own `sig` wins; the caller's extra parameter is appended once.
        assert_eq!(echoed["query_names"], serde_json::json!(["api-version", "sig", "x"]));
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_and_forged_headers_are_not_forwarded() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = fx.serve_policy(&fx.policy_text(&echo_trigger("t", "/t", echo, ""))).await;
    let response = fx
        .client(false)
        .post(gw.url("/t"))
        .header("connection", "x-hop-named")
        .header("x-hop-named", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eA==")
        .header("te", "trailers")
        .header("x-forwarded-for", "6.6.6.6")
        .header("cookie", "a=b")
        .header("x-kept", "yes")
        .body("{}")
        .send()
        .await
        .unwrap();
    let echoed: serde_json::Value = response.json().await.unwrap();
    let headers = echoed["headers"].as_object().unwrap();
    for gone in ["x-hop-named", "keep-alive", "proxy-authorization", "te", "authorization", "cookie", "connection"] {
        assert!(!headers.contains_key(gone), "{gone} reached the upstream: {headers:?}");
    }
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(headers.contains_key("x-kept"));
    gw.shutdown().await;
}

#[tokio::test]
async fn each_error_status_happens_when_it_should() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let triggers = format!(
        "{}{}{}",
        echo_trigger("ok", "/ok", echo, "max_body_bytes = 1000\nupstream_response_timeout = \"300ms\""),
        format_args!(
            "[[trigger]]\nname = \"down\"\npath = \"/down\"\nupstream = \"http://{closed}/x\"\nwho = \"tenant_users\"\nidentity = \"test\"\n"
        ),
        "",
    );
    let gw = fx.serve_policy(&fx.policy_text(&format!("[limits]\nmax_header_bytes = 4096\n\n{triggers}"))).await;
    let client = fx.client(false);
    let status = |r: reqwest::Response| r.status().as_u16();

    // 404, 405, a declared 413 and 431 need no socket: `admission::refusals_before_the_upstream_have_their_status`.
    // Streamed (chunked, no length) too large: refused while streaming.
    let chunks = futures_util::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 100])));
    let r = client.post(gw.url("/ok")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(status(client.post(gw.url("/down")).send().await.unwrap()), 502);
    let r = client.post(gw.url("/ok?delay_ms=2000")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let body = r.text().await.unwrap();
    assert!(body.contains("request_id") && !body.contains("127.0.0.1"), "internals leaked: {body}");
    gw.shutdown().await;
}

#[tokio::test]
async fn malformed_http_gets_400() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = fx.serve_policy(&fx.policy_text(&echo_trigger("t", "/t", echo, ""))).await;
    let mut tls = raw_tls(&fx, &gw).await;
    tls.write_all(b"THIS IS NOT HTTP\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_slow_header_client_is_dropped_while_others_are_served() {
    let fx = Fixture::new();
    let gw = with_a_one_second_head_wait(&fx).await;
    let mut slow = raw_tls(&fx, &gw).await;
    slow.write_all(SLOW_HEAD).await.unwrap();
    // Meanwhile a normal client is served.
    let ok = fx.client(false).post(gw.url("/t")).body("{}").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    // The slow client is cut off: its read ends (EOF or a 408) instead of hanging.
    assert_cut_off(&mut slow, "the slow client was never disconnected").await;
    gw.shutdown().await;
}

/// A request head that never ends.
const SLOW_HEAD: &[u8] = b"POST /t HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";

/// A gateway with one echo trigger, `/t`, whose connections may wait one second for a head.
async fn with_a_one_second_head_wait(fx: &Fixture) -> common::Running {
    let echo = start_echo().await;
    fx.serve_policy(
        &fx.policy_text(&format!("[limits]\nheader_read_timeout = \"1s\"\n\n{}", echo_trigger("t", "/t", echo, ""))),
    )
    .await
}

/// The connection ends (EOF or an error answer) within 15 s, and answers no call on it.
async fn assert_cut_off(stream: &mut (impl tokio::io::AsyncRead + Unpin), never: &str) {
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "{never}");
    let text = String::from_utf8_lossy(&rest);
    assert!(!text.contains("200 OK"), "{text}");
}

/// Seed: a keep-alive caller whose first call completes, then trickles its next head. The
/// wait for a head counts from the end of the last call, on every request of the
/// connection, not only the first.
#[tokio::test]
async fn a_keep_alive_client_trickling_its_next_head_is_dropped() {
    let fx = Fixture::new();
    let gw = with_a_one_second_head_wait(&fx).await;
    let mut tls = raw_tls(&fx, &gw).await;
    let first_call = format!(
        "POST /t HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 2\r\n\r\n{{}}",
        fx.token()
    );
    tls.write_all(first_call.as_bytes()).await.unwrap();
    // The first answer, whole: its head, then as many body bytes as it declares.
    let first = tokio::time::timeout(Duration::from_secs(10), read_message(&mut tls))
        .await
        .unwrap()
        .expect("the connection closed before the first answer");
    assert!(String::from_utf8_lossy(&first).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&first));
    // Then the next head starts, and never ends: the connection must be cut off.
    tls.write_all(SLOW_HEAD).await.unwrap();
    assert_cut_off(&mut tls, "a keep-alive client trickling its second head was never disconnected").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn reload_swaps_good_policies_and_refuses_broken_ones() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let path = fx.write_policy(&fx.policy_text(&echo_trigger("a", "/a", echo, "")));
    let gw = start_gateway_for(&fx, &path).await;
    let _watcher = flowgate::reload::watch_files(gw.gateway.clone(), &path).unwrap();
    let client = fx.client(false);
    assert_eq!(client.post(gw.url("/b")).send().await.unwrap().status(), 404);

    // A good edit on disk is picked up by the file watch.
    std::fs::write(
        &path,
        fx.policy_text(&format!("{}{}", echo_trigger("a", "/a", echo, ""), echo_trigger("b", "/b", echo, ""))),
    )
    .unwrap();
    let mut status = 0;
    for _ in 0..100 {
        status = client.post(gw.url("/b")).send().await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the new trigger never appeared");
    let version = gw.gateway.policy().version.clone();

    // A broken edit is refused with located errors; the running policy stays.
    std::fs::write(
        &path,
        fx.policy_text(&format!("{}\n[[trigger]]\nname = \"c\"\npaht = \"/c\"\n", echo_trigger("a", "/a", echo, ""))),
    )
    .unwrap();
    let errors = gw.gateway.reload().unwrap_err();
    assert!(errors[0].to_string().contains("policy.toml:"), "{}", errors[0]);
    assert!(errors[0].hint.as_deref().unwrap_or("").contains("path"), "{:?}", errors[0]);
    assert_eq!(gw.gateway.policy().version, version);
    assert_eq!(client.post(gw.url("/b")).send().await.unwrap().status(), 200);
    let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("flowgate_policy_reloads_total{result=\"failed\"}"), "{metrics}");
    gw.shutdown().await;
}

/// Reloads asked for in a burst share compiles, and each request is answered by a compile
/// that read the file as it was when the request was made or later: never an older file.
/// Files are written and reloads requested in generated bursts; some files are broken.
#[tokio::test]
async fn concurrent_reloads_are_answered_by_a_compile_no_older_than_the_request() {
    use sha2::Digest;
    let fx = Fixture::new();
    let echo = start_echo().await;
    let text_of = |n: usize| {
        let text = fx.policy_text(&echo_trigger("t", &format!("/t{n}"), echo, ""));
        // Every fifth file does not compile (a path without '/').
        if n % 5 == 3 { text.replace(&format!("\"/t{n}\""), &format!("\"t{n}\"")) } else { text }
    };
    let version_of = |text: &str| hex::encode(&sha2::Sha256::digest(text.as_bytes())[..6]);
    let path = fx.write_policy(&text_of(0));
    let gw = start_gateway_for(&fx, &path).await;

    let files = 40;
    let mut written_version = std::collections::HashMap::new();
    let mut answers = Vec::new();
    for n in 1..=files {
        let text = text_of(n);
        written_version.insert(version_of(&text), n);
        // Replaced whole, as editors do: a compile never reads a half-written file.
        let next = path.with_extension("next");
        std::fs::write(&next, &text).unwrap();
        std::fs::rename(&next, &path).unwrap();
        let gateway = gw.gateway.clone();
        answers.push((n, tokio::spawn(async move { gateway.reload_backstage().await })));
        // Bursts of one to four requests, then a pause that lets a compile start.
        if n % 4 == (n / 4) % 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for (asked_at, answer) in answers {
        match answer.await.unwrap() {
            Ok(flowgate::gateway::ReloadOutcome::Swapped { version }) => {
                let read = written_version[&version];
                assert!(read >= asked_at, "request {asked_at} was answered by file {read}, an older one");
            }
            Ok(other) => panic!("request {asked_at}: {other:?}"),
            Err(errors) => {
                let line = errors[0].to_string();
                let read: usize = line.split("\"t").nth(1).and_then(|rest| rest.split('"').next()).map_or_else(
                    || panic!("request {asked_at}: an error naming no file: {line}"),
                    |n| n.parse().unwrap_or_else(|_| panic!("request {asked_at}: {line}")),
                );
                assert!(read >= asked_at && read % 5 == 3, "request {asked_at} refused for file {read}: {line}");
            }
        }
    }
    // All answered: the last file is the one running.
    assert_eq!(gw.gateway.policy().version, version_of(&text_of(files)));
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_reports_health_readiness_and_metrics() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = fx.serve_policy(&fx.policy_text(&echo_trigger("t", "/t", echo, ""))).await;
    // Ready once listeners are bound; poll briefly for the server task to start.
    let mut ready = 0;
    for _ in 0..50 {
        ready = reqwest::get(gw.admin_url("/readyz")).await.unwrap().status().as_u16();
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready, 200);
    assert_eq!(reqwest::get(gw.admin_url("/healthz")).await.unwrap().status(), 200);
    fx.client(false).post(gw.url("/t")).send().await.unwrap();
    let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("flowgate_requests_total{trigger=\"t\",method=\"POST\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("flowgate_request_duration_seconds_bucket"));
    assert!(!metrics.contains("UPSTREAMSIG"), "the upstream query leaked into metrics");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_globally_denied_peer_is_dropped_before_the_tls_handshake() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = fx
        .serve_policy(
            &fx.policy_text(&format!(
                "[firewall]\ndeny_ips = [\"127.0.0.2\"]\n\n{}",
                echo_trigger("t", "/t", echo, "")
            )),
        )
        .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let tcp = socket.connect(gw.https).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(fx.rustls_client(&[b"http/1.1"]));
    let handshake =
        tokio::time::timeout(Duration::from_secs(10), connector.connect("localhost".try_into().unwrap(), tcp)).await;
    assert!(matches!(handshake, Ok(Err(_))), "the denied peer completed a TLS handshake");
    // Others are still served.
    assert_eq!(fx.client(false).post(gw.url("/t")).send().await.unwrap().status(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn certificates_reload_without_dropping_open_connections() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let path = fx.write_policy(&fx.policy_text(&echo_trigger("t", "/t", echo, "")));
    let gw = start_gateway_for(&fx, &path).await;
    let _watcher = flowgate::reload::watch_files(gw.gateway.clone(), &path).unwrap();

    // An HTTP/2 connection opened under the old certificate.
    let old_client = fx.client(true);
    assert_eq!(old_client.post(gw.url("/t")).send().await.unwrap().status(), 200);

    // Rotate: a new CA and server certificate written over the files.
    let rotated = flowgate::tls::dev::DevPki::generate().unwrap();
    std::fs::write(fx.path().join("server.key"), &rotated.server_key_pem).unwrap();
    std::fs::write(fx.path().join("server.crt"), &rotated.server_cert_pem).unwrap();

    // A client trusting only the new CA succeeds once the watch picked the files up.
    let new_ca = reqwest::Certificate::from_pem(rotated.ca_cert_pem.as_bytes()).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {}", fx.token()).parse().unwrap());
    let mut served = false;
    for _ in 0..100 {
        let new_client = reqwest::Client::builder()
            .tls_certs_only([new_ca.clone()])
            .default_headers(headers.clone())
            .build()
            .unwrap();
        if new_client.post(gw.url("/t")).send().await.is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the rotated certificate was never served");
    // The connection opened before the rotation still works.
    assert_eq!(old_client.post(gw.url("/t")).send().await.unwrap().status(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = fx
        .serve_policy(
            &fx.policy_text(&format!("[limits]\nmax_connections = 1\n\n{}", echo_trigger("t", "/t", echo, ""))),
        )
        .await;
    // The first connection is held open by a slow call.
    let first = fx.client(false);
    let url = gw.url("/t?delay_ms=1500");
    let slow = tokio::spawn(async move { first.post(url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A second connection is accepted only after the first is closed; it is served, not refused.
    let second = fx.client(false);
    let queued = tokio::spawn({
        let url = gw.url("/t");
        async move { second.post(url).send().await.map(|r| r.status().as_u16()) }
    });
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    // Let the first client's idle connection go so the slot frees.
    let status = tokio::time::timeout(Duration::from_secs(30), queued).await;
    assert!(matches!(status, Ok(Ok(Ok(200)))), "{status:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = fx
        .serve_policy(
            &fx.policy_text(&format!("[limits]\nidle_timeout = \"1s\"\n\n{}", echo_trigger("t", "/t", echo, ""))),
        )
        .await;
    let mut tls = raw_tls(&fx, &gw).await;
    let request = format!(
        "POST /t HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
        fx.token()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    // Read the answer, then keep reading: the idle connection must be closed by the server.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
    assert!(closed.is_ok(), "the idle keep-alive connection was never closed");
    gw.shutdown().await;
}

#[tokio::test]
async fn paths_that_could_escape_a_prefix_route_are_refused() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = fx.serve_policy(&fx.policy_text(&echo_trigger("api", "/api/a", echo, "path_match = \"prefix\""))).await;
    let client = fx.client(false);
    let ok = client.post(gw.url("/api/a/x/y")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let echoed: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(echoed["path"], "/flows/api/invoke/x/y");
    // Raw requests: an HTTP client library would normalise these paths before sending.
    for bad in
        ["/api/a/../../other", "/api/a/%2e%2e/%2e%2e/other", "/api/a/x%2F..%2Fother", "/api/a//x", "/api/a/.%2E/x"]
    {
        let mut tls = raw_tls(&fx, &gw).await;
        let request = format!(
            "POST {bad} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            fx.token()
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 400"), "{bad}: {text}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn callers_cannot_shadow_fixed_parameters_or_set_proxy_headers() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = fx.serve_policy(&fx.policy_text(&echo_trigger("t", "/t", echo, ""))).await;
    let response = fx
        .client(false)
        .post(gw.url("/t?SIG=evil&Api-Version=0&a%3Bsig=x&kept=1"))
        .header("x-real-ip", "6.6.6.6")
        .header("x-original-url", "/admin")
        .header("x-http-method-override", "DELETE")
        .send()
        .await
        .unwrap();
    let echoed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echoed["query_names"], serde_json::json!(["api-version", "sig", "kept"]));
    let headers = echoed["headers"].as_object().unwrap();
    for forged in ["x-real-ip", "x-original-url", "x-http-method-override"] {
        assert!(!headers.contains_key(forged), "{forged} reached the upstream");
    }
    gw.shutdown().await;
}
