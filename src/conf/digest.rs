//! `config_digest`: SHA-256 of the parsed configuration written as Go's
//! `encoding/json` writes nats-server's parsed map (keys sorted bytewise,
//! a later duplicate key winning, variables and size suffixes resolved,
//! `<`, `>` and `&` escaped), so the same file shows the same digest on
//! both servers (`/varz`, `nats server info`).

use sha2::{Digest, Sha256};

use super::value::{Map, Value};

/// `sha256:<hex>` of the file's top-level block.
pub fn config_digest(map: &Map) -> String {
    let mut out = String::new();
    write_map(&mut out, map);
    // json.Encoder.Encode ends the document with a newline.
    out.push('\n');
    let sum = Sha256::digest(out.as_bytes());
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn write_map(out: &mut String, map: &Map) {
    let mut sorted: std::collections::BTreeMap<&str, &Value> = std::collections::BTreeMap::new();
    for (k, _, item) in &map.entries {
        sorted.insert(k, &item.value);
    }
    out.push('{');
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, k);
        out.push(':');
        write_value(out, v);
    }
    out.push('}');
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) => write_string(out, s),
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::Float(f) => out.push_str(&go_float(*f)),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Map(m) => write_map(out, m),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, &item.value);
            }
            out.push(']');
        }
    }
}

/// A string as Go's encoder escapes it (HTML-safe, the default).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A float as Go's encoder writes it: the shortest form that reads back,
/// plain between 1e-6 and 1e21, else with an exponent like `1e+21`,
/// `1.5e-7`.
fn go_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms() {
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(100.0), "100");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1.5e-7), "1.5e-7");
        let mut s = String::new();
        write_string(&mut s, "a<b>&\"c\"\u{1}");
        assert_eq!(s, r#""a\u003cb\u003e\u0026\"c\"\u0001""#);
    }
}
