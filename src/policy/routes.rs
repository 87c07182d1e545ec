//! Trigger lookup by host, route key and method. The route key (see [`super::path`]) is
//! the one spelling of a path that routing compares: case, escapes and a trailing `/` do
//! not count, so every spelling an upstream reads as one path reaches one trigger. The
//! most specific route matching the key decides: the exact key, else the longest prefix
//! by whole segments; at one key, a trigger for the request's host shadows host-less
//! ones. When that route does not accept the method the answer is 405 with `Allow`, never
//! a fall-through to a shorter prefix that happens to accept it (a narrower route would
//! otherwise be bypassed by its method). Anything else gives a bare 404 that says nothing
//! about what exists.
//!
//! Cost per call does not grow with the number of routes: the exact key, then each
//! ancestor key of the path (longest first, none deeper than the deepest prefix route),
//! is a hash lookup, and so is the host at each key.

use super::PathMatch;
use super::Trigger;
use super::path::NormalPath;
use crate::config::{Diagnostics, KeyPath};
use http::Method;
use std::collections::HashMap;
use std::sync::Arc;

/// Why no trigger takes a request (the refusal table, `refusal.rs`, answers 404 / 405).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteMiss {
    /// No route matches host and path.
    #[error("no trigger matches")]
    NotFound,
    /// The most specific route matching the path does not accept the method.
    #[error("method not in {allow}")]
    MethodNotAllowed {
        /// Methods that route accepts, for the `Allow` header.
        allow: String,
    },
}

/// What routing reads of a trigger (a trait, so that the table is tested on its own).
pub trait Route {
    /// Lower-case host it answers, if it names one.
    fn host(&self) -> Option<&str>;
    /// Its path as written (for messages).
    fn path(&self) -> &str;
    /// Its path's route key.
    fn route_key(&self) -> &str;
    /// Exact or prefix.
    fn path_match(&self) -> PathMatch;
    /// Accepted methods.
    fn methods(&self) -> &[Method];
}

impl Route for Arc<Trigger> {
    fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn route_key(&self) -> &str {
        &self.route_key
    }
    fn path_match(&self) -> PathMatch {
        self.path_match
    }
    fn methods(&self) -> &[Method] {
        &self.methods
    }
}

/// The compiled route table.
pub struct Routes<T = Arc<Trigger>> {
    triggers: Vec<T>,
    /// Route key → the exact routes at it.
    exact: HashMap<String, AtKey>,
    /// Route key → the prefix routes at it (`/` for the root).
    prefixes: HashMap<String, AtKey>,
    /// Segments of the deepest prefix key: deeper ancestors are never looked up.
    deepest_prefix: usize,
    /// Some trigger names a host (else the caller's host is never looked at).
    any_host: bool,
}

/// The triggers of one kind (exact or prefix) at one route key.
#[derive(Default)]
struct AtKey {
    /// Lower-case host → trigger indexes.
    by_host: HashMap<String, Vec<usize>>,
    /// Host-less trigger indexes.
    hostless: Vec<usize>,
}

impl AtKey {
    /// The triggers answering `host` here: those for the host shadow the host-less ones.
    fn answering(&self, host: Option<&str>) -> &[usize] {
        host.and_then(|host| self.by_host.get(host)).map_or(self.hostless.as_slice(), Vec::as_slice)
    }
}

/// A matched trigger and the part of the path after its prefix.
#[derive(Debug)]
pub struct RouteMatch<'a, T = Arc<Trigger>> {
    /// The trigger.
    pub trigger: &'a T,
    /// The rest of the normalised path after a prefix match, in the caller's spelling
    /// (empty for exact matches; `/` for a prefix spelled with a trailing `/`).
    pub rest: &'a str,
}

impl<T: Route> Routes<T> {
    /// Builds the table, reporting routes with the same host, route key, kind and method.
    /// Trigger paths are already normalised by `compile`.
    pub fn build(triggers: Vec<T>, path: &KeyPath, diags: &mut Diagnostics) -> Self {
        let mut exact: HashMap<String, AtKey> = HashMap::new();
        let mut prefixes: HashMap<String, AtKey> = HashMap::new();
        let mut deepest_prefix = 0;
        let mut seen_routes: HashMap<(Option<&str>, &str, PathMatch, &Method), usize> = HashMap::new();
        for (index, trigger) in triggers.iter().enumerate() {
            let key = trigger.route_key();
            for method in trigger.methods() {
                if let Some(first) = seen_routes.insert((trigger.host(), key, trigger.path_match(), method), index) {
                    diags.error_with_hint(
                        &path.index(index).key("path"),
                        format!(
                            "{method} {} is already routed to trigger[{first}] (paths compare ignoring case, \
                             escapes and a trailing '/')",
                            trigger.path()
                        ),
                        "give each trigger its own host, path or methods",
                    );
                }
            }
            let table = match trigger.path_match() {
                PathMatch::Exact => &mut exact,
                PathMatch::Prefix => {
                    deepest_prefix = deepest_prefix.max(segment_count(key));
                    &mut prefixes
                }
            };
            let at_key = table.entry(key.to_owned()).or_default();
            match trigger.host() {
                Some(host) => at_key.by_host.entry(host.to_owned()).or_default().push(index),
                None => at_key.hostless.push(index),
            }
        }
        let any_host = triggers.iter().any(|t| t.host().is_some());
        Self { triggers, exact, prefixes, deepest_prefix, any_host }
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
    pub fn triggers(&self) -> &[T] {
        &self.triggers
    }

    /// Finds the trigger for a request.
    ///
    /// # Errors
    /// [`RouteMiss::NotFound`] or [`RouteMiss::MethodNotAllowed`] (from the most specific
    /// route matching the path).
    pub fn find<'a>(
        &'a self,
        host: Option<&str>,
        path: &'a NormalPath,
        method: &Method,
    ) -> Result<RouteMatch<'a, T>, RouteMiss> {
        let key = path.route_key();
        // `*` (OPTIONS) and other non-paths match no route.
        if !key.starts_with('/') {
            return Err(RouteMiss::NotFound);
        }
        // Only host-specific triggers need the caller's host, normalised.
        let host = if self.any_host { host.map(normalize_host) } else { None };
        let host = host.as_deref();

        // Keys, most specific first: the exact key, then its ancestors as prefixes. The
        // rest is cut from the caller's path by segment count: key and path differ in length.
        let exact = self.exact.get(key).map(|at_key| (at_key, ""));
        let depth = segment_count(key).min(self.deepest_prefix);
        let prefixes = (0..=depth)
            .rev()
            .filter_map(|segments| Some((self.prefixes.get(ancestor(key, segments))?, path.after_segments(segments))));
        for (at_key, rest) in exact.into_iter().chain(prefixes) {
            let here = at_key.answering(host);
            if here.is_empty() {
                continue;
            }
            if let Some(&index) = here.iter().find(|&&i| self.triggers[i].methods().contains(method)) {
                return Ok(RouteMatch { trigger: &self.triggers[index], rest });
            }
            let mut allow: Vec<&str> =
                here.iter().flat_map(|&i| self.triggers[i].methods().iter().map(Method::as_str)).collect();
            allow.sort_unstable();
            allow.dedup();
            return Err(RouteMiss::MethodNotAllowed { allow: allow.join(", ") });
        }
        Err(RouteMiss::NotFound)
    }
}

/// How many segments a route key has (`/` has none).
fn segment_count(key: &str) -> usize {
    if key == "/" { 0 } else { key.matches('/').count() }
}

/// The key of the first `segments` segments of `key` (`/` for none).
fn ancestor(key: &str, segments: usize) -> &str {
    if segments == 0 {
        return "/";
    }
    key.match_indices('/').nth(segments).map_or(key, |(at, _)| &key[..at])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::path::normalize;
    use proptest::prelude::*;

    /// A route as routing sees it, without the rest of a trigger.
    #[derive(Debug, Clone)]
    struct TestRoute {
        id: usize,
        host: Option<String>,
        path: String,
        key: String,
        path_match: PathMatch,
        methods: Vec<Method>,
    }

    impl TestRoute {
        fn new(id: usize, host: Option<&str>, path: &str, path_match: PathMatch, methods: &[Method]) -> Self {
            let normal = normalize(path).unwrap_or_else(|why| panic!("{path}: {why}"));
            Self {
                id,
                host: host.map(str::to_owned),
                path: normal.as_str().to_owned(),
                key: normal.route_key().to_owned(),
                path_match,
                methods: methods.to_vec(),
            }
        }
    }

    impl Route for TestRoute {
        fn host(&self) -> Option<&str> {
            self.host.as_deref()
        }
        fn path(&self) -> &str {
            &self.path
        }
        fn route_key(&self) -> &str {
            &self.key
        }
        fn path_match(&self) -> PathMatch {
            self.path_match
        }
        fn methods(&self) -> &[Method] {
            &self.methods
        }
    }

    /// What a request gets, comparable across spellings: the trigger with the route key of
    /// the rest after its prefix (`""` for none), or a refusal.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Outcome {
        Trigger(usize, String),
        NotFound,
        MethodNotAllowed(String),
        Refused,
    }

    fn table(routes: Vec<TestRoute>) -> (Routes<TestRoute>, Vec<String>) {
        let mut diags = Diagnostics::default();
        let routes = Routes::build(routes, &KeyPath::root().key("trigger"), &mut diags);
        (routes, diags.into_vec().into_iter().map(|d| format!("{}: {}", d.path, d.message)).collect())
    }

    fn route(routes: &Routes<TestRoute>, host: Option<&str>, path: &str, method: &Method) -> Outcome {
        let Ok(normal) = normalize(path) else { return Outcome::Refused };
        match routes.find(host, &normal, method) {
            Ok(found) => {
                let rest = match found.rest {
                    "" | "/" => String::new(),
                    rest => normalize(rest).unwrap().route_key().to_owned(),
                };
                Outcome::Trigger(found.trigger.id, rest)
            }
            Err(RouteMiss::NotFound) => Outcome::NotFound,
            Err(RouteMiss::MethodNotAllowed { allow }) => Outcome::MethodNotAllowed(allow),
        }
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(normalize_host("Flows.Example.com:8443"), "flows.example.com");
        assert_eq!(normalize_host("[::1]:8443"), "[::1]");
        assert_eq!(normalize_host("localhost"), "localhost");
        assert_eq!(normalize_host("Flows.Example.com.:443"), "flows.example.com");
    }

    #[test]
    fn ancestors_are_whole_segments() {
        assert_eq!(ancestor("/api/admin/x", 0), "/");
        assert_eq!(ancestor("/api/admin/x", 1), "/api");
        assert_eq!(ancestor("/api/admin/x", 2), "/api/admin");
        assert_eq!(ancestor("/api/admin/x", 3), "/api/admin/x");
        assert_eq!((segment_count("/"), segment_count("/api"), segment_count("/api/admin")), (0, 1, 2));
    }

    /// The spellings found by attacking the router: an exact `/api/admin` beside a prefix
    /// `/api`, and an exact `/x` beside a prefix `/`. Every one of these once reached the
    /// prefix, and so escaped the exact route's stricter rules.
    #[test]
    fn the_issues_spellings_reach_the_exact_route_or_are_refused() {
        let post = [Method::POST];
        let (routes, problems) = table(vec![
            TestRoute::new(0, None, "/api/admin", PathMatch::Exact, &post),
            TestRoute::new(1, None, "/api", PathMatch::Prefix, &post),
            TestRoute::new(2, None, "/x", PathMatch::Exact, &post),
            TestRoute::new(3, None, "/", PathMatch::Prefix, &post),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        for spelled in ["/api/admin/", "/API/Admin/", "/Api/%61DMIN", "/api/adm%C4%B1n", "/api/adm%C4%B0n/"] {
            assert_eq!(route(&routes, None, spelled, &Method::POST), Outcome::Trigger(0, String::new()), "{spelled}");
        }
        for spelled in ["/x.", "/x%20", "/X%2e", "/x%09", "/x%C2%A0", "/api/admin.", "/api/admin%20/"] {
            assert_eq!(route(&routes, None, spelled, &Method::POST), Outcome::Refused, "{spelled}");
        }
        // The prefix still answers the rest of its space, with the rest in the caller's case.
        let other = normalize("/API/Other/").unwrap();
        let found = routes.find(None, &other, &Method::POST).unwrap();
        assert_eq!((found.trigger.id, found.rest), (1, "/Other/"));
    }

    #[test]
    fn spellings_of_one_trigger_path_are_duplicates() {
        let post = [Method::POST];
        let (_, problems) = table(vec![
            TestRoute::new(0, None, "/Api/Admin", PathMatch::Exact, &post),
            TestRoute::new(1, None, "/api/%61dmin/", PathMatch::Exact, &post),
            TestRoute::new(2, None, "/api/", PathMatch::Prefix, &post),
            TestRoute::new(3, None, "/API", PathMatch::Prefix, &post),
            TestRoute::new(4, None, "/api", PathMatch::Exact, &post),
        ]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("trigger[1].path") && problems[0].contains("trigger[0]"), "{problems:?}");
        assert!(problems[1].starts_with("trigger[3].path") && problems[1].contains("trigger[2]"), "{problems:?}");
    }

    // The generated tables and paths: segments are canonical (their own route key); the
    // spellings below vary each of them.
    const SEGMENTS: &[&str] = &["api", "admin", "x", "été", "a:b", "ok$", "ss"];
    const HOSTS: &[&str] = &["a.example", "b.example"];
    const METHODS: &[Method] = &[Method::GET, Method::POST];

    /// One generated route: host index (0 for none), segments, prefix or not, methods bits.
    type RawRoute = (usize, Vec<usize>, bool, u8);

    fn raw_route() -> impl Strategy<Value = RawRoute> {
        (0..=HOSTS.len(), prop::collection::vec(0..SEGMENTS.len(), 0..=3), any::<bool>(), 1u8..4)
    }

    /// A request path: a route's path, maybe extended, or anything.
    fn raw_path(routes: usize) -> impl Strategy<Value = (Option<usize>, Vec<usize>)> {
        (prop::option::of(0..routes), prop::collection::vec(0..SEGMENTS.len(), 0..=3))
    }

    /// A tiny deterministic random source, so that one generated seed spells a whole path.
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, sides: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            usize::try_from(self.0 % sides as u64).unwrap()
        }
    }

    /// Characters that any of the frameworks in `path.rs` read as the same letter.
    fn letter_spellings(c: char) -> Vec<char> {
        match c {
            'i' => vec!['i', 'I', '\u{131}', '\u{130}'],
            's' => vec!['s', 'S', '\u{17F}'],
            'k' => vec!['k', 'K', '\u{212A}'],
            'é' => vec!['é', 'É'],
            'è' => vec!['è', 'È'],
            c if c.is_ascii_alphabetic() => vec![c, c.to_ascii_uppercase()],
            c => vec![c],
        }
    }

    /// A spelling of a canonical segment: case flips (ASCII and not), `ß`/`ẞ` for `ss`,
    /// then each byte raw or percent-escaped with random hex case (non-ASCII always
    /// escaped or raw as a whole character).
    fn spell_segment(segment: &str, dice: &mut Dice) -> String {
        let segment = match (segment, dice.roll(3)) {
            ("ss", 1) => "ß".to_owned(),
            ("ss", 2) => "\u{1E9E}".to_owned(),
            (segment, _) => segment.to_owned(),
        };
        let mut out = String::new();
        for c in segment.chars() {
            let options = letter_spellings(c);
            let chosen = options[dice.roll(options.len())];
            if dice.roll(2) == 0 {
                out.push(chosen);
                continue;
            }
            for byte in chosen.encode_utf8(&mut [0; 4]).bytes() {
                let hex = format!("{byte:02X}");
                let hex = if dice.roll(2) == 0 { hex } else { hex.to_ascii_lowercase() };
                out.push('%');
                out.push_str(&hex);
            }
        }
        out
    }

    /// What a trimming server would drop from a segment's end.
    const TRIMMED: &[&str] = &[".", "%2E", "%2e", "%20", " ", "%09", "%0a", "%0D", "%C2%A0", "%c2%a0", "%E3%80%80"];

    /// A spelling of the canonical path `segments`: each segment spelled, maybe a trailing
    /// `/`, and, when `trim` is set, one segment given a trimmed ending (to be refused).
    fn spell_path(segments: &[&str], dice: &mut Dice, trim: bool) -> String {
        let trimmed = (trim && !segments.is_empty()).then(|| dice.roll(segments.len()));
        let mut out = String::new();
        for (i, segment) in segments.iter().enumerate() {
            out.push('/');
            out.push_str(&spell_segment(segment, dice));
            if trimmed == Some(i) {
                out.push_str(TRIMMED[dice.roll(TRIMMED.len())]);
            }
        }
        if out.is_empty() || dice.roll(2) == 0 {
            out.push('/');
        }
        out
    }

    fn spell_host(host: &str, dice: &mut Dice) -> String {
        let mut out: String =
            host.chars().map(|c| if dice.roll(2) == 0 { c } else { c.to_ascii_uppercase() }).collect();
        if dice.roll(2) == 0 {
            out.push('.');
        }
        if dice.roll(2) == 0 {
            out.push_str(":8443");
        }
        out
    }

    /// A route as the reference model sees it: host, segments, kind, methods.
    type ModelRoute<'a> = (Option<&'a str>, Vec<&'a str>, PathMatch, Vec<Method>);

    /// The reference: exact by whole segments, else the longest prefix by whole segments;
    /// at one path the request's host shadows host-less routes, and the method decides
    /// there (405 with every method accepted there), with no fall-through.
    fn model(routes: &[ModelRoute<'_>], host: Option<&str>, path: &[&str], method: &Method) -> Outcome {
        let at = |kind: PathMatch, segments: &[&str]| -> Vec<usize> {
            (0..routes.len()).filter(|&i| routes[i].2 == kind && routes[i].1 == segments).collect()
        };
        let mut levels = vec![(at(PathMatch::Exact, path), Vec::new())];
        for length in (0..=path.len()).rev() {
            levels.push((at(PathMatch::Prefix, &path[..length]), path[length..].to_vec()));
        }
        for (level, rest) in levels {
            let for_host: Vec<usize> =
                level.iter().copied().filter(|&i| host.is_some() && routes[i].0 == host).collect();
            let here = if for_host.is_empty() {
                level.iter().copied().filter(|&i| routes[i].0.is_none()).collect()
            } else {
                for_host
            };
            if here.is_empty() {
                continue;
            }
            if let Some(&i) = here.iter().find(|&&i| routes[i].3.contains(method)) {
                let rest = if rest.is_empty() { String::new() } else { format!("/{}", rest.join("/")) };
                return Outcome::Trigger(i, rest);
            }
            let mut allow: Vec<&str> = here.iter().flat_map(|&i| routes[i].3.iter().map(Method::as_str)).collect();
            allow.sort_unstable();
            allow.dedup();
            return Outcome::MethodNotAllowed(allow.join(", "));
        }
        Outcome::NotFound
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// One route per meaning: every spelling of a path routes like its canonical form, and a
        /// spelling with a segment end a server would trim is refused; the canonical form
        /// routes like the reference model. Trigger paths are spelled too.
        #[test]
        fn every_spelling_routes_like_its_canonical_path(
            raw_routes in prop::collection::vec(raw_route(), 1..10),
            seed in any::<u64>(),
            requests in prop::collection::vec((raw_path(10), 0..=HOSTS.len(), 0..METHODS.len()), 1..12),
        ) {
            let mut dice = Dice(seed | 1);
            // The table, without duplicates (a duplicate is a compile error, tested above).
            let mut seen = std::collections::HashSet::new();
            let mut model_routes = Vec::new();
            let mut test_routes = Vec::new();
            for (host, segments, prefix, bits) in raw_routes {
                let host = host.checked_sub(1).map(|h| HOSTS[h]);
                let segments: Vec<&str> = segments.iter().map(|&s| SEGMENTS[s]).collect();
                let kind = if prefix { PathMatch::Prefix } else { PathMatch::Exact };
                let methods: Vec<Method> = METHODS
                    .iter()
                    .enumerate()
                    .filter(|&(i, m)| bits & (1 << i) != 0 && seen.insert((host, segments.clone(), kind, m.clone())))
                    .map(|(_, m)| m.clone())
                    .collect();
                if methods.is_empty() {
                    continue;
                }
                let spelled = spell_path(&segments, &mut dice, false);
                test_routes.push(TestRoute::new(test_routes.len(), host, &spelled, kind, &methods));
                model_routes.push((host, segments, kind, methods));
            }
            let (routes, problems) = table(test_routes);
            prop_assert!(problems.is_empty(), "{:?}", problems);

            for ((from_route, extra), host, method) in requests {
                let mut segments: Vec<&str> =
                    from_route.and_then(|r| model_routes.get(r)).map(|r| r.1.clone()).unwrap_or_default();
                segments.extend(extra.iter().map(|&s| SEGMENTS[s]));
                let host = host.checked_sub(1).map(|h| HOSTS[h]);
                let method = &METHODS[method];
                let expected = model(&model_routes, host, &segments, method);
                let canonical = format!("/{}", segments.join("/"));
                prop_assert_eq!(&route(&routes, host, &canonical, method), &expected, "canonical {}", canonical);
                for _ in 0..4 {
                    let spelled_host = host.map(|h| spell_host(h, &mut dice));
                    let spelled = spell_path(&segments, &mut dice, false);
                    let got = route(&routes, spelled_host.as_deref(), &spelled, method);
                    prop_assert_eq!(&got, &expected, "{} (canonical {}) from {:?}", spelled, canonical, spelled_host);
                    let trimmed = spell_path(&segments, &mut dice, true);
                    let got = route(&routes, spelled_host.as_deref(), &trimmed, method);
                    if segments.is_empty() {
                        prop_assert_eq!(&got, &expected, "{}", trimmed);
                    } else {
                        prop_assert_eq!(&got, &Outcome::Refused, "{} (canonical {})", trimmed, canonical);
                    }
                }
            }
        }
    }
}
