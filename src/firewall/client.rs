//! Which address a call comes from: the TCP peer, or, behind trusted proxies, the first
//! untrusted hop named in the one header the admins trust (`X-Forwarded-For` or RFC 7239
//! `Forwarded`, `[server] trusted_header`).
//!
//! Headers are only believed when the peer is a trusted proxy: anyone can write an
//! `X-Forwarded-For`, so believing it from an untrusted peer would let a caller pick the
//! address the firewall sees. For the same reason only one header is read: a load
//! balancer appends to the header it writes and passes the other one through as the
//! caller sent it.

use super::IpSet;
use super::ipset::normalize;
use http::HeaderMap;
use schemars::JsonSchema;
use serde::Deserialize;
use std::net::IpAddr;

/// Which forwarding header the trusted proxies write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum TrustedHeader {
    /// `X-Forwarded-For`: what most load balancers append to.
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded` (`for=...`).
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// A client address, normalised once where it is resolved: an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, what a dual-stack socket reports for an IPv4 caller) is its IPv4
/// address, so every rule, budget key and record sees one form. Passed by value from
/// there on; nothing downstream normalises again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientIp(IpAddr);

impl ClientIp {
    /// `ip`, normalised.
    pub fn new(ip: IpAddr) -> Self {
        Self(normalize(ip))
    }

    /// The address.
    pub fn ip(self) -> IpAddr {
        self.0
    }
}

impl From<IpAddr> for ClientIp {
    fn from(ip: IpAddr) -> Self {
        Self::new(ip)
    }
}

impl From<ClientIp> for IpAddr {
    fn from(ip: ClientIp) -> Self {
        ip.0
    }
}

impl PartialEq<IpAddr> for ClientIp {
    fn eq(&self, other: &IpAddr) -> bool {
        self.0 == normalize(*other)
    }
}

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The proxies whose forwarded-for headers are believed (`[server] trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub IpSet);

impl TrustedProxies {
    /// True when `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(ip)
    }
}

/// The address a call is attributed to, with the direct peer beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress {
    /// The client: the peer, or the first untrusted forwarded hop.
    pub client: ClientIp,
    /// The TCP peer.
    pub peer: ClientIp,
    /// Why the forwarded headers were not used, for the audit record.
    pub note: Option<String>,
}

/// One hop named by a forwarding header.
enum Hop {
    Addr(ClientIp),
    /// `unknown` or an obfuscated identifier (`_hidden`): a hop we cannot judge.
    Opaque(String),
}

/// Decides the client address of a call.
///
/// With no trusted proxies, or an untrusted peer, the peer is the client. Otherwise the
/// hops of the trusted `header` (all occurrences, in order) are walked right to left,
/// skipping trusted proxies; the first untrusted address is the client, and if every hop
/// is trusted the leftmost is. The other forwarding header is never read. No such header
/// means the peer; an unparsable one or an opaque hop where the client should be yields
/// the peer and a `note`.
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
    header: TrustedHeader,
) -> ClientAddress {
    let peer = ClientIp::new(peer);
    let plain = |note: Option<String>| ClientAddress { client: peer, peer, note };
    if trusted.0.is_empty() || !trusted.contains(peer.ip()) {
        return plain(None);
    }
    let (name, element, label): (&str, ElementParser, &str) = match header {
        TrustedHeader::XForwardedFor => ("x-forwarded-for", parse_xff_element, "X-Forwarded-For"),
        TrustedHeader::Forwarded => (http::header::FORWARDED.as_str(), parse_forwarded_element, "Forwarded"),
    };
    if !headers.contains_key(name) {
        // A proxy writing the other header is a misconfiguration worth a note; a caller's
        // copy of it is simply not believed.
        let other = match header {
            TrustedHeader::XForwardedFor => "Forwarded",
            TrustedHeader::Forwarded => "X-Forwarded-For",
        };
        let ignored =
            headers.contains_key(other).then(|| format!("{other} ignored: it is not [server] trusted_header"));
        return plain(ignored);
    }
    let hops = parse_all(headers, name, element, label);
    let hops = match hops {
        Ok(hops) => hops,
        Err(note) => return plain(Some(note)),
    };
    let mut leftmost = None;
    for hop in hops.iter().rev() {
        match hop {
            Hop::Addr(ip) if trusted.contains(ip.ip()) => leftmost = Some(*ip),
            Hop::Addr(ip) => return ClientAddress { client: *ip, peer, note: None },
            Hop::Opaque(token) => {
                return plain(Some(format!("forwarded hop {token:?} is not an address; using the peer")));
            }
        }
    }
    match leftmost {
        Some(ip) => ClientAddress { client: ip, peer, note: None },
        None => plain(Some("forwarded header names no hop; using the peer".to_owned())),
    }
}

/// Parses one element of a forwarding header: `None` when unparsable, `Some(None)` when
/// it names no hop.
type ElementParser = fn(&str) -> Option<Option<Hop>>;

fn parse_all(headers: &HeaderMap, name: &str, element: ElementParser, label: &str) -> Result<Vec<Hop>, String> {
    let mut hops = Vec::new();
    for value in headers.get_all(name) {
        let text = value.to_str().map_err(|_| format!("unparsable {label} header (not ASCII); using the peer"))?;
        for part in text.split(',') {
            match element(part.trim()) {
                Some(Some(hop)) => hops.push(hop),
                Some(None) => {}
                None => return Err(format!("unparsable {label} header; using the peer")),
            }
        }
    }
    Ok(hops)
}

/// One `X-Forwarded-For` entry: an address, optionally with a port, IPv6 optionally bracketed.
#[expect(clippy::option_option, reason = "None: unparsable; Some(None): an empty element, skipped")]
fn parse_xff_element(text: &str) -> Option<Option<Hop>> {
    if text.is_empty() {
        return Some(None);
    }
    parse_node(text).map(Some)
}

/// One `Forwarded` element (`for=...;proto=https;by=...`); only `for` matters.
#[expect(clippy::option_option, reason = "None: unparsable; Some(None): an empty element, skipped")]
fn parse_forwarded_element(text: &str) -> Option<Option<Hop>> {
    if text.is_empty() {
        return Some(None);
    }
    let mut found = None;
    for pair in text.split(';') {
        let (name, value) = pair.trim().split_once('=')?;
        if name.trim().eq_ignore_ascii_case("for") {
            let value = value.trim();
            let value = match value.strip_prefix('"') {
                Some(rest) => rest.strip_suffix('"')?,
                None => value,
            };
            found = Some(parse_node(value)?);
        }
    }
    // An element without `for=` names no client.
    Some(found)
}

/// A node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`, bare IPv6,
/// `unknown`, or an obfuscated `_token`.
fn parse_node(text: &str) -> Option<Hop> {
    if text.eq_ignore_ascii_case("unknown") || text.starts_with('_') {
        return Some(Hop::Opaque(text.to_owned()));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        return addr.parse::<std::net::Ipv6Addr>().ok().map(|ip| Hop::Addr(ClientIp::new(IpAddr::V6(ip))));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(Hop::Addr(ClientIp::new(ip)));
    }
    let (addr, port) = text.rsplit_once(':')?;
    if !valid_port(port) {
        return None;
    }
    addr.parse::<std::net::Ipv4Addr>().ok().map(|ip| Hop::Addr(ClientIp(IpAddr::V4(ip))))
}

fn valid_port(port: &str) -> bool {
    port.parse::<u16>().is_ok() || (port.starts_with('_') && port.len() > 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies(IpSet::parse(list.iter().copied()).unwrap())
    }

    const XFF: TrustedHeader = TrustedHeader::XForwardedFor;
    const FWD: TrustedHeader = TrustedHeader::Forwarded;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn untrusted_peer_cannot_spoof_its_address() {
        let h = headers(&[("x-forwarded-for", "127.0.0.2")]);
        let got = client_address(ip("198.51.100.9"), &h, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(got.client, ip("198.51.100.9"));
        assert_eq!(got.note, None);
    }

    #[test]
    fn without_trusted_proxies_headers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "127.0.0.2")]);
        let got = client_address(ip("10.0.0.1"), &h, &TrustedProxies::default(), XFF);
        assert_eq!(got.client, ip("10.0.0.1"));
    }

    #[test]
    fn walks_right_to_left_through_two_trusted_hops() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.5"), ("x-forwarded-for", "10.0.0.7")]);
        let got = client_address(ip("10.0.0.1"), &h, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(got.client, ip("203.0.113.5"));
        assert_eq!(got.peer, ip("10.0.0.1"));
        assert_eq!(got.note, None);
    }

    #[test]
    fn all_trusted_hops_give_the_leftmost() {
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.8")]);
        let got = client_address(ip("10.0.0.1"), &h, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(got.client, ip("10.0.0.9"));
    }

    #[test]
    fn forwarded_with_quoted_ipv6_and_port() {
        let h = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.3")]);
        let got = client_address(ip("::ffff:10.0.0.1"), &h, &trusted(&["10.0.0.0/8"]), FWD);
        assert_eq!(got.client, ip("2001:db8::1"));
        assert_eq!(got.peer, ip("10.0.0.1"));
    }

    #[test]
    fn obfuscated_client_falls_back_to_peer_with_note() {
        let h = headers(&[("forwarded", "for=_hidden, for=unknown")]);
        let got = client_address(ip("10.0.0.1"), &h, &trusted(&["10.0.0.0/8"]), FWD);
        assert_eq!(got.client, ip("10.0.0.1"));
        assert!(got.note.unwrap().contains("unknown"));
    }

    #[test]
    fn garbage_header_gives_peer_and_note() {
        let h = headers(&[("x-forwarded-for", "203.0.113.5, not-an-ip")]);
        let got = client_address(ip("10.0.0.1"), &h, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(got.client, ip("10.0.0.1"));
        assert!(got.note.unwrap().contains("X-Forwarded-For"));
        let h = headers(&[("forwarded", "for")]);
        let got = client_address(ip("10.0.0.1"), &h, &trusted(&["10.0.0.0/8"]), FWD);
        assert!(got.note.unwrap().contains("Forwarded"));
    }

    #[test]
    fn xff_with_ports_and_brackets() {
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:80, 192.0.2.1:5000")]);
        let got = client_address(ip("10.0.0.1"), &h, &trusted(&["10.0.0.0/8", "192.0.2.1"]), XFF);
        assert_eq!(got.client, ip("2001:db8::7"));
    }

    #[test]
    fn only_the_trusted_header_is_read() {
        // The load balancer appended to X-Forwarded-For; the caller wrote its own Forwarded.
        let h = headers(&[("forwarded", "for=198.51.100.2"), ("x-forwarded-for", "203.0.113.7")]);
        let lb = trusted(&["10.0.0.0/8"]);
        assert_eq!(client_address(ip("10.0.0.1"), &h, &lb, XFF).client, ip("203.0.113.7"));
        assert_eq!(client_address(ip("10.0.0.1"), &h, &lb, FWD).client, ip("198.51.100.2"));
        // The trusted header missing: the peer, whatever the other one says.
        let h = headers(&[("forwarded", "for=198.51.100.2")]);
        let got = client_address(ip("10.0.0.1"), &h, &lb, XFF);
        assert_eq!(got.client, ip("10.0.0.1"));
        assert!(got.note.unwrap().contains("Forwarded ignored"));
    }
}
