//! Trigger lookup by host, path and method, on the normalised path (see
//! [`super::path`]) compared ignoring ASCII case. Exact paths are a hash lookup; prefixes
//! are tried longest first. The most specific route that matches the path decides: the
//! exact path, else the longest prefix; at one path, a trigger for the request's host
//! shadows host-less ones. When that route does not accept the method the answer is 405
//! with `Allow`, never a fall-through to a shorter prefix that happens to accept it (a
//! narrower route would otherwise be bypassed by its method). Anything else gives a bare
//! 404 that says nothing about what exists.

use super::PathMatch;
use super::Trigger;
use crate::config::{Diagnostics, KeyPath};
use crate::denial::Denial;
use http::Method;
use std::collections::HashMap;
use std::sync::Arc;

/// The compiled route table.
#[derive(Default)]
pub struct Routes {
    triggers: Vec<Arc<Trigger>>,
    /// Lower-cased normalised path → trigger indexes.
    exact: HashMap<String, Vec<usize>>,
    /// (lower-cased normalised prefix without trailing `/`, trigger indexes), longest first.
    prefixes: Vec<(String, Vec<usize>)>,
    /// Some trigger names a host (else the caller's host is never looked at).
    any_host: bool,
}

/// A matched trigger and the part of the path after its prefix.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    /// The trigger.
    pub trigger: &'a Arc<Trigger>,
    /// The rest of the normalised path after a prefix match, in the caller's case (empty
    /// for exact matches).
    pub rest: &'a str,
}

impl Routes {
    /// Builds the table, reporting overlapping (host, path, method) routes. Trigger paths
    /// are already normalised by `compile`.
    pub fn build(triggers: Vec<Arc<Trigger>>, path: &KeyPath, diags: &mut Diagnostics) -> Self {
        let any_host = triggers.iter().any(|t| t.host.is_some());
        let mut routes = Self { triggers, any_host, ..Self::default() };
        let mut seen_routes: HashMap<(Option<&str>, String, PathMatch, &Method), usize> = HashMap::new();
        let mut prefixes: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, trigger) in routes.triggers.iter().enumerate() {
            let key_path = match trigger.path_match {
                PathMatch::Exact => trigger.path.to_ascii_lowercase(),
                PathMatch::Prefix => trigger.path.trim_end_matches('/').to_ascii_lowercase(),
            };
            for method in &trigger.methods {
                let key = (trigger.host.as_deref(), key_path.clone(), trigger.path_match, method);
                if let Some(first) = seen_routes.insert(key, index) {
                    diags.error_with_hint(
                        &path.index(index).key("path"),
                        format!(
                            "{method} {} is already routed to trigger[{first}] (paths compare ignoring case)",
                            trigger.path
                        ),
                        "give each trigger its own host, path or methods",
                    );
                }
            }
            match trigger.path_match {
                PathMatch::Exact => routes.exact.entry(key_path).or_default().push(index),
                PathMatch::Prefix => prefixes.entry(key_path).or_default().push(index),
            }
        }
        routes.prefixes = prefixes.into_iter().collect();
        routes.prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
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

    /// Finds the trigger for a request. `path` is the normalised request path
    /// ([`super::normalize_path`]).
    ///
    /// # Errors
    /// [`Denial::RouteNotFound`] or [`Denial::MethodNotAllowed`] (from the most specific
    /// route matching the path).
    pub fn find<'a>(&'a self, host: Option<&str>, path: &'a str, method: &Method) -> Result<RouteMatch<'a>, Denial> {
        // Only host-specific triggers need the caller's host, normalised.
        let host = if self.any_host { host.map(normalize_host) } else { None };
        let host_matches = |t: &Trigger| t.host.is_none() || t.host.as_deref() == host.as_deref();
        let lower = path.to_ascii_lowercase();

        // Path levels, most specific first: the exact path, then prefixes longest first.
        // ASCII lower-casing keeps byte offsets, so the rest is cut from the caller's path.
        let exact = self.exact.get(&lower).map(|indexes| (indexes, ""));
        let prefixes = self.prefixes.iter().filter_map(|(prefix, indexes)| {
            strip_segment_prefix(&lower, prefix).map(|_| (indexes, &path[prefix.len()..]))
        });
        for (indexes, rest) in exact.into_iter().chain(prefixes) {
            // Iterated, not collected: the call path allocates nothing here.
            let at_path = || indexes.iter().map(|&i| &self.triggers[i]).filter(|t| host_matches(t));
            if at_path().next().is_none() {
                continue;
            }
            // At one path, a trigger for this very host shadows the host-less ones.
            let specific = at_path().any(|t| t.host.is_some());
            let here = || at_path().filter(move |t| t.host.is_some() == specific);
            if let Some(trigger) = here().find(|t| t.methods.contains(method)) {
                return Ok(RouteMatch { trigger, rest });
            }
            let mut allow: Vec<&str> = here().flat_map(|t| t.methods.iter().map(Method::as_str)).collect();
            allow.sort_unstable();
            allow.dedup();
            return Err(Denial::MethodNotAllowed { allow: allow.join(", ") });
        }
        Err(Denial::RouteNotFound)
    }
}

/// `Host` without port and without a trailing dot, lower-cased (`[::1]:8443` → `[::1]`,
/// `Flows.Example.com.` → `flows.example.com`): a host-specific trigger cannot be
/// bypassed by another spelling of its host.
fn normalize_host(host: &str) -> String {
    let without_port = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    without_port.strip_suffix('.').unwrap_or(without_port).to_ascii_lowercase()
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
        assert_eq!(normalize_host("Flows.Example.com.:443"), "flows.example.com");
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        assert_eq!(strip_segment_prefix("/api/x", "/api"), Some("/x"));
        assert_eq!(strip_segment_prefix("/api", "/api"), Some(""));
        assert_eq!(strip_segment_prefix("/apix", "/api"), None);
    }
}
