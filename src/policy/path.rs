//! What a request path means before routing. This is the one statement of the rule
//! (`docs/ARCHITECTURE.md` points here). Its property: two spellings that a common upstream
//! framework reads as the same path (Express: any case, a trailing `/`; IIS/ASP.NET: any
//! case including non-ASCII, percent-escapes decoded, trailing dots and spaces of a segment
//! trimmed; servlet containers: `;params` stripped) route to the same trigger, or the
//! unusual spelling is refused (400), never routed to a broader trigger.
//!
//! 1. **Refused** (400): a backslash, an encoded `/`, `\` or NUL, an empty segment, a `.`
//!    or `..` segment, any `;` (raw or `%3B`: servlet-style upstreams strip `;params` from
//!    each segment, so `/api/..;/internal` would reach `/internal`), a malformed escape,
//!    `%25` before two hex digits (a double encoding: `/api/%2561dmin` is `/api/admin` to
//!    an upstream that decodes twice),
//!    escapes that do not decode to UTF-8, and a segment that ends with `.`, whitespace
//!    (Unicode `White_Space`: `%20`, `%09`-`%0D`, `%C2%A0`, ...) or a control character,
//!    raw or escaped: IIS and Windows trim those, so `/api/admin.` would be `/api/admin`.
//! 2. **The normalised path** is what is forwarded (the rest after a prefix is cut from it
//!    by segment count): percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`,
//!    RFC 3986 §2.3) are decoded (`/api/%61dmin` is `/api/admin`); other escapes keep their
//!    meaning, written with upper-case hex (raw non-ASCII bytes are escaped the same way).
//!    It keeps the caller's case and trailing `/`.
//! 3. **The route key** is what routing compares, exact and prefix alike: the normalised
//!    path with every remaining escape decoded to its byte (`%3A` is `:`; `%25` is a literal
//!    `%`, never decoded twice), read as UTF-8, case-folded, and without one trailing `/`
//!    (except for `/` itself): `/API/Admin/`, `/api/%61dmin` and `/api/admin` share the key
//!    `/api/admin`. Case folding is Unicode-wide and errs towards merging: lower-case of
//!    upper-case of lower-case, with `ı` and `İ` read as `i`, so that every pair that .NET
//!    (`OrdinalIgnoreCase`, simple upper-casing), Java (`equalsIgnoreCase`) or JavaScript
//!    (`/iu`, simple folding) call equal has one key (`ſ` is `s`, `K` (Kelvin) is `k`, `ẞ`
//!    is `ß` is `ss`). Merging more than a framework does is safe: a spelling then meets a
//!    route of its own path, never a broader one. Decoding never makes a `/` (`%2F` is
//!    refused), so the key has the path's segments.

/// Why a request path is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// A `\`: some servers read it as `/`.
    Backslash,
    /// `%2F` or `%5C`: an encoded separator.
    EncodedSeparator,
    /// `%00`.
    EncodedNul,
    /// `%` not followed by two hex digits.
    MalformedEscape,
    /// `//`.
    EmptySegment,
    /// `.` or `..` (also percent-encoded).
    DotSegment,
    /// `;` or `%3B`: a path parameter.
    PathParameter,
    /// Escapes that do not decode to UTF-8 (servers would read them each their own way).
    NotUtf8,
    /// `%25` followed by two hex digits (`%2561` is `%61` once decoded, `a` twice): an
    /// upstream or framework that decodes twice would read another path than was routed.
    DoubleEncoded,
    /// A segment ending with `.`: IIS and Windows trim it.
    SegmentEndsWithDot,
    /// A segment ending with whitespace or a control character, raw or escaped: IIS,
    /// Windows and `trim()` calls drop it.
    SegmentEndsWithSpace,
}

impl std::fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Backslash => "backslash",
            Self::EncodedSeparator => "encoded separator",
            Self::EncodedNul => "encoded NUL",
            Self::MalformedEscape => "malformed percent-encoding",
            Self::EmptySegment => "empty segment",
            Self::DotSegment => "dot segment",
            Self::PathParameter => "path parameter (';')",
            Self::NotUtf8 => "percent-encoding that is not UTF-8",
            Self::DoubleEncoded => "double percent-encoding (%25 before two hex digits)",
            Self::SegmentEndsWithDot => "segment ending with '.' (some servers trim it)",
            Self::SegmentEndsWithSpace => "segment ending with whitespace (some servers trim it)",
        })
    }
}

/// A request path that passed the rules of the module header: its normalised form (what
/// is forwarded) and its route key (what routing compares).
#[derive(Debug, Clone)]
pub struct NormalPath {
    path: String,
    /// `None` when the key is the path itself (a lower-case path without a trailing `/`,
    /// the usual case): one string for both.
    key: Option<String>,
}

/// Equal when their normalised paths and route keys are (however each is held).
impl PartialEq for NormalPath {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.route_key() == other.route_key()
    }
}

impl Eq for NormalPath {}

impl NormalPath {
    /// The normalised path, in the caller's spelling.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The route key: escapes decoded, case folded, no trailing `/` (except `/`).
    pub fn route_key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.path)
    }

    /// The normalised path after its first `segments` segments, in the caller's spelling:
    /// `/API/Admin/x` after 1 is `/Admin/x`, after 3 is empty; `/api/` after 1 is `/`.
    /// Counted by segment because key and path differ in length.
    pub fn after_segments(&self, segments: usize) -> &str {
        self.path.match_indices('/').nth(segments).map_or("", |(at, _)| &self.path[at..])
    }
}

/// Judges a request path (see the module header).
///
/// # Errors
/// The path holds something that different servers read differently.
pub fn normalize(path: &str) -> Result<NormalPath, PathRefusal> {
    match plain(path) {
        Some(normal) => Ok(normal),
        None => normalize_in_full(path),
    }
}

/// The common case at the cost of one pass: a path of ASCII letters, digits, `-`, `_`, `~`,
/// `.` and single `/`s, where no segment ends with `.`, breaks no rule, is its own
/// normalised form, and its key is its ASCII lower case (less a trailing `/`). Any other
/// path (`None`) is judged in full; `plain_paths_are_judged_as_in_full` holds the two equal.
fn plain(path: &str) -> Option<NormalPath> {
    let mut previous = b'/';
    for (at, &byte) in path.as_bytes().iter().enumerate() {
        let plain = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'~' | b'.')
            // No empty segment, and no segment (`.`, `..` included) ending with a dot.
            || (byte == b'/' && (at == 0 || (previous != b'/' && previous != b'.')));
        if !plain {
            return None;
        }
        previous = byte;
    }
    if previous == b'.' {
        return None;
    }
    let trailing_slash = path.len() > 1 && path.ends_with('/');
    if !trailing_slash && !path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(NormalPath { path: path.to_owned(), key: None });
    }
    let mut key = path.to_ascii_lowercase();
    if trailing_slash {
        key.pop();
    }
    Some(NormalPath { path: path.to_owned(), key: Some(key) })
}

/// Every rule of the module header, in order.
fn normalize_in_full(path: &str) -> Result<NormalPath, PathRefusal> {
    let path = normalize_spelling(path)?;
    let decoded = String::from_utf8(decode_escapes(&path)).map_err(|_| PathRefusal::NotUtf8)?;
    // Judged on the decoded text: `%2E`, `%20` and `%C2%A0` are what a trimming server sees.
    for segment in decoded.split('/') {
        match segment.chars().next_back() {
            Some('.') => return Err(PathRefusal::SegmentEndsWithDot),
            Some(c) if c.is_whitespace() || c.is_control() => return Err(PathRefusal::SegmentEndsWithSpace),
            _ => {}
        }
    }
    let mut key = fold_case(decoded);
    if key.len() > 1 && key.ends_with('/') {
        key.pop();
    }
    Ok(NormalPath { path, key: Some(key) })
}

/// Rules 1 and 2 of the module header up to the normalised path.
fn normalize_spelling(path: &str) -> Result<String, PathRefusal> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte != b'%' {
            if byte == 0 {
                // Found by fuzzing: escaped, a raw NUL would become the `%00` refused below.
                return Err(PathRefusal::EncodedNul);
            }
            if byte.is_ascii_graphic() {
                out.push(char::from(byte));
            } else {
                // Raw bytes a URI may not hold (the parser lets some through): the escaped
                // form means the same and keeps the normalised path ASCII.
                out.push_str(&format!("%{byte:02X}"));
            }
            i += 1;
            continue;
        }
        let Some(decoded) = escaped_byte(bytes, i) else {
            return Err(PathRefusal::MalformedEscape);
        };
        match decoded {
            b'/' | b'\\' => return Err(PathRefusal::EncodedSeparator),
            0 => return Err(PathRefusal::EncodedNul),
            b';' => return Err(PathRefusal::PathParameter),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => out.push(char::from(b)),
            b => {
                out.push('%');
                out.push_str(&format!("{b:02X}"));
            }
        }
        i += 3;
    }
    if out.contains('\\') {
        return Err(PathRefusal::Backslash);
    }
    if out.contains(';') {
        return Err(PathRefusal::PathParameter);
    }
    if out.contains("//") {
        return Err(PathRefusal::EmptySegment);
    }
    // Judged on the normalised text, so that `%25%41a` (which becomes `%25Aa`) is caught too.
    if out.match_indices("%25").any(|(at, _)| hex_pair_at(out.as_bytes(), at + 3)) {
        return Err(PathRefusal::DoubleEncoded);
    }
    if out.split('/').any(|segment| segment == "." || segment == "..") {
        return Err(PathRefusal::DotSegment);
    }
    Ok(out)
}

/// The byte that the escape `%XY` at `at` stands for.
fn escaped_byte(bytes: &[u8], at: usize) -> Option<u8> {
    let hex = |b: &u8| char::from(*b).to_digit(16);
    let high = bytes.get(at + 1).and_then(hex)?;
    let low = bytes.get(at + 2).and_then(hex)?;
    u8::try_from(high * 16 + low).ok()
}

/// Two hex digits at `at` (what would make an escape of a literal `%` before them).
fn hex_pair_at(bytes: &[u8], at: usize) -> bool {
    bytes.get(at..at + 2).is_some_and(|pair| pair.iter().all(u8::is_ascii_hexdigit))
}

/// Every escape of a normalised path decoded once (`%25` becomes a literal `%`).
fn decode_escapes(normal: &str) -> Vec<u8> {
    let bytes = normal.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // A normalised path holds only well-formed escapes.
        match (bytes[i], escaped_byte(bytes, i)) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// Case folding that merges every pair some common framework reads as equal (see the
/// module header); ASCII-only text, the usual case, is only lower-cased.
fn fold_case(mut text: String) -> String {
    if text.is_ascii() {
        text.make_ascii_lowercase();
        return text;
    }
    // Dotted and dotless i fold to `i` in Java and in .NET's upper-casing; full Unicode
    // lower-casing alone would keep them apart.
    let dotless: String = text.chars().map(|c| if matches!(c, '\u{131}' | '\u{130}') { 'i' } else { c }).collect();
    // Lower first so that `ẞ` meets `ß`; upper then lower merges what either mapping does
    // (`ſ` and `s` meet at `S`, the Kelvin sign and `k` at `k`).
    dotless.to_lowercase().to_uppercase().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_that_could_escape_a_prefix_are_refused() {
        for (bad, why) in [
            ("/api/a/../b", PathRefusal::DotSegment),
            ("/api/a/%2e%2e/b", PathRefusal::DotSegment),
            ("/api/a/%2E./b", PathRefusal::DotSegment),
            ("/api/a/./b", PathRefusal::DotSegment),
            ("/api/a/..", PathRefusal::DotSegment),
            ("/api//b", PathRefusal::EmptySegment),
            ("/api/a%2fb", PathRefusal::EncodedSeparator),
            ("/a\\b", PathRefusal::Backslash),
            ("/a\0b", PathRefusal::EncodedNul),
            ("/a%5Cb", PathRefusal::EncodedSeparator),
            ("/a%00", PathRefusal::EncodedNul),
            ("/api/..;/internal", PathRefusal::PathParameter),
            ("/api/.;/internal", PathRefusal::PathParameter),
            ("/api/admin;jsessionid=1/x", PathRefusal::PathParameter),
            ("/api/x%3b/", PathRefusal::PathParameter),
            ("/a%zz", PathRefusal::MalformedEscape),
            ("/a%4", PathRefusal::MalformedEscape),
            ("/api/%2561dmin", PathRefusal::DoubleEncoded),
            ("/api/%252F", PathRefusal::DoubleEncoded),
            ("/api/x%25ff", PathRefusal::DoubleEncoded),
        ] {
            assert_eq!(normalize(bad), Err(why), "{bad}");
        }
        for good in ["/", "/api/a", "/api/a/", "/api/a.b/c..d", "/api/%20x", "/a/.x/..y"] {
            assert!(normalize(good).is_ok(), "{good} was refused");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_in_upper_case() {
        let normal = |path: &str| normalize(path).unwrap().as_str().to_owned();
        assert_eq!(normal("/api/%61dmin"), "/api/admin");
        assert_eq!(normal("/%7Euser/a%2Db%5f"), "/~user/a-b_");
        assert_eq!(normal("/a%20b/%c3%a9/%3a"), "/a%20b/%C3%A9/%3A");
        assert_eq!(normal("/Mixed/Case/"), "/Mixed/Case/");
    }

    #[test]
    fn segments_a_server_would_trim_are_refused() {
        for (bad, why) in [
            ("/x.", PathRefusal::SegmentEndsWithDot),
            ("/x%2e", PathRefusal::SegmentEndsWithDot),
            ("/api/admin./", PathRefusal::SegmentEndsWithDot),
            ("/api/x./y", PathRefusal::SegmentEndsWithDot),
            ("/a/...", PathRefusal::SegmentEndsWithDot),
            ("/x%20", PathRefusal::SegmentEndsWithSpace),
            ("/x /y", PathRefusal::SegmentEndsWithSpace),
            ("/x%09", PathRefusal::SegmentEndsWithSpace),
            ("/x%0a/y", PathRefusal::SegmentEndsWithSpace),
            ("/x%0D", PathRefusal::SegmentEndsWithSpace),
            ("/x%C2%A0", PathRefusal::SegmentEndsWithSpace),
            ("/x%c2%85", PathRefusal::SegmentEndsWithSpace),
            ("/x%E3%80%80", PathRefusal::SegmentEndsWithSpace),
            ("/x%7F", PathRefusal::SegmentEndsWithSpace),
            ("/x%01/y", PathRefusal::SegmentEndsWithSpace),
            ("/%FF", PathRefusal::NotUtf8),
            ("/a%C3", PathRefusal::NotUtf8),
            ("/%C0%AE%C0%AE/x", PathRefusal::NotUtf8),
            ("/%ED%A0%80", PathRefusal::NotUtf8),
        ] {
            assert_eq!(normalize(bad), Err(why), "{bad}");
        }
        for good in ["/x.y", "/%20x", "/x%20y", "/.x", "/x%C2%A0y/z", "/x%25", "/x/"] {
            assert!(normalize(good).is_ok(), "{good} was refused");
        }
    }

    #[test]
    fn spellings_of_one_path_share_its_route_key() {
        let key = |path: &str| normalize(path).unwrap().route_key().to_owned();
        for (spelled, expected) in [
            ("/", "/"),
            ("/API/Admin/", "/api/admin"),
            ("/api/%61dmin", "/api/admin"),
            ("/a%3Ab", "/a:b"),
            ("/a:B", "/a:b"),
            ("/%25", "/%"),
            ("/%25x", "/%x"),
            ("/%C3%89t%C3%A9/", "/été"),
            ("/caf\u{c9}", "/café"),
            ("/\u{17F}ettings", "/settings"),
            ("/adm\u{131}n", "/admin"),
            ("/adm\u{130}n", "/admin"),
            ("/ban\u{212A}", "/bank"),
            ("/stra\u{1E9E}e", "/strasse"),
            ("/stra%C3%9Fe", "/strasse"),
            ("/\u{3A3}\u{3A3}", "/σς"),
            ("/\u{3C3}\u{3C3}", "/σς"),
        ] {
            assert_eq!(key(spelled), expected, "{spelled}");
        }
    }

    #[test]
    fn seeds_plain_paths_are_judged_as_in_full() {
        for path in ["", "/", "/a/", "/A/b", "/.", "/..", "/a./b", "/a//b", "//", ".a", "/a.b/c", "/~x_-y", "a"] {
            assert_eq!(normalize(path), normalize_in_full(path), "{path:?}");
        }
        assert!(plain("/Api/v1.0/x").is_some(), "the shortcut answers plain paths");
    }

    #[test]
    fn the_rest_after_a_prefix_is_cut_by_segments() {
        let path = normalize("/API/%41dmin/x/").unwrap();
        assert_eq!(path.route_key(), "/api/admin/x");
        assert_eq!(path.after_segments(0), "/API/Admin/x/");
        assert_eq!(path.after_segments(1), "/Admin/x/");
        assert_eq!(path.after_segments(3), "/");
        assert_eq!(normalize("/api").unwrap().after_segments(1), "");
    }

    /// Every simple upper- or lower-case mapping (what .NET, Java and JavaScript compare
    /// by) keeps a character's key: checked for every Unicode scalar value.
    #[test]
    fn case_folding_merges_every_simple_case_pair() {
        let single = |mut mapped: std::iter::Peekable<std::vec::IntoIter<char>>| {
            let first = mapped.next()?;
            mapped.peek().is_none().then_some(first)
        };
        for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
            let folded = fold_case(c.to_string());
            for mapped in [c.to_uppercase().collect::<Vec<_>>(), c.to_lowercase().collect()] {
                if let Some(m) = single(mapped.into_iter().peekable()) {
                    assert_eq!(fold_case(m.to_string()), folded, "{c:?} ({:X}) and {m:?}", u32::from(c));
                }
            }
        }
    }

    proptest! {
        /// The one-pass judgement of plain paths is the full one: on paths made mostly of
        /// the plain alphabet (where the shortcut answers), and with the bytes that end it
        /// (`%`, `;`, `\\`, space, non-ASCII) mixed in. Seeds: `/`, a trailing `/`, `.` and
        /// `..` segments, a segment ending with `.`, `//`, and a leading `.`.
        #[test]
        fn plain_paths_are_judged_as_in_full(
            pieces in prop::collection::vec(prop::sample::select(vec![
                "/", "/", "a", "Z", "0", "-", "_", "~", ".", "..", "/.", "%41", ";", "\\", " ", "\u{e9}",
            ]), 0..14),
        ) {
            let path: String = pieces.concat();
            prop_assert_eq!(normalize(&path), normalize_in_full(&path), "{:?}", path);
        }

        /// What routing relies on (also the fuzz target's checks): an accepted path is
        /// normal (judging it again changes neither path nor key), and its key has the
        /// path's segments, so the rest after a prefix can be cut by segment count.
        #[test]
        fn accepted_paths_are_normal_and_keep_their_segments(
            pieces in prop::collection::vec(prop::sample::select(vec![
                "/", "a", "B", ".", "%2e", "%2F", "%25", "%41", "%c3%a9", "%C3", "\u{130}", "\u{17F}",
                "%20", " ", "%C2%A0", ";", "~", ":", "%3a", "%zz", "\\",
            ]), 0..12),
        ) {
            let path: String = pieces.concat();
            prop_assert_eq!(normalize(&path), normalize_in_full(&path), "{:?}", path);
            if let Ok(normal) = normalize(&path) {
                prop_assert_eq!(normalize(normal.as_str()), Ok(normal.clone()));
                let key = normal.route_key();
                let key_segments = if key == "/" { 0 } else { key.matches('/').count() };
                let path_segments = normal.as_str().split('/').skip(1).filter(|s| !s.is_empty()).count();
                prop_assert_eq!(key_segments, path_segments, "{:?} -> {:?}", normal, key);
            }
        }
    }
}
