//! JSON decoding that refuses duplicate object keys.
//!
//! `serde_json` silently keeps the last of two equal keys, so `{"aud":"a","aud":"b"}` would
//! mean different things to us and to another parser. A token whose header or payload
//! carries a duplicate key is refused outright.
#![cfg_attr(
    not(feature = "fuzzing"),
    expect(unreachable_pub, reason = "public for the fuzz targets, which build with the `fuzzing` feature")
)]

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Why a JSON document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    /// Not JSON, or JSON with a duplicate key.
    #[error("invalid JSON: {0}")]
    Invalid(String),
    /// Valid JSON but not an object.
    #[error("not a JSON object")]
    NotAnObject,
}

/// A `serde_json::Value` built by a visitor that fails on a repeated key.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                // The key is the caller's text: not echoed into reasons and logs.
                return Err(de::Error::custom("duplicate key"));
            }
            let Strict(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// Parses `bytes` as one JSON object, refusing duplicate keys at any depth.
///
/// # Errors
/// [`StrictJsonError`] when the bytes are not JSON, repeat a key, or are not an object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, StrictJsonError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let Strict(value) = Strict::deserialize(&mut deserializer).map_err(|e| StrictJsonError::Invalid(e.to_string()))?;
    deserializer.end().map_err(|e| StrictJsonError::Invalid(e.to_string()))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(StrictJsonError::NotAnObject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        assert!(parse_object(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_object(br#"{"x":{"b":1,"b":1}}"#).is_err());
        assert!(parse_object(br#"{"x":[{"b":1,"b":1}]}"#).is_err());
    }

    #[test]
    fn accepts_plain_objects_and_refuses_others() {
        let map = parse_object(br#"{"a":1,"b":[true,null,"s",1.5,-3]}"#).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(parse_object(b"[1]"), Err(StrictJsonError::NotAnObject));
        assert!(parse_object(br#"{"a":1} trailing"#).is_err());
    }
}
