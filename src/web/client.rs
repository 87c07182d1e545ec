//! The upstream HTTP client: the body types sent upstream, flowgate's own HTTP/1.1
//! connection pool, and [`Upstreams`], the pools one gateway keeps.
//!
//! The settings of an upstream (URL, timeouts, TLS roots as a compiled rustls
//! configuration) are compiled with the policy (`policy/upstream.rs`); the pools live here,
//! because they are running state, not part of the policy. The `Gateway` owns one
//! `Upstreams`, built from its first policy: the shared dialer (upstreams without their own
//! CA) lasts for the process; a trigger with its own CA gets its dialer the first time the
//! policy it belongs to sends a call there, so each policy generation has its own.
//!
//! Idle connections wait in a per-thread pool (`web/pool.rs`) keyed by origin and dialer;
//! a call drives its connection in its own task (`web/dial.rs`): no connection task, no
//! lock, no wakeup crossing tasks between the caller and the upstream socket.

use super::dial::{self, DialError, Target};
use super::pool::IdlePool;
use crate::policy::{Policy, Trigger};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Errors a forwarded body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type sent upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why an upstream exchange failed. The source chain is what `web/fault.rs` reads the
/// cause from (an I/O kind, a TLS alert, an HTTP framing fault).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection: unresolvable, refused, unreachable, timed out (`TimedOut`), or the
    /// TLS handshake failed (a `rustls::Error` inside).
    #[error("upstream connect error")]
    Connect(#[source] std::io::Error),
    /// The connection broke or the answer was not HTTP.
    #[error("upstream exchange error")]
    Exchange(#[source] hyper::Error),
    /// The request's URI names no `http`/`https` origin (a bug of the caller).
    #[error("the upstream request URI is not absolute")]
    NotAbsolute,
}

impl UpstreamError {
    /// Whether no connection could be made.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

/// Idle connections kept per origin and per thread: above the calls one thread has in
/// flight to one upstream, or every call past the cap pays a new upstream connection.
/// HTTP/2 callers make that many: 64 connections of 10 streams are 640 calls at once (a
/// cap of 64 made h2 calls in the peer benchmark open upstream connections over and over).
/// Idle ones still go after `idle_timeout`.
const IDLE_PER_ORIGIN: usize = 1024;

/// Where a pooled connection leads: the TLS settings that reached it (a [`Dialer`]'s id)
/// and the origin.
#[derive(PartialEq, Eq)]
struct Origin {
    dialer: u64,
    https: bool,
    authority: Authority,
}

/// As `Authority` hashes itself (case folded, so that equal authorities hash alike), but a
/// chunk at a time: its own hash feeds the hasher byte by byte, which cost about 800
/// instructions a call (checkout and checkin each hash the origin).
impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.dialer.hash(state);
        self.https.hash(state);
        let text = self.authority.as_str().as_bytes();
        state.write_usize(text.len());
        let mut buffer = [0u8; 64];
        for chunk in text.chunks(buffer.len()) {
            let folded = &mut buffer[..chunk.len()];
            folded.copy_from_slice(chunk);
            folded.make_ascii_lowercase();
            state.write(folded);
        }
    }
}

thread_local! {
    /// This thread's idle upstream connections. Per thread, so the hot path takes no lock;
    /// a connection is driven only by the task using it, so it may be picked up by any
    /// task of this thread (and, on a work-stealing runtime, finish on another thread and
    /// wait there).
    static IDLE: RefCell<IdlePool<Origin, Box<Conn>>> = RefCell::new(IdlePool::new(IDLE_PER_ORIGIN));
}

/// An upstream connection sending flowgate's request bodies.
type Conn = dial::Conn<UpstreamBody>;

/// Ids of dialers: never reused, so connections made under one set of trusted roots are
/// never handed to calls that trust others.
static NEXT_DIALER: AtomicU64 = AtomicU64::new(1);

/// How connections of one pool are made: its TLS configuration and limits, and the id its
/// idle connections are kept under.
#[derive(Clone)]
struct Dialer {
    id: u64,
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Dialer {
    fn new(limits: &crate::policy::Limits, tls: &rustls::ClientConfig) -> Self {
        let mut tls = tls.clone();
        // Upstreams are spoken to in HTTP/1.1, and told so.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            id: NEXT_DIALER.fetch_add(1, Ordering::Relaxed),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout: limits.upstream_connect_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Sends `request` on an idle connection of its origin, or a new one. A request an
    /// idle connection turned out unable to take (the upstream had closed it) is sent once
    /// more on a new connection; one whose bytes may have gone out never is.
    async fn send(&self, request: Request<UpstreamBody>) -> Result<Response<UpstreamResponse>, UpstreamError> {
        let (origin, mut request) = origin_form(self.id, request)?;
        // No `yield_now` before the checkout or after the answer, though it batches upstream
        // writes (six times fewer upstream wakeups): measured beside the same code without
        // it, it bought no h1 throughput and cost h2 3–16 % (docs/PERFORMANCE.md,
        // "Yielding to batch upstream writes: tried, removed").
        let mut idle = std::future::poll_fn(|cx| Poll::Ready(checkout(&origin, cx))).await;
        // At most twice: the second time on a new connection, never again after that.
        let (response, conn) = loop {
            let reused = idle.is_some();
            let conn = match idle.take() {
                Some(conn) => conn,
                // Boxed: a connection being opened (TLS state and all) is large and rare;
                // inline, every call's future would carry its size, and be moved with it.
                None => Box::pin(self.dial(&origin)).await?,
            };
            match exchange(conn, request).await {
                Ok(answered) => break answered,
                Err((_, Some(unsent))) if reused => request = unsent,
                Err((error, _)) => return Err(UpstreamError::Exchange(error)),
            }
        };
        Ok(self.lease(response, conn, origin))
    }

    async fn dial(&self, origin: &Origin) -> Result<Box<Conn>, UpstreamError> {
        let default = if origin.https { 443 } else { 80 };
        let target = Target {
            https: origin.https,
            host: origin.authority.host(),
            port: origin.authority.port_u16().unwrap_or(default),
            tls: &self.tls,
            connect_timeout: self.connect_timeout,
        };
        dial::dial(&target).await.map_err(|error| match error {
            DialError::Connect(io) => UpstreamError::Connect(io),
            DialError::Handshake(http) => UpstreamError::Exchange(http),
        })
    }

    /// The response, its body driving `conn` until it ends and then returning it idle.
    fn lease(
        &self,
        response: Response<hyper::body::Incoming>,
        conn: Box<Conn>,
        origin: Origin,
    ) -> Response<UpstreamResponse> {
        let lease = Lease { conn, origin, idle_timeout: self.idle_timeout };
        response.map(|body| UpstreamResponse { body, lease: Some(lease) })
    }
}

/// The request with an origin-form target (`/path?query`, as HTTP/1.1 sends to a server),
/// `Host` set from the URI when absent, and the origin it goes to.
fn origin_form(
    dialer: u64,
    mut request: Request<UpstreamBody>,
) -> Result<(Origin, Request<UpstreamBody>), UpstreamError> {
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    let https = match &parts.scheme {
        Some(scheme) if *scheme == Scheme::HTTPS => true,
        Some(scheme) if *scheme == Scheme::HTTP => false,
        _ => return Err(UpstreamError::NotAbsolute),
    };
    let authority = parts.authority.take().ok_or(UpstreamError::NotAbsolute)?;
    parts.scheme = None;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| UpstreamError::NotAbsolute)?;
    if !request.headers().contains_key(header::HOST) {
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| UpstreamError::NotAbsolute)?;
        request.headers_mut().insert(header::HOST, host);
    }
    Ok((Origin { dialer, https, authority }, request))
}

/// This thread's newest usable idle connection to `origin`.
fn checkout(origin: &Origin, cx: &mut Context<'_>) -> Option<Box<Conn>> {
    IDLE.try_with(|idle| idle.borrow_mut().checkout(origin, Instant::now(), |conn| conn.usable(cx))).ok().flatten()
}

/// Sends `request` on `conn`, driving the connection in this task until the response head
/// arrives. On failure, the request comes back when none of it was written.
async fn exchange(
    mut conn: Box<Conn>,
    request: Request<UpstreamBody>,
) -> Result<(Response<hyper::body::Incoming>, Box<Conn>), (hyper::Error, Option<Request<UpstreamBody>>)> {
    let mut answer = std::pin::pin!(conn.sender.try_send_request(request));
    let answer = std::future::poll_fn(|cx| {
        conn.drive(cx);
        answer.as_mut().poll(cx)
    })
    .await;
    match answer {
        Ok(response) => Ok((response, conn)),
        Err(mut error) => {
            let unsent = error.take_message();
            Err((error.into_error(), unsent))
        }
    }
}

/// A connection lent to one response: driven while its body is read, idle again after.
struct Lease {
    conn: Box<Conn>,
    origin: Origin,
    idle_timeout: Duration,
}

impl Lease {
    /// Back to this thread's idle connections, if the connection is still open.
    fn release(self) {
        if !self.conn.open() {
            return;
        }
        let now = Instant::now();
        let Self { conn, origin, idle_timeout } = self;
        // During thread teardown the pool is gone: the connection just closes.
        let _ = IDLE.try_with(|idle| idle.borrow_mut().checkin(origin, conn, now + idle_timeout, now));
    }
}

/// An upstream response body. Reading it drives the connection; read to its end, the
/// connection goes back to the pool; dropped before, the connection closes (never reused
/// with an answer half read).
pub struct UpstreamResponse {
    body: hyper::body::Incoming,
    lease: Option<Lease>,
}

impl Body for UpstreamResponse {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(lease) = &mut this.lease {
            lease.conn.drive(cx);
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl UpstreamResponse {
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl Drop for UpstreamResponse {
    fn drop(&mut self) {
        // A body with nothing left (no body at all, say) may never be polled to its end.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

/// The upstream pools of one gateway.
pub struct Upstreams {
    /// How upstreams without their own CA are reached, with the first policy's limits.
    shared: Dialer,
    /// How triggers with their own CA are reached, for one policy generation.
    own: ArcSwap<OwnPools>,
}

/// Dialers of triggers with their own CA, by trigger name, for the policy they belong to.
#[derive(Default)]
struct OwnPools {
    policy: Weak<Policy>,
    dialers: HashMap<String, Dialer>,
}

impl Upstreams {
    /// The pools for a gateway starting with `policy`.
    ///
    /// # Errors
    /// The TLS client configuration cannot be built.
    pub fn new(policy: &Policy) -> Result<Self, crate::policy::UpstreamTlsError> {
        let tls = crate::policy::upstream_tls(None)?;
        Ok(Self { shared: Dialer::new(&policy.limits, &tls), own: ArcSwap::default() })
    }

    /// Sends `request` (absolute URI) to `trigger`'s upstream, through the pool that trusts
    /// its CA, and waits for the response head.
    ///
    /// # Errors
    /// No connection could be made, or the exchange failed.
    pub async fn send(
        &self,
        policy: &Arc<Policy>,
        trigger: &Trigger,
        request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponse>, UpstreamError> {
        let own;
        let dialer = if trigger.upstream.tls.is_none() {
            &self.shared
        } else {
            own = self.own_dialer(policy, trigger);
            &own
        };
        dialer.send(request).await
    }

    /// The dialer of a trigger with its own CA under `policy`, made on its first call
    /// (no I/O: the roots were read when the policy compiled). Those of an older policy
    /// are let go; their idle connections expire.
    fn own_dialer(&self, policy: &Arc<Policy>, trigger: &Trigger) -> Dialer {
        let own = self.own.load();
        let current = own.policy.as_ptr() == Arc::as_ptr(policy);
        if let Some(dialer) = own.dialers.get(&trigger.name).filter(|_| current) {
            return dialer.clone();
        }
        let Some(tls) = &trigger.upstream.tls else { return self.shared.clone() };
        let dialer = Dialer::new(&policy.limits, tls);
        let mut dialers = if current { own.dialers.clone() } else { HashMap::new() };
        dialers.insert(trigger.name.clone(), dialer.clone());
        self.own.store(Arc::new(OwnPools { policy: Arc::downgrade(policy), dialers }));
        dialer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceFile;

    proptest::proptest! {
        /// Two origins are equal exactly when their parts are (the authority in any case),
        /// and equal origins hash alike: generated authorities of every length around the
        /// hash's 64-byte chunks, each spelled in generated cases.
        #[test]
        fn equal_origins_hash_alike(
            host in "[a-zA-Z0-9.-]{1,150}",
            port in proptest::option::of(1u16..),
            flips in proptest::collection::vec(proptest::bool::ANY, 150),
            other in "[a-z0-9]{1,3}",
        ) {
            use std::hash::BuildHasher;
            let text = match port { Some(port) => format!("{host}:{port}"), None => host.clone() };
            let Ok(authority) = text.parse::<Authority>() else { return Ok(()) };
            let respelled: String = text
                .chars()
                .zip(flips.iter().chain(std::iter::repeat(&false)))
                .map(|(c, &flip)| if flip { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect();
            let respelled: Authority = respelled.parse().unwrap();
            let hasher = std::hash::RandomState::new();
            let origin = |authority: &Authority| Origin { dialer: 1, https: true, authority: authority.clone() };
            proptest::prop_assert!(origin(&authority) == origin(&respelled));
            proptest::prop_assert_eq!(hasher.hash_one(origin(&authority)), hasher.hash_one(origin(&respelled)));
            // Another host, dialer or scheme is another origin.
            let moved: Authority = format!("{other}{text}").parse().unwrap();
            proptest::prop_assert!(origin(&authority) != origin(&moved));
            proptest::prop_assert!(hasher.hash_one(origin(&authority)) != hasher.hash_one(origin(&moved)));
            let plain = Origin { https: false, ..origin(&authority) };
            proptest::prop_assert!(hasher.hash_one(&plain) != hasher.hash_one(origin(&authority)));
        }
    }

    /// A compiled policy with trigger `own` (its own CA) and trigger `shared`.
    fn policy(dir: &std::path::Path) -> Arc<Policy> {
        let pki = crate::tls::dev::DevPki::generate().unwrap();
        std::fs::write(dir.join("ca.crt"), pki.ca_cert_pem).unwrap();
        let text = "[server]\nplain_http_listen = \"127.0.0.1:0\"\n\n\
            [signed_urls]\nkeys = { k1 = \"file:url.key\" }\nprimary = \"k1\"\n\n\
            [[trigger]]\nname = \"own\"\npath = \"/own\"\nupstream = \"https://127.0.0.1:1\"\n\
            upstream_ca = \"ca.crt\"\nwho = \"anyone\"\n\n\
            [[trigger]]\nname = \"shared\"\npath = \"/shared\"\nupstream = \"http://127.0.0.1:1\"\nwho = \"anyone\"\n";
        std::fs::write(dir.join("url.key"), "k".repeat(48)).unwrap();
        let source = SourceFile { name: "p.toml".into(), base_dir: dir.to_path_buf(), text: text.into() };
        let (raw, source) = crate::policy::load_str(source).unwrap();
        Arc::new(crate::policy::compile(&raw, &source).unwrap())
    }

    fn trigger(policy: &Policy, path: &str) -> Arc<Trigger> {
        let path = crate::policy::normalize_path(path).unwrap();
        policy.routes.find(None, &path, &http::Method::POST).unwrap().trigger.clone()
    }

    #[test]
    fn a_trigger_with_its_own_ca_gets_one_dialer_per_policy() {
        let dir = tempfile::tempdir().unwrap();
        let first = policy(dir.path());
        let upstreams = Upstreams::new(&first).unwrap();
        let own = upstreams.own_dialer(&first, &trigger(&first, "/own"));
        assert_eq!(upstreams.own_dialer(&first, &trigger(&first, "/own")).id, own.id, "one dialer per policy");
        assert_ne!(own.id, upstreams.shared.id, "the own CA is not the shared pool's");
        let pools = upstreams.own.load();
        assert_eq!(pools.dialers.len(), 1);
        assert_eq!(pools.policy.as_ptr(), Arc::as_ptr(&first));

        // A reload compiles a new policy: its CA trigger gets a dialer (and idle
        // connections) of its own.
        let second = policy(dir.path());
        let renewed = upstreams.own_dialer(&second, &trigger(&second, "/own"));
        assert_ne!(renewed.id, own.id);
        let pools = upstreams.own.load();
        assert_eq!(pools.dialers.len(), 1);
        assert_eq!(pools.policy.as_ptr(), Arc::as_ptr(&second));
    }

    #[test]
    fn requests_go_out_in_origin_form_with_a_host() {
        let mut request = Request::new(crate::web::full_body(Bytes::new()));
        *request.uri_mut() = "https://up.example:8443/a/b?c=d".parse().unwrap();
        let (origin, request) = origin_form(7, request).unwrap();
        assert!(origin.https && origin.dialer == 7);
        assert_eq!(origin.authority.as_str(), "up.example:8443");
        assert_eq!(request.uri().to_string(), "/a/b?c=d");
        assert_eq!(request.headers()[header::HOST], "up.example:8443");

        // A Host already set is kept; a relative URI is refused.
        let mut request = Request::new(crate::web::full_body(Bytes::new()));
        *request.uri_mut() = "http://up.example".parse().unwrap();
        request.headers_mut().insert(header::HOST, HeaderValue::from_static("named"));
        let (origin, request) = origin_form(7, request).unwrap();
        assert!(!origin.https);
        assert_eq!(request.uri().to_string(), "/");
        assert_eq!(request.headers()[header::HOST], "named");
        let mut relative = Request::new(crate::web::full_body(Bytes::new()));
        *relative.uri_mut() = "/x".parse().unwrap();
        assert!(matches!(origin_form(7, relative), Err(UpstreamError::NotAbsolute)));
    }
}
