//! The strict JSON reader (token headers and claims): never panics; whatever it accepts is
//! an object that plain serde_json reads the same way, without duplicate keys.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(map) = flowgate::auth::parse_object(data) {
        let plain: serde_json::Value = serde_json::from_slice(data).expect("strict accepted what serde_json refuses");
        assert!(plain.is_object());
        assert_eq!(plain.as_object().map(|o| o.len()), Some(map.len()));
    }
});
