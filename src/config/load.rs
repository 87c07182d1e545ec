//! Reading a TOML policy file section by section, collecting every error with its place.
//!
//! The document is first parsed into a span-preserving tree ([`Document`]); the caller
//! (`policy::raw`, which knows the sections) then deserializes each top-level section,
//! each entry of an array of tables and each named table on its own ([`Section`]), so
//! one broken entry does not hide the errors of the others. Nothing here knows what a
//! section means.

use super::diagnostics::{ConfigError, Diagnostic, KeyPath, Segment, did_you_mean};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// The text of a policy file and the name to report it under.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as given (used in `FILE:LINE:COL`).
    pub name: String,
    /// The directory relative paths in the policy are resolved against.
    pub base_dir: PathBuf,
    /// The file's contents.
    pub text: String,
}

impl SourceFile {
    /// Resolves a path written in the policy relative to the policy file's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    /// An error at a byte range of this file.
    fn error_at(&self, span: Option<Range<usize>>, message: String, hint: Option<String>) -> ConfigError {
        let offset = span.map_or(0, |s| s.start).min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.text[line_start..offset].chars().count() + 1;
        ConfigError { file: self.name.clone(), line, column, message, hint }
    }

    /// Turns compile diagnostics (key paths) into located errors.
    pub fn locate(&self, diagnostics: Vec<Diagnostic>) -> Vec<ConfigError> {
        let root = DeTable::parse(&self.text).ok();
        diagnostics
            .into_iter()
            .map(|d| {
                let span = root.as_ref().map(|root| span_of(root, &d.path));
                let message =
                    if d.path.segments().is_empty() { d.message } else { format!("{}: {}", d.path, d.message) };
                self.error_at(span, message, d.hint)
            })
            .collect()
    }
}

/// The span of the value at `path`, or of its closest existing ancestor.
fn span_of(root: &Spanned<DeTable<'_>>, path: &KeyPath) -> Range<usize> {
    let mut span = root.span();
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
    for segment in path.segments() {
        let next = match segment {
            Segment::Key(key) => table.and_then(|t| t.get(key.as_str())),
            Segment::Index(index) => array.and_then(|a| a.get(*index)),
        };
        let Some(next) = next else { break };
        span = next.span();
        table = None;
        array = None;
        match next.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(&a[..]),
            _ => {}
        }
    }
    span
}

/// Reads a policy file.
///
/// # Errors
/// The file cannot be read (located at `FILE:1:1` with a hint).
pub fn read_source(path: &Path) -> Result<SourceFile, Vec<ConfigError>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: name.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read the policy file: {e}"),
            hint: Some("check the path given to --config and the file's permissions".to_owned()),
        }]
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(SourceFile { name, base_dir, text })
}

/// A TOML document parsed into a span-preserving tree.
pub struct Document<'a> {
    root: Spanned<DeTable<'a>>,
    source: &'a SourceFile,
}

impl<'a> Document<'a> {
    /// Parses `source`'s text.
    ///
    /// # Errors
    /// Every syntax error found, each located.
    pub fn parse(source: &'a SourceFile) -> Result<Self, Vec<ConfigError>> {
        let (root, syntax_errors) = DeTable::parse_recoverable(&source.text);
        if !syntax_errors.is_empty() {
            return Err(syntax_errors
                .iter()
                .map(|e| source.error_at(e.span(), e.message().trim().to_owned(), None))
                .collect());
        }
        Ok(Self { root, source })
    }

    /// The top-level sections, in file order.
    pub fn sections(&self) -> impl Iterator<Item = Section<'_>> {
        self.root.get_ref().iter().map(|(key, value)| Section {
            name: key.get_ref().as_ref(),
            name_span: key.span(),
            value,
            source: self.source,
        })
    }
}

/// One top-level section of a [`Document`], deserialized on demand; serde errors become
/// located ones.
pub struct Section<'a> {
    name: &'a str,
    name_span: Range<usize>,
    value: &'a Spanned<DeValue<'a>>,
    source: &'a SourceFile,
}

impl Section<'_> {
    /// The section's key.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The error for a section nobody knows, with a did-you-mean from `known`.
    pub fn unknown(&self, known: &[&str]) -> ConfigError {
        let hint = did_you_mean(self.name, known.iter().copied())
            .map(|s| format!("did you mean `{s}`?"))
            .or_else(|| Some(format!("known sections: {}", known.join(", "))));
        self.source.error_at(Some(self.name_span.clone()), format!("unknown section `{}`", self.name), hint)
    }

    fn parse<T: DeserializeOwned>(&self, value: &Spanned<DeValue<'_>>, errors: &mut Vec<ConfigError>) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                errors.push(self.located(&error));
                None
            }
        }
    }

    fn located(&self, error: &toml::de::Error) -> ConfigError {
        let message = error.message().trim().to_owned();
        self.source.error_at(error.span(), message.clone(), hint_for(&message))
    }

    /// Deserializes the whole section and hands it to `store`.
    pub fn read<T: DeserializeOwned>(self, errors: &mut Vec<ConfigError>, store: impl FnOnce(T)) {
        if let Some(parsed) = self.parse(self.value, errors) {
            store(parsed);
        }
    }

    /// Deserializes a table of named entries (`[identity.NAME]`), each on its own.
    pub fn read_named<T: DeserializeOwned>(self, errors: &mut Vec<ConfigError>) -> BTreeMap<String, T> {
        let mut out = BTreeMap::new();
        let DeValue::Table(table) = self.value.get_ref() else {
            errors.push(self.source.error_at(
                Some(self.value.span()),
                "expected a table of named entries".into(),
                None,
            ));
            return out;
        };
        for (name, value) in table {
            if let Some(parsed) = self.parse(value, errors) {
                out.insert(name.get_ref().to_string(), parsed);
            }
        }
        out
    }

    /// Deserializes an array of tables (`[[trigger]]`), each entry on its own.
    pub fn read_each<T: DeserializeOwned>(self, errors: &mut Vec<ConfigError>) -> Vec<T> {
        let DeValue::Array(items) = self.value.get_ref() else {
            errors.push(self.source.error_at(
                Some(self.value.span()),
                "expected an array of tables".into(),
                Some(format!("write each entry as [[{}]]", self.name)),
            ));
            return Vec::new();
        };
        items.iter().filter_map(|item| self.parse(item, errors)).collect()
    }
}

/// A did-you-mean for serde's "unknown field `x`, expected one of `a`, `b`" messages.
fn hint_for(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    match did_you_mean(unknown, expected.iter().copied()) {
        Some(suggestion) => Some(format!("did you mean `{suggestion}`?")),
        None if !expected.is_empty() => Some(format!("known keys: {}", expected.join(", "))),
        None => None,
    }
}
