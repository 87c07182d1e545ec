//! [`Connection`]: what the request path knows about the client connection a request
//! came in on.

use std::net::SocketAddr;

/// What we know about the client connection a request came in on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// A process-unique id of the connection (for `tcp_connection` rate-limit keys).
    pub id: u64,
}
