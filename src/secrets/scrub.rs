//! Response scrubbing (`scrub_responses = true`): any injected secret value an upstream
//! echoes back is replaced with [`REDACTED_MARKER`] before it reaches the caller, in headers
//! and in the streamed body, including a value split across two body chunks.

use super::value::SecretValue;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use zeroize::Zeroizing;

/// What replaces a secret value in a scrubbed response.
pub const REDACTED_MARKER: &str = "[redacted]";

/// The set of values to replace. Cheap to clone.
#[derive(Clone)]
pub struct Scrubber {
    /// Longest first, so that a value containing another is replaced whole.
    patterns: Arc<Vec<Zeroizing<Vec<u8>>>>,
    /// Bytes that start some value: every other byte is copied without a scan.
    starts: Arc<[bool; 256]>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber").field("values", &self.patterns.len()).finish()
    }
}

enum Scan {
    Full(usize),
    Partial,
    None,
}

impl Default for Scrubber {
    fn default() -> Self {
        Self::new([])
    }
}

impl Scrubber {
    /// A scrubber for these values (empty values are ignored).
    pub fn new(values: impl IntoIterator<Item = SecretValue>) -> Self {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = values
            .into_iter()
            .filter(|v| !v.is_empty())
            .map(|v| Zeroizing::new(v.expose_secret().as_bytes().to_vec()))
            .collect();
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.as_slice().cmp(b.as_slice())));
        patterns.dedup_by(|a, b| a.as_slice() == b.as_slice());
        let mut starts = [false; 256];
        for p in &patterns {
            starts[usize::from(p[0])] = true;
        }
        Self { patterns: Arc::new(patterns), starts: Arc::new(starts) }
    }

    /// True when there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    fn scan(&self, rest: &[u8], last: bool) -> Scan {
        let mut partial = false;
        for p in self.patterns.iter() {
            if rest.len() >= p.len() {
                if rest.starts_with(p) {
                    return Scan::Full(p.len());
                }
            } else if !last && p.starts_with(rest) {
                partial = true;
            }
        }
        if partial { Scan::Partial } else { Scan::None }
    }

    /// Scrubs `buf`; returns the output and leaves in `buf` only a suffix that may be the
    /// start of a value (nothing when `last`).
    fn process(&self, buf: &mut Zeroizing<Vec<u8>>, last: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        while i < buf.len() {
            if !self.starts[usize::from(buf[i])] {
                out.push(buf[i]);
                i += 1;
                continue;
            }
            match self.scan(&buf[i..], last) {
                Scan::Full(len) => {
                    out.extend_from_slice(REDACTED_MARKER.as_bytes());
                    i += len;
                }
                Scan::Partial => break,
                Scan::None => {
                    out.push(buf[i]);
                    i += 1;
                }
            }
        }
        buf.drain(..i);
        out
    }

    /// Scrubs a complete byte string.
    pub fn scrub_bytes(&self, input: &[u8]) -> Vec<u8> {
        if self.is_empty() {
            return input.to_vec();
        }
        self.process(&mut Zeroizing::new(input.to_vec()), true)
    }

    /// Replaces secret values inside response header values.
    pub fn scrub_headers(&self, headers: &mut HeaderMap) {
        if self.is_empty() {
            return;
        }
        for value in headers.values_mut() {
            let scrubbed = self.scrub_bytes(value.as_bytes());
            if scrubbed != value.as_bytes()
                && let Ok(v) = HeaderValue::from_bytes(&scrubbed)
            {
                *value = v;
            }
        }
    }

    /// Wraps a response body. The length changes: drop `Content-Length` when wrapping.
    pub fn wrap<B>(&self, body: B) -> ScrubBody<B> {
        ScrubBody { inner: body, scrubber: self.clone(), tail: Zeroizing::new(Vec::new()), pending: None, done: false }
    }
}

/// A response body with secret values replaced by [`REDACTED_MARKER`]. Holds back at most
/// the longest value's length minus one byte between chunks.
pub struct ScrubBody<B> {
    inner: B,
    scrubber: Scrubber,
    tail: Zeroizing<Vec<u8>>,
    pending: Option<Frame<Bytes>>,
    done: bool,
}

impl<B> Body for ScrubBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.pending.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.tail.extend_from_slice(&data);
                        let out = this.scrubber.process(&mut this.tail, false);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    Err(trailers) => {
                        let out = this.scrubber.process(&mut this.tail, true);
                        if out.is_empty() {
                            return Poll::Ready(Some(Ok(trailers)));
                        }
                        this.pending = Some(trailers);
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    let out = this.scrubber.process(&mut this.tail, true);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none() && self.tail.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn scrubber() -> Scrubber {
        Scrubber::new(["s3cr3t-value".to_owned(), "abc".to_owned(), String::new()].map(SecretValue::new))
    }

    async fn collect(chunks: &[&'static [u8]]) -> Vec<u8> {
        let frames = chunks.iter().map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(c))));
        let body = StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()));
        scrubber().wrap(body).collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn replaces_values_across_chunk_boundaries() {
        assert_eq!(collect(&[b"x s3cr3t-value y"]).await, b"x [redacted] y");
        assert_eq!(collect(&[b"x s3cr", b"3t-val", b"ue y abc"]).await, b"x [redacted] y [redacted]");
        assert_eq!(collect(&[b"s", b"3", b"c", b"r", b"3", b"t", b"-value"]).await, b"[redacted]");
        // A prefix that never completes is released unchanged at the end.
        assert_eq!(collect(&[b"x s3cr3t-val"]).await, b"x s3cr3t-val");
        assert_eq!(collect(&[b"ab", b"x", b"ab"]).await, b"abxab");
    }

    #[test]
    fn scrubs_every_split_point() {
        let s = scrubber();
        let input = b"pre s3cr3t-value mid abc post";
        for split in 0..input.len() {
            let mut buf = Zeroizing::new(input[..split].to_vec());
            let mut out = s.process(&mut buf, false);
            buf.extend_from_slice(&input[split..]);
            out.extend(s.process(&mut buf, true));
            assert_eq!(out, b"pre [redacted] mid [redacted] post", "split at {split}");
        }
    }

    #[test]
    fn scrubs_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_static("token=s3cr3t-value"));
        h.insert("x-other", HeaderValue::from_static("fine"));
        scrubber().scrub_headers(&mut h);
        assert_eq!(h["x-echo"], "token=[redacted]");
        assert_eq!(h["x-other"], "fine");
        assert_eq!(format!("{:?}", scrubber()), "Scrubber { values: 2 }");
    }
}
