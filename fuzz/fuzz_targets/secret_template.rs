//! Secret references and templates: parsing never panics; an accepted reference prints
//! back to text that parses to the same reference; a template's literal parts never hold
//! a `secret://` reference that escaped parsing.
#![no_main]
use flowgate::secrets::{Part, SecretRef, Template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(reference) = SecretRef::parse(text) {
        let again = SecretRef::parse(&reference.to_string()).expect("a printed reference parses");
        assert_eq!(again, reference);
    }
    if let Ok(template) = Template::parse(text) {
        for part in template.parts() {
            if let Part::Secret(reference) = part {
                assert_eq!(SecretRef::parse(&reference.to_string()).as_ref(), Ok(reference));
            }
        }
    }
});
