//! Thread-per-core serving: N worker threads, each with its own single-threaded tokio
//! runtime and its own `SO_REUSEPORT` socket per serving address, so the kernel spreads
//! new connections over the workers and a connection's whole life (TLS, HTTP, the
//! upstream call) stays on one thread. What must be exact across workers is shared
//! through [`Admission`] and the `Gateway`; nothing else is.

use super::accept::{AcceptLoop, Admission};
use crate::tls::ServerTls;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// The kernel's accept queue per socket (the length tokio's own `bind` asks for).
const BACKLOG: i32 = 1024;

/// The sockets of one worker: one per serving address, each its own `SO_REUSEPORT`
/// member of the address's group.
#[derive(Debug)]
pub(super) struct WorkerSockets {
    pub(super) https: Option<std::net::TcpListener>,
    pub(super) plain: Option<std::net::TcpListener>,
}

/// Binds `count` listening sockets on `addr` with `SO_REUSEPORT`. The first takes the
/// address as given; the rest take the first one's bound address, so port 0 gives every
/// worker the same port.
///
/// # Errors
/// The address is in use (by a socket without `SO_REUSEPORT`, or another user's) or not ours.
pub(super) fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_one(addr)?;
    let bound = first.local_addr()?;
    let mut group = vec![first];
    for _ in 1..count {
        group.push(bind_one(bound)?);
    }
    Ok(group)
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As tokio's `bind`: a restart may rebind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// The running worker threads.
pub(super) struct Workers {
    /// `true` once the calls were drained (or the grace ran out): each worker then drops
    /// its runtime, which ends whatever still runs on it.
    finish: watch::Sender<bool>,
    threads: Vec<(JoinHandle<()>, oneshot::Receiver<()>)>,
}

/// Starts one worker thread per entry of `sockets`, each accepting on its own sockets.
///
/// # Errors
/// A runtime or a thread cannot be made, or a socket cannot join a runtime's reactor.
/// Workers started before the failure stop when the caller drops its stop sender.
pub(super) fn start(
    admission: &Admission,
    tls: Option<&Arc<ServerTls>>,
    sockets: Vec<WorkerSockets>,
) -> io::Result<Workers> {
    let (finish, finished) = watch::channel(false);
    let mut threads = Vec::with_capacity(sockets.len());
    for (index, sockets) in sockets.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Registered with this worker's own reactor, so its readiness events, and those
        // of the connections it accepts, are polled on its thread.
        let (https, plain) = {
            let _inside = runtime.enter();
            (
                sockets.https.map(TcpListener::from_std).transpose()?,
                sockets.plain.map(TcpListener::from_std).transpose()?,
            )
        };
        let (admission, tls, mut finished) = (admission.clone(), tls.cloned(), finished.clone());
        let (done, exited) = oneshot::channel();
        let thread = std::thread::Builder::new().name(format!("flowgate-worker-{index}")).spawn(move || {
            runtime.block_on(async move {
                let mut loops = tokio::task::JoinSet::new();
                if let Some(listener) = https {
                    loops.spawn(AcceptLoop::new(admission.clone(), index).run(listener, tls));
                }
                if let Some(listener) = plain {
                    loops.spawn(AcceptLoop::new(admission, index).run(listener, None));
                }
                // Calls in flight keep running here after the accept loops stop, until
                // the drain is over. A dropped sender (the server failed) finishes too.
                let _ = finished.wait_for(|finish| *finish).await;
            });
            // Ends the connections past the grace; blocking work gets a moment to finish.
            runtime.shutdown_timeout(Duration::from_secs(1));
            let _ = done.send(());
        })?;
        threads.push((thread, exited));
    }
    Ok(Workers { finish, threads })
}

impl Workers {
    /// Ends every worker's runtime and waits for the threads to exit.
    pub(super) async fn finish(self) {
        let _ = self.finish.send(true);
        for (thread, exited) in self.threads {
            // The signal comes just before the thread ends, so the join is immediate; a
            // worker that panicked drops its sender instead.
            let _ = exited.await;
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_group_bound_on_port_zero_shares_one_port_and_every_member_accepts() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let port = group[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(group.iter().all(|l| l.local_addr().unwrap().port() == port));
        // The kernel hashes each connection to one member: with enough connections from
        // distinct source ports, both members get some.
        let clients: Vec<_> = (0..64).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        let mut taken = [0usize; 2];
        // A hang guard, not a timing assertion: the kernel queues them all at once.
        for _ in 0..5000 {
            for (member, listener) in group.iter().enumerate() {
                while let Ok((mut stream, _)) = listener.accept() {
                    stream.set_nonblocking(false).unwrap();
                    stream.write_all(b"x").unwrap();
                    taken[member] += 1;
                }
            }
            if taken[0] + taken[1] == clients.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(taken[0] + taken[1], clients.len(), "every connection was queued on a member");
        assert!(taken.iter().all(|&n| n > 0), "both members accepted: {taken:?}");
        for mut client in clients {
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).unwrap();
        }
    }

    #[test]
    fn a_socket_without_reuseport_keeps_the_address() {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = plain.local_addr().unwrap();
        assert!(bind_group(taken, 2).is_err(), "SO_REUSEPORT does not join a socket that did not ask for it");
    }
}
