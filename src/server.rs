//! Listeners: accept with a connection cap and a per-client-address cap, then serve each
//! connection through `connection` (TLS, HTTP/1.1 and HTTP/2 with their caps and timeouts,
//! the idle and send-progress watchdog), and graceful shutdown that lets in-flight calls
//! finish within a deadline.
//!
//! Two ways to run the accept loops: on the caller's runtime ([`Listeners::bind`]), or
//! thread-per-core ([`Listeners::bind_workers`]): one thread per worker, each with its
//! own single-threaded runtime and `SO_REUSEPORT` sockets, while the caller's runtime
//! keeps the control plane (admin listener, reloads, background refreshes).
//!
//! [`run`] takes its listeners and its shutdown signal as arguments, so tests start it
//! on `127.0.0.1:0` and stop it at will.

mod accept;
mod workers;

use crate::gateway::Gateway;
use crate::policy::Policy;
use crate::tls::ServerTls;
use accept::{AcceptLoop, Admission};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use workers::WorkerSockets;

/// The sockets one gateway serves on, bound before `run` so callers learn the ports.
#[derive(Debug)]
pub struct Listeners {
    /// HTTPS (needs TLS in the policy).
    pub https: Option<TcpListener>,
    /// Plain HTTP, only when the policy asks for it.
    pub plain: Option<TcpListener>,
    /// The admin listener.
    pub admin: Option<TcpListener>,
    /// Thread-per-core: the sockets of the workers after the first (whose sockets are
    /// `https` and `plain`). `None`: the accept loops run on the caller's runtime.
    workers: Option<Vec<WorkerSockets>>,
}

impl Listeners {
    /// Binds the addresses the policy names, for serving on the caller's runtime.
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
        Ok(Self { https, plain, admin, workers: None })
    }

    /// Binds for thread-per-core serving with `workers` worker threads (at least 1): the
    /// HTTPS and plain-HTTP addresses once per worker with `SO_REUSEPORT`, all on the
    /// same port (the first socket's, when the policy says port 0); the admin address
    /// once, for the caller's runtime.
    ///
    /// # Errors
    /// An address is in use or not ours.
    pub async fn bind_workers(policy: &Policy, workers: usize) -> io::Result<Self> {
        let workers = workers.max(1);
        let group = |addr: SocketAddr| {
            workers::bind_group(addr, workers)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
                .map(|group| group.into_iter().map(Some).collect::<Vec<_>>())
        };
        let none = || std::iter::repeat_with(|| None).take(workers).collect::<Vec<_>>();
        let https = match &policy.server.tls {
            Some(_) => group(policy.server.listen)?,
            None => none(),
        };
        let plain = match policy.server.plain_http_listen {
            Some(addr) => group(addr)?,
            None => none(),
        };
        let admin = match policy.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?,
            ),
            None => None,
        };
        let mut sockets = https.into_iter().zip(plain).map(|(https, plain)| WorkerSockets { https, plain });
        // The first worker's sockets stand in `https` and `plain`, so callers read the
        // bound addresses as with `bind`.
        let first = sockets.next().unwrap_or(WorkerSockets { https: None, plain: None });
        Ok(Self {
            https: first.https.map(TcpListener::from_std).transpose()?,
            plain: first.plain.map(TcpListener::from_std).transpose()?,
            admin,
            workers: Some(sockets.collect()),
        })
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
    /// A worker thread, its runtime, or its sockets' registration failed.
    #[error("cannot start the worker threads: {0}")]
    Workers(#[from] io::Error),
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight calls finish
/// within the policy's `shutdown_grace`, and returns. With listeners from
/// [`Listeners::bind_workers`] the calls are served on worker threads, which have ended
/// when this returns; otherwise on the caller's runtime.
///
/// # Errors
/// The TLS configuration cannot be built, or a worker thread cannot start.
///
/// # Panics
/// Never: an HTTPS listener is bound only when the policy configures TLS.
pub async fn run(
    gateway: Arc<Gateway>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let policy = gateway.policy();
    let (stop_tx, stop_rx) = watch::channel(false);
    let max_connections = policy.limits.max_connections;
    let admission = Admission::new(gateway.clone(), max_connections, stop_rx.clone());
    let mut tasks = tokio::task::JoinSet::new();

    // One TLS configuration for every worker: a reload or a certificate rotation reaches
    // them all, and a tightening closes old connections on each.
    let serving = match (&listeners.https, &policy.server.tls) {
        (Some(_), Some(tls)) => {
            let serving =
                Arc::new(ServerTls::new((*tls.certified_key).clone(), tls.client_certs.as_ref(), tls.tls13_only)?);
            gateway.attach_tls(serving.clone());
            Some(serving)
        }
        (Some(_), None) => unreachable!("an https listener is bound only when TLS is configured"),
        (None, _) => None,
    };
    let workers = match listeners.workers {
        None => {
            if let Some(listener) = listeners.https {
                tasks.spawn(AcceptLoop::new(admission.clone(), 0).run(listener, serving.clone()));
            }
            if let Some(listener) = listeners.plain {
                tasks.spawn(AcceptLoop::new(admission.clone(), 0).run(listener, None));
            }
            None
        }
        Some(more) => {
            // Back to plain sockets: each worker registers its own with its own runtime.
            let first = WorkerSockets {
                https: listeners.https.map(TcpListener::into_std).transpose()?,
                plain: listeners.plain.map(TcpListener::into_std).transpose()?,
            };
            let sockets = std::iter::once(first).chain(more).collect();
            Some(workers::start(&admission, serving.as_ref(), sockets)?)
        }
    };
    if let Some(listener) = listeners.admin {
        tasks.spawn(crate::admin::serve(gateway.clone(), listener, stop_rx.clone()));
    }
    gateway.set_ready(true);
    tracing::info!(version = %policy.version, "flowgate is ready");
    // Not held while serving: a policy replaced by a reload must be freed.
    drop(policy);

    shutdown.await;
    gateway.set_ready(false);
    tracing::info!("shutting down: no new connections; draining in-flight calls");
    let _ = stop_tx.send(true);
    let grace = gateway.policy().limits.shutdown_grace;
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(grace, admission.connections.acquire_many(all)).await;
    if drained.is_err() {
        tracing::warn!(?grace, "in-flight calls did not finish within the shutdown grace; closing them");
    }
    if let Some(workers) = workers {
        workers.finish().await;
    }
    tasks.abort_all();
    // Records of drained calls must reach the file before the process exits.
    if !gateway.audit.flush(Duration::from_secs(5)) {
        tracing::warn!("the run history could not be flushed completely before shutdown");
    }
    Ok(())
}
