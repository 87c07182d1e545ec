//! The stack's floor: the cheapest proxy this project's stack can be, measured beside the
//! peers to tell what flowgate's own work costs from what the stack costs (issue 23, goal 5).
//!
//! It terminates TLS with rustls (h1 and h2 by ALPN), serves with hyper-util's auto builder
//! on tokio's current-thread runtime with mimalloc (all as flowgate does), and forwards every
//! request to one HTTP/1.1 upstream over keep-alive connections it owns (a per-thread list of
//! `SendRequest`s, no pool keys), adding one fixed header. It checks nothing: no firewall, no
//! token, no limit, no scrubbing, no audit, no timeouts, and it buffers the upstream's answer
//! whole, which only helps it. Whatever it reaches is above anything flowgate can reach on
//! the same stack. Never serve traffic with it.
//!
//! ```sh
//! cargo build --release --example stack_floor
//! target/release/examples/stack_floor --listen 127.0.0.1:18446 --cert tls.crt --key tls.key \
//!     --upstream 127.0.0.1:18080 --header x-api-key=VALUE
//! ```
//! `scripts/perf/peers.sh` runs it in place of flowgate with `GATEWAY=floor`.

use bytes::Bytes;
use clap::Parser;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    upstream: SocketAddr,
    /// `name=value`, added to every upstream request.
    #[arg(long)]
    header: String,
}

/// What every request needs, shared by all connections.
struct Route {
    upstream: SocketAddr,
    authority: HeaderValue,
    added: (HeaderName, HeaderValue),
}

thread_local! {
    /// Idle upstream connections of this thread: taken for one exchange, put back after it.
    static IDLE: RefCell<Vec<SendRequest<Incoming>>> = const { RefCell::new(Vec::new()) };
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (name, value) = args.header.split_once('=').ok_or("--header takes name=value")?;
    let route = Arc::new(Route {
        upstream: args.upstream,
        authority: HeaderValue::from_str(&args.upstream.to_string())?,
        added: (HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_str(value)?),
    });
    let certs = CertificateDer::pem_file_iter(&args.cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&args.key)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let acceptor = acceptor.clone();
            let route = Arc::clone(&route);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = service_fn(move |request| forward(Arc::clone(&route), request));
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await;
            });
        }
    })
}

/// One exchange with the upstream on an idle connection of this thread, or a new one.
async fn forward(route: Arc<Route>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (mut parts, body) = request.into_parts();
    parts.version = http::Version::HTTP_11;
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| http::Uri::from_static("/"), |p| p.as_str().parse().unwrap_or_default());
    parts.headers.remove(header::CONNECTION);
    parts.headers.insert(header::HOST, route.authority.clone());
    parts.headers.insert(route.added.0.clone(), route.added.1.clone());
    let Some(mut sender) = connection(route.upstream).await else {
        return Ok(status(StatusCode::BAD_GATEWAY));
    };
    let Ok(response) = sender.send_request(Request::from_parts(parts, body)).await else {
        return Ok(status(StatusCode::BAD_GATEWAY));
    };
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONNECTION);
    let body = body.collect().await?.to_bytes();
    IDLE.with_borrow_mut(|idle| idle.push(sender));
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// The most recently used idle connection once it can take a request (its answer was read
/// whole, so it soon can), or a new one.
async fn connection(upstream: SocketAddr) -> Option<SendRequest<Incoming>> {
    while let Some(mut sender) = IDLE.with_borrow_mut(Vec::pop) {
        if sender.ready().await.is_ok() {
            return Some(sender);
        }
    }
    dial(upstream).await
}

async fn dial(upstream: SocketAddr) -> Option<SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
