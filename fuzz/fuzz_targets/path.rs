//! Path hygiene and normalisation before routing: never panics; an accepted path is already
//! normal (normalising it again changes nothing, route key included), has no dot or inner
//! empty segment, no `;`, no backslash and no encoded separator; its route key has the
//! path's segments, none ending with `.` or whitespace.
#![no_main]
use flowgate::policy::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let Ok(normal) = normalize_path(path) else { return };
    assert_eq!(normalize_path(normal.as_str()), Ok(normal.clone()), "not idempotent for {path:?}");
    let text = normal.as_str();
    let lower = text.to_ascii_lowercase();
    assert!(!text.contains('\\') && !text.contains(';'), "{text:?}");
    assert!(!lower.contains("%2f") && !lower.contains("%5c") && !lower.contains("%00") && !lower.contains("%3b"));
    // A trailing `/` (an empty last segment) is a path of its own, not an empty segment.
    let segments: Vec<&str> = text.split('/').skip(1).collect();
    let inner = &segments[..segments.len().saturating_sub(1)];
    assert!(!inner.iter().any(|s| s.is_empty()), "{text:?}");
    assert!(!segments.iter().any(|s| *s == "." || *s == ".."), "{text:?}");
    // The key drops one trailing `/` only: the same segments, so the rest after a prefix
    // can be cut from the path by segment count.
    let key = normal.route_key();
    let key_segments = if key == "/" { 0 } else { key.matches('/').count() };
    let path_segments = segments.iter().filter(|s| !s.is_empty()).count();
    assert_eq!(key_segments, path_segments, "{text:?} -> {key:?}");
    assert!(!key.split('/').any(|s| s.ends_with(|c: char| c == '.' || c.is_whitespace())), "{key:?}");
});
