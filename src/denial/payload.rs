//! [`PayloadRefusal`]: a call that breaks its trigger's contract (media type, size, query
//! and header rules, JSON body), answered as `application/problem+json` (RFC 9457).
//!
//! A failure names where (`in`: body, query or header), the JSON pointer or the name, and
//! the rule (`keyword`), with a fixed text per rule: never the caller's values, which a
//! validator's own messages would repeat (`"abc" is not of type "integer"`).

use serde::Serialize;

/// At most this many failures are listed in an answer and a run record.
pub const MAX_LISTED: usize = 10;

/// Which answer a contract refusal gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadStatus {
    /// 400: the body is not strict JSON (malformed, a duplicate key, a lone surrogate, an
    /// integer beyond ±(2^53−1)), or a query or header rule is broken.
    Malformed,
    /// 413: the body is larger than the contract's `max_body`.
    TooLarge,
    /// 415: the `Content-Type` is not one the contract accepts.
    UnsupportedMediaType,
    /// 422: well-formed JSON that breaks the schema.
    BreaksSchema,
}

/// Where a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadPart {
    /// The request body (the failure carries a JSON pointer).
    Body,
    /// A query parameter (the failure carries its name).
    Query,
    /// A request header (the failure carries its name).
    Header,
}

impl PayloadPart {
    fn as_str(self) -> &'static str {
        match self {
            Self::Body => "body",
            Self::Query => "query",
            Self::Header => "header",
        }
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFailure {
    /// Body, query or header.
    pub part: PayloadPart,
    /// The JSON pointer into the body (`""` is the whole body), or the query or header name.
    pub at: String,
    /// The rule: a JSON Schema keyword (`type`, `required`, ...) or one of flowgate's own
    /// (`content_type`, `max_body`, `malformed`, `duplicate_key`, `lone_surrogate`,
    /// `unsafe_integer`, `missing`, `not_allowed`, `repeated`, `pattern`).
    pub keyword: String,
    /// Where in the body text, for a body that is not JSON: line and column.
    pub position: Option<(usize, usize)>,
}

impl PayloadFailure {
    /// A failure in the body at `pointer`.
    pub fn body(pointer: impl Into<String>, keyword: impl Into<String>) -> Self {
        Self { part: PayloadPart::Body, at: pointer.into(), keyword: keyword.into(), position: None }
    }

    /// A failure of a query parameter or header called `name`.
    pub fn named(part: PayloadPart, name: impl Into<String>, keyword: impl Into<String>) -> Self {
        Self { part, at: name.into(), keyword: keyword.into(), position: None }
    }

    fn view(&self) -> ProblemEntry<'_> {
        let body = self.part == PayloadPart::Body;
        ProblemEntry {
            part: self.part.as_str(),
            pointer: body.then_some(self.at.as_str()),
            name: (!body).then_some(self.at.as_str()),
            keyword: &self.keyword,
            detail: detail(&self.keyword),
            line: self.position.map(|(line, _)| line),
            column: self.position.map(|(_, column)| column),
        }
    }

    fn short(&self) -> String {
        let at = if self.part == PayloadPart::Body {
            self.at.clone()
        } else {
            format!("{} {}", self.part.as_str(), self.at)
        };
        let at = if at.is_empty() { "(root)".to_owned() } else { at };
        format!("{at} {}", self.keyword)
    }
}

/// A call refused by its trigger's contract: the answer's status and up to
/// [`MAX_LISTED`] failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRefusal {
    /// Which answer.
    pub status: PayloadStatus,
    /// The first failures found, at most [`MAX_LISTED`].
    pub failures: Vec<PayloadFailure>,
    /// How many failures were found in all (at least `failures.len()`).
    pub total: usize,
}

impl PayloadRefusal {
    /// A refusal with one failure.
    pub fn one(status: PayloadStatus, failure: PayloadFailure) -> Self {
        Self { status, failures: vec![failure], total: 1 }
    }

    /// The run record's reason: the rules and pointers, never a value.
    pub fn reason(&self) -> String {
        let listed: Vec<String> = self.failures.iter().map(PayloadFailure::short).collect();
        let more = self.total.saturating_sub(self.failures.len());
        let more = if more > 0 { format!(" (+{more} more)") } else { String::new() };
        let what = match self.status {
            PayloadStatus::Malformed => "request refused by the contract",
            PayloadStatus::TooLarge => "body over the contract's max_body",
            PayloadStatus::UnsupportedMediaType => "content type not in the contract",
            PayloadStatus::BreaksSchema => "body breaks the contract's schema",
        };
        format!("contract: {what}: {}{more}", listed.join("; "))
    }

    /// The problem document (RFC 9457) sent to the caller, as JSON text (members in the
    /// RFC's order).
    pub fn problem(&self, status: u16, request_id: &str) -> String {
        let (kind, title) = match self.status {
            PayloadStatus::Malformed if self.failures.iter().all(|f| f.part == PayloadPart::Body) => {
                ("malformed-body", "The request body is not strict JSON")
            }
            PayloadStatus::Malformed => ("invalid-request", "The request breaks the trigger's query or header rules"),
            PayloadStatus::TooLarge => ("body-too-large", "The request body is larger than the trigger accepts"),
            PayloadStatus::UnsupportedMediaType => {
                ("unsupported-media-type", "The request's Content-Type is not one the trigger accepts")
            }
            PayloadStatus::BreaksSchema => ("invalid-payload", "The request body does not match the trigger's schema"),
        };
        let listed = self.failures.len();
        let detail = if self.total > listed {
            format!("{} failures; the first {listed} are listed", self.total)
        } else if self.total == 1 {
            "1 failure".to_owned()
        } else {
            format!("{} failures", self.total)
        };
        let problem = Problem {
            kind: format!("urn:flowgate:problem:{kind}"),
            title,
            status,
            detail,
            request_id,
            errors: self.failures.iter().map(PayloadFailure::view).collect(),
        };
        serde_json::to_string(&problem).unwrap_or_default()
    }

    /// The distinct rules broken, for the refusal metric.
    pub fn keywords(&self) -> Vec<&str> {
        let mut keywords: Vec<&str> = self.failures.iter().map(|f| f.keyword.as_str()).collect();
        keywords.sort_unstable();
        keywords.dedup();
        keywords
    }
}

/// The problem document's members, in the order RFC 9457 lists them.
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    request_id: &'a str,
    errors: Vec<ProblemEntry<'a>>,
}

/// One failure as the caller sees it.
#[derive(Serialize)]
struct ProblemEntry<'a> {
    #[serde(rename = "in")]
    part: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pointer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    keyword: &'a str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
}

/// A fixed sentence per rule. Built from the rule alone: the schema's own message would
/// quote the caller's value.
fn detail(keyword: &str) -> &'static str {
    match keyword {
        "type" => "has the wrong type",
        "required" => "lacks a required property",
        "additionalProperties" | "unevaluatedProperties" => "has a property the schema does not allow",
        "additionalItems" | "unevaluatedItems" => "has an item the schema does not allow",
        "properties" | "patternProperties" | "propertyNames" | "dependencies" | "dependentRequired"
        | "dependentSchemas" => "breaks a rule on its properties",
        "items" | "prefixItems" | "contains" | "minContains" | "maxContains" => "breaks a rule on its items",
        "enum" => "is not one of the allowed values",
        "const" => "is not the required value",
        "minimum" | "exclusiveMinimum" => "is below the minimum",
        "maximum" | "exclusiveMaximum" => "is above the maximum",
        "multipleOf" => "is not a multiple of the required step",
        "minLength" => "is shorter than allowed",
        "maxLength" => "is longer than allowed",
        "minItems" => "has fewer items than allowed",
        "maxItems" => "has more items than allowed",
        "uniqueItems" => "has repeated items",
        "minProperties" => "has fewer properties than allowed",
        "maxProperties" => "has more properties than allowed",
        "pattern" => "does not match the required pattern",
        "format" => "does not have the required format",
        "anyOf" | "oneOf" | "allOf" | "not" | "if" | "then" | "else" | "$ref" => {
            "does not match the schema's alternatives"
        }
        "contentEncoding" | "contentMediaType" => "does not have the required encoding",
        "content_type" => "the Content-Type is not accepted",
        "max_body" => "the body is larger than accepted",
        "malformed" => "is not well-formed JSON",
        "duplicate_key" => "repeats a key (parsers disagree on which value counts)",
        "lone_surrogate" => "holds an unpaired UTF-16 surrogate escape",
        "unsafe_integer" => "is a whole number beyond ±(2^53−1), which flow engines read inexactly",
        "missing" => "is required and missing",
        "not_allowed" => "is not one the trigger accepts",
        "repeated" => "is sent more than once",
        _ => "breaks the trigger's contract",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_lists_rules_and_pointers_only() {
        let refusal = PayloadRefusal {
            status: PayloadStatus::BreaksSchema,
            failures: vec![PayloadFailure::body("/amount", "minimum"), PayloadFailure::body("", "required")],
            total: 12,
        };
        let text = refusal.problem(422, "req-1");
        assert!(text.starts_with(r#"{"type":"urn:flowgate:problem:invalid-payload","title":"#), "{text}");
        let problem: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["status"], 422);
        assert_eq!(problem["request_id"], "req-1");
        assert_eq!(problem["errors"][0]["pointer"], "/amount");
        assert_eq!(problem["errors"][0]["keyword"], "minimum");
        assert_eq!(problem["detail"], "12 failures; the first 2 are listed");
        assert_eq!(
            refusal.reason(),
            "contract: body breaks the contract's schema: /amount minimum; (root) required (+10 more)"
        );
        assert_eq!(refusal.keywords(), ["minimum", "required"]);
    }
}
