//! [`TraceContext`]: reading a caller's `traceparent`/`tracestate` (or starting a fresh
//! trace), and the headers flowgate passes on to the upstream.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The `traceparent` header.
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`: `vv-` + 32 + `-` + 16 + `-` + `ff`.
const TRACEPARENT_LEN: usize = 55;
/// At most this many `tracestate` list members (specification §3.3.1.1).
const TRACESTATE_MAX_MEMBERS: usize = 32;
/// A `tracestate` longer than this is not forwarded (the specification asks vendors to
/// propagate at least 512 characters; more is caller-controlled bulk on every upstream call).
const TRACESTATE_MAX_LEN: usize = 512;

/// The trace a call belongs to, and flowgate's own span in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub(super) trace_id: [u8; 16],
    /// The caller's span, when the trace was continued.
    pub(super) parent_id: Option<[u8; 8]>,
    /// flowgate's span for this call: the upstream's parent.
    pub(super) span_id: [u8; 8],
    flags: u8,
    /// The caller's `tracestate`, forwarded only with a valid `traceparent`.
    tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// The caller's trace when its `traceparent` is valid, otherwise a fresh one, sampled
    /// when this gateway `records` spans (`[traces]` export on).
    pub fn from_headers(headers: &HeaderMap, records: bool) -> Self {
        let mut values = headers.get_all(TRACEPARENT).iter();
        // Two `traceparent` headers cannot be one trace: treated as invalid.
        let parsed = match (values.next(), values.next()) {
            (Some(value), None) => parse_traceparent(value.as_bytes()),
            _ => None,
        };
        match parsed {
            Some(Parent { trace_id, span_id: parent_id, flags }) => Self {
                trace_id,
                parent_id: Some(parent_id),
                span_id: new_span_id(),
                // Version 00 defines the `sampled` bit only; other bits are not ours to pass on.
                flags: flags & 0x01,
                tracestate: tracestate(headers),
            },
            None => Self::fresh(records),
        }
    }

    /// A new trace whose root is this call; `sampled` when its spans are recorded.
    pub fn fresh(sampled: bool) -> Self {
        let trace_id = loop {
            let id: [u8; 16] = rand::random();
            if id != [0; 16] {
                break id;
            }
        };
        Self { trace_id, parent_id: None, span_id: new_span_id(), flags: u8::from(sampled), tracestate: None }
    }

    /// Appends the trace id, 32 lower-case hex digits (as in the run record and the access
    /// log), to `out`.
    pub fn write_trace_id(&self, out: &mut String) {
        // Every call's record holds it: hex into place, not a `char` at a time.
        let mut text = [0u8; 32];
        let hex_ok = hex::encode_to_slice(self.trace_id, &mut text).is_ok();
        debug_assert!(hex_ok, "32 digits for 16 bytes");
        // Hex digits are ASCII: the check is one pass over 32 bytes, and never fails.
        out.push_str(std::str::from_utf8(&text).unwrap_or_default());
    }

    /// flowgate's span id for this call, 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        hex::encode(self.span_id)
    }

    /// The caller's span id, when the caller's trace was continued.
    pub fn parent_id(&self) -> Option<String> {
        self.parent_id.map(hex::encode)
    }

    /// Whether the trace is sampled (its spans are recorded by whoever records them).
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 1
    }

    /// Whether the caller's trace was continued (its `traceparent` was valid).
    pub fn continued(&self) -> bool {
        self.parent_id.is_some()
    }

    /// The `traceparent` the upstream gets: this trace, flowgate's span as the parent.
    ///
    /// # Panics
    /// Never: the value is hex digits and dashes, always a valid header value.
    pub fn upstream_traceparent(&self) -> HeaderValue {
        // Written on every forwarded call: hex into place, no formatting or allocation.
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        let hex_ok = hex::encode_to_slice(self.trace_id, &mut text[3..35]).is_ok()
            && hex::encode_to_slice(self.span_id, &mut text[36..52]).is_ok()
            && hex::encode_to_slice([self.flags], &mut text[53..55]).is_ok();
        debug_assert!(hex_ok, "the slices fit the ids");
        HeaderValue::from_bytes(&text).expect("hex digits and dashes are a valid header value")
    }

    /// Replaces whatever the caller sent under `traceparent`/`tracestate` with this
    /// trace's headers for the upstream.
    pub fn apply(&self, headers: &mut HeaderMap) {
        // `insert` replaces every value of its name; a caller's `tracestate` is looked for
        // by comparing names, and removed (hashed) only when it is there.
        headers.insert(TRACEPARENT, self.upstream_traceparent());
        if let Some(state) = &self.tracestate {
            headers.insert(TRACESTATE, state.clone());
        } else if headers.keys().any(|name| name == TRACESTATE) {
            headers.remove(TRACESTATE);
        }
    }
}

/// The fields of a valid `traceparent`.
struct Parent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

/// Parses a `traceparent` value per the specification; `None` when it is invalid.
fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    if value.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = lower_hex::<1>(&value[0..2])?[0];
    match version {
        0xff => return None,
        // Version 00 has exactly four fields.
        0x00 if value.len() != TRACEPARENT_LEN => return None,
        // A later version may append fields, each after a `-`.
        _ if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = lower_hex::<16>(&value[3..35])?;
    let parent_id = lower_hex::<8>(&value[36..52])?;
    let flags = lower_hex::<1>(&value[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(Parent { trace_id, span_id: parent_id, flags })
}

/// Decodes exactly `2 * N` lower-case hex digits.
fn lower_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N || !digits.iter().all(|d| matches!(d, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// The caller's `tracestate` (several headers joined with `,`, as the specification
/// allows), or `None` when it is absent, too long or malformed: a bad `tracestate` is
/// dropped without affecting the trace.
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut joined = Vec::new();
    for value in headers.get_all(TRACESTATE) {
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if joined.is_empty() || joined.len() > TRACESTATE_MAX_LEN {
        return None;
    }
    let text = std::str::from_utf8(&joined).ok()?;
    let members: Vec<&str> = text.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty()).collect();
    if members.is_empty() || members.len() > TRACESTATE_MAX_MEMBERS || !members.iter().all(|m| valid_member(m)) {
        return None;
    }
    HeaderValue::from_str(&members.join(",")).ok()
}

/// `key=value` with the specification's character sets (§3.3.1.3).
fn valid_member(member: &str) -> bool {
    let Some((key, value)) = member.split_once('=') else { return false };
    let key_ok = !key.is_empty()
        && key.len() <= 256
        && key.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@'))
        && key.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let value_ok = !value.is_empty()
        && value.len() <= 256
        && value.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && !value.ends_with(' ');
    key_ok && value_ok
}

/// A random, non-zero span id.
pub(super) fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl TraceContext {
        /// The trace id as a new string (the request path writes it into the record's).
        fn trace_id(&self) -> String {
            let mut id = String::with_capacity(32);
            self.write_trace_id(&mut id);
            id
        }

        fn from_headers_off(headers: &HeaderMap) -> Self {
            Self::from_headers(headers, false)
        }
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    proptest::proptest! {
        /// The `traceparent` and the trace id written in place equal the W3C format spelled
        /// out, for any ids and flags. Seed: `a_valid_traceparent_is_continued_with_a_new_span`.
        #[test]
        fn the_upstream_traceparent_is_the_w3c_text(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) {
            let trace = TraceContext { trace_id, parent_id: None, span_id, flags, tracestate: None };
            let model = format!("00-{}-{}-{flags:02x}", hex::encode(trace_id), hex::encode(span_id));
            let sent = trace.upstream_traceparent();
            proptest::prop_assert_eq!(sent.to_str().unwrap(), model);
            // The record's trace id is the same digits.
            proptest::prop_assert_eq!(trace.trace_id(), hex::encode(trace_id));
        }

        /// What the upstream gets, for any caller headers (any number of `traceparent` and
        /// `tracestate`, valid or not, among others): exactly one `traceparent`, this trace's;
        /// `tracestate` only as the context kept it; every other header as sent, in order.
        /// Seed: `a_valid_traceparent_is_continued_with_a_new_span`.
        #[test]
        fn the_upstream_gets_exactly_this_traces_headers(
            sent in proptest::collection::vec(
                (
                    proptest::sample::select(&["traceparent", "tracestate", "x-other", "accept"][..]),
                    proptest::prop_oneof![
                        proptest::strategy::Just(VALID.to_owned()),
                        proptest::strategy::Just("congo=t61rcWkgMzE".to_owned()),
                        "[a-z0-9=,-]{0,20}",
                    ],
                ),
                0..8,
            ),
        ) {
            let pairs: Vec<(&str, &str)> = sent.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let before = headers(&pairs);
            let trace = TraceContext::from_headers_off(&before);
            let mut out = before.clone();
            trace.apply(&mut out);
            let parents: Vec<&HeaderValue> = out.get_all(TRACEPARENT).iter().collect();
            let ours = trace.upstream_traceparent();
            proptest::prop_assert_eq!(parents, vec![&ours]);
            let states: Vec<&HeaderValue> = out.get_all(TRACESTATE).iter().collect();
            proptest::prop_assert_eq!(states, trace.tracestate.iter().collect::<Vec<_>>());
            for name in ["x-other", "accept"] {
                let kept: Vec<&HeaderValue> = out.get_all(name).iter().collect();
                let given: Vec<&HeaderValue> = before.get_all(name).iter().collect();
                proptest::prop_assert_eq!(kept, given, "{}", name);
            }
            let others = before.keys().filter(|n| *n != TRACEPARENT && *n != TRACESTATE).count();
            proptest::prop_assert_eq!(out.keys_len(), others + 1 + usize::from(trace.tracestate.is_some()));
        }
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let trace =
            TraceContext::from_headers_off(&headers(&[("traceparent", VALID), ("tracestate", "congo=t61rcWkgMzE")]));
        assert!(trace.continued());
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.parent_id().as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(trace.span_id(), "00f067aa0ba902b7");
        let mut out = headers(&[("traceparent", VALID), ("tracestate", "congo=t61rcWkgMzE")]);
        trace.apply(&mut out);
        let sent = out[TRACEPARENT].to_str().unwrap();
        assert_eq!(sent, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", trace.span_id()));
        assert_eq!(out[TRACESTATE], "congo=t61rcWkgMzE");
        assert_eq!(out.get_all(TRACEPARENT).iter().count(), 1);
    }

    #[test]
    fn invalid_traceparents_start_a_fresh_trace() {
        let cases = [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper-case hex
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  // short trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // 00 with more
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",  // short flags
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", // wrong separators
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // not hex
            "",
        ];
        for case in cases {
            let trace = TraceContext::from_headers_off(&headers(&[("traceparent", case), ("tracestate", "a=b")]));
            assert!(!trace.continued(), "{case:?} was accepted");
            assert_ne!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{case:?}");
            assert_eq!(trace.tracestate, None, "{case:?}: tracestate kept");
        }
    }

    #[test]
    fn a_later_version_is_read_for_its_known_fields_and_sent_as_00() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-comes-next";
        let trace = TraceContext::from_headers_off(&headers(&[("traceparent", later)]));
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(trace.upstream_traceparent().to_str().unwrap().starts_with("00-"));
        assert!(trace.upstream_traceparent().to_str().unwrap().ends_with("-01"), "only the sampled bit");
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03x";
        assert!(!TraceContext::from_headers_off(&headers(&[("traceparent", glued)])).continued());
    }

    #[test]
    fn two_traceparents_are_invalid() {
        let two = headers(&[("traceparent", VALID), ("traceparent", VALID)]);
        assert!(!TraceContext::from_headers_off(&two).continued());
    }

    #[test]
    fn tracestate_is_joined_checked_and_bounded() {
        let joined = headers(&[("traceparent", VALID), ("tracestate", "a=1, b@x=2"), ("tracestate", "c=3")]);
        assert_eq!(TraceContext::from_headers_off(&joined).tracestate.unwrap(), "a=1,b@x=2,c=3");
        for bad in ["novalue", "UPPER=1", "a=b=c", &"k=v,".repeat(33), &format!("k={}", "v".repeat(600))] {
            let map = headers(&[("traceparent", VALID), ("tracestate", bad)]);
            let trace = TraceContext::from_headers_off(&map);
            assert!(trace.continued(), "a bad tracestate must not break the trace");
            assert_eq!(trace.tracestate, None, "{bad:?} kept");
        }
    }

    #[test]
    fn a_fresh_trace_is_valid_and_parses_back() {
        let trace = TraceContext::fresh(false);
        let sent = trace.upstream_traceparent();
        let back = TraceContext::from_headers_off(&headers(&[("traceparent", sent.to_str().unwrap())]));
        assert_eq!(back.trace_id(), trace.trace_id());
        assert_eq!(back.parent_id(), Some(trace.span_id()));
    }
}
