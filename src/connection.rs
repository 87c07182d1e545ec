//! Serving one accepted connection, for the main and the admin listener alike: the TLS
//! handshake within `header_read_timeout`, hyper's HTTP/1.1 and HTTP/2 with their caps, and
//! the connection's watchdog, which closes it when it carries no request, when it is idle
//! for `idle_timeout` (counted in calls), and when a response has waited `send_timeout`
//! for a caller that takes none of it (see `docs/ARCHITECTURE.md`, "Resource bounds").

use crate::policy::Limits;
use crate::web;
use futures_util::task::AtomicWaker;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::AbortOnDropHandle;

/// Serves one accepted connection (TLS handshake when `tls` is given, then HTTP/1.1 or
/// HTTP/2) until it ends, is idle for `idle_timeout`, holds a response the caller does not
/// take for `send_timeout`, or `stop` turns true. The main and the admin listener both
/// serve their connections here, so every bound on a connection holds for both.
/// `on_handshake` sees the finished TLS session (its client certificate) before the first
/// request is read.
pub(crate) async fn serve_connection<H, F, B>(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    peer: SocketAddr,
    limits: &Limits,
    stop: impl Future<Output = ()> + Send + 'static,
    handler: H,
    on_handshake: impl FnOnce(&rustls::ServerConnection),
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<web::BoxError>,
{
    if let Some(acceptor) = tls {
        // The handshake gets the same budget as a request head: a silent client is dropped.
        match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => {
                on_handshake(tls_stream.get_ref().1);
                let activity = Arc::new(Activity::new());
                let stream = ActivityIo::new(tls_stream, activity.clone());
                serve_http(stream, activity, stop, limits, handler).await;
            }
            Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    } else {
        let activity = Arc::new(Activity::new());
        let stream = ActivityIo::new(stream, activity.clone());
        serve_http(stream, activity, stop, limits, handler).await;
    }
}

async fn serve_http<S, H, F, B>(
    stream: S,
    activity: Arc<Activity>,
    stop: impl Future<Output = ()> + Send + 'static,
    limits: &Limits,
    handler: H,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<web::BoxError>,
{
    // The protocol layers allow twice the policy's head size, so that the exact count in
    // `admit` answers an oversized head with a proper 431 (JSON, request id, run record, a
    // stream that ends cleanly). Only beyond that do hyper (h1: a bare 431, then close) and
    // h2 (431, then RST_STREAM(PROTOCOL_ERROR)) refuse on their own, with memory bounded.
    let protocol_head_bytes = limits.max_header_bytes.saturating_mul(2);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // No hyper timer here: the watchdog bounds the wait for a head (`watch`), without a
        // timer made and dropped for every call.
        .max_buf_size(protocol_head_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(protocol_head_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(Some(limits.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(20));
    let in_flight = activity.clone();
    let handler = Arc::new(handler);
    let service = service_fn(move |request| {
        let in_flight = in_flight.clone();
        let handler = handler.clone();
        async move {
            // A guard, not a pair of calls: an h2 stream reset drops this future midway. It
            // lives in the response body, so a call is in flight until its last byte is sent.
            let busy = Busy::begin(in_flight);
            // Boxed: a call's future is several KiB, and h2 spawns each stream as a task
            // that tokio moves whole several times (spawn, each stage write); a box moves
            // as a pointer. Bound in its own statement, so the unboxed value is not kept
            // in this future too (docs/PERFORMANCE.md, "The size of a call's future").
            let call = Box::pin(handler(request));
            let response = call.await;
            // Not boxed again: the protocol layer polls the guard and the body directly.
            Ok::<_, std::convert::Infallible>(response.map(|body| BusyBody::new(body, busy)))
        }
    });
    // The watchdog is a task of its own: this one reads a single word of it per wake,
    // instead of polling a timer and the stop signals every time a call moves.
    let _watchdog = AbortOnDropHandle::new(tokio::spawn(watch(activity.clone(), stop, WatchLimits::new(limits))));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    let ended = std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            match activity.order(cx) {
                Order::CloseGracefully if !closing => {
                    // Then polled again, so that hyper acts on it now.
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Order::Drop => return Poll::Ready(None),
                Order::Serve | Order::CloseGracefully => return Poll::Pending,
            }
        }
    })
    .await;
    if let Some(Err(error)) = ended {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// What a connection's watchdog tells the task serving it (kept in [`Activity::order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Go on serving.
    Serve = 0,
    /// Finish the calls in flight, take no more, then end (h2: GOAWAY).
    CloseGracefully = 1,
    /// End now: the peer broke a bound.
    Drop = 2,
}

/// The bounds the watchdog enforces, and how often it looks.
#[derive(Debug, Clone, Copy)]
struct WatchLimits {
    period: Duration,
    header_read_timeout: Duration,
    send_timeout: Duration,
    idle_timeout: Duration,
}

impl WatchLimits {
    fn new(limits: &Limits) -> Self {
        let period = Duration::from_millis(500).min(limits.idle_timeout).min(limits.send_timeout / 2);
        Self {
            period: period.max(Duration::from_millis(10)),
            header_read_timeout: limits.header_read_timeout,
            send_timeout: limits.send_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }
}

/// A connection's watchdog: looks at its [`Activity`] every `period` and orders it closed
/// when `stop` resolves, when it waits for a request head longer than
/// `header_read_timeout` (a silent or trickling peer), when a response has waited
/// `send_timeout` for a caller that takes none of it, or when it is idle for
/// `idle_timeout`. It ends with its connection (the serving task aborts it).
async fn watch(activity: Arc<Activity>, stop: impl Future<Output = ()> + Send + 'static, limits: WatchLimits) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(limits.period);
    let mut closing = false;
    // An idle connection closed gracefully gets this long to go; a peer that ignores the
    // GOAWAY (or never acknowledges its PING) is then dropped.
    let mut idle_deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            () = &mut stop, if !closing => {
                closing = true;
                activity.tell(Order::CloseGracefully);
            }
            _ = tick.tick() => {
                // No request head within `header_read_timeout`: of the connection's start
                // (the protocol sniffing does not time out on its own), or on HTTP/1.1 of
                // the last call's end (a keep-alive peer trickling its next head).
                if activity.waiting_for_head() >= limits.header_read_timeout {
                    metrics::counter!("flowgate_connections_closed_total", "reason" => "no_request").increment(1);
                    tracing::debug!("no request head within the header timeout; dropping the connection");
                    activity.tell(Order::Drop);
                    return;
                }
                // A response the caller has not taken more of for `send_timeout`: the caller
                // stopped reading (or holds a zero window). Dropping the connection drops its
                // response bodies and, with them, their upstream connections.
                if activity.longest_send_wait() >= limits.send_timeout {
                    metrics::counter!("flowgate_connections_closed_total", "reason" => "send_timeout").increment(1);
                    tracing::debug!(send_timeout = ?limits.send_timeout, "a response was not taken in time; dropping the connection");
                    activity.tell(Order::Drop);
                    return;
                }
                if let Some(deadline) = idle_deadline {
                    if Instant::now() >= deadline && activity.idle_for() > Duration::ZERO {
                        tracing::debug!("idle connection did not close gracefully; dropping it");
                        activity.tell(Order::Drop);
                        return;
                    }
                } else if !closing && activity.idle_for() >= limits.idle_timeout {
                    closing = true;
                    idle_deadline = Some(Instant::now() + IDLE_CLOSE_GRACE);
                    activity.tell(Order::CloseGracefully);
                }
            }
        }
    }
}

/// How long an idle connection told to close gracefully may take before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A response body that keeps its call marked in flight until it is sent (or dropped),
/// and tells its connection's watchdog whether it waits for the caller.
///
/// The protocol layers stop polling a body while the caller does not take bytes (h1: the
/// socket is full; h2: the stream or connection window is zero), so no timer inside the
/// body could fire: the body only stamps when it last handed out a frame, and the
/// connection's watchdog ([`Activity::longest_send_wait`]) judges the stamps.
struct BusyBody<B> {
    inner: B,
    progress: Arc<SendProgress>,
    busy: Busy,
}

impl<B: http_body::Body> BusyBody<B> {
    fn new(inner: B, busy: Busy) -> Self {
        // The head is ready: from now on the caller is to take it.
        let progress = busy.0.sending(http_body::Body::is_end_stream(&inner));
        Self { inner, progress, busy }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let waiting_since = match &polled {
            // A frame handed out: the protocol layer polls again (or, after the last frame,
            // drops the body) once the caller took it. h2 keeps a body whose last frame
            // still waits for window, so that wait counts too.
            Poll::Ready(Some(Ok(_))) => self.busy.0.now_ms(),
            // Waiting for the upstream (bounded by the upstream's own timeouts), or done.
            _ => NOT_WAITING,
        };
        self.progress.waiting_since_ms.store(waiting_since, Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `SendProgress::waiting_since_ms` of a body that is not waiting for the caller.
const NOT_WAITING: u64 = u64::MAX;

/// Since when one response body has waited for the caller to take more of it
/// ([`NOT_WAITING`] when it waits for its upstream or is done), in milliseconds since
/// its connection's [`Activity::epoch`].
struct SendProgress {
    waiting_since_ms: AtomicU64,
}

/// When a connection was last active, and how many calls are being handled on it
/// (on tokio's clock, so tests can pause it).
///
/// A call counts from its request head to its response's last byte. Between calls, an
/// HTTP/1.1 connection's bytes count too (a request head on its way). An HTTP/2
/// connection's bytes do not: PINGs, SETTINGS and `WINDOW_UPDATEs` keep a connection alive at
/// the transport level but are not use, and counting them would let an idle h2 connection
/// (hyper answers PINGs, and sends its own) hold a slot of `max_connections` forever.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicU64,
    /// Calls begun on this connection so far.
    calls_begun: AtomicU64,
    /// The response bodies handed to the protocol layer and not yet dropped (at most one
    /// per call in flight: `max_streams_per_connection`).
    sending: std::sync::Mutex<Vec<Arc<SendProgress>>>,
    /// Since when no call has been in flight (ms on `epoch`'s clock): set as the last one
    /// ends.
    between_calls_since_ms: AtomicU64,
    /// The connection speaks HTTP/2 (its first bytes were the preface).
    h2: AtomicBool,
    /// The watchdog's latest [`Order`], read by the serving task on every wake.
    order: AtomicU8,
    /// The serving task, woken when the order changes.
    serving_task: AtomicWaker,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            calls_begun: AtomicU64::new(0),
            sending: std::sync::Mutex::new(Vec::new()),
            between_calls_since_ms: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            order: AtomicU8::new(Order::Serve as u8),
            serving_task: AtomicWaker::new(),
        }
    }
    /// The watchdog's order, for the serving task: registers it to be woken when the
    /// order changes, then reads it (in that order, so no change is missed).
    fn order(&self, cx: &Context<'_>) -> Order {
        self.serving_task.register(cx.waker());
        match self.order.load(Ordering::Acquire) {
            0 => Order::Serve,
            1 => Order::CloseGracefully,
            _ => Order::Drop,
        }
    }
    /// The watchdog orders the serving task.
    fn tell(&self, order: Order) {
        self.order.store(order as u8, Ordering::Release);
        self.serving_task.wake();
    }
    /// How long the connection has waited for a request head: since its start until its
    /// first call begins; on HTTP/1.1, since the last call ended while none is in flight.
    /// Zero otherwise (an h2 connection between calls is bounded by `idle_timeout`).
    fn waiting_for_head(&self) -> Duration {
        let since = if self.calls_begun.load(Ordering::Relaxed) == 0 {
            0
        } else if self.h2.load(Ordering::Relaxed) || self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        } else {
            self.between_calls_since_ms.load(Ordering::Relaxed)
        };
        Duration::from_millis(self.now_ms().saturating_sub(since))
    }
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NOT_WAITING - 1)
    }
    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }
    /// Registers a response body about to be sent; it waits for the caller from now
    /// unless it is already complete.
    fn sending(&self, ended: bool) -> Arc<SendProgress> {
        let since = if ended { NOT_WAITING } else { self.now_ms() };
        let mut sending = self.sending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The entry of a body already dropped (the list holds its only reference, and
        // clones are made only here, under the lock) is taken again: on a keep-alive
        // connection, one allocation serves every call between two watchdog ticks.
        if let Some(free) = sending.iter().find(|p| Arc::strong_count(p) == 1) {
            free.waiting_since_ms.store(since, Ordering::Relaxed);
            return free.clone();
        }
        let progress = Arc::new(SendProgress { waiting_since_ms: AtomicU64::new(since) });
        sending.push(progress.clone());
        progress
    }
    /// The longest time any response body of this connection has waited for the caller
    /// to take more of it (zero when none waits).
    fn longest_send_wait(&self) -> Duration {
        let mut sending = self.sending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sending.retain(|p| Arc::strong_count(p) > 1);
        let oldest = sending.iter().map(|p| p.waiting_since_ms.load(Ordering::Relaxed)).min().unwrap_or(NOT_WAITING);
        if oldest == NOT_WAITING {
            return Duration::ZERO;
        }
        Duration::from_millis(self.now_ms().saturating_sub(oldest))
    }
    fn begin(&self) {
        self.calls_begun.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }
    fn end(&self) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.between_calls_since_ms.store(now, Ordering::Relaxed);
        }
    }
    /// Zero while a call is being handled; otherwise the time since bytes last moved.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(self.now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Marks a call in flight on its connection until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.begin();
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The HTTP/2 connection preface starts with these bytes; no HTTP/1.1 request does.
const H2_PREFACE_START: &[u8; 4] = b"PRI ";

/// A (plaintext) stream that records activity on every read and write, for the idle
/// timeout, until its first bytes show it speaks HTTP/2 (see [`Activity`]).
struct ActivityIo<T> {
    inner: T,
    activity: Arc<Activity>,
    /// The first bytes read, until there are enough to tell the protocol.
    first: Vec<u8>,
    /// Bytes count as activity (HTTP/1.1, or not known yet).
    counts: bool,
}

impl<T> ActivityIo<T> {
    fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity, first: Vec::with_capacity(H2_PREFACE_START.len()), counts: true }
    }

    fn touch(&self) {
        // While a call is in flight the connection is not idle, whatever its bytes do
        // (`Activity::idle_for`), and the call's end stamps the time: no clock is read for
        // the reads and writes of a call.
        if self.counts && self.activity.in_flight.load(Ordering::Relaxed) == 0 {
            self.activity.touch();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let want = H2_PREFACE_START.len();
            if self.first.len() < want {
                let take = (want - self.first.len()).min(read.len());
                self.first.extend_from_slice(&read[..take]);
                if self.first.len() == want && self.first == H2_PREFACE_START {
                    self.counts = false;
                    self.activity.h2.store(true, Ordering::Relaxed);
                }
            }
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// What a scripted body answers next: a frame (`Some`) or its end (`None`).
    type Script = Arc<std::sync::Mutex<VecDeque<Option<bytes::Bytes>>>>;

    /// A response body whose next poll answers what the test queued: a frame, the end, or
    /// (nothing queued) `Pending`, as a body waiting for its upstream would.
    struct Scripted(Script);

    impl http_body::Body for Scripted {
        type Data = bytes::Bytes;
        type Error = web::BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            match self.0.lock().unwrap().pop_front() {
                None => Poll::Pending,
                Some(Some(data)) => Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
                Some(None) => Poll::Ready(None),
            }
        }
    }

    /// What the protocol layer and the clock do to a connection's response bodies.
    #[derive(Debug, Clone)]
    enum Step {
        /// A call's response is handed over (its head is ready to send).
        Respond,
        /// The protocol layer polls body `n`, which hands out a frame.
        Frame(usize),
        /// The protocol layer polls body `n`, which waits for its upstream.
        Upstream(usize),
        /// The protocol layer polls body `n`, which ends.
        End(usize),
        /// Body `n` is dropped (sent, or its stream reset).
        Drop(usize),
        /// Time passes without any poll (the caller takes no bytes).
        Wait(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Respond),
            (0usize..6).prop_map(Step::Frame),
            (0usize..6).prop_map(Step::Upstream),
            (0usize..6).prop_map(Step::End),
            (0usize..6).prop_map(Step::Drop),
            (1u64..5_000).prop_map(Step::Wait),
        ]
    }

    proptest! {
        /// The watchdog's view (`longest_send_wait`) equals a model written from the rule
        /// alone: a live body waits for the caller from its hand-over or its last frame,
        /// and not while it waits for its upstream or after its end; the answer is the
        /// longest wait among live bodies. Seeds: a body never polled (h2 zero window) and
        /// a body polled once then never again (h1 full socket).
        #[test]
        fn the_watchdog_sees_the_longest_wait_for_the_caller(steps in proptest::collection::vec(step(), 0..60)) {
            check_steps(&steps)?;
        }
    }

    #[test]
    fn seeds_a_zero_window_and_a_full_socket_are_waits() {
        check_steps(&[Step::Respond, Step::Wait(30_000)]).unwrap();
        check_steps(&[Step::Respond, Step::Frame(0), Step::Wait(30_000)]).unwrap();
        check_steps(&[Step::Respond, Step::Upstream(0), Step::Wait(30_000)]).unwrap();
    }

    fn check_steps(steps: &[Step]) -> Result<(), TestCaseError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let activity = Arc::new(Activity::new());
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            // Live bodies with their scripts, and the model: since when each waits (ms).
            let mut bodies: Vec<(BusyBody<web::ResponseBody>, Script, Option<u64>)> = Vec::new();
            let mut now = 0u64;
            for step in steps {
                match step {
                    Step::Respond => {
                        let script = Arc::new(std::sync::Mutex::new(VecDeque::new()));
                        let body = http_body_util::BodyExt::boxed_unsync(Scripted(script.clone()));
                        bodies.push((BusyBody::new(body, Busy::begin(activity.clone())), script, Some(now)));
                    }
                    Step::Frame(n) | Step::Upstream(n) | Step::End(n) => {
                        let Some((body, script, since)) = bodies.get_mut(*n) else { continue };
                        let (queued, model) = match step {
                            Step::Frame(_) => (Some(Some(bytes::Bytes::from_static(b"x"))), Some(now)),
                            Step::End(_) => (Some(None), None),
                            _ => (None, None),
                        };
                        if let Some(queued) = queued {
                            script.lock().unwrap().push_back(queued);
                        }
                        let _ = http_body::Body::poll_frame(Pin::new(body), &mut cx);
                        *since = model;
                    }
                    Step::Drop(n) => {
                        if *n < bodies.len() {
                            bodies.remove(*n);
                        }
                    }
                    Step::Wait(ms) => {
                        tokio::time::advance(Duration::from_millis(*ms)).await;
                        now += ms;
                    }
                }
                let longest = bodies.iter().filter_map(|(_, _, since)| since.map(|s| now - s)).max().unwrap_or(0);
                prop_assert_eq!(activity.longest_send_wait(), Duration::from_millis(longest));
                prop_assert_eq!(activity.in_flight.load(Ordering::Relaxed), bodies.len() as u64);
            }
            Ok(())
        })
    }

    /// What happens to a connection, as the head-wait rule sees it.
    #[derive(Debug, Clone)]
    enum Event {
        /// A call begins (its head was read).
        Begin,
        /// Call `n` in flight ends (its response was sent or dropped).
        End(usize),
        /// Time passes.
        Wait(u64),
        /// The connection turns out to speak HTTP/2.
        SpeaksH2,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Begin),
            (0usize..4).prop_map(Event::End),
            (1u64..20_000).prop_map(Event::Wait),
            Just(Event::SpeaksH2),
        ]
    }

    proptest! {
        /// `waiting_for_head` equals a model written from the rule alone: from the start
        /// until a first call begins; then, on HTTP/1.1 only, from the end of the last call
        /// while none is in flight. Seeds: a keep-alive peer that trickles its second head
        /// after one call (the wait counts from that call's end, not from the start), and
        /// h2 between calls (never counted: `idle_timeout` bounds it).
        #[test]
        fn the_watchdog_sees_how_long_a_head_is_awaited(events in proptest::collection::vec(event(), 0..40)) {
            check_head_waits(&events)?;
        }
    }

    #[test]
    fn seeds_a_keep_alive_trickle_and_h2_between_calls() {
        check_head_waits(&[Event::Wait(3_000), Event::Begin, Event::End(0), Event::Wait(11_000)]).unwrap();
        check_head_waits(&[Event::SpeaksH2, Event::Begin, Event::End(0), Event::Wait(11_000)]).unwrap();
        check_head_waits(&[Event::Begin, Event::Begin, Event::End(0), Event::Wait(11_000), Event::End(0)]).unwrap();
    }

    fn check_head_waits(events: &[Event]) -> Result<(), TestCaseError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let activity = Arc::new(Activity::new());
            let mut calls: Vec<Busy> = Vec::new();
            // The model: the clock, whether a call ever began, h2, and the last call's end.
            let (mut now, mut begun, mut h2, mut last_end) = (0u64, false, false, 0u64);
            for event in events {
                match event {
                    Event::Begin => {
                        calls.push(Busy::begin(activity.clone()));
                        begun = true;
                    }
                    Event::End(n) => {
                        if *n < calls.len() {
                            calls.remove(*n);
                            if calls.is_empty() {
                                last_end = now;
                            }
                        }
                    }
                    Event::Wait(ms) => {
                        tokio::time::advance(Duration::from_millis(*ms)).await;
                        now += ms;
                    }
                    Event::SpeaksH2 => {
                        activity.h2.store(true, Ordering::Relaxed);
                        h2 = true;
                    }
                }
                let model = if !begun {
                    now
                } else if h2 || !calls.is_empty() {
                    0
                } else {
                    now - last_end
                };
                prop_assert_eq!(activity.waiting_for_head(), Duration::from_millis(model), "after {:?}", event);
            }
            Ok(())
        })
    }
}
