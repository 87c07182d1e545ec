//! Strict JSON for request bodies: the one reading that the validator judges and the flow
//! engine will make of the same bytes.
//!
//! A body is refused when parsers could read it differently:
//! - **duplicate keys** at any depth (`serde_json` keeps the last, some readers the first,
//!   Newtonsoft may fail: the validator could judge a value the flow never sees);
//! - **lone surrogate escapes** (`"\ud800"`: no Unicode text; `serde_json` refuses them,
//!   .NET replaces them with U+FFFD);
//! - **whole numbers beyond ±(2^53−1)**, however written: the validator reads them as
//!   rounded doubles while Newtonsoft reads an integer literal exactly (`Int64`,
//!   `BigInteger`) and JavaScript steps round it, so `maximum`, `enum`, `const` or
//!   `multipleOf` would judge a number the flow does not get. Other numbers are doubles to
//!   every reader (correctly rounded; `serde_json`'s `float_roundtrip`), and a number out of
//!   the double range is malformed;
//! - anything `serde_json` refuses: not UTF-8, a byte-order mark, trailing text, nesting
//!   deeper than 128.
//!
//! A refusal names the rule, the JSON pointer of the value (keys and indexes only, never
//! the value) and, for text that is not JSON, its line and column.
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::{Cell, RefCell};
use std::fmt;

/// The largest whole number every JSON reader holds exactly (JavaScript's
/// `Number.MAX_SAFE_INTEGER`).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Which strict rule a body broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictRule {
    /// Not JSON at all (syntax, encoding, trailing text, depth).
    Malformed,
    /// An object repeats a key.
    DuplicateKey,
    /// A `\uD800`-`\uDFFF` escape without its pair.
    LoneSurrogate,
    /// A whole number beyond ±(2^53−1).
    UnsafeInteger,
}

impl StrictRule {
    /// The rule's name in refusals and metrics.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::DuplicateKey => "duplicate_key",
            Self::LoneSurrogate => "lone_surrogate",
            Self::UnsafeInteger => "unsafe_integer",
        }
    }
}

/// Why a body is not strict JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictRefusal {
    /// The rule broken.
    pub rule: StrictRule,
    /// The JSON pointer of the offending value or key, when the text parsed that far.
    pub pointer: String,
    /// Line and column in the body (1-based), for text that is not JSON.
    pub position: Option<(usize, usize)>,
}

/// Reads `bytes` as one strict JSON document.
///
/// # Errors
/// [`StrictRefusal`] naming the first rule broken.
pub fn read(bytes: &[u8]) -> Result<Value, StrictRefusal> {
    let context = Context { path: RefCell::new(Vec::new()), broken: Cell::new(None) };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = Node { context: &context }.deserialize(&mut deserializer).and_then(|value| {
        deserializer.end()?;
        Ok(value)
    });
    parsed.map_err(|error| {
        let rule = context.broken.get().unwrap_or_else(|| {
            // serde_json refuses an unpaired surrogate in one of two fixed texts (never the
            // caller's): a high one followed by something else than a low escape.
            let text = error.to_string();
            if text.contains("surrogate") || text.contains("end of hex escape") {
                StrictRule::LoneSurrogate
            } else {
                StrictRule::Malformed
            }
        });
        let position = (rule == StrictRule::Malformed || rule == StrictRule::LoneSurrogate)
            .then(|| (error.line(), error.column()));
        StrictRefusal { rule, pointer: pointer(&context.path.borrow()), position }
    })
}

/// One step of a JSON pointer.
enum Step {
    Key(String),
    Index(usize),
}

/// The pointer (RFC 6901) of a path of steps.
fn pointer(path: &[Step]) -> String {
    let mut text = String::new();
    for step in path {
        text.push('/');
        match step {
            Step::Key(key) => text.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Step::Index(index) => text.push_str(&index.to_string()),
        }
    }
    text
}

/// What the visitors share: where they are, and which rule broke (the serde error itself
/// carries only text).
struct Context {
    path: RefCell<Vec<Step>>,
    broken: Cell<Option<StrictRule>>,
}

impl Context {
    fn refuse<E: de::Error>(&self, rule: StrictRule) -> E {
        self.broken.set(Some(rule));
        E::custom(rule.keyword())
    }
}

/// Reads one value at the current path.
#[derive(Clone, Copy)]
struct Node<'c> {
    context: &'c Context,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        if v.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(self.context.refuse(StrictRule::UnsafeInteger));
        }
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        if v > MAX_SAFE_INTEGER {
            return Err(self.context.refuse(StrictRule::UnsafeInteger));
        }
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // Integer literals beyond 64 bits arrive here too, already rounded: a whole value
        // past the safe range is refused whatever its spelling.
        #[expect(clippy::cast_precision_loss, reason = "2^53 - 1 is exact in f64")]
        if v.fract() == 0.0 && v.abs() > MAX_SAFE_INTEGER as f64 {
            return Err(self.context.refuse(StrictRule::UnsafeInteger));
        }
        Number::from_f64(v).map(Value::Number).ok_or_else(|| self.context.refuse(StrictRule::Malformed))
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.context.path.borrow_mut().push(Step::Index(items.len()));
            // On an error the path is left where it broke: the refusal's pointer.
            let Some(item) = seq.next_element_seed(self)? else {
                self.context.path.borrow_mut().pop();
                return Ok(Value::Array(items));
            };
            self.context.path.borrow_mut().pop();
            items.push(item);
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let duplicate = map.contains_key(&key);
            // The key waits on the path while its value is read (no copy per key), and
            // comes back for the map.
            self.context.path.borrow_mut().push(Step::Key(key));
            if duplicate {
                return Err(self.context.refuse(StrictRule::DuplicateKey));
            }
            let value = access.next_value_seed(self)?;
            let Some(Step::Key(key)) = self.context.path.borrow_mut().pop() else {
                return Err(self.context.refuse(StrictRule::Malformed));
            };
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests;
