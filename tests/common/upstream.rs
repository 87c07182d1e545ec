//! A test upstream that reports what reached it without printing injected values: the
//! SHA-256 of every header value, query parameter and JSON string field. Paths:
//!
//! - `/report`: 200 with `{"headers": {name: [sha]}, "query": [[name, sha]], "json": {pointer: sha}}`;
//! - `/split`: echoes the `x-api-key` header it received, in a response header `x-echoed` and
//!   in the body split across two chunks (`before:` + first half, then second half + `:after`),
//!   the two chunks sent 50 ms apart so they really are separate frames;
//! - `/echo`: a careless upstream (httpbin-like) that echoes in JSON everything it got, as
//!   it got it: the request target (path and query, still URL-encoded), the credentials of
//!   `Authorization` without the scheme word, every header value, and the JSON body.
//!
//! Every path honours `?delay_ms=N` (waits before answering).

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

type Body = BoxBody<Bytes, Infallible>;

/// Lower-case hex SHA-256 of `value`.
pub(crate) fn sha(value: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(value.as_ref()))
}

/// Starts the reporting upstream on a free loopback port.
pub(crate) async fn start_reporter() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|request| async move { Ok::<_, Infallible>(answer(request).await) });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into()).boxed()
}

fn walk(pointer: &str, value: &serde_json::Value, out: &mut serde_json::Map<String, serde_json::Value>) {
    match value {
        serde_json::Value::String(s) => {
            out.insert(pointer.to_owned(), sha(s).into());
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                walk(&format!("{pointer}/{k}"), v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(&format!("{pointer}/{i}"), v, out);
            }
        }
        _ => {}
    }
}

async fn answer(request: Request<hyper::body::Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let query: Vec<(String, String)> = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some((_, delay)) = query.iter().find(|(k, _)| k == "delay_ms") {
        tokio::time::sleep(Duration::from_millis(delay.parse().unwrap_or(0))).await;
    }
    let body = body.collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
    if parts.uri.path() == "/split" {
        let value = parts.headers.get("x-api-key").map(|v| v.as_bytes().to_vec()).unwrap_or_default();
        let half = value.len() / 2;
        let first = Bytes::from([b"before:".as_slice(), &value[..half]].concat());
        let second = Bytes::from([&value[half..], b":after".as_slice()].concat());
        let chunks = futures_util::stream::unfold(0u8, move |step| {
            let (first, second) = (first.clone(), second.clone());
            async move {
                match step {
                    0 => Some((Ok::<_, Infallible>(Frame::data(first)), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((Ok(Frame::data(second)), 2))
                    }
                    _ => None,
                }
            }
        });
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
        if let Ok(v) = hyper::header::HeaderValue::from_bytes(&value) {
            response.headers_mut().insert("x-echoed", v);
        }
        return response;
    }
    if parts.uri.path() == "/echo" {
        let credentials = parts
            .headers
            .get("authorization")
            .and_then(|auth| auth.as_bytes().splitn(2, |b| *b == b' ').nth(1))
            .map(|c| String::from_utf8_lossy(c).into_owned());
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        let json = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or(serde_json::Value::Null);
        let echo = serde_json::json!({
            "target": parts.uri.to_string(),
            "credentials": credentials,
            "headers": headers,
            "json": json,
        });
        let mut response = Response::new(full(echo.to_string()));
        response.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
        return response;
    }
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let shas: Vec<serde_json::Value> =
            parts.headers.get_all(name).iter().map(|v| sha(v.as_bytes()).into()).collect();
        headers.insert(name.as_str().to_owned(), shas.into());
    }
    let query: Vec<serde_json::Value> = query.iter().map(|(k, v)| serde_json::json!([k, sha(v)])).collect();
    let mut json = serde_json::Map::new();
    if let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&body) {
        walk("", &parsed, &mut json);
    }
    let report = serde_json::json!({ "path": parts.uri.path(), "headers": headers, "query": query, "json": json });
    let mut response = Response::new(full(report.to_string()));
    response.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    response
}
