//! Every byte the caller receives passes the scrubber, as a property over
//! generated upstream answers. A raw TCP upstream writes exactly the bytes a generated
//! [`Shape`] describes: the injected values echoed in every form the scrubber is meant to
//! catch, in the status reason, a header, a redirect's `Location`, 1xx heads (103 Early
//! Hints) before the final answer, the body under stacks of content codings and transfer
//! codings (`gzip, chunked`, close-delimited `gzip`, ...) cut into random chunks, and
//! trailers. A real gateway serves it over real TLS to a reference client written here
//! (raw HTTP/1.1 bytes, or hyper's h2 client), which decodes everything itself.
//!
//! The property, checked against a small model of this file's own: the answer is 502
//! exactly when the model says a coding cannot be decoded; otherwise no form of a secret
//! appears anywhere in what the caller received (raw bytes, heads, headers, trailers,
//! decoded body; the body only where `scrub_responses` is on), and a scrubbed body equals
//! the upstream's text with each echoed value replaced by `[redacted]`.
//!
//! Beside it: a run record's reason, as a viewer reads it on `/runs`, names the trigger
//! and never the private upstream URL, host or port (connect error, timeout, coding).

use crate::common;

use async_compression::tokio::bufread::{
    BrotliDecoder, BrotliEncoder, GzipDecoder, GzipEncoder, ZlibDecoder, ZlibEncoder,
};
use bytes::Bytes;
use common::bao::write_private;
use common::{Fixture, Running, trigger_to};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Injected as header `x-api-key` (characters every escape form treats differently).
const KEY: &str = "s3cr3tK+/=&x y";
/// Injected as query parameter `code`.
const CODE: &str = "s3cr3tQ~9_z*@";
const SECRETS: [&str; 2] = [KEY, CODE];

const INJECT: &str = "inject.headers.\"x-api-key\" = \"secret://files/flows#api_key\"\n\
                      inject.query.code = \"secret://files/flows#code\"\n";

/// An encoded form in which an upstream may echo a value (all of them caught by the
/// scrubber, by its documentation).
#[derive(Debug, Clone, Copy)]
enum Form {
    Raw,
    PercentUpper,
    PercentLower,
    Urlencoded,
    JsonUnicode,
    HtmlDecimal,
    HtmlHex,
}

/// `value` in `form`, encoded here without any code of the gateway.
fn encode_form(value: &str, form: Form) -> String {
    let each = |f: fn(u8) -> String| -> String {
        value.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { f(b) }).collect()
    };
    match form {
        Form::Raw => value.to_owned(),
        Form::PercentUpper => each(|b| format!("%{b:02X}")),
        Form::PercentLower => each(|b| format!("%{b:02x}")),
        Form::Urlencoded => url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        Form::JsonUnicode => each(|b| format!("\\u{b:04x}")),
        Form::HtmlDecimal => each(|b| format!("&#{b};")),
        Form::HtmlHex => each(|b| format!("&#x{b:X};")),
    }
}

/// Every form the checker looks for: the generator's, and the shared leak list.
fn needles() -> Vec<(String, String)> {
    let forms = [
        Form::Raw,
        Form::PercentUpper,
        Form::PercentLower,
        Form::Urlencoded,
        Form::JsonUnicode,
        Form::HtmlDecimal,
        Form::HtmlHex,
    ];
    let mut out = Vec::new();
    for (i, secret) in SECRETS.iter().enumerate() {
        for form in forms {
            out.push((format!("secret {i} {form:?}"), encode_form(secret, form)));
        }
        for (name, text) in common::leak::forms(secret) {
            out.push((format!("secret {i} {name}"), text));
        }
    }
    out
}

/// A content coding the upstream may apply (`Zstd`: one the gateway cannot read).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Content {
    Gzip,
    Deflate,
    Br,
    Identity,
    Zstd,
}

/// A transfer coding before the final framing (`Compress`: one the gateway cannot read).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transfer {
    Gzip,
    Deflate,
    Compress,
}

/// How the body is delimited on the wire.
#[derive(Debug, Clone)]
enum Framing {
    /// `Content-Length` (no transfer coding).
    Length,
    /// `Transfer-Encoding: <codings>, chunked`, cut at these points, then trailers.
    Chunked { codings: Vec<Transfer>, cuts: Vec<usize>, trailers: Vec<(usize, Form)> },
    /// No length: the body ends when the upstream closes (`Transfer-Encoding: <codings>`
    /// when there are any).
    Close { codings: Vec<Transfer> },
    /// `Transfer-Encoding: chunked, gzip`: chunked is not the last coding, so the body is
    /// close-delimited and still chunked inside.
    ChunkedNotLast,
}

/// One piece of the upstream's body text.
#[derive(Debug, Clone)]
enum Piece {
    Filler(&'static str),
    Secret(usize, Form),
}

/// What the upstream answers.
#[derive(Debug, Clone)]
struct Shape {
    status: u16,
    reason: Option<(usize, Form)>,
    header: Option<(usize, Form)>,
    /// 1xx heads before the final answer, each with a `Link` echoing a value.
    informational: Vec<(u16, usize, Form)>,
    body: Vec<Piece>,
    content: Vec<Content>,
    framing: Framing,
    /// Trigger with `scrub_responses = false`.
    off: bool,
    /// Caller speaks h2 (else raw HTTP/1.1).
    h2: bool,
}

/// Filler never holds an escape character or a value's first byte.
const FILLER: [&str; 5] = ["{\"echo\":\"", "lorem ipsum ", "\"}, ", "<p>", "0123456789abcdefghijklmnopqr"];

impl Shape {
    /// The model: whether a coding on the way cannot be decoded, so the answer must be 502.
    fn refused(&self) -> bool {
        let transfer = match &self.framing {
            Framing::Chunked { codings, .. } | Framing::Close { codings } => codings.contains(&Transfer::Compress),
            Framing::ChunkedNotLast => true,
            Framing::Length => false,
        };
        transfer || (!self.off && self.content.contains(&Content::Zstd))
    }

    fn plain_body(&self) -> String {
        self.body
            .iter()
            .map(|p| match p {
                Piece::Filler(f) => (*f).to_owned(),
                Piece::Secret(i, form) => encode_form(SECRETS[*i], *form),
            })
            .collect()
    }

    /// The body a scrubbing gateway must deliver.
    fn scrubbed_body(&self) -> String {
        self.body
            .iter()
            .map(|p| match p {
                Piece::Filler(f) => *f,
                Piece::Secret(..) => "[redacted]",
            })
            .collect()
    }

    /// The upstream's bytes, as the segments it writes one by one.
    async fn wire(&self) -> Vec<Vec<u8>> {
        let mut head = String::new();
        for (status, i, form) in &self.informational {
            head += &format!(
                "HTTP/1.1 {status} Early\r\nlink: </style.css?k={}>; rel=preload\r\n\r\n",
                encode_form(SECRETS[*i], *form)
            );
        }
        let reason = self.reason.map_or("Whatever".to_owned(), |(i, form)| encode_form(SECRETS[i], form));
        head += &format!("HTTP/1.1 {} {reason}\r\nconnection: close\r\ncontent-type: text/plain\r\n", self.status);
        if let Some((i, form)) = self.header {
            head += &format!("x-echo: token={}\r\n", encode_form(SECRETS[i], form));
        }
        if self.status == 302 {
            head +=
                &format!("location: https://elsewhere.example/cb?code={}\r\n", encode_form(CODE, Form::PercentUpper));
        }
        let mut body = self.plain_body().into_bytes();
        let mut names = Vec::new();
        for coding in &self.content {
            let (name, encoded) = match coding {
                Content::Gzip => ("gzip", gzip(&body).await),
                Content::Deflate => ("deflate", zlib(&body).await),
                Content::Br => ("br", brotli(&body).await),
                Content::Identity => ("identity", body.clone()),
                Content::Zstd => ("zstd", [b"\x28\xb5\x2f\xfd".as_slice(), &body].concat()),
            };
            names.push(name);
            body = encoded;
        }
        if !names.is_empty() {
            head += &format!("content-encoding: {}\r\n", names.join(", "));
        }
        let mut segments = Vec::new();
        match &self.framing {
            Framing::Length => {
                head += &format!("content-length: {}\r\n\r\n", body.len());
                segments.push(head.into_bytes());
                segments.push(body);
            }
            Framing::Close { codings } => {
                let (names, body) = transfer_encode(codings, body).await;
                if !names.is_empty() {
                    head += &format!("transfer-encoding: {}\r\n", names.join(", "));
                }
                head += "\r\n";
                segments.push(head.into_bytes());
                segments.push(body);
            }
            Framing::ChunkedNotLast => {
                let chunked = [format!("{:x}\r\n", body.len()).as_bytes(), &body, b"\r\n0\r\n\r\n"].concat();
                let gzipped = gzip(&chunked).await;
                head += "transfer-encoding: chunked, gzip\r\n\r\n";
                segments.push(head.into_bytes());
                segments.push(gzipped);
            }
            Framing::Chunked { codings, cuts, trailers } => {
                let (mut names, body) = transfer_encode(codings, body).await;
                names.push("chunked");
                head += &format!("transfer-encoding: {}\r\n", names.join(", "));
                if !trailers.is_empty() {
                    head += "trailer: x-digest\r\n";
                }
                head += "\r\n";
                segments.push(head.into_bytes());
                let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
                points.extend([0, body.len()]);
                points.sort_unstable();
                points.dedup();
                for pair in points.windows(2) {
                    let chunk = &body[pair[0]..pair[1]];
                    segments.push([format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat());
                }
                let mut end = b"0\r\n".to_vec();
                for (i, form) in trailers {
                    end.extend(format!("x-digest: of={}\r\n", encode_form(SECRETS[*i], *form)).bytes());
                }
                end.extend(b"\r\n");
                segments.push(end);
            }
        }
        segments
    }
}

/// Applies transfer `codings` in order: their names and the result.
async fn transfer_encode(codings: &[Transfer], mut body: Vec<u8>) -> (Vec<&'static str>, Vec<u8>) {
    let mut names = Vec::new();
    for coding in codings {
        let (name, encoded) = match coding {
            Transfer::Gzip => ("gzip", gzip(&body).await),
            Transfer::Deflate => ("deflate", zlib(&body).await),
            Transfer::Compress => ("compress", [b"\x1f\x9d".as_slice(), &body].concat()),
        };
        names.push(name);
        body = encoded;
    }
    (names, body)
}

async fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzipEncoder::new(data).read_to_end(&mut out).await.unwrap();
    out
}

async fn zlib(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ZlibEncoder::new(data).read_to_end(&mut out).await.unwrap();
    out
}

async fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    BrotliEncoder::new(data).read_to_end(&mut out).await.unwrap();
    out
}

fn form() -> impl Strategy<Value = Form> {
    prop_oneof![
        Just(Form::Raw),
        Just(Form::PercentUpper),
        Just(Form::PercentLower),
        Just(Form::Urlencoded),
        Just(Form::JsonUnicode),
        Just(Form::HtmlDecimal),
        Just(Form::HtmlHex),
    ]
}

fn echo() -> impl Strategy<Value = (usize, Form)> {
    (0..SECRETS.len(), form())
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![(0..FILLER.len()).prop_map(|i| Piece::Filler(FILLER[i])), echo().prop_map(|(i, f)| Piece::Secret(i, f)),]
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        4 => Just(Content::Gzip),
        3 => Just(Content::Deflate),
        3 => Just(Content::Br),
        1 => Just(Content::Identity),
        1 => Just(Content::Zstd),
    ]
}

fn transfer() -> impl Strategy<Value = Transfer> {
    prop_oneof![4 => Just(Transfer::Gzip), 3 => Just(Transfer::Deflate), 1 => Just(Transfer::Compress)]
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        1 => Just(Framing::Length),
        4 => (
            prop::collection::vec(transfer(), 0..3),
            prop::collection::vec(any::<usize>(), 0..12),
            prop::collection::vec(echo(), 0..2),
        )
            .prop_map(|(codings, cuts, trailers)| Framing::Chunked { codings, cuts, trailers }),
        2 => prop::collection::vec(transfer(), 0..3).prop_map(|codings| Framing::Close { codings }),
        1 => Just(Framing::ChunkedNotLast),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        prop::sample::select(vec![200u16, 201, 302, 404, 500]),
        prop::option::of(echo()),
        prop::option::of(echo()),
        prop::collection::vec((prop::sample::select(vec![100u16, 102, 103]), echo()), 0..3),
        prop::collection::vec(piece(), 1..8),
        prop::collection::vec(content(), 0..3),
        framing(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(status, reason, header, informational, body, content, framing, off, h2)| Shape {
            status,
            reason,
            header,
            informational: informational.into_iter().map(|(s, (i, f))| (s, i, f)).collect(),
            body,
            content,
            framing,
            off,
            h2,
        })
}

/// Cases the upstream answers, by the `x-case` request header.
type Cases = Arc<Mutex<HashMap<u64, Vec<Vec<u8>>>>>;

/// The raw upstream: reads a request head, writes the segments of its case one by one, closes.
async fn start_upstream(cases: Cases) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            let cases = cases.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let Some(id) =
                    head.lines().find_map(|l| l.strip_prefix("x-case: ")).and_then(|v| v.trim().parse().ok())
                else {
                    return;
                };
                let segments = cases.lock().unwrap().get(&id).cloned().unwrap_or_default();
                for segment in segments {
                    if stream.write_all(&segment).await.is_err() || stream.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// What the caller received, decoded by this file's reference client.
struct Received {
    status: u16,
    /// Every place a value could be seen: raw bytes, heads, headers, trailers.
    places: Vec<(String, String)>,
    /// The body after undoing the framing and any `Content-Encoding` the caller was given.
    body: Vec<u8>,
    /// 1xx heads that reached the caller (raw HTTP/1.1 only; h2 has none to show).
    informational: usize,
    /// The final head's `Transfer-Encoding` (raw HTTP/1.1 only).
    transfer_encoding: Option<String>,
}

async fn decode_content(headers: &[(String, String)], mut body: Vec<u8>) -> Vec<u8> {
    let codings: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n == "content-encoding")
        .flat_map(|(_, v)| v.split(',').map(|c| c.trim().to_ascii_lowercase()).collect::<Vec<_>>())
        .collect();
    for coding in codings.iter().rev() {
        let mut out = Vec::new();
        let ok = match coding.as_str() {
            "gzip" | "x-gzip" => GzipDecoder::new(body.as_slice()).read_to_end(&mut out).await.is_ok(),
            "deflate" => ZlibDecoder::new(body.as_slice()).read_to_end(&mut out).await.is_ok(),
            "br" => BrotliDecoder::new(body.as_slice()).read_to_end(&mut out).await.is_ok(),
            _ => false,
        };
        if !ok {
            return body;
        }
        body = out;
    }
    body
}

/// A lenient client sniffs compressed bodies that no header announces: whatever a gzip or
/// zlib decoder makes of `body`, however many layers deep.
async fn sniffed(body: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut layer = body.to_vec();
    for depth in 0..4 {
        let mut gz = Vec::new();
        let mut zl = Vec::new();
        let next = if GzipDecoder::new(layer.as_slice()).read_to_end(&mut gz).await.is_ok() && !gz.is_empty() {
            gz
        } else if ZlibDecoder::new(layer.as_slice()).read_to_end(&mut zl).await.is_ok() && !zl.is_empty() {
            zl
        } else {
            break;
        };
        out.push((format!("body sniffed as compressed ({depth})"), String::from_utf8_lossy(&next).into_owned()));
        layer = next;
    }
    out
}

/// A parsed HTTP/1.1 head (status and fields) and the bytes after it.
type Head<'a> = (u16, Vec<(String, String)>, &'a [u8]);

/// Splits an HTTP/1.1 head (status line and fields) off `raw`.
fn h1_head(raw: &[u8]) -> Option<Head<'_>> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let fields = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((status, fields, &raw[end + 4..]))
}

/// Undoes chunked framing: the data and the trailer section's text.
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, String) {
    let mut data = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else { return (data, String::new()) };
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).split(';').next().unwrap().trim(), 16)
            .unwrap_or(0);
        rest = &rest[eol + 2..];
        if size == 0 {
            return (data, String::from_utf8_lossy(rest).into_owned());
        }
        let size = size.min(rest.len());
        data.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
}

/// A raw HTTP/1.1 call over TLS: every byte the gateway sent is kept.
async fn call_h1(fx: &Fixture, gw: &Running, path: &str, id: u64) -> Received {
    let mut tls = common::raw_tls(fx, gw).await;
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\nx-case: {id}\r\nte: trailers\r\nconnection: close\r\n\r\n",
        fx.token()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let mut places = Vec::new();
    let mut rest = raw.as_slice();
    let mut informational = 0;
    loop {
        let (status, fields, after) = h1_head(rest).unwrap_or_else(|| panic!("no head in {raw:?}"));
        places.push((format!("{status} head"), format!("{fields:?}")));
        rest = after;
        if (100..200).contains(&status) {
            informational += 1;
            continue;
        }
        let heads = &raw[..raw.len() - rest.len()];
        places.push(("heads on the wire".to_owned(), String::from_utf8_lossy(heads).into_owned()));
        places.push(("body on the wire".to_owned(), String::from_utf8_lossy(rest).into_owned()));
        let transfer_encoding =
            fields.iter().find(|(n, _)| n == "transfer-encoding").map(|(_, v)| v.to_ascii_lowercase());
        let chunked = transfer_encoding.as_deref().is_some_and(|v| v.contains("chunked"));
        let (data, trailers) = if chunked {
            dechunk(rest)
        } else {
            let length = fields.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok());
            (rest[..length.unwrap_or(rest.len()).min(rest.len())].to_vec(), String::new())
        };
        places.push(("trailers".to_owned(), trailers));
        let body = decode_content(&fields, data).await;
        places.extend(sniffed(&body).await);
        places.push(("decoded body".to_owned(), String::from_utf8_lossy(&body).into_owned()));
        return Received { status, places, body, informational, transfer_encoding };
    }
}

/// An h2 call with hyper's client: status, headers, body and trailers.
async fn call_h2(fx: &Fixture, gw: &Running, path: &str, id: u64) -> Received {
    let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(fx.rustls_client(&[b"h2"]));
    let tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!("https://localhost{path}"))
        .header("authorization", format!("Bearer {}", fx.token()))
        .header("x-case", id.to_string())
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let fields: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let mut places = vec![("headers".to_owned(), format!("{fields:?}"))];
    let (data, trailers) = match response.into_body().collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().map(|t| format!("{t:?}")).unwrap_or_default();
            (collected.to_bytes().to_vec(), trailers)
        }
        Err(e) => (format!("body error: {e}").into_bytes(), String::new()),
    };
    places.push(("trailers".to_owned(), trailers));
    places.push(("body as sent".to_owned(), String::from_utf8_lossy(&data).into_owned()));
    let body = decode_content(&fields, data).await;
    places.extend(sniffed(&body).await);
    places.push(("decoded body".to_owned(), String::from_utf8_lossy(&body).into_owned()));
    Received { status, places, body, informational: 0, transfer_encoding: None }
}

/// A gateway with two injecting triggers to the raw upstream: `/on` (scrubs bodies, the
/// default) and `/off` (`scrub_responses = false`).
struct Bench {
    fx: Fixture,
    gw: Running,
    cases: Cases,
    next: std::sync::atomic::AtomicU64,
}

async fn bench() -> Bench {
    let fx = Fixture::new();
    let secrets = format!("[flows]\napi_key = {}\ncode = {}\n", serde_json::json!(KEY), serde_json::json!(CODE));
    write_private(&fx.path().join("secrets.toml"), &secrets);
    let cases = Cases::default();
    let up = start_upstream(cases.clone()).await;
    let gw = fx
        .serve_policy(&fx.policy_text(&format!(
            "[vault.files]\nkind = \"file\"\npath = \"secrets.toml\"\n\n{}{}",
            trigger_to("on", "/on", &format!("http://{up}/r"), INJECT),
            trigger_to("off", "/off", &format!("http://{up}/r"), &format!("{INJECT}scrub_responses = false\n")),
        )))
        .await;
    Bench { fx, gw, cases, next: std::sync::atomic::AtomicU64::new(0) }
}

/// Serves `shape` and checks the property; `Err` says what broke.
async fn check(bench: &Bench, shape: &Shape) -> Result<(), String> {
    let id = bench.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let wire = shape.wire().await;
    bench.cases.lock().unwrap().insert(id, wire);
    let path = if shape.off { "/off" } else { "/on" };
    let received = if shape.h2 {
        call_h2(&bench.fx, &bench.gw, path, id).await
    } else {
        call_h1(&bench.fx, &bench.gw, path, id).await
    };
    bench.cases.lock().unwrap().remove(&id);
    let context = || format!("{shape:?}\nreceived: {:#?}", received.places);
    if shape.refused() {
        return if received.status == 502 {
            Ok(())
        } else {
            Err(format!("expected 502, got {}: {}", received.status, context()))
        };
    }
    // hyper's client reads an upstream's 1xx heads and drops them (the gateway registers
    // no `on_informational`): none reaches the caller, so none can carry a value.
    if received.informational > 0 {
        return Err(format!("{} 1xx heads reached the caller: {}", received.informational, context()));
    }
    // The gateway frames its own answer: an upstream's transfer coding is never passed on.
    if received.transfer_encoding.as_deref().is_some_and(|te| te != "chunked") {
        return Err(format!("Transfer-Encoding {:?} reached the caller: {}", received.transfer_encoding, context()));
    }
    if received.status != shape.status {
        return Err(format!("expected {}, got {}: {}", shape.status, received.status, context()));
    }
    for (place, text) in &received.places {
        if shape.off && place.contains("body") {
            // `scrub_responses = false`: the body is the admin's documented opt-out.
            continue;
        }
        for (name, needle) in needles() {
            if text.contains(&needle) {
                return Err(format!("{name} in {place}: {}", context()));
            }
        }
    }
    if !shape.off && received.body != shape.scrubbed_body().as_bytes() {
        return Err(format!(
            "scrubbed body differs: expected {:?}, got {:?}: {}",
            shape.scrubbed_body(),
            String::from_utf8_lossy(&received.body),
            context()
        ));
    }
    Ok(())
}

/// The instances a review found, checked first.
fn seeds() -> Vec<(&'static str, Shape)> {
    let base = Shape {
        status: 200,
        reason: None,
        header: None,
        informational: Vec::new(),
        body: vec![Piece::Filler(FILLER[0]), Piece::Secret(0, Form::Raw), Piece::Filler(FILLER[2])],
        content: Vec::new(),
        framing: Framing::Length,
        off: false,
        h2: false,
    };
    vec![
        (
            "Transfer-Encoding: gzip, chunked",
            Shape {
                framing: Framing::Chunked { codings: vec![Transfer::Gzip], cuts: vec![7, 19], trailers: Vec::new() },
                ..base.clone()
            },
        ),
        (
            "close-delimited Transfer-Encoding: gzip",
            Shape { framing: Framing::Close { codings: vec![Transfer::Gzip] }, h2: true, ..base.clone() },
        ),
        (
            "Transfer-Encoding: compress, chunked",
            Shape {
                framing: Framing::Chunked { codings: vec![Transfer::Compress], cuts: Vec::new(), trailers: Vec::new() },
                ..base.clone()
            },
        ),
        ("Transfer-Encoding: chunked, gzip", Shape { framing: Framing::ChunkedNotLast, ..base.clone() }),
        (
            "trailers with scrub_responses = false (h2)",
            Shape {
                framing: Framing::Chunked { codings: Vec::new(), cuts: vec![3], trailers: vec![(0, Form::Raw)] },
                off: true,
                h2: true,
                ..base.clone()
            },
        ),
        (
            "trailers with scrub_responses = false (h1)",
            Shape {
                framing: Framing::Chunked {
                    codings: Vec::new(),
                    cuts: vec![3],
                    trailers: vec![(1, Form::PercentUpper)],
                },
                off: true,
                ..base.clone()
            },
        ),
        (
            "103 Early Hints and a reason phrase echoing a value",
            Shape {
                reason: Some((0, Form::Raw)),
                informational: vec![(103, 0, Form::Raw), (103, 1, Form::Urlencoded)],
                off: true,
                ..base.clone()
            },
        ),
        ("a redirect's Location and a header", Shape { status: 302, header: Some((1, Form::Raw)), ..base.clone() }),
        (
            "a value split across chunks under gzip content coding",
            Shape {
                content: vec![Content::Gzip, Content::Br],
                framing: Framing::Chunked { codings: Vec::new(), cuts: vec![1, 2, 3, 5, 8, 13], trailers: Vec::new() },
                ..base
            },
        ),
    ]
}

#[test]
fn every_byte_the_caller_receives_is_scrubbed_or_refused() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let bench = runtime.block_on(bench());
    let mut failures = Vec::new();
    for (name, shape) in seeds() {
        if let Err(e) = runtime.block_on(check(&bench, &shape)) {
            failures.push(format!("seed {name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let config = ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let outcome = runner.run(&shape(), |shape| {
        runtime.block_on(check(&bench, &shape)).map_err(proptest::test_runner::TestCaseError::fail)
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    runtime.block_on(bench.gw.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_record_reasons_never_name_a_private_upstream() {
    let fx = Fixture::new();
    let closed = common::closed_port();
    // An upstream that accepts and never answers (for the timeout).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let cases = Cases::default();
    let raw = start_upstream(cases.clone()).await;
    cases.lock().unwrap().insert(
        0,
        vec![
            b"HTTP/1.1 200 OK\r\ncontent-encoding: zstd\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc".to_vec(),
        ],
    );
    let secrets = format!("[flows]\napi_key = {}\ncode = {}\n", serde_json::json!(KEY), serde_json::json!(CODE));
    write_private(&fx.path().join("secrets.toml"), &secrets);
    let private = "private_fields = [\"upstream\"]\nupstream_response_timeout = \"1s\"\n";
    let triggers = [
        ("refused", format!("http://{closed}/private-flow-path/refused?sig=PRIVATE-SIG")),
        ("silent", format!("http://{silent_addr}/private-flow-path/silent?sig=PRIVATE-SIG")),
        ("coded", format!("http://{raw}/private-flow-path/coded?sig=PRIVATE-SIG")),
    ];
    let text: String = triggers
        .iter()
        .map(|(name, url)| trigger_to(name, &format!("/{name}"), url, &format!("{INJECT}{private}")))
        .collect();
    let policy = fx
        .policy_text(&format!("[vault.files]\nkind = \"file\"\npath = \"secrets.toml\"\n\n{text}"))
        .replacen("[admin]\n", "[admin]\nloopback_role = \"viewer\"\n", 1);
    let gw = fx.serve_policy(&policy).await;
    let client = fx.client(false);
    for ((name, url), status) in triggers.iter().zip([502, 504, 502]) {
        let response = client.get(gw.url(&format!("/{name}"))).header("x-case", "0").send().await.unwrap();
        assert_eq!(response.status(), status, "{name}");
        let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let record = common::run_record(&gw, &id).await;
        let reason = record["reason"].as_str().unwrap_or_default().to_owned();
        assert!(reason.contains(&format!("trigger {name}")), "{name}: the reason names the trigger: {reason}");
        let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
        for private in ["private-flow-path", "PRIVATE-SIG", "127.0.0.1", port, "http://"] {
            assert!(!reason.contains(private), "{name}: the reason shows {private:?}: {reason}");
        }
        let listed = common::runs_at_least(&gw, &format!("trigger={name}"), 1).await;
        let shown = serde_json::to_string(&listed).unwrap();
        assert!(!shown.contains("private-flow-path"), "{name}: /runs shows the upstream: {shown}");
    }
    gw.shutdown().await;
}
