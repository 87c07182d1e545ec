//! [`presented`]: the client certificate a call presented, from the one source the
//! policy believes for its peer. From a trusted proxy with `[server]
//! forwarded_client_cert` set, the proxy's header (the proxy's own TLS certificate, if
//! any, is the proxy's, not the caller's); from anyone else, the certificate our TLS
//! layer verified on this connection, and their copy of the header is ignored (it is
//! removed before forwarding either way).

use super::inbound::Connection;
use crate::firewall::ClientIp;
use crate::policy::Policy;
use crate::tls::forwarded::{ForwardedCertError, UnreadableForwardedCert, parse_forwarded_cert};
use crate::tls::peer::{ClientCertificate, PeerCertError};
use std::sync::Arc;

/// The call's client certificate: `None` when it presented none.
///
/// # Errors
/// [`UnreadableForwardedCert`] (400) when a trusted proxy's header is there but
/// unreadable: the proxy said the caller has a certificate, and guessing which would be
/// worse than refusing.
pub(super) fn presented(
    policy: &Policy,
    connection: &Connection,
    peer: ClientIp,
    parts: &http::request::Parts,
) -> Result<Option<Result<Arc<ClientCertificate>, PeerCertError>>, UnreadableForwardedCert> {
    if let Some(forwarded) = &policy.server.forwarded_client_cert
        && policy.trusted_proxies.contains(peer.ip())
    {
        let values = parts.headers.get_all(&forwarded.header).iter().map(http::HeaderValue::as_bytes);
        return match parse_forwarded_cert(forwarded.format, values) {
            Ok(cert) => Ok(cert.map(Ok)),
            Err(ForwardedCertError::Unusable(problem)) => Ok(Some(Err(problem))),
            Err(problem) => Err(UnreadableForwardedCert { header: forwarded.header.clone(), problem }),
        };
    }
    Ok(connection.client_cert.get().cloned())
}

/// Removes the `forwarded_client_cert` header, also spelled with `_` for `-` (CGI-style
/// upstreams read both alike), from the upstream request: whoever sent it, only flowgate
/// judged it, and an upstream must not take a caller's copy for the proxy's.
pub(super) fn strip_forwarded_cert(headers: &mut http::HeaderMap, policy: &Policy) {
    let Some(forwarded) = &policy.server.forwarded_client_cert else { return };
    headers.remove(&forwarded.header);
    let aliases: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_') && name.as_str().replace('_', "-") == forwarded.header.as_str())
        .cloned()
        .collect();
    for alias in aliases {
        headers.remove(alias);
    }
}
