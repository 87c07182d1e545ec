//! `flowgate secrets`: which triggers use which references, and which vaults they need.
//! Never values: this reads the compiled policy only and never contacts a vault.

use super::inject::Injection;
use super::store::Vaults;
use std::collections::BTreeMap;
use std::fmt::Write;

/// A plain-text report: per trigger its references, then per vault its kind and users.
pub fn usage_report<'a>(triggers: impl IntoIterator<Item = (&'a str, &'a Injection)>, vaults: &Vaults) -> String {
    let mut out = String::new();
    let mut by_vault: BTreeMap<&str, Vec<&str>> = vaults.names().map(|n| (n, Vec::new())).collect();
    let _ = writeln!(out, "triggers:");
    for (trigger, injection) in triggers {
        let refs = injection.references();
        if refs.is_empty() {
            let _ = writeln!(out, "  {trigger}: no secrets");
            continue;
        }
        let _ = writeln!(out, "  {trigger}:");
        for r in refs {
            let _ = writeln!(out, "    {r}");
            let users = by_vault.entry(r.vault.as_str()).or_default();
            if !users.contains(&trigger) {
                users.push(trigger);
            }
        }
    }
    let _ = writeln!(out, "vaults:");
    for (vault, users) in by_vault {
        let kind = vaults.get(vault).map_or("NOT CONFIGURED", |v| v.kind().as_str());
        let used = if users.is_empty() { "unused".to_owned() } else { format!("used by {}", users.join(", ")) };
        let _ = writeln!(out, "  {vault} ({kind}): {used}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Diagnostics, KeyPath};
    use crate::secrets::{CacheSettings, RawInject, Vault, compile_injection};

    #[test]
    fn lists_triggers_references_and_vaults() {
        let vaults = Vaults::from_parts(
            vec![Vault::env_for_tests("env", "FLOWGATE_"), Vault::env_for_tests("spare", "X_")],
            CacheSettings::default(),
        );
        let raw: RawInject = toml::from_str(
            "headers.\"x-api-key\" = \"secret://env/flows/key\"\nquery.sig = \"secret://env/flows/sig\"",
        )
        .unwrap();
        let mut diags = Diagnostics::default();
        let inj = compile_injection(&raw, &KeyPath::root(), &vaults, &mut diags);
        assert!(diags.is_empty());
        let none = Injection::default();
        let report = usage_report([("invoice", &inj), ("ping", &none)], &vaults);
        assert_eq!(
            report,
            "triggers:\n  invoice:\n    secret://env/flows/key\n    secret://env/flows/sig\n  ping: no secrets\nvaults:\n  env (env): used by invoice\n  spare (env): unused\n"
        );
    }
}
