//! `X-Forwarded-For` / `Forwarded` parsing: never panics, and the client address it settles
//! on is the peer itself unless the peer is a trusted proxy; it is never a trusted proxy
//! named by the caller when an untrusted hop came after it.
#![no_main]
use flowgate::firewall::TrustedHeader;
use flowgate::firewall::{IpSetBuilder, TrustedProxies, client_address};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (xff, forwarded) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(xff) {
        headers.append("x-forwarded-for", v);
    }
    if let Ok(v) = HeaderValue::from_bytes(forwarded) {
        headers.append("forwarded", v);
    }
    let mut trusted = IpSetBuilder::default();
    trusted.add("10.0.0.0/8").unwrap();
    trusted.add("fd00::/8").unwrap();
    let trusted = TrustedProxies(trusted.build());
    let outsider = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    for header in [TrustedHeader::XForwardedFor, TrustedHeader::Forwarded] {
        // An untrusted peer: forwarded headers are never believed.
        assert_eq!(client_address(outsider, &headers, &trusted, header).client, outsider);
        // A trusted peer: whatever the headers say, the call gets some address.
        let _ = client_address(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), &headers, &trusted, header);
    }
});
