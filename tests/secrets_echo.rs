//! Injected secrets never reach the caller, whatever the upstream does with them: an
//! upstream that echoes its request compressed (gzip, deflate, br; because the caller
//! asked for it, or regardless), one that redirects with the request's query in
//! `Location` or repeats a value percent-encoded its own way, one that answers with a coding
//! flowgate cannot read, and a caller asking for byte ranges. After every call, every log
//! line (TRACE, every target), the audit file, the metrics and the run history are scanned
//! for every secret in every encoded form.

mod common;

use async_compression::tokio::bufread::{
    BrotliDecoder, BrotliEncoder, GzipDecoder, GzipEncoder, ZlibDecoder, ZlibEncoder,
};
use bytes::Bytes;
use common::bao::write_private;
use common::leak::{forms, lower_escapes};
use common::{Fixture, metrics_text, run_record, trigger_to};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::Digest;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::AsyncReadExt;

const API_KEY: &str = "s3cr3t-echo-hdr-4c1d+/=é";
const CODE: &str = "s3cr3t-echo-qry-&x=1 y/z";
/// The credential part of a webhook URL's path (Slack style: three segments).
const PATH_PART: &str = "T0S3CR3T/B0S3CR3T/s3cr3tWebhookPart9f2c";

/// The in-memory log sink of this binary's global TRACE subscriber.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per binary) a TRACE subscriber for every target, writing into memory.
fn logs() -> Sink {
    static SINK: OnceLock<Sink> = OnceLock::new();
    SINK.get_or_init(|| {
        let sink = Sink::default();
        let writer = sink.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("this test binary installs the only global subscriber");
        sink
    })
    .clone()
}

/// Fails naming the place and form of every secret found (the value itself masked).
fn assert_clean(places: &[(String, String)]) {
    let mut hits = Vec::new();
    for (place, text) in places {
        for secret in [API_KEY, CODE, PATH_PART] {
            for (form, needle) in forms(secret) {
                if let Some(at) = text.find(&needle) {
                    let mut start = at.saturating_sub(40);
                    while !text.is_char_boundary(start) {
                        start -= 1;
                    }
                    let mut end = (at + needle.len() + 40).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    hits.push(format!("{form} in {place}: …{}…", text[start..end].replace(&needle, "<HIT>")));
                }
            }
        }
    }
    assert!(hits.is_empty(), "secret values reached the caller or a record:\n{}", hits.join("\n"));
}

/// An upstream that echoes what it got (target and header values) in JSON, compressed as
/// the request's `Accept-Encoding` asks or as `?force=` says (`zstd` labels a raw echo as
/// zstd); `/redirect` answers 302 to a URL repeating the request's query as received, and
/// repeats the `code` parameter strictly percent-encoded in lower-case hex in `x-again`.
async fn start_echo_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|request| async move { Ok::<_, Infallible>(echo(request).await) });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn echo(request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (parts, _) = request.into_parts();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    };
    if parts.uri.path() == "/redirect" {
        let code = param("code").unwrap_or_default();
        let again: String = code.bytes().map(|b| format!("%{b:02x}")).collect();
        // The reason phrase repeats the value too (hyper passes a custom one on).
        let reason = hyper::ext::ReasonPhrase::try_from(format!("Moved to {code}").into_bytes()).unwrap();
        return Response::builder()
            .status(302)
            .header("location", format!("https://elsewhere.example/callback?{query}"))
            .header("x-again", again)
            .extension(reason)
            .body(Full::new(Bytes::from_static(b"moved")))
            .unwrap();
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let path_sha = hex::encode(sha2::Sha256::digest(parts.uri.path().as_bytes()));
    // Some upstreams write escapes in lower case: the query again, that way.
    let query_lower = lower_escapes(&query);
    let text = serde_json::json!({
        "target": parts.uri.to_string(),
        "query_lower": query_lower,
        "path_sha": path_sha,
        "headers": headers,
    })
    .to_string();
    let accepted = parts.headers.get("accept-encoding").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let coding = param("force").or_else(|| {
        ["gzip", "deflate", "br"].into_iter().find(|c| accepted.split(',').any(|a| a.trim() == *c)).map(str::to_owned)
    });
    let mut body = Vec::new();
    let data = text.as_bytes();
    match coding.as_deref() {
        Some("gzip") => GzipEncoder::new(data).read_to_end(&mut body).await.map(drop).unwrap(),
        Some("deflate") => ZlibEncoder::new(data).read_to_end(&mut body).await.map(drop).unwrap(),
        Some("br") => BrotliEncoder::new(data).read_to_end(&mut body).await.map(drop).unwrap(),
        _ => body = text.clone().into_bytes(),
    }
    let mut response = Response::builder().header("content-type", "application/json").header("etag", "\"e1\"");
    if let Some(coding) = &coding {
        response = response.header("content-encoding", coding.as_str());
    }
    response.body(Full::new(Bytes::from(body))).unwrap()
}

/// Undoes `coding` on `body` (the caller's view, when the gateway passed a coding on).
async fn decoded(coding: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        Some("gzip") => GzipDecoder::new(body).read_to_end(&mut out).await.map(drop).unwrap(),
        Some("deflate") => ZlibDecoder::new(body).read_to_end(&mut out).await.map(drop).unwrap(),
        Some("br") => BrotliDecoder::new(body).read_to_end(&mut out).await.map(drop).unwrap(),
        _ => out = body.to_vec(),
    }
    out
}

struct Setup {
    fx: Fixture,
    gw: common::Running,
    audit_file: std::path::PathBuf,
}

/// A gateway with the given triggers, a file vault holding both secrets and an audit file.
async fn setup(triggers: impl FnOnce(SocketAddr) -> String) -> Setup {
    logs();
    let fx = Fixture::new();
    let text = format!(
        "[flows]\napi_key = {}\ncode = {}\n\n[hooks]\nslack = {}\n",
        serde_json::json!(API_KEY),
        serde_json::json!(CODE),
        serde_json::json!(PATH_PART)
    );
    write_private(&fx.path().join("secrets.toml"), &text);
    let up = start_echo_upstream().await;
    let audit_file = fx.path().join("runs.jsonl");
    let gw = fx
        .serve_policy(&fx.policy_text(&format!(
            "[vault.files]\nkind = \"file\"\npath = \"secrets.toml\"\n\n[audit]\nfile = \"{}\"\n\n{}",
            audit_file.display(),
            triggers(up)
        )))
        .await;
    Setup { fx, gw, audit_file }
}

const INJECT: &str = "inject.headers.\"x-api-key\" = \"secret://files/flows#api_key\"\n\
                      inject.query.code = \"secret://files/flows#code\"\n";

/// Everything besides the responses where a value could surface: logs, audit file,
/// metrics, the run records of `ids`.
async fn records(setup: &Setup, ids: &[String]) -> Vec<(String, String)> {
    let mut places = Vec::new();
    for id in ids {
        places.push((format!("run record {id}"), run_record(&setup.gw, id).await.to_string()));
    }
    assert!(setup.gw.gateway.audit.flush(std::time::Duration::from_secs(5)));
    places.push(("audit file".into(), std::fs::read_to_string(&setup.audit_file).unwrap_or_default()));
    places.push(("metrics".into(), metrics_text(&setup.gw).await));
    places.push(("logs".into(), String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()));
    places
}

/// The caller's own token never lands in a captured record, even where the caller repeats
/// it (another header) and the upstream echoes it back in the body: a capturing call's
/// redactor holds the token (`Redactor::recording`, gathered only for such calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_never_records_the_callers_token() {
    let setup = setup(|up| {
        trigger_to(
            "echo",
            "/echo",
            &format!("http://{up}/echo"),
            &format!("{INJECT}scrub_responses = false\ncapture = true"),
        )
    })
    .await;
    let token = setup.fx.token();
    let response = setup
        .fx
        .anonymous_client(false)
        .get(setup.gw.url("/echo"))
        .bearer_auth(&token)
        .header("x-caller-copy", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = response.text().await.unwrap();
    assert!(body.contains(&token), "the upstream echoes the caller's copy, so a record could hold it: {body}");
    let record = run_record(&setup.gw, &id).await;
    assert!(record["capture"]["response"].is_object(), "the response was captured: {record}");
    for (place, text) in records(&setup, &[id]).await {
        assert!(!text.contains(&token), "the caller's token is in the {place}");
    }
    setup.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_echoes_are_decoded_and_scrubbed() {
    let setup =
        setup(|up| trigger_to("echo", "/echo", &format!("http://{up}/echo"), &format!("{INJECT}capture = true"))).await;
    let client = setup.fx.client(false);
    let mut places = Vec::new();
    let mut ids = Vec::new();
    // The caller asks for each coding; then an upstream that compresses whatever was asked.
    let cases = [
        ("gzip", ""),
        ("deflate", ""),
        ("br", ""),
        ("identity", "force=gzip"),
        ("gzip", "force=deflate"),
        ("br", "force=br"),
    ];
    for (accept, force) in cases {
        let response = client
            .get(setup.gw.url(&format!("/echo?{force}")))
            .header("accept-encoding", accept)
            .header("range", "bytes=0-")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{accept} {force}");
        ids.push(response.headers()["x-request-id"].to_str().unwrap().to_owned());
        let coding = response.headers().get("content-encoding").map(|v| v.to_str().unwrap().to_owned());
        let headers = format!("{:?}", response.headers());
        let raw = response.bytes().await.unwrap();
        let body = decoded(coding.as_deref(), &raw).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(echo["headers"]["x-api-key"], "[redacted]", "{accept} {force}: {text}");
        assert_eq!(echo["headers"]["accept-encoding"], "identity", "{text}");
        assert!(echo["headers"].get("range").is_none(), "a caller must not fetch an echo in pieces: {text}");
        places.push((format!("response ({accept}, {force}) headers"), headers));
        places.push((format!("response ({accept}, {force}) as sent"), String::from_utf8_lossy(&raw).into_owned()));
        places.push((format!("response ({accept}, {force}) decoded"), text));
    }
    places.extend(records(&setup, &ids).await);
    assert_clean(&places);
    setup.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coding_that_cannot_be_inspected_is_refused() {
    let setup = setup(|up| trigger_to("echo", "/echo", &format!("http://{up}/echo?force=zstd"), INJECT)).await;
    let response = setup.fx.client(false).get(setup.gw.url("/echo")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut places = vec![("502 response".to_owned(), response.text().await.unwrap())];
    let record = run_record(&setup.gw, &id).await;
    assert!(record["reason"].as_str().unwrap().contains("zstd"), "{record}");
    places.extend(records(&setup, &[id]).await);
    assert_clean(&places);
    setup.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_headers_are_scrubbed_even_without_body_scrubbing() {
    let setup = setup(|up| {
        trigger_to(
            "moved",
            "/moved",
            &format!("http://{up}/redirect"),
            &format!("{INJECT}scrub_responses = false\ncapture = true"),
        )
    })
    .await;
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(setup.fx.ca_pem.as_bytes()).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .http1_only()
        .build()
        .unwrap();
    let response = client.post(setup.gw.url("/moved?keep=1")).bearer_auth(setup.fx.token()).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("https://elsewhere.example/callback?keep=1&code=[redacted]"), "{location}");
    assert_eq!(response.headers()["x-again"], "[redacted]");
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut places = vec![("302 response".to_owned(), format!("{:?}", response.headers()))];
    // The status line as an HTTP/1.1 caller reads it: no reason phrase from the upstream.
    let mut tls = common::raw_tls(&setup.fx, &setup.gw).await;
    let request = format!(
        "POST /moved?keep=1 HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        setup.fx.token()
    );
    tokio::io::AsyncWriteExt::write_all(&mut tls, request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    assert!(raw.starts_with("HTTP/1.1 302 Found\r\n"), "{raw}");
    places.push(("302 response on the wire".to_owned(), raw));
    places.extend(records(&setup, &[id]).await);
    assert_clean(&places);
    setup.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injecting_triggers_scrub_bodies_by_default() {
    let setup = setup(|up| {
        [
            trigger_to("default", "/default", &format!("http://{up}/echo"), INJECT),
            trigger_to(
                "off",
                "/off",
                &format!("http://{up}/echo"),
                &format!("{INJECT}scrub_responses = false\ncapture = true"),
            ),
        ]
        .concat()
    })
    .await;
    let client = setup.fx.client(false);
    let scrubbed: serde_json::Value = client.get(setup.gw.url("/default")).send().await.unwrap().json().await.unwrap();
    assert_eq!(scrubbed["headers"]["x-api-key"], "[redacted]", "{scrubbed}");
    // Turned off explicitly, the body is the upstream's own (the owner's choice).
    let off = client.get(setup.gw.url("/off")).send().await.unwrap();
    let id = off.headers()["x-request-id"].to_str().unwrap().to_owned();
    let raw: serde_json::Value = off.json().await.unwrap();
    assert_eq!(raw["headers"]["x-api-key"], API_KEY);
    // Its run record still shows no value, in any form the upstream wrote it.
    assert!(raw["query_lower"].as_str().unwrap().contains("%26x%3d1+y%2fz"), "{raw}");
    let record = run_record(&setup.gw, &id).await;
    assert!(record["capture"]["response"]["body"]["json"].is_object(), "{record}");
    assert_clean(&[("run record of the unscrubbed call".to_owned(), record.to_string())]);
    setup.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_path_credential_comes_from_the_vault_and_is_never_shown() {
    let closed = common::closed_port();
    let setup = setup(|up| {
        [
            trigger_to(
                "hook",
                "/hook",
                &format!("http://{up}/services/{{{{secret://files/hooks#slack}}}}?v=1"),
                "capture = true",
            ),
            trigger_to("down", "/down", &format!("http://{closed}/services/{{{{secret://files/hooks#slack}}}}"), ""),
        ]
        .concat()
    })
    .await;
    let response = setup.fx.client(false).post(setup.gw.url("/hook")).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = response.text().await.unwrap();
    let echo: serde_json::Value = serde_json::from_str(&text).unwrap();
    // The upstream got the real path; the caller sees its echo of it scrubbed by default.
    let wanted = format!("/services/{PATH_PART}");
    assert_eq!(echo["path_sha"], hex::encode(sha2::Sha256::digest(wanted.as_bytes())), "{text}");
    assert!(echo["target"].as_str().unwrap().contains("/services/[redacted]?v=1"), "{text}");

    let mut places = vec![("response".to_owned(), text)];
    let policy = reqwest::get(setup.gw.admin_url("/policy")).await.unwrap().text().await.unwrap();
    assert!(policy.contains("{{secret://files/hooks#slack}}"), "the reference is shown: {policy}");
    places.push(("/policy".to_owned(), policy));
    // An upstream that cannot be reached: the failure's reason names the trigger, never the
    // upstream URL (it may be a private field), so neither reference nor value.
    let down = setup.fx.client(false).post(setup.gw.url("/down")).send().await.unwrap();
    assert_eq!(down.status(), 502);
    let down_id = down.headers()["x-request-id"].to_str().unwrap().to_owned();
    places.push(("502 response".to_owned(), down.text().await.unwrap()));
    let record = run_record(&setup.gw, &down_id).await;
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.contains("trigger down") && !reason.contains("/services/"), "{record}");
    places.extend(records(&setup, &[id, down_id]).await);
    assert_clean(&places);
    setup.gw.shutdown().await;
}
