//! `secret://<vault>/<path>[#field][@version]` references and the templates that embed them.

use std::fmt;
use thiserror::Error;

/// A parsed secret reference. Holds names only, never a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    /// The `[vault.NAME]` it names.
    pub vault: String,
    /// The path inside the vault (`flows/invoice`), without leading or trailing `/`.
    pub path: String,
    /// A field of the secret (`#api_key`): a KV data key or a nested table key.
    pub field: Option<String>,
    /// A version (`@3` for OpenBao, an id string for Azure Key Vault).
    pub version: Option<String>,
}

/// Why a reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RefParseError {
    /// It does not start with `secret://`.
    #[error("a reference starts with secret://")]
    Scheme,
    /// `secret://` is not followed by `VAULT/PATH`.
    #[error("a reference needs a vault and a path: secret://VAULT/PATH")]
    MissingPath,
    /// A part is empty (`#` or `@` with nothing after it) or has forbidden characters.
    #[error("invalid {0} in reference")]
    Invalid(&'static str),
}

fn valid_part(s: &str, allow_slash: bool) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (allow_slash && c == '/'))
        && !s.split('/').any(|seg| seg.is_empty() || seg == "..")
}

impl SecretRef {
    /// Parses `secret://vault/path[#field][@version]`. Whether the vault exists and the
    /// version suits its kind is checked at compile time, against the policy's
    /// [`Vaults`](crate::secrets::Vaults).
    ///
    /// # Errors
    /// [`RefParseError`] naming the broken part.
    pub fn parse(text: &str) -> Result<Self, RefParseError> {
        let rest = text.strip_prefix("secret://").ok_or(RefParseError::Scheme)?;
        let (vault, rest) = rest.split_once('/').ok_or(RefParseError::MissingPath)?;
        let (rest, version) = match rest.rsplit_once('@') {
            Some((r, v)) => (r, Some(v)),
            None => (rest, None),
        };
        let (path, field) = match rest.split_once('#') {
            Some((p, f)) => (p, Some(f)),
            None => (rest, None),
        };
        if !valid_part(vault, false) {
            return Err(RefParseError::Invalid("vault name"));
        }
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            return Err(RefParseError::MissingPath);
        }
        if !valid_part(path, true) {
            return Err(RefParseError::Invalid("path"));
        }
        if field.is_some_and(|f| !valid_part(f, false)) {
            return Err(RefParseError::Invalid("field"));
        }
        if version.is_some_and(|v| !valid_part(v, false)) {
            return Err(RefParseError::Invalid("version"));
        }
        Ok(Self {
            vault: vault.to_owned(),
            path: path.to_owned(),
            field: field.map(str::to_owned),
            version: version.map(str::to_owned),
        })
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "secret://{}/{}", self.vault, self.path)?;
        if let Some(field) = &self.field {
            write!(f, "#{field}")?;
        }
        if let Some(version) = &self.version {
            write!(f, "@{version}")?;
        }
        Ok(())
    }
}

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as written in the policy (not secret: the policy is not a secret store).
    Literal(String),
    /// A value fetched from a vault.
    Secret(SecretRef),
}

/// A value to inject: literal text and references, parsed once at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `"secret://..."` (a bare reference) or text with `{{secret://...}}` parts.
    ///
    /// # Errors
    /// An unclosed `{{`, or a reference that does not parse.
    pub fn parse(text: &str) -> Result<Self, RefParseError> {
        if text.starts_with("secret://") {
            return Ok(Self { parts: vec![Part::Secret(SecretRef::parse(text)?)] });
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(RefParseError::Invalid("template: {{ without }}"))?;
            parts.push(Part::Secret(SecretRef::parse(after[..end].trim())?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The references this template needs.
    pub fn references(&self) -> impl Iterator<Item = &SecretRef> {
        self.parts.iter().filter_map(|p| match p {
            Part::Secret(r) => Some(r),
            Part::Literal(_) => None,
        })
    }

    /// True when the template has no reference at all.
    pub(crate) fn is_literal_only(&self) -> bool {
        self.references().next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_references() {
        let r = SecretRef::parse("secret://kv/flows/invoice#api_key@3").unwrap();
        assert_eq!(r.vault, "kv");
        assert_eq!(r.path, "flows/invoice");
        assert_eq!(r.field.as_deref(), Some("api_key"));
        assert_eq!(r.version.as_deref(), Some("3"));
        assert_eq!(r.to_string(), "secret://kv/flows/invoice#api_key@3");
        let r = SecretRef::parse("secret://akv/invoice-sig").unwrap();
        assert_eq!((r.field, r.version), (None, None));
    }

    #[test]
    fn refuses_broken_references() {
        assert_eq!(SecretRef::parse("kv/flows"), Err(RefParseError::Scheme));
        assert_eq!(SecretRef::parse("secret://kv"), Err(RefParseError::MissingPath));
        assert_eq!(SecretRef::parse("secret://kv/"), Err(RefParseError::MissingPath));
        assert!(SecretRef::parse("secret://kv/a#").is_err());
        assert!(SecretRef::parse("secret://kv/a@").is_err());
        assert!(SecretRef::parse("secret://kv/../etc").is_err());
        assert!(SecretRef::parse("secret://k v/a").is_err());
    }

    #[test]
    fn templates_mix_literals_and_references() {
        let t = Template::parse("Bearer {{secret://kv/flows/token}}").unwrap();
        assert_eq!(t.parts().len(), 2);
        assert_eq!(t.parts()[0], Part::Literal("Bearer ".into()));
        assert!(!t.is_literal_only());
        assert!(Template::parse("plain").unwrap().is_literal_only());
        assert!(Template::parse("x {{secret://kv/a").is_err());
        assert_eq!(Template::parse("secret://kv/a#f").unwrap().references().count(), 1);
    }
}
