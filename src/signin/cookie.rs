//! The console's cookies: reading an opaque id out of a `Cookie` header, and the
//! `Set-Cookie` lines that hand one out or take it back.
//!
//! Both cookies carry 32 random bytes as 43 characters of unpadded base64url, nothing
//! else: the meaning lives server-side. Both are `__Host-` prefixed (the browser accepts
//! them only `Secure`, with `Path=/` and no `Domain`, so no sibling host can plant or
//! shadow one), `HttpOnly` (no script reads them) and `SameSite=Lax`: the provider sends
//! the browser back with a cross-site top-level navigation, which a `Strict` cookie would
//! miss, and every request that changes state needs the session's CSRF token as well.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::time::Duration;

/// The signed-in session.
pub const SESSION_COOKIE: &str = "__Host-flowgate-session";
/// Binds a sign-in in progress to the browser that started it (no login CSRF).
pub const LOGIN_COOKIE: &str = "__Host-flowgate-login";
/// Length of an id as the cookie carries it.
const ID_TEXT_LEN: usize = 43;

/// An opaque random id: a session's or a sign-in's. Its `Debug` shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct OpaqueId(pub(crate) [u8; 32]);

impl std::fmt::Debug for OpaqueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpaqueId([redacted])")
    }
}

impl OpaqueId {
    /// A fresh id from the operating system's random source.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// As the cookie carries it.
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parses exactly 43 base64url characters that encode 32 bytes canonically.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != ID_TEXT_LEN || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let id: [u8; 32] = bytes.try_into().ok()?;
        // The last character carries 4 spare bits: only one spelling per id.
        (URL_SAFE_NO_PAD.encode(id) == text).then_some(Self(id))
    }
}

/// What the request's cookies say about one cookie name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieLookup {
    /// Not sent.
    Absent,
    /// Sent once with a well-formed id (or several times with that same id).
    Id(OpaqueId),
    /// Sent with a malformed value, or with two different values (a planted cookie beside
    /// the real one): judged as no session at all.
    Unusable,
}

/// The id in cookie `name` of a request's `Cookie` headers (RFC 6265 5.4: pairs separated
/// by `;`, optional whitespace around them; a pair without `=` is ignored).
pub fn find_id(headers: &http::HeaderMap, name: &str) -> CookieLookup {
    let mut found: Option<CookieLookup> = None;
    for header in headers.get_all(http::header::COOKIE) {
        // A non-ASCII header cannot hold our cookie well-formed, but may hold others.
        let text = String::from_utf8_lossy(header.as_bytes());
        for pair in text.split(';') {
            let Some((key, value)) = pair.split_once('=') else { continue };
            if key.trim_matches([' ', '\t']) != name {
                continue;
            }
            let value = value.trim_matches([' ', '\t']);
            let this = OpaqueId::parse(value).map_or(CookieLookup::Unusable, CookieLookup::Id);
            found = match found {
                None => Some(this),
                Some(earlier) if earlier == this => Some(earlier),
                Some(_) => Some(CookieLookup::Unusable),
            };
        }
    }
    found.unwrap_or(CookieLookup::Absent)
}

/// `Set-Cookie` for `name` holding `id`, kept for `max_age`.
pub fn set_cookie(name: &str, id: &OpaqueId, max_age: Duration) -> String {
    format!("{name}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}", id.to_text(), max_age.as_secs().max(1))
}

/// `Set-Cookie` that removes `name`.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(values: &[String]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for value in values {
            map.append(http::header::COOKIE, http::HeaderValue::from_str(value).unwrap());
        }
        map
    }

    /// One cookie pair a generated request may carry.
    #[derive(Debug, Clone)]
    enum Pair {
        /// Ours, with a well-formed id (an index into a few ids).
        Ours(usize),
        /// Ours, with a value that is not an id.
        OursBroken(String),
        /// Another cookie (a name that is not ours, any value).
        Other(String, String),
        /// A fragment without `=`.
        Bare(String),
    }

    fn ids() -> Vec<OpaqueId> {
        (0u8..3).map(|i| OpaqueId([i.wrapping_mul(91).wrapping_add(7); 32])).collect()
    }

    fn pair() -> impl Strategy<Value = Pair> {
        prop_oneof![
            (0usize..3).prop_map(Pair::Ours),
            prop_oneof![
                Just(String::new()),
                "[A-Za-z0-9_-]{42}",
                "[A-Za-z0-9_-]{44}",
                "[A-Za-z0-9+/=.]{42}\\.",
                // 43 characters whose last one has spare bits set: not canonical.
                Just(format!("{}B", "A".repeat(42))),
            ]
            .prop_map(Pair::OursBroken),
            (
                "[a-z_-]{1,12}|__Host-flowgate-sessio|__host-flowgate-session|__Host-flowgate-session2",
                "[A-Za-z0-9=_-]{0,50}"
            )
                .prop_map(|(n, v)| Pair::Other(n, v)),
            "[a-z ]{0,8}".prop_map(Pair::Bare),
        ]
    }

    fn render(pair: &Pair, ids: &[OpaqueId], space: &str) -> String {
        match pair {
            Pair::Ours(i) => format!("{space}{SESSION_COOKIE}={space}{}", ids[*i].to_text()),
            Pair::OursBroken(v) => format!("{space}{SESSION_COOKIE}={v}"),
            Pair::Other(n, v) => format!("{space}{n}={v}"),
            Pair::Bare(b) => b.clone(),
        }
    }

    /// The model: judged from the pairs' structure, not by parsing text.
    fn expected(pairs: &[Pair], ids: &[OpaqueId]) -> CookieLookup {
        let ours: Vec<Option<usize>> = pairs
            .iter()
            .filter_map(|p| match p {
                Pair::Ours(i) => Some(Some(*i)),
                Pair::OursBroken(_) => Some(None),
                _ => None,
            })
            .collect();
        match ours.first() {
            None => CookieLookup::Absent,
            Some(Some(first)) if ours.iter().all(|o| *o == Some(*first)) => CookieLookup::Id(ids[*first].clone()),
            Some(_) => CookieLookup::Unusable,
        }
    }

    proptest! {
        #[test]
        fn cookie_lookup_follows_the_model(
            pairs in proptest::collection::vec(pair(), 0..8),
            split in 0usize..8,
            space in prop_oneof![Just(""), Just(" "), Just("\t ")],
        ) {
            let ids = ids();
            let texts: Vec<String> = pairs.iter().map(|p| render(p, &ids, space)).collect();
            // Spread over one or two Cookie headers (h2 sends one per pair).
            let cut = split.min(texts.len());
            let header_values: Vec<String> = [texts[..cut].join(";"), texts[cut..].join(";")]
                .into_iter()
                .filter(|h| !h.is_empty())
                .collect();
            prop_assert_eq!(find_id(&headers(&header_values), SESSION_COOKIE), expected(&pairs, &ids));
        }

        #[test]
        fn ids_round_trip_and_other_text_is_refused(bytes in any::<[u8; 32]>(), text in "\\PC{0,60}") {
            let id = OpaqueId(bytes);
            prop_assert_eq!(OpaqueId::parse(&id.to_text()), Some(id));
            if let Some(parsed) = OpaqueId::parse(&text) {
                prop_assert_eq!(parsed.to_text(), text);
            }
        }
    }

    #[test]
    fn set_cookie_lines_carry_every_attribute() {
        let line = set_cookie(SESSION_COOKIE, &OpaqueId([1; 32]), Duration::from_secs(600));
        for part in
            ["__Host-flowgate-session=", "; Path=/", "; Secure", "; HttpOnly", "; SameSite=Lax", "; Max-Age=600"]
        {
            assert!(line.contains(part), "{line} lacks {part}");
        }
        assert!(!line.contains("Domain"), "{line}");
        assert!(clear_cookie(SESSION_COOKIE).ends_with("Max-Age=0"));
    }
}
