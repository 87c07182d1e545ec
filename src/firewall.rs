//! The IP firewall: allow/deny CIDR lists (global and per trigger, inline or from files),
//! rules on the direct peer, per-principal pinning, and the client address behind
//! trusted proxies.
//!
//! Everything is compiled at policy load into [`IpSet`]s (sorted merged ranges with binary
//! search), so a check costs a few binary searches and never allocates unless it refuses.

mod client;
mod ipset;

pub use client::{ClientAddress, ClientIp, HopProblem, TrustedHeader, TrustedProxies, UnreadableHop, client_address};
pub use ipset::{BadEntry, IpSet, IpSetBuilder, normalize};

use crate::auth::canonical_principal as canonical;
use crate::config::{Diagnostics, KeyPath, SourceFile};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// CIDR allow/deny lists, used globally (`[firewall]`) and per trigger.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIpRules {
    /// Client addresses admitted (CIDRs or bare addresses). Empty means any.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Client addresses refused; deny wins over allow.
    #[serde(default)]
    pub deny_ips: Vec<String>,
    /// Files with one CIDR per line (`#` comments) added to `allow_ips`.
    #[serde(default)]
    pub allow_ip_files: Vec<String>,
    /// Files with one CIDR per line added to `deny_ips`.
    #[serde(default)]
    pub deny_ip_files: Vec<String>,
    /// Direct peers (the TCP connection's address) admitted. Empty means any.
    #[serde(default)]
    pub peer_allow_ips: Vec<String>,
    /// Direct peers refused.
    #[serde(default)]
    pub peer_deny_ips: Vec<String>,
}

/// Why an IP rule refused a call; `Display` names the rule for the audit record
/// (for example `trigger deny_ips` or `global allow_ips (not listed)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{scope} {rule}")]
pub struct IpRefusal {
    /// `global`, `trigger` or `principal pin`.
    pub scope: &'static str,
    /// The rule: `deny_ips`, `allow_ips (not listed)`, `peer_deny_ips`, ...
    pub rule: String,
}

/// Compiled allow/deny rules for the client address and the direct peer.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    scope: &'static str,
    allow: Option<IpSet>,
    deny: IpSet,
    peer_allow: Option<IpSet>,
    peer_deny: IpSet,
}

/// The inline lists and files of one rule set, as written in the policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct IpRuleParts<'a> {
    /// `allow_ips`
    pub allow: &'a [String],
    /// `deny_ips`
    pub deny: &'a [String],
    /// `allow_ip_files`
    pub allow_files: &'a [String],
    /// `deny_ip_files`
    pub deny_files: &'a [String],
    /// `peer_allow_ips`
    pub peer_allow: &'a [String],
    /// `peer_deny_ips`
    pub peer_deny: &'a [String],
}

impl TrustedProxies {
    /// Compiles `[server] trusted_proxies` (`path` is that key), reporting every bad entry.
    pub fn compile(entries: &[String], path: &KeyPath, diags: &mut Diagnostics) -> Self {
        Self(compile_list(entries, path, diags).build())
    }
}

impl IpRules {
    /// Compiles the global `[firewall]` section (refusals say `global ...`).
    pub fn compile(raw: &RawIpRules, path: &KeyPath, source: &SourceFile, diags: &mut Diagnostics) -> Self {
        let parts = IpRuleParts {
            allow: &raw.allow_ips,
            deny: &raw.deny_ips,
            allow_files: &raw.allow_ip_files,
            deny_files: &raw.deny_ip_files,
            peer_allow: &raw.peer_allow_ips,
            peer_deny: &raw.peer_deny_ips,
        };
        Self::compile_parts("global", parts, path, source, diags)
    }

    /// Compiles a trigger's IP fields: `compile_parts("trigger", IpRuleParts { allow:
    /// &t.allow_ips, ... }, &trigger_path, source, diags)`. `path` is the table holding the
    /// fields; every bad entry is reported at its own key (`allow_ip_files[i]` with
    /// `FILE:LINE` in the message for a bad line in a file).
    pub fn compile_parts(
        scope: &'static str,
        parts: IpRuleParts<'_>,
        path: &KeyPath,
        source: &SourceFile,
        diags: &mut Diagnostics,
    ) -> Self {
        let mut allow = compile_list(parts.allow, &path.key("allow_ips"), diags);
        read_files(&mut allow, parts.allow_files, &path.key("allow_ip_files"), source, diags);
        let mut deny = compile_list(parts.deny, &path.key("deny_ips"), diags);
        read_files(&mut deny, parts.deny_files, &path.key("deny_ip_files"), source, diags);
        let peer_allow = compile_list(parts.peer_allow, &path.key("peer_allow_ips"), diags);
        let peer_deny = compile_list(parts.peer_deny, &path.key("peer_deny_ips"), diags);
        let allow_given = !parts.allow.is_empty() || !parts.allow_files.is_empty();
        Self {
            scope,
            allow: allow_given.then(|| allow.build()),
            deny: deny.build(),
            peer_allow: (!parts.peer_allow.is_empty()).then(|| peer_allow.build()),
            peer_deny: peer_deny.build(),
        }
    }

    /// Checks a call's client address and direct peer. Deny wins over allow; an empty (or
    /// absent) allow list admits any address.
    ///
    /// # Errors
    /// [`IpRefusal`] naming the rule that refused.
    pub fn check(&self, client: impl Into<IpAddr>, peer: impl Into<IpAddr>) -> Result<(), IpRefusal> {
        let (client, peer) = (client.into(), peer.into());
        self.check_peer(peer)?;
        if self.deny.contains(client) {
            return Err(self.refusal("deny_ips"));
        }
        if self.allow.as_ref().is_some_and(|allow| !allow.contains(client)) {
            return Err(self.refusal("allow_ips (not listed)"));
        }
        Ok(())
    }

    fn check_peer(&self, peer: IpAddr) -> Result<(), IpRefusal> {
        if self.peer_deny.contains(peer) {
            return Err(self.refusal("peer_deny_ips"));
        }
        if self.peer_allow.as_ref().is_some_and(|allow| !allow.contains(peer)) {
            return Err(self.refusal("peer_allow_ips (not listed)"));
        }
        Ok(())
    }

    /// At TCP accept, before the TLS handshake: false when these (global) rules certainly
    /// refuse every call from `peer`, so the connection can be dropped at once. When the
    /// peer is a trusted proxy the client is not known yet, so only the peer rules apply.
    pub fn check_peer_at_accept(&self, peer: IpAddr, trusted: &TrustedProxies) -> bool {
        if self.check_peer(peer).is_err() {
            return false;
        }
        if !trusted.0.is_empty() && trusted.contains(peer) {
            return true;
        }
        self.check(peer, peer).is_ok()
    }

    /// True when no rule is set (the check always passes).
    pub fn is_empty(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty() && self.peer_allow.is_none() && self.peer_deny.is_empty()
    }

    fn refusal(&self, rule: &str) -> IpRefusal {
        IpRefusal { scope: if self.scope.is_empty() { "global" } else { self.scope }, rule: rule.to_owned() }
    }
}

fn compile_list(entries: &[String], path: &KeyPath, diags: &mut Diagnostics) -> IpSetBuilder {
    let mut builder = IpSetBuilder::default();
    for (i, entry) in entries.iter().enumerate() {
        if let Err(e) = builder.add(entry) {
            diags.error_with_hint(&path.index(i), e.to_string(), "write a CIDR like \"203.0.113.0/24\" or an address");
        }
    }
    builder
}

fn read_files(
    builder: &mut IpSetBuilder,
    files: &[String],
    path: &KeyPath,
    source: &SourceFile,
    diags: &mut Diagnostics,
) {
    for (i, file) in files.iter().enumerate() {
        let resolved = source.resolve(file);
        let text = match std::fs::read_to_string(&resolved) {
            Ok(text) => text,
            Err(e) => {
                diags.error_with_hint(
                    &path.index(i),
                    format!("cannot read {}: {e}", resolved.display()),
                    "relative paths are resolved against the policy file's directory",
                );
                continue;
            }
        };
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            if let Err(e) = builder.add(entry) {
                diags.error_with_hint(
                    &path.index(i),
                    format!("{}:{}: {e}", resolved.display(), n + 1),
                    "one CIDR or address per line; `#` starts a comment",
                );
            }
        }
    }
}

/// Per-principal pinning (`principal_ips`): a pinned principal is accepted only from its
/// ranges; principals without a pin are unaffected.
#[derive(Debug, Clone, Default)]
pub struct PrincipalPins {
    pins: BTreeMap<String, IpSet>,
}

impl PrincipalPins {
    /// Compiles `principal_ips` (`path` is the `principal_ips` key). Identifiers are kept
    /// as written, except that `upn:` names are compared case-insensitively.
    pub fn compile(raw: &BTreeMap<String, Vec<String>>, path: &KeyPath, diags: &mut Diagnostics) -> Self {
        let mut pins = BTreeMap::new();
        for (principal, entries) in raw {
            let key = path.key(principal.as_str());
            if !principal.contains(':') {
                diags.error_with_hint(
                    &key,
                    format!("{principal:?} is not a principal identifier"),
                    "write it as in `principals`: oid:GUID, sub:ID, upn:NAME or app:CLIENT-ID",
                );
                continue;
            }
            let set = compile_list(entries, &key, diags).build();
            pins.insert(canonical(principal), set);
        }
        Self { pins }
    }

    /// Checks the caller's identifiers (as `oid:...`, `app:...`, `upn:...`) against the pins.
    ///
    /// # Errors
    /// [`IpRefusal`] when a pinned identifier's ranges do not hold `client`.
    pub fn check(&self, principal_ids: &[String], client: IpAddr) -> Result<(), IpRefusal> {
        if self.pins.is_empty() {
            return Ok(());
        }
        for id in principal_ids {
            if let Some(set) = self.pins.get(&canonical(id))
                && !set.contains(client)
            {
                return Err(IpRefusal { scope: "principal pin", rule: format!("principal_ips[{id:?}] (not listed)") });
            }
        }
        Ok(())
    }

    /// True when no principal is pinned.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn source(dir: &std::path::Path) -> SourceFile {
        SourceFile { name: "p.toml".into(), base_dir: dir.to_path_buf(), text: String::new() }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn allow_deny_v4_v6_and_deny_wins() {
        let raw = RawIpRules {
            allow_ips: strings(&["10.0.0.0/8", "2001:db8::/32"]),
            deny_ips: strings(&["10.9.0.0/16", "2001:db8:bad::/48"]),
            ..RawIpRules::default()
        };
        let mut diags = Diagnostics::default();
        let rules = IpRules::compile(&raw, &KeyPath::root().key("firewall"), &source(&PathBuf::new()), &mut diags);
        assert!(diags.is_empty());
        let peer = ip("192.0.2.1");
        assert!(rules.check(ip("10.1.2.3"), peer).is_ok());
        assert_eq!(rules.check(ip("10.9.2.3"), peer).unwrap_err().to_string(), "global deny_ips");
        assert_eq!(rules.check(ip("11.0.0.1"), peer).unwrap_err().to_string(), "global allow_ips (not listed)");
        assert!(rules.check(ip("2001:db8:1::1"), peer).is_ok());
        assert!(rules.check(ip("2001:db8:bad::1"), peer).is_err());
        assert!(rules.check(ip("::ffff:10.1.2.3"), peer).is_ok());
    }

    #[test]
    fn peer_rules_and_accept_time_check() {
        let allow = strings(&["127.0.0.2"]);
        let peer_deny = strings(&["192.0.2.66"]);
        let parts = IpRuleParts { allow: &allow, peer_deny: &peer_deny, ..IpRuleParts::default() };
        let mut diags = Diagnostics::default();
        let rules = IpRules::compile_parts("trigger", parts, &KeyPath::root(), &source(&PathBuf::new()), &mut diags);
        assert_eq!(rules.check(ip("127.0.0.2"), ip("192.0.2.66")).unwrap_err().to_string(), "trigger peer_deny_ips");
        let trusted = TrustedProxies(IpSet::parse(["10.0.0.0/8"]).unwrap());
        assert!(rules.check_peer_at_accept(ip("127.0.0.2"), &trusted));
        assert!(!rules.check_peer_at_accept(ip("127.0.0.3"), &trusted));
        // A trusted proxy is let through: the client behind it is not known yet.
        assert!(rules.check_peer_at_accept(ip("10.0.0.1"), &trusted));
        assert!(!rules.check_peer_at_accept(ip("192.0.2.66"), &trusted));
    }

    #[test]
    fn files_with_comments_and_a_located_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.txt"), "# provider list\n\n10.0.0.0/8 # office\n2001:db8::/32\n").unwrap();
        std::fs::write(dir.path().join("bad.txt"), "10.0.0.0/8\n\nnonsense\n").unwrap();
        let raw = RawIpRules {
            allow_ip_files: strings(&["good.txt"]),
            deny_ip_files: strings(&["bad.txt", "missing.txt"]),
            ..RawIpRules::default()
        };
        let mut diags = Diagnostics::default();
        let rules = IpRules::compile(&raw, &KeyPath::root().key("firewall"), &source(dir.path()), &mut diags);
        assert!(rules.check(ip("2001:db8::1"), ip("::1")).is_ok());
        assert_eq!(rules.check(ip("10.0.0.1"), ip("::1")).unwrap_err().rule, "deny_ips");
        assert!(rules.check(ip("192.0.2.1"), ip("::1")).is_err());
        let problems = diags.into_vec();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].path.to_string(), "firewall.deny_ip_files[0]");
        assert!(problems[0].message.contains("bad.txt:3:"), "{}", problems[0].message);
        assert_eq!(problems[1].path.to_string(), "firewall.deny_ip_files[1]");
    }

    #[test]
    fn every_bad_inline_entry_is_reported() {
        let raw = RawIpRules { allow_ips: strings(&["x", "10.0.0.0/8", "y"]), ..RawIpRules::default() };
        let mut diags = Diagnostics::default();
        IpRules::compile(&raw, &KeyPath::root().key("firewall"), &source(&PathBuf::new()), &mut diags);
        let paths: Vec<String> = diags.into_vec().iter().map(|d| d.path.to_string()).collect();
        assert_eq!(paths, ["firewall.allow_ips[0]", "firewall.allow_ips[2]"]);
    }

    #[test]
    fn trigger_fields_from_a_loaded_policy_are_located() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("office.txt"), "127.0.0.2\n# next line is wrong\n127.0.0.300\n").unwrap();
        let text = "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"nope\"]\n\n[[trigger]]\nname = \"a\"\n\
                    path = \"/a\"\nupstream = \"http://127.0.0.1:1\"\nwho = \"anyone\"\n\
                    allow_ip_files = [\"office.txt\"]\npeer_deny_ips = [\"192.0.2.1\"]\n";
        let source = SourceFile { name: "p.toml".into(), base_dir: dir.path().to_path_buf(), text: text.into() };
        let (raw, source) = crate::policy::load_str(source).unwrap();
        let mut diags = Diagnostics::default();
        let trusted = TrustedProxies::compile(
            &raw.server.trusted_proxies,
            &KeyPath::root().key("server").key("trusted_proxies"),
            &mut diags,
        );
        assert!(trusted.contains(ip("10.1.1.1")));
        let path = KeyPath::root().key("trigger").index(0);
        let rules = IpRules::compile_parts("trigger", raw.trigger[0].ip_rule_parts(), &path, &source, &mut diags);
        assert!(rules.check(ip("127.0.0.2"), ip("127.0.0.1")).is_ok());
        assert!(rules.check(ip("127.0.0.2"), ip("192.0.2.1")).is_err());
        let errors = source.locate(diags.into_vec());
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].line, 2, "{}", errors[0]);
        assert!(errors[1].message.contains("office.txt:3"), "{}", errors[1]);
        assert_eq!(errors[1].line, 9, "{}", errors[1]);
    }

    #[test]
    fn no_rules_admit_everything() {
        let rules = IpRules::default();
        assert!(rules.is_empty());
        assert!(rules.check(ip("::1"), ip("::1")).is_ok());
    }

    #[test]
    fn principal_pins() {
        let mut raw = BTreeMap::new();
        raw.insert("upn:Alice@Contoso.com".to_owned(), strings(&["127.0.0.2"]));
        raw.insert("app:123".to_owned(), strings(&["::1"]));
        let mut diags = Diagnostics::default();
        let pins = PrincipalPins::compile(&raw, &KeyPath::root().key("principal_ips"), &mut diags);
        assert!(diags.is_empty());
        let alice = strings(&["oid:1", "upn:alice@contoso.com"]);
        assert!(pins.check(&alice, ip("127.0.0.2")).is_ok());
        let refusal = pins.check(&alice, ip("127.0.0.3")).unwrap_err();
        assert_eq!(refusal.scope, "principal pin");
        assert!(pins.check(&strings(&["oid:unpinned"]), ip("127.0.0.3")).is_ok());
        assert!(pins.check(&strings(&["app:123"]), ip("::1")).is_ok());
        assert!(pins.check(&strings(&["app:123"]), ip("127.0.0.1")).is_err());
    }

    #[test]
    fn pins_match_however_the_policy_spells_the_principal() {
        // The caller's ids are lower-case (`Caller::principal_ids`); the policy may not be.
        let mut raw = BTreeMap::new();
        raw.insert("OID:0D2D3B0E-0000-4000-8000-000000000009".to_owned(), strings(&["127.0.0.2"]));
        raw.insert("email:Bob@Contoso.com".to_owned(), strings(&["127.0.0.2"]));
        raw.insert("app:ABC".to_owned(), strings(&["127.0.0.2"]));
        let mut diags = Diagnostics::default();
        let pins = PrincipalPins::compile(&raw, &KeyPath::root().key("principal_ips"), &mut diags);
        for id in ["oid:0d2d3b0e-0000-4000-8000-000000000009", "upn:bob@contoso.com", "app:abc"] {
            assert!(pins.check(&strings(&[id]), ip("127.0.0.3")).is_err(), "{id} escaped its pin");
            assert!(pins.check(&strings(&[id]), ip("127.0.0.2")).is_ok());
        }
    }
}
