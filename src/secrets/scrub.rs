//! Response scrubbing: any injected secret value an upstream echoes back is replaced with
//! [`REDACTED_MARKER`] before it reaches the caller, in header names and values and in
//! trailers (always, on triggers that inject: trailers are headers), and in the streamed
//! body (`scrub_responses`), including a value split across two body chunks.
//!
//! A value is recognised in every form an upstream is likely to echo it in, whichever
//! characters of it are encoded: raw; percent-encoded (any subset of bytes, either hex
//! case, `+` for a space: query strings, `Location` headers, form bodies); JSON-escaped
//! (`\"`, `\/`, `\uXXXX` including surrogate pairs); HTML character references (`&amp;`,
//! `&#43;`, `&#x2B;`, `&quot;`, ...). Forms mixing these are recognised too. Other
//! transformations (base64, hex, hashes of a value, compression) are not: compressed
//! bodies are decoded before scrubbing (`proxy::coding`), base64 of basic-auth credentials
//! is a value of its own.

use super::value::SecretValue;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use zeroize::Zeroizing;

/// What replaces a secret value in a scrubbed response.
pub const REDACTED_MARKER: &str = "[redacted]";

/// The set of values to replace. Cheap to clone.
#[derive(Clone)]
pub struct Scrubber {
    /// Longest first, so that a value containing another is replaced whole.
    patterns: Arc<Vec<Zeroizing<Vec<u8>>>>,
    /// Bytes that start some value: every other byte is copied without a scan.
    starts: Arc<[bool; 256]>,
}

#[expect(clippy::missing_fields_in_debug, reason = "the patterns are secret values: only their count is shown")]
impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber").field("values", &self.patterns.len()).finish()
    }
}

enum Scan {
    Full(usize),
    Partial,
    None,
}

impl Default for Scrubber {
    fn default() -> Self {
        Self::new([])
    }
}

impl Scrubber {
    /// A scrubber for these values (empty values are ignored).
    pub fn new(values: impl IntoIterator<Item = SecretValue>) -> Self {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = values
            .into_iter()
            .filter(|v| !v.is_empty())
            .map(|v| Zeroizing::new(v.expose_secret().as_bytes().to_vec()))
            .collect();
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.as_slice().cmp(b.as_slice())));
        patterns.dedup_by(|a, b| a.as_slice() == b.as_slice());
        let mut starts = [false; 256];
        for p in &patterns {
            starts[usize::from(p[0])] = true;
            if p[0] == b' ' {
                starts[usize::from(b'+')] = true;
            }
        }
        if !patterns.is_empty() {
            // Any byte of a value may appear escaped.
            for escape in [b'%', b'\\', b'&'] {
                starts[usize::from(escape)] = true;
            }
        }
        Self { patterns: Arc::new(patterns), starts: Arc::new(starts) }
    }

    /// True when there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// False when no byte of `input` can start a value or an escape: scrubbing would copy
    /// it unchanged, so callers skip the copy.
    fn may_hold_a_value(&self, input: &[u8]) -> bool {
        input.iter().any(|&b| self.starts[usize::from(b)])
    }

    /// True when `input` holds a value (in any form), so that scrubbing it would change it:
    /// found without copying, for the usual header that holds none.
    fn holds_a_value(&self, input: &[u8]) -> bool {
        // Every form of a value is at least as long as the value (an escape stands for no
        // more bytes than it is made of): no value starts nearer the end than the shortest
        // one's length. Most header names and values are shorter than any value.
        let Some(shortest) = self.patterns.last().map(|p| p.len()) else { return false };
        let Some(last_start) = input.len().checked_sub(shortest) else { return false };
        input[..=last_start]
            .iter()
            .enumerate()
            .any(|(i, &b)| self.starts[usize::from(b)] && matches!(self.scan(&input[i..], true), Scan::Full(_)))
    }

    fn scan(&self, rest: &[u8], last: bool) -> Scan {
        let mut partial = false;
        for p in self.patterns.iter() {
            match match_encoded(rest, p, last) {
                Scan::Full(len) => return Scan::Full(len),
                Scan::Partial => partial = true,
                Scan::None => {}
            }
        }
        if partial { Scan::Partial } else { Scan::None }
    }

    /// Scrubs `buf`; returns the output and leaves in `buf` only a suffix that may be the
    /// start of a value (nothing when `last`).
    fn process(&self, buf: &mut Zeroizing<Vec<u8>>, last: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        while i < buf.len() {
            if !self.starts[usize::from(buf[i])] {
                out.push(buf[i]);
                i += 1;
                continue;
            }
            match self.scan(&buf[i..], last) {
                Scan::Full(len) => {
                    out.extend_from_slice(REDACTED_MARKER.as_bytes());
                    i += len;
                }
                Scan::Partial => break,
                Scan::None => {
                    out.push(buf[i]);
                    i += 1;
                }
            }
        }
        buf.drain(..i);
        out
    }

    /// Scrubs a complete byte string.
    pub fn scrub_bytes(&self, input: &[u8]) -> Vec<u8> {
        if self.is_empty() {
            return input.to_vec();
        }
        self.process(&mut Zeroizing::new(input.to_vec()), true)
    }

    /// Replaces secret values inside header values; a header whose NAME holds a value (or
    /// whose scrubbed value is not a valid header value) is removed.
    pub fn scrub_headers(&self, headers: &mut HeaderMap) {
        if self.is_empty() {
            return;
        }
        let doomed: Vec<http::HeaderName> = headers
            .keys()
            .filter(|name| {
                let name = name.as_str().as_bytes();
                self.holds_a_value(name) && self.scrub_bytes(name) != name
            })
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
        let mut invalid = Vec::new();
        for (name, value) in headers.iter_mut() {
            if !self.holds_a_value(value.as_bytes()) {
                continue;
            }
            let scrubbed = self.scrub_bytes(value.as_bytes());
            if scrubbed != value.as_bytes() {
                match HeaderValue::from_bytes(&scrubbed) {
                    Ok(v) => *value = v,
                    Err(_) => invalid.push(name.clone()),
                }
            }
        }
        for name in invalid {
            headers.remove(name);
        }
    }

    /// Wraps a response body: data and trailers scrubbed. The length changes: drop
    /// `Content-Length` when wrapping.
    pub fn wrap<B>(&self, body: B) -> ScrubBody<B> {
        ScrubBody {
            inner: body,
            scrubber: self.clone(),
            data: true,
            tail: Zeroizing::new(Vec::new()),
            pending: None,
            done: false,
        }
    }

    /// Wraps a response body whose data passes unchanged (`scrub_responses = false`):
    /// only its trailers are scrubbed, like every other header.
    pub fn wrap_trailers<B>(&self, body: B) -> ScrubBody<B> {
        ScrubBody { data: false, ..self.wrap(body) }
    }
}

/// Steps a match may take per byte of a value before it gives up: a guard against
/// pathological backtracking, far above what any real input needs.
const STEPS_PER_BYTE: usize = 16;

/// Whether `input` starts with `pattern` in some encoded form (see the module header).
/// `Partial` when `input` ends (and is not `last`) while it could still become a match.
fn match_encoded(input: &[u8], pattern: &[u8], last: bool) -> Scan {
    // Most candidate positions fail on their first character: decide those without the search.
    let (Some(&first), Some(&want)) = (input.first(), pattern.first()) else {
        return if pattern.is_empty() { Scan::Full(0) } else { Scan::None };
    };
    let unit = decode_unit(input);
    let first_fits = first == want
        || (first == b'+' && want == b' ')
        || matches!(unit, Unit::Incomplete)
        || matches!(unit, Unit::Decoded { bytes, .. } if bytes[0] == want);
    if !first_fits {
        return Scan::None;
    }
    // Depth-first over (input position, pattern position). Alternatives arise only where a
    // byte of the value is itself an escape character.
    let mut stack: Vec<(usize, usize)> = Vec::with_capacity(4);
    stack.push((0, 0));
    let mut partial = false;
    let mut budget = STEPS_PER_BYTE * pattern.len() + 64;
    while let Some((i, j)) = stack.pop() {
        if j == pattern.len() {
            return Scan::Full(i);
        }
        if i == input.len() {
            partial |= !last;
            continue;
        }
        if budget == 0 {
            break;
        }
        budget -= 1;
        // Pushed last, tried first: an escape, so that a value ending in `\` echoed as `\\`
        // is replaced whole.
        if input[i] == pattern[j] {
            stack.push((i + 1, j + 1));
        }
        if input[i] == b'+' && pattern[j] == b' ' {
            stack.push((i + 1, j + 1));
        }
        match decode_unit(&input[i..]) {
            Unit::Decoded { consumed, bytes, len } if pattern[j..].starts_with(&bytes[..len]) => {
                stack.push((i + consumed, j + len));
            }
            Unit::Incomplete => partial |= !last,
            Unit::Decoded { .. } | Unit::Raw => {}
        }
    }
    if partial { Scan::Partial } else { Scan::None }
}

/// One escaped character at the start of some input.
enum Unit {
    /// Not an escape.
    Raw,
    /// An escape that may continue past the end of the input.
    Incomplete,
    /// An escape of `consumed` input bytes standing for `bytes[..len]` (UTF-8).
    Decoded { consumed: usize, bytes: [u8; 4], len: usize },
}

fn decoded(consumed: usize, c: char) -> Unit {
    let mut bytes = [0u8; 4];
    let len = c.encode_utf8(&mut bytes).len();
    Unit::Decoded { consumed, bytes, len }
}

fn hex_value(digits: &[u8]) -> Option<u32> {
    std::str::from_utf8(digits).ok().and_then(|d| u32::from_str_radix(d, 16).ok())
}

/// Decodes a percent escape (`%2B`, one byte), a JSON escape (`\n`, `\u00e9`, a surrogate
/// pair) or an HTML character reference (`&amp;`, `&#43;`, `&#x2b;`).
fn decode_unit(input: &[u8]) -> Unit {
    match input.first() {
        Some(b'%') => match input.get(1..3) {
            None if input[1..].iter().all(u8::is_ascii_hexdigit) => Unit::Incomplete,
            Some(digits) if digits.iter().all(u8::is_ascii_hexdigit) => match hex_value(digits) {
                // A single byte: it may be one byte of a multi-byte character.
                #[expect(clippy::cast_possible_truncation, reason = "two hex digits are at most 0xFF")]
                Some(byte) => Unit::Decoded { consumed: 3, bytes: [byte as u8, 0, 0, 0], len: 1 },
                None => Unit::Raw,
            },
            _ => Unit::Raw,
        },
        Some(b'\\') => decode_json_escape(input),
        Some(b'&') => decode_html_reference(input),
        _ => Unit::Raw,
    }
}

fn decode_json_escape(input: &[u8]) -> Unit {
    let Some(&kind) = input.get(1) else { return Unit::Incomplete };
    let simple = match kind {
        b'"' => Some('"'),
        b'\\' => Some('\\'),
        b'/' => Some('/'),
        b'b' => Some('\u{8}'),
        b'f' => Some('\u{c}'),
        b'n' => Some('\n'),
        b'r' => Some('\r'),
        b't' => Some('\t'),
        b'u' => None,
        _ => return Unit::Raw,
    };
    if let Some(c) = simple {
        return decoded(2, c);
    }
    let unit = |at: usize| -> Option<Option<u32>> {
        match input.get(at..at + 4) {
            None => input.get(at..).filter(|rest| rest.iter().all(u8::is_ascii_hexdigit)).map(|_| None),
            Some(digits) if digits.iter().all(u8::is_ascii_hexdigit) => Some(hex_value(digits)),
            Some(_) => Some(Some(u32::MAX)),
        }
    };
    let first = match unit(2) {
        None | Some(Some(u32::MAX | 0xDC00..=0xDFFF)) => return Unit::Raw,
        Some(None) => return Unit::Incomplete,
        Some(Some(code)) => code,
    };
    if !(0xD800..=0xDBFF).contains(&first) {
        return char::from_u32(first).map_or(Unit::Raw, |c| decoded(6, c));
    }
    // A high surrogate: the low one must follow as `\uDCxx`.
    match (input.get(6), input.get(7)) {
        (None, _) | (Some(b'\\'), None) => return Unit::Incomplete,
        (Some(b'\\'), Some(b'u')) => {}
        _ => return Unit::Raw,
    }
    match unit(8) {
        Some(None) => Unit::Incomplete,
        Some(Some(low @ 0xDC00..=0xDFFF)) => {
            char::from_u32(0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)).map_or(Unit::Raw, |c| decoded(12, c))
        }
        _ => Unit::Raw,
    }
}

/// Longest HTML character reference recognised, `&` and `;` included (`&#x10FFFF;`).
const MAX_REFERENCE: usize = 10;

fn decode_html_reference(input: &[u8]) -> Unit {
    let window = &input[..input.len().min(MAX_REFERENCE)];
    let Some(end) = window.iter().position(|b| *b == b';') else {
        let plausible = window[1..].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'#');
        return if plausible && input.len() < MAX_REFERENCE { Unit::Incomplete } else { Unit::Raw };
    };
    let name = &window[1..end];
    let c = match name {
        b"amp" => Some('&'),
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        [b'#', b'x' | b'X', hex @ ..] if !hex.is_empty() && hex.iter().all(u8::is_ascii_hexdigit) => {
            hex_value(hex).and_then(char::from_u32)
        }
        [b'#', digits @ ..] if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok()).and_then(char::from_u32)
        }
        _ => None,
    };
    c.map_or(Unit::Raw, |c| decoded(end + 1, c))
}

/// A response body with secret values replaced by [`REDACTED_MARKER`]. Holds back at most
/// the longest value's length minus one byte between chunks.
pub struct ScrubBody<B> {
    inner: B,
    scrubber: Scrubber,
    /// Whether data frames are scrubbed too (else only trailers).
    data: bool,
    tail: Zeroizing<Vec<u8>>,
    pending: Option<Frame<Bytes>>,
    done: bool,
}

impl<B> Body for ScrubBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.pending.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !this.data => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    // Nothing held back and no byte that could start a value or an escape:
                    // the chunk goes on as it is, uncopied (most chunks of most bodies).
                    Ok(data) if this.tail.is_empty() && !this.scrubber.may_hold_a_value(&data) => {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(data) => {
                        this.tail.extend_from_slice(&data);
                        let out = this.scrubber.process(&mut this.tail, false);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    Err(mut trailers) => {
                        if let Some(map) = trailers.trailers_mut() {
                            this.scrubber.scrub_headers(map);
                        }
                        let out = this.scrubber.process(&mut this.tail, true);
                        if out.is_empty() {
                            return Poll::Ready(Some(Ok(trailers)));
                        }
                        this.pending = Some(trailers);
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    let out = this.scrubber.process(&mut this.tail, true);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if !self.data {
            // Nothing is held back: the body ends when the inner one does.
            return self.pending.is_none() && (self.done || self.inner.is_end_stream());
        }
        // Nothing held back and the inner body over: the end would add nothing (`process`
        // of an empty tail is empty). Said now, hyper ends the stream with the last data
        // (h2: END_STREAM on that DATA frame; h1: the last chunk) instead of polling again.
        self.pending.is_none() && self.tail.is_empty() && (self.done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.data { SizeHint::default() } else { self.inner.size_hint() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn scrubber() -> Scrubber {
        Scrubber::new(["s3cr3t-value".to_owned(), "abc".to_owned(), String::new()].map(SecretValue::new))
    }

    async fn collect(chunks: &[&'static [u8]]) -> Vec<u8> {
        let frames = chunks.iter().map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(c))));
        let body = StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()));
        scrubber().wrap(body).collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn replaces_values_across_chunk_boundaries() {
        assert_eq!(collect(&[b"x s3cr3t-value y"]).await, b"x [redacted] y");
        assert_eq!(collect(&[b"x s3cr", b"3t-val", b"ue y abc"]).await, b"x [redacted] y [redacted]");
        assert_eq!(collect(&[b"s", b"3", b"c", b"r", b"3", b"t", b"-value"]).await, b"[redacted]");
        // A prefix that never completes is released unchanged at the end.
        assert_eq!(collect(&[b"x s3cr3t-val"]).await, b"x s3cr3t-val");
        assert_eq!(collect(&[b"ab", b"x", b"ab"]).await, b"abxab");
    }

    /// Pieces a generated body is made of: the values as injected and as echoed (escaped,
    /// cut short), their escape characters alone, and filler.
    fn body_piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(b"s3cr3t-value".to_vec()),
            Just(b"abc".to_vec()),
            Just(b"s3cr3t%2Dvalue".to_vec()),
            Just(br"\u0061bc".to_vec()),
            Just(b"&#97;bc".to_vec()),
            Just(b"s3cr3t-val".to_vec()),
            Just(b"ab".to_vec()),
            prop::sample::select(b"%\\&as3-".to_vec()).prop_map(|b| vec![b]),
            prop::collection::vec(any::<u8>(), 0..12),
        ]
    }

    proptest::proptest! {
        /// The copy-free check that headers pass first says "holds a value" exactly when
        /// scrubbing would change the bytes, on generated text made of values, their echo
        /// forms, their escapes cut short and filler. Seed: `scrubs_headers`.
        #[test]
        fn holding_a_value_is_exactly_what_scrubbing_changes(
            pieces in proptest::collection::vec(body_piece(), 0..8),
        ) {
            let text = pieces.concat();
            let s = scrubber();
            proptest::prop_assert_eq!(s.holds_a_value(&text), s.scrub_bytes(&text) != text);
        }

        /// As above for values whose echo forms are shortest against their own length: a
        /// multi-byte character as one reference or escape, a space as `+`, a one-byte value.
        /// The length bound `holds_a_value` skips by (a form is never shorter than its
        /// value) fails here first if some form is.
        #[test]
        fn holding_a_short_or_multibyte_value_is_exactly_what_scrubbing_changes(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Strategy::prop_map(proptest::sample::select(vec![
                        "€é", "&#8364;&#233;", "&#x20AC;é", r"\u20ac\u00e9", "%E2%82%AC%C3%A9", "€", "é",
                        "a b", "a+b", "a%20b", "Ω", "&#937;", "%", "&", r"\", "x",
                    ]), |p| p.as_bytes().to_vec()),
                    proptest::collection::vec(proptest::num::u8::ANY, 0..6),
                ],
                0..8,
            ),
        ) {
            let text = pieces.concat();
            let s = Scrubber::new(["€é", "a b", "Ω"].map(|v| SecretValue::new(v.to_owned())));
            proptest::prop_assert_eq!(s.holds_a_value(&text), s.scrub_bytes(&text) != text);
        }

        /// A body scrubbed as it streams, in generated chunks, comes out exactly as the whole
        /// body scrubbed at once: no chunking lets a value (or an escaped one) through or
        /// changes other bytes. Seeds: `replaces_values_across_chunk_boundaries`.
        #[test]
        fn a_streamed_body_is_scrubbed_as_the_whole(
            pieces in proptest::collection::vec(body_piece(), 0..12),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let whole: Vec<u8> = pieces.concat();
            let frames = cut(&whole, cuts).into_iter().map(|c| Ok::<_, std::convert::Infallible>(Frame::data(c)));
            let body = StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()));
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let streamed = runtime.block_on(scrubber().wrap(body).collect()).unwrap().to_bytes();
            proptest::prop_assert_eq!(streamed.to_vec(), scrubber().scrub_bytes(&whole));
        }

        /// As above, read the way hyper sends a body: it stops at the first frame after which
        /// the body says it is at its end (`is_end_stream`), and an inner body that knows its
        /// end says so with its last chunk, as an upstream's `Content-Length` body does. No
        /// held-back byte may be left behind.
        #[test]
        fn a_body_that_says_it_ended_has_given_every_byte(
            pieces in proptest::collection::vec(body_piece(), 0..12),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let whole: Vec<u8> = pieces.concat();
            let mut body = scrubber().wrap(KnownEnd(cut(&whole, cuts).into()));
            let mut sent = Vec::new();
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            while !body.is_end_stream() {
                match Pin::new(&mut body).poll_frame(&mut cx) {
                    Poll::Ready(Some(Ok(frame))) => sent.extend_from_slice(frame.data_ref().unwrap()),
                    Poll::Ready(None) => break,
                    Poll::Ready(Some(Err(never))) => match never {},
                    Poll::Pending => unreachable!("every chunk is ready"),
                }
            }
            proptest::prop_assert_eq!(sent, scrubber().scrub_bytes(&whole));
        }
    }

    /// `whole` in chunks ending at the generated `cuts` (clamped to its length; repeated
    /// cuts give empty chunks).
    fn cut(whole: &[u8], cuts: Vec<usize>) -> Vec<Bytes> {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(whole.len())).collect();
        cuts.extend([0, whole.len()]);
        cuts.sort_unstable();
        cuts.windows(2).map(|w| Bytes::copy_from_slice(&whole[w[0]..w[1]])).collect()
    }

    /// Ready chunks, and an end it announces with the last one.
    struct KnownEnd(std::collections::VecDeque<Bytes>);

    impl Body for KnownEnd {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    #[test]
    fn scrubs_every_split_point() {
        let s = scrubber();
        let input = b"pre s3cr3t-value mid abc post";
        for split in 0..input.len() {
            let mut buf = Zeroizing::new(input[..split].to_vec());
            let mut out = s.process(&mut buf, false);
            buf.extend_from_slice(&input[split..]);
            out.extend(s.process(&mut buf, true));
            assert_eq!(out, b"pre [redacted] mid [redacted] post", "split at {split}");
        }
    }

    #[test]
    fn recognises_encoded_echoes_in_any_mix() {
        let s = Scrubber::new(["a+b/c d&é\"x".to_owned()].map(SecretValue::new));
        for echoed in [
            "a+b/c d&é\"x",
            "a%2Bb%2Fc+d%26%C3%A9%22x",
            "a%2bb%2fc%20d%26%c3%a9%22x",
            "a%2Bb/c%20d&%C3%A9\"x",
            r#"a+b\/c d&\u00e9\"x"#,
            r"a+b/c d\u0026\u00E9\u0022x",
            "a+b/c d&amp;&#233;&quot;x",
            "a&#43;b&#x2F;c d&amp;é&#34;x",
        ] {
            let out = String::from_utf8(s.scrub_bytes(format!("<{echoed}>").as_bytes())).unwrap();
            assert_eq!(out, "<[redacted]>", "{echoed}");
        }
        // Near misses stay as they are.
        for other in ["a+b/c d&é\"y", "a%2Bb%2Fc+d%26%C3%A9%22", "a%2Xb/c d&é\"x"] {
            assert_eq!(s.scrub_bytes(other.as_bytes()), other.as_bytes(), "{other}");
        }
        let emoji = Scrubber::new(["k😀y".to_owned()].map(SecretValue::new));
        assert_eq!(emoji.scrub_bytes(b"[k\\ud83d\\ude00y]"), b"[[redacted]]");
    }

    #[tokio::test]
    async fn encoded_values_split_at_every_point_are_replaced() {
        let s = Scrubber::new(["v4l/ue+x".to_owned()].map(SecretValue::new));
        let input = b"pre v4l%2Fue%2bx mid v4l\\/ue\\u002bx post";
        for split in 0..input.len() {
            let mut buf = Zeroizing::new(input[..split].to_vec());
            let mut out = s.process(&mut buf, false);
            buf.extend_from_slice(&input[split..]);
            out.extend(s.process(&mut buf, true));
            assert_eq!(out, b"pre [redacted] mid [redacted] post", "split at {split}");
        }
    }

    #[tokio::test]
    async fn trailers_are_scrubbed() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-digest", HeaderValue::from_static("of s3cr3t-value"));
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"body"))),
            Ok(Frame::trailers(trailers)),
        ];
        let collected = scrubber().wrap(StreamBody::new(futures_util::stream::iter(frames))).collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-digest"], "of [redacted]");
    }

    #[tokio::test]
    async fn trailers_only_leaves_data_and_scrubs_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-digest", HeaderValue::from_static("of s3cr3t-value"));
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"s3cr"))),
            Ok(Frame::data(Bytes::from_static(b"3t-value"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = scrubber().wrap_trailers(StreamBody::new(futures_util::stream::iter(frames)));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-digest"], "of [redacted]");
        assert_eq!(collected.to_bytes(), "s3cr3t-value", "scrub_responses = false leaves the data alone");
        // An empty body stays visibly empty (HEAD, 204: no chunked terminator, h2 END_STREAM).
        assert!(scrubber().wrap_trailers(http_body_util::Empty::<Bytes>::new()).is_end_stream());
    }

    #[test]
    fn scrubs_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_static("token=s3cr3t-value"));
        h.insert("x-other", HeaderValue::from_static("fine"));
        scrubber().scrub_headers(&mut h);
        assert_eq!(h["x-echo"], "token=[redacted]");
        assert_eq!(h["x-other"], "fine");
        h.insert("x-s3cr3t-value", HeaderValue::from_static("named after it"));
        scrubber().scrub_headers(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(format!("{:?}", scrubber()), "Scrubber { values: 2 }");
    }
}
