//! Trigger lookup by host, path and method. Exact paths are a hash lookup; prefixes
//! are tried longest first. A path that exists for other methods gives 405 with
//! `Allow`; anything else gives a bare 404 that says nothing about what exists.

use super::Trigger;
use crate::config::{Diagnostics, KeyPath, PathMatch};
use crate::denial::Denial;
use http::Method;
use std::collections::HashMap;
use std::sync::Arc;

/// The compiled route table.
#[derive(Default)]
pub struct Routes {
    triggers: Vec<Arc<Trigger>>,
    exact: HashMap<String, Vec<usize>>,
    /// (prefix, trigger index), longest prefix first.
    prefixes: Vec<(String, usize)>,
}

/// A matched trigger and the part of the path after its prefix.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    /// The trigger.
    pub trigger: &'a Arc<Trigger>,
    /// The rest of the path after a prefix match (empty for exact matches).
    pub rest: &'a str,
}

impl Routes {
    /// Builds the table, reporting overlapping (host, path, method) routes.
    pub fn build(triggers: Vec<Arc<Trigger>>, path: &KeyPath, diags: &mut Diagnostics) -> Self {
        let mut routes = Self { triggers, ..Self::default() };
        let mut seen_routes: HashMap<(Option<&str>, &str, PathMatch, &Method), usize> = HashMap::new();
        for (index, trigger) in routes.triggers.iter().enumerate() {
            for method in &trigger.methods {
                let key = (trigger.host.as_deref(), trigger.path.as_str(), trigger.path_match, method);
                if let Some(first) = seen_routes.insert(key, index) {
                    diags.error_with_hint(
                        &path.index(index).key("path"),
                        format!("{method} {} is already routed to trigger[{first}]", trigger.path),
                        "give each trigger its own host, path or methods",
                    );
                }
            }
            match trigger.path_match {
                PathMatch::Exact => routes.exact.entry(trigger.path.clone()).or_default().push(index),
                PathMatch::Prefix => {
                    routes.prefixes.push((trigger.path.trim_end_matches('/').to_owned(), index));
                }
            }
        }
        routes.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        routes
    }

    /// How many triggers there are.
    pub fn len(&self) -> usize {
        self.triggers.len()
    }

    /// True when there are no triggers.
    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }

    /// All triggers, in policy order.
    pub fn triggers(&self) -> &[Arc<Trigger>] {
        &self.triggers
    }

    /// Finds the trigger for a request.
    ///
    /// # Errors
    /// [`Denial::RouteNotFound`] or [`Denial::MethodNotAllowed`].
    pub fn find<'a>(&'a self, host: Option<&str>, path: &'a str, method: &Method) -> Result<RouteMatch<'a>, Denial> {
        let host = host.map(normalize_host);
        let host_matches = |t: &Trigger| t.host.is_none() || t.host.as_deref() == host.as_deref();
        let mut path_matched: Vec<&Arc<Trigger>> = Vec::new();

        // Exact routes first; among them, a host-specific trigger wins over a host-less one.
        let mut candidates: Vec<(usize, &str)> = Vec::new();
        if let Some(indexes) = self.exact.get(path) {
            candidates.extend(indexes.iter().map(|&i| (i, "")));
        }
        for (prefix, index) in &self.prefixes {
            if let Some(rest) = strip_segment_prefix(path, prefix) {
                candidates.push((*index, rest));
            }
        }
        let mut best: Option<(RouteMatch<'a>, bool)> = None;
        for (index, rest) in candidates {
            let trigger = &self.triggers[index];
            if !host_matches(trigger) {
                continue;
            }
            path_matched.push(trigger);
            if !trigger.methods.contains(method) {
                continue;
            }
            let specific = trigger.host.is_some();
            if best.as_ref().is_none_or(|(_, best_specific)| specific && !best_specific) {
                best = Some((RouteMatch { trigger, rest }, specific));
            }
        }
        if let Some((found, _)) = best {
            return Ok(found);
        }
        if path_matched.is_empty() {
            return Err(Denial::RouteNotFound);
        }
        let mut allow: Vec<&str> = path_matched.iter().flat_map(|t| t.methods.iter().map(Method::as_str)).collect();
        allow.sort_unstable();
        allow.dedup();
        Err(Denial::MethodNotAllowed { allow: allow.join(", ") })
    }
}

/// `Host` without port, lower-cased (`[::1]:8443` → `[::1]`).
fn normalize_host(host: &str) -> String {
    let without_port = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    without_port.to_ascii_lowercase()
}

/// The rest of `path` after `prefix`, when `prefix` ends at a segment boundary.
fn strip_segment_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/') || prefix.is_empty()).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(normalize_host("Flows.Example.com:8443"), "flows.example.com");
        assert_eq!(normalize_host("[::1]:8443"), "[::1]");
        assert_eq!(normalize_host("localhost"), "localhost");
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        assert_eq!(strip_segment_prefix("/api/x", "/api"), Some("/x"));
        assert_eq!(strip_segment_prefix("/api", "/api"), Some(""));
        assert_eq!(strip_segment_prefix("/apix", "/api"), None);
    }
}
