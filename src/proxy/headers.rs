//! Header hygiene between caller and upstream: hop-by-hop headers dropped in both
//! directions, caller credentials dropped unless a trigger forwards them, and the
//! `X-Forwarded-*` and `X-Request-Id` headers set by us alone.
//!
//! CGI, WSGI, PHP and many frameworks read `X_Forwarded_For` and `X-Forwarded-For` as one
//! variable (`HTTP_X_FORWARDED_FOR`). So a caller's header is removed when its name, with
//! `_` read as `-` (case is already ignored), equals any name flowgate sets, strips or
//! injects: the exact spelling alone would let `x_flowgate_tenant` pose as identity.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

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

/// Further names flowgate sets or strips on every upstream request, beside the hop-by-hop
/// ones ([`is_hop_by_hop_name`]), [`PROXY_SET_HEADERS`] and the identity headers: a caller's header that
/// folds to one of them is removed.
const OTHER_MANAGED_HEADERS: &[&str] =
    &["keep-alive", "host", "authorization", "cookie", "x-request-id", "traceparent", "tracestate"];

/// Removes hop-by-hop headers: the fixed list, `Keep-Alive`, any `Proxy-*`, and every
/// header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names (no hashing) decides.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // What `Connection` names and is present: one hashed lookup per listed name, so a long
    // list costs in proportion to its length, and nothing is allocated unless a listed
    // header is there. Read as bytes: a value that is not all visible ASCII still names
    // what its tokens name. `keep-alive`, what upstreams and h1 callers name, goes with the
    // fixed ones below, without a lookup.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&byte| byte == b',').map(<[u8]>::trim_ascii) {
            if token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive") {
                continue;
            }
            if let Ok(token) = std::str::from_utf8(token)
                && headers.contains_key(token)
                && let Ok(name) = HeaderName::from_bytes(token.as_bytes())
            {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    // The fixed ones in one pass: a test per header present, not a hashed removal per name
    // that might be (ten of those a call before).
    headers.retain(|name, _| !is_hop_by_hop(name));
}

/// A header of one hop by its name alone (`Connection` itself is one, so whatever it names
/// is found through it).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str())
}

/// The names of headers that describe one hop and must not be forwarded (RFC 9110
/// §7.6.1), beside whatever `Connection` names: `Connection`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade`, `Keep-Alive` and any `Proxy-*` (lower case), compared as
/// text (one length test for most names).
fn is_hop_by_hop_name(name: &str) -> bool {
    matches!(name, "connection" | "te" | "trailer" | "transfer-encoding" | "upgrade" | "keep-alive")
        || name.starts_with("proxy-")
}

/// Every header name in this namespace is flowgate's own: the identity headers today, and
/// whatever an upstream may come to trust from it tomorrow. No caller may send one.
const OWN_PREFIX: &str = "x-flowgate-";

/// A header only flowgate may set upstream.
fn is_ours(name: &HeaderName) -> bool {
    PROXY_SET_HEADERS.contains(&name.as_str()) || name.as_str().starts_with(OWN_PREFIX)
}

/// `name` with `_` read as `-`, as CGI-style upstreams read it (names are lower case).
fn folded(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains('_') { name.replace('_', "-").into() } else { name.into() }
}

/// Whether `name` (folded) is one flowgate manages on upstream requests, or one the
/// trigger injects (`injected`, folded too).
fn is_managed(name: &str, injected: &[HeaderName]) -> bool {
    is_hop_by_hop_name(name)
        || PROXY_SET_HEADERS.contains(&name)
        || name.starts_with(OWN_PREFIX)
        || OTHER_MANAGED_HEADERS.contains(&name)
        || injected.iter().any(|h| folded(h.as_str()) == name)
}

/// Removes every header whose folded name is managed by flowgate or injected, but is not
/// spelled as flowgate spells it (those are replaced or kept by the steps that own them).
fn drop_folded_aliases(headers: &mut HeaderMap, injected: &[HeaderName]) {
    // Almost no call carries an `_` in a header name: one pass over the names decides.
    let underscores = |name: &HeaderName| name.as_str().contains('_');
    if !headers.keys().any(underscores) && !injected.iter().any(underscores) {
        return;
    }
    let aliases: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let canonical = folded(name.as_str());
            is_managed(&canonical, injected)
                && (underscores(name) || injected.iter().any(|h| folded(h.as_str()) == canonical))
        })
        .cloned()
        .collect();
    for name in aliases {
        headers.remove(name);
    }
}

/// What the upstream is told about the original call.
pub(super) struct ForwardedFor<'a> {
    /// The client address we settled on, as the header value.
    pub client: HeaderValue,
    /// `https` or `http`, as the caller reached us.
    pub proto: &'static str,
    /// The host the caller asked for.
    pub host: Option<&'a str>,
    /// Our id for this call.
    pub request_id: &'a str,
}

/// Prepares the caller's headers for the upstream: hop-by-hop and credential headers
/// dropped, `Host` left for the client to set from the upstream URI, headers of the
/// `injected` names dropped (a caller cannot pre-set them), any header that folds to a
/// name flowgate manages dropped, and our own `X-Forwarded-*`/`X-Request-Id` replacing
/// anything the caller sent under those names.
pub(super) fn upstream_request_headers(
    headers: &mut HeaderMap,
    forward_authorization: bool,
    info: &ForwardedFor<'_>,
    injected: &[HeaderName],
) {
    // Before anything else: a folded alias of `Authorization` or `Connection` must not
    // be taken for the real one by any step below.
    drop_folded_aliases(headers, injected);
    strip_hop_by_hop(headers);
    // What goes: `Host` (the client sets it from the upstream URI), the caller's
    // credentials, headers that upstreams trust from a proxy and identity headers (only
    // flowgate may set them), and headers of injected names. Judged by comparing names in
    // one pass, then removed in one more only if any is there: no hashed removal per name
    // that might be present.
    let goes = |name: &HeaderName| {
        name == header::HOST
            || name == header::COOKIE
            || (name == header::AUTHORIZATION && !forward_authorization)
            || is_ours(name)
            || injected.contains(name)
    };
    if headers.keys().any(goes) {
        headers.retain(|name, _| !goes(name));
    }
    headers.insert(X_FORWARDED_FOR, info.client.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(info.proto));
    if let Some(host) = info.host.and_then(|host| HeaderValue::from_str(host).ok()) {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if let Ok(id) = HeaderValue::from_str(info.request_id) {
        headers.insert(crate::web::REQUEST_ID, id);
    }
}

// Made once, not checked and looked up on every call as `from_static` at run time would be.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    /// What `Connection` names, as a model reads it: comma-separated, trimmed, any case.
    fn model_connection_names(values: &[String]) -> Vec<String> {
        values.iter().flat_map(|v| v.split(',')).map(|n| n.trim().to_ascii_lowercase()).collect()
    }

    fn model_is_hop_by_hop(name: &str, connection_names: &[String]) -> bool {
        const FIXED: &[&str] = &[
            "connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "proxy-authenticate",
            "keep-alive",
        ];
        FIXED.contains(&name) || name.starts_with("proxy-") || connection_names.iter().any(|n| n == name)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        /// Exactly the hop-by-hop headers go (the fixed list, `Keep-Alive`, `Proxy-*`, what
        /// `Connection` names), every value of them; every other header keeps all its values
        /// in order. Seeds: an upstream's bare `Connection: keep-alive`, and the example above.
        #[test]
        fn exactly_the_hop_by_hop_headers_go(
            headers in prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(&[
                            "connection", "Connection", "te", "trailer", "transfer-encoding", "upgrade",
                            "keep-alive", "proxy-authorization", "proxy-authenticate", "proxy-x",
                            "x-hop", "x-keep", "content-length", "server", "date",
                        ][..]).prop_map(str::to_owned),
                        "[a-zA-Z][a-zA-Z0-9-]{0,10}",
                    ],
                    prop_oneof![
                        prop::sample::select(&["keep-alive", "close", "x-hop", " X-Hop , te", "x-hop,,server", "1"][..])
                            .prop_map(str::to_owned),
                        "[a-zA-Z0-9 ,-]{0,16}",
                    ],
                ),
                0..10,
            ),
        ) {
            let mut h = HeaderMap::new();
            for (name, value) in &headers {
                h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
            }
            let before = h.clone();
            let connection: Vec<String> =
                before.get_all(header::CONNECTION).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
            let named = model_connection_names(&connection);
            strip_hop_by_hop(&mut h);
            for name in before.keys() {
                let kept: Vec<&HeaderValue> = h.get_all(name).iter().collect();
                if model_is_hop_by_hop(name.as_str(), &named) {
                    prop_assert!(kept.is_empty(), "{name} was kept: {kept:?}");
                } else {
                    let sent: Vec<&HeaderValue> = before.get_all(name).iter().collect();
                    prop_assert_eq!(kept, sent, "{} changed", name);
                }
            }
            prop_assert!(h.keys().all(|name| before.contains_key(name)));
        }
    }

    #[test]
    fn underscore_aliases_of_managed_or_injected_names_go() {
        let mut h = HeaderMap::new();
        for name in ["x_flowgate_tenant", "X_Forwarded-For", "x_api_key", "x-vault-token", "proxy_authorization"] {
            h.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("forged"));
        }
        h.insert("x_custom_thing", HeaderValue::from_static("kept"));
        let info = ForwardedFor { client: "127.0.0.2".parse().unwrap(), proto: "https", host: None, request_id: "r1" };
        let injected = [HeaderName::from_static("x-api-key"), HeaderName::from_static("x_vault_token")];
        upstream_request_headers(&mut h, false, &info, &injected);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(h["x_custom_thing"], "kept");
        assert_eq!(h["x-forwarded-for"], "127.0.0.2");
    }

    /// The names flowgate sets, strips or injects on an upstream request, as the README and
    /// ARCHITECTURE.md list them (written out here, independent of the code's tables).
    const MODEL_MANAGED: &[&str] = &[
        "connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "keep-alive",
        "host",
        "authorization",
        "cookie",
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
        "x-request-id",
        // (`traceparent`/`tracestate` are replaced by the trace step; no `_` spelling exists)
        "x-flowgate-tenant",
        "x-flowgate-principal",
        "x-flowgate-app-id",
        "x-flowgate-roles",
        // injected by the trigger under test
        "x-api-key",
        "x-vault-token",
    ];

    /// `name` as a CGI-style upstream reads it.
    fn model_fold(name: &str) -> String {
        name.to_ascii_lowercase().replace('_', "-")
    }

    fn model_is_managed(name: &str) -> bool {
        let name = model_fold(name);
        MODEL_MANAGED.contains(&name.as_str()) || name.starts_with("proxy-") || name.starts_with("x-flowgate-")
    }

    /// A spelling of `name`: each `-` may become `_`, each letter may change case.
    fn spelling(name: &'static str) -> impl Strategy<Value = String> {
        prop::collection::vec(any::<(bool, bool)>(), name.len()).prop_map(move |flips| {
            name.chars()
                .zip(flips)
                .map(|(c, (swap, upper))| match c {
                    '-' if swap => '_',
                    c if upper => c.to_ascii_uppercase(),
                    c => c,
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        /// No header reaching the upstream folds to a managed or injected name unless
        /// flowgate set it itself; every other caller header passes.
        #[test]
        fn no_caller_header_folds_to_a_managed_name(
            names in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(MODEL_MANAGED).prop_flat_map(spelling),
                    "[a-zA-Z][a-zA-Z0-9_-]{0,14}",
                    prop::sample::select(&["proxy-x", "x-flowgate-other", "x-api-keys"][..]).prop_flat_map(spelling),
                ],
                1..12,
            ),
        ) {
            let mut h = HeaderMap::new();
            let mut sent = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else { continue };
                let value = format!("caller-{i}");
                h.append(header.clone(), HeaderValue::from_str(&value).unwrap());
                sent.push((header, value));
            }
            let info = ForwardedFor { client: "127.0.0.2".parse().unwrap(), proto: "https", host: Some("h"), request_id: "r1" };
            let injected = [HeaderName::from_static("x-api-key"), HeaderName::from_static("x_vault_token")];
            upstream_request_headers(&mut h, false, &info, &injected);
            for (name, value) in &h {
                let from_caller = value.to_str().unwrap().starts_with("caller-");
                prop_assert!(
                    !(from_caller && model_is_managed(name.as_str())),
                    "caller header {name}: {value:?} reached the upstream"
                );
            }
            for (name, value) in &sent {
                if !model_is_managed(name.as_str()) {
                    prop_assert!(
                        h.get_all(name).iter().any(|v| v == value.as_str()),
                        "caller header {name} was dropped although nothing manages it"
                    );
                }
            }
        }
    }

    #[test]
    fn caller_cannot_forge_forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-request-id", HeaderValue::from_static("forged"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let info =
            ForwardedFor { client: "127.0.0.2".parse().unwrap(), proto: "https", host: Some("h"), request_id: "r1" };
        upstream_request_headers(&mut h, false, &info, &[]);
        assert_eq!(h["x-forwarded-for"], "127.0.0.2");
        assert_eq!(h["x-request-id"], "r1");
        assert!(!h.contains_key(header::AUTHORIZATION));
    }
}
