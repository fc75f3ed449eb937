//! A JSON value of an App Configuration setting as Microsoft's providers read it: parsed as
//! strict JSON, and when that fails, again with `//` and `/* */` comments removed (the Python
//! provider's `remove_json_comments`; .NET parses with `JsonCommentHandling.Skip`). Numbers
//! keep the text they were stored with (`1.0` stays `1.0`, a 30-digit integer keeps its
//! digits): the providers' parsers keep them too (Python's `float`/`int`, .NET's raw text).

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;

/// A parsed JSON value; object members sorted by name (a repeated name: the last one wins, as in
/// Python's `json.loads`).
/// Its `Debug` shows the shape and member names, never a string's or number's text or length: values may
/// be secrets (as `Setting`'s own `Debug` redacts them).
#[derive(Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number's text as stored (valid JSON number syntax).
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Json::Null => f.write_str("Null"),
            Json::Bool(b) => write!(f, "Bool({b})"),
            Json::Number(_) => f.write_str("Number(..)"),
            Json::String(_) => f.write_str("String(..)"),
            Json::Array(items) => f.debug_list().entries(items).finish(),
            Json::Object(members) => f.debug_map().entries(members).finish(),
        }
    }
}

/// Parses `text` as JSON, or as JSON with comments; `None` when it is neither.
pub fn parse(text: &str) -> Option<Json> {
    parse_strict(text).or_else(|| parse_strict(&strip_comments(text)?))
}

fn parse_strict(text: &str) -> Option<Json> {
    let raw: Box<RawValue> = serde_json::from_str(text).ok()?;
    from_raw(&raw)
}

/// One level at a time: serde_json has checked the syntax (and the nesting depth) already.
fn from_raw(raw: &RawValue) -> Option<Json> {
    let text = raw.get();
    Some(match text.as_bytes().first()? {
        b'{' => {
            let members: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text).ok()?;
            let mut object = BTreeMap::new();
            for (name, value) in members {
                object.insert(name, from_raw(&value)?);
            }
            Json::Object(object)
        }
        b'[' => {
            let items: Vec<Box<RawValue>> = serde_json::from_str(text).ok()?;
            Json::Array(items.iter().map(|i| from_raw(i)).collect::<Option<_>>()?)
        }
        b'"' => Json::String(serde_json::from_str(text).ok()?),
        b't' => Json::Bool(true),
        b'f' => Json::Bool(false),
        b'n' => Json::Null,
        _ => Json::Number(text.to_owned()),
    })
}

/// `text` without `//` (to the end of the line, the newline kept) and `/* */` comments, string
/// literals left as they are; `None` for an unterminated string or block comment. The Python
/// provider's `remove_json_comments`, step for step.
pub fn strip_comments(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut kept = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            // The closing quote is one preceded by an even number of backslashes.
            let mut j = i + 1;
            loop {
                if j >= bytes.len() {
                    return None;
                }
                if bytes[j] == b'"' && bytes[i + 1..j].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0 {
                    break;
                }
                j += 1;
            }
            i = j + 1;
        } else if bytes[i..].starts_with(b"//") {
            out.push_str(&text[kept..i]);
            i += 2;
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            kept = i;
        } else if bytes[i..].starts_with(b"/*") {
            out.push_str(&text[kept..i]);
            let end = text[i + 2..].find("*/")?;
            i += 2 + end + 2;
            kept = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[kept..]);
    Some(out)
}

impl Json {
    /// The number's text in a form YAML 1.1 readers (PyYAML) also take for a number: a mantissa
    /// with a `.` and a signed exponent (`1e5` -> `1.0e+5`); the value is unchanged.
    pub fn yaml_number(text: &str) -> String {
        let Some(at) = text.find(['e', 'E']) else { return text.to_owned() };
        let (mantissa, exponent) = (&text[..at], &text[at + 1..]);
        let mantissa = if mantissa.contains('.') { mantissa.to_owned() } else { format!("{mantissa}.0") };
        let exponent = if exponent.starts_with(['+', '-']) { exponent.to_owned() } else { format!("+{exponent}") };
        format!("{mantissa}{}{exponent}", &text[at..=at])
    }
}

impl From<&serde_json::Value> for Json {
    fn from(v: &serde_json::Value) -> Json {
        use serde_json::Value;
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.to_string()),
            Value::String(s) => Json::String(s.clone()),
            Value::Array(items) => Json::Array(items.iter().map(Json::from).collect()),
            Value::Object(map) => Json::Object(map.iter().map(|(k, v)| (k.clone(), Json::from(v))).collect()),
        }
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(text) => match RawValue::from_string(text.clone()) {
                Ok(raw) => raw.serialize(s),
                Err(e) => Err(serde::ser::Error::custom(e)),
            },
            Json::String(text) => s.serialize_str(text),
            Json::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_shape_never_a_value() {
        let parsed = parse(r#"{"password": "hunter2-s3cret", "pin": 48151623, "list": [true, null]}"#).unwrap();
        let shown = format!("{parsed:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("48151623"), "{shown}");
        assert_eq!(shown, r#"{"list": [Bool(true), Null], "password": String(..), "pin": Number(..)}"#);
    }

    #[test]
    fn numbers_keep_their_text_and_serialise_back_as_it() {
        let parsed = parse(r#"{"f": 1.0, "big": 123456789012345678901234567890, "e": 1e5, "n": -0.50}"#).unwrap();
        let Json::Object(m) = &parsed else { panic!("{parsed:?}") };
        assert_eq!(m["f"], Json::Number("1.0".into()));
        assert_eq!(m["big"], Json::Number("123456789012345678901234567890".into()));
        assert_eq!(
            serde_json::to_string(&parsed).unwrap(),
            r#"{"big":123456789012345678901234567890,"e":1e5,"f":1.0,"n":-0.50}"#
        );
    }

    #[test]
    fn comments_are_skipped_outside_strings_as_the_python_provider_does() {
        let text = "{\n  // a comment\n  \"url\": \"http://x/*y*/\", /* block\n */ \"q\": \"a\\\"//b\" // end\n}";
        let Some(Json::Object(m)) = parse(text) else { panic!() };
        assert_eq!(m["url"], Json::String("http://x/*y*/".into()));
        assert_eq!(m["q"], Json::String("a\"//b".into()));
        assert_eq!(parse("[1, /* unterminated"), None);
        assert_eq!(parse("\"unterminated"), None);
        assert_eq!(parse("[1,]"), None, "trailing commas are not JSON to either provider");
        assert_eq!(parse(""), None);
        assert_eq!(parse("{\"a\": 1, \"a\": 2}"), Some(Json::Object([("a".into(), Json::Number("2".into()))].into())));
    }

    #[test]
    fn yaml_numbers_get_a_dot_and_a_signed_exponent() {
        assert_eq!(Json::yaml_number("1e5"), "1.0e+5");
        assert_eq!(Json::yaml_number("-2.5E-3"), "-2.5E-3");
        assert_eq!(Json::yaml_number("1.0"), "1.0");
        assert_eq!(Json::yaml_number("12345678901234567890"), "12345678901234567890");
    }
}
