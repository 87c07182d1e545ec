//! Listeners: accept with a connection cap, TLS handshake (rustls, ALPN h2/http1.1),
//! HTTP/1.1 and HTTP/2 with header timeouts and size caps, idle keep-alive timeout,
//! and graceful shutdown that lets in-flight calls finish within a deadline.
//!
//! [`run`] takes its listeners and its shutdown signal as arguments, so tests start it
//! on `127.0.0.1:0` and stop it at will.

use crate::gateway::Gateway;
use crate::policy::Policy;
use crate::proxy::{self, Connection};
use crate::tls::ServerTls;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// The sockets one gateway serves on, bound before `run` so callers learn the ports.
#[derive(Debug)]
pub struct Listeners {
    /// HTTPS (needs TLS in the policy).
    pub https: Option<TcpListener>,
    /// Plain HTTP, only when the policy asks for it.
    pub plain: Option<TcpListener>,
    /// The admin listener.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses the policy names.
    ///
    /// # Errors
    /// An address is in use or not ours.
    pub async fn bind(policy: &Policy) -> io::Result<Self> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
        };
        let https = match &policy.server.tls {
            Some(_) => Some(bind(policy.server.listen).await?),
            None => None,
        };
        let plain = match policy.server.plain_http_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let admin = match policy.admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Self { https, plain, admin })
    }

    /// The bound HTTPS address.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound plain-HTTP address.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight calls finish
/// within the policy's `shutdown_grace`, and returns.
///
/// # Errors
/// The TLS configuration cannot be built.
pub async fn run(
    gateway: Arc<Gateway>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let policy = gateway.policy();
    let (stop_tx, stop_rx) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(policy.limits.max_connections));
    let max_connections = policy.limits.max_connections;
    let ids = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();

    if let Some(listener) = listeners.https {
        let tls = policy.server.tls.as_ref().expect("an https listener is bound only when TLS is configured");
        let serving = Arc::new(ServerTls::new((*tls.certified_key).clone(), tls.client_certs.as_ref())?);
        gateway.attach_tls(serving.clone());
        let accept = AcceptLoop {
            gateway: gateway.clone(),
            connections: connections.clone(),
            ids: ids.clone(),
            stop: stop_rx.clone(),
        };
        tasks.spawn(accept.run(listener, Some(serving)));
    }
    if let Some(listener) = listeners.plain {
        let accept = AcceptLoop {
            gateway: gateway.clone(),
            connections: connections.clone(),
            ids: ids.clone(),
            stop: stop_rx.clone(),
        };
        tasks.spawn(accept.run(listener, None));
    }
    if let Some(listener) = listeners.admin {
        tasks.spawn(crate::admin::serve(gateway.clone(), listener, stop_rx.clone()));
    }
    gateway.set_ready(true);
    tracing::info!(version = %policy.version, "flowgate is ready");

    shutdown.await;
    gateway.set_ready(false);
    tracing::info!("shutting down: no new connections; draining in-flight calls");
    let _ = stop_tx.send(true);
    let grace = gateway.policy().limits.shutdown_grace;
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(grace, connections.acquire_many(all)).await;
    if drained.is_err() {
        tracing::warn!(?grace, "in-flight calls did not finish within the shutdown grace; closing them");
    }
    tasks.abort_all();
    // Records of drained calls must reach the file before the process exits.
    if !gateway.audit.flush(Duration::from_secs(5)) {
        tracing::warn!("the run history could not be flushed completely before shutdown");
    }
    Ok(())
}

struct AcceptLoop {
    gateway: Arc<Gateway>,
    connections: Arc<Semaphore>,
    ids: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
}

impl AcceptLoop {
    async fn run(mut self, listener: TcpListener, tls: Option<Arc<ServerTls>>) {
        loop {
            // Past the cap, connections wait in the kernel's accept queue.
            let permit = tokio::select! {
                permit = self.connections.clone().acquire_owned() => permit,
                _ = self.stop.changed() => return,
            };
            let Ok(permit) = permit else { return };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = self.stop.changed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Global IP rules that certainly refuse this peer close the socket before the
            // TLS handshake costs anything.
            let policy = self.gateway.policy();
            if !policy.firewall.check_peer_at_accept(peer.ip(), &policy.trusted_proxies) {
                metrics::counter!("flowgate_connections_refused_total", "reason" => "firewall").increment(1);
                tracing::debug!(%peer, "connection refused by the global firewall");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let connection =
                Arc::new(Connection { peer, tls: tls.is_some(), id: self.ids.fetch_add(1, Ordering::Relaxed) });
            let gateway = self.gateway.clone();
            let stop = self.stop.clone();
            // The TLS settings current now (a reload swaps them for later connections).
            let tls = tls.as_deref().map(ServerTls::acceptor);
            tokio::spawn(async move {
                metrics::gauge!("flowgate_open_connections").increment(1.0);
                serve_connection(gateway, connection, stream, tls, stop).await;
                metrics::gauge!("flowgate_open_connections").decrement(1.0);
                drop(permit);
            });
        }
    }
}

async fn serve_connection(
    gateway: Arc<Gateway>,
    connection: Arc<Connection>,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let limits = gateway.policy().limits.clone();
    let activity = Arc::new(Activity::new());
    let stream = ActivityIo { inner: stream, activity: activity.clone() };
    match tls {
        Some(acceptor) => {
            // The handshake gets the same budget as a request head: a silent client is dropped.
            match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => serve_http(gateway, connection, tls_stream, activity, stop, &limits).await,
                Ok(Err(error)) => tracing::debug!(peer = %connection.peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %connection.peer, "TLS handshake timed out"),
            }
        }
        None => serve_http(gateway, connection, stream, activity, stop, &limits).await,
    }
}

async fn serve_http<S>(
    gateway: Arc<Gateway>,
    connection: Arc<Connection>,
    stream: S,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
    limits: &crate::policy::Limits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(limits.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(20));
    let in_flight = activity.clone();
    let service = service_fn(move |request| {
        let gateway = gateway.clone();
        let connection = connection.clone();
        let in_flight = in_flight.clone();
        async move {
            // A guard, not a pair of calls: an h2 stream reset drops this future midway.
            let _busy = Busy::begin(in_flight);
            proxy::handle(gateway, connection, request).await
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_millis(500).min(limits.idle_timeout));
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick(), if !closing => {
                if activity.idle_for() >= limits.idle_timeout {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// When a connection last moved bytes, and how many calls are being handled on it.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { epoch: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicU64::new(0) }
    }
    fn touch(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }
    fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }
    /// Zero while a call is being handled; otherwise the time since bytes last moved.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
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

/// A socket that records activity on every read and write (for the idle timeout).
struct ActivityIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
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
            self.activity.touch();
        }
        polled
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
