//! [`Connection`]: what the request path knows about the client connection a request
//! came in on.

use crate::tls::peer::{ClientCertificate, PeerCertError};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// What we know about the client connection a request came in on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// A process-unique id of the connection (for `tcp_connection` rate-limit keys).
    pub id: u64,
    /// The client certificate the TLS layer verified, read once when the handshake ends
    /// (unset: none was presented, or the connection is plain HTTP).
    pub client_cert: OnceLock<Result<Arc<ClientCertificate>, PeerCertError>>,
}

impl Connection {
    /// A connection without a client certificate (yet).
    pub fn new(peer: SocketAddr, tls: bool, id: u64) -> Self {
        Self { peer, tls, id, client_cert: OnceLock::new() }
    }

    /// Reads the verified client certificate of a finished handshake, once.
    pub fn take_handshake(&self, session: &rustls::ServerConnection) {
        if let Some(leaf) = session.peer_certificates().and_then(<[_]>::first) {
            let _ = self.client_cert.set(ClientCertificate::from_der(leaf).map(Arc::new));
        }
    }
}
