//! [`Contract`]: a trigger's contract compiled with the policy (schema file read and
//! compiled, media types, patterns), and the checks the request path runs with it, each
//! returning a [`PayloadRefusal`] that names rules and pointers, never values.

use super::media::MediaTypes;
use super::names::{Fate, NameRules};
use super::raw::RawContract;
use super::schema::PayloadSchema;
use super::strict;
use crate::config::{Diagnostics, KeyPath, SourceFile};
use crate::denial::{MAX_LISTED, PayloadFailure, PayloadPart, PayloadRefusal, PayloadStatus};
use http::HeaderMap;
use std::borrow::Cow;

/// The body cap of a contract with a schema and no `max_body`.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

/// One trigger's compiled contract. Immutable; swapped with the rest of the policy.
#[derive(Debug)]
pub struct Contract {
    /// The compiled schema and the file it came from.
    schema: Option<(PayloadSchema, String)>,
    /// Accepted media types; `None` accepts any.
    media: Option<MediaTypes>,
    /// The body is read whole up to this many bytes (413 beyond) when set.
    max_body: Option<u64>,
    query: NameRules,
    headers: NameRules,
}

impl Contract {
    /// Compiles `raw` for a trigger whose own body limit is `trigger_max_body`; `None` when
    /// something is wrong (each problem recorded at its key).
    pub fn compile(
        raw: &RawContract,
        trigger_max_body: u64,
        source: &SourceFile,
        path: &KeyPath,
        diags: &mut Diagnostics,
    ) -> Option<Self> {
        let mark = diags.mark();
        let schema = raw.schema.as_ref().and_then(|file| {
            let at = path.key("schema");
            let compiled = load_schema(source, file, raw.draft.unwrap_or_default());
            compiled.map_err(|message| diags.error(&at, message)).ok().map(|s| (s, file.clone()))
        });
        if raw.schema.is_none() && raw.draft.is_some() {
            diags.error(&path.key("draft"), "is set without a schema");
        }
        let media = match &raw.content_types {
            None if raw.schema.is_some() => Some(MediaTypes::json()),
            None => None,
            Some(list) => match MediaTypes::parse(list) {
                Ok(media) => {
                    if raw.schema.is_some() && !media.only_json() {
                        diags.error_with_hint(
                            &path.key("content_types"),
                            "a schema judges JSON bodies only, but this list accepts other types",
                            "list application/json and application/*+json types only, or drop the schema",
                        );
                    }
                    if list.is_empty() {
                        diags.error(&path.key("content_types"), "is empty, so every call with a body is refused");
                    }
                    Some(media)
                }
                Err((index, message)) => {
                    diags.error(&path.key("content_types").index(index), message);
                    None
                }
            },
        };
        let max_body = match (raw.max_body, &raw.schema) {
            (Some(size), _) => {
                if size.0 == 0 {
                    diags.error(&path.key("max_body"), "must be greater than zero");
                } else if size.0 > trigger_max_body {
                    diags.error_with_hint(
                        &path.key("max_body"),
                        format!("{} bytes is above the trigger's body limit of {trigger_max_body}", size.0),
                        "a contract can only lower the limit: raise max_body_bytes first",
                    );
                }
                Some(size.0)
            }
            (None, Some(_)) => Some(DEFAULT_MAX_BODY.min(trigger_max_body)),
            (None, None) => None,
        };
        let mut rules = |part: PayloadPart, key: &str, raw: &super::raw::RawNameRules| {
            NameRules::compile(part, &raw.required, raw.allowed.as_deref(), raw.others, &raw.patterns)
                .map_err(|problems| {
                    for (field, message) in problems {
                        diags.error(&path.key(key).key(field), message);
                    }
                })
                .ok()
        };
        let query = rules(PayloadPart::Query, "query", &raw.query);
        let headers = rules(PayloadPart::Header, "headers", &raw.headers);
        if !diags.ok_since(mark) {
            return None;
        }
        Some(Self { schema, media, max_body, query: query?, headers: headers? })
    }

    /// Whether the body is read whole (and how far) before the call goes on.
    pub fn body_limit(&self) -> Option<u64> {
        self.max_body
    }

    /// The request head against the contract: media type, headers, query. Headers the
    /// contract drops are removed from `headers`; the query to forward is returned when
    /// names were dropped from it. Query names in `reserved` (lower-case: signed-URL
    /// parameters, injected names) are flowgate's, never judged: they never reach the
    /// upstream from the caller anyway.
    ///
    /// # Errors
    /// 415 for a media type not accepted, 400 for a broken query or header rule.
    pub fn check_head(
        &self,
        headers: &mut HeaderMap,
        query: Option<&str>,
        reserved: &std::collections::HashSet<String>,
    ) -> Result<Option<String>, PayloadRefusal> {
        if let Some(media) = &self.media {
            media.accept(headers).ok_or_else(|| {
                PayloadRefusal::one(
                    PayloadStatus::UnsupportedMediaType,
                    PayloadFailure::named(PayloadPart::Header, "content-type", "content_type"),
                )
            })?;
        }
        let mut failures = Vec::new();
        if !self.headers.is_open() {
            let entries = headers.iter().map(|(n, v)| (n.as_str(), v.to_str().ok().map(Cow::Borrowed)));
            match self.headers.check(entries) {
                Ok(fates) => {
                    let dropped: Vec<http::HeaderName> = headers
                        .iter()
                        .zip(fates)
                        .filter(|(_, fate)| *fate == Fate::Drop)
                        .map(|((name, _), _)| name.clone())
                        .collect();
                    for name in dropped {
                        headers.remove(name);
                    }
                }
                Err(found) => failures.extend(found),
            }
        }
        let mut kept_query = None;
        if !self.query.is_open() {
            let (pieces, decoded): (Vec<&str>, Vec<QueryPair<'_>>) = query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| (p, url::form_urlencoded::parse(p.as_bytes()).next().unwrap_or_default()))
                .filter(|(_, (name, _))| !reserved.contains(&name.to_ascii_lowercase()))
                .unzip();
            let entries = decoded.iter().map(|(n, v)| (n.as_ref(), Some(Cow::Borrowed(v.as_ref()))));
            match self.query.check(entries) {
                Ok(fates) if fates.contains(&Fate::Drop) => {
                    // Reserved pieces are kept here: the upstream URI drops them later.
                    let dropped: Vec<&str> =
                        pieces.iter().zip(fates).filter(|(_, f)| *f == Fate::Drop).map(|(p, _)| *p).collect();
                    let kept: Vec<&str> =
                        query.unwrap_or("").split('&').filter(|p| !p.is_empty() && !dropped.contains(p)).collect();
                    kept_query = Some(kept.join("&"));
                }
                Ok(_) => {}
                Err(found) => failures.extend(found),
            }
        }
        if failures.is_empty() { Ok(kept_query) } else { Err(listed(PayloadStatus::Malformed, failures)) }
    }

    /// The whole body against the contract: strict JSON, then the schema.
    ///
    /// # Errors
    /// 400 when the body is not strict JSON, 422 when it breaks the schema.
    pub fn check_body(&self, body: &[u8]) -> Result<(), PayloadRefusal> {
        let Some((schema, _)) = &self.schema else {
            return Ok(());
        };
        let instance = strict::read(body).map_err(|refusal| {
            let mut failure = PayloadFailure::body(refusal.pointer, refusal.rule.keyword());
            failure.position = refusal.position;
            PayloadRefusal::one(PayloadStatus::Malformed, failure)
        })?;
        // The common case (a valid body) takes the fast path that builds no error.
        if schema.is_valid(&instance) {
            return Ok(());
        }
        let (failures, total) = schema.failures(&instance, MAX_LISTED);
        Err(PayloadRefusal { status: PayloadStatus::BreaksSchema, failures, total: total.max(1) })
    }

    /// The contract in one line (for `flowgate check`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((schema, file)) = &self.schema {
            parts.push(format!("schema {file} (draft {})", schema.draft.as_str()));
        }
        if let Some(media) = &self.media {
            parts.push(format!("content types {}", media.describe()));
        }
        if let Some(max) = self.max_body {
            parts.push(format!("max body {max} bytes"));
        }
        if !self.query.is_open() {
            parts.push(format!("query: {}", self.query.describe()));
        }
        if !self.headers.is_open() {
            parts.push(format!("headers: {}", self.headers.describe()));
        }
        parts.join(" | ")
    }
}

/// A query parameter's name and value, decoded.
type QueryPair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// A refusal listing at most [`MAX_LISTED`] of `failures`.
fn listed(status: PayloadStatus, mut failures: Vec<PayloadFailure>) -> PayloadRefusal {
    let total = failures.len();
    failures.truncate(MAX_LISTED);
    PayloadRefusal { status, failures, total }
}

/// Reads, parses and compiles a schema file; the error says which step failed and where.
fn load_schema(source: &SourceFile, file: &str, draft: super::schema::SchemaDraft) -> Result<PayloadSchema, String> {
    let full = source.resolve(file);
    let bytes = std::fs::read(&full).map_err(|e| format!("cannot read schema file {}: {e}", full.display()))?;
    let document = strict::read(&bytes).map_err(|refusal| match refusal.position {
        Some((line, column)) => {
            format!("schema file {}:{line}:{column}: not JSON ({})", full.display(), refusal.rule.keyword())
        }
        None => format!(
            "schema file {}: {} at {:?}",
            full.display(),
            refusal.rule.keyword(),
            if refusal.pointer.is_empty() { "/" } else { &refusal.pointer }
        ),
    })?;
    PayloadSchema::compile(&document, draft)
        .map_err(|e| format!("schema file {} is not a valid schema: {e}", full.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{RawNameRules, UnlistedNames};
    use std::collections::HashSet;

    fn contract(others: UnlistedNames) -> Contract {
        let raw = RawContract {
            query: RawNameRules { allowed: Some(vec!["source".into()]), others, ..RawNameRules::default() },
            ..RawContract::default()
        };
        let source = SourceFile { name: "p.toml".into(), base_dir: ".".into(), text: String::new() };
        let mut diags = Diagnostics::default();
        Contract::compile(&raw, 1 << 20, &source, &KeyPath::root(), &mut diags).unwrap()
    }

    #[test]
    fn reserved_query_names_are_never_judged_and_dropped_ones_leave() {
        let reserved: HashSet<String> = ["sig".to_owned(), "exp".to_owned()].into();
        let mut headers = HeaderMap::new();
        let refuse = contract(UnlistedNames::Refuse);
        assert_eq!(refuse.check_head(&mut headers, Some("source=a&SIG=x&exp=1"), &reserved), Ok(None));
        let refused = refuse.check_head(&mut headers, Some("source=a&debug=1"), &reserved).unwrap_err();
        assert_eq!((refused.failures[0].at.as_str(), refused.failures[0].keyword.as_str()), ("debug", "not_allowed"));
        let drop = contract(UnlistedNames::Drop);
        let kept = drop.check_head(&mut headers, Some("debug=1&source=a&sig=x&debug=2&&x%3Dy=3"), &reserved);
        assert_eq!(kept, Ok(Some("source=a&sig=x".to_owned())));
    }
}
