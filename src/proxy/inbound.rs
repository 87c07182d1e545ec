//! [`Connection`]: what the request path knows about the client connection a request
//! came in on.

use crate::tls::peer::{ClientCertificate, PeerCertError};
use http::HeaderValue;
use std::net::{IpAddr, SocketAddr};
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
    /// The peer's address as a header value (`X-Forwarded-For`), written on first use.
    peer_ip_header: OnceLock<HeaderValue>,
}

impl Connection {
    /// A connection without a client certificate (yet).
    pub fn new(peer: SocketAddr, tls: bool, id: u64) -> Self {
        Self { peer, tls, id, client_cert: OnceLock::new(), peer_ip_header: OnceLock::new() }
    }

    /// `ip` as a header value. The peer's own address, the usual client of every call on
    /// the connection, is written once per connection rather than once per call.
    ///
    /// # Panics
    /// Never: an address's text is header text.
    pub fn ip_header(&self, ip: IpAddr) -> HeaderValue {
        let write = |ip: IpAddr| HeaderValue::try_from(ip.to_string()).expect("an IP address is header text");
        if ip == self.peer.ip() { self.peer_ip_header.get_or_init(|| write(ip)).clone() } else { write(ip) }
    }

    /// Reads the verified client certificate of a finished handshake, once.
    pub fn take_handshake(&self, session: &rustls::ServerConnection) {
        if let Some(leaf) = session.peer_certificates().and_then(<[_]>::first) {
            let _ = self.client_cert.set(ClientCertificate::from_der(leaf).map(Arc::new));
        }
    }
}
