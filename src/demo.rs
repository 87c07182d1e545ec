//! What `flowgate demo` runs beside the gateway: an echo upstream on loopback that
//! shows what arrived (header names and value lengths, never header values), so a
//! newcomer can see injection and header hygiene at work.

use crate::web::{ResponseBody, full_body};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tokio::net::TcpListener;

/// Headers whose values are safe to show in the echo.
const SHOWN_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "user-agent",
    "accept",
    "host",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-flowgate-tenant",
    "x-flowgate-principal",
    "x-flowgate-app-id",
    "x-flowgate-roles",
];

/// Largest body the echo reads.
const MAX_ECHO_BODY: usize = 1024 * 1024;

/// Serves the echo upstream on `listener` forever.
///
/// Query controls for tests and demos: `delay_ms=N` waits before answering, `status=N`
/// answers with that status.
pub async fn serve_echo(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|request| async move { Ok::<_, std::convert::Infallible>(echo(request).await) });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn echo<B>(request: Request<B>) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let param = |name: &str| -> Option<u64> {
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).and_then(|(_, v)| v.parse().ok())
    };
    if let Some(delay) = param("delay_ms") {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = param("status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let body =
        http_body_util::Limited::new(body, MAX_ECHO_BODY).collect().await.map(http_body_util::Collected::to_bytes);
    let (body_len, body_text) = match &body {
        Ok(bytes) => (bytes.len(), String::from_utf8_lossy(bytes).into_owned()),
        Err(_) => (0, String::new()),
    };
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = if SHOWN_HEADERS.contains(&name.as_str()) {
                serde_json::Value::String(value.to_str().unwrap_or("<binary>").to_owned())
            } else {
                serde_json::Value::String(format!("<{} bytes, value hidden>", value.len()))
            };
            (name.as_str().to_owned(), shown)
        })
        .collect();
    let echoed = serde_json::json!({
        "upstream": "flowgate demo echo",
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query_names": url::form_urlencoded::parse(query.as_bytes()).map(|(k, _)| k.into_owned()).collect::<Vec<_>>(),
        "headers": headers,
        "body_bytes": body_len,
        "body": body_text,
    });
    let mut response = Response::new(full_body(format!("{echoed:#}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}
