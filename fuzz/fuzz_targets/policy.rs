//! Policy loading: TOML text → raw policy → compile, with diagnostics. Never panics, and
//! every error it reports points inside the text (line and column exist).
#![no_main]
use flowgate::config::SourceFile;
use flowgate::policy::load_str;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Relative paths in the policy resolve into an empty scratch directory.
    let dir = tempfile::tempdir().unwrap();
    let source = SourceFile { name: "fuzz.toml".to_owned(), base_dir: dir.path().to_path_buf(), text: text.to_owned() };
    let lines = text.split('\n').count();
    let errors = match load_str(source) {
        Ok((raw, source)) => match flowgate::policy::compile(&raw, &source) {
            Ok(_) => return,
            Err(errors) => errors,
        },
        Err(errors) => errors,
    };
    assert!(!errors.is_empty());
    for error in errors {
        assert!(error.line >= 1 && error.line <= lines, "{error:?} outside {lines} lines");
        assert!(error.column >= 1);
    }
});
