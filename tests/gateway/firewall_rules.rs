//! The firewall through its public API as the pipeline uses it: client address behind
//! trusted proxies, then global and trigger rules, then principal pins.

use flowgate::config::{Diagnostics, KeyPath, SourceFile};
use flowgate::firewall::RawIpRules;
use flowgate::firewall::{IpRuleParts, IpRules, IpSet, PrincipalPins, TrustedHeader, TrustedProxies, client_address};
use http::{HeaderMap, HeaderValue};
use std::collections::BTreeMap;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn source() -> SourceFile {
    SourceFile { name: "p.toml".into(), base_dir: std::env::temp_dir(), text: String::new() }
}

#[test]
fn spoofed_forwarded_for_from_an_untrusted_peer_is_refused() {
    let trusted = TrustedProxies(IpSet::parse(["10.0.0.0/8"]).expect("set"));
    let allow = vec!["127.0.0.2".to_owned()];
    let mut diags = Diagnostics::default();
    let rules = IpRules::compile_parts(
        "trigger",
        IpRuleParts { allow: &allow, ..IpRuleParts::default() },
        &KeyPath::root().key("trigger").index(0),
        &source(),
        &mut diags,
    );
    assert!(diags.is_empty());
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static("127.0.0.2"));

    // Direct caller claims to be 127.0.0.2: ignored, refused.
    let direct = client_address(ip("127.0.0.3"), &headers, &trusted, TrustedHeader::XForwardedFor).unwrap();
    let refusal = rules.check(direct.client, direct.peer).expect_err("spoof refused");
    assert_eq!(refusal.to_string(), "trigger allow_ips (not listed)");

    // The same header through our load balancer is believed.
    let via_lb = client_address(ip("10.1.1.1"), &headers, &trusted, TrustedHeader::XForwardedFor).unwrap();
    assert!(rules.check(via_lb.client, via_lb.peer).is_ok());
}

#[test]
fn global_deny_beats_trigger_allow_and_pins_apply_last() {
    let raw = RawIpRules { deny_ips: vec!["2001:db8:bad::/48".into()], ..RawIpRules::default() };
    let mut diags = Diagnostics::default();
    let global = IpRules::compile(&raw, &KeyPath::root().key("firewall"), &source(), &mut diags);
    let allow = vec!["2001:db8::/32".to_owned()];
    let trigger = IpRules::compile_parts(
        "trigger",
        IpRuleParts { allow: &allow, ..IpRuleParts::default() },
        &KeyPath::root(),
        &source(),
        &mut diags,
    );
    let mut pins_raw = BTreeMap::new();
    pins_raw.insert("oid:robot".to_owned(), vec!["2001:db8:1::/64".to_owned()]);
    let pins = PrincipalPins::compile(&pins_raw, &KeyPath::root().key("principal_ips"), &mut diags);
    assert!(diags.is_empty());

    let bad = ip("2001:db8:bad::5");
    assert_eq!(global.check(bad, bad).expect_err("global deny").to_string(), "global deny_ips");
    assert!(trigger.check(bad, bad).is_ok(), "the trigger alone would allow it");

    let office = ip("2001:db8:1::9");
    let elsewhere = ip("2001:db8:2::9");
    assert!(global.check(office, office).is_ok() && trigger.check(office, office).is_ok());
    assert!(pins.check(&["oid:robot".into()], office).is_ok());
    assert!(pins.check(&["oid:robot".into()], elsewhere).is_err());
    assert!(pins.check(&["oid:human".into()], elsewhere).is_ok());
}
