//! Signed-URL parameter parsing and verification: never panics, and a query the fuzzer made
//! up never verifies (it cannot know the key), while a URL signed with the key verifies for
//! its own trigger, method and path only.
#![no_main]
use flowgate::auth::signed::{SignedUrlKeys, SignedUrlParams};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

const NOW: u64 = 1_900_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let keys = BTreeMap::from([("k1".to_owned(), b"0123456789abcdef0123456789abcdef".to_vec())]);
    let signer = SignedUrlKeys::from_resolved(keys, "k1", SignedUrlParams::default());
    let (path, query) = text.split_once('?').unwrap_or(("/hook", text));
    assert!(signer.verify("hook", "POST", path, Some(query), NOW).is_err(), "a made-up query verified");
    if path.starts_with('/') && !path.contains('#') {
        if let Ok(url) = signer.sign("hook", "POST", &format!("https://gw.example{path}"), NOW + 60) {
            let (_, signed_query) = url.split_once('?').expect("a signed URL has a query");
            let signed_path = url.trim_start_matches("https://gw.example").split('?').next().unwrap();
            assert!(signer.verify("hook", "POST", signed_path, Some(signed_query), NOW).is_ok(), "{url}");
            assert!(signer.verify("other", "POST", signed_path, Some(signed_query), NOW).is_err(), "{url}");
            assert!(signer.verify("hook", "GET", signed_path, Some(signed_query), NOW).is_err(), "{url}");
        }
    }
});
