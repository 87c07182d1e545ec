//! `scheme = "hmac"`: a sender not listed, described by the header its signature comes
//! in, the hash, hex or base64, an optional prefix (`sha256=`), and the signed content
//! built from the body, a timestamp header and an id header (`"{timestamp}.{body}"`).

use super::mac::{self, Algorithm};
use super::verify::{Delivery, Refusal, Verified, parse_timestamp};
use crate::config::{Diagnostics, KeyPath};
use crate::secrets::SecretValue;
use http::HeaderName;
use schemars::JsonSchema;
use serde::Deserialize;

/// How a signature is written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Hexadecimal, either case (default).
    #[default]
    Hex,
    /// Base64 (standard or URL-safe, padded or not).
    Base64,
}

/// `webhook.hmac`: how a generic sender signs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGenericHmac {
    /// The header the signature comes in, for example `"X-Signature"`.
    pub header: String,
    /// `"sha256"` (default), `"sha512"` or `"sha1"`.
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// `"hex"` (default) or `"base64"`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Text before the signature in the header, for example `"sha256="`.
    pub prefix: Option<String>,
    /// The header carrying a Unix timestamp in seconds; with `{timestamp}` in `content`,
    /// deliveries outside the tolerance are refused.
    pub timestamp_header: Option<String>,
    /// The header carrying the delivery id; with `{id}` in `content` it is signed and keys
    /// the replay guard.
    pub id_header: Option<String>,
    /// The signed content: `{body}`, `{timestamp}` and `{id}` between literal text.
    /// Default `"{body}"`.
    pub content: Option<String>,
}

fn default_algorithm() -> Algorithm {
    Algorithm::Sha256
}

/// One piece of the signed content.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Body,
    Timestamp,
    Id,
}

/// A compiled generic HMAC scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericHmac {
    header: HeaderName,
    algorithm: Algorithm,
    encoding: Encoding,
    prefix: String,
    timestamp_header: Option<HeaderName>,
    id_header: Option<HeaderName>,
    content: Vec<Piece>,
}

/// Splits a content template into pieces; `Err` names the unknown placeholder.
fn parse_content(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let close = rest[open..].find('}').ok_or_else(|| "an unclosed '{'".to_owned())? + open;
        pieces.push(match &rest[open + 1..close] {
            "body" => Piece::Body,
            "timestamp" => Piece::Timestamp,
            "id" => Piece::Id,
            other => return Err(format!("unknown placeholder {{{other}}}")),
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

impl GenericHmac {
    /// Compiles `webhook.hmac` (`path`).
    pub fn compile(raw: &RawGenericHmac, path: &KeyPath, diags: &mut Diagnostics) -> Option<Self> {
        let header_name = |name: &str, key: &str, diags: &mut Diagnostics| {
            let parsed = HeaderName::try_from(name).ok();
            if parsed.is_none() {
                diags.error(&path.key(key), format!("{name:?} is not a header name"));
            }
            parsed
        };
        let header = header_name(&raw.header, "header", diags);
        let timestamp_header = raw.timestamp_header.as_deref().map(|n| header_name(n, "timestamp_header", diags));
        let id_header = raw.id_header.as_deref().map(|n| header_name(n, "id_header", diags));
        let content = match parse_content(raw.content.as_deref().unwrap_or("{body}")) {
            Ok(content) => content,
            Err(problem) => {
                diags.error_with_hint(&path.key("content"), problem, "use {body}, {timestamp} and {id}");
                return None;
            }
        };
        if !content.contains(&Piece::Body) {
            diags.error_with_hint(
                &path.key("content"),
                "the signed content does not include {body}: a forged body would pass",
                "add {body}",
            );
        }
        for (piece, header, key) in
            [(Piece::Timestamp, &timestamp_header, "timestamp_header"), (Piece::Id, &id_header, "id_header")]
        {
            if content.contains(&piece) && header.is_none() {
                diags.error(&path.key("content"), format!("uses a placeholder whose header is unset: set {key}"));
            }
        }
        Some(Self {
            header: header?,
            algorithm: raw.algorithm,
            encoding: raw.encoding,
            prefix: raw.prefix.clone().unwrap_or_default(),
            timestamp_header: timestamp_header.flatten(),
            id_header: id_header.flatten(),
            content,
        })
    }

    /// The header carrying the delivery id, if any.
    pub fn id_header(&self) -> Option<&HeaderName> {
        self.id_header.as_ref()
    }

    /// True when the signed content includes the delivery id.
    pub fn signs_id(&self) -> bool {
        self.content.contains(&Piece::Id)
    }

    /// True when the signed content includes the timestamp.
    pub fn signs_timestamp(&self) -> bool {
        self.content.contains(&Piece::Timestamp)
    }

    /// One line for `flowgate check`.
    pub fn describe(&self) -> String {
        let content: String = self
            .content
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Body => "{body}".into(),
                Piece::Timestamp => "{timestamp}".into(),
                Piece::Id => "{id}".into(),
            })
            .collect();
        format!(
            "{} {} {:?} in {} over {content:?}",
            self.algorithm.name(),
            encoding_name(self.encoding),
            self.prefix,
            self.header
        )
    }

    /// Verifies a delivery.
    ///
    /// # Errors
    /// [`Refusal`].
    pub fn verify(&self, delivery: &Delivery<'_>, secrets: &[SecretValue]) -> Result<Verified, Refusal> {
        let text = one_header(delivery, &self.header)?.ok_or(Refusal::MissingHeader("the signature header"))?;
        let encoded =
            text.strip_prefix(self.prefix.as_str()).ok_or(Refusal::Malformed("the signature lacks its prefix"))?;
        let sent = match self.encoding {
            Encoding::Hex => mac::from_hex(encoded),
            Encoding::Base64 => mac::from_base64(encoded),
        }
        .ok_or(Refusal::Malformed("the signature is not in its encoding"))?;
        let timestamp_text = match &self.timestamp_header {
            Some(name) => one_header(delivery, name)?,
            None => None,
        };
        let id = match &self.id_header {
            Some(name) => one_header(delivery, name)?,
            None => None,
        };
        let mut content: Vec<&[u8]> = Vec::with_capacity(self.content.len());
        for piece in &self.content {
            content.push(match piece {
                Piece::Text(text) => text.as_bytes(),
                Piece::Body => delivery.body,
                Piece::Timestamp => timestamp_text.ok_or(Refusal::MissingHeader("the timestamp header"))?.as_bytes(),
                Piece::Id => id.ok_or(Refusal::MissingHeader("the id header"))?.as_bytes(),
            });
        }
        let matched = secrets.iter().any(|secret| {
            mac::equal(&mac::hmac(self.algorithm, &mac::raw_key(secret.expose_secret()), &content), &sent)
        });
        if !matched {
            return Err(Refusal::SignatureInvalid);
        }
        let timestamp = match timestamp_text {
            Some(text) if self.signs_timestamp() => Some(parse_timestamp(text)?),
            _ => None,
        };
        Ok(Verified {
            delivery_id: id.map(str::to_owned),
            id_signed: self.content.contains(&Piece::Id),
            timestamp,
            signature: sent,
        })
    }
}

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Hex => "hex",
        Encoding::Base64 => "base64",
    }
}

/// The one value of a header named at compile time, or `None`.
fn one_header<'a>(delivery: &Delivery<'a>, name: &HeaderName) -> Result<Option<&'a str>, Refusal> {
    let mut values = delivery.headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Refusal::Malformed("a signature header is repeated"));
    }
    value.to_str().map(Some).map_err(|_| Refusal::Malformed("a signature header is not ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_templates_split_into_pieces() {
        assert_eq!(
            parse_content("{id}.{timestamp}.{body}").unwrap(),
            vec![Piece::Id, Piece::Text(".".into()), Piece::Timestamp, Piece::Text(".".into()), Piece::Body]
        );
        assert!(parse_content("{nope}").is_err());
        assert!(parse_content("{body").is_err());
    }
}
