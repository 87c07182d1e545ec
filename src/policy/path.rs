//! What a request path means before routing. A path is judged and compared in one
//! normalised form, so that a narrower route cannot be bypassed by spelling its path
//! differently, and nothing reaches an upstream that another server would read as a
//! different path:
//!
//! 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are
//!    decoded (`/api/%61dmin` is `/api/admin`); other escapes keep their meaning and are
//!    written with upper-case hex (raw non-ASCII bytes are escaped the same way); a
//!    malformed escape is refused;
//! 2. refused: a backslash, an encoded `/`, `\` or NUL, an empty segment, a `.` or `..`
//!    segment, and any `;` (raw or `%3B`): servlet-style upstreams (Tomcat, Jetty, Spring)
//!    strip `;params` from each segment before normalising, so `/api/..;/internal` would
//!    reach `/internal`;
//! 3. routing compares the result ignoring ASCII case (`/API/Admin` is `/api/admin`):
//!    many upstreams (IIS, ASP.NET, Logic Apps) read paths that way, so a case-sensitive
//!    match would let another spelling fall through to a shorter prefix. What is forwarded
//!    keeps the caller's case.

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
        })
    }
}

/// The normalised form of a request path (see the module header), or why it is refused.
///
/// # Errors
/// The path holds something that different servers read differently.
pub fn normalize(path: &str) -> Result<String, PathRefusal> {
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
        let hex = |b: u8| char::from(b).to_digit(16);
        let (Some(high), Some(low)) = (bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b)))
        else {
            return Err(PathRefusal::MalformedEscape);
        };
        let decoded = u8::try_from(high * 16 + low).unwrap_or(0);
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
    if out.split('/').any(|segment| segment == "." || segment == "..") {
        return Err(PathRefusal::DotSegment);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert_eq!(normalize(bad), Err(why), "{bad}");
        }
        for good in ["/", "/api/a", "/api/a/", "/api/a.b/c..d", "/api/%20x", "/a/.x/..y"] {
            assert!(normalize(good).is_ok(), "{good} was refused");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_in_upper_case() {
        assert_eq!(normalize("/api/%61dmin").unwrap(), "/api/admin");
        assert_eq!(normalize("/%7Euser/a%2Db%5f%2e").unwrap(), "/~user/a-b_.");
        assert_eq!(normalize("/a%20b/%c3%a9/%3a").unwrap(), "/a%20b/%C3%A9/%3A");
        assert_eq!(normalize("/Mixed/Case").unwrap(), "/Mixed/Case");
    }
}
