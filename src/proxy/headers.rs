//! Header hygiene between caller and upstream: hop-by-hop headers dropped in both
//! directions, caller credentials dropped unless a trigger forwards them, and the
//! `X-Forwarded-*` and `X-Request-Id` headers set by us alone.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1), beside
/// whatever `Connection` names.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Headers an upstream may believe because they come from its proxy (client address,
/// path rewrites, method overrides): a caller's copies are always removed.
const PROXY_SET_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The request id header, in both directions.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes hop-by-hop headers: the fixed list, `Keep-Alive`, any `Proxy-*`, and every
/// header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names (no hashing) decides.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    let proxy_headers: Vec<HeaderName> =
        headers.keys().filter(|name| name.as_str().starts_with("proxy-")).cloned().collect();
    for name in proxy_headers {
        headers.remove(name);
    }
}

/// A header of one hop by its name alone (`Connection` itself is one, so whatever it names
/// is found through it).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == "keep-alive" || name.as_str().starts_with("proxy-")
}

/// A header only flowgate may set upstream.
fn is_ours(name: &HeaderName) -> bool {
    PROXY_SET_HEADERS.contains(&name.as_str()) || crate::auth::ALWAYS_STRIPPED_HEADERS.contains(name)
}

/// What the upstream is told about the original call.
pub(super) struct ForwardedFor<'a> {
    /// The client address we settled on.
    pub client: IpAddr,
    /// `https` or `http`, as the caller reached us.
    pub proto: &'static str,
    /// The host the caller asked for.
    pub host: Option<&'a str>,
    /// Our id for this call.
    pub request_id: &'a str,
}

/// Prepares the caller's headers for the upstream: hop-by-hop and credential headers
/// dropped, `Host` left for the client to set from the upstream URI, and our own
/// `X-Forwarded-*`/`X-Request-Id` replacing anything the caller sent under those names.
pub(super) fn upstream_request_headers(headers: &mut HeaderMap, forward_authorization: bool, info: &ForwardedFor<'_>) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    if !forward_authorization {
        headers.remove(header::AUTHORIZATION);
    }
    headers.remove(header::COOKIE);
    // Headers that upstreams trust from a proxy, and identity headers (forwarded only from
    // a verified caller): only flowgate may set them. One pass finds whether a caller sent
    // any before names are hashed to remove them.
    if headers.keys().any(is_ours) {
        for name in PROXY_SET_HEADERS {
            headers.remove(*name);
        }
        for name in &crate::auth::ALWAYS_STRIPPED_HEADERS {
            headers.remove(name);
        }
    }
    let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set(headers, "x-forwarded-for", &info.client.to_string());
    set(headers, "x-forwarded-proto", info.proto);
    if let Some(host) = info.host {
        set(headers, "x-forwarded-host", host);
    }
    set(headers, "x-request-id", info.request_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_and_proxy_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-foo", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn caller_cannot_forge_forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-request-id", HeaderValue::from_static("forged"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let info =
            ForwardedFor { client: "127.0.0.2".parse().unwrap(), proto: "https", host: Some("h"), request_id: "r1" };
        upstream_request_headers(&mut h, false, &info);
        assert_eq!(h["x-forwarded-for"], "127.0.0.2");
        assert_eq!(h["x-request-id"], "r1");
        assert!(!h.contains_key(header::AUTHORIZATION));
    }
}
