//! Query and header rules: names that must be present, names accepted (the others refused
//! or dropped, as the admin chooses), and patterns their values must match.
//!
//! Names compare case-insensitively (headers are; ASP.NET and Logic Apps read query names
//! that way). A value is matched whole against its pattern (`regex` crate: linear time,
//! no look-around), query values after percent- and `+`-decoding. A name that has a
//! pattern must appear once: readers join or pick among repeats differently, so a repeat
//! could pass the check with one value and reach the flow with another.
//!
//! Headers: only the caller's own fields are judged. The protocol's and flowgate's
//! (`Host`, `Content-Type`, `Content-Length`, `Authorization`, hop-by-hop fields,
//! forwarding and trace headers, `Accept*`, `User-Agent`, ...: [`PROTOCOL_HEADERS`]) are
//! handled elsewhere, and never count as "not allowed".

use crate::denial::{PayloadFailure, PayloadPart};
use regex::Regex;
use std::collections::{HashMap, HashSet};

/// Header fields the HTTP stack, clients and flowgate itself send or manage: never subject
/// to `allowed`/`others`, and not allowed in a header rule (compile error).
pub const PROTOCOL_HEADERS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "expect",
    "forwarded",
    "host",
    "keep-alive",
    "pragma",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "traceparent",
    "tracestate",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-request-id",
];

/// What happens to a name not in `allowed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnlistedNames {
    /// The call is refused (400).
    #[default]
    Refuse,
    /// The name is removed before the call goes upstream.
    Drop,
}

/// The compiled rules for one part (query or headers).
#[derive(Debug, Clone)]
pub struct NameRules {
    part: PayloadPart,
    /// Lower-case names that must be present.
    required: Vec<String>,
    /// Lower-case names accepted, when the list is closed.
    allowed: Option<HashSet<String>>,
    others: UnlistedNames,
    /// Lower-case name → anchored pattern, and the pattern as written (for summaries).
    patterns: HashMap<String, (Regex, String)>,
}

/// What a check decided about one name of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Passed on.
    Keep,
    /// Removed before forwarding (`others = "drop"`).
    Drop,
}

impl NameRules {
    /// No rules: everything passes.
    pub fn open(part: PayloadPart) -> Self {
        Self { part, required: Vec::new(), allowed: None, others: UnlistedNames::Refuse, patterns: HashMap::new() }
    }

    /// Builds the rules, or says which entry is wrong (`(field, index or name, message)`).
    ///
    /// # Errors
    /// A pattern that does not compile, or a protocol header named in a header rule.
    pub fn compile(
        part: PayloadPart,
        required: &[String],
        allowed: Option<&[String]>,
        others: UnlistedNames,
        patterns: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let lower = |n: &String| n.trim().to_ascii_lowercase();
        let protocol = |field: &str, i: String, name: &str, problems: &mut Vec<(String, String)>| {
            if part == PayloadPart::Header && PROTOCOL_HEADERS.contains(&name) {
                problems.push((format!("{field}.{i}"), format!("{name:?} is a protocol header flowgate manages")));
            }
        };
        for (i, name) in required.iter().enumerate() {
            protocol("required", i.to_string(), &lower(name), &mut problems);
        }
        for (i, name) in allowed.unwrap_or_default().iter().enumerate() {
            protocol("allowed", i.to_string(), &lower(name), &mut problems);
        }
        let mut compiled = HashMap::new();
        for (name, pattern) in patterns {
            protocol("patterns", name.clone(), &lower(name), &mut problems);
            match Regex::new(&format!("^(?:{pattern})$")) {
                Ok(regex) => {
                    compiled.insert(lower(name), (regex, pattern.clone()));
                }
                Err(e) => problems.push((format!("patterns.{name}"), format!("is not a valid pattern: {e}"))),
            }
        }
        let allowed: Option<HashSet<String>> = allowed.map(|names| {
            // A required or patterned name is accepted by saying so.
            names.iter().chain(required).chain(patterns.keys()).map(lower).collect()
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self { part, required: required.iter().map(lower).collect(), allowed, others, patterns: compiled })
    }

    /// Whether any rule is set.
    pub fn is_open(&self) -> bool {
        self.required.is_empty() && self.allowed.is_none() && self.patterns.is_empty()
    }

    /// Judges the request's names and values (`(name, value)` in order; header values as
    /// bytes read as UTF-8 where possible): the fate of each entry, or the failures.
    ///
    /// # Errors
    /// Every rule broken.
    pub fn check<'a, I>(&self, entries: I) -> Result<Vec<Fate>, Vec<PayloadFailure>>
    where
        I: IntoIterator<Item = (&'a str, Option<std::borrow::Cow<'a, str>>)>,
    {
        let mut failures = Vec::new();
        let mut fates = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (name, value) in entries {
            let lower = name.to_ascii_lowercase();
            let managed = self.part == PayloadPart::Header && PROTOCOL_HEADERS.contains(&lower.as_str());
            let count = seen.entry(lower.clone()).or_default();
            *count += 1;
            if managed {
                fates.push(Fate::Keep);
                continue;
            }
            let allowed = self.allowed.as_ref().is_none_or(|names| names.contains(&lower));
            if !allowed {
                match self.others {
                    UnlistedNames::Drop => fates.push(Fate::Drop),
                    UnlistedNames::Refuse => {
                        failures.push(PayloadFailure::named(self.part, name, "not_allowed"));
                        fates.push(Fate::Drop);
                    }
                }
                continue;
            }
            fates.push(Fate::Keep);
            if let Some((pattern, _)) = self.patterns.get(&lower) {
                if *count == 2 {
                    failures.push(PayloadFailure::named(self.part, name, "repeated"));
                } else if *count == 1 && !value.as_deref().is_some_and(|v| pattern.is_match(v)) {
                    failures.push(PayloadFailure::named(self.part, name, "pattern"));
                }
            }
        }
        for name in &self.required {
            if !seen.contains_key(name) {
                failures.push(PayloadFailure::named(self.part, name.clone(), "missing"));
            }
        }
        if failures.is_empty() { Ok(fates) } else { Err(failures) }
    }

    /// The rules as one line (for `flowgate check`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.required.is_empty() {
            parts.push(format!("required {}", self.required.join(", ")));
        }
        if let Some(allowed) = &self.allowed {
            let mut names: Vec<&str> = allowed.iter().map(String::as_str).collect();
            names.sort_unstable();
            let others = match self.others {
                UnlistedNames::Refuse => "others refused",
                UnlistedNames::Drop => "others dropped",
            };
            parts.push(format!("allowed {} ({others})", names.join(", ")));
        }
        let mut patterns: Vec<String> = self.patterns.iter().map(|(n, (_, p))| format!("{n} ~ {p}")).collect();
        patterns.sort_unstable();
        if !patterns.is_empty() {
            parts.push(format!("patterns {}", patterns.join(", ")));
        }
        if parts.is_empty() { "any".to_owned() } else { parts.join("; ") }
    }
}

/// The query parameters a contract kept could not be put back into the request's URI.
#[derive(Debug, thiserror::Error)]
#[error("contract: cannot rebuild the query: {0}")]
pub struct QueryUnbuildable(#[from] pub http::Error);

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::collections::BTreeMap;

    fn rules(others: UnlistedNames) -> NameRules {
        let patterns = BTreeMap::from([("orderId".to_owned(), "[0-9]{1,8}".to_owned())]);
        NameRules::compile(PayloadPart::Query, &["orderId".into()], Some(&["lang".into()]), others, &patterns).unwrap()
    }

    fn check<'a>(rules: &NameRules, entries: &[(&'a str, &'a str)]) -> Result<Vec<Fate>, Vec<String>> {
        rules
            .check(entries.iter().map(|(n, v)| (*n, Some(Cow::Borrowed(*v)))))
            .map_err(|f| f.into_iter().map(|f| format!("{} {}", f.at, f.keyword)).collect())
    }

    #[test]
    fn required_allowed_and_patterns() {
        let refuse = rules(UnlistedNames::Refuse);
        assert_eq!(check(&refuse, &[("OrderId", "42"), ("lang", "en")]), Ok(vec![Fate::Keep, Fate::Keep]));
        assert_eq!(check(&refuse, &[("lang", "en")]), Err(vec!["orderid missing".into()]));
        assert_eq!(check(&refuse, &[("orderId", "42x")]), Err(vec!["orderId pattern".into()]), "matched whole");
        assert_eq!(check(&refuse, &[("orderId", "1"), ("orderid", "2")]), Err(vec!["orderid repeated".into()]));
        assert_eq!(check(&refuse, &[("orderId", "1"), ("debug", "1")]), Err(vec!["debug not_allowed".into()]));
        let drop = rules(UnlistedNames::Drop);
        assert_eq!(check(&drop, &[("orderId", "1"), ("debug", "1")]), Ok(vec![Fate::Keep, Fate::Drop]));
    }

    #[test]
    fn protocol_headers_are_never_judged_nor_ruled() {
        let rules =
            NameRules::compile(PayloadPart::Header, &[], Some(&[]), UnlistedNames::Refuse, &BTreeMap::new()).unwrap();
        let entries = [("content-type", "application/json"), ("x-debug", "1")];
        let verdict = rules.check(entries.iter().map(|(n, v)| (*n, Some(Cow::Borrowed(*v)))));
        assert_eq!(verdict.unwrap_err().len(), 1);
        assert!(
            NameRules::compile(PayloadPart::Header, &["Host".into()], None, UnlistedNames::Refuse, &BTreeMap::new())
                .is_err()
        );
        let bad = BTreeMap::from([("x".to_owned(), "(".to_owned())]);
        assert!(NameRules::compile(PayloadPart::Query, &[], None, UnlistedNames::Refuse, &bad).is_err());
    }
}
