//! PURE: values read out of a JSON secret as the exact text AWS holds.
//!
//! A string value is its string content (escapes resolved); every other value (number, bool,
//! null, object, array) is the exact bytes of its JSON text in the document: a number is never
//! converted (`123456789012345678901234`, `1e400` and `1e3` stay as written) and an object or
//! array keeps its key order and whitespace. This is what ESO writes.
//!
//! Parsing is serde_json's, through [`RawValue`], which checks the syntax but converts nothing.
//! Errors carry no part of the value: serde's errors (which may quote the input) are dropped.
//!
//! A JSON object with a key twice: the LAST occurrence wins, for lookups and for [`entries`]
//! alike (as in serde_json's maps).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::value::RawValue;

use crate::value::SecretBytes;

/// Why a value could not be read. Never holds any part of the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// The document is not JSON or not UTF-8; or a string read from it (the value asked for, or a
    /// key of an object on the way) escapes a lone surrogate (`"\ud800"`), which is no Unicode
    /// text. Such a string elsewhere in the document is not looked at.
    NotJson,
    /// An object was needed (`dataFrom.extract`) and the value is another JSON type.
    NotAnObject,
    /// No value at the property.
    PropertyNotFound,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonError::NotJson => "not JSON",
            JsonError::NotAnObject => "not a JSON object",
            JsonError::PropertyNotFound => "property not found",
        })
    }
}

impl std::error::Error for JsonError {}

/// Split a property path on dots; `\.` is a literal dot and `\\` a literal backslash (any other
/// escaped character stands for itself; a trailing backslash is kept).
pub fn parse_path(path: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        let push = match c {
            '\\' => chars.next().unwrap_or('\\'),
            '.' => {
                parts.push(String::new());
                continue;
            }
            c => c,
        };
        if let Some(last) = parts.last_mut() {
            last.push(push);
        }
    }
    parts
}

/// The value at `property` of a JSON document, as the Secret holds it (see the module doc).
pub fn lookup(doc: &[u8], property: &str) -> Result<SecretBytes, JsonError> {
    value_bytes(find(parse(doc)?, property)?)
}

/// The top-level entries of a JSON object (the document's, or the one at `property`), each as
/// (key, value as the Secret holds it). Sorted by key; a duplicate key's last value wins.
pub fn extract(doc: &[u8], property: Option<&str>) -> Result<Vec<(String, SecretBytes)>, JsonError> {
    let mut value = parse(doc)?;
    if let Some(property) = property {
        value = find(value, property)?;
    }
    entries(value)?.into_iter().map(|(k, v)| Ok((k, value_bytes(v)?))).collect()
}

/// Check that `doc` is one JSON value (surrounding whitespace allowed) and borrow it.
pub fn parse(doc: &[u8]) -> Result<&RawValue, JsonError> {
    let text = std::str::from_utf8(doc).map_err(|_| JsonError::NotJson)?;
    serde_json::from_str(text).map_err(|_| JsonError::NotJson)
}

/// Find a property: a top-level key spelled exactly as `property` wins (so `a.b` reaches a key
/// named "a.b"), else the dotted path ([`parse_path`]) is walked; numeric segments index arrays.
pub fn find<'a>(doc: &'a RawValue, property: &str) -> Result<&'a RawValue, JsonError> {
    if kind(doc) == Kind::Object
        && let Some(v) = object(doc)?.remove(property)
    {
        return Ok(v);
    }
    parse_path(property).iter().try_fold(doc, |cur, seg| {
        let next = match kind(cur) {
            Kind::Object => object(cur)?.remove(seg.as_str()),
            Kind::Array => match seg.parse::<usize>() {
                Ok(i) => array(cur)?.get(i).copied(),
                Err(_) => None,
            },
            Kind::String | Kind::Other => None,
        };
        next.ok_or(JsonError::PropertyNotFound)
    })
}

/// The keys and raw values of a JSON object, sorted by key; a duplicate key's last value wins.
pub fn entries(value: &RawValue) -> Result<Vec<(String, &RawValue)>, JsonError> {
    if kind(value) != Kind::Object {
        return Err(JsonError::NotAnObject);
    }
    Ok(object(value)?.into_iter().collect())
}

/// A value as the Secret holds it: a string's content, or the JSON text of any other value.
pub fn value_bytes(value: &RawValue) -> Result<SecretBytes, JsonError> {
    match kind(value) {
        Kind::String => {
            serde_json::from_str::<String>(value.get()).map(SecretBytes::from).map_err(|_| JsonError::NotJson)
        }
        Kind::Object | Kind::Array | Kind::Other => Ok(SecretBytes::from(value.get().to_string())),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    String,
    /// Number, bool or null.
    Other,
}

/// The JSON type of a value. A `RawValue` starts at its first token (serde_json skips the
/// whitespace before it), which names the type.
fn kind(value: &RawValue) -> Kind {
    match value.get().trim_start_matches([' ', '\t', '\n', '\r']).as_bytes().first() {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        _ => Kind::Other,
    }
}

/// An object's members. Fails only on a key that is not valid Unicode (a lone surrogate escape).
fn object(value: &RawValue) -> Result<BTreeMap<String, &RawValue>, JsonError> {
    serde_json::from_str(value.get()).map_err(|_| JsonError::NotJson)
}

fn array(value: &RawValue) -> Result<Vec<&RawValue>, JsonError> {
    serde_json::from_str(value.get()).map_err(|_| JsonError::NotJson)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: Result<SecretBytes, JsonError>) -> Result<String, JsonError> {
        r.map(|b| String::from_utf8(b.expose().to_vec()).unwrap_or_else(|_| "<not utf-8>".into()))
    }

    #[test]
    fn values_are_the_text_aws_holds() {
        let doc = r#" {
            "big": 123456789012345678901234,
            "neg": -9999999999999999999,
            "exp": 1e3,
            "huge": 1e400,
            "tiny": -1.50E-400,
            "zero": -0,
            "dec": 1.10,
            "t": true, "f": false, "n": null,
            "s": "a\"b\\c\/d\n\u00e9\ud83d\ude00",
            "empty": "",
            "obj": { "z": 1,  "a" : [ 1 , 2 ] },
            "arr": [ "x", {"k": "v"} ,3 ],
            "a.b": "top-level dotted",
            "a": {"b": "walked"},
            "x": {"y.z": "escaped dot", "w\\": "backslash"},
            "list": ["p", "q", {"deep": [10, 20]}],
            "sp ace/é": "any key"
        } "#
        .as_bytes();
        let cases: &[(&str, Result<&str, JsonError>)] = &[
            ("big", Ok("123456789012345678901234")),
            ("neg", Ok("-9999999999999999999")),
            ("exp", Ok("1e3")),
            ("huge", Ok("1e400")),
            ("tiny", Ok("-1.50E-400")),
            ("zero", Ok("-0")),
            ("dec", Ok("1.10")),
            ("t", Ok("true")),
            ("f", Ok("false")),
            ("n", Ok("null")),
            ("s", Ok("a\"b\\c/d\né😀")),
            ("empty", Ok("")),
            ("obj", Ok(r#"{ "z": 1,  "a" : [ 1 , 2 ] }"#)),
            ("obj.a", Ok("[ 1 , 2 ]")),
            ("obj.a.1", Ok("2")),
            ("arr", Ok(r#"[ "x", {"k": "v"} ,3 ]"#)),
            ("arr.0", Ok("x")),
            ("arr.1", Ok(r#"{"k": "v"}"#)),
            ("arr.1.k", Ok("v")),
            ("arr.2", Ok("3")),
            ("a.b", Ok("top-level dotted")),
            ("a\\.b", Ok("top-level dotted")),
            ("x.y\\.z", Ok("escaped dot")),
            ("x.w\\\\", Ok("backslash")),
            ("list.2.deep.1", Ok("20")),
            ("sp ace/é", Ok("any key")),
            ("missing", Err(JsonError::PropertyNotFound)),
            ("arr.3", Err(JsonError::PropertyNotFound)),
            ("arr.x", Err(JsonError::PropertyNotFound)),
            ("arr.-1", Err(JsonError::PropertyNotFound)),
            ("big.x", Err(JsonError::PropertyNotFound)),
            ("s.0", Err(JsonError::PropertyNotFound)),
            ("a.b.c", Err(JsonError::PropertyNotFound)),
        ];
        for (property, want) in cases {
            assert_eq!(text(lookup(doc, property)).as_deref(), want.as_deref(), "{property}");
        }
    }

    #[test]
    fn documents_that_are_not_json_or_not_objects() {
        for doc in
            [&b""[..], b"not json", b"{", b"{\"a\":1,}", b"{\"a\":01}", b"{\"a\":1} x", b"\xff", b"NaN", b"{'a':1}"]
        {
            assert_eq!(lookup(doc, "a").err(), Some(JsonError::NotJson), "{doc:?}");
            assert_eq!(extract(doc, None).err(), Some(JsonError::NotJson), "{doc:?}");
        }
        // Valid JSON that is not an object: a property is not found, and extract needs an object.
        for doc in [&b"\"s\""[..], b"1", b"1e400", b"null", b" [1, 2] "] {
            assert_eq!(lookup(doc, "a").err(), Some(JsonError::PropertyNotFound), "{doc:?}");
            assert_eq!(extract(doc, None).err(), Some(JsonError::NotAnObject), "{doc:?}");
        }
        assert_eq!(text(lookup(b" [1, [2, 3e9]] ", "1.1")).as_deref(), Ok("3e9"));
        assert_eq!(extract(br#"{"a": [1]}"#, Some("a")).err(), Some(JsonError::NotAnObject));
        assert_eq!(extract(br#"{"a": {}}"#, Some("b")).err(), Some(JsonError::PropertyNotFound));
        // A string whose escapes are not Unicode is refused where it is read, not elsewhere.
        let doc = br#"{"bad": "\ud800", "good": "ok"}"#;
        assert_eq!(lookup(doc, "bad").err(), Some(JsonError::NotJson));
        assert_eq!(text(lookup(doc, "good")).as_deref(), Ok("ok"));
        let doc = br#"{"\udc00": 1, "a": 2, "o": {"\ud800": 3}}"#;
        assert_eq!(lookup(doc, "a").err(), Some(JsonError::NotJson));
        assert_eq!(extract(doc, Some("o")).err(), Some(JsonError::NotJson));
    }

    #[test]
    fn extract_gives_every_top_level_entry() {
        let doc = br#"{"s": "v\u0021", "n": 123456789012345678901234, "o": {"k" : true}, "l": [ ], "z": null}"#;
        let got: Vec<(String, String)> = extract(doc, None)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.expose().to_vec()).unwrap_or_default()))
            .collect();
        let want =
            [("l", "[ ]"), ("n", "123456789012345678901234"), ("o", r#"{"k" : true}"#), ("s", "v!"), ("z", "null")];
        assert_eq!(got, want.map(|(k, v)| (k.to_string(), v.to_string())));

        let nested = extract(br#"{"outer": {"in.ner": 1e3}}"#, Some("outer")).unwrap_or_default();
        assert_eq!(nested.len(), 1);
        assert_eq!((nested[0].0.as_str(), nested[0].1.expose()), ("in.ner", &b"1e3"[..]));
        assert_eq!(extract(b" {} ", None).map(|e| e.len()), Ok(0));
    }

    #[test]
    fn a_duplicate_key_takes_its_last_value() {
        let doc = br#"{"k": "first", "k": "last", "o": {"d": 1, "d": 2}}"#;
        assert_eq!(text(lookup(doc, "k")).as_deref(), Ok("last"));
        assert_eq!(text(lookup(doc, "o.d")).as_deref(), Ok("2"));
        let entries = extract(doc, None).unwrap_or_default();
        assert_eq!(entries.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["k", "o"]);
        assert_eq!(entries[0].1.expose(), b"last");
    }

    #[test]
    fn a_key_escaped_in_the_document_is_found_by_its_content() {
        let doc = br#"{"a\u002eb": "dotted", "\u00e9": "e-acute", "q\"": "quote"}"#;
        assert_eq!(text(lookup(doc, "a.b")).as_deref(), Ok("dotted"));
        assert_eq!(text(lookup(doc, "é")).as_deref(), Ok("e-acute"));
        assert_eq!(text(lookup(doc, "q\"")).as_deref(), Ok("quote"));
    }

    #[test]
    fn deep_nesting_is_read_without_a_recursion_limit() {
        // serde_json::Value stops at 128 levels.
        let depth = 1_000;
        let doc = format!("{}\"leaf\"{}", "[".repeat(depth), "]".repeat(depth));
        let path = vec!["0"; depth].join(".");
        assert_eq!(text(lookup(doc.as_bytes(), &path)).as_deref(), Ok("leaf"));
    }

    #[test]
    fn errors_never_show_the_value() {
        const V: &[u8] = br#"{"k": "SENTINEL", "n": SENTINEL}"#;
        for e in [lookup(V, "k").err(), extract(V, None).err(), lookup(b"SENTINEL", "x").err()].into_iter().flatten() {
            assert!(!format!("{e} {e:?}").contains("SENTINEL"));
        }
    }

    #[test]
    fn path_parsing() {
        assert_eq!(parse_path("a.b"), ["a", "b"]);
        assert_eq!(parse_path("a\\.b"), ["a.b"]);
        assert_eq!(parse_path("a\\\\.b"), ["a\\", "b"]);
        assert_eq!(parse_path("a\\x"), ["ax"]);
        assert_eq!(parse_path("a\\"), ["a\\"]);
        assert_eq!(parse_path(""), [""]);
        assert_eq!(parse_path(".."), ["", "", ""]);
    }
}
