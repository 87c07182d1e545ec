//! Reading a policy file into [`RawPolicy`], collecting every error with its place.
//!
//! The document is first parsed into a span-preserving tree; each top-level section,
//! each `[[trigger]]`, each `[identity.X]` and `[vault.X]` is then deserialized on its own,
//! so one broken entry does not hide the errors of the others.

use super::diagnostics::{ConfigError, Diagnostic, KeyPath, Segment, did_you_mean};
use super::{RawPolicy, RawTrigger};
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
                let span = root.as_ref().and_then(|root| span_of(root, &d.path));
                let message =
                    if d.path.segments().is_empty() { d.message } else { format!("{}: {}", d.path, d.message) };
                self.error_at(span, message, d.hint)
            })
            .collect()
    }
}

/// The span of the value at `path`, or of its closest existing ancestor.
fn span_of(root: &Spanned<DeTable<'_>>, path: &KeyPath) -> Option<Range<usize>> {
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
    Some(span)
}

/// Reads and parses a policy file.
///
/// # Errors
/// Every problem found, each located as `FILE:LINE:COL`.
pub fn load_file(path: &Path) -> Result<(RawPolicy, SourceFile), Vec<ConfigError>> {
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
    load_str(SourceFile { name, base_dir, text })
}

/// Parses policy text.
///
/// # Errors
/// Every syntax and shape problem found, each located.
pub fn load_str(source: SourceFile) -> Result<(RawPolicy, SourceFile), Vec<ConfigError>> {
    let (root, syntax_errors) = DeTable::parse_recoverable(&source.text);
    if !syntax_errors.is_empty() {
        let errors =
            syntax_errors.iter().map(|e| source.error_at(e.span(), e.message().trim().to_owned(), None)).collect();
        return Err(errors);
    }
    let mut errors = Vec::new();
    let mut raw = RawPolicy::default();
    for (key, value) in root.get_ref() {
        let reader = SectionReader { value, source: &source };
        match key.get_ref().as_ref() {
            "server" => reader.read(&mut errors, |v| raw.server = v),
            "limits" => reader.read(&mut errors, |v| raw.limits = v),
            "admin" => reader.read(&mut errors, |v| raw.admin = v),
            "firewall" => reader.read(&mut errors, |v| raw.firewall = v),
            "shield" => reader.read(&mut errors, |v| raw.shield = v),
            "cluster" => reader.read(&mut errors, |v| raw.cluster = v),
            "rate_limit" => reader.read(&mut errors, |v| raw.rate_limit = Some(v)),
            "signed_urls" => reader.read(&mut errors, |v| raw.signed_urls = Some(v)),
            "secrets" => reader.read(&mut errors, |v| raw.secrets = v),
            "audit" => reader.read(&mut errors, |v| raw.audit = v),
            "traces" => reader.read(&mut errors, |v| raw.traces = v),
            "identity" => raw.identity = reader.read_named(&mut errors),
            "vault" => raw.vault = reader.read_named(&mut errors),
            "trigger" => raw.trigger = reader.read_each::<RawTrigger>(&mut errors),
            unknown => {
                let hint = did_you_mean(unknown, TOP_LEVEL_KEYS.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| Some(format!("known sections: {}", TOP_LEVEL_KEYS.join(", "))));
                errors.push(source.error_at(Some(key.span()), format!("unknown section `{unknown}`"), hint));
            }
        }
    }
    if errors.is_empty() { Ok((raw, source)) } else { Err(errors) }
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "limits",
    "admin",
    "firewall",
    "shield",
    "cluster",
    "rate_limit",
    "identity",
    "signed_urls",
    "vault",
    "secrets",
    "audit",
    "traces",
    "trigger",
];

/// Deserializes one part of the document, turning serde errors into located ones.
struct SectionReader<'a> {
    value: &'a Spanned<DeValue<'a>>,
    source: &'a SourceFile,
}

impl SectionReader<'_> {
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

    fn read<T: DeserializeOwned>(self, errors: &mut Vec<ConfigError>, store: impl FnOnce(T)) {
        if let Some(parsed) = self.parse(self.value, errors) {
            store(parsed);
        }
    }

    fn read_named<T: DeserializeOwned>(self, errors: &mut Vec<ConfigError>) -> BTreeMap<String, T> {
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

    fn read_each<T: DeserializeOwned>(self, errors: &mut Vec<ConfigError>) -> Vec<T> {
        let DeValue::Array(items) = self.value.get_ref() else {
            errors.push(self.source.error_at(
                Some(self.value.span()),
                "expected an array of tables".into(),
                Some("write each entry as [[trigger]]".into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<RawPolicy, Vec<ConfigError>> {
        load_str(SourceFile { name: "p.toml".into(), base_dir: PathBuf::new(), text: text.into() }).map(|(raw, _)| raw)
    }

    #[test]
    fn unknown_key_is_located_with_a_suggestion() {
        let errors = load("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert_eq!((e.line, e.file.as_str()), (3, "p.toml"));
        assert!(e.hint.as_deref().unwrap().contains("`listen`"), "{e}");
    }

    #[test]
    fn errors_in_two_triggers_are_both_reported() {
        let text = "[[trigger]]\nname='a'\npaht='/a'\nupstream='http://x'\nwho='anyone'\n\n\
                    [[trigger]]\nname='b'\npath='/b'\nupstream='http://x'\nwho='anyone'\nmethdos=['GET']\n";
        let errors = load(text).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].line, 3);
        assert_eq!(errors[1].line, 12);
    }

    #[test]
    fn syntax_errors_are_located() {
        let errors = load("[server\nlisten = 1").unwrap_err();
        assert!(errors[0].line == 1, "{errors:?}");
    }

    #[test]
    fn unknown_section_suggests() {
        let errors = load("[triger]\n").unwrap_err();
        assert!(errors[0].hint.as_deref().unwrap().contains("trigger"));
    }
}
