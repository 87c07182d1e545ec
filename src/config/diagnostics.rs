//! Problems found in a policy file, located as `FILE:LINE:COL` and carrying a hint.
//!
//! # The compile convention
//! Every compile step takes `&mut Diagnostics`, records each problem it finds (all of them,
//! so that the admin sees every one at once) and returns what it built:
//! - a value, when one can be built even from faulty input (defaults stand in for the
//!   faulty parts; the policy as a whole is refused anyway), or
//! - `Option`, when nothing usable can be built; `None` always comes with a recorded error.
//!
//! A step that refuses its value when any of its checks failed carries no flag of its own:
//! it takes a [`Mark`] before the checks and asks [`Diagnostics::ok_since`] after them.
//! `policy::compile` decides once, on the whole `Diagnostics`, whether the policy compiled.

use std::fmt;

/// One segment of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// Where in the policy a value sits, such as `trigger[2].allow_ips[0]`. Compile steps
/// name paths; the loader turns them into line and column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The document root.
    pub fn root() -> Self {
        Self::default()
    }

    /// This path extended by a table key.
    #[must_use]
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.into()));
        next
    }

    /// This path extended by an array index.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A policy problem with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as the admin named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong, naming the key path where useful.
    pub message: String,
    /// How to fix it, when we can tell.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// A problem found while compiling, not yet located in the file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Where the offending value sits.
    pub path: KeyPath,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// Collects every problem of a compile pass so that admins see them all at once.
#[derive(Debug, Default)]
pub struct Diagnostics(Vec<Diagnostic>);

/// A point in a compile pass, taken with [`Diagnostics::mark`]: a step asks whether the
/// problems recorded after it are its own, instead of keeping an `ok` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a mark is only useful to ask what was recorded since"]
pub struct Mark(usize);

impl Diagnostics {
    /// The current point of the pass; see [`Diagnostics::ok_since`].
    pub fn mark(&self) -> Mark {
        Mark(self.0.len())
    }

    /// True when no problem was recorded since `mark`.
    pub fn ok_since(&self, mark: Mark) -> bool {
        self.0.len() == mark.0
    }

    /// The problems recorded since `mark`, oldest first.
    pub fn errors_since(&self, mark: Mark) -> &[Diagnostic] {
        self.0.get(mark.0..).unwrap_or_default()
    }

    /// Records a problem at `path`.
    pub fn error(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.0.push(Diagnostic { path: path.clone(), message: message.into(), hint: None });
    }

    /// Records a problem at `path` with a hint on how to fix it.
    pub fn error_with_hint(&mut self, path: &KeyPath, message: impl Into<String>, hint: impl Into<String>) {
        self.0.push(Diagnostic { path: path.clone(), message: message.into(), hint: Some(hint.into()) });
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recorded problems.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.0
    }
}

/// The closest candidate to a misspelled name, if any is close enough to suggest.
pub fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(input, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_prints_like_the_file() {
        let path = KeyPath::root().key("trigger").index(2).key("inject").key("headers").key("x.api");
        assert_eq!(path.to_string(), "trigger[2].inject.headers.\"x.api\"");
    }

    #[test]
    fn a_mark_sees_only_what_came_after_it() {
        let mut diags = Diagnostics::default();
        diags.error(&KeyPath::root().key("before"), "earlier step");
        let mark = diags.mark();
        assert!(diags.ok_since(mark));
        assert!(diags.errors_since(mark).is_empty());
        diags.error_with_hint(&KeyPath::root().key("after"), "this step", "fix it");
        assert!(!diags.ok_since(mark));
        let since: Vec<String> = diags.errors_since(mark).iter().map(|d| d.path.to_string()).collect();
        assert_eq!(since, ["after"]);
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("lisen", ["listen", "tls"]), Some("listen"));
        assert_eq!(did_you_mean("zzzz", ["listen", "tls"]), None);
    }
}
