//! Path hygiene and normalisation before routing: never panics; an accepted path is already
//! normal (normalising it again changes nothing), has no dot or inner empty segment, no `;`,
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
    // A trailing `/` (an empty last segment) is a path of its own, not an empty segment.
    let segments: Vec<&str> = normal.split('/').skip(1).collect();
    let inner = &segments[..segments.len().saturating_sub(1)];
    assert!(!inner.iter().any(|s| s.is_empty()), "{normal:?}");
    assert!(!segments.iter().any(|s| *s == "." || *s == ".."), "{normal:?}");
});
