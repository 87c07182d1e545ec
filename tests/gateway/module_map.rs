//! The crate's structure stays as documented: the module map at the top of `src/lib.rs`
//! and in `docs/ARCHITECTURE.md` names exactly the modules that exist, and no two
//! modules import each other (`scripts/checks/module-deps.py`, which also lists the arrows).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Top-level modules as files: `src/NAME.rs` (a `src/NAME/` directory belongs to it).
fn modules_on_disk() -> BTreeSet<String> {
    std::fs::read_dir(Path::new(ROOT).join("src"))
        .expect("src/ is readable")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let stem = path.file_stem()?.to_str()?.to_owned();
            (path.extension()? == "rs" && stem != "lib" && stem != "main").then_some(stem)
        })
        .collect()
}

/// The first backticked word of each table row (`| [`name`] | ...` or `` | `name` | ...``).
fn table_names(lines: impl Iterator<Item = String>) -> BTreeSet<String> {
    lines
        .filter_map(|line| {
            let cell = line.trim_start_matches("//!").trim().strip_prefix('|')?.split('|').next()?.trim().to_owned();
            if !cell.contains('`') {
                return None; // the header row
            }
            let name = cell.trim_start_matches('[').trim_end_matches(']').trim_matches('`');
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')).then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn lib_rs_module_map_names_every_module_and_declares_each() {
    let lib = std::fs::read_to_string(Path::new(ROOT).join("src/lib.rs")).expect("src/lib.rs");
    let documented = table_names(lib.lines().filter(|l| l.starts_with("//! |")).map(str::to_owned));
    let declared: BTreeSet<String> =
        lib.lines().filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';').map(str::to_owned)).collect();
    let on_disk = modules_on_disk();
    assert_eq!(documented, on_disk, "the module map in src/lib.rs differs from the files in src/");
    assert_eq!(declared, on_disk, "the `pub mod` lines in src/lib.rs differ from the files in src/");
}

#[test]
fn architecture_module_map_names_every_module() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
    let section = text.split("## Module map").nth(1).expect("a `## Module map` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let documented = table_names(section.lines().map(str::to_owned));
    assert_eq!(documented, modules_on_disk(), "docs/ARCHITECTURE.md's module map differs from the files in src/");
}

#[test]
fn no_two_modules_import_each_other() {
    let output = Command::new("python3")
        .arg(Path::new(ROOT).join("scripts/checks/module-deps.py"))
        .arg("--inner")
        .output()
        .expect("python3 runs scripts/checks/module-deps.py (install python3: apt-get install python3)");
    let arrows = String::from_utf8_lossy(&output.stdout);
    let cycles = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "import cycles:\n{cycles}\narrows:\n{arrows}");
    assert!(arrows.lines().any(|l| l.starts_with("proxy -> ")), "the script listed no arrows:\n{arrows}");
}
