//! The `file` backend: a local TOML or JSON secrets file for development and the demo.
//! Refused when group- or world-readable, at compile time and at every read.

use crate::config::{Diagnostics, KeyPath, SourceFile};
use crate::secrets::backend::{RawVault, check_permissions, required, select};
use crate::secrets::error::SecretError;
use crate::secrets::reference::SecretRef;
use crate::secrets::value::{SecretValue, zeroize_tree};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// A compiled `file` vault.
pub(crate) struct FileBackend {
    path: PathBuf,
}

/// Why a secrets file does not parse. It names the place, never the content: the file
/// holds secrets.
#[derive(Debug, thiserror::Error)]
enum FormatError {
    /// toml's message without its source excerpt.
    #[error("not valid TOML: {0}")]
    Toml(String),
    #[error("not valid JSON (line {line}, column {column})")]
    Json { line: usize, column: usize },
}

/// Parses the file into a JSON value tree (TOML when the name ends in `.toml`).
fn parse(path: &Path, text: &str) -> Result<serde_json::Value, FormatError> {
    if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str::<serde_json::Value>(text).map_err(|e| FormatError::Toml(e.message().to_owned()))
    } else {
        // serde_json's error names line and column only, never content.
        serde_json::from_str(text).map_err(|e| FormatError::Json { line: e.line(), column: e.column() })
    }
}

pub(crate) fn compile(
    raw: &RawVault,
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) -> Option<FileBackend> {
    let key = path.key("path");
    let file = source.resolve(required(raw.path.as_ref(), &key, diags)?);
    if let Err(e) = check_permissions(&file) {
        diags.error_with_hint(&key, e.to_string(), format!("chmod 600 {}", file.display()));
        return None;
    }
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            if let Err(problem) = parse(&file, &text) {
                diags.error(&key, format!("{}: {problem}", file.display()));
                return None;
            }
        }
        Err(e) => {
            diags.error(&key, format!("{}: {e}", file.display()));
            return None;
        }
    }
    Some(FileBackend { path: file })
}

impl FileBackend {
    pub(crate) fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, SecretError> {
        check_permissions(&self.path)?;
        let text = Zeroizing::new(
            std::fs::read_to_string(&self.path)
                .map_err(|e| SecretError::File { reference: reference.to_string(), problem: e.kind().to_string() })?,
        );
        let mut tree = parse(&self.path, &text)
            .map_err(|problem| SecretError::File { reference: reference.to_string(), problem: problem.to_string() })?;
        let segments = reference.path.split('/').map(str::to_owned).chain(reference.field.clone());
        let value = select(&tree, reference, segments);
        zeroize_tree(&mut tree);
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn source(dir: &Path) -> SourceFile {
        SourceFile { name: "policy.toml".into(), base_dir: dir.to_path_buf(), text: String::new() }
    }

    fn raw(path: &str) -> RawVault {
        toml::from_str(&format!("kind = \"file\"\npath = \"{path}\"")).unwrap()
    }

    #[test]
    fn reads_nested_tables_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(&f, "[flows]\ntoken = \"tok-1\"\n[flows.invoice]\napi_key = \"k-2\"\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut diags = Diagnostics::default();
        let b = compile(&raw("s.toml"), &KeyPath::root(), &source(dir.path()), &mut diags).unwrap();
        assert!(diags.is_empty());
        let v = b.fetch(&SecretRef::parse("secret://f/flows/token").unwrap()).unwrap();
        assert_eq!(v.expose_secret(), "tok-1");
        let v = b.fetch(&SecretRef::parse("secret://f/flows/invoice#api_key").unwrap()).unwrap();
        assert_eq!(v.expose_secret(), "k-2");
        let e = b.fetch(&SecretRef::parse("secret://f/flows/nope").unwrap()).unwrap_err();
        assert_eq!(e.kind(), "not_found");
        let e = b.fetch(&SecretRef::parse("secret://f/flows/invoice").unwrap()).unwrap_err();
        assert_eq!(e.kind(), "field");
    }

    #[test]
    fn refuses_group_or_world_readable_files_at_compile_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.json");
        std::fs::write(&f, r#"{"a": "v"}"#).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut diags = Diagnostics::default();
        assert!(compile(&raw("s.json"), &KeyPath::root(), &source(dir.path()), &mut diags).is_none());
        let d = diags.into_vec();
        assert!(d[0].message.contains("world-readable"), "{}", d[0].message);
        assert!(d[0].hint.as_deref().unwrap_or("").contains("chmod 600"));

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut diags = Diagnostics::default();
        let b = compile(&raw("s.json"), &KeyPath::root(), &source(dir.path()), &mut diags).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = b.fetch(&SecretRef::parse("secret://f/a").unwrap()).unwrap_err();
        assert_eq!(e.kind(), "file_permissions");
    }
}
