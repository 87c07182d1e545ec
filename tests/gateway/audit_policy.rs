//! Admin tooling over the policy: `check --diff` output for loosened and tightened
//! rules (never printing a secret), and the `/policy` view by admin role.

use flowgate::admin::AdminRole;
use flowgate::policy::diff::{Effect, diff_texts, render};
use flowgate::policy::policy_view;

const OLD: &str = r#"
[firewall]
deny_ips = ["192.0.2.0/24"]

[[trigger]]
name = "invoice"
path = "/t/invoice"
upstream = "https://flows.example/invoke?api-version=1&sig=OLD-SIG-VALUE"
who = "specific_users"
principals = ["oid:alice"]
allow_ips = ["203.0.113.0/24"]
roles = { any_of = ["Flows.Invoke"] }
rate_limit = { calls = 100, period = "60s" }
capture = true
secure_inputs = true
private_parameters = ["password"]
inject.headers."x-api-key" = "secret://kv/flows#api_key"
inject.headers."x-static" = "LITERAL-INJECT-VALUE"

[[trigger]]
name = "legacy"
path = "/t/legacy"
upstream = "http://127.0.0.1:7000/"
who = "tenant_users"
"#;

const NEW: &str = r#"
[firewall]
deny_ips = ["192.0.2.0/24", "198.51.100.0/24"]

[[trigger]]
name = "invoice"
path = "/t/invoice"
upstream = "https://flows.example/invoke?api-version=2&sig=NEW-SIG-VALUE"
who = "anyone"
principals = ["oid:alice", "oid:bob"]
allow_ips = []
deny_ips = ["203.0.113.7/32"]
rate_limit = { calls = 200, period = "60s" }
capture = true
secure_inputs = false
private_parameters = ["password", "ssn"]
inject.headers."x-api-key" = "secret://kv/flows#api_key2"
inject.headers."x-static" = "OTHER-LITERAL-VALUE"

[[trigger]]
name = "reports"
path = "/t/reports"
upstream = "http://127.0.0.1:7001/"
who = "specific_users"
"#;

fn effect_of(changes: &[flowgate::policy::diff::Change], scope: &str, field: &str) -> Vec<Effect> {
    changes.iter().filter(|c| c.scope == scope && c.field.as_deref() == Some(field)).map(|c| c.effect).collect()
}

#[test]
fn diff_reports_loosened_rules() {
    let changes = diff_texts(OLD, NEW).expect("both parse");
    let t = "trigger \"invoice\"";
    assert_eq!(effect_of(&changes, t, "who"), [Effect::Loosened], "{changes:#?}");
    assert_eq!(effect_of(&changes, t, "principals"), [Effect::Loosened]);
    assert_eq!(effect_of(&changes, t, "allow_ips"), [Effect::Loosened], "emptied allow list admits anyone");
    assert_eq!(effect_of(&changes, t, "roles.any_of"), [Effect::Loosened], "roles removed");
    assert_eq!(effect_of(&changes, t, "rate_limit"), [Effect::Loosened], "more calls per period");
    assert_eq!(effect_of(&changes, t, "secure_inputs"), [Effect::Loosened]);
    let text = render(&changes);
    assert!(text.contains("LOOSENED  trigger \"invoice\" who: specific_users -> anyone"), "{text}");
}

#[test]
fn diff_reports_tightened_rules_and_trigger_changes() {
    let changes = diff_texts(OLD, NEW).expect("both parse");
    let t = "trigger \"invoice\"";
    assert_eq!(effect_of(&changes, t, "deny_ips"), [Effect::Tightened]);
    assert_eq!(effect_of(&changes, t, "private_parameters"), [Effect::Tightened]);
    assert_eq!(effect_of(&changes, "[firewall]", "deny_ips"), [Effect::Tightened]);
    assert!(changes.iter().any(|c| c.scope == "trigger \"legacy\"" && c.effect == Effect::Removed));
    assert!(changes.iter().any(|c| c.scope == "trigger \"reports\"" && c.effect == Effect::Added));
    let text = render(&changes);
    assert!(text.contains("TIGHTENED [firewall] deny_ips: added 198.51.100.0/24"), "{text}");
    assert!(text.contains("tightened"), "summary line: {text}");
}

#[test]
fn diff_never_prints_secret_values() {
    let text = render(&diff_texts(OLD, NEW).expect("both parse"));
    for leaked in ["OLD-SIG-VALUE", "NEW-SIG-VALUE", "LITERAL-INJECT-VALUE", "OTHER-LITERAL-VALUE"] {
        assert!(!text.contains(leaked), "{leaked} printed: {text}");
    }
    assert!(text.contains("secret://kv/flows#api_key -> secret://kv/flows#api_key2"), "{text}");
    assert!(text.contains("api-version=2"), "{text}");
    assert!(text.contains("inject.headers.x-static: [literal] -> [literal]"), "a changed literal shows: {text}");
}

#[test]
fn tightening_the_other_way_round() {
    let changes = diff_texts(NEW, OLD).expect("both parse");
    let t = "trigger \"invoice\"";
    assert_eq!(effect_of(&changes, t, "who"), [Effect::Tightened]);
    assert_eq!(effect_of(&changes, t, "rate_limit"), [Effect::Tightened]);
    assert_eq!(effect_of(&changes, t, "secure_inputs"), [Effect::Tightened]);
    assert_eq!(effect_of(&changes, t, "deny_ips"), [Effect::Loosened]);
}

const POLICY: &str = r#"
[[trigger]]
name = "payroll"
path = "/t/payroll"
upstream = "https://flows.example/payroll?sig=SIG-IN-URL"
who = "specific_users"
principals = ["oid:alice"]
private_parameters = ["salary"]
private_fields = ["upstream", "principals"]
inject.headers."x-api-key" = "secret://kv/payroll#key"
"#;

#[test]
fn policy_view_hides_private_fields_from_viewers() {
    let view = policy_view(POLICY, AdminRole::Viewer.can_see_private()).expect("parses");
    let trigger = &view["trigger"][0];
    assert!(trigger.get("private_parameters").is_none(), "{view}");
    assert!(trigger.get("upstream").is_none(), "{view}");
    assert!(trigger.get("principals").is_none(), "{view}");
    let text = view.to_string();
    assert!(!text.contains("salary") && !text.contains("oid:alice"), "{text}");
    assert_eq!(trigger["name"], "payroll");
    assert_eq!(trigger["inject"]["headers"]["x-api-key"], "secret://kv/payroll#key");
}

#[test]
fn policy_view_shows_private_fields_to_owners_and_administrators() {
    for role in [AdminRole::Owner, AdminRole::Administrator] {
        let view = policy_view(POLICY, role.can_see_private()).expect("parses");
        let trigger = &view["trigger"][0];
        assert_eq!(trigger["private_parameters"][0], "salary");
        assert_eq!(trigger["principals"][0], "oid:alice");
        let upstream = trigger["upstream"].as_str().expect("shown");
        assert!(upstream.starts_with("https://flows.example/payroll"), "{upstream}");
        assert!(!view.to_string().contains("SIG-IN-URL"), "nobody reads a signature: {view}");
    }
}
