//! Loopback ports for servers a test starts itself (gateway binaries, Redis, OpenBao).
//!
//! "Free a moment ago" is not enough, for two reasons. Tests stop a server and start it
//! again on the same port, and meanwhile another test of the same process may be handed
//! that port: so a port is handed out at most once per test process. And a port the kernel
//! picked (a bind to port 0) is an ephemeral one: between its release and the server's bind,
//! the kernel may give it to any other socket, a connection's local end or another bind to
//! port 0 (seen: `Address already in use` for a sign-in test's gateway). So ports are picked
//! below the kernel's ephemeral range, where nothing is assigned without being asked for.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// Ports handed out so far, and where the next search starts.
static HANDED_OUT: Mutex<Option<(HashSet<u16>, u16)>> = Mutex::new(None);

/// The lowest port of this range is never a test's.
const LOWEST: u16 = 20_000;

/// The first port of the kernel's ephemeral range (`ip_local_port_range`), or Linux's
/// default when it cannot be read.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .filter(|&start: &u16| start > LOWEST + 1_000)
        .unwrap_or(32_768)
}

/// A loopback port that is free now, outside the kernel's ephemeral range, and that no
/// other test of this process has.
pub(crate) fn free_port() -> u16 {
    let end = ephemeral_start();
    let span = end - LOWEST;
    let mut handed = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let (taken, next) = handed.get_or_insert_with(|| {
        // Another test process may run at once (the harness, a second checkout): start
        // each process somewhere else in the range.
        let offset = u16::try_from(std::process::id() % u32::from(span)).unwrap_or(0);
        (HashSet::new(), LOWEST + offset)
    });
    for _ in 0..span {
        let port = *next;
        *next = if port + 1 >= end { LOWEST } else { port + 1 };
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free loopback port between {LOWEST} and {end}");
}
