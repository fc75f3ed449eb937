//! Kubernetes YAML in and out for `inject`: multi-document parsing (serde_yaml, already in the
//! tree through figment) and a block-style writer that keeps key order and quotes every string
//! a YAML 1.1 reader (Kubernetes' sigs.k8s.io/yaml) could take for something else.
//!
//! serde_yaml reads YAML 1.2, Kubernetes YAML 1.1: they disagree on plain `yes`/`on`/`off`/`y`
//! (booleans to Kubernetes), `0644` (octal 420) and `1_000`. Quoting cannot be seen after the
//! parse, so an input that has such a scalar unquoted is refused, never silently changed.
//! Comments are not kept (as with kubectl and `linkerd inject`).

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

/// Parse every document of `src`; empty documents are dropped.
pub fn parse_all(src: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(src).enumerate() {
        let mut doc = Value::deserialize(de).map_err(|e| format!("document {}: not valid YAML: {e}", i + 1))?;
        doc.apply_merge().map_err(|e| format!("document {}: {e}", i + 1))?;
        if doc.is_null() {
            continue;
        }
        check_unambiguous(&doc, src).map_err(|e| format!("document {}: {e}", i + 1))?;
        docs.push(doc);
    }
    Ok(docs)
}

/// Every document, block style, separated by `---`.
pub fn write_all(docs: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        match doc {
            Value::Mapping(m) if !m.is_empty() => write_map(m, 0, false, &mut out)?,
            Value::Sequence(s) if !s.is_empty() => write_seq(s, 0, &mut out)?,
            other => {
                out.push_str(&scalar(other)?);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// Strings that YAML 1.1 and 1.2 read differently when they are plain (unquoted).
fn ambiguous(s: &str) -> bool {
    const BOOLS: [&str; 16] =
        ["y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"];
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    BOOLS.contains(&s)
        || (digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()))
        || (digits.contains('_') && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_' || b == b'.'))
}

/// Refuses a document holding an ambiguous string that appears unquoted in the source.
fn check_unambiguous(v: &Value, src: &str) -> Result<(), String> {
    let mut found = None;
    visit_strings(v, &mut |s| {
        if found.is_none() && ambiguous(s) && unquoted_in(src, s) {
            found = Some(s.to_string());
        }
    });
    match found {
        Some(s) => Err(format!(
            "the unquoted value {s} means a string to this tool (YAML 1.2) but a boolean or number to \
             Kubernetes (YAML 1.1); quote it (\"{s}\"), or write the number in decimal"
        )),
        None => Ok(()),
    }
}

fn visit_strings(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Sequence(items) => items.iter().for_each(|i| visit_strings(i, f)),
        Value::Mapping(m) => m.iter().for_each(|(k, v)| {
            visit_strings(k, f);
            visit_strings(v, f)
        }),
        Value::Tagged(t) => visit_strings(&t.value, f),
        _ => {}
    }
}

/// Whether `token` occurs in `src` as a whole plain scalar (a value, key or flow item).
fn unquoted_in(src: &str, token: &str) -> bool {
    src.match_indices(token).any(|(i, _)| {
        let before = src[..i].chars().next_back();
        let after = src[i + token.len()..].chars().next();
        let line = &src[src[..i].rfind('\n').map_or(0, |n| n + 1)..i];
        let in_comment = line.trim_start().starts_with('#') || line.contains(" #");
        !in_comment
            && matches!(before, None | Some(' ' | '\t' | '\n' | '[' | ',' | '{'))
            && matches!(after, None | Some('\n' | '\r' | ' ' | '\t' | ',' | ']' | '}' | '#' | ':'))
    })
}

fn pad(n: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// A mapping at indent `ind`; `inline`: the first key follows a `- ` already written.
fn write_map(m: &Mapping, ind: usize, inline: bool, out: &mut String) -> Result<(), String> {
    for (i, (k, v)) in m.iter().enumerate() {
        if !(inline && i == 0) {
            pad(ind, out);
        }
        if matches!(k, Value::Mapping(_) | Value::Sequence(_) | Value::Tagged(_)) {
            return Err("a mapping key that is not a scalar is not supported".into());
        }
        match k {
            Value::String(s) => out.push_str(&quote_or_plain(s)),
            other => out.push_str(&scalar(other)?),
        }
        out.push(':');
        write_value(v, ind, out)?;
    }
    Ok(())
}

fn write_seq(s: &[Value], ind: usize, out: &mut String) -> Result<(), String> {
    for item in s {
        pad(ind, out);
        out.push('-');
        match item {
            Value::Mapping(m) if !m.is_empty() => {
                out.push(' ');
                write_map(m, ind + 2, true, out)?;
            }
            _ => write_value(item, ind, out)?,
        }
    }
    Ok(())
}

/// What follows `key:` or `-`: the rest of the line and any lines below, indented from `ind`.
fn write_value(v: &Value, ind: usize, out: &mut String) -> Result<(), String> {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            write_map(m, ind + 2, false, out)
        }
        Value::Sequence(s) if !s.is_empty() => {
            out.push('\n');
            write_seq(s, ind + 2, out)
        }
        Value::String(s) if literal_ok(s) => {
            let trailing = s.len() - s.trim_end_matches('\n').len();
            out.push_str(match trailing {
                0 => " |-\n",
                1 => " |\n",
                _ => " |+\n",
            });
            let body = s.strip_suffix('\n').unwrap_or(s);
            for line in body.split('\n') {
                if !line.is_empty() {
                    pad(ind + 2, out);
                    out.push_str(line);
                }
                out.push('\n');
            }
            Ok(())
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other)?);
            out.push('\n');
            Ok(())
        }
    }
}

/// A multi-line string that a literal block (`|`) carries exactly.
fn literal_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.chars().all(|c| c == '\n' || c == '\t' || printable(c))
        && s.split('\n').all(|l| l.is_empty() || !l.trim().is_empty())
}

fn scalar(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => quote_or_plain(s),
        Value::Mapping(_) => "{}".into(),
        Value::Sequence(_) => "[]".into(),
        Value::Tagged(t) => return Err(format!("the YAML tag {} is not supported", t.tag)),
    })
}

/// A number as YAML 1.1 and 1.2 both read it (not through serde_yaml's emitter, which would
/// otherwise be linked into the binary for this alone).
fn number(n: &serde_yaml::Number) -> String {
    match (n.as_i64(), n.as_u64(), n.as_f64()) {
        (Some(i), _, _) => i.to_string(),
        (None, Some(u), _) => u.to_string(),
        (_, _, Some(f)) if f.is_nan() => ".nan".into(),
        (_, _, Some(f)) if f.is_infinite() => if f > 0.0 { ".inf" } else { "-.inf" }.into(),
        (_, _, Some(f)) => format!("{f:?}"),
        _ => n.to_string(),
    }
}

/// `s` plain when every YAML 1.1 and 1.2 reader takes it for that same string, else double-quoted.
fn quote_or_plain(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        double_quoted(s)
    }
}

fn plain_ok(s: &str) -> bool {
    const RESERVED: [&str; 16] =
        ["null", "~", "true", "false", "y", "yes", "n", "no", "on", "off", ".inf", "-.inf", "+.inf", ".nan", "=", "<<"];
    let Some(first) = s.chars().next() else { return false };
    let numeric_like =
        s.chars().any(|c| c.is_ascii_digit()) && s.chars().all(|c| "0123456789_+-.:eExXoObBaAcCdDfF".contains(c));
    let chars_ok = s.chars().all(|c| c.is_ascii_alphanumeric() || " -_./:=+@%~^$(),".contains(c));
    let first_ok = first.is_ascii_alphanumeric()
        || "/._$(^=+".contains(first)
        || (first == '-' && s.len() > 1 && !s[1..].starts_with(' '));
    chars_ok
        && first_ok
        && !numeric_like
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
}

/// Characters YAML allows unescaped (its `c-printable`), less the ones YAML 1.1 takes for line breaks.
fn printable(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(src: &str) -> Vec<Value> {
        let docs = parse_all(src).unwrap();
        let text = write_all(&docs).unwrap();
        let again = parse_all(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(docs, again, "{text}");
        docs
    }

    #[test]
    fn strings_that_look_like_other_types_are_quoted() {
        for s in [
            "yes", "on", "Off", "y", "0644", "1_000", "null", "~", "true", "1.36", "1e3", "", " x", "a: b", "x #y",
            "-", "*a", "&a", "!t", "@x", "%x", "`x", "|", ">", "'q", "\"q", "[a", "{a", "?", "#x",
        ] {
            assert!(!plain_ok(s), "{s:?} must be quoted");
        }
        for s in [
            "busybox:1.36",
            "10m",
            "16Mi",
            "app.kubernetes.io/name",
            "http://127.0.0.1:8200/v1/secrets",
            "-c",
            "/secrets",
            "RuntimeDefault",
        ] {
            assert!(plain_ok(s), "{s:?} may stay plain");
        }
        let docs = vec![Value::Sequence(
            [
                "yes",
                "0644",
                "a\u{2028}b",
                "tab\there",
                "\u{7f}",
                "multi\nline\n",
                "no newline\nat end",
                "two\n\n",
                " lead\nx",
                "  \nx",
            ]
            .iter()
            .map(|s| Value::String(s.to_string()))
            .collect(),
        )];
        let text = write_all(&docs).unwrap();
        assert_eq!(parse_all(&text).unwrap(), docs, "{text}");
    }

    #[test]
    fn order_numbers_empties_and_documents_survive() {
        let docs =
            round_trip("b: 1\na: [1, 2.5, -3, 1e20, 18446744073709551615, .inf, -.inf, .nan, 0.1]\nc: {}\nd: []\ne: null\nf: true\n---\n---\n- x\n- - z\n- {k: v, j: w}\n");
        assert_eq!(docs.len(), 2, "the empty document is dropped");
        let keys: Vec<_> = docs[0].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(keys, ["b", "a", "c", "d", "e", "f"]);
    }

    #[test]
    fn unquoted_yaml_1_1_scalars_are_refused_quoted_ones_kept() {
        for src in ["a: yes\n", "mode: 0644\n", "n: 1_000\n", "list: [on, x]\n", "no: 1\n"] {
            assert!(parse_all(src).unwrap_err().contains("YAML 1.1"), "{src}");
        }
        let docs = round_trip("a: \"yes\"\nmode: '0644'\nb: 'on'   # on by default\n# yes: comments are not values\n");
        assert_eq!(docs[0]["a"], Value::String("yes".into()));
    }

    #[test]
    fn merge_keys_are_applied_and_tags_refused() {
        let docs = round_trip("base: &b {x: 1}\nd:\n  <<: *b\n  w: 2\n");
        assert_eq!(docs[0]["d"]["x"], Value::Number(1.into()));
        let tagged = parse_all("a: !custom x\n").unwrap();
        assert!(write_all(&tagged).unwrap_err().contains("tag"));
    }
}
