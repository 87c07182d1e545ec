//! HTML escaping for the console's server-rendered pages. Every value that reaches a
//! page goes through [`e`] (text and attribute values alike) or [`query_value`] (a value
//! inside a link's query string, then escaped too): nothing from a run record, a policy or
//! a request is ever written raw.

use std::fmt::{self, Display, Write};

/// `value` as HTML text: `&`, `<`, `>`, `"` and `'` become entities, so the result is
/// safe both between tags and inside a quoted attribute.
pub(super) fn e<T: Display>(value: T) -> Escaped<T> {
    Escaped(value)
}

/// A value that writes itself HTML-escaped (see [`e`]).
pub(super) struct Escaped<T>(T);

impl<T: Display> Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(f), "{}", self.0)
    }
}

/// Forwards text to a formatter with the five HTML-special characters replaced.
struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut start = 0;
        for (at, c) in text.char_indices() {
            let entity = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            self.0.write_str(&text[start..at])?;
            self.0.write_str(entity)?;
            start = at + c.len_utf8();
        }
        self.0.write_str(&text[start..])
    }
}

/// `value` form-encoded for a query string (the caller still escapes the whole link).
pub(super) fn query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_special_character_becomes_an_entity() {
        assert_eq!(
            e(r#"<script>alert("x" & 'y')</script>"#).to_string(),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(e("plain é text").to_string(), "plain é text");
        assert_eq!(e(42).to_string(), "42");
        assert_eq!(query_value("a b&c=<d>"), "a+b%26c%3D%3Cd%3E");
    }
}
