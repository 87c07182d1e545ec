//! Loopback ports for servers a test starts itself (gateway binaries, Redis, OpenBao).
//!
//! "Free a moment ago" is not enough: tests stop a server and start it again on the same
//! port, and meanwhile another test of the same process may be handed that port. So a port
//! is handed out at most once per test process.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port that was free a moment ago and that no other test of this process has.
pub(crate) fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}
