//! Content codings on triggers whose response bodies are scrubbed: the byte-level scrubber
//! can only recognise a secret in the body as it is sent, so a compressed body must not
//! pass it unseen.
//!
//! Decision: the upstream is asked for `Accept-Encoding: identity` (the caller's own
//! preference is dropped), and `Range`/`If-Range` are removed (a caller could otherwise
//! fetch an echoed value in pieces too short to recognise). An upstream that compresses
//! anyway has its body decoded before scrubbing when the coding is `gzip` (`x-gzip`),
//! `deflate` (zlib, as HTTP defines it) or `br`, in any chain of them; the caller receives
//! it decoded (no re-encoding: `Content-Encoding` and `Content-Length` are removed, a strong
//! `ETag` becomes weak). Any other coding (`zstd`, `compress`, unknown names) cannot be
//! inspected and the call fails with 502 rather than pass it on. Decoding streams in
//! bounded chunks, so a compression bomb costs time, not memory.
//!
//! Transfer codings are a property of the upstream hop: hyper's client undoes only the
//! final `chunked` and leaves any other (`Transfer-Encoding: gzip, chunked`, or a
//! close-delimited `gzip`) in the body bytes, while `Transfer-Encoding` itself is dropped as
//! hop-by-hop. So on every trigger, scrubbing or not, `gzip` (`x-gzip`) and `deflate`
//! transfer codings are undone here before anything else reads the body, and any other
//! (`compress`, unknown names, `chunked` anywhere but last) is a 502, never passed on.

use crate::web::{BoxError, UpstreamBody};
use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder};
use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, header};
use http_body::{Body, Frame};
use http_body_util::{BodyDataStream, BodyExt, StreamBody};
use tokio::io::BufReader;
use tokio_util::io::{ReaderStream, StreamReader};

/// Largest chunk of decoded body produced at a time.
const DECODED_CHUNK: usize = 16 * 1024;

/// A content coding flowgate can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` / `x-gzip` (one or more members).
    Gzip,
    /// `deflate`: the zlib format (RFC 9110 §8.4.1.2).
    Deflate,
    /// `br`.
    Brotli,
}

/// A content or transfer coding that cannot be decoded (named in the private reason).
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent coding {0:?}, which flowgate cannot decode to inspect")]
pub(crate) struct UnsupportedCoding(pub String);

/// Rewrites an upstream request so that its response can be scrubbed: identity encoding,
/// no ranges.
pub(crate) fn ask_for_scrubbable(headers: &mut HeaderMap) {
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    // Few calls ask for a range: names compared first, hashed removal only then.
    if headers.keys().any(|name| name == header::RANGE || name == header::IF_RANGE) {
        headers.remove(header::RANGE);
        headers.remove(header::IF_RANGE);
    }
}

/// The codings applied to a response body, in the order they were applied (`identity`
/// entries skipped).
///
/// # Errors
/// A coding other than gzip, deflate or br.
pub(crate) fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, UnsupportedCoding> {
    let mut out = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| UnsupportedCoding(String::from_utf8_lossy(value.as_bytes()).into()))?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            out.push(match name.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                other => return Err(UnsupportedCoding(other.to_owned())),
            });
        }
    }
    Ok(out)
}

/// The transfer codings hyper left in a response body, in the order they were applied:
/// every entry of `Transfer-Encoding` but a final `chunked` (which hyper removed).
///
/// # Errors
/// A coding other than gzip or deflate, or `chunked` anywhere but last (hyper then reads
/// the body to the connection's end, framing and all).
pub(crate) fn transfer_codings(headers: &HeaderMap) -> Result<Vec<Coding>, UnsupportedCoding> {
    let mut names = Vec::new();
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let text = value.to_str().map_err(|_| UnsupportedCoding(String::from_utf8_lossy(value.as_bytes()).into()))?;
        names.extend(text.split(',').map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()));
    }
    if names.last().is_some_and(|n| n == "chunked") {
        names.pop();
    }
    names
        .into_iter()
        .map(|name| match name.as_str() {
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "deflate" => Ok(Coding::Deflate),
            _ => Err(UnsupportedCoding(name)),
        })
        .collect()
}

/// Undoes transfer `codings` (as returned by [`transfer_codings`]) on `body`; the length
/// the upstream declared, if any, no longer holds.
pub(crate) fn decode_transfer(body: UpstreamBody, codings: &[Coding], headers: &mut HeaderMap) -> UpstreamBody {
    if codings.is_empty() {
        return body;
    }
    headers.remove(header::CONTENT_LENGTH);
    if body.is_end_stream() {
        return body;
    }
    codings.iter().rev().fold(body, |body, coding| decode_one(body, *coding))
}

/// Undoes `codings` (as returned by `codings`) on `body` and fixes the headers that
/// described the encoded representation.
pub fn decode(body: UpstreamBody, codings: &[Coding], headers: &mut HeaderMap) -> UpstreamBody {
    if codings.is_empty() {
        return body;
    }
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    if let Some(etag) = headers.get(header::ETAG)
        && !etag.as_bytes().starts_with(b"W/")
        && let Ok(weak) = HeaderValue::from_bytes(&[b"W/", etag.as_bytes()].concat())
    {
        headers.insert(header::ETAG, weak);
    }
    if body.is_end_stream() {
        // HEAD, 204, 304: nothing to decode (and an empty input is no valid gzip stream).
        return body;
    }
    codings.iter().rev().fold(body, |body, coding| decode_one(body, *coding))
}

fn decode_one(body: UpstreamBody, coding: Coding) -> UpstreamBody {
    let input = BodyDataStream::new(body).map_err(std::io::Error::other);
    let reader = BufReader::with_capacity(DECODED_CHUNK, StreamReader::new(input));
    let decoder: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>> = match coding {
        Coding::Gzip => {
            let mut decoder = GzipDecoder::new(reader);
            decoder.multiple_members(true);
            Box::pin(decoder)
        }
        Coding::Deflate => Box::pin(ZlibDecoder::new(reader)),
        Coding::Brotli => Box::pin(BrotliDecoder::new(reader)),
    };
    let frames = ReaderStream::with_capacity(decoder, DECODED_CHUNK)
        .map_ok(|chunk: Bytes| Frame::data(chunk))
        .map_err(|e| -> BoxError { Box::new(e) });
    StreamBody::new(frames).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZlibEncoder};
    use tokio::io::AsyncReadExt;

    async fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => GzipEncoder::new(data).read_to_end(&mut out).await,
            Coding::Deflate => ZlibEncoder::new(data).read_to_end(&mut out).await,
            Coding::Brotli => BrotliEncoder::new(data).read_to_end(&mut out).await,
        }
        .unwrap();
        out
    }

    fn body(bytes: Vec<u8>) -> UpstreamBody {
        http_body_util::Full::new(Bytes::from(bytes)).map_err(|never| match never {}).boxed_unsync()
    }

    #[tokio::test]
    async fn decodes_each_coding_and_chains() {
        let text = b"{\"echo\":\"a secret\"}".repeat(100);
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli] {
            let mut headers = HeaderMap::new();
            headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
            let decoded = decode(body(encode(coding, &text).await), &[coding], &mut headers);
            assert_eq!(decoded.collect().await.unwrap().to_bytes(), &text[..], "{coding:?}");
            assert_eq!(headers[header::ETAG], "W/\"v1\"");
        }
        let chained = encode(Coding::Brotli, &encode(Coding::Gzip, &text).await).await;
        let decoded = decode(body(chained), &[Coding::Gzip, Coding::Brotli], &mut HeaderMap::new());
        assert_eq!(decoded.collect().await.unwrap().to_bytes(), &text[..]);
    }

    #[test]
    fn names_codings_and_refuses_the_rest() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONTENT_ENCODING, HeaderValue::from_static("x-gzip, identity"));
        headers.append(header::CONTENT_ENCODING, HeaderValue::from_static("BR"));
        assert_eq!(codings(&headers).unwrap(), [Coding::Gzip, Coding::Brotli]);
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(codings(&headers).unwrap_err().0, "zstd");
        let mut request = HeaderMap::new();
        request.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, br"));
        request.insert(header::RANGE, HeaderValue::from_static("bytes=0-3"));
        ask_for_scrubbable(&mut request);
        assert_eq!(request[header::ACCEPT_ENCODING], "identity");
        assert!(request.get(header::RANGE).is_none());
    }

    #[test]
    fn names_transfer_codings_and_refuses_the_rest() {
        let te = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static(v));
            }
            transfer_codings(&headers)
        };
        assert_eq!(te(&[]).unwrap(), []);
        assert_eq!(te(&["chunked"]).unwrap(), []);
        assert_eq!(te(&["gzip, chunked"]).unwrap(), [Coding::Gzip]);
        assert_eq!(te(&["X-Gzip", "deflate, Chunked"]).unwrap(), [Coding::Gzip, Coding::Deflate]);
        assert_eq!(te(&["gzip"]).unwrap(), [Coding::Gzip]);
        assert_eq!(te(&["chunked, gzip"]).unwrap_err().0, "chunked");
        assert_eq!(te(&["compress, chunked"]).unwrap_err().0, "compress");
        assert_eq!(te(&["br"]).unwrap_err().0, "br");
    }

    #[tokio::test]
    async fn a_transfer_coding_is_undone_and_the_length_dropped() {
        let text = b"the body".repeat(50);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        let decoded = decode_transfer(body(encode(Coding::Gzip, &text).await), &[Coding::Gzip], &mut headers);
        assert_eq!(decoded.collect().await.unwrap().to_bytes(), &text[..]);
        assert!(headers.get(header::CONTENT_LENGTH).is_none());
        assert_eq!(headers[header::CONTENT_ENCODING], "br", "the content coding is the representation's: kept");
    }

    #[tokio::test]
    async fn an_empty_body_stays_empty() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let empty = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        let decoded = decode(empty, &[Coding::Gzip], &mut headers);
        assert!(decoded.collect().await.unwrap().to_bytes().is_empty());
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
    }

    #[tokio::test]
    async fn a_broken_stream_fails_the_body() {
        let decoded = decode(body(b"not gzip at all".to_vec()), &[Coding::Gzip], &mut HeaderMap::new());
        assert!(decoded.collect().await.is_err());
    }
}
