//! JWT header and claims judgement: the input is `HEADER_JSON \n CLAIMS_JSON`, encoded
//! into a token the way a caller would send it (and also tried raw, as token text). Header
//! judgement and claims reading never panic, and a header flowgate accepts never names an
//! algorithm outside the pinned list.
#![no_main]
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flowgate::auth::token::{Claims, IssuerPattern, TokenRules, inspect};
use libfuzzer_sys::fuzz_target;

fn rules() -> TokenRules {
    TokenRules {
        algorithms: vec![jsonwebtoken::Algorithm::RS256],
        issuers: vec![IssuerPattern::parse("https://login.microsoftonline.com/{tenant}/v2.0").unwrap()],
        audiences: vec!["api://flowgate".to_owned()],
        leeway: 60,
        max_lifetime: 24 * 3600,
        max_token_bytes: 16 * 1024,
    }
}

fuzz_target!(|data: &[u8]| {
    let rules = rules();
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(facts) = inspect(text, &rules) {
            assert!(rules.algorithms.contains(&facts.alg));
        }
    }
    let mut halves = data.splitn(2, |b| *b == b'\n');
    let (header, claims) = (halves.next().unwrap_or_default(), halves.next().unwrap_or_default());
    let token = format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    if let Ok(facts) = inspect(&token, &rules) {
        assert!(rules.algorithms.contains(&facts.alg));
    }
    if let Ok(map) = flowgate::auth::parse_object(claims) {
        let _ = Claims::from_map(map);
    }
});
