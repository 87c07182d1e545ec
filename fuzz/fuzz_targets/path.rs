//! Path hygiene and normalisation before routing: never panics; an accepted path is already
//! normal (normalising it again changes nothing), has no dot or empty segment, no `;`,
//! no backslash and no encoded separator.
#![no_main]
use flowgate::policy::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let Ok(normal) = normalize_path(path) else { return };
    assert_eq!(normalize_path(&normal).as_deref(), Ok(normal.as_str()), "not idempotent for {path:?}");
    let lower = normal.to_ascii_lowercase();
    assert!(!normal.contains('\\') && !normal.contains(';'), "{normal:?}");
    assert!(!lower.contains("%2f") && !lower.contains("%5c") && !lower.contains("%00") && !lower.contains("%3b"));
    assert!(!normal.split('/').skip(1).any(|s| s.is_empty() || s == "." || s == ".."), "{normal:?}");
});
