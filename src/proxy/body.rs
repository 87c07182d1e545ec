//! Body wrappers on the streaming path: a read pace enforced on every request body (a
//! caller trickling bytes cannot hold a call open), a size cap enforced while the request
//! body streams, a body that replays a buffered prefix before streaming on, and a response
//! body that reports its size when it ends so the access log and run record are written
//! exactly once, after the last byte.

use crate::web::BoxError;
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
pub(super) struct BodyTooLarge {
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
    /// The caller's body stream failed (hung up, reset, malformed, too slow).
    pub errored: AtomicBool,
    /// The caller's body was too slow ([`PacedBody`]).
    pub timed_out: AtomicBool,
    /// The caller's body was read to its end.
    pub ended: AtomicBool,
    /// The body is being waited for: its reader asked for more and the caller has not sent
    /// it yet. While this holds, a wait for the upstream's answer is a wait for the caller.
    pub waiting_for_caller: AtomicBool,
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

/// A request body that fails with `BodyTooLarge` as soon as more than `limit` bytes pass.
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

/// The caller's body arrived too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly: {0}")]
pub struct BodyTooSlow(&'static str);

/// How slowly a request body may arrive: no pause longer than `timeout`, and no more time
/// spent waiting in all than `timeout` plus one second per `min_rate` bytes received.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Longest pause, and the base allowance.
    pub timeout: std::time::Duration,
    /// Bytes per second that extend the allowance; 0 for no rate rule.
    pub min_rate: u64,
}

/// A request body held to a [`Pace`]. Only time spent waiting for the caller counts: while
/// the upstream is slow to take the bytes this body is not polled, and its clock stops.
/// Also records in [`BodyStats`] whether the body was read to its end.
pub struct PacedBody<B> {
    inner: B,
    pace: Pace,
    bytes: u64,
    waited: std::time::Duration,
    waiting_since: Option<tokio::time::Instant>,
    /// Made at the first wait: most bodies (and every empty one) never wait, and then
    /// neither allocate nor read the clock for it.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    stats: Arc<BodyStats>,
}

impl<B> PacedBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, pace: Pace, stats: Arc<BodyStats>) -> Self {
        Self { inner, pace, bytes: 0, waited: std::time::Duration::ZERO, waiting_since: None, timer: None, stats }
    }

    /// Time left before a rule is broken, counted from the current wait's start `since`.
    fn left(&self, since: tokio::time::Instant, now: tokio::time::Instant) -> (std::time::Duration, &'static str) {
        let current = now.saturating_duration_since(since);
        let pause_left = self.pace.timeout.saturating_sub(current);
        if self.pace.min_rate == 0 {
            return (pause_left, "a pause was too long");
        }
        #[expect(clippy::cast_precision_loss, reason = "byte counts and rates stay far below 2^52")]
        let earned = std::time::Duration::from_secs_f64(self.bytes as f64 / self.pace.min_rate as f64);
        let total_left = (self.pace.timeout + earned).saturating_sub(self.waited + current);
        if total_left < pause_left {
            (total_left, "below the minimum rate")
        } else {
            (pause_left, "a pause was too long")
        }
    }
}

impl<B> Body for PacedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                let now = tokio::time::Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                let (left, rule) = this.left(since, now);
                this.stats.waiting_for_caller.store(true, Ordering::Relaxed);
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(now + left)));
                timer.as_mut().reset(now + left);
                if left.is_zero() || timer.as_mut().poll(cx).is_ready() {
                    this.stats.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow(rule)))));
                }
                Poll::Pending
            }
            Poll::Ready(ready) => {
                this.stats.waiting_for_caller.store(false, Ordering::Relaxed);
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                match &ready {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            this.bytes += data.len() as u64;
                        }
                        if this.inner.is_end_stream() {
                            this.stats.ended.store(true, Ordering::Relaxed);
                        }
                    }
                    Some(Err(_)) => {}
                    None => this.stats.ended.store(true, Ordering::Relaxed),
                }
                Poll::Ready(ready.map(|r| r.map_err(Into::into)))
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

/// A body that yields an already-read prefix, then streams the rest of `rest`.
pub struct Prefixed<B> {
    prefix: Option<Bytes>,
    rest: B,
}

impl<B> Prefixed<B> {
    /// `prefix` first, then `rest`.
    pub fn new(prefix: Bytes, rest: B) -> Self {
        Self { prefix: Some(prefix).filter(|p| !p.is_empty()), rest }
    }
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + first);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

/// The upstream stopped sending its body.
#[derive(Debug, thiserror::Error)]
#[error("the upstream body stalled for {0:?}")]
pub(super) struct BodyStalled(pub std::time::Duration);

/// An upstream response body that fails when no frame arrives for `limit`: a stalled
/// upstream must not hold the caller's connection (and its slot) forever.
///
/// Only time spent waiting for the upstream counts: the clock starts when a poll finds no
/// frame, not when the last frame was handed on, so a caller that reads slowly (within
/// `send_timeout`, which bounds that side) never makes the upstream look stalled.
pub struct StallGuard<B> {
    inner: B,
    limit: std::time::Duration,
    /// Made at the first wait: an answer whose frames are ready when asked for (the usual
    /// small one) never allocates it nor reads the clock for it.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A poll found no frame and none has arrived since.
    waiting: bool,
}

impl<B> StallGuard<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, limit: std::time::Duration) -> Self {
        Self { inner, limit, timer: None, waiting: false }
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
                let limit = this.limit;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if !this.waiting {
                    this.waiting = true;
                    timer.as_mut().reset(tokio::time::Instant::now() + limit);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyStalled(this.limit)))));
                }
                Poll::Pending
            }
            ready @ Poll::Ready(_) => {
                this.waiting = false;
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

/// What runs once when a response body ends, fails or is dropped, with the bytes sent and
/// whether the stream completed. A trait rather than a boxed closure, so that the call's
/// end (`call.rs`) lives inside the body itself: no allocation per call.
pub trait OnEnd: Send {
    /// The body ended (`completed`), failed or was dropped after `bytes_out` bytes.
    fn ended(self, bytes_out: u64, completed: bool);
}

impl<F: FnOnce(u64, bool) + Send> OnEnd for F {
    fn ended(self, bytes_out: u64, completed: bool) {
        self(bytes_out, completed);
    }
}

/// A response body that counts bytes and calls its [`OnEnd`] exactly once.
pub struct ObservedBody<B, E: OnEnd> {
    inner: B,
    bytes: u64,
    tap: Option<Arc<Tap>>,
    on_end: Option<E>,
}

impl<B, E: OnEnd> ObservedBody<B, E> {
    /// Wraps `inner`; `tap` keeps the first bytes for capture.
    pub fn new(inner: B, tap: Option<Arc<Tap>>, on_end: E) -> Self {
        Self { inner, bytes: 0, tap, on_end: Some(on_end) }
    }

    fn finish(&mut self, completed: bool) {
        if let Some(on_end) = self.on_end.take() {
            on_end.ended(self.bytes, completed);
        }
    }
}

impl<B, E: OnEnd> Drop for ObservedBody<B, E> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl<B, E> Body for ObservedBody<B, E>
where
    B: Body<Data = Bytes> + Unpin,
    E: OnEnd + Unpin,
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

    /// A body fed by a channel: pending until the test sends a frame.
    struct Fed(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
        }
    }

    /// The stall clock counts only time spent waiting for the upstream: a caller that reads
    /// the next frame late does not make the upstream look stalled.
    #[tokio::test(start_paused = true)]
    async fn a_late_reader_does_not_make_the_upstream_look_stalled() {
        let limit = std::time::Duration::from_secs(10);
        let (feed, fed) = tokio::sync::mpsc::unbounded_channel();
        let mut guard = StallGuard::new(Fed(fed), limit);
        feed.send(Bytes::from_static(b"one")).unwrap();
        assert!(guard.frame().await.unwrap().is_ok());
        // The caller takes 25 s to come back for more (no poll meanwhile).
        tokio::time::sleep(std::time::Duration::from_secs(25)).await;
        let next = tokio::time::timeout(std::time::Duration::from_secs(9), guard.frame()).await;
        assert!(next.is_err(), "the upstream has been waited on for 9 s only: still pending");
        feed.send(Bytes::from_static(b"two")).unwrap();
        assert!(guard.frame().await.unwrap().is_ok());
        // A real stall: nothing for the whole limit while being waited on.
        let stalled = tokio::time::timeout(std::time::Duration::from_secs(11), guard.frame()).await;
        assert!(matches!(stalled, Ok(Some(Err(_)))), "a stall of the whole limit fails the body");
    }

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

    fn trickle(gap_ms: u64) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        let stream = futures_util::stream::unfold(0u32, move |n| async move {
            tokio::time::sleep(std::time::Duration::from_millis(gap_ms)).await;
            (n < 1_000).then(|| (Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x"))), n + 1))
        });
        http_body_util::StreamBody::new(Box::pin(stream))
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_fails_once_its_allowance_is_spent() {
        let stats = Arc::new(BodyStats::default());
        let pace = Pace { timeout: std::time::Duration::from_secs(10), min_rate: 100 };
        let started = tokio::time::Instant::now();
        let Err(error) = PacedBody::new(trickle(1_000), pace, stats.clone()).collect().await else {
            panic!("a body at 1 byte/s must fail")
        };
        assert!(error.to_string().contains("minimum rate"), "{error}");
        // 10 s of allowance plus 1/100 s per byte received: about 10.1 s.
        let took = started.elapsed().as_secs_f64();
        assert!((10.0..10.5).contains(&took), "{took}");
        assert!(stats.timed_out.load(Ordering::Relaxed));
        assert!(!stats.ended.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_timeout_fails_without_a_rate_rule() {
        let pace = Pace { timeout: std::time::Duration::from_secs(2), min_rate: 0 };
        let stats = Arc::new(BodyStats::default());
        let Err(error) = PacedBody::new(trickle(3_000), pace, stats).collect().await else {
            panic!("a 3 s pause must fail")
        };
        assert!(error.to_string().contains("pause"), "{error}");
        // Steady bytes within the pause rule pass, however long the body takes.
        let stats = Arc::new(BodyStats::default());
        let body = PacedBody::new(trickle(1_000), pace, stats.clone()).collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 1_000);
        assert!(stats.ended.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_prefix_is_replayed_before_the_rest() {
        let body = Prefixed::new(Bytes::from_static(b"head-"), Full::new(Bytes::from_static(b"tail")));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"head-tail");
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
