//! One accept loop: admit a connection (global IP rules, the per-address cap, the global
//! connection cap), then serve it on the runtime this loop runs on. The state that must
//! be exact across loops (the connection cap, the per-address table, connection ids)
//! lives in [`Admission`], shared by every loop of every worker thread.

use crate::firewall::ClientIp;
use crate::gateway::Gateway;
use crate::proxy::{self, Connection};
use crate::tls::ServerTls;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// What every accept loop shares, whichever thread it runs on.
#[derive(Clone)]
pub(super) struct Admission {
    pub(super) gateway: Arc<Gateway>,
    /// One permit per open connection: `[limits] max_connections`.
    pub(super) connections: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
    ids: Arc<AtomicU64>,
    /// Becomes `true` at shutdown (or the sender is dropped): stop accepting, close
    /// connections gracefully.
    stop: watch::Receiver<bool>,
}

impl Admission {
    pub(super) fn new(gateway: Arc<Gateway>, max_connections: usize, stop: watch::Receiver<bool>) -> Self {
        Self {
            gateway,
            connections: Arc::new(Semaphore::new(max_connections)),
            per_address: Arc::new(PerAddress::default()),
            ids: Arc::new(AtomicU64::new(1)),
            stop,
        }
    }
}

/// The accept loop of one listener on one worker (worker 0 when one runtime serves).
pub(super) struct AcceptLoop {
    admission: Admission,
    /// `flowgate_worker_connections_total{worker}`: which worker thread took a connection.
    accepted: metrics::Counter,
}

impl AcceptLoop {
    pub(super) fn new(admission: Admission, worker: usize) -> Self {
        let accepted = metrics::counter!("flowgate_worker_connections_total", "worker" => worker.to_string());
        Self { admission, accepted }
    }

    /// Accepts until shutdown. Each connection is served by a task on the calling runtime.
    pub(super) async fn run(mut self, listener: TcpListener, tls: Option<Arc<ServerTls>>) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = self.admission.stop.changed() => return,
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
            let slot = match self.screen(peer) {
                Screened::Refused => continue,
                Screened::Uncounted => None,
                Screened::Counted(slot) => Some(slot),
            };
            // Past the cap this connection waits here, unserved, and this loop accepts no
            // more: the rest wait in the kernel's queue. Accepting before taking a permit
            // means an idle loop never holds a permit another worker's client needs.
            let permit = tokio::select! {
                permit = self.admission.connections.clone().acquire_owned() => permit,
                _ = self.admission.stop.changed() => return,
            };
            let Ok(permit) = permit else { return };
            self.accepted.increment(1);
            let _ = stream.set_nodelay(true);
            let id = self.admission.ids.fetch_add(1, Ordering::Relaxed);
            let connection = Arc::new(Connection::new(peer, tls.is_some(), id));
            let gateway = self.admission.gateway.clone();
            // Shutdown, or a reload that tightens the TLS rules this connection was
            // admitted under, closes it gracefully.
            let mut shutdown = self.admission.stop.clone();
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

    /// The global IP rules and the per-address cap, checked before a TLS handshake
    /// costs anything.
    fn screen(&self, peer: std::net::SocketAddr) -> Screened {
        let policy = self.admission.gateway.policy();
        if !policy.firewall.check_peer_at_accept(peer.ip(), &policy.trusted_proxies) {
            metrics::counter!("flowgate_connections_refused_total", "reason" => "firewall").increment(1);
            tracing::debug!(%peer, "connection refused by the global firewall");
            return Screened::Refused;
        }
        // One address may not take every slot. A trusted proxy speaks for many clients.
        if policy.trusted_proxies.contains(peer.ip()) {
            return Screened::Uncounted;
        }
        let unit = ClientIp::new(peer.ip()).accounting_unit(policy.edge.ipv6_prefix);
        if let Some(slot) = self.admission.per_address.try_open(unit, policy.edge.max_connections_per_ip) {
            return Screened::Counted(slot);
        }
        metrics::counter!("flowgate_connections_refused_total", "reason" => "per_ip").increment(1);
        tracing::debug!(%peer, "connection refused: too many open from this address");
        Screened::Refused
    }
}

/// What [`AcceptLoop::screen`] decided about a new connection.
enum Screened {
    /// Close it now.
    Refused,
    /// A trusted proxy: not held to the per-address cap.
    Uncounted,
    /// Holds one of its address's slots while open.
    Counted(AddressSlot),
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

    /// One step of a generated run: a worker opens a connection from one of four
    /// addresses, or a connection closes.
    #[derive(Debug, Clone)]
    enum Step {
        Open { worker: usize, address: u8 },
        Close { pick: usize },
    }

    fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
        use proptest::prelude::*;
        let step = prop_oneof![
            (0usize..2, 0u8..4).prop_map(|(worker, address)| Step::Open { worker, address }),
            (0usize..64).prop_map(|pick| Step::Close { pick }),
        ];
        proptest::collection::vec(step, 1..120)
    }

    proptest::proptest! {
        /// Two workers' loops share one table, one connection cap and one id counter: against
        /// a model of the counts, no address exceeds its cap, the total never exceeds the
        /// connection cap, ids never repeat, and every close gives its slots back.
        #[test]
        fn shared_admission_matches_the_model_across_two_workers(run in steps(), per_address in 1usize..4, cap in 1usize..6) {
            let table = Arc::new(PerAddress::default());
            let connections = Arc::new(Semaphore::new(cap));
            let ids = Arc::new(AtomicU64::new(1));
            // Each worker holds its own clones, as each worker's accept loop does.
            let workers: Vec<_> = (0..2).map(|_| (table.clone(), connections.clone(), ids.clone())).collect();
            let mut open = Vec::new();
            let mut model = std::collections::HashMap::<u8, usize>::new();
            let mut seen = std::collections::HashSet::new();
            for step in run {
                match step {
                    Step::Open { worker, address } => {
                        let (table, connections, ids) = &workers[worker];
                        let ip = std::net::IpAddr::from([192, 0, 2, address]);
                        let expected = model.get(&address).copied().unwrap_or(0) < per_address;
                        let Some(slot) = table.try_open(ip, per_address) else {
                            proptest::prop_assert!(!expected, "refused below the per-address cap");
                            continue;
                        };
                        proptest::prop_assert!(expected, "admitted past the per-address cap");
                        let Ok(permit) = connections.clone().try_acquire_owned() else {
                            proptest::prop_assert_eq!(open.len(), cap, "refused below the connection cap");
                            continue;
                        };
                        proptest::prop_assert!(open.len() < cap);
                        proptest::prop_assert!(seen.insert(ids.fetch_add(1, Ordering::Relaxed)), "an id repeated");
                        *model.entry(address).or_insert(0) += 1;
                        open.push((address, slot, permit));
                    }
                    Step::Close { pick } => {
                        if open.is_empty() {
                            continue;
                        }
                        let (address, slot, permit) = open.swap_remove(pick % open.len());
                        drop((slot, permit));
                        *model.get_mut(&address).expect("modelled") -= 1;
                    }
                }
                let counts = table.open.lock().unwrap().clone();
                let modelled: std::collections::HashMap<_, _> = model
                    .iter()
                    .filter(|&(_, &n)| n > 0)
                    .map(|(&a, &n)| (std::net::IpAddr::from([192, 0, 2, a]), n))
                    .collect();
                proptest::prop_assert_eq!(counts, modelled);
                proptest::prop_assert_eq!(connections.available_permits(), cap - open.len());
            }
        }
    }
}
