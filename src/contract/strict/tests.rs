//! The strict reader against a small model: generated documents (repeated keys, lone and
//! paired surrogate escapes, integers and decimals around ±2^53) are written out as text,
//! and the model, walking the tree in document order, says which rule breaks first and
//! where.

use super::*;
use proptest::prelude::*;

#[test]
fn named_examples() {
    assert_eq!(read(br#"{"a":1,"a":2}"#).unwrap_err().rule, StrictRule::DuplicateKey);
    let nested = read(br#"{"x":[{"b":1},{"b":1,"b":2}]}"#).unwrap_err();
    assert_eq!((nested.rule, nested.pointer.as_str()), (StrictRule::DuplicateKey, "/x/1/b"));
    let lone = read(br#"{"s":"\ud800x"}"#).unwrap_err();
    assert_eq!((lone.rule, lone.pointer.as_str()), (StrictRule::LoneSurrogate, "/s"));
    assert!(lone.position.is_some());
    assert!(read(br#"{"s":"\ud83d\ude00"}"#).is_ok(), "a paired surrogate is a character");
    assert_eq!(read(b"9007199254740991").unwrap(), serde_json::json!(9_007_199_254_740_991_u64));
    assert_eq!(read(b"9007199254740992").unwrap_err().rule, StrictRule::UnsafeInteger);
    assert_eq!(read(b"-9007199254740992").unwrap_err().rule, StrictRule::UnsafeInteger);
    assert_eq!(read(b"[100000000000000000000000]").unwrap_err().pointer, "/0");
    assert_eq!(read(b"1e300").unwrap_err().rule, StrictRule::UnsafeInteger);
    assert!(read(b"1.5e300").is_err(), "a whole value however written");
    assert!(read(b"0.1").is_ok());
    assert_eq!(read(b"1e400").unwrap_err().rule, StrictRule::Malformed);
    let broken = read(b"{\n  \"a\": tru }").unwrap_err();
    assert_eq!((broken.rule, broken.position.map(|p| p.0)), (StrictRule::Malformed, Some(2)));
    assert_eq!(read(b"{} x").unwrap_err().rule, StrictRule::Malformed);
    assert_eq!(read(b"\xef\xbb\xbf{}").unwrap_err().rule, StrictRule::Malformed, "no byte-order mark");
    assert_eq!(read(br#"{"a/b~":{"c":1,"c":1}}"#).unwrap_err().pointer, "/a~1b~0/c");
}

/// A piece of a generated string.
#[derive(Debug, Clone)]
enum Piece {
    Plain(char),
    Pair,
    LoneHigh,
    LoneLow,
}

#[derive(Debug, Clone)]
enum Doc {
    Null,
    Bool(bool),
    /// An integer literal, as decimal digits with a sign.
    Int(i128),
    /// A decimal literal `mantissa.fraction e exponent`.
    Decimal(i64, u32, i32),
    Str(Vec<Piece>),
    Array(Vec<Doc>),
    Object(Vec<(Vec<Piece>, Doc)>),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        8 => prop::sample::select(vec!['a', 'b', '/', '~', 'é']).prop_map(Piece::Plain),
        1 => Just(Piece::Pair),
        1 => Just(Piece::LoneHigh),
        1 => Just(Piece::LoneLow),
    ]
}

fn key() -> impl Strategy<Value = Vec<Piece>> {
    prop_oneof![
        // Few distinct short keys, so objects often repeat one.
        6 => prop::sample::select(vec!["a", "b", "c"]).prop_map(|k| k.chars().map(Piece::Plain).collect()),
        1 => prop::collection::vec(piece(), 0..3),
    ]
}

fn int() -> impl Strategy<Value = i128> {
    let edge: i128 = 1 << 53;
    prop_oneof![
        -1000i128..1000,
        prop::sample::select(vec![
            edge - 1,
            edge,
            edge + 1,
            -(edge - 1),
            -edge,
            i128::from(i64::MIN),
            i128::from(u64::MAX),
            10i128.pow(25),
            -(10i128.pow(22)),
        ]),
        -(edge * 4)..(edge * 4),
    ]
}

fn doc() -> impl Strategy<Value = Doc> {
    let leaf = prop_oneof![
        Just(Doc::Null),
        any::<bool>().prop_map(Doc::Bool),
        int().prop_map(Doc::Int),
        (-99_999i64..99_999, 0u32..1000, -30i32..30).prop_map(|(m, f, e)| Doc::Decimal(m, f, e)),
        prop::collection::vec(piece(), 0..4).prop_map(Doc::Str),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Doc::Array),
            prop::collection::vec((key(), inner), 0..4).prop_map(Doc::Object),
        ]
    })
}

fn write_text(pieces: &[Piece], out: &mut String) {
    out.push('"');
    for piece in pieces {
        match piece {
            Piece::Plain('/') => out.push_str("\\/"),
            Piece::Plain(c) => out.push(*c),
            Piece::Pair => out.push_str("\\ud83d\\ude00"),
            Piece::LoneHigh => out.push_str("\\ud800"),
            Piece::LoneLow => out.push_str("\\udfff"),
        }
    }
    out.push('"');
}

fn write(doc: &Doc, out: &mut String) {
    match doc {
        Doc::Null => out.push_str("null"),
        Doc::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Doc::Int(n) => out.push_str(&n.to_string()),
        Doc::Decimal(m, f, e) => out.push_str(&format!("{m}.{f}e{e}")),
        Doc::Str(pieces) => write_text(pieces, out),
        Doc::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Doc::Object(members) => {
            out.push('{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_text(key, out);
                out.push(':');
                write(value, out);
            }
            out.push('}');
        }
    }
}

/// The model's reading of a key or string: `None` when it holds a lone surrogate.
fn text_of(pieces: &[Piece]) -> Option<String> {
    let mut text = String::new();
    let mut rest = pieces.iter().peekable();
    while let Some(piece) = rest.next() {
        match piece {
            Piece::Plain(c) => text.push(*c),
            Piece::Pair => text.push('😀'),
            // A high escape directly followed by a low one is a pair after all.
            Piece::LoneHigh if matches!(rest.peek(), Some(Piece::LoneLow)) => {
                rest.next();
                text.push('\u{103ff}');
            }
            Piece::LoneHigh | Piece::LoneLow => return None,
        }
    }
    Some(text)
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The first rule broken in document order, and where.
fn first_broken(doc: &Doc, at: &str) -> Option<(StrictRule, String)> {
    let safe = 9_007_199_254_740_991_f64;
    match doc {
        Doc::Null | Doc::Bool(_) => None,
        Doc::Int(n) => {
            (n.unsigned_abs() > u128::from(MAX_SAFE_INTEGER)).then(|| (StrictRule::UnsafeInteger, at.into()))
        }
        Doc::Decimal(m, f, e) => {
            let value: f64 = format!("{m}.{f}e{e}").parse().unwrap();
            (value.fract() == 0.0 && value.abs() > safe).then(|| (StrictRule::UnsafeInteger, at.into()))
        }
        Doc::Str(pieces) => text_of(pieces).is_none().then(|| (StrictRule::LoneSurrogate, at.into())),
        Doc::Array(items) => items.iter().enumerate().find_map(|(i, item)| first_broken(item, &format!("{at}/{i}"))),
        Doc::Object(members) => {
            let mut seen = std::collections::HashSet::new();
            for (key, value) in members {
                let Some(key) = text_of(key) else {
                    return Some((StrictRule::LoneSurrogate, at.into()));
                };
                let here = format!("{at}/{}", escape(&key));
                if !seen.insert(key) {
                    return Some((StrictRule::DuplicateKey, here));
                }
                if let Some(found) = first_broken(value, &here) {
                    return Some(found);
                }
            }
            None
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn strict_reading_follows_the_model(doc in doc()) {
        let mut text = String::new();
        write(&doc, &mut text);
        let verdict = read(text.as_bytes());
        match first_broken(&doc, "") {
            None => {
                let value = verdict.map_err(|r| TestCaseError::fail(format!("{text}: refused {r:?}")))?;
                let plain: Value = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(value, plain, "{}", text);
            }
            Some((rule, pointer)) => {
                let refusal = verdict.err().ok_or_else(|| TestCaseError::fail(format!("{text}: accepted")))?;
                prop_assert_eq!((refusal.rule, refusal.pointer.as_str()), (rule, pointer.as_str()), "{}", text);
            }
        }
    }
}
