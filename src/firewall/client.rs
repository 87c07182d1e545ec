//! Which address a call comes from: the TCP peer, or, behind trusted proxies, the first
//! untrusted hop named in the one header the admins trust (`X-Forwarded-For` or RFC 7239
//! `Forwarded`, `[server] trusted_header`).
//!
//! Headers are only believed when the peer is a trusted proxy: anyone can write an
//! `X-Forwarded-For`, so believing it from an untrusted peer would let a caller pick the
//! address the firewall sees. For the same reason only one header is read: a load
//! balancer appends to the header it writes and passes the other one through as the
//! caller sent it.
//!
//! The header is read **from the right**, one element at a time: each trusted proxy
//! appended the element right of the ones it received, so only the elements up to and
//! including the first untrusted hop were written by proxies we trust. Everything left of
//! that hop is the caller's own text and is never parsed, so nothing a caller writes there
//! can change the answer. An element that must be read but cannot be (junk, `unknown`, an
//! obfuscated `_id`, a `Forwarded` element without `for=`) refuses the call: judging it as
//! the proxy's own address would let a caller pick the proxy's exemptions and allow rules.

use super::IpSet;
use super::ipset::normalize;
use http::HeaderMap;
use schemars::JsonSchema;
use serde::Deserialize;
use std::net::{IpAddr, Ipv6Addr};

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

impl TrustedHeader {
    fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::XForwardedFor => "X-Forwarded-For",
            Self::Forwarded => "Forwarded",
        }
    }
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

    /// The address as one unit of per-address accounting (connection cap, shield, `ip`
    /// rate-limit key): an IPv4 address is itself; an IPv6 address is its network of
    /// `ipv6_prefix` bits, since one host is usually given a whole /64 and could otherwise
    /// rotate through it to multiply every per-address budget.
    #[must_use]
    pub fn accounting_unit(self, ipv6_prefix: u8) -> Self {
        match self.0 {
            IpAddr::V4(_) => self,
            IpAddr::V6(v6) => {
                let bits = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                Self(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)))
            }
        }
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
    pub note: Option<&'static str>,
}

/// A forwarding header from a trusted proxy whose hop that names the client cannot be
/// read: the call is refused (400), never judged as the proxy's own address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{header} hop {position} from the right is {problem}")]
pub struct UnreadableHop {
    /// `X-Forwarded-For` or `Forwarded`.
    pub header: &'static str,
    /// 1 for the rightmost element.
    pub position: usize,
    /// What is wrong with it (never the caller's text, which may be long or hostile).
    pub problem: HopProblem,
}

/// Why a forwarded hop that matters cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopProblem {
    /// Neither an address nor a known placeholder.
    Unparsable,
    /// `unknown` or an obfuscated identifier (`_hidden`): a hop that cannot be judged.
    Opaque,
    /// A `Forwarded` element without `for=`.
    NoFor,
}

impl std::fmt::Display for HopProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unparsable => "not an address",
            Self::Opaque => "unknown or obfuscated",
            Self::NoFor => "an element without for=",
        })
    }
}

/// One element of a forwarding header, as far as the client address is concerned.
#[derive(Debug, PartialEq, Eq)]
enum Element {
    /// An empty list element (`a,,b`): list syntax, not a hop.
    Empty,
    /// A hop with an address.
    Addr(ClientIp),
    /// A hop that cannot be judged or read.
    Unreadable(HopProblem),
}

/// Decides the client address of a call.
///
/// With no trusted proxies, or an untrusted peer, the peer is the client. Otherwise the
/// elements of the trusted `header` (all its lines, in order) are walked right to left,
/// skipping trusted proxies; the first untrusted address is the client, and if every hop
/// is trusted the leftmost is. No such header (or one naming no hop) means the peer. The
/// other forwarding header is never read.
///
/// # Errors
/// [`UnreadableHop`] when an element right of (or at) the client's position cannot be read.
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
    header: TrustedHeader,
) -> Result<ClientAddress, UnreadableHop> {
    let peer = ClientIp::new(peer);
    let plain = |note: Option<&'static str>| ClientAddress { client: peer, peer, note };
    if trusted.0.is_empty() || !trusted.contains(peer.ip()) {
        return Ok(plain(None));
    }
    if !headers.contains_key(header.name()) {
        // A proxy writing the other header is a misconfiguration worth a note; a caller's
        // copy of it is simply not believed.
        let ignored = match header {
            TrustedHeader::XForwardedFor => headers
                .contains_key(http::header::FORWARDED)
                .then_some("Forwarded ignored: it is not [server] trusted_header"),
            TrustedHeader::Forwarded => headers
                .contains_key("x-forwarded-for")
                .then_some("X-Forwarded-For ignored: it is not [server] trusted_header"),
        };
        return Ok(plain(ignored));
    }
    let lines: Vec<&[u8]> = headers.get_all(header.name()).iter().map(http::HeaderValue::as_bytes).collect();
    let elements = lines.iter().rev().flat_map(|line| line.rsplit(|&b| b == b','));
    let mut leftmost_trusted = None;
    let mut position = 0;
    for text in elements {
        let element = parse_element(header, text);
        if element == Element::Empty {
            continue;
        }
        position += 1;
        match element {
            Element::Empty => {}
            Element::Addr(ip) if trusted.contains(ip.ip()) => leftmost_trusted = Some(ip),
            Element::Addr(ip) => return Ok(ClientAddress { client: ip, peer, note: None }),
            Element::Unreadable(problem) => {
                return Err(UnreadableHop { header: header.label(), position, problem });
            }
        }
    }
    Ok(match leftmost_trusted {
        Some(ip) => ClientAddress { client: ip, peer, note: None },
        None => plain(Some("forwarded header names no hop; using the peer")),
    })
}

fn parse_element(header: TrustedHeader, raw: &[u8]) -> Element {
    let Ok(text) = std::str::from_utf8(raw) else { return Element::Unreadable(HopProblem::Unparsable) };
    let text = text.trim_matches([' ', '\t']);
    if text.is_empty() {
        return Element::Empty;
    }
    match header {
        TrustedHeader::XForwardedFor => parse_node(text),
        TrustedHeader::Forwarded => parse_forwarded_element(text),
    }
}

/// One `Forwarded` element (`for=...;proto=https;by=...`); only `for` matters, and it
/// must be there exactly once: a proxy that names no client names no address we can judge.
fn parse_forwarded_element(text: &str) -> Element {
    let mut found = None;
    for pair in text.split(';') {
        let Some((name, value)) = pair.trim_matches([' ', '\t']).split_once('=') else {
            return Element::Unreadable(HopProblem::Unparsable);
        };
        if !name.eq_ignore_ascii_case("for") {
            continue;
        }
        if found.is_some() {
            return Element::Unreadable(HopProblem::Unparsable);
        }
        let value = match value.strip_prefix('"') {
            Some(rest) => match rest.strip_suffix('"') {
                Some(inner) => inner,
                None => return Element::Unreadable(HopProblem::Unparsable),
            },
            None => value,
        };
        found = Some(parse_node(value));
    }
    found.unwrap_or(Element::Unreadable(HopProblem::NoFor))
}

/// A node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`, bare IPv6,
/// `unknown`, or an obfuscated `_token` (optionally with a port).
fn parse_node(text: &str) -> Element {
    let addr = |ip: IpAddr| Element::Addr(ClientIp::new(ip));
    if text.eq_ignore_ascii_case("unknown") || is_obfuscated(text) {
        return Element::Unreadable(HopProblem::Opaque);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, after)) if after.is_empty() || after.strip_prefix(':').is_some_and(valid_port) => {
                ip.parse::<Ipv6Addr>().map_or(Element::Unreadable(HopProblem::Unparsable), |ip| addr(IpAddr::V6(ip)))
            }
            _ => Element::Unreadable(HopProblem::Unparsable),
        };
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return addr(ip);
    }
    match text.rsplit_once(':') {
        Some((ip, port)) if valid_port(port) => ip
            .parse::<std::net::Ipv4Addr>()
            .map_or(Element::Unreadable(HopProblem::Unparsable), |ip| addr(IpAddr::V4(ip))),
        _ => Element::Unreadable(HopProblem::Unparsable),
    }
}

/// `_token` or `_token:port` / `unknown:port` (RFC 7239 §6.3 obfuscated identifiers).
fn is_obfuscated(text: &str) -> bool {
    let node = text.split_once(':').map_or(text, |(node, _)| node);
    node.starts_with('_') || node.eq_ignore_ascii_case("unknown")
}

fn valid_port(port: &str) -> bool {
    port.parse::<u16>().is_ok() || (port.starts_with('_') && port.len() > 1)
}

#[cfg(test)]
mod tests;
