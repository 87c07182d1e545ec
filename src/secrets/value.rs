//! The one type a secret value lives in, from the vault response to the upstream header, and
//! the helpers that keep copies of it out of memory and logs (sensitive headers, zeroized trees).

use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::Arc;

/// A secret value: zeroized when the last clone is dropped; `Debug` and `Display` print
/// `[redacted]`. The text is reachable only through [`SecretValue::expose_secret`], so every
/// place that reads it is greppable.
#[derive(Clone)]
pub struct SecretValue(Arc<SecretString>);

impl SecretValue {
    /// Wraps a value; the `String` is moved, not copied.
    pub fn new(value: String) -> Self {
        Self(Arc::new(SecretString::from(value)))
    }

    /// The value. Never log, format or store the result.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// Length in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.expose_secret().len()
    }

    /// True for an empty value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PartialEq for SecretValue {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.expose_secret().as_bytes(), other.expose_secret().as_bytes());
        // Length is not secret; compare the bytes without an early exit.
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for SecretValue {}

/// A header value marked sensitive (HTTP/2 never indexes it, and `Debug` hides it), for
/// every header that carries a secret or a vault credential. A secret's bytes go as they
/// are, UTF-8 beyond ASCII included (opaque `obs-text` to HTTP/1.1; http 1.6's `from_str`
/// takes ASCII only); control characters are still refused.
pub(crate) fn sensitive_header(value: &str) -> Option<http::HeaderValue> {
    let mut header = http::HeaderValue::from_bytes(value.as_bytes()).ok()?;
    header.set_sensitive(true);
    Some(header)
}

/// Best effort: overwrite every string of the parsed tree before it is freed.
pub(crate) fn zeroize_tree(tree: &mut serde_json::Value) {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => zeroize::Zeroize::zeroize(s),
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            serde_json::Value::Object(o) => o.values_mut().for_each(walk),
            _ => {}
        }
    }
    walk(tree);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    #[test]
    fn debug_and_display_are_redacted() {
        let v = SecretValue::new("hunter2-very-secret".into());
        assert_eq!(format!("{v:?}"), "[redacted]");
        assert_eq!(format!("{v}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(v.clone())), "Some([redacted])");
        assert_eq!(v.expose_secret(), "hunter2-very-secret");
        assert_eq!(v.len(), 19);
        assert_eq!(v, SecretValue::new("hunter2-very-secret".into()));
        assert_ne!(v, SecretValue::new("hunter3-very-secret".into()));
    }

    proptest::proptest! {
        /// A secret becomes a header value byte for byte, marked sensitive and redacted in
        /// `Debug`, whatever text it holds (UTF-8 beyond ASCII included), unless it holds a
        /// control character other than a tab, which no header may carry. Seed: the `é` of
        /// `tests/secrets_echo.rs`, which http 1.6's `from_str` stopped taking.
        #[test]
        fn a_secret_becomes_its_own_bytes_or_nothing(
            value in proptest::prop_oneof![
                proptest::strategy::Just("s3cr3t-é".to_owned()),
                "\\PC{0,24}",
                proptest::collection::vec(proptest::char::any(), 0..24).prop_map(String::from_iter),
            ],
        ) {
            let control = value.chars().any(|c| c.is_ascii_control() && c != '\t');
            match sensitive_header(&value) {
                Some(header) => {
                    proptest::prop_assert!(!control, "{value:?} was taken");
                    proptest::prop_assert_eq!(header.as_bytes(), value.as_bytes());
                    proptest::prop_assert!(header.is_sensitive());
                    proptest::prop_assert_eq!(format!("{header:?}"), "Sensitive");
                }
                None => proptest::prop_assert!(control, "{value:?} was refused"),
            }
        }
    }
}
