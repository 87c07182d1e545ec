//! `content_types`: the media types a trigger accepts (415 otherwise).
//!
//! An admin lists `type/subtype`, `type/*` or `application/*+json` (any subtype with that
//! structured-syntax suffix, RFC 6839). The caller's `Content-Type` is read as
//! `type/subtype` plus parameters, case-insensitively (RFC 9110 §8.3.1); parameters do not
//! choose the match, but a JSON body must be UTF-8 (RFC 8259 §8.1), so a JSON type with a
//! `charset` other than `utf-8` is refused rather than read as something it is not. Two
//! `Content-Type` fields, or one that does not parse, are refused: readers would disagree.

use http::HeaderMap;

/// One accepted media range.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaRange {
    kind: String,
    subtype: Subtype,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subtype {
    Exact(String),
    Any,
    /// `*+json`: any subtype ending `+json`.
    Suffix(String),
}

/// The media types a contract accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTypes {
    ranges: Vec<MediaRange>,
}

/// The caller's media type, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// Lower-case type.
    pub kind: String,
    /// Lower-case subtype.
    pub subtype: String,
}

impl MediaType {
    /// `application/json` or `application/*+json`.
    pub fn is_json(&self) -> bool {
        self.kind == "application"
            && (self.subtype == "json" || self.subtype.len() > "+json".len() && self.subtype.ends_with("+json"))
    }
}

impl MediaTypes {
    /// The JSON types: `application/json` and `application/*+json`.
    pub fn json() -> Self {
        Self {
            ranges: vec![
                MediaRange { kind: "application".into(), subtype: Subtype::Exact("json".into()) },
                MediaRange { kind: "application".into(), subtype: Subtype::Suffix("json".into()) },
            ],
        }
    }

    /// Parses an admin's list.
    ///
    /// # Errors
    /// The entry that is not `type/subtype`, `type/*` or `type/*+suffix`.
    pub fn parse(entries: &[String]) -> Result<Self, (usize, String)> {
        let mut ranges = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let refuse = |why: &str| (index, format!("{entry:?} {why}"));
            let lower = entry.trim().to_ascii_lowercase();
            let (kind, subtype) = lower.split_once('/').ok_or_else(|| refuse("is not type/subtype"))?;
            if !is_token(kind) || kind == "*" && subtype != "*" {
                return Err(refuse("is not type/subtype"));
            }
            let subtype = match subtype {
                "*" => Subtype::Any,
                s if s.starts_with("*+") && is_token(&s[2..]) => Subtype::Suffix(s[2..].to_owned()),
                s if is_token(s) && !s.contains('*') => Subtype::Exact(s.to_owned()),
                _ => return Err(refuse("is not type/subtype, type/* or type/*+suffix (no parameters)")),
            };
            ranges.push(MediaRange { kind: kind.to_owned(), subtype });
        }
        Ok(Self { ranges })
    }

    /// Whether every type this list can accept is JSON (a schema needs JSON bodies).
    pub fn only_json(&self) -> bool {
        self.ranges.iter().all(|r| {
            r.kind == "application"
                && match &r.subtype {
                    Subtype::Exact(s) => s == "json" || s.ends_with("+json"),
                    Subtype::Suffix(s) => s == "json",
                    Subtype::Any => false,
                }
        })
    }

    /// The list as written back (for summaries).
    pub fn describe(&self) -> String {
        self.ranges
            .iter()
            .map(|r| match &r.subtype {
                Subtype::Exact(s) => format!("{}/{s}", r.kind),
                Subtype::Any => format!("{}/*", r.kind),
                Subtype::Suffix(s) => format!("{}/*+{s}", r.kind),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The caller's media type when this list accepts it; `None` when there is no
    /// `Content-Type`, more than one, one that does not parse, a type not listed, or a
    /// JSON type in another charset than UTF-8.
    pub fn accept(&self, headers: &HeaderMap) -> Option<MediaType> {
        let mut values = headers.get_all(http::header::CONTENT_TYPE).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return None;
        };
        let (media, charset) = parse_content_type(value.to_str().ok()?)?;
        if media.is_json() && charset.is_some_and(|c| c != "utf-8" && c != "utf8") {
            return None;
        }
        let listed = self.ranges.iter().any(|r| {
            (r.kind == "*" || r.kind == media.kind)
                && match &r.subtype {
                    Subtype::Any => true,
                    Subtype::Exact(s) => *s == media.subtype,
                    Subtype::Suffix(s) => {
                        media.subtype.strip_suffix(s.as_str()).is_some_and(|p| p.len() > 1 && p.ends_with('+'))
                    }
                }
        });
        listed.then_some(media)
    }
}

/// RFC 9110 `token`.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `type/subtype *( OWS ";" OWS name=value )`, lower-cased, and the `charset` parameter.
fn parse_content_type(text: &str) -> Option<(MediaType, Option<String>)> {
    let mut parts = text.split(';');
    let essence = parts.next()?.trim().to_ascii_lowercase();
    let (kind, subtype) = essence.split_once('/')?;
    if !is_token(kind) || !is_token(subtype) {
        return None;
    }
    let mut charset = None;
    for parameter in parts {
        let parameter = parameter.trim();
        if parameter.is_empty() {
            continue;
        }
        let (name, value) = parameter.split_once('=')?;
        if !is_token(name) {
            return None;
        }
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        if name.eq_ignore_ascii_case("charset") {
            if charset.is_some() {
                return None;
            }
            charset = Some(value.to_ascii_lowercase());
        }
    }
    Some((MediaType { kind: kind.to_owned(), subtype: subtype.to_owned() }, charset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(http::header::CONTENT_TYPE, v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn json_types_and_parameters() {
        let json = MediaTypes::json();
        assert!(json.accept(&with(&["application/json"])).is_some());
        assert!(json.accept(&with(&["Application/JSON; charset=UTF-8"])).is_some());
        assert!(json.accept(&with(&["application/cloudevents+json"])).is_some());
        assert!(json.accept(&with(&["application/json; charset=\"utf-8\""])).is_some());
        assert!(json.accept(&with(&["application/json; charset=iso-8859-1"])).is_none());
        assert!(json.accept(&with(&["application/json; charset=utf-8; charset=utf-16"])).is_none());
        assert!(json.accept(&with(&["text/plain"])).is_none());
        assert!(json.accept(&with(&["application/jsonx"])).is_none());
        assert!(json.accept(&with(&["application/+json"])).is_none(), "a suffix needs a subtype before it");
        assert!(json.accept(&with(&[])).is_none());
        assert!(json.accept(&with(&["application/json", "application/json"])).is_none());
        assert!(json.accept(&with(&["application/json x"])).is_none());
        assert!(json.only_json());
    }

    #[test]
    fn admin_lists() {
        let list = MediaTypes::parse(&["text/*".into(), "application/x-www-form-urlencoded".into()]).unwrap();
        assert!(list.accept(&with(&["text/csv"])).is_some());
        assert!(list.accept(&with(&["application/json"])).is_none());
        assert!(!list.only_json());
        assert_eq!(list.describe(), "text/*, application/x-www-form-urlencoded");
        assert!(MediaTypes::parse(&["application/json; charset=utf-8".into()]).is_err());
        assert!(MediaTypes::parse(&["json".into()]).is_err());
        assert!(MediaTypes::parse(&["*/json".into()]).is_err());
        assert!(MediaTypes::parse(&["application/*+json".into()]).unwrap().only_json());
    }
}
