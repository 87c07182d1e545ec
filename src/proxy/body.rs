//! Body wrappers on the streaming path: a size cap enforced while the request body
//! streams (never by buffering), and a response body that reports its size when it ends
//! so the access log and run record are written exactly once, after the last byte.

use crate::policy::upstream_types::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

/// The request body passed the trigger's size limit.
#[derive(Debug, thiserror::Error)]
#[error("request body over {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit.
    pub limit: u64,
}

/// Shared counters of a request body, read after the upstream call.
#[derive(Debug, Default)]
pub struct BodyStats {
    /// Bytes streamed so far.
    pub bytes: AtomicU64,
    /// The limit was crossed.
    pub exceeded: AtomicBool,
    /// The caller's body stream failed (hung up, reset).
    pub errored: AtomicBool,
    /// The first bytes, kept for the run history when the trigger captures.
    pub tap: Option<Tap>,
}

/// The first `max` bytes of a streaming body, for capture. Everything after is only counted.
#[derive(Debug)]
pub struct Tap {
    prefix: std::sync::Mutex<Vec<u8>>,
    max: usize,
}

impl Tap {
    /// Keeps up to `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { prefix: std::sync::Mutex::new(Vec::new()), max }
    }

    fn push(&self, data: &[u8]) {
        let mut prefix = self.prefix.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = self.max.saturating_sub(prefix.len());
        prefix.extend_from_slice(&data[..room.min(data.len())]);
    }

    /// The bytes kept so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.prefix.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A request body that fails with [`BodyTooLarge`] as soon as more than `limit` bytes pass.
pub struct CappedBody<B> {
    inner: B,
    limit: u64,
    stats: Arc<BodyStats>,
}

impl<B> CappedBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, limit: u64, stats: Arc<BodyStats>) -> Self {
        Self { inner, limit, stats }
    }
}

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let total = this.stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
                    if let Some(tap) = &this.stats.tap {
                        tap.push(data);
                    }
                    if total > this.limit {
                        this.stats.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit: this.limit }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.stats.errored.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream stopped sending its body.
#[derive(Debug, thiserror::Error)]
#[error("the upstream body stalled for {0:?}")]
pub struct BodyStalled(pub std::time::Duration);

/// An upstream response body that fails when no frame arrives for `limit`: a stalled
/// upstream must not hold the caller's connection (and its slot) forever.
pub struct StallGuard<B> {
    inner: B,
    limit: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<B> StallGuard<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, limit: std::time::Duration) -> Self {
        Self { inner, limit, timer: Box::pin(tokio::time::sleep(limit)) }
    }
}

impl<B> Body for StallGuard<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyStalled(this.limit)))));
                }
                Poll::Pending
            }
            ready => {
                let deadline = tokio::time::Instant::now() + this.limit;
                this.timer.as_mut().reset(deadline);
                ready
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Called once when a response body ends, fails or is dropped, with the bytes sent and
/// whether the stream completed.
pub type OnEnd = Box<dyn FnOnce(u64, bool) + Send>;

/// A response body that counts bytes and calls [`OnEnd`] exactly once.
pub struct ObservedBody<B> {
    inner: B,
    bytes: u64,
    tap: Option<Arc<Tap>>,
    on_end: Option<OnEnd>,
}

impl<B> ObservedBody<B> {
    /// Wraps `inner`; `tap` keeps the first bytes for capture.
    pub fn new(inner: B, tap: Option<Arc<Tap>>, on_end: OnEnd) -> Self {
        Self { inner, bytes: 0, tap, on_end: Some(on_end) }
    }

    fn finish(&mut self, completed: bool) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.bytes, completed);
        }
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                    if let Some(tap) = &this.tap {
                        tap.push(data);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Ready(None) => this.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::Mutex;

    #[tokio::test]
    async fn cap_fails_past_the_limit() {
        let stats = Arc::new(BodyStats::default());
        let body = CappedBody::new(Full::new(Bytes::from(vec![0u8; 11])), 10, stats.clone());
        assert!(body.collect().await.is_err());
        assert!(stats.exceeded.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_limit() {
        let body = http_body_util::StreamBody::new(futures_util::stream::pending::<Result<Frame<Bytes>, BoxError>>());
        let guarded = StallGuard::new(body, std::time::Duration::from_secs(5));
        let Err(error) = guarded.collect().await else { panic!("the stalled body must fail") };
        assert!(error.to_string().contains("stalled"), "{error}");
    }

    #[tokio::test]
    async fn observer_reports_once_with_the_size() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let body = ObservedBody::new(
            Full::new(Bytes::from_static(b"hello")),
            None,
            Box::new(move |bytes, done| sink.lock().unwrap().push((bytes, done))),
        );
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        assert_eq!(*seen.lock().unwrap(), vec![(5, true)]);
    }
}
