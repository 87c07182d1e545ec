//! Listeners: accept with a connection cap and a per-client-address cap, then serve each
//! connection through `connection` (TLS, HTTP/1.1 and HTTP/2 with their caps and timeouts,
//! the idle and send-progress watchdog), and graceful shutdown that lets in-flight calls
//! finish within a deadline.
//!
//! [`run`] takes its listeners and its shutdown signal as arguments, so tests start it
//! on `127.0.0.1:0` and stop it at will.

use crate::firewall::ClientIp;
use crate::gateway::Gateway;
use crate::policy::Policy;
use crate::proxy::{self, Connection};
use crate::tls::ServerTls;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

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
/// The TLS configuration or the upstream client cannot be built.
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
    let connections = Arc::new(Semaphore::new(policy.limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let max_connections = policy.limits.max_connections;
    let ids = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();

    if let Some(listener) = listeners.https {
        let tls = policy.server.tls.as_ref().expect("an https listener is bound only when TLS is configured");
        let serving =
            Arc::new(ServerTls::new((*tls.certified_key).clone(), tls.client_certs.as_ref(), tls.tls13_only)?);
        gateway.attach_tls(serving.clone());
        let accept = AcceptLoop {
            gateway: gateway.clone(),
            connections: connections.clone(),
            per_address: per_address.clone(),
            ids: ids.clone(),
            stop: stop_rx.clone(),
        };
        tasks.spawn(accept.run(listener, Some(serving)));
    }
    if let Some(listener) = listeners.plain {
        let accept = AcceptLoop {
            gateway: gateway.clone(),
            connections: connections.clone(),
            per_address: per_address.clone(),
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
    // Not held while serving: a policy replaced by a reload must be freed.
    drop(policy);

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
    per_address: Arc<PerAddress>,
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
            // One address may not take every slot. A trusted proxy speaks for many clients.
            let slot = if policy.trusted_proxies.contains(peer.ip()) {
                None
            } else if let Some(slot) = self.per_address.try_open(
                ClientIp::new(peer.ip()).accounting_unit(policy.edge.ipv6_prefix),
                policy.edge.max_connections_per_ip,
            ) {
                Some(slot)
            } else {
                metrics::counter!("flowgate_connections_refused_total", "reason" => "per_ip").increment(1);
                tracing::debug!(%peer, "connection refused: too many open from this address");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = Arc::new(Connection::new(peer, tls.is_some(), self.ids.fetch_add(1, Ordering::Relaxed)));
            let gateway = self.gateway.clone();
            // Shutdown, or a reload that tightens the TLS rules this connection was
            // admitted under, closes it gracefully.
            let mut shutdown = self.stop.clone();
            let tightened = tls.as_deref().map(ServerTls::tightened);
            let stop = async move {
                let tightened = async move {
                    match tightened {
                        Some(tightened) => tightened.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.changed() => {}
                    () = tightened => {}
                }
            };
            // The TLS settings current now (a reload swaps them for later connections).
            let tls = tls.as_deref().map(ServerTls::acceptor);
            tokio::spawn(async move {
                metrics::gauge!("flowgate_open_connections").increment(1.0);
                let limits = gateway.policy().limits.clone();
                let handler = {
                    let (gateway, connection) = (gateway.clone(), connection.clone());
                    move |request| {
                        let (gateway, connection) = (gateway.clone(), connection.clone());
                        async move {
                            match proxy::handle(gateway, connection, request).await {
                                Ok(response) => response,
                                Err(never) => match never {},
                            }
                        }
                    }
                };
                let on_handshake = |session: &rustls::ServerConnection| connection.take_handshake(session);
                crate::connection::serve_connection(stream, tls, connection.peer, &limits, stop, handler, on_handshake)
                    .await;
                // Its `tcp_connection` budgets can never be spent again: they leave with it.
                gateway.limiters.forget_connection(connection.id);
                metrics::gauge!("flowgate_open_connections").decrement(1.0);
                drop(slot);
                drop(permit);
            });
        }
    }
}

/// Open connections per client address, for `max_connections_per_ip`.
#[derive(Default)]
struct PerAddress {
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl PerAddress {
    /// Takes a slot for `ip` unless it already holds `max`.
    fn try_open(self: &Arc<Self>, ip: impl Into<ClientIp>, max: usize) -> Option<AddressSlot> {
        let ip = ip.into().ip();
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot { table: self.clone(), ip })
    }
}

/// One open connection of an address; gives its slot back when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: std::net::IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let std::collections::hash_map::Entry::Occupied(mut entry) = open.entry(self.ip) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_cap_and_gets_slots_back() {
        let table = Arc::new(PerAddress::default());
        let one: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let other: std::net::IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.try_open(one, 2).expect("first");
        let _second = table.try_open(mapped, 2).expect("an IPv4-mapped address is the same address");
        assert!(table.try_open(one, 2).is_none());
        assert!(table.try_open(other, 2).is_some(), "another address has its own count");
        drop(first);
        assert!(table.try_open(one, 2).is_some(), "a closed connection gives its slot back");
        assert_eq!(table.open.lock().unwrap().len(), 1, "addresses without connections are forgotten");
    }
}
